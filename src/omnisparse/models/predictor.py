"""RNN-T predictors (a.k.a. prediction network / decoder): token history -> ``(B, U + 1, P)``.

Input tokens are ``[blank] + targets``: ``(B, U + 1)`` int64, blank (id 0 by default) acting as the
start symbol, so the embedding is a plain one (no ``padding_idx``: blank's embedding is learned).
Positions past a sequence's length may hold any valid id; their outputs are simply unused.

Both predictors offer ``forward(tokens) -> (B, U + 1, P)``, ``init_state(B)`` and
``step(tokens (B,), state) -> (out (B, P), state)`` for decoding; feeding a sequence token by token
with ``step`` gives ``forward``'s outputs. An LSTM predictor can instead decode from a window of its
last ``history`` tokens (:func:`predictor_history`): what a runtime that carries no decoder state
(sherpa-onnx) computes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PrunableLinear


class PrunableLSTMLayer(nn.Module):
    """One LSTM layer whose gate projections are :class:`PrunableLinear` s (so the predictor can be pruned).

    ``x2g``: input (I) -> 4H gates, ``h2g``: hidden (H) -> 4H gates (no bias; ``x2g`` has it).
    Gate order i, f, g, o, as in ``nn.LSTM``. ``x (B, T, I)``, state ``(h, c)`` each ``(B, H)``.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.x2g = PrunableLinear(input_dim, 4 * hidden_dim)
        self.h2g = PrunableLinear(hidden_dim, 4 * hidden_dim, bias=False)
        with torch.no_grad():  # forget-gate bias 1: a common LSTM initialisation
            self.x2g.bias.zero_()
            self.x2g.bias[hidden_dim:2 * hidden_dim].fill_(1.0)

    def cell(self, gx: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """``gx (B, 4H)`` input gates (already projected), ``h, c (B, H)`` -> new ``(h, c)``."""
        i, f, g, o = (gx + self.h2g(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The whole sequence through torch's fused LSTM kernel on the masked weights (the same
        function as :meth:`cell` step by step, several times faster on CPU than a Python loop)."""
        h, c = state
        if x.size(1) == 0:
            return x.new_zeros(x.size(0), 0, self.hidden_dim), (h, c)
        no_bias = torch.zeros_like(self.x2g.bias)
        weights = [self.x2g.effective_weight(), self.h2g.effective_weight(), self.x2g.bias, no_bias]
        y, h_n, c_n = torch.lstm(x, (h[None], c[None]), weights, True, 1, 0.0, self.training, False, True)
        return y, (h_n[0], c_n[0])


class LstmPredictor(nn.Module):
    """Embedding(V, P) -> dropout -> ``n_layers`` LSTM(P) -> dropout. ``(B, U+1) -> (B, U+1, P)``.

    State: list over layers of ``(h, c)``, each ``(B, P)``; zeros initially. With ``history = K > 0``
    (decoding only; ``forward`` always sees the whole sequence) the state is instead the last ``K - 1``
    tokens ``(B, K - 1)`` int64, -1 before the first, and ``step`` runs the LSTM from zero state over
    those and the new token, skipping the -1 slots: the output depends on the last ``K`` tokens only.
    While fewer than ``K`` tokens have been fed that equals the full-history output.
    """

    def __init__(self, vocab_size: int, dim: int = 256, n_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.history = 0  # a decoding setting, set within predictor_history(); never trained or saved
        self.embed = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(PrunableLSTMLayer(dim, dim) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.dim

    def init_state(self, batch_size: int, device=None, dtype=None) -> list[tuple[Tensor, Tensor]] | Tensor:
        p = self.embed.weight
        if self.history > 0:
            return torch.full((batch_size, self.history - 1), -1, dtype=torch.int64,
                              device=p.device if device is None else device)
        return self.zero_state(batch_size, device, dtype)

    def zero_state(self, batch_size: int, device=None, dtype=None) -> list[tuple[Tensor, Tensor]]:
        """Zero ``(h, c)`` per layer, each ``(B, P)``: the state before the first token."""
        p = self.embed.weight
        z = torch.zeros(batch_size, self.dim, device=p.device if device is None else device,
                        dtype=p.dtype if dtype is None else dtype)
        return [(z, z) for _ in self.layers]

    def forward(self, tokens: Tensor, state: Optional[list[tuple[Tensor, Tensor]]] = None) -> Tensor:
        """``tokens (B, U+1)`` int64 -> ``(B, U+1, P)`` (from ``state``, default zeros)."""
        if state is None:
            state = self.zero_state(tokens.size(0))
        x = self.dropout(self.embed(tokens))
        for layer, s in zip(self.layers, state):
            x, _ = layer(x, s)
        return self.dropout(x)

    def step(self, tokens: Tensor, state: list[tuple[Tensor, Tensor]] | Tensor
             ) -> tuple[Tensor, list[tuple[Tensor, Tensor]] | Tensor]:
        """``tokens (B,)`` -> ``(out (B, P), new state)``."""
        if self.history > 0:
            window = torch.cat([state, tokens[:, None]], dim=1)
            return self.window_output(window), window[:, 1:]
        x = self.dropout(self.embed(tokens))
        new_state = []
        for layer, (h, c) in zip(self.layers, state):
            h, c = layer.cell(layer.x2g(x), h, c)
            new_state.append((h, c))
            x = h
        return self.dropout(x), new_state

    def window_output(self, window: Tensor) -> Tensor:
        """``window (B, K)`` int64 tokens, oldest first, -1 = none -> ``(B, P)``: the LSTM from zero
        state over the valid tokens (a -1 slot leaves the state as it is), the last layer's output."""
        state = self.zero_state(window.size(0), window.device)
        for k in range(window.size(1)):
            tok = window[:, k]
            valid = (tok >= 0)[:, None]
            x = self.dropout(self.embed(tok.clamp(min=0)))
            for i, layer in enumerate(self.layers):
                h, c = layer.cell(layer.x2g(x), *state[i])
                state[i] = (torch.where(valid, h, state[i][0]), torch.where(valid, c, state[i][1]))
                x = state[i][0]
        return self.dropout(state[-1][0])


class StatelessPredictor(nn.Module):
    """Embedding(V, P) -> causal depthwise Conv1d over the last ``context`` tokens -> ReLU (icefall's
    stateless decoder). ``(B, U+1) -> (B, U+1, P)``.

    The conv sees zero embeddings before the first token. State: ``(B, context - 1, P)`` the last
    embeddings (zeros initially). It has no :class:`PrunableLinear` (the joiner's ``pred_proj`` is
    the Linear that follows it).
    """

    def __init__(self, vocab_size: int, dim: int = 256, context: int = 2, dropout: float = 0.1):
        super().__init__()
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.dim = dim
        self.context = context
        self.embed = nn.Embedding(vocab_size, dim)
        self.conv = nn.Conv1d(dim, dim, context, groups=dim, bias=False) if context > 1 else None
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.dim

    def init_state(self, batch_size: int, device=None, dtype=None) -> Tensor:
        p = self.embed.weight
        return torch.zeros(batch_size, self.context - 1, self.dim,
                           device=p.device if device is None else device,
                           dtype=p.dtype if dtype is None else dtype)

    def _apply_conv(self, e: Tensor) -> Tensor:
        """``e (B, (context - 1) + n, P)`` -> ``(B, n, P)``."""
        if self.conv is None:
            return F.relu(e)
        return F.relu(self.conv(e.transpose(1, 2)).transpose(1, 2))

    def forward(self, tokens: Tensor, state: Optional[Tensor] = None) -> Tensor:
        """``tokens (B, U+1)`` int64 -> ``(B, U+1, P)``."""
        if state is None:
            state = self.init_state(tokens.size(0))
        e = torch.cat([state, self.embed(tokens)], dim=1)
        return self.dropout(self._apply_conv(e))

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens (B,)`` -> ``(out (B, P), new state)``."""
        e = torch.cat([state, self.embed(tokens)[:, None]], dim=1)
        out = self.dropout(self._apply_conv(e))[:, 0]
        return out, e[:, 1:]


@contextmanager
def predictor_history(predictor: nn.Module, history: int) -> Iterator[nn.Module]:
    """Within the block, an :class:`LstmPredictor` decodes from its last ``history`` tokens (0 = the
    whole history, as trained); restored after. ValueError for ``history < 0`` or, when ``history > 0``,
    a predictor that is not an LSTM (the stateless one has its fixed ``context``)."""
    if history < 0:
        raise ValueError(f"predictor history must be >= 0 tokens, got {history}")
    if history and not isinstance(predictor, LstmPredictor):
        raise ValueError(f"a predictor history window applies to the LSTM predictor, not {type(predictor).__name__}")
    saved = getattr(predictor, "history", 0)
    if isinstance(predictor, LstmPredictor):
        predictor.history = history
    try:
        yield predictor
    finally:
        if isinstance(predictor, LstmPredictor):
            predictor.history = saved


def build_predictor(cfg) -> nn.Module:
    """From a :class:`omnisparse.config.ModelConfig` (``pred_type`` lstm | stateless)."""
    if cfg.pred_type == "lstm":
        return LstmPredictor(cfg.vocab_size, cfg.pred_dim, cfg.pred_layers, cfg.dropout)
    if cfg.pred_type == "stateless":
        return StatelessPredictor(cfg.vocab_size, cfg.pred_dim, cfg.pred_context, cfg.dropout)
    raise ValueError(f"unknown pred_type {cfg.pred_type!r} (lstm | stateless)")
