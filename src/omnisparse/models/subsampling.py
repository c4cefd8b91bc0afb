"""Causal convolutional subsampling of fbank frames by 4 or 8, with an exact streaming mode.

Input: fbank ``(B, T, feat_dim)`` at 10 ms per frame. Output: ``(B, T // S, d_model)`` at ``S * 10 ms``
per frame (S = 4 -> 40 ms, S = 8 -> 80 ms); the last ``T % S`` input frames are dropped.

Each stage is ``Conv2d(kernel 3, stride 2)`` in time and frequency followed by ReLU. In time the
convolution is causal: the stage input is left-padded by one zero frame (kernel - stride), so stage
output ``t`` reads stage inputs ``2t - 1, 2t, 2t + 1`` and a stage maps ``n`` frames to ``n // 2``.
Composed over ``log2(S)`` stages, output frame ``t`` depends only on input frames ``<= (t + 1) * S - 1``,
i.e. an encoder frame is available as soon as its own ``S`` fbank frames are. In frequency there is no
padding (80 -> 39 -> 19 -> 9 bins). A Linear maps ``channels * bins`` to ``d_model`` and a LayerNorm
keeps the output at unit scale (an un-normalised conv stack leaves std ~ 7 here).

Streaming (:meth:`ConvSubsampling.infer`): the state holds, per stage, the stage-input frames not yet
consumed, the first of which is the left context (initially the zero frame that the full forward
pads with). Feeding features in arbitrary pieces gives the same outputs as :meth:`forward` on the
concatenation (up to float rounding).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_KERNEL = 3
_STRIDE = 2


class ConvSubsampling(nn.Module):
    """Causal Conv2d subsampling ``(B, T, feat_dim) -> (B, T // factor, d_model)``.

    Args:
        feat_dim: input feature bins (80 for fbank).
        d_model: output dimension.
        factor: 4 (two stride-2 stages) or 8 (three).
        channels: output channels per stage (an int: every stage), first ``log2(factor)`` entries used.
            The first stage runs at 20 ms x 39 bins, so its width dominates the cost on CPU:
            fwd+bwd of 8 x 8 s of audio on one core took ~60 ms with (16, 64), ~245 ms with (64, 64).
    """

    def __init__(self, feat_dim: int = 80, d_model: int = 144, factor: int = 4,
                 channels: Union[int, Sequence[int]] = (16, 64, 64)):
        super().__init__()
        if factor not in (4, 8):
            raise ValueError(f"subsampling factor must be 4 or 8, got {factor}")
        self.feat_dim = feat_dim
        self.factor = factor
        self.n_stages = {4: 2, 8: 3}[factor]
        chans = [channels] * self.n_stages if isinstance(channels, int) else list(channels)
        if len(chans) < self.n_stages:
            raise ValueError(f"need {self.n_stages} stage channel counts, got {channels}")
        self.channels = chans[: self.n_stages]
        convs = []
        in_ch, bins = 1, feat_dim
        self.stage_in_shapes: list[tuple[int, int]] = []  # (channels, bins) of each stage's input
        for out_ch in self.channels:
            self.stage_in_shapes.append((in_ch, bins))
            convs.append(nn.Conv2d(in_ch, out_ch, kernel_size=_KERNEL, stride=_STRIDE))
            in_ch, bins = out_ch, (bins - _KERNEL) // _STRIDE + 1
        if bins < 1:
            raise ValueError(f"feat_dim {feat_dim} too small for {self.n_stages} stride-2 stages")
        self.convs = nn.ModuleList(convs)
        self.out_bins = bins
        self.proj = nn.Linear(in_ch * bins, d_model)
        self.norm = nn.LayerNorm(d_model)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames for ``lengths`` fbank frames: ``lengths // factor``."""
        return torch.div(lengths, self.factor, rounding_mode="floor")

    def _stage(self, i: int, x: Tensor) -> Tensor:
        """Valid (unpadded) stride-2 conv of stage ``i`` over time-padded input ``(B, C, t, F)``."""
        if x.size(2) < _KERNEL:
            c_out = self.channels[i]
            bins = (x.size(3) - _KERNEL) // _STRIDE + 1
            return x.new_zeros(x.size(0), c_out, 0, bins)
        return F.relu(self.convs[i](x))

    def _head(self, x: Tensor) -> Tensor:
        """``(B, C, t, F) -> (B, t, d_model)``."""
        b, c, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        return self.norm(self.proj(x))

    def forward(self, feats: Tensor, lengths: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """``feats (B, T, feat_dim)``, ``lengths (B,)`` fbank frames -> ``((B, T // S, d), lengths // S)``.

        Causal, so frames of an utterance never see the padding after it: each utterance's valid
        outputs are those of the utterance alone.
        """
        x = feats.unsqueeze(1)  # (B, 1, T, F)
        for i in range(self.n_stages):
            x = self._stage(i, F.pad(x, (0, 0, _KERNEL - _STRIDE, 0)))
        out = self._head(x)
        return out, (None if lengths is None else self.output_lengths(lengths))

    # ---------------------------------------------------------------- streaming
    def init_state(self, batch_size: int, device=None, dtype=None) -> list[Tensor]:
        """Per stage, the unconsumed stage input ``(B, C_i, k, F_i)``; initially the zero left-pad frame."""
        p = self.proj.weight
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        return [torch.zeros(batch_size, c, _KERNEL - _STRIDE, f, device=device, dtype=dtype)
                for c, f in self.stage_in_shapes]

    def infer(self, feats: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Feed ``feats (B, n, feat_dim)`` (any ``n >= 0``) -> ``(out (B, m, d_model), new state)``.

        ``m`` is the number of output frames whose ``S`` input frames have now all arrived.
        """
        x = feats.unsqueeze(1)
        new_state = []
        for i in range(self.n_stages):
            z = torch.cat([state[i], x], dim=2)
            n_out = max((z.size(2) - _KERNEL) // _STRIDE + 1, 0)
            x = self._stage(i, z[:, :, : (n_out - 1) * _STRIDE + _KERNEL] if n_out > 0 else z[:, :, :0])
            new_state.append(z[:, :, n_out * _STRIDE:])
        return self._head(x), new_state
