"""The training objective of a Transducer: RNN-T loss (fused joiner path) + optional CTC auxiliary
+ optional in-place distillation over the joiner posterior lattice.

``model.config.loss = "pruned"`` replaces the full RNN-T loss by k2's pruned transducer loss
(:mod:`omnisparse.losses.pruned`): ``simple_scale * simple + pruned_scale * pruned``, the simple
joint being the joiner without its tanh (``am = out(enc_proj(enc))``, ``lm = pred_proj(pred) @ out.weight.T``,
no extra parameters) and the scales following :func:`pruned_loss_scales` over
``model.prune_warmup_steps``; with ``model.simple_proj`` the simple joint is the model's own
:class:`~omnisparse.models.joiner.SimpleJoint` heads on the raw encoder and predictor outputs (k2's
``simple_am_proj`` / ``simple_lm_proj``). The warm-up reads :attr:`TransducerLoss.step` (set it to the optimizer
step before each step; left at None it counts the forwards made in training mode).

Distillation (supernet training, ``sparsity.distill``): the dense path returns its log-posteriors
``(B, T', U+1, V)`` (detached) and each sparse path adds ``weight * KD`` with, per utterance,
``KD_b = (T'_b + U_b) * mean over the valid (t, u) nodes of KL(p_dense || p_sparse)`` - the mean KL
scaled to the length of one alignment path, so that it is on the scale of the per-utterance RNN-T
loss - averaged over utterances. It materialises the full lattice (4 * B * T' * (U+1) * V bytes per
copy), which the fused RNN-T loss avoids: keep it off for large vocabularies.

Wrapped as an ``nn.Module`` so that DistributedDataParallel sees one forward per sub-network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from omnisparse.losses.pruned import pruned_loss_scales, pruned_transducer_loss
from omnisparse.losses.rnnt import rnnt_loss_from_joiner


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean over utterances of (rnnt + ctc_weight * ctc)
    rnnt: float  # loss=pruned: the pruned loss (>= the full RNN-T loss)
    ctc: float
    num_utts: int
    num_tokens: int
    distill: float = 0.0
    log_probs: Optional[torch.Tensor] = None  # (B, T', U+1, V) detached, when requested
    simple: float = 0.0  # loss=pruned: the simple (linear-joint) loss


def lattice_log_probs(joiner, enc_p: torch.Tensor, pred_p: torch.Tensor) -> torch.Tensor:
    """Projected ``enc_p (B, T', J)``, ``pred_p (B, U+1, J)`` -> log-posteriors ``(B, T', U+1, V)``."""
    return joiner.join(enc_p, pred_p).float().log_softmax(-1)


def lattice_kl(teacher: torch.Tensor, student: torch.Tensor, enc_lens: torch.Tensor,
               token_lens: torch.Tensor) -> torch.Tensor:
    """Mean over utterances of ``(T'_b + U_b) * mean_valid KL(teacher || student)`` (see module doc).

    ``teacher``, ``student``: log-probs ``(B, T', U+1, V)``; nodes ``t >= T'_b`` or ``u > U_b`` are ignored.
    The teacher is a target: no gradient flows into it, even when it is part of a graph."""
    B, T, U1, _ = student.shape
    teacher = teacher.detach()
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, T', U+1)
    t_ok = torch.arange(T, device=kl.device)[None, :] < enc_lens[:, None]
    u_ok = torch.arange(U1, device=kl.device)[None, :] <= token_lens[:, None]
    valid = (t_ok[:, :, None] & u_ok[:, None, :]).to(kl.dtype)
    per_utt = (kl * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1.0)
    return (per_utt * (enc_lens + token_lens).to(kl.dtype)).mean()


class TransducerLoss(nn.Module):
    def __init__(self, model: nn.Module, loss_dtype: torch.dtype = torch.float32,
                 autocast: Optional[torch.dtype] = None):
        """``autocast``: the dtype the model's encoder runs in during training (None: fp32)."""
        super().__init__()
        self.model = model
        self.loss_dtype = loss_dtype
        self.autocast = autocast
        self.step: Optional[int] = None  # optimizer step for the pruned loss's warm-up (None: count forwards)
        self._forwards = 0

    def rnnt_from_projections(self, enc_p: torch.Tensor, pred_p: torch.Tensor, tokens: torch.Tensor,
                              enc_lens: torch.Tensor, token_lens: torch.Tensor,
                              simple: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                              ) -> tuple[torch.Tensor, float, float]:
        """Transducer part of the loss from ``enc_p (B, T', J)``, ``pred_p (B, U+1, J)``; ``simple``:
        the pruned loss's ``(am (B, T', V), lm (B, U+1, V))`` when the model has a simple joint.

        Returns ``(loss, rnnt, simple)``: the scalar to optimise (mean over utterances), the RNN-T
        value reported (full, or pruned) and the simple loss (0 for ``loss=full``)."""
        m = self.model
        cfg = m.config
        j = m.joiner
        kind = getattr(cfg, "loss", "full")
        if kind == "full":
            rnnt = rnnt_loss_from_joiner(enc_p, pred_p, j.out.effective_weight(), j.out.bias, tokens,
                                         enc_lens, token_lens, blank=cfg.blank_id, reduction="mean",
                                         dtype=self.loss_dtype)
            return rnnt, float(rnnt.detach()), 0.0
        if kind != "pruned":
            raise ValueError(f"model.loss must be full or pruned, got {kind!r}")
        out = pruned_transducer_loss(enc_p, pred_p, j.out.effective_weight(), j.out.bias, tokens, enc_lens,
                                     token_lens, blank=cfg.blank_id, prune_range=cfg.prune_range,
                                     lm_scale=cfg.simple_lm_scale, am_scale=cfg.simple_am_scale,
                                     reduction="mean", dtype=self.loss_dtype,
                                     am=None if simple is None else simple[0], lm=None if simple is None else simple[1])
        step = self._forwards if self.step is None else self.step
        s_scale, p_scale = pruned_loss_scales(step, cfg.prune_warmup_steps, cfg.simple_loss_scale)
        if m.training:
            self._forwards += 1
        loss = s_scale * out.simple + p_scale * out.pruned
        return loss, float(out.pruned.detach()), float(out.simple.detach())

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, tokens: torch.Tensor,
                token_lens: torch.Tensor, mode: str = "stream", return_log_probs: bool = False,
                teacher_log_probs: Optional[torch.Tensor] = None, distill_weight: float = 0.0) -> LossOutput:
        """feats (B, T, 80), feat_lens (B,), tokens (B, U) padded, token_lens (B,).

        ``return_log_probs``: also return this path's lattice log-probs (detached; the distillation
        teacher). ``teacher_log_probs`` + ``distill_weight > 0``: add the distillation term."""
        m = self.model
        out = m(feats, feat_lens, tokens, token_lens, mode=mode, autocast=self.autocast)
        j = m.joiner
        enc_p = j.project_enc(out.enc)  # (B, T', J)
        pred_p = j.project_pred(out.pred)  # (B, U+1, J)
        simple = (m.simple_joint(out.enc, out.pred)
                  if getattr(m, "simple_joint", None) is not None and m.config.loss == "pruned" else None)
        loss, rnnt_val, simple_val = self.rnnt_from_projections(enc_p, pred_p, tokens, out.enc_lens, token_lens,
                                                                simple)
        ctc_val = 0.0
        if getattr(out, "ctc_logits", None) is not None and m.config.ctc_weight > 0:
            lp = out.ctc_logits.log_softmax(-1).transpose(0, 1)  # (T', B, V)
            ctc = F.ctc_loss(lp, tokens, out.enc_lens, token_lens, blank=m.config.blank_id,
                             reduction="sum", zero_infinity=True) / max(1, feats.shape[0])
            loss = loss + m.config.ctc_weight * ctc
            ctc_val = float(ctc.detach())
        distill_val = 0.0
        lattice = None
        want_kd = teacher_log_probs is not None and distill_weight > 0
        if return_log_probs or want_kd:
            lattice = lattice_log_probs(j, enc_p, pred_p)
            if want_kd:
                kd = lattice_kl(teacher_log_probs, lattice, out.enc_lens, token_lens)
                loss = loss + distill_weight * kd
                distill_val = float(kd.detach())
        return LossOutput(loss=loss, rnnt=rnnt_val, ctc=ctc_val, num_utts=int(feats.shape[0]),
                          num_tokens=int(token_lens.sum()), distill=distill_val,
                          log_probs=lattice.detach() if (lattice is not None and return_log_probs) else None,
                          simple=simple_val)
