"""RNN-T (transducer) loss in plain PyTorch, plus a memory-lean variant fused with the joiner.

Conventions (the whole package uses them)
-----------------------------------------
* ``logits``: ``(B, T, U+1, V)`` float, the joiner output *before* any softmax.
* ``targets``: ``(B, U)`` int64, padded with anything past ``target_lengths[b]`` (pad values are
  never read: they are replaced by ``blank`` before gathering).
* ``logit_lengths``, ``target_lengths``: ``(B,)`` int64; ``1 <= logit_lengths[b] <= T`` and
  ``0 <= target_lengths[b] <= U``.
* ``blank`` is a parameter (default 0).
* Loss of utterance b = ``-log P(y_b | x_b)``, summed over all monotonic alignments (Graves 2012),
  including the final blank emitted at ``(T_b - 1, U_b)``.
* ``reduction``: ``"none"`` -> ``(B,)``; ``"sum"`` -> scalar sum; ``"mean"`` -> scalar *mean over the
  batch of the per-utterance losses* (not divided by target lengths; this is what warprnnt-numba and
  torchaudio actually compute, whatever warprnnt-numba's docstring says).

How it is computed
------------------
1. Only two numbers per lattice node are needed: ``blank_lp[b,t,u] = log p(blank | t, u)`` and
   ``label_lp[b,t,u] = log p(y_{u+1} | t, u)``. :func:`joint_logprobs` gets them from the full
   logits with one ``log_softmax`` over V (a temporary, dropped at once) and two gathers; its
   hand-written backward saves only the logits and writes their gradient in one new tensor as
   ``onehot * g - softmax * (g_blank + g_label)`` (softmax recomputed). Measured at B=8, T=100,
   U=20, V=256, 1 thread (CPU time): 9 ms fwd+bwd vs 27 ms for ``log_softmax`` + ``gather`` +
   autograd (whose backward builds zero-filled scatter buffers and runs log_softmax_backward).
2. The log-likelihood comes from the forward variable alpha, in ``dtype`` (float32 or float64),
   with a loop over t; the within-row label transitions are one call per row by the cumsum trick::

       C[t, u]   = sum_{k<u} label_lp[t, k]                       (exclusive cumsum over u)
       a[t, u]   = alpha[t, u] - C[t, u]
       a[t, :]   = logcumsumexp_u(a[t-1, :] + C[t-1, :] + blank_lp[t-1, :] - C[t, :])

   i.e. one add and one ``logcumsumexp`` over ``U+1`` values per frame, batched over B.
   ``recursion=`` picks how the gradient is obtained:

   * ``"alphabeta"`` (default, fastest): a custom autograd function; forward runs the alpha loop
     without recording a graph, backward runs the mirror-image beta loop (reverse logcumsumexp)
     and returns the closed form ``d ll / d lp = exp(alpha + lp + beta_next - ll)``.
   * ``"time"``: the same alpha loop differentiated by autograd (T ``logcumsumexp`` nodes).
   * ``"diagonal"``: a loop over the T+U-1 anti-diagonals with ``logaddexp``, autograd; no cumsum.

   Recursion alone, fwd+bwd, B=8, T=100, U=20 (1 thread, CPU time, min of 25; the box was shared):
   alphabeta 4.4 ms, time 7.3 ms, diagonal 8.9 ms (float64: 4.2 / 7.4 / 10.5 ms).
   All three agree with a brute-force sum over alignments to 1e-12 in float64. The cumsum trick
   loses ``~eps * |C|`` of absolute precision (``|C|`` = summed label log-probs of a row, labels
   past U_b zeroed in ``alphabeta``): ~1e-5 nats in float32 for |C| ~ 100; use
   ``dtype=torch.float64`` for a reference-quality value (the recursion is cheap either way).
3. :func:`rnnt_loss_from_joiner` replaces step 1 by a custom autograd function that builds the
   joiner logits ``tanh(enc[:, :, None] + pred[:, None]) @ W.T + b`` ``chunk_frames`` frames at a
   time, keeps only ``blank_lp``/``label_lp``, and recomputes each chunk in backward (one extra
   joiner matmul per step) to form the gradients of enc, pred, W and b directly.

Memory of the joint
-------------------
One copy of the joint is ``B * T * (U+1) * V * itemsize`` bytes (:func:`joint_bytes`); e.g.
B=8, T=100, U=20, V=256, float32: 8*100*21*256*4 = 17.2 MB; a batch of 200 s of audio
with a 256-piece BPE (~80M floats per copy) is ~320 MB per copy.

* :func:`rnnt_loss` on given logits: the logits (saved for backward, no other full-size tensor
  kept) + one full-size temporary at a time (log-softmax in forward, the gradient in backward):
  2 copies at peak. The textbook ``log_softmax`` + ``gather`` + autograd recipe keeps the
  log-softmax output for backward and builds scatter buffers: 4 copies (measured).
  warprnnt-numba's CPU path: 5 (log-softmax, zero-filled grads, a scaled copy in backward,
  log-softmax backward).
* A plain joiner + loss step (``tanh(...) @ W.T + b`` then :func:`rnnt_loss`) also holds the
  ``(B,T,U+1,J)`` activation and, in backward, its gradients: ~4 copies of ``B*T*(U+1)*V`` +
  ~2-3 of ``B*T*(U+1)*J``.
* :func:`rnnt_loss_from_joiner` holds the small inputs, ``O(B*T*(U+1))`` gathered values and
  per-chunk temporaries of about ``B * chunk_frames * (U+1) * (V + 2J)`` floats
  (:func:`fused_chunk_bytes`: logits/softmax, the tanh activation and its gradient), i.e. a few
  ``B*chunk*(U+1)*max(V,J)`` buffers, independent of T.

Measured peak resident-set growth of one fwd+bwd at B=8, T=100, U=20, V=J=256 (float32, inputs
excluded except the logits clone; ``bench/rnnt_loss.py``): rnnt_loss 34 MB (2.0 joint copies),
warprnnt-numba 86 MB (5.0), plain joiner+loss 104 MB (6.1), fused joiner+loss with chunk_frames=8
11.6 MB (0.7; chunk_frames=1: 4.7 MB, 32: 36 MB).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "rnnt_loss",
    "rnnt_loss_from_logprobs",
    "rnnt_loss_from_joiner",
    "joint_logprobs",
    "joiner_logprobs",
    "joint_bytes",
    "fused_chunk_bytes",
]

_REDUCTIONS = ("none", "sum", "mean")


# --------------------------------------------------------------------------------------------
# memory formulae
# --------------------------------------------------------------------------------------------
def joint_bytes(B: int, T: int, U: int, V: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of ONE copy of the ``(B, T, U+1, V)`` joint (``U`` = max target length)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(B) * int(T) * (int(U) + 1) * int(V) * itemsize


def fused_chunk_bytes(B: int, chunk_frames: int, U: int, V: int, J: int,
                      dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the per-chunk temporaries of :func:`rnnt_loss_from_joiner` (logits + 2 x activation)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(B) * int(chunk_frames) * (int(U) + 1) * (int(V) + 2 * int(J)) * itemsize


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _prepare_targets(targets: Tensor, target_lengths: Tensor, U: int, blank: int) -> Tensor:
    """``(B, U)`` int64 targets with every padded slot replaced by ``blank`` (a valid index)."""
    if targets.dim() != 2:
        raise ValueError(f"targets must be (B, U), got {tuple(targets.shape)}")
    if targets.shape[1] < U:
        raise ValueError(f"targets has {targets.shape[1]} columns, the joint expects U={U}")
    targets = targets[:, :U].to(torch.long)
    valid = torch.arange(U, device=targets.device)[None, :] < target_lengths.to(targets.device)[:, None]
    return torch.where(valid, targets, torch.full_like(targets, blank))


def _check_lengths(B: int, T: int, U: int, logit_lengths: Tensor, target_lengths: Tensor) -> None:
    if logit_lengths.shape != (B,) or target_lengths.shape != (B,):
        raise ValueError(f"logit_lengths and target_lengths must be ({B},), got "
                         f"{tuple(logit_lengths.shape)} and {tuple(target_lengths.shape)}")
    if B == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > T:
        raise ValueError(f"logit_lengths must lie in [1, T={T}], got {logit_lengths.tolist()}")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > U:
        raise ValueError(f"target_lengths must lie in [0, U={U}], got {target_lengths.tolist()}")


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------------------------
# log-softmax + gather on a full joint
# --------------------------------------------------------------------------------------------
def _logits_grad(logits: Tensor, g_blank: Tensor, g_label: Tensor, targets: Tensor, blank: int) -> Tensor:
    """Gradient of the gathered log-probs w.r.t. the logits: ``onehot*g - softmax*(g_b + g_l)``.

    ``logits`` ``(..., U+1, V)``; ``g_blank`` ``(..., U+1)``; ``g_label``/``targets`` ``(..., U)``.
    One new full-size tensor (the softmax, turned into the gradient in place).
    """
    U = g_label.shape[-1]
    g_tot = g_blank.neg()
    g_tot[..., :U] -= g_label
    out = torch.softmax(logits, dim=-1)
    out.mul_(g_tot.unsqueeze(-1))
    out[..., blank] += g_blank
    if U > 0:
        out[..., :U, :].scatter_add_(-1, targets.unsqueeze(-1), g_label.unsqueeze(-1))
    return out


def _gather_logprobs(logits: Tensor, targets: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """``log_softmax`` then the two gathers; the log-softmax temporary is dropped on return."""
    U = logits.shape[-2] - 1
    logp = torch.log_softmax(logits, dim=-1)
    blank_lp = logp[..., blank].contiguous()
    label_lp = logp[..., :U, :].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return blank_lp, label_lp


class _JointLogProbs(torch.autograd.Function):
    """``(logits, targets) -> (blank_lp, label_lp)``; saves only ``logits``, backward recomputes the softmax."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, blank: int):  # type: ignore[override]
        blank_lp, label_lp = _gather_logprobs(logits, targets, blank)
        ctx.save_for_backward(logits, targets)
        ctx.blank = blank
        return blank_lp, label_lp

    @staticmethod
    def backward(ctx, g_blank: Optional[Tensor], g_label: Optional[Tensor]):  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        shape = logits.shape[:-1]
        if g_blank is None:
            g_blank = logits.new_zeros(shape)
        if g_label is None:
            g_label = logits.new_zeros(shape[:-1] + (shape[-1] - 1,))
        grad = _logits_grad(logits, g_blank.to(logits.dtype), g_label.to(logits.dtype), targets, ctx.blank)
        return grad, None, None


def joint_logprobs(logits: Tensor, targets: Tensor, blank: int = 0) -> tuple[Tensor, Tensor]:
    """``log p(blank)`` ``(B,T,U+1)`` and ``log p(next label)`` ``(B,T,U)`` from full logits.

    ``targets`` must hold valid indices everywhere (see :func:`rnnt_loss`, which replaces padding).
    """
    B, T, U1, _ = logits.shape
    targets = targets.to(torch.long)[:, None, : U1 - 1].expand(B, T, U1 - 1).contiguous()
    return _JointLogProbs.apply(logits, targets, blank)


def _autograd_joint_logprobs(logits: Tensor, targets: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """Textbook version (log_softmax + gather, autograd backward); used by tests and the bench."""
    U = logits.shape[-2] - 1
    logp = logits.log_softmax(-1)
    idx = targets[:, None, :, None].expand(logits.shape[0], logits.shape[1], U, 1)
    return logp[..., blank], logp[..., :U, :].gather(-1, idx).squeeze(-1)


# --------------------------------------------------------------------------------------------
# alpha recursions
# --------------------------------------------------------------------------------------------
def _final_loglike(alpha: Tensor, blank_lp: Tensor, logit_lengths: Tensor, target_lengths: Tensor) -> Tensor:
    b = torch.arange(alpha.shape[0], device=alpha.device)
    t = logit_lengths.to(alpha.device) - 1
    u = target_lengths.to(alpha.device)
    return alpha[b, t, u] + blank_lp[b, t, u]


def _alpha_time(blank_lp: Tensor, label_lp: Tensor) -> Tensor:
    """alpha ``(B,T,U+1)`` by a loop over t; label transitions of a row by cumsum + logcumsumexp."""
    B, T, U1 = blank_lp.shape
    C = torch.cat([blank_lp.new_zeros(B, T, 1), label_lp.cumsum(-1)], dim=-1)   # (B,T,U+1)
    if T == 1:
        return C
    E = C[:, :-1] + blank_lp[:, :-1] - C[:, 1:]                                    # (B,T-1,U+1)
    rows = [blank_lp.new_zeros(B, U1)]                                            # a[0] = 0
    a = rows[0]
    for t in range(T - 1):
        a = torch.logcumsumexp(a + E[:, t], dim=-1)
        rows.append(a)
    return torch.stack(rows, dim=1) + C


_NEG = -1e30  # finite "minus infinity": keeps logaddexp gradients NaN-free


def _alpha_diagonal(blank_lp: Tensor, label_lp: Tensor) -> Tensor:
    """alpha ``(B,T,U+1)`` by a loop over anti-diagonals n = t + u (T+U-1 steps, no cumsum)."""
    B, T, U1 = blank_lp.shape
    N = T + U1 - 1
    dev, dt = blank_lp.device, blank_lp.dtype
    u = torch.arange(U1, device=dev)
    n = torch.arange(N, device=dev)
    t_of = n[:, None] - u[None, :]                                   # (N, U+1)
    valid = (t_of >= 0) & (t_of < T)
    t_idx = t_of.clamp(0, T - 1)
    # skewed views: X_skew[b, n, u] = X[b, n-u, u]
    blank_sk = blank_lp[:, t_idx, u[None, :]].masked_fill(~valid, _NEG)          # (B,N,U+1)
    lab_pad = torch.cat([label_lp, label_lp.new_full((B, T, 1), _NEG)], dim=-1)
    label_sk = lab_pad[:, t_idx, u[None, :]].masked_fill(~valid, _NEG)           # (B,N,U+1)
    neg_col = torch.full((B, 1), _NEG, device=dev, dtype=dt)
    a = torch.full((B, U1), _NEG, device=dev, dtype=dt)
    a = torch.cat([a.new_zeros(B, 1), a[:, 1:]], dim=-1)
    diags = [a]
    for k in range(1, N):
        from_blank = a + blank_sk[:, k - 1]                          # (t-1, u) -> (t, u)
        from_label = torch.cat([neg_col, (a + label_sk[:, k - 1])[:, :-1]], dim=-1)  # (t, u-1) -> (t, u)
        a = torch.logaddexp(from_blank, from_label)
        diags.append(a)
    D = torch.stack(diags, dim=1)                                    # (B,N,U+1), D[b,n,u] = alpha[b,n-u,u]
    t_grid = torch.arange(T, device=dev)
    return D[:, t_grid[:, None] + u[None, :], u[None, :]]            # (B,T,U+1)


class _AlphaBeta(torch.autograd.Function):
    """Log-likelihood ``(B,)`` by the forward (alpha) loop, gradient by the backward (beta) loop.

    Both loops run over t without autograd recording (cumsum + logcumsumexp per row, as in
    :func:`_alpha_time`); the gradient is the closed form ``d ll / d lp = exp(alpha + lp + beta_next - ll)``
    (occupation probability of each transition).
    """

    @staticmethod
    def forward(ctx, blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor,
                target_lengths: Tensor):  # type: ignore[override]
        B, T, U1 = blank_lp.shape
        U = U1 - 1
        dev = blank_lp.device
        Tb = logit_lengths.to(dev)
        Ub = target_lengths.to(dev)
        # labels past U_b never lie on a path to (T_b-1, U_b): zero them so the cumsums stay small
        lab = label_lp.masked_fill((torch.arange(U, device=dev)[None, :] >= Ub[:, None])[:, None, :], 0.0)
        C = torch.cat([blank_lp.new_zeros(B, T, 1), lab.cumsum(-1)], dim=-1)           # (B,T,U+1)
        a_shift = blank_lp.new_zeros(B, T, U1)                                          # alpha - C
        if T > 1:
            E = C[:, :-1] + blank_lp[:, :-1] - C[:, 1:]
            a = a_shift[:, 0]
            for t in range(T - 1):
                a = torch.logcumsumexp(a + E[:, t], dim=-1)
                a_shift[:, t + 1] = a
        alpha = a_shift.add_(C)
        b = torch.arange(B, device=dev)
        ll = alpha[b, Tb - 1, Ub] + blank_lp[b, Tb - 1, Ub]
        ctx.save_for_backward(blank_lp, lab, C, alpha, ll, Tb, Ub)
        return ll

    @staticmethod
    def backward(ctx, g_ll: Tensor):  # type: ignore[override]
        blank_lp, lab, C, alpha, ll, Tb, Ub = ctx.saved_tensors
        B, T, U1 = blank_lp.shape
        dev, dt = blank_lp.device, blank_lp.dtype
        ninf = float("-inf")
        # nb[t] = beta at row t+1 seen from row t; row T_b is the virtual end: 0 at U_b, -inf elsewhere.
        # Work on flipped u so the reverse logcumsumexp is a plain one; shift by C: b' = beta + C.
        u = torch.arange(U1, device=dev)
        end_row = torch.where(u[None, :] == Ub[:, None], 0.0, ninf).to(dt)              # (B,U+1)
        is_end = (torch.arange(T, device=dev)[None, :] + 1 == Tb[:, None])[:, :, None]  # (B,T,1)
        F = (blank_lp + C).flip(-1)                                                     # (B,T,U+1)
        Cf = C.flip(-1)
        end_f = end_row.flip(-1)
        beta_f = torch.full((B, T, U1), ninf, device=dev, dtype=dt)                     # beta (flipped u)
        nb_f = torch.full((B, T, U1), ninf, device=dev, dtype=dt)
        nxt = torch.full((B, U1), ninf, device=dev, dtype=dt)                           # beta[t+1]
        for t in range(T - 1, -1, -1):
            inc = torch.where(is_end[:, t], end_f, nxt)
            nb_f[:, t] = inc
            nxt = torch.logcumsumexp(inc + F[:, t], dim=-1) - Cf[:, t]
            beta_f[:, t] = nxt
        beta = beta_f.flip(-1)
        nb = nb_f.flip(-1)
        g = g_ll.to(dt)[:, None, None]
        llb = ll[:, None, None]
        g_blank = torch.exp(alpha + blank_lp + nb - llb).mul_(g)
        g_label = torch.exp(alpha[..., :-1] + lab + beta[..., 1:] - llb).mul_(g)
        return g_blank, g_label, None, None


def _loglike_alphabeta(blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor,
                       target_lengths: Tensor) -> Tensor:
    return _AlphaBeta.apply(blank_lp, label_lp, logit_lengths, target_lengths)


def _loglike_autograd(alpha_fn):
    def f(blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor, target_lengths: Tensor) -> Tensor:
        return _final_loglike(alpha_fn(blank_lp, label_lp), blank_lp, logit_lengths, target_lengths)
    return f


_RECURSIONS = {
    "alphabeta": _loglike_alphabeta,
    "time": _loglike_autograd(_alpha_time),
    "diagonal": _loglike_autograd(_alpha_diagonal),
}


def rnnt_loss_from_logprobs(blank_lp: Tensor, label_lp: Tensor, logit_lengths: Tensor,
                            target_lengths: Tensor, reduction: str = "mean",
                            dtype: torch.dtype = torch.float32, recursion: str = "alphabeta") -> Tensor:
    """RNN-T loss from the gathered ``blank_lp (B,T,U+1)`` and ``label_lp (B,T,U)`` log-probs."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if recursion not in _RECURSIONS:
        raise ValueError(f"recursion must be one of {tuple(_RECURSIONS)}, got {recursion!r}")
    B, T, U1 = blank_lp.shape
    if label_lp.shape != (B, T, U1 - 1):
        raise ValueError(f"label_lp must be {(B, T, U1 - 1)}, got {tuple(label_lp.shape)}")
    _check_lengths(B, T, U1 - 1, logit_lengths, target_lengths)
    blank_lp = blank_lp.to(dtype)
    label_lp = label_lp.to(dtype)
    losses = -_RECURSIONS[recursion](blank_lp, label_lp, logit_lengths, target_lengths)
    return _reduce(losses, reduction)


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
              blank: int = 0, reduction: str = "mean", dtype: torch.dtype = torch.float32,
              recursion: str = "alphabeta") -> Tensor:
    """RNN-T loss (``-log P(y|x)`` over all alignments) of a full ``(B, T, U+1, V)`` joint.

    Args:
        logits: ``(B, T, U+1, V)`` unnormalised joiner outputs (log-softmax is applied here).
        targets: ``(B, U)`` int labels; padding past ``target_lengths`` may hold any value.
        logit_lengths: ``(B,)`` valid frames per utterance (1..T).
        target_lengths: ``(B,)`` labels per utterance (0..U).
        blank: index of the blank symbol.
        reduction: ``"none"`` ``(B,)``, ``"sum"``, or ``"mean"`` = mean over the batch of the
            per-utterance losses (NOT normalised by target length).
        dtype: dtype of the alpha recursion (``torch.float32`` or ``torch.float64``); the returned
            loss has this dtype. Log-softmax and gathers stay in the logits' dtype.
        recursion: ``"alphabeta"`` (default, fastest measured: alpha/beta loops over T with
            logcumsumexp, closed-form gradient), ``"time"`` (the alpha loop differentiated by
            autograd) or ``"diagonal"`` (loop over T+U-1 anti-diagonals, autograd). Same values.

    Returns the loss; differentiable w.r.t. ``logits`` (first-order only: the log-softmax/gather
    step and the ``alphabeta`` recursion are custom autograd functions).
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got {tuple(logits.shape)}")
    B, T, U1, V = logits.shape
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} outside [0, V={V})")
    _check_lengths(B, T, U1 - 1, logit_lengths, target_lengths)
    tgt = _prepare_targets(targets.to(logits.device), target_lengths, U1 - 1, blank)
    blank_lp, label_lp = joint_logprobs(logits, tgt, blank)
    return rnnt_loss_from_logprobs(blank_lp, label_lp, logit_lengths, target_lengths,
                                   reduction=reduction, dtype=dtype, recursion=recursion)


# --------------------------------------------------------------------------------------------
# fused joiner + log-softmax + gather
# --------------------------------------------------------------------------------------------
def _joiner_chunk(enc_c: Tensor, pred: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Activation ``h = tanh(enc_c[:, :, None] + pred[:, None])`` ``(b,c,U+1,J)`` and logits ``(b,c,U+1,V)``."""
    h = torch.add(enc_c.unsqueeze(2), pred.unsqueeze(1)).tanh_()
    b, c, U1, J = h.shape
    h2 = h.reshape(-1, J)
    if bias is None:
        z = h2 @ weight.t()
    else:
        z = torch.addmm(bias, h2, weight.t())
    return h, z.view(b, c, U1, -1)


class _JoinerLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, enc_proj: Tensor, pred_proj: Tensor, weight: Tensor, bias: Optional[Tensor],
                targets: Tensor, blank: int, chunk_frames: int):  # type: ignore[override]
        B, T, _ = enc_proj.shape
        U1 = pred_proj.shape[1]
        U = U1 - 1
        dt = torch.promote_types(enc_proj.dtype, weight.dtype)
        blank_lp = enc_proj.new_empty((B, T, U1), dtype=dt)
        label_lp = enc_proj.new_empty((B, T, U), dtype=dt)
        for t0 in range(0, T, chunk_frames):
            t1 = min(T, t0 + chunk_frames)
            _, z = _joiner_chunk(enc_proj[:, t0:t1], pred_proj, weight, bias)
            idx = targets[:, None, :].expand(B, t1 - t0, U)
            blank_lp[:, t0:t1], label_lp[:, t0:t1] = _gather_logprobs(z, idx, blank)
            del z
        ctx.save_for_backward(enc_proj, pred_proj, weight, bias, targets)
        ctx.blank = blank
        ctx.chunk_frames = chunk_frames
        return blank_lp, label_lp

    @staticmethod
    def backward(ctx, g_blank: Optional[Tensor], g_label: Optional[Tensor]):  # type: ignore[override]
        enc_proj, pred_proj, weight, bias, targets = ctx.saved_tensors
        blank, chunk = ctx.blank, ctx.chunk_frames
        B, T, J = enc_proj.shape
        U1 = pred_proj.shape[1]
        U = U1 - 1
        V = weight.shape[0]
        dt = torch.promote_types(enc_proj.dtype, weight.dtype)
        if g_blank is None:
            g_blank = enc_proj.new_zeros((B, T, U1), dtype=dt)
        if g_label is None:
            g_label = enc_proj.new_zeros((B, T, U), dtype=dt)
        g_blank = g_blank.to(dt)
        g_label = g_label.to(dt)
        need_enc, need_pred, need_w, need_b = ctx.needs_input_grad[:4]
        grad_enc = torch.empty_like(enc_proj) if need_enc else None
        grad_pred = torch.zeros_like(pred_proj) if need_pred else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if (bias is not None and need_b) else None
        need_h_grad = need_enc or need_pred
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            c = t1 - t0
            h, z = _joiner_chunk(enc_proj[:, t0:t1], pred_proj, weight, bias)
            idx = targets[:, None, :].expand(B, c, U)
            gz = _logits_grad(z, g_blank[:, t0:t1], g_label[:, t0:t1], idx, blank)   # dL/dlogits (chunk)
            del z
            gz2 = gz.view(-1, V)
            h2 = h.view(-1, J)
            if grad_b is not None:
                grad_b += gz2.sum(0)
            if grad_w is not None:
                grad_w.addmm_(gz2.t(), h2)
            if need_h_grad:
                gh = gz2 @ weight                                                # (N, J)
                del gz, gz2
                gh.mul_(h2.mul_(h2).neg_().add_(1.0))                             # d tanh = 1 - h^2 (h reused)
                gh = gh.view(B, c, U1, J)
                if grad_enc is not None:
                    grad_enc[:, t0:t1] = gh.sum(2)
                if grad_pred is not None:
                    grad_pred += gh.sum(1)
        return grad_enc, grad_pred, grad_w, grad_b, None, None, None


def joiner_logprobs(enc_proj: Tensor, pred_proj: Tensor, weight: Tensor, bias: Optional[Tensor],
                    targets: Tensor, blank: int = 0, chunk_frames: int = 8) -> tuple[Tensor, Tensor]:
    """Gathered ``blank_lp (B,T,U+1)`` / ``label_lp (B,T,U)`` of the tanh joiner without the full joint.

    ``targets`` ``(B, U)`` must hold valid indices everywhere (padding already replaced).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    return _JoinerLogProbs.apply(enc_proj, pred_proj, weight, bias, targets.to(torch.long).contiguous(),
                                 blank, int(chunk_frames))


def rnnt_loss_from_joiner(enc_proj: Tensor, pred_proj: Tensor, weight: Tensor, bias: Optional[Tensor],
                          targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
                          blank: int = 0, reduction: str = "mean", dtype: torch.dtype = torch.float32,
                          chunk_frames: int = 8, recursion: str = "alphabeta") -> Tensor:
    """RNN-T loss of the joiner ``logits = tanh(enc[:, :, None] + pred[:, None]) @ weight.T + bias``.

    Same value and gradients as ``rnnt_loss(logits, ...)`` on the materialised logits, without ever
    holding the ``(B, T, U+1, V)`` joint or its gradient: the T axis is processed ``chunk_frames``
    frames at a time in forward and recomputed chunk by chunk in backward (one extra joiner matmul).

    Args:
        enc_proj: ``(B, T, J)`` encoder output projected to the joiner dimension.
        pred_proj: ``(B, U+1, J)`` predictor output projected to the joiner dimension.
        weight: ``(V, J)`` output layer weight (may be a masked ``W * M`` tensor; autograd sees a tensor).
        bias: ``(V,)`` or ``None``.
        chunk_frames: frames per chunk; temporaries are ``B*chunk_frames*(U+1)*(V+2J)`` floats
            (:func:`fused_chunk_bytes`).
        other arguments: as :func:`rnnt_loss`.
    """
    if enc_proj.dim() != 3 or pred_proj.dim() != 3 or weight.dim() != 2:
        raise ValueError("enc_proj must be (B,T,J), pred_proj (B,U+1,J), weight (V,J)")
    B, T, J = enc_proj.shape
    U1 = pred_proj.shape[1]
    V = weight.shape[0]
    if pred_proj.shape[0] != B or pred_proj.shape[2] != J or weight.shape[1] != J:
        raise ValueError(f"shape mismatch: enc_proj {tuple(enc_proj.shape)}, pred_proj "
                         f"{tuple(pred_proj.shape)}, weight {tuple(weight.shape)}")
    if bias is not None and bias.shape != (V,):
        raise ValueError(f"bias must be ({V},), got {tuple(bias.shape)}")
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} outside [0, V={V})")
    _check_lengths(B, T, U1 - 1, logit_lengths, target_lengths)
    tgt = _prepare_targets(targets.to(enc_proj.device), target_lengths, U1 - 1, blank)
    blank_lp, label_lp = joiner_logprobs(enc_proj, pred_proj, weight, bias, tgt, blank, chunk_frames)
    return rnnt_loss_from_logprobs(blank_lp, label_lp, logit_lengths, target_lengths,
                                   reduction=reduction, dtype=dtype, recursion=recursion)
