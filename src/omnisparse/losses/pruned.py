"""Pruned RNN-T loss (k2's "pruned transducer", Kuang et al. 2022) in plain PyTorch.

The full RNN-T loss runs the joiner on every node of the ``(T, U+1)`` lattice: ``B*T*(U+1)*J*V``
multiply-adds per pass. The pruned loss runs it on ``S = prune_range`` symbols per frame only:

1. **Simple loss.** A trivial joiner: encoder and predictor are projected to the vocabulary
   (``am (B, T, V)``, ``lm (B, U+1, V)``) and added, ``logits[t, u] = am[t] + lm[u]``. Its log-softmax
   normaliser is one ``(B,T,V) x (B,V,U+1)`` product (``log sum_v exp(am[t,v]) exp(lm[u,v])``), so the
   ``(B,T,U+1,V)`` joint is never built. Optionally smoothed as k2's ``rnnt_loss_smoothed``: the
   lattice weights interpolate, with shares ``lm_scale`` and ``am_scale``, the LM-only log-probs
   ``log softmax(lm[u])`` and AM-only log-probs ``log (softmax(am[t]) * unigram / Z)`` (unigram = mean
   LM distribution over the batch), which regularises the LM and AM parts separately.
2. **Band.** The gradient of the simple log-likelihood w.r.t. the lattice weights is the occupation
   probability of each transition. Per frame t the band start ``s_begin[b, t]`` is the ``s`` whose
   window ``[s, s+S-1]`` holds the most mass (arrivals by a label + blank departures), then adjusted
   as k2 does so that ``s_begin[0] = 0``, it is non-decreasing and grows by at most ``S-1`` per frame
   (a path can cross from band to band), and the last valid frame's band holds ``U_b``.
3. **Pruned loss.** The real joiner runs on the band only: ``pred_proj`` is gathered at
   ``s_begin[b, t] + k`` (``k < S``) to ``(B, T, S, J)``, logits ``(B, T, S, V)``, and the RNN-T
   recursion runs on the banded lattice (node ``(t, k)`` = full node ``(t, s_begin[t] + k)``; a blank
   from ``(t, k)`` lands on ``(t+1, k - (s_begin[t+1] - s_begin[t]))`` or leaves the band).

Total loss = ``simple_scale * simple + pruned_scale * pruned``; :func:`pruned_loss_scales` gives k2's
warm-up of the two scales. With ``S >= U+1`` the band is the whole lattice and the pruned loss equals
the full loss; otherwise it is ``>=`` the full loss (fewer alignments). It is infinite when an
utterance needs more than ``S-1`` labels in one frame on every path (``U_b > (S-1) * T_b``).

Conventions are those of :mod:`omnisparse.losses.rnnt` (``blank_lp (B,T,U+1)``, ``label_lp (B,T,U)``,
losses per utterance, ``reduction`` none|sum|mean over utterances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from omnisparse.losses.lattice import (
    _JointLogProbs,
    _check_lengths,
    _prepare_targets,
    _reduce,
    _REDUCTIONS,
    joint_logprobs,
)
from omnisparse.losses.recursion import _AlphaBeta

__all__ = [
    "PrunedLoss",
    "band_joiner_logits",
    "band_logprobs",
    "gather_band",
    "prune_ranges",
    "pruned_loss_scales",
    "pruned_transducer_loss",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "simple_logprobs",
]

_NINF = float("-inf")


# --------------------------------------------------------------------------------------------
# 1. simple (linear) joint
# --------------------------------------------------------------------------------------------
def simple_logprobs(am: Tensor, lm: Tensor, targets: Tensor, target_lengths: Tensor, blank: int = 0,
                    lm_scale: float = 0.0, am_scale: float = 0.0) -> tuple[Tensor, Tensor]:
    """Lattice log-weights of the simple joint ``logits[t, u] = am[t] + lm[u]``.

    Args:
        am: ``(B, T, V)`` encoder side projected to the vocabulary.
        lm: ``(B, U+1, V)`` predictor side projected to the vocabulary.
        targets: ``(B, U)`` valid label ids everywhere (padding replaced, see ``_prepare_targets``).
        target_lengths: ``(B,)``; only the unigram of the smoothing looks at it.
        lm_scale, am_scale: k2 smoothing shares (0, 0 = exact log-probs of the simple joint).

    Returns ``blank_lp (B, T, U+1)`` and ``label_lp (B, T, U)`` (differentiable w.r.t. ``am``, ``lm``).
    """
    B, T, V = am.shape
    U1 = lm.shape[1]
    U = U1 - 1
    am_max = am.detach().amax(-1, keepdim=True)                                  # (B,T,1)
    lm_max = lm.detach().amax(-1, keepdim=True)                                  # (B,U+1,1)
    am_p = (am - am_max).exp()
    lm_p = (lm - lm_max).exp()
    # log sum_v exp(am[t,v] + lm[u,v]) without the (B,T,U+1,V) joint; the floor keeps log finite
    # when the two distributions have disjoint support in float32
    norm = torch.bmm(am_p, lm_p.transpose(1, 2)).clamp_min(1e-30).log() + am_max + lm_max.transpose(1, 2)
    am_lab = am.gather(2, targets[:, None, :].expand(B, T, U))                   # (B,T,U)
    lm_lab = lm[:, :U].gather(2, targets[:, :, None]).squeeze(-1)                # (B,U)
    am_blank = am[..., blank]                                                    # (B,T)
    lm_blank = lm[..., blank]                                                    # (B,U+1)
    blank_lp = am_blank[:, :, None] + lm_blank[:, None, :] - norm
    label_lp = am_lab + lm_lab[:, None, :] - norm[..., :U]
    if lm_scale == 0.0 and am_scale == 0.0:
        return blank_lp, label_lp
    full_share = 1.0 - lm_scale - am_scale
    lm_z = lm_p.sum(-1, keepdim=True)                                            # (B,U+1,1)
    lm_only_norm = lm_z.log() + lm_max                                           # (B,U+1,1)
    blank_lp = full_share * blank_lp
    label_lp = full_share * label_lp
    if lm_scale != 0.0:
        blank_lp = blank_lp + lm_scale * (lm_blank - lm_only_norm[..., 0])[:, None, :]
        label_lp = label_lp + lm_scale * (lm_lab - lm_only_norm[:, :U, 0])[:, None, :]
    if am_scale != 0.0:
        # unigram over the valid predictor positions (u <= U_b) of the batch
        valid = (torch.arange(U1, device=lm.device)[None, :] <= target_lengths.to(lm.device)[:, None]).to(lm.dtype)
        unigram = ((lm_p / lm_z) * valid[..., None]).sum((0, 1)) / valid.sum().clamp_min(1.0)  # (V,)
        unigram = unigram + 1e-20
        am_only_norm = (am_p @ unigram).log() + am_max[..., 0]                   # (B,T)
        log_uni = unigram.log()
        blank_lp = blank_lp + am_scale * (am_blank + log_uni[blank] - am_only_norm)[:, :, None]
        label_lp = label_lp + am_scale * (am_lab + log_uni[targets][:, None, :] - am_only_norm[:, :, None])
    return blank_lp, label_lp


class _WithGrad(torch.autograd.Function):
    """``ll (B,)`` whose gradient w.r.t. ``(blank_lp, label_lp)`` was already computed (the occupancies)."""

    @staticmethod
    def forward(ctx, blank_lp: Tensor, label_lp: Tensor, ll: Tensor, occ_blank: Tensor,
                occ_label: Tensor):  # type: ignore[override]
        ctx.save_for_backward(occ_blank, occ_label)
        ctx.dtypes = (blank_lp.dtype, label_lp.dtype)
        return ll.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        occ_blank, occ_label = ctx.saved_tensors
        gb = (occ_blank * g[:, None, None]).to(ctx.dtypes[0])
        gl = (occ_label * g[:, None, None]).to(ctx.dtypes[1])
        return gb, gl, None, None, None


def _loglike_and_occupancy(blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor,
                           target_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``ll (B,)``, ``d ll / d blank_lp (B,T,U+1)``, ``d ll / d label_lp (B,T,U)`` by one alpha + beta pass."""
    with torch.enable_grad():
        bl = blank_lp.detach().requires_grad_(True)
        la = label_lp.detach().requires_grad_(True)
        ll = _AlphaBeta.apply(bl, la, logit_lengths, target_lengths)
        occ_b, occ_l = torch.autograd.grad(ll.sum(), [bl, la])
    # an utterance without any path (ll = -inf) has NaN occupancies: no gradient, no band preference
    return ll.detach(), occ_b.nan_to_num_(0.0), occ_l.nan_to_num_(0.0)


def rnnt_loss_simple(am: Tensor, lm: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
                     blank: int = 0, lm_scale: float = 0.0, am_scale: float = 0.0, reduction: str = "mean",
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """RNN-T loss of the simple joint ``am[t] + lm[u]`` (smoothed as k2 when ``lm_scale``/``am_scale`` > 0).

    Args:
        am: ``(B, T, V)``; lm: ``(B, U+1, V)``; targets ``(B, U)`` (padding may hold anything);
        logit_lengths, target_lengths: ``(B,)``; dtype: of the recursion (the loss has this dtype).

    Returns ``(loss, (occ_blank (B,T,U+1), occ_label (B,T,U)))``: the occupation probabilities of the
    blank and label transitions (detached, in ``dtype``; what :func:`prune_ranges` takes). The loss is
    differentiable w.r.t. ``am`` and ``lm``; the recursion runs once forward and once backward.
    """
    if am.dim() != 3 or lm.dim() != 3 or am.shape[0] != lm.shape[0] or am.shape[2] != lm.shape[2]:
        raise ValueError(f"am must be (B,T,V) and lm (B,U+1,V), got {tuple(am.shape)} and {tuple(lm.shape)}")
    B, T, V = am.shape
    U = lm.shape[1] - 1
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} outside [0, V={V})")
    _check_lengths(B, T, U, logit_lengths, target_lengths)
    tgt = _prepare_targets(targets.to(am.device), target_lengths, U, blank)
    blank_lp, label_lp = simple_logprobs(am, lm, tgt, target_lengths, blank, lm_scale, am_scale)
    blank_lp, label_lp = blank_lp.to(dtype), label_lp.to(dtype)
    ll, occ_b, occ_l = _loglike_and_occupancy(blank_lp, label_lp, logit_lengths, target_lengths)
    losses = -_WithGrad.apply(blank_lp, label_lp, ll, occ_b, occ_l)
    return _reduce(losses, reduction), (occ_b, occ_l)


# --------------------------------------------------------------------------------------------
# 2. band of S symbols per frame
# --------------------------------------------------------------------------------------------
def _suffix_min(x: Tensor) -> Tensor:
    """``out[:, t] = min_{j >= t} x[:, j]`` for ``x (B, T)`` (k2's ``monotonic_lower_bound``)."""
    return x.flip(1).cummin(1).values.flip(1)


def prune_ranges(occ_blank: Tensor, occ_label: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
                 prune_range: int) -> Tensor:
    """Band start per frame ``s_begin (B, T)`` int64 from the simple lattice's occupancies.

    ``occ_blank (B, T, U+1)``, ``occ_label (B, T, U)``: occupation probabilities (:func:`rnnt_loss_simple`).
    ``prune_range`` S (clipped to ``U+1``). Guarantees, per utterance b and frame ``t < T_b``:
    ``s_begin[b, 0] = 0``; ``0 <= s_begin[b, t+1] - s_begin[b, t] <= S-1``;
    ``s_begin[b, t] <= max(0, U_b + 1 - S)`` (band inside ``[0, U_b]`` when ``S <= U_b + 1``);
    ``s_begin[b, T_b-1] + S - 1 >= U_b`` whenever ``U_b <= (S-1) * (T_b-1) + S - 1`` (a path exists).
    Frames past ``T_b`` hold the last band's start.
    """
    B, T, U1 = occ_blank.shape
    S = min(int(prune_range), U1)
    if S < 1:
        raise ValueError(f"prune_range must be >= 1, got {prune_range}")
    dev = occ_blank.device
    # mass of the window [s, s+S-1]: label arrivals into its nodes + blank departures from them
    tot = occ_blank.clone()
    tot[..., 1:] += occ_label
    cs = torch.cat([tot.new_zeros(B, T, 1), tot.cumsum(-1)], dim=-1)              # (B,T,U+2)
    win = cs[..., S:] - cs[..., :-S]                                              # (B,T,U+2-S)
    s_begin = win.argmax(-1)                                                      # first max: lowest band
    top = (target_lengths.to(dev) + 1 - S).clamp_min(0)[:, None]                  # (B,1) highest start
    t = torch.arange(T, device=dev)[None, :]
    # the last valid frame ends the path at U_b: its band is the top one; later frames copy it
    s_begin = torch.where(t >= logit_lengths.to(dev)[:, None] - 1, top, s_begin.clamp(max=top))
    # k2's _adjust_pruning_lower_bound: monotone, then steps <= S-1 (y = (S-1) t - s monotone), s_0 = 0
    s_begin = _suffix_min(s_begin)
    step = (S - 1) * t
    y = _suffix_min(step - s_begin).clamp_min(0)
    return step - y


def gather_band(pred_proj: Tensor, s_begin: Tensor, prune_range: int) -> Tensor:
    """``pred_proj (B, U+1, J)`` at positions ``s_begin[b, t] + k`` -> ``(B, T, S, J)``, ``S = min(prune_range, U+1)``."""
    B, U1, J = pred_proj.shape
    T = s_begin.shape[1]
    S = min(int(prune_range), U1)
    pos = s_begin[:, :, None] + torch.arange(S, device=s_begin.device)                  # (B,T,S)
    rows = (pos + (torch.arange(B, device=s_begin.device) * U1)[:, None, None]).reshape(-1)
    # index_select of rows (backward: index_add) is ~2x faster than gather with a (B, T*S, J) index
    return pred_proj.reshape(B * U1, J).index_select(0, rows).view(B, T, S, J)


def band_joiner_logits(enc_proj: Tensor, pred_proj: Tensor, weight: Tensor, bias: Optional[Tensor],
                       s_begin: Tensor, prune_range: int) -> Tensor:
    """The tanh joiner on the band: ``tanh(enc_proj[:, :, None] + pred_band) @ weight.T + bias`` -> ``(B, T, S, V)``.

    ``enc_proj (B, T, J)``, ``pred_proj (B, U+1, J)``, ``weight (V, J)``, ``bias (V,)`` or None,
    ``s_begin (B, T)`` from :func:`prune_ranges`. Autograd all the way (the band is small).
    """
    h = torch.tanh(enc_proj.unsqueeze(2) + gather_band(pred_proj, s_begin, prune_range))
    return F.linear(h, weight, bias)


def band_logprobs(logits: Tensor, targets: Tensor, s_begin: Tensor, blank: int = 0) -> tuple[Tensor, Tensor]:
    """``blank_lp (B, T, S)`` and ``label_lp (B, T, S-1)`` of banded logits ``(B, T, S, V)``.

    ``targets (B, U)`` must hold valid ids everywhere; the label of band node k at frame t is
    ``targets[b, s_begin[b, t] + k]`` (the top node's label leaves the band and is not needed).
    """
    B, T, S, _ = logits.shape
    if S == 1:
        return joint_logprobs(logits, targets[:, :0], blank)
    pos = s_begin[:, :, None] + torch.arange(S - 1, device=s_begin.device)        # (B,T,S-1) <= U-1
    lab = targets.to(torch.long).gather(1, pos.reshape(B, -1)).view(B, T, S - 1)
    return _JointLogProbs.apply(logits, lab.contiguous(), blank)


# --------------------------------------------------------------------------------------------
# 3. RNN-T recursion on the band
# --------------------------------------------------------------------------------------------
class _BandAlphaBeta(torch.autograd.Function):
    """Log-likelihood ``(B,)`` of the banded lattice: alpha loop forward, beta loop backward.

    Within a frame the label transitions are done by the cumsum trick of
    :mod:`omnisparse.losses.recursion` over the S band nodes (``C`` = exclusive cumsum of the band's labels,
    small: S terms); between frames the blank moves node k to ``k - d_t``, ``d_t = s_begin[t+1] - s_begin[t]``,
    a gather from a row padded with one ``-inf`` column (index S = "left the band").
    """

    @staticmethod
    def forward(ctx, blank_lp: Tensor, label_lp: Tensor, s_begin: Tensor, logit_lengths: Tensor,
                target_lengths: Tensor):  # type: ignore[override]
        B, T, S = blank_lp.shape
        dev = blank_lp.device
        Tb = logit_lengths.to(dev)
        Ub = target_lengths.to(dev)
        k = torch.arange(S, device=dev)
        C = torch.cat([blank_lp.new_zeros(B, T, 1), label_lp.cumsum(-1)], dim=-1)        # (B,T,S)
        E = torch.cat([C + blank_lp, blank_lp.new_full((B, T, 1), _NINF)], dim=-1)        # (B,T,S+1)
        d = s_begin[:, 1:] - s_begin[:, :-1]                                              # (B,T-1)
        idx = (k[None, None, :] + d[:, :, None]).clamp_(max=S)                            # (B,T-1,S)
        # A[:, t, :S] = alpha[t] - C[t]; column S stays -inf
        A = blank_lp.new_full((B, T, S + 1), _NINF)
        A[:, 0, :S] = 0.0
        for t in range(1, T):
            inc = (A[:, t - 1] + E[:, t - 1]).gather(1, idx[:, t - 1])
            A[:, t, :S] = torch.logcumsumexp(inc - C[:, t], dim=-1)
        alpha = A[..., :S] + C
        b = torch.arange(B, device=dev)
        t_end = Tb - 1
        k_end = Ub - s_begin[b, t_end]
        ok = (k_end >= 0) & (k_end < S)
        kc = k_end.clamp(0, S - 1)
        ll = torch.where(ok, alpha[b, t_end, kc] + blank_lp[b, t_end, kc], alpha.new_full((B,), _NINF))
        ctx.save_for_backward(blank_lp, label_lp, C, alpha, ll, idx, t_end, kc, ok)
        return ll

    @staticmethod
    def backward(ctx, g_ll: Tensor):  # type: ignore[override]
        blank_lp, label_lp, C, alpha, ll, idx, t_end, kc, ok = ctx.saved_tensors
        B, T, S = blank_lp.shape
        dev, dt = blank_lp.device, blank_lp.dtype
        # flipped k: the reverse logcumsumexp becomes a plain one and the blank gather keeps its index
        # (node kf + d_t of the next frame's flipped row)
        Ef = (blank_lp + C).flip(-1)
        Cf = C.flip(-1)
        end_f = torch.full((B, S), _NINF, device=dev, dtype=dt)
        end_f[torch.arange(B, device=dev), S - 1 - kc] = torch.zeros(B, device=dev, dtype=dt).masked_fill_(~ok, _NINF)
        is_end = (torch.arange(T, device=dev)[None, :] == t_end[:, None])                 # (B,T)
        nb_f = torch.empty((B, T, S), device=dev, dtype=dt)                               # beta after the blank
        beta_f = torch.empty((B, T, S), device=dev, dtype=dt)
        nxt = torch.full((B, S + 1), _NINF, device=dev, dtype=dt)                         # beta_f[t+1], col S -inf
        ninf_row = torch.full((B, S), _NINF, device=dev, dtype=dt)
        for t in range(T - 1, -1, -1):
            inc = nxt.gather(1, idx[:, t]) if t < T - 1 else ninf_row
            inc = torch.where(is_end[:, t, None], end_f, inc)
            nb_f[:, t] = inc
            row = torch.logcumsumexp(inc + Ef[:, t], dim=-1) - Cf[:, t]
            beta_f[:, t] = row
            nxt[:, :S] = row
        beta = beta_f.flip(-1)
        nb = nb_f.flip(-1)
        g = torch.where(ok, g_ll.to(dt), 0.0)[:, None, None]
        llb = torch.where(ok, ll, 0.0)[:, None, None]
        g_blank = torch.exp(alpha + blank_lp + nb - llb).mul_(g)
        g_label = torch.exp(alpha[..., :-1] + label_lp + beta[..., 1:] - llb).mul_(g)
        return g_blank, g_label, None, None, None


def rnnt_loss_pruned(blank_lp: Tensor, label_lp: Tensor, s_begin: Tensor, logit_lengths: Tensor,
                     target_lengths: Tensor, reduction: str = "mean",
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """RNN-T loss on the band: ``blank_lp (B, T, S)``, ``label_lp (B, T, S-1)``, ``s_begin (B, T)``.

    Node ``(t, k)`` is the full lattice's ``(t, s_begin[b, t] + k)``; ``s_begin`` must satisfy the
    guarantees of :func:`prune_ranges`. Infinite for an utterance whose end node ``(T_b-1, U_b)`` is
    outside the band (its gradient is zero).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    B, T, S = blank_lp.shape
    if label_lp.shape != (B, T, S - 1) or s_begin.shape != (B, T):
        raise ValueError(f"label_lp must be {(B, T, S - 1)} and s_begin {(B, T)}, got "
                         f"{tuple(label_lp.shape)} and {tuple(s_begin.shape)}")
    if logit_lengths.shape != (B,) or target_lengths.shape != (B,):
        raise ValueError(f"logit_lengths and target_lengths must be ({B},)")
    losses = -_BandAlphaBeta.apply(blank_lp.to(dtype), label_lp.to(dtype), s_begin.to(torch.long),
                                   logit_lengths, target_lengths)
    return _reduce(losses, reduction)


# --------------------------------------------------------------------------------------------
# all together, for the tanh joiner
# --------------------------------------------------------------------------------------------
def pruned_loss_scales(step: int, warmup_steps: int, simple_loss_scale: float) -> tuple[float, float]:
    """k2/icefall warm-up: ``(simple_scale, pruned_scale)`` go linearly from ``(1, 0.1)`` at step 0 to
    ``(simple_loss_scale, 1)`` at ``warmup_steps`` (the simple loss first finds the alignment, then
    the pruned loss, whose band depends on it, takes over). ``warmup_steps <= 0``: no warm-up."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(simple_loss_scale), 1.0
    f = max(0, step) / warmup_steps
    return 1.0 - f * (1.0 - simple_loss_scale), 0.1 + 0.9 * f


@dataclass
class PrunedLoss:
    """Per-utterance (or reduced) ``simple`` and ``pruned`` losses, and the band ``s_begin (B, T)``."""

    simple: Tensor
    pruned: Tensor
    s_begin: Tensor


def pruned_transducer_loss(enc_proj: Tensor, pred_proj: Tensor, weight: Tensor, bias: Optional[Tensor],
                           targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int = 0,
                           prune_range: int = 5, lm_scale: float = 0.25, am_scale: float = 0.0,
                           reduction: str = "mean", dtype: torch.dtype = torch.float32,
                           am: Optional[Tensor] = None, lm: Optional[Tensor] = None) -> PrunedLoss:
    """Simple + pruned RNN-T losses of the joiner ``tanh(enc[:, :, None] + pred[:, None]) @ weight.T + bias``.

    Args:
        enc_proj: ``(B, T, J)``; pred_proj: ``(B, U+1, J)`` (the joiner's projections).
        weight: ``(V, J)``; bias: ``(V,)`` or None (the joiner's output layer).
        targets ``(B, U)``, logit_lengths ``(B,)``, target_lengths ``(B,)``: as :func:`rnnt_loss`.
        prune_range: S, band width (clipped to ``U+1``).
        lm_scale, am_scale: smoothing of the simple loss (k2 ``rnnt_loss_smoothed``; icefall uses 0.25, 0).
        am, lm: simple-joint inputs ``(B, T, V)``, ``(B, U+1, V)``; default: the joiner without its
            tanh, ``am = enc_proj @ weight.T + bias``, ``lm = pred_proj @ weight.T`` (no extra parameters).

    The band comes from the simple loss's occupancies (no gradient through it). Returns
    :class:`PrunedLoss` with both losses reduced by ``reduction``; combine them with
    :func:`pruned_loss_scales`.
    """
    if enc_proj.dim() != 3 or pred_proj.dim() != 3 or weight.dim() != 2:
        raise ValueError("enc_proj must be (B,T,J), pred_proj (B,U+1,J), weight (V,J)")
    B, T, _ = enc_proj.shape
    U = pred_proj.shape[1] - 1
    V = weight.shape[0]
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} outside [0, V={V})")
    _check_lengths(B, T, U, logit_lengths, target_lengths)
    if am is None:
        am = F.linear(enc_proj, weight, bias)
    if lm is None:
        lm = F.linear(pred_proj, weight)
    simple, (occ_b, occ_l) = rnnt_loss_simple(am, lm, targets, logit_lengths, target_lengths, blank,
                                              lm_scale, am_scale, reduction, dtype)
    s_begin = prune_ranges(occ_b, occ_l, logit_lengths, target_lengths, prune_range)
    logits = band_joiner_logits(enc_proj, pred_proj, weight, bias, s_begin, prune_range)
    tgt = _prepare_targets(targets.to(enc_proj.device), target_lengths, U, blank)
    blank_lp, label_lp = band_logprobs(logits, tgt, s_begin, blank)
    pruned = rnnt_loss_pruned(blank_lp, label_lp, s_begin, logit_lengths, target_lengths, reduction, dtype)
    return PrunedLoss(simple=simple, pruned=pruned, s_begin=s_begin)
