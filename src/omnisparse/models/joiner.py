"""RNN-T joiner: ``logits[b, t, u] = out(tanh(enc_proj(enc[b, t]) + pred_proj(pred[b, u])))``, and the
pruned loss's optional :class:`SimpleJoint`.

All three Linears are :class:`PrunableLinear`. Decoders project once (:meth:`Joiner.project_enc`,
:meth:`Joiner.project_pred`) and call :meth:`Joiner.step` per hypothesis; a fused loss can take
``project_enc(enc)``, ``project_pred(pred)``, ``joiner.out.effective_weight()`` and ``joiner.out.bias``
and never build the full ``(B, T, U+1, V)`` logits through this module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import PrunableLinear


class Joiner(nn.Module):
    """``enc (B, T, d_model)`` + ``pred (B, U+1, pred_dim)`` -> logits ``(B, T, U+1, V)`` (unnormalised)."""

    def __init__(self, d_model: int, pred_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.enc_proj = PrunableLinear(d_model, joiner_dim)
        self.pred_proj = PrunableLinear(pred_dim, joiner_dim)
        self.out = PrunableLinear(joiner_dim, vocab_size)

    def project_enc(self, enc: Tensor) -> Tensor:
        """``(..., d_model) -> (..., J)``."""
        return self.enc_proj(enc)

    def project_pred(self, pred: Tensor) -> Tensor:
        """``(..., pred_dim) -> (..., J)``."""
        return self.pred_proj(pred)

    def join(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Already projected ``enc_proj (B, T, J)``, ``pred_proj (B, U+1, J)`` -> ``(B, T, U+1, V)``."""
        return self.out(torch.tanh(enc_proj[:, :, None] + pred_proj[:, None]))

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """``enc (B, T, d_model)``, ``pred (B, U+1, pred_dim)`` -> logits ``(B, T, U+1, V)``."""
        return self.join(self.project_enc(enc), self.project_pred(pred))

    def step(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """One frame/label pair per row: ``enc_proj (B, J)``, ``pred_proj (B, J)`` -> ``(B, V)``."""
        return self.out(torch.tanh(enc_proj + pred_proj))


class SimpleJoint(nn.Module):
    """The linear joint of the pruned RNN-T loss with heads of its own (k2's ``simple_am_proj`` /
    ``simple_lm_proj``): ``am = am_proj(enc) (B, T, V)``, ``lm = lm_proj(pred) (B, U+1, V)``.

    Training only (it picks the band the tanh joiner is trained on): never pruned, never exported.
    Separate heads let the linear joint learn what it needs without pulling the joiner's output layer
    towards a tanh-free use of it."""

    def __init__(self, d_model: int, pred_dim: int, vocab_size: int):
        super().__init__()
        self.am_proj = nn.Linear(d_model, vocab_size)
        self.lm_proj = nn.Linear(pred_dim, vocab_size)

    def forward(self, enc: Tensor, pred: Tensor) -> tuple[Tensor, Tensor]:
        """``enc (B, T, d_model)``, ``pred (B, U+1, pred_dim)`` -> ``(am (B, T, V), lm (B, U+1, V))``."""
        return self.am_proj(enc), self.lm_proj(pred)
