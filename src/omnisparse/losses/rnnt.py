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
   ``label_lp[b,t,u] = log p(y_{u+1} | t, u)``. :func:`~omnisparse.losses.lattice.joint_logprobs`
   (:mod:`omnisparse.losses.lattice`) gets them from the full logits with one ``log_softmax`` and
   two gathers, and a hand-written backward.
2. The log-likelihood comes from the forward variable alpha, in ``dtype`` (float32 or float64),
   with a loop over t and the cumsum trick within a row (:mod:`omnisparse.losses.recursion`,
   :func:`~omnisparse.losses.recursion.rnnt_loss_from_logprobs`); ``recursion=`` picks how the
   gradient is obtained: ``"alphabeta"`` (default, fastest: alpha and beta loops, closed-form
   gradient), ``"time"`` or ``"diagonal"`` (alpha loops differentiated by autograd).
3. :func:`rnnt_loss_from_joiner` replaces step 1 by the fused joiner of
   :mod:`omnisparse.losses.fused_joiner`, which builds the joiner logits ``chunk_frames`` frames at a
   time, keeps only ``blank_lp``/``label_lp``, and recomputes each chunk in backward.

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

from omnisparse.losses.fused_joiner import joiner_logprobs
from omnisparse.losses.lattice import _check_lengths, _prepare_targets, joint_logprobs
from omnisparse.losses.recursion import rnnt_loss_from_logprobs

__all__ = [
    "rnnt_loss",
    "rnnt_loss_from_joiner",
    "joint_bytes",
    "fused_chunk_bytes",
]


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
