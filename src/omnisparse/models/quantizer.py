"""Gumbel-softmax product quantizer of wav2vec 2.0 (fairseq ``GumbelVectorQuantizer``, no combined groups).

Input frames ``x (B, T, C)`` are projected to ``G x V`` logits (``G`` groups / codebooks of ``V``
entries each). In training each group picks one entry with the straight-through hard Gumbel-softmax
at temperature ``tau`` (forward: one-hot of ``argmax(logits + gumbel)``; backward: gradient of the
soft Gumbel-softmax); in eval, the plain ``argmax(logits)``. The chosen entries (``D / G`` dims each)
are concatenated into the quantized frame ``q (B, T, D)``, ``D = codevector_dim``.

Temperature: ``tau(step) = max(max_temp * decay ** step, min_temp)`` (fairseq: 2.0, 0.5, 0.999995),
set with :meth:`GumbelQuantizer.set_num_updates` once per optimizer step; it is a pure function of
the step, so nothing about it needs checkpointing.

Statistics, over the frames selected by ``frame_mask`` (all frames when None):

* ``code_perplexity``: ``sum_g exp(H(p_g))`` with ``p_g`` the frequency of the hard (argmax) choices of
  group ``g``, in ``[G, G * V]`` (no gradient; for logging);
* ``prob_perplexity``: the same with ``p_g`` the mean softmax probabilities (differentiable);
* ``diversity_loss = (G * V - prob_perplexity) / (G * V)``: 0 when every entry is used equally,
  maximal ``(G * V - G) / (G * V)`` when each group always puts all its mass on one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-7  # inside the log of the perplexities (fairseq's)


def perplexity(probs: Tensor) -> Tensor:
    """``probs (G, V)`` per-group distributions -> ``sum_g exp(-sum_v p log(p + 1e-7))`` (scalar)."""
    return torch.exp(-(probs * torch.log(probs + _EPS)).sum(-1)).sum()


@dataclass
class QuantizerOutput:
    """``quantized (B, T, D)``; ``codes (B, T, G)`` int64 chosen entry per group; scalars
    ``code_perplexity`` (detached), ``prob_perplexity``, ``diversity_loss``; ``temperature`` (float)."""

    quantized: Tensor
    codes: Tensor
    code_perplexity: Tensor
    prob_perplexity: Tensor
    diversity_loss: Tensor
    temperature: float


class GumbelQuantizer(nn.Module):
    """``x (B, T, input_dim) -> QuantizerOutput`` with ``groups x entries`` codevectors of
    ``codevector_dim // groups`` dims each (``codevector_dim`` must be divisible by ``groups``)."""

    def __init__(self, input_dim: int, groups: int = 2, entries: int = 320, codevector_dim: int = 256,
                 max_temp: float = 2.0, min_temp: float = 0.5, temp_decay: float = 0.999995):
        super().__init__()
        if codevector_dim % groups:
            raise ValueError(f"codevector_dim {codevector_dim} not divisible by {groups} groups")
        if not 0 < min_temp <= max_temp or not 0 < temp_decay <= 1:
            raise ValueError(f"need 0 < min_temp <= max_temp and 0 < temp_decay <= 1, got "
                             f"{min_temp}, {max_temp}, {temp_decay}")
        self.groups = groups
        self.entries = entries
        self.codevector_dim = codevector_dim
        self.max_temp, self.min_temp, self.temp_decay = max_temp, min_temp, temp_decay
        self.curr_temp = max_temp
        # (G * V, D / G): entry v of group g is row g * V + v (fairseq: uniform init, normal projection)
        self.codevectors = nn.Parameter(torch.empty(groups * entries, codevector_dim // groups).uniform_())
        self.weight_proj = nn.Linear(input_dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def num_codes(self) -> int:
        """``G * V``: the maximal perplexity."""
        return self.groups * self.entries

    @property
    def temperature(self) -> float:
        """The current Gumbel temperature."""
        return self.curr_temp

    def temperature_at(self, num_updates: int) -> float:
        return max(self.max_temp * self.temp_decay ** num_updates, self.min_temp)

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal: ``tau = max(max_temp * decay ** num_updates, min_temp)``."""
        self.curr_temp = self.temperature_at(num_updates)

    def logits(self, x: Tensor) -> Tensor:
        """``(B, T, C) -> (B, T, G, V)`` code logits."""
        B, T, _ = x.shape
        return self.weight_proj(x).view(B, T, self.groups, self.entries)

    def forward(self, x: Tensor, frame_mask: Optional[Tensor] = None) -> QuantizerOutput:
        """``x (B, T, C)``; ``frame_mask (B, T)`` bool: the frames the statistics are taken over
        (None: all). Every frame is quantized either way."""
        B, T, _ = x.shape
        logits = self.logits(x).float()  # (B, T, G, V)
        codes = logits.argmax(-1)  # (B, T, G)
        sel = logits.reshape(B * T, self.groups, self.entries)
        sel_codes = codes.reshape(B * T, self.groups)
        if frame_mask is not None:
            keep = frame_mask.reshape(B * T)
            sel, sel_codes = sel[keep], sel_codes[keep]
        if sel.size(0) > 0:
            with torch.no_grad():
                hard_probs = F.one_hot(sel_codes, self.entries).float().mean(0)  # (G, V)
                code_ppl = perplexity(hard_probs)
            prob_ppl = perplexity(sel.softmax(-1).mean(0))
        else:  # nothing selected: no statistics, a zero (graph-connected) diversity term
            code_ppl = logits.new_tensor(float(self.num_codes))
            prob_ppl = logits.sum() * 0.0 + self.num_codes
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.curr_temp, hard=True, dim=-1)
        else:
            onehot = F.one_hot(codes, self.entries).to(logits.dtype)
        cv = self.codevectors.view(self.groups, self.entries, -1)  # (G, V, D/G)
        q = torch.einsum("btgv,gvd->btgd", onehot.to(cv.dtype), cv).reshape(B, T, self.codevector_dim)
        diversity = (self.num_codes - prob_ppl) / self.num_codes
        return QuantizerOutput(quantized=q, codes=codes, code_perplexity=code_ppl, prob_perplexity=prob_ppl,
                               diversity_loss=diversity, temperature=self.curr_temp)
