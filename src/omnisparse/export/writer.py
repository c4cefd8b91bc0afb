"""Writing the artefact of :mod:`omnisparse.export.format`: :func:`write_artefact` masks every prunable
weight of a model at its gene's sparsity (masks from the weights' current magnitudes), encodes it in
the layout :func:`~omnisparse.export.format.matrix_tensors` chose (int8: symmetric per-row
quantisation), and writes header and data atomically; the bytes written equal
:func:`~omnisparse.export.format.artefact_size`.
"""

from __future__ import annotations

import os
import struct
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from omnisparse.export.format import (_DTYPES, TensorSpec, _dense_layout, artefact_metadata, artefact_tensors,
                                      check_format, describe_model, encode_header, matrix_tensors,
                                      model_config_json)
from omnisparse.io.atomic import atomic_writer
from omnisparse.sparsity.masks import MaskBank, MaskSpec, check_sparsity


def _quantise_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """``w (out, in)`` float32 -> ``(q int8 (out, in), scale float32 (out,))``, symmetric per row."""
    scale = w.abs().amax(dim=1) / 127.0
    q = torch.round(w / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]).clamp_(-127, 127)
    return q.to(torch.int8), scale


def _encode_matrix(name: str, w: Tensor, units: Tensor, fmt: str, spec: MaskSpec,
                   layout: Sequence[TensorSpec]) -> dict[str, Tensor]:
    """Tensors of one masked weight ``w (out, in)`` (float32, CPU) with kept-unit mask ``units``, in
    ``layout`` (its :func:`matrix_tensors`, which chose dense or sparse)."""
    out: dict[str, Tensor] = {}
    if fmt == "int8-sparse":
        vals, out[f"{name}.scale"] = _quantise_rows(w)
    else:
        vals = w
    dense_name = _dense_layout(name, tuple(w.shape), fmt)[0].name
    if dense_name in {t.name for t in layout}:
        out[dense_name] = vals
    elif spec.granularity == "unstructured":
        idx = units.nonzero()
        out[f"{name}.values"] = vals[units]
        out[f"{name}.col_idx"] = idx[:, 1]
        out[f"{name}.row_ptr"] = torch.cat([units.new_zeros(1, dtype=torch.int64), units.sum(1).cumsum(0)])
    elif spec.granularity == "block":
        b = spec.block
        rows, cols = units.shape
        padded = torch.nn.functional.pad(vals, (0, cols * b - w.shape[1], 0, rows * b - w.shape[0]))
        tiles = padded.reshape(rows, b, cols, b).permute(0, 2, 1, 3)
        out[f"{name}.values"] = tiles[units]
        out[f"{name}.col_idx"] = units.nonzero()[:, 1]
        out[f"{name}.row_ptr"] = torch.cat([units.new_zeros(1, dtype=torch.int64), units.sum(1).cumsum(0)])
    else:
        kept = units.nonzero()[:, 0]
        out[f"{name}.values"] = vals[kept]
        out[f"{name}.rows"] = kept
    return out


def _to_bytes(t: Tensor, dtype: str) -> bytes:
    np_dtype, torch_dtype, _ = _DTYPES[dtype]
    return t.detach().to(device="cpu", dtype=torch_dtype).contiguous().numpy().astype(np_dtype, copy=False).tobytes()


def check_config_genes(config: Mapping[str, float], genes) -> dict[str, float]:
    """``config`` as ``{gene: float}``: ValueError for a gene not in ``genes`` or a sparsity outside [0, 1)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"a sub-network config must be a mapping gene -> sparsity, got {type(config).__name__}")
    unknown = [g for g in config if g not in genes]
    if unknown:
        raise ValueError(f"unknown gene(s) {unknown} in config; known genes: {list(genes)}")
    return {g: check_sparsity(s, f"sparsity of gene {g}") for g, s in config.items()}


def write_artefact(path: str | os.PathLike, model: nn.Module, config: Mapping[str, float], fmt: str,
                   spec: MaskSpec) -> int:
    """Write sub-network ``config`` (``{gene: sparsity}``) of ``model`` to ``path`` in ``fmt``; returns the
    number of bytes written (= :func:`~omnisparse.export.format.artefact_size`). Masks are derived from the
    model's current weights (:class:`MaskBank` over every gene; masks currently set on the model are
    ignored and left as they are), so a config plus weights fully determines the file. Atomic:
    temporary file + fsync + rename."""
    check_format(fmt)
    groups = model.prunable_groups()
    config = check_config_genes(config, groups)
    params = describe_model(model)
    tensors = artefact_tensors(params, config, fmt, spec)
    header = encode_header(tensors, artefact_metadata(params, config, fmt, spec, model_config_json(model)))
    expected = {t.name: t for t in tensors}

    bank = MaskBank(model, spec)
    bank.refresh()
    state = model.state_dict()
    data: dict[str, Tensor] = {}
    with torch.no_grad():
        for p in params:
            t = state[p.name]
            if p.gene is None:
                data[p.name] = t
                continue
            module = p.name[: -len(".weight")]
            ranking = bank.ranking(module)
            s = config.get(p.gene, 0.0)
            w = (t.detach().float() * ranking.mask(s).float()).cpu()
            layout = matrix_tensors(p.name, p.shape, s, fmt, spec)
            data.update(_encode_matrix(p.name, w, ranking.unit_mask(s).cpu(), fmt, spec, layout))
    if set(data) != set(expected):
        raise RuntimeError(f"artefact layout mismatch: {sorted(set(data) ^ set(expected))}")

    written = 0
    with atomic_writer(path, sync_dir=True) as f:  # the rename made durable too
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        written = 8 + len(header)
        for spec_t in tensors:
            t = data[spec_t.name]
            if tuple(t.shape) != spec_t.shape:
                raise RuntimeError(f"{spec_t.name}: shape {tuple(t.shape)} differs from layout {spec_t.shape}")
            blob = _to_bytes(t, spec_t.dtype)
            if len(blob) != spec_t.nbytes:
                raise RuntimeError(f"{spec_t.name}: {len(blob)} bytes, layout says {spec_t.nbytes}")
            f.write(blob)
            written += len(blob)
    return written
