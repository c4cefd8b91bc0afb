"""Reading the artefact of :mod:`omnisparse.export.format` back: :func:`read_artefact` validates the
container (header length, JSON header, ``__metadata__``, format version, every tensor's dtype, shape
and offsets, contiguous data) and rebuilds every prunable weight as a dense float32 matrix from
whichever layout the file holds (int8 dequantised). A corrupt or truncated file is a ValueError.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from omnisparse.export.format import (_DTYPES, FORMAT_VERSION, READABLE_VERSIONS, _dense_layout, _sparse_layout,
                                      check_format)
from omnisparse.sparsity.masks import MaskSpec, check_sparsity, unit_grid


def _parse(blob: bytes, source: str) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Validate the container and return ``(metadata, {name: tensor})``; ValueError when corrupt."""
    if len(blob) < 8:
        raise ValueError(f"{source}: not an omnisparse artefact (only {len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n < 2 or 8 + n > len(blob):
        raise ValueError(f"{source}: corrupt or truncated artefact (header length {n}, file {len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: corrupt artefact header ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ValueError(f"{source}: artefact header has no __metadata__")
    meta = header.pop("__metadata__")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{source}: artefact metadata values must be strings")
    version = meta.get("omnisparse_format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{source}: unsupported omnisparse format version {version!r} "
                         f"(expected one of {', '.join(READABLE_VERSIONS)})")
    data = memoryview(blob)[8 + n:]
    entries = []
    for name, e in header.items():
        try:
            dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
            ok = (dtype in _DTYPES and isinstance(shape, list)
                  and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                  and all(isinstance(o, int) and not isinstance(o, bool) for o in (begin, end)))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{source}: corrupt header entry for {name!r}: {e!r}")
        if end - begin != math.prod(shape) * _DTYPES[dtype][2]:
            raise ValueError(f"{source}: {name}: data_offsets {begin, end} do not match {dtype} {shape}")
        entries.append((begin, end, name, dtype, tuple(shape)))
    entries.sort()
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            raise ValueError(f"{source}: {name}: data is not contiguous (offset {begin}, expected {pos})")
        pos = end
    if pos != len(data):
        raise ValueError(f"{source}: corrupt or truncated artefact: tensors need {pos} data bytes, "
                         f"file has {len(data)}")
    tensors = {}
    for begin, end, name, dtype, shape in entries:
        np_dtype, torch_dtype, _ = _DTYPES[dtype]
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).astype(np.dtype(np_dtype).newbyteorder("="))
        tensors[name] = torch.from_numpy(arr.reshape(shape)).to(torch_dtype)
    return meta, tensors


def _check_index(idx: Tensor, limit: int, what: str) -> Tensor:
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= limit):
        raise ValueError(f"{what}: index out of range [0, {limit})")
    return idx


def _check_row_ptr(ptr: Tensor, n: int, nnz: int, what: str) -> Tensor:
    ptr = ptr.long()
    if ptr.shape != (n + 1,) or int(ptr[0]) != 0 or int(ptr[-1]) != nnz or bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError(f"{what}: invalid row_ptr")
    return ptr


def _decode_matrix(name: str, shape: tuple[int, int], tensors: dict[str, Tensor], fmt: str,
                   spec: MaskSpec, version: str = FORMAT_VERSION) -> tuple[Tensor, list[str]]:
    """Dense float32 weight of prunable ``name`` and the tensor names it consumed. ``version``: the
    file's format version (``"1"`` has no dense layout in the sparse formats)."""
    out_f, in_f = shape
    layout = _dense_layout(name, shape, fmt)
    dense_name = layout[0].name
    if fmt != "fp32-dense" and dense_name in tensors and version == "1":
        raise ValueError(f"{dense_name}: a dense layout in a format version 1 artefact")
    dense = fmt == "fp32-dense" or dense_name in tensors
    if not dense:  # index dtypes do not depend on the sparsity; shapes are checked below
        layout = _sparse_layout(name, shape, 0.0, fmt, spec)
    for t in layout:
        got = tensors.get(t.name)
        if got is None or got.dtype != _DTYPES[t.dtype][1] or got.dim() != len(t.shape):
            raise ValueError(f"{t.name}: missing or malformed in a {fmt} artefact")
    names = [t.name for t in layout]
    if fmt == "int8-sparse":
        scale = tensors[f"{name}.scale"]
        if tuple(scale.shape) != (out_f,):
            raise ValueError(f"{name}.scale: expected shape {(out_f,)}, got {tuple(scale.shape)}")
    else:
        scale = None
    if dense:
        w = tensors[dense_name]
        if tuple(w.shape) != shape:
            raise ValueError(f"{dense_name}: expected shape {shape}, got {tuple(w.shape)}")
        w = w.float()
        return (w * scale[:, None] if scale is not None else w), names
    vals = tensors[f"{name}.values"].float()
    w = torch.zeros(out_f, in_f)
    if spec.granularity == "unstructured":
        nnz = vals.shape[0]
        col = _check_index(tensors[f"{name}.col_idx"], in_f, f"{name}.col_idx")
        ptr = _check_row_ptr(tensors[f"{name}.row_ptr"], out_f, nnz, f"{name}.row_ptr")
        if col.shape != (nnz,):
            raise ValueError(f"{name}: values and col_idx lengths differ")
        row = torch.repeat_interleave(torch.arange(out_f), ptr[1:] - ptr[:-1])
        if scale is not None:
            vals = vals * scale[row]
        w[row, col] = vals
    elif spec.granularity == "block":
        b = spec.block
        rows, cols = unit_grid(shape, spec)
        nb = vals.shape[0]
        if tuple(vals.shape) != (nb, b, b):
            raise ValueError(f"{name}.values: expected (nblocks, {b}, {b}), got {tuple(vals.shape)}")
        col = _check_index(tensors[f"{name}.col_idx"], cols, f"{name}.col_idx")
        ptr = _check_row_ptr(tensors[f"{name}.row_ptr"], rows, nb, f"{name}.row_ptr")
        if col.shape != (nb,):
            raise ValueError(f"{name}: values and col_idx lengths differ")
        brow = torch.repeat_interleave(torch.arange(rows), ptr[1:] - ptr[:-1])
        padded = torch.zeros(rows, cols, b, b)
        padded[brow, col] = vals
        padded = padded.permute(0, 2, 1, 3).reshape(rows * b, cols * b)
        if scale is not None:
            padded[:out_f] *= scale[:, None]
        w = padded[:out_f, :in_f].contiguous()
    else:
        k = vals.shape[0]
        kept = _check_index(tensors[f"{name}.rows"], out_f, f"{name}.rows")
        if tuple(vals.shape) != (k, in_f) or kept.shape != (k,):
            raise ValueError(f"{name}: values/rows shapes do not match a ({out_f}, {in_f}) weight")
        if scale is not None:
            vals = vals * scale[kept][:, None]
        w[kept] = vals
    return w, names


def artefact_version(path: str | os.PathLike) -> str:
    """The ``omnisparse_format_version`` in the header of an artefact (ValueError when unreadable)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not an omnisparse artefact")
        (n,) = struct.unpack("<Q", head)
        if n > os.path.getsize(path):
            raise ValueError(f"{path}: corrupt or truncated artefact (header length {n})")
        try:
            meta = json.loads(f.read(n).decode("utf-8"))["__metadata__"]
            return str(meta["omnisparse_format_version"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: corrupt artefact header ({e})") from None


def read_artefact(path: str | os.PathLike) -> tuple[dict, dict[str, float], str, MaskSpec, dict[str, Tensor]]:
    """Read a file of :func:`~omnisparse.export.writer.write_artefact`: ``(model_config dict, sparsity
    config, fmt, spec, state_dict)``.

    ``state_dict`` holds dense float32 weights (int8 dequantised; pruned weights 0) under the model's
    ``state_dict`` names, everything but the CTC head: ``Transducer.from_config(model_config_from_dict(
    model_config)).load_state_dict(state_dict, strict=False)`` restores the sub-network. A corrupt or
    truncated file raises ValueError.
    """
    path = Path(path)
    blob = path.read_bytes()
    meta, tensors = _parse(blob, str(path))
    try:
        fmt = check_format(meta["format"])
        spec = MaskSpec(meta["granularity"], int(meta["block"]))
        config = json.loads(meta["config"])
        model_config = json.loads(meta["model_config"])
        shapes = json.loads(meta["prunable_shapes"])
        if not isinstance(config, dict) or not isinstance(shapes, dict):
            raise ValueError("config and prunable_shapes must be JSON objects")
        config = {str(g): check_sparsity(s, f"sparsity of {g}") for g, s in config.items()}
        shapes = {str(k): (int(v[0]), int(v[1])) for k, v in shapes.items()}
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{path}: corrupt artefact metadata ({e})") from None
    state: dict[str, Tensor] = {}
    consumed: set[str] = set()
    try:
        for name, shape in shapes.items():
            state[name], used = _decode_matrix(name, shape, tensors, fmt, spec, meta["omnisparse_format_version"])
            consumed.update(used)
    except (RuntimeError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: corrupt artefact data ({e})") from None
    for name, t in tensors.items():
        if name in consumed:
            continue
        if name in state or name.rsplit(".", 1)[0] in shapes:
            raise ValueError(f"{path}: unexpected tensor {name!r}")
        state[name] = t
    return model_config, config, fmt, spec, dict(sorted(state.items()))
