"""Building blocks shared by the encoder, predictor and joiner.

:class:`PrunableLinear` is the only place where a pruning mask touches a weight: every Linear that a
pruning stage may sparsify is one (attention q/k/v/out, feed-forward in/out, the conv module's
pointwise projections, the LSTM predictor's gate projections, the joiner). LayerNorms, embeddings,
the convolutional subsampling, depthwise convolutions and the auxiliary CTC head are plain modules
and are never masked.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrunableLinear(nn.Linear):
    """``nn.Linear`` whose forward reads ``weight * mask`` when a mask is set.

    ``mask`` is a plain attribute, not a parameter and not a buffer: it is never saved in the
    ``state_dict`` (a checkpoint holds dense weights; a sub-network is a config from which masks are
    recomputed) and DDP never broadcasts it. It follows the module through ``.to()`` / ``.cuda()`` /
    ``.half()`` (see :meth:`_apply`). Shapes: ``weight (out_features, in_features)``; the mask is
    any tensor broadcastable to it, e.g. ``(out, in)`` for unstructured pruning or ``(out, 1)`` for
    whole rows. It is stored in the weight's dtype (1.0 = kept, 0.0 = pruned), so the gradient that
    reaches ``weight`` is ``grad * mask``: pruned weights receive exactly zero gradient.

    Input ``(..., in_features)`` -> output ``(..., out_features)``. The bias is never masked.
    """

    mask: Optional[Tensor]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.mask = None

    def set_mask(self, mask: Optional[Tensor]) -> None:
        """Set (or with ``None`` clear) the mask; it is detached and cast to the weight's dtype/device."""
        if mask is None:
            self.mask = None
            return
        mask = mask.detach()
        try:
            torch.broadcast_shapes(mask.shape, self.weight.shape)
        except RuntimeError as e:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to weight "
                             f"{tuple(self.weight.shape)}") from e
        if torch.broadcast_shapes(mask.shape, self.weight.shape) != self.weight.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} would enlarge weight {tuple(self.weight.shape)}")
        self.mask = mask.to(device=self.weight.device, dtype=self.weight.dtype)

    def effective_weight(self) -> Tensor:
        """``weight * mask`` (or ``weight`` when no mask is set); differentiable w.r.t. ``weight``."""
        return self.weight * self.mask if self.mask is not None else self.weight

    def density(self) -> float:
        """Fraction of weights kept by the mask (1.0 without a mask)."""
        if self.mask is None:
            return 1.0
        return float(self.mask.expand_as(self.weight).count_nonzero()) / self.weight.numel()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask if self.mask is not None else self.weight, self.bias)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.mask is not None:
            self.mask = fn(self.mask)
        return out

    def extra_repr(self) -> str:
        masked = "" if self.mask is None else f", masked (density={self.density():.3f})"
        return super().extra_repr() + masked


def prunable_linears_of(module: nn.Module, prefix: str = "") -> list[tuple[str, PrunableLinear]]:
    """Every :class:`PrunableLinear` inside ``module``, as ``(qualified name, module)`` in definition order."""
    out = []
    for name, m in module.named_modules(prefix=prefix):
        if isinstance(m, PrunableLinear):
            out.append((name, m))
    return out
