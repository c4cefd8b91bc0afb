"""The on-disk artefact of a (possibly sparse) sub-network: a safetensors-compatible file.

Layout (what ``safetensors.safe_open(path, "pt")`` and ``safetensors.torch.load_file`` read)::

    u64 little-endian N | N bytes of JSON header, space-padded to a multiple of 8 | raw data

The header maps every tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the start of the data, tensors stored back to back in name order) plus ``__metadata__``
(string values only): ``format``, ``granularity``, ``block``, ``config`` (JSON of the sparsity config,
sorted keys), ``model_config`` (JSON of the ModelConfig, sorted keys), ``prunable_shapes`` (JSON
``{weight name: [out, in]}``, so that a reader needs no model to rebuild dense matrices) and
``omnisparse_format_version`` = ``"2"`` (the reader also reads ``"1"``: the same file without the
dense layout of the sparse formats). JSON is compact (``,`` / ``:`` separators), ASCII, sorted.

Tensors (everything little-endian):

* every entry of the model's ``state_dict`` except the training-only heads (``ctc_head.*``, the pruned
  loss's ``simple_joint.*``); entries that are not prunable weights are stored dense under their
  ``state_dict`` name, floating point ones as F32;
* the weight ``W`` (name ``<module>.weight``, shape ``(out, in)``) of every PrunableLinear of the
  model, masked at its gene's sparsity (``config.get(gene, 0.0)``; masks from :class:`MaskBank`, i.e.
  from the weights' current magnitudes), stored according to ``fmt``:

  ``fp32-dense``  ``W`` F32 ``(out, in)``: the masked weight; size independent of sparsity (the
                  reference point).
  ``fp32-sparse`` the smaller (in data bytes; ties: dense) of two layouts:
                  *dense* - ``W.dense`` F32 ``(out, in)``, the masked weight (pruned entries 0);
                  *sparse* - ``unstructured``: CSR - ``W.values`` F32 ``(nnz,)``, ``W.col_idx``
                  ``(nnz,)``, ``W.row_ptr`` I32 ``(out+1,)``; ``block`` (side ``b``): BSR -
                  ``W.values`` F32 ``(nblocks, b, b)`` (edge tiles zero-padded), ``W.col_idx``
                  ``(nblocks,)`` (block columns), ``W.row_ptr`` I32 ``(ceil(out/b)+1,)``; ``row``: kept
                  rows - ``W.values`` F32 ``(k, in)``, ``W.rows`` ``(k,)``. Kept units in row-major
                  order.
  ``int8-sparse`` the same choice and tensors with I8 values (``W.dense`` I8 ``(out, in)`` or
                  ``W.values`` I8, same shapes) plus ``W.scale`` F32 ``(out,)`` in both layouts:
                  symmetric per-output-row quantisation for every granularity,
                  ``scale[r] = max|W_masked[r]| / 127`` (0 for an all-zero row),
                  ``q = clamp(round(W / scale[r]), -127, 127)``, dequantised as ``q * scale[r]``.

  Index tensors are I16 when the indexed dimension has at most 32767 entries (``in`` for CSR
  columns, ``ceil(in/b)`` for BSR block columns, ``out`` for kept rows), else I32. ``nnz`` /
  ``nblocks`` / ``k`` are :func:`kept_count` of the matrix's units, so both layouts' sizes, hence the
  choice between them (:func:`matrix_tensors`) and the file's size, depend only on shapes,
  granularity and sparsities (what :meth:`SearchSpace.size_bytes` relies on, through
  :class:`ArtefactPricing`). Units are kept by the mask, not by value: a kept weight that happens to
  be 0 is still stored. A matrix at sparsity 0 (or of a gene not in ``config``) is always dense; the
  sparse layout wins only above a sparsity that depends on the granularity, index width and value
  dtype (e.g. unstructured with I16 indices: ``3 nnz + 4 (out+1) < out in`` for int8,
  ``6 nnz + 4 (out+1) < 4 out in`` for fp32).

The size of a file is computed without writing it by :func:`artefact_size`, from the same layout
function (:func:`artefact_tensors` + :func:`encode_header`) as the writer uses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from omnisparse.io.atomic import atomic_writer
from omnisparse.sparsity.masks import MaskBank, MaskSpec, check_sparsity, kept_count, n_units, unit_grid

FORMATS = ("fp32-dense", "fp32-sparse", "int8-sparse")
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # version 1: no ``.dense`` tensors (every matrix in its sparse layout)
EXCLUDED_PREFIXES = ("ctc_head.", "simple_joint.")  # training-only heads
I16_MAX_DIM = 32767

# safetensors dtype -> (numpy little-endian dtype, torch dtype, bytes per element)
_DTYPES: dict[str, tuple[str, torch.dtype, int]] = {
    "F64": ("<f8", torch.float64, 8), "F32": ("<f4", torch.float32, 4), "F16": ("<f2", torch.float16, 2),
    "I64": ("<i8", torch.int64, 8), "I32": ("<i4", torch.int32, 4), "I16": ("<i2", torch.int16, 2),
    "I8": ("i1", torch.int8, 1), "U8": ("u1", torch.uint8, 1), "BOOL": ("?", torch.bool, 1),
}
_TORCH_TO_ST = {torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                torch.uint8: "U8", torch.bool: "BOOL"}


class ParamInfo(NamedTuple):
    """One ``state_dict`` entry as the artefact sees it: ``name``, ``shape``, safetensors ``dtype`` it is
    stored with when dense, ``gene`` (the PrunableLinear gene for prunable weights, else None)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    gene: Optional[str]


class TensorSpec(NamedTuple):
    """One tensor of the file: ``name``, safetensors ``dtype``, ``shape``, ``nbytes`` (build it with
    :func:`tensor_spec`, which fills ``nbytes``)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def tensor_spec(name: str, dtype: str, shape: tuple[int, ...]) -> TensorSpec:
    shape = tuple(int(d) for d in shape)
    return TensorSpec(name, dtype, shape, math.prod(shape) * _DTYPES[dtype][2])


# ---------------------------------------------------------------------------------------------- layout
def describe_model(model: nn.Module) -> list[ParamInfo]:
    """The artefact-relevant entries of ``model.state_dict()`` (CTC head excluded), in state_dict order.
    Floating point entries are stored as F32; integer/bool buffers keep their dtype."""
    prunable = {f"{name}.weight": gene for gene, members in model.prunable_groups().items()
                for name, _ in members}
    out = []
    for name, t in model.state_dict().items():
        if name.startswith(EXCLUDED_PREFIXES):
            continue
        if t.is_floating_point():
            dtype = "F32"
        elif t.dtype in _TORCH_TO_ST:
            dtype = _TORCH_TO_ST[t.dtype]
        else:
            raise ValueError(f"cannot store {name} of dtype {t.dtype}")
        gene = prunable.get(name)
        if gene is not None and t.dim() != 2:
            raise ValueError(f"prunable weight {name} is not 2-D: {tuple(t.shape)}")
        out.append(ParamInfo(name, tuple(int(d) for d in t.shape), dtype, gene))
    return out


def model_config_json(model: nn.Module) -> str:
    """``model.config`` (a dataclass) as sorted compact JSON, ``"null"`` without one."""
    cfg = getattr(model, "config", None)
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _index_dtype(dim: int) -> str:
    return "I16" if dim <= I16_MAX_DIM else "I32"


def _dense_layout(name: str, shape: tuple[int, int], fmt: str) -> list[TensorSpec]:
    """Weight ``name`` stored as a full ``(out, in)`` matrix in ``fmt``: ``name`` F32 (fp32-dense),
    ``name.dense`` F32 (fp32-sparse) or ``name.dense`` I8 + ``name.scale`` F32 (int8-sparse)."""
    if fmt == "fp32-dense":
        return [tensor_spec(name, "F32", shape)]
    if fmt == "fp32-sparse":
        return [tensor_spec(f"{name}.dense", "F32", shape)]
    return [tensor_spec(f"{name}.dense", "I8", shape), tensor_spec(f"{name}.scale", "F32", (shape[0],))]


def _sparse_layout(name: str, shape: tuple[int, int], s: float, fmt: str, spec: MaskSpec) -> list[TensorSpec]:
    """Weight ``name`` stored in ``fmt``'s (sparse) layout for ``spec`` at sparsity ``s``."""
    out_f, in_f = shape
    k = kept_count(n_units(shape, spec), s)
    vdt = "F32" if fmt == "fp32-sparse" else "I8"
    if spec.granularity == "unstructured":
        ts = [tensor_spec(f"{name}.values", vdt, (k,)), tensor_spec(f"{name}.col_idx", _index_dtype(in_f), (k,)),
              tensor_spec(f"{name}.row_ptr", "I32", (out_f + 1,))]
    elif spec.granularity == "block":
        b = spec.block
        rows, cols = unit_grid(shape, spec)
        ts = [tensor_spec(f"{name}.values", vdt, (k, b, b)), tensor_spec(f"{name}.col_idx", _index_dtype(cols), (k,)),
              tensor_spec(f"{name}.row_ptr", "I32", (rows + 1,))]
    else:
        ts = [tensor_spec(f"{name}.values", vdt, (k, in_f)), tensor_spec(f"{name}.rows", _index_dtype(out_f), (k,))]
    if fmt == "int8-sparse":
        ts.append(tensor_spec(f"{name}.scale", "F32", (out_f,)))
    return ts


@lru_cache(maxsize=65536)
def matrix_tensors(name: str, shape: tuple[int, int], s: float, fmt: str, spec: MaskSpec) -> tuple[TensorSpec, ...]:
    """The tensors storing prunable weight ``name`` of ``shape = (out, in)`` at sparsity ``s`` in ``fmt``:
    the one place that chooses between the dense and the sparse layout (the smaller in data bytes, ties
    dense), used by the writer, the size functions and :func:`artefact_size`."""
    dense = _dense_layout(name, shape, fmt)
    if fmt == "fp32-dense":
        return tuple(dense)
    sparse = _sparse_layout(name, shape, s, fmt, spec)
    return tuple(dense if sum(t.nbytes for t in dense) <= sum(t.nbytes for t in sparse) else sparse)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown artefact format {fmt!r}; expected one of {FORMATS}")
    return fmt


def artefact_tensors(params: Sequence[ParamInfo], config: Mapping[str, float], fmt: str,
                     spec: MaskSpec) -> list[TensorSpec]:
    """Every tensor of the file, sorted by name (the data order). ``config``: ``{gene: sparsity}``
    (validated by the caller; missing genes are at 0)."""
    out: list[TensorSpec] = []
    for p in params:
        if p.gene is None:
            out.append(_dense_tensor(p))
        else:
            out.extend(matrix_tensors(p.name, p.shape, config.get(p.gene, 0.0), fmt, spec))
    out.sort()  # by name (names are unique)
    return out


def artefact_metadata(params: Sequence[ParamInfo], config: Mapping[str, float], fmt: str, spec: MaskSpec,
                      model_config: str) -> dict[str, str]:
    """The ``__metadata__`` dict. ``model_config``: JSON text (see :func:`model_config_json`)."""
    shapes = {p.name: list(p.shape) for p in params if p.gene is not None}
    return {
        "format": fmt,
        "granularity": spec.granularity,
        "block": str(spec.block),
        "config": json.dumps({g: float(s) for g, s in config.items()}, sort_keys=True, separators=(",", ":")),
        "model_config": model_config,
        "prunable_shapes": json.dumps(shapes, sort_keys=True, separators=(",", ":")),
        "omnisparse_format_version": FORMAT_VERSION,
    }


@lru_cache(maxsize=65536)
def _dense_tensor(p: ParamInfo) -> TensorSpec:
    return tensor_spec(p.name, p.dtype, p.shape)


@lru_cache(maxsize=65536)
def _entry_prefix(t: TensorSpec) -> str:
    return (f',{json.dumps(t.name)}:{{"dtype":"{t.dtype}","shape":[{",".join(map(str, t.shape))}],'
            f'"data_offsets":[')


def encode_header(tensors: Sequence[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The JSON header (ASCII, space-padded to a multiple of 8 bytes) for ``tensors`` stored back to
    back in the given order."""
    return _encode_header(tensors, metadata)[0]


def _encode_header(tensors: Sequence[TensorSpec], metadata: Mapping[str, str]) -> tuple[bytes, int]:
    """``(header, total data bytes)``."""
    parts = ['{"__metadata__":', json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"))]
    off = 0
    for t in tensors:
        end = off + t.nbytes
        parts.append(_entry_prefix(t))
        parts.append(f"{off},{end}]}}")
        off = end
    parts.append("}")
    text = "".join(parts)
    return (text + " " * (-len(text) % 8)).encode("ascii"), off


def artefact_size(params: Sequence[ParamInfo], config: Mapping[str, float], fmt: str, spec: MaskSpec,
                  model_config: str) -> int:
    """Exact size in bytes of the file :func:`write_artefact` writes for these inputs."""
    tensors = artefact_tensors(params, config, check_format(fmt), spec)
    header, data_bytes = _encode_header(tensors, artefact_metadata(params, config, fmt, spec, model_config))
    return 8 + len(header) + data_bytes


@dataclasses.dataclass(frozen=True)
class ArtefactPricing:
    """The :class:`~omnisparse.sparsity.space.Pricing` of one model in this artefact, for a
    :class:`~omnisparse.sparsity.space.SearchSpace` (which knows no file format): ``params`` (what
    :func:`describe_model` says the file holds) and ``model_config`` (:func:`model_config_json`), shapes
    only, no reference to the weights; :meth:`size_bytes` is :func:`artefact_size`. Build it with :meth:`of`."""

    params: tuple[ParamInfo, ...]
    model_config: str = "null"

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(ParamInfo(p.name, tuple(p.shape), p.dtype, p.gene) for p in self.params))

    @classmethod
    def of(cls, model: nn.Module) -> "ArtefactPricing":
        return cls(tuple(describe_model(model)), model_config_json(model))

    @staticmethod
    def check_format(fmt: str) -> str:
        return check_format(fmt)

    def size_bytes(self, config: Mapping[str, float], fmt: str, spec: MaskSpec) -> int:
        """Exact size of the file :func:`write_artefact` writes for ``config`` (validated by the space)."""
        return artefact_size(self.params, config, fmt, spec, self.model_config)


# ---------------------------------------------------------------------------------------------- writing
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
    number of bytes written (= :func:`artefact_size`). Masks are derived from the model's current weights
    (:class:`MaskBank` over every gene; masks currently set on the model are ignored and left as they
    are), so a config plus weights fully determines the file. Atomic: temporary file + fsync + rename."""
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


# ---------------------------------------------------------------------------------------------- reading
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


def read_artefact(path: str | os.PathLike) -> tuple[dict, dict[str, float], str, MaskSpec, dict[str, Tensor]]:
    """Read a file of :func:`write_artefact`: ``(model_config dict, sparsity config, fmt, spec, state_dict)``.

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
