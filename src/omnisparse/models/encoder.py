"""Chunked-attention Conformer-lite encoder with an exact streaming mode.

Shapes and units: fbank ``(B, T, feat_dim)`` at 10 ms/frame -> :class:`ConvSubsampling` ->
encoder frames ``(B, T' = T // S, d_model)`` at ``S * 10 ms``/frame. ``chunk_size`` and ``lookahead``
count encoder frames, ``left_chunks`` counts chunks (as in :class:`omnisparse.config.ModelConfig`).

Block (pre-LN)::

    x = x + MHSA(LN(x))                          # q, k, v, out: PrunableLinear; relative-position bias
    x = x + ConvModule(x)                        # LN, Linear d->2d, GLU, causal depthwise conv, LN, SiLU, Linear d->d
    x = x + FFN(x)                               # LN, Linear d->ffn, SiLU, dropout, Linear ffn->d

Blocks are pure pre-LN: nothing normalises the residual stream between blocks, and one LayerNorm
follows the last block. At initialisation the residual branches are small, so the encoder starts
close to the identity and the CTC/RNN-T head sees the subsampled features directly. The Conformer
habit of a LayerNorm closing every block made the stack post-LN-like: measured on the `small`
corpus with CTC alone (60 s batches), the blank-only plateau lasted ~100 steps with 0 blocks, ~300
with 2 blocks and more than 2,000 with 4 or 8; with pure pre-LN blocks, 8 blocks leave it after ~200.

There is no absolute positional encoding: each layer has a learned bias per head indexed by the
clipped relative distance ``clamp(j - i, -rel_pos_clip, rel_pos_clip)`` (key ``j``, query ``i``).
The conv module is causal in both modes (LayerNorm, not BatchNorm, so nothing depends on the batch).

Attention modes (``forward(..., mode=...)``):

* ``full``: every frame attends every non-padded frame of its utterance.
* ``stream``: chunk mask. With ``C = chunk_size``, ``L = left_chunks``, ``R = lookahead``, frame ``i``
  in chunk ``c = i // C`` attends frames ``j`` with ``c - L <= j // C <= c``. Look-ahead is granted in
  the FIRST block only: there frame ``i`` may also attend ``j < (c + 1) * C + R`` (the first ``R``
  frames of the next chunk); deeper blocks have none. The first block's keys/values are computed from
  subsampled input alone, so a chunk can be emitted as soon as the subsampled frames up to
  ``(c + 1) * C + R - 1`` exist: algorithmic latency is at most one chunk + ``R`` frames, i.e.
  ``(C + R) * S * 10 ms`` for a chunk's first frame (the causal subsampling adds nothing: encoder frame
  ``t`` needs fbank frames ``<= (t + 1) * S - 1`` only), and the look-ahead does not grow with depth.
  ``L < 0`` means unbounded left context.

Streaming inference (:meth:`Encoder.infer`) reproduces ``forward(mode="stream")`` exactly (to float
rounding) from an explicit :class:`EncoderState`: subsampling buffers, pending subsampled frames,
per-layer K/V caches of the last ``L * C`` frames, per-layer conv caches of the last
``conv_kernel - 1`` frames and the count of emitted frames. A stream's batch is synchronous: all its
utterances receive the same number of frames per call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import PrunableLinear
from .subsampling import ConvSubsampling

MODES = ("stream", "full")


def _activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU()
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}")


def rel_pos_index(q_pos: Tensor, k_pos: Tensor, clip: int) -> Tensor:
    """``(n, m)`` int64 index into a ``(H, 2 * clip + 1)`` bias table: ``clamp(k - q, -clip, clip) + clip``."""
    return (k_pos[None, :] - q_pos[:, None]).clamp(-clip, clip) + clip


def chunk_mask(T: int, chunk_size: int, left_chunks: int, lookahead: int = 0,
               device=None) -> Tensor:
    """Boolean ``(T, T)``: ``[i, j]`` True when query frame ``i`` may attend key frame ``j``.

    ``c = i // chunk_size``; allowed: ``j // chunk_size >= c - left_chunks`` (no bound when
    ``left_chunks < 0``) and ``j < (c + 1) * chunk_size + lookahead``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    idx = torch.arange(T, device=device)
    qc = (idx // chunk_size)[:, None]
    allowed = idx[None, :] < (qc + 1) * chunk_size + lookahead
    if left_chunks >= 0:
        allowed &= (idx // chunk_size)[None, :] >= qc - left_chunks
    return allowed


def apply_frame_mask(x: Tensor, input_mask: Optional[Tensor], mask_emb: Optional[Tensor]) -> Tensor:
    """``x (B, T, d)`` with the frames where ``input_mask (B, T)`` is True replaced by ``mask_emb (d,)``;
    ``x`` itself when ``input_mask`` is None."""
    if input_mask is None:
        return x
    if mask_emb is None:
        raise ValueError("input_mask given without mask_emb")
    return torch.where(input_mask[:, :, None].to(x.device), mask_emb.to(x.dtype), x)


class FeedForward(nn.Module):
    """``(B, T, d) -> (B, T, d)``: LN, ``w1`` (d->ffn), activation, dropout, ``w2`` (ffn->d)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, activation: str = "silu"):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.w1 = PrunableLinear(d_model, ffn_dim)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.w2 = PrunableLinear(ffn_dim, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(self.act(self.w1(self.norm(x)))))


class ConvModule(nn.Module):
    """Causal depthwise-conv module ``(B, T, d) -> (B, T, d)``.

    LN, ``pw1`` (d->2d), GLU, depthwise Conv1d (kernel K, left context K-1 frames), LN, SiLU,
    ``pw2`` (d->d). ``cache (B, d, K-1)`` holds the last K-1 GLU outputs before the new frames
    (zeros = the causal zero padding of the full forward).
    """

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = PrunableLinear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.act = nn.SiLU()
        self.pw2 = PrunableLinear(d_model, d_model)

    def forward(self, x: Tensor, cache: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``x (B, T, d)``, ``cache (B, d, K-1)`` or None (= zeros) -> ``(y (B, T, d), new cache)``."""
        if x.size(1) == 0:
            return x, cache if cache is not None else x.new_zeros(x.size(0), x.size(2), self.kernel - 1)
        h = F.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)  # (B, d, T)
        if cache is None:
            h = F.pad(h, (self.kernel - 1, 0))
        else:
            h = torch.cat([cache, h], dim=2)
        new_cache = h[:, :, h.size(2) - (self.kernel - 1):]
        if cache is None or h.size(2) > 4 * self.kernel:
            y = self.depthwise(h).transpose(1, 2)
        else:  # short streaming chunk: unfold + einsum is several times faster than conv1d here
            w = self.depthwise.weight[:, 0]  # (d, K)
            y = torch.einsum("bdtk,dk->btd", h.unfold(2, self.kernel, 1), w)
            if self.depthwise.bias is not None:
                y = y + self.depthwise.bias
        return self.pw2(self.act(self.conv_norm(y))), new_cache


class RelPosSelfAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections and a clipped relative-position bias.

    ``rel_bias (H, 2 * clip + 1)``: bias of head ``h`` for key ``j`` and query ``i`` is
    ``rel_bias[h, clamp(j - i, -clip, clip) + clip]`` (zero-initialised).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, rel_pos_clip: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.clip = rel_pos_clip
        self.q = PrunableLinear(d_model, d_model)
        self.k = PrunableLinear(d_model, d_model)
        self.v = PrunableLinear(d_model, d_model)
        self.out = PrunableLinear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, 2 * rel_pos_clip + 1))
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, t, dh)

    def project_q(self, h: Tensor) -> Tensor:
        return self._heads(self.q(h))

    def project_kv(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k(h)), self._heads(self.v(h))

    def position_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """``q_pos (n,)``, ``k_pos (m,)`` absolute frame indices -> bias ``(H, n, m)``."""
        return self.rel_bias[:, rel_pos_index(q_pos, k_pos, self.clip)]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor) -> Tensor:
        """``q (B, H, n, dh)``, ``k, v (B, H, m, dh)``, additive ``attn_mask`` broadcastable to
        ``(B, H, n, m)`` -> ``(B, n, d)`` after the output projection.

        Plain matmul/softmax: on CPU it is faster than ``scaled_dot_product_attention`` both for
        4-frame streaming chunks and for whole utterances with an additive float mask."""
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.d_head ** -0.5) + attn_mask
        probs = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            probs = F.dropout(probs, self.dropout)
        o = torch.matmul(probs, v)
        b, _, n, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(b, n, self.n_heads * self.d_head))


class ConformerBlock(nn.Module):
    """One pre-LN block (see the module docstring). ``x (B, T, d) -> (B, T, d)``."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, conv_kernel: int, dropout: float,
                 rel_pos_clip: int, activation: str = "silu"):
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = RelPosSelfAttention(d_model, n_heads, dropout, rel_pos_clip)
        self.conv = ConvModule(d_model, conv_kernel) if conv_kernel > 0 else None
        self.ffn = FeedForward(d_model, ffn_dim, dropout, activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """``x (B, T, d)``; ``mask (B, 1, T, T)`` additive (0 / -inf); ``pos (T,)`` frame indices."""
        h = self.attn_norm(x)
        q = self.attn.project_q(h)
        k, v = self.attn.project_kv(h)
        x = x + self.dropout(self.attn.attend(q, k, v, mask + self.attn.position_bias(pos, pos)))
        if self.conv is not None:
            x = x + self.dropout(self.conv(x)[0])
        return x + self.dropout(self.ffn(x))

    def infer(self, x: Tensor, ahead: Optional[Tensor], k_cache: Tensor, v_cache: Tensor,
              conv_cache: Optional[Tensor], rel_index: Tensor, max_cache: Optional[int]
              ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """One chunk, inference only (no dropout).

        ``x (B, n, d)`` block input of the chunk's frames; ``ahead (B, r, d)`` the look-ahead frames
        (first block only: they give keys/values, not outputs); ``k_cache, v_cache (B, H, c, dh)``
        keys/values of the ``c`` frames before the chunk; ``conv_cache (B, d, K-1)``;
        ``rel_index (n, c + n + r)`` :func:`rel_pos_index` of the chunk's frames against the keys.

        Returns ``(y (B, n, d), k_cache, v_cache, conv_cache)`` with the K/V caches trimmed to the
        last ``max_cache`` frames before the next chunk (None = keep all).
        """
        n = x.size(1)
        xa = x if ahead is None or ahead.size(1) == 0 else torch.cat([x, ahead], dim=1)
        h = self.attn_norm(xa)
        q = self.attn.project_q(h[:, :n] if xa is not x else h)
        k_new, v_new = self.attn.project_kv(h)
        k = torch.cat([k_cache, k_new], dim=2)
        v = torch.cat([v_cache, v_new], dim=2)
        x = x + self.attn.attend(q, k, v, self.attn.rel_bias[:, rel_index])
        if self.conv is not None:
            y, conv_cache = self.conv(x, conv_cache)
            x = x + y
        x = x + self.ffn(x)
        c = k_cache.size(2)
        keep = c + n if max_cache is None else min(c + n, max_cache)
        return x, k[:, :, c + n - keep: c + n], v[:, :, c + n - keep: c + n], conv_cache


@dataclass
class EncoderState:
    """Explicit streaming state of :class:`Encoder` (batch ``B``, ``H`` heads, ``dh = d / H``).

    * ``sub``: subsampling buffers, per stage ``(B, C_i, k_i, F_i)`` unconsumed stage input.
    * ``pending (B, p, d)``: subsampled frames ``emitted .. emitted + p - 1`` not yet emitted (the
      current incomplete chunk and/or the look-ahead frames it waits for).
    * ``keys[l], values[l] (B, H, c, dh)``: block ``l``'s keys/values of the last
      ``c <= left_chunks * chunk_size`` emitted frames (chunk-aligned; all of them if ``left_chunks < 0``).
    * ``conv[l] (B, d, conv_kernel - 1)``: block ``l``'s last GLU outputs (None without conv module).
    * ``emitted``: encoder frames emitted so far (absolute position of ``pending[:, 0]``).
    * ``chunk_size, left_chunks, lookahead``: the chunking this stream runs with.
    """

    sub: list[Tensor]
    pending: Tensor
    keys: list[Tensor]
    values: list[Tensor]
    conv: list[Optional[Tensor]]
    emitted: int
    chunk_size: int
    left_chunks: int
    lookahead: int


class Encoder(nn.Module):
    """Subsampling + ``n_layers`` :class:`ConformerBlock` s. See the module docstring for the modes."""

    def __init__(self, feat_dim: int = 80, d_model: int = 144, n_heads: int = 4, ffn_dim: int = 576,
                 n_layers: int = 6, conv_kernel: int = 15, dropout: float = 0.1, rel_pos_clip: int = 64,
                 subsampling: int = 4, chunk_size: int = 4, left_chunks: int = 8, lookahead: int = 1,
                 sub_channels: Union[int, Sequence[int]] = (16, 64, 64), activation: str = "silu"):
        super().__init__()
        self.d_model = d_model
        self.n_heads = n_heads
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.lookahead = lookahead
        self.subsampling = ConvSubsampling(feat_dim, d_model, subsampling, sub_channels)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, n_heads, ffn_dim, conv_kernel, dropout, rel_pos_clip, activation)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)  # after the last block (blocks are pure pre-LN)

    @classmethod
    def from_config(cls, cfg) -> "Encoder":
        """From a :class:`omnisparse.config.ModelConfig`."""
        return cls(feat_dim=cfg.feat_dim, d_model=cfg.d_model, n_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim,
                   n_layers=cfg.n_layers, conv_kernel=cfg.conv_kernel, dropout=cfg.dropout,
                   rel_pos_clip=cfg.rel_pos_clip, subsampling=cfg.subsampling, chunk_size=cfg.chunk_size,
                   left_chunks=cfg.left_chunks, lookahead=cfg.lookahead)

    @property
    def subsampling_factor(self) -> int:
        return self.subsampling.factor

    @property
    def frames_per_chunk(self) -> int:
        """Fbank (10 ms) frames per chunk: ``chunk_size * subsampling``."""
        return self.chunk_size * self.subsampling.factor

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        return self.subsampling.output_lengths(feat_lens)

    # ------------------------------------------------------------------ masked forward
    def forward(self, feats: Tensor, feat_lens: Optional[Tensor] = None, mode: str = "stream",
                chunk_size: Optional[int] = None, left_chunks: Optional[int] = None,
                lookahead: Optional[int] = None, input_mask: Optional[Tensor] = None,
                mask_emb: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``feats (B, T, feat_dim)``, ``feat_lens (B,)`` -> ``(out (B, T // S, d), out_lens (B,))``.

        Frames past ``out_lens`` are zero. ``chunk_size``/``left_chunks``/``lookahead`` override the
        configured chunking (stream mode only). ``input_mask (B, T // S)`` bool with ``mask_emb (d,)``:
        masked subsampled frames are replaced by ``mask_emb`` before the blocks (wav2vec 2.0
        pre-training, :func:`apply_frame_mask`); None (default) changes nothing.
        """
        x, _ = self.subsampling(feats)
        if feat_lens is None:
            feat_lens = torch.full((feats.size(0),), feats.size(1), dtype=torch.long, device=feats.device)
        lens = self.output_lengths(feat_lens)
        x = apply_frame_mask(self.input_dropout(x), input_mask, mask_emb)
        return self.forward_frames(x, lens, mode, chunk_size, left_chunks, lookahead), lens

    def forward_frames(self, x: Tensor, lengths: Tensor, mode: str = "stream",
                       chunk_size: Optional[int] = None, left_chunks: Optional[int] = None,
                       lookahead: Optional[int] = None) -> Tensor:
        """The blocks alone: subsampled ``x (B, T', d)``, ``lengths (B,)`` -> ``(B, T', d)``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        B, T, _ = x.shape
        device = x.device
        pos = torch.arange(T, device=device)
        valid = pos[None, :] < lengths.to(device)[:, None]  # (B, T)
        eye = torch.eye(T, dtype=torch.bool, device=device)
        key_ok = valid[:, None, None, :]  # (B, 1, 1, T)
        if mode == "full":
            first = rest = key_ok | eye
        else:
            C = self.chunk_size if chunk_size is None else chunk_size
            L = self.left_chunks if left_chunks is None else left_chunks
            R = self.lookahead if lookahead is None else lookahead
            # padded query rows keep their own frame so that no softmax row is empty (no NaN)
            first = (chunk_mask(T, C, L, R, device) & key_ok) | eye
            rest = (chunk_mask(T, C, L, 0, device) & key_ok) | eye if R > 0 else first
        neg_inf = torch.finfo(x.dtype).min if x.dtype == torch.float16 else float("-inf")
        first_add = torch.zeros(first.shape, dtype=x.dtype, device=device).masked_fill(~first, neg_inf)
        rest_add = first_add if rest is first else \
            torch.zeros(rest.shape, dtype=x.dtype, device=device).masked_fill(~rest, neg_inf)
        for i, layer in enumerate(self.layers):
            x = layer(x, first_add if i == 0 else rest_add, pos)
        return self.norm(x).masked_fill(~valid[:, :, None], 0.0)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int, device=None, dtype=None, chunk_size: Optional[int] = None,
                   left_chunks: Optional[int] = None, lookahead: Optional[int] = None) -> EncoderState:
        """Fresh :class:`EncoderState` for ``batch_size`` streams (chunking defaults to the configured one)."""
        p = next(self.parameters())
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        H, dh = self.n_heads, self.d_model // self.n_heads
        conv = []
        for layer in self.layers:
            k = layer.conv.kernel if layer.conv is not None else 0
            conv.append(torch.zeros(batch_size, self.d_model, k - 1, device=device, dtype=dtype)
                        if k > 0 else None)
        empty_kv = torch.zeros(batch_size, H, 0, dh, device=device, dtype=dtype)
        return EncoderState(
            sub=self.subsampling.init_state(batch_size, device, dtype),
            pending=torch.zeros(batch_size, 0, self.d_model, device=device, dtype=dtype),
            keys=[empty_kv] * len(self.layers), values=[empty_kv] * len(self.layers), conv=conv,
            emitted=0,
            chunk_size=self.chunk_size if chunk_size is None else chunk_size,
            left_chunks=self.left_chunks if left_chunks is None else left_chunks,
            lookahead=self.lookahead if lookahead is None else lookahead)

    def infer(self, feats: Tensor, state: EncoderState, final: bool = False) -> tuple[Tensor, EncoderState]:
        """Feed ``feats (B, n, feat_dim)`` (any ``n >= 0``) -> ``(out (B, m, d), new state)``.

        Emits every encoder frame whose chunk is complete and whose look-ahead frames have arrived;
        with ``final=True`` also the remaining frames (a last partial chunk, look-ahead cut at the
        end, as the padding mask of the full forward does). Concatenated outputs equal
        ``forward(all_feats, mode="stream")`` with the state's chunking. The input state is not modified.
        """
        C, L, R = state.chunk_size, state.left_chunks, state.lookahead
        max_cache = L * C if L >= 0 else None
        clip = self.layers[0].attn.clip if len(self.layers) else 0
        x, sub = self.subsampling.infer(feats, state.sub)
        pending = torch.cat([state.pending, self.input_dropout(x)], dim=1)
        keys, values, conv = list(state.keys), list(state.values), list(state.conv)
        emitted = state.emitted
        outs = []
        while True:
            p = pending.size(1)
            if p >= C + R:
                n, r = C, R
            elif final and p > 0:
                n = min(C, p)
                r = min(R, p - n)
            else:
                break
            h, ahead = pending[:, :n], pending[:, n:n + r]
            c = keys[0].size(2) if keys else 0
            index = rel_pos_index(torch.arange(emitted, emitted + n, device=h.device),
                                  torch.arange(emitted - c, emitted + n + r, device=h.device), clip)
            for i, layer in enumerate(self.layers):
                h, keys[i], values[i], conv[i] = layer.infer(
                    h, ahead if i == 0 else None, keys[i], values[i], conv[i],
                    index if i == 0 else index[:, : c + n], max_cache)
            outs.append(self.norm(h))
            pending = pending[:, n:]
            emitted += n
        out = torch.cat(outs, dim=1) if outs else pending.new_zeros(pending.size(0), 0, self.d_model)
        return out, replace(state, sub=sub, pending=pending, keys=keys, values=values, conv=conv,
                            emitted=emitted)
