"""The execution kinds of one Linear on CPU, each built from the Linear's (masked) weight and bias.

``dense``            ``nn.Linear`` with the masked weight (the reference).
``sparse-csr``       weight as a torch sparse CSR tensor, ``F.linear`` on it (pays off only at high
                     unstructured sparsity on CPU: from ~70-80 % on, measured here).
``sparse-bsr``       weight as a sparse BSR tensor of ``b x b`` blocks, ``b`` the largest of 8, 4, 2
                     dividing both dimensions (for ``block`` pruning).
``row-compact``      :class:`RowCompactLinear`: only the nonzero rows of the weight are multiplied; the
                     outputs of all-zero rows are their bias (a constant), put back in place with one
                     ``cat`` + ``index_select``. Available when the weight has all-zero rows (``row``
                     pruning, or any matrix that happens to have them).
``int8``             ``torch.ao.quantization.quantize_dynamic`` of the dense Linear (int8 weights per
                     tensor, activations quantised on the fly per call): not exact (see the exactness
                     notes of :mod:`omnisparse.deploy.fast`).
``row-compact-int8`` the compacted Linear of ``row-compact``, quantised the same way.

:func:`build_kind` builds the module of a kind. :mod:`omnisparse.deploy.fast` chooses one kind per
Linear of a model; :mod:`omnisparse.search.latency` times every kind per gene of a search space.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP32_KINDS = ("dense", "sparse-csr", "sparse-bsr", "row-compact")
INT8_KINDS = ("int8", "row-compact-int8")
KINDS = FP32_KINDS + INT8_KINDS
BSR_BLOCKS = (8, 4, 2)
INT8_DTYPE_KINDS = ("int8", "row-compact-int8", "sparse-csr", "sparse-bsr")  # candidates of dtype="int8"


class RowCompactLinear(nn.Module):
    """``(..., in) -> (..., out)`` computing only the ``k`` nonzero rows of a weight ``(out, in)``.

    ``inner``: ``nn.Linear(in, k)`` (or its dynamically quantised counterpart) holding the kept rows and
    their biases; ``pruned_bias (out - k,)``: the outputs of the all-zero rows; ``perm (out,)``: position
    of every output in ``cat([inner(x), pruned_bias])``; ``kept (k,)``: the kept rows. Eager mode writes
    ``inner(x)`` into a copy of the full bias with ``index_copy_`` (cheapest measured); under ONNX export
    it is ``cat`` + ``index_select`` (Concat + Gather)."""

    def __init__(self, weight: Tensor, bias: Optional[Tensor]):
        super().__init__()
        out_f, in_f = weight.shape
        zero = (weight == 0).all(dim=1)
        kept = (~zero).nonzero().flatten()
        pruned = zero.nonzero().flatten()
        b = bias if bias is not None else weight.new_zeros(out_f)
        self.in_features, self.out_features = in_f, out_f
        self.inner = nn.Linear(in_f, kept.numel())
        with torch.no_grad():
            self.inner.weight.copy_(weight[kept])
            self.inner.bias.copy_(b[kept])
        self.register_buffer("pruned_bias", b[pruned].detach().clone())
        self.register_buffer("full_bias", b.detach().clone())
        self.register_buffer("kept", kept)
        self.register_buffer("perm", torch.argsort(torch.cat([kept, pruned])))

    def forward(self, x: Tensor) -> Tensor:
        y = self.inner(x)
        p = self.pruned_bias.numel()
        if p == 0:
            return y
        if torch.onnx.is_in_onnx_export():
            y = torch.cat([y, self.pruned_bias.expand(*y.shape[:-1], p)], dim=-1)
            return y.index_select(-1, self.perm)
        out = self.full_bias.expand(*y.shape[:-1], self.out_features).clone()
        return out.index_copy_(-1, self.kept, y)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kept={self.inner.out_features}"


class SparseLinear(nn.Module):
    """``(..., in) -> (..., out)`` with the weight as a torch sparse CSR or BSR tensor (``layout``
    ``"csr"`` / ``"bsr"``, ``block`` the BSR block side)."""

    def __init__(self, weight: Tensor, bias: Optional[Tensor], layout: str, block: int = 0):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.layout, self.block = layout, block
        w = weight.detach().clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            sw = w.to_sparse_csr() if layout == "csr" else w.to_sparse_bsr((block, block))
        self.register_buffer("weight", sw)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = F.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        nnz = int(self.weight.values().count_nonzero())
        return (f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout}"
                + (f", block={self.block}" if self.layout == "bsr" else "") + f", nnz={nnz}")


def _dense(weight: Tensor, bias: Optional[Tensor]) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin.eval()


def _quantise(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Linear`` in it replaced by torch's dynamic int8 Linear."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        if isinstance(module, nn.Linear):
            return quantize_dynamic(nn.Sequential(module), {nn.Linear}, dtype=torch.qint8)[0]
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


def bsr_block(shape: Sequence[int]) -> int:
    """The BSR block side for a weight of ``shape``: the largest of :data:`BSR_BLOCKS` dividing both
    dimensions, 0 when none does."""
    return next((b for b in BSR_BLOCKS if shape[0] % b == 0 and shape[1] % b == 0), 0)


def build_kind(kind: str, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    """The module executing ``kind`` for ``weight (out, in)``, ``bias (out,)`` (float32, CPU), after
    one probe call on a ``(1, in)`` input. ValueError when the kind does not apply (no zero rows for
    row-compact, no block size for BSR); RuntimeError / NotImplementedError when torch cannot run it."""
    module = _build_kind(kind, weight, bias)
    with torch.no_grad():
        y = module(torch.zeros(1, weight.shape[1]))
    if tuple(y.shape) != (1, weight.shape[0]):
        raise RuntimeError(f"{kind}: output shape {tuple(y.shape)}, expected {(1, weight.shape[0])}")
    return module


def _build_kind(kind: str, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    weight = weight.detach().float().cpu()
    bias = None if bias is None else bias.detach().float().cpu()
    if kind == "dense":
        return _dense(weight, bias)
    if kind == "sparse-csr":
        return SparseLinear(weight, bias, "csr")
    if kind == "sparse-bsr":
        b = bsr_block(weight.shape)
        if not b:
            raise ValueError(f"no BSR block size in {BSR_BLOCKS} divides {tuple(weight.shape)}")
        return SparseLinear(weight, bias, "bsr", b)
    if kind in ("row-compact", "row-compact-int8"):
        if not bool((weight == 0).all(dim=1).any()):
            raise ValueError("no all-zero rows to drop")
        m = RowCompactLinear(weight, bias)
        if kind == "row-compact-int8":
            m.inner = _quantise(m.inner)
        return m
    if kind == "int8":
        return _quantise(_dense(weight, bias))
    raise ValueError(f"unknown execution kind {kind!r}; expected one of {KINDS}")
