"""The lattice's log-probs straight from the tanh joiner, without the full joint: a custom autograd
function builds the joiner logits ``tanh(enc[:, :, None] + pred[:, None]) @ W.T + b`` ``chunk_frames``
frames at a time, keeps only ``blank_lp``/``label_lp``, and recomputes each chunk in backward (one
extra joiner matmul per step) to form the gradients of enc, pred, W and b directly
(:func:`joiner_logprobs`; the loss on it is :func:`omnisparse.losses.rnnt.rnnt_loss_from_joiner`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from omnisparse.losses.lattice import _gather_logprobs, _logits_grad

__all__ = ["joiner_logprobs"]


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
