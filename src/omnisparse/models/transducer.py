"""The streaming RNN-T model: encoder + predictor + joiner (+ optional CTC head), built from a ModelConfig.

``Transducer.forward`` returns the pieces a training loop composes with the loss::

    out = model(feats, feat_lens, targets, target_lens, mode="stream")
    logits = model.joiner(out.enc, out.pred)                      # (B, T', U+1, V)
    loss = rnnt_loss(logits, targets, out.enc_lens, target_lens, blank=model.config.blank_id)

Pruning: :meth:`Transducer.prunable_linears` names every :class:`PrunableLinear` with its gene
(``enc.{i}.attn``, ``enc.{i}.ffn``, ``enc.{i}.conv``, ``pred``, ``joiner``); a sub-network is a set of
masks applied with ``PrunableLinear.set_mask``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .encoder import Encoder, EncoderState
from .joiner import Joiner, SimpleJoint
from .layers import PrunableLinear, prunable_linears_of
from .predictor import build_predictor


@dataclass
class TransducerOutput:
    """``enc (B, T', d)`` (zero past ``enc_lens``), ``enc_lens (B,)``, ``pred (B, U+1, P)``,
    ``ctc_logits (B, T', V)`` unnormalised, or None without a CTC head."""

    enc: Tensor
    enc_lens: Tensor
    pred: Tensor
    ctc_logits: Optional[Tensor] = None


def add_blank_prefix(targets: Tensor, target_lens: Optional[Tensor] = None, blank: int = 0) -> Tensor:
    """``targets (B, U)`` -> ``(B, U+1)`` = ``[blank] + targets``, positions past ``target_lens`` set to blank."""
    if target_lens is not None:
        pos = torch.arange(targets.size(1), device=targets.device)
        targets = targets.masked_fill(pos[None, :] >= target_lens.to(targets.device)[:, None], blank)
    prefix = targets.new_full((targets.size(0), 1), blank)
    return torch.cat([prefix, targets], dim=1)


class Transducer(nn.Module):
    """RNN-T. ``encoder``: :class:`Encoder`; ``predictor``: ``LstmPredictor | StatelessPredictor``;
    ``joiner``: :class:`Joiner`; ``ctc_head``: ``nn.Linear(d_model, V)`` or None; ``simple_joint``:
    :class:`SimpleJoint` (training-only heads of the pruned loss) or None."""

    def __init__(self, encoder: Encoder, predictor: nn.Module, joiner: Joiner,
                 ctc_head: Optional[nn.Linear] = None, config=None, blank_id: int = 0,
                 simple_joint: Optional[SimpleJoint] = None):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.ctc_head = ctc_head
        self.simple_joint = simple_joint
        self.config = config
        self.blank_id = blank_id if config is None else config.blank_id

    @classmethod
    def from_config(cls, cfg) -> "Transducer":
        """From a :class:`omnisparse.config.ModelConfig` (kept as ``self.config``)."""
        encoder = Encoder.from_config(cfg)
        predictor = build_predictor(cfg)
        joiner = Joiner(cfg.d_model, cfg.pred_dim, cfg.joiner_dim, cfg.vocab_size)
        ctc = nn.Linear(cfg.d_model, cfg.vocab_size) if cfg.ctc_weight > 0 else None
        simple = (SimpleJoint(cfg.d_model, cfg.pred_dim, cfg.vocab_size)
                  if cfg.loss == "pruned" and cfg.simple_proj else None)
        return cls(encoder, predictor, joiner, ctc, config=cfg, simple_joint=simple)

    # ------------------------------------------------------------------ pieces
    def encode(self, feats: Tensor, feat_lens: Optional[Tensor] = None, mode: str = "stream",
               **chunking) -> tuple[Tensor, Tensor]:
        """``feats (B, T, F)``, ``feat_lens (B,)`` -> ``(enc (B, T', d), enc_lens (B,))``.
        ``chunking``: optional ``chunk_size``, ``left_chunks``, ``lookahead`` overrides."""
        return self.encoder(feats, feat_lens, mode, **chunking)

    def predict(self, tokens: Tensor) -> Tensor:
        """``tokens (B, U+1)`` = ``[blank] + targets`` -> ``(B, U+1, P)``."""
        return self.predictor(tokens)

    def join(self, enc: Tensor, pred: Tensor) -> Tensor:
        """``(B, T', d)``, ``(B, U+1, P)`` -> logits ``(B, T', U+1, V)``."""
        return self.joiner(enc, pred)

    def forward(self, feats: Tensor, feat_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                mode: str = "stream", autocast: Optional[torch.dtype] = None, **chunking) -> TransducerOutput:
        """Training forward without the loss.

        ``feats (B, T, F)``, ``feat_lens (B,)``, ``tokens (B, U)`` targets WITHOUT the blank prefix
        (padding past ``token_lens`` may be anything), ``token_lens (B,)``. ``autocast``: a dtype to run
        the encoder in under ``torch.autocast`` (its output is cast back to fp32 for the rest).
        """
        with torch.autocast(feats.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            enc, enc_lens = self.encode(feats, feat_lens, mode, **chunking)
        enc = enc.float()
        pred = self.predict(add_blank_prefix(tokens, token_lens, self.blank_id))
        ctc = self.ctc_head(enc) if self.ctc_head is not None else None
        return TransducerOutput(enc=enc, enc_lens=enc_lens, pred=pred, ctc_logits=ctc)

    # ------------------------------------------------------------------ streaming
    def init_stream_state(self, batch_size: int, **kwargs) -> EncoderState:
        """Encoder streaming state (see :meth:`Encoder.init_state`)."""
        return self.encoder.init_state(batch_size, **kwargs)

    def infer(self, feats: Tensor, state: EncoderState, final: bool = False) -> tuple[Tensor, EncoderState]:
        """Streaming encoder: ``feats (B, n, F)`` -> ``(enc (B, m, d), state)`` (see :meth:`Encoder.infer`)."""
        return self.encoder.infer(feats, state, final)

    # ------------------------------------------------------------------ size and pruning
    def num_params(self, trainable_only: bool = False) -> int:
        """Dense parameter count (masks ignored)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def prunable_linears(self) -> list[tuple[str, str, PrunableLinear]]:
        """Every :class:`PrunableLinear` as ``(gene, module name, module)``, in a stable order.

        Genes: ``enc.{i}.attn`` (q, k, v, out), ``enc.{i}.ffn`` (w1, w2), ``enc.{i}.conv`` (pw1, pw2;
        absent when ``conv_kernel == 0``), ``pred`` (LSTM gate projections; absent for the stateless
        predictor, which has none), ``joiner`` (enc_proj, pred_proj, out). Module names are those of
        ``named_modules()``. Not prunable: subsampling, LayerNorms, embeddings, depthwise convs,
        relative-position biases, the CTC head.
        """
        out: list[tuple[str, str, PrunableLinear]] = []
        for i, layer in enumerate(self.encoder.layers):
            base = f"encoder.layers.{i}"
            parts = [("attn", layer.attn), ("conv", layer.conv), ("ffn", layer.ffn)]
            for gene, sub in parts:
                if sub is not None:
                    out += [(f"enc.{i}.{gene}", n, m) for n, m in prunable_linears_of(sub, f"{base}.{gene}")]
        out += [("pred", n, m) for n, m in prunable_linears_of(self.predictor, "predictor")]
        out += [("joiner", n, m) for n, m in prunable_linears_of(self.joiner, "joiner")]
        every = {id(m) for _, m in prunable_linears_of(self)}
        if every != {id(m) for _, _, m in out}:  # a new PrunableLinear somewhere was not given a gene
            raise RuntimeError("prunable_linears() misses a PrunableLinear; update its gene grouping")
        return out

    def prunable_groups(self) -> "OrderedDict[str, list[tuple[str, PrunableLinear]]]":
        """``gene -> [(module name, module), ...]`` (same order as :meth:`prunable_linears`)."""
        groups: OrderedDict[str, list[tuple[str, PrunableLinear]]] = OrderedDict()
        for gene, name, m in self.prunable_linears():
            groups.setdefault(gene, []).append((name, m))
        return groups

    def clear_masks(self) -> None:
        """Back to the dense network."""
        for _, _, m in self.prunable_linears():
            m.set_mask(None)
