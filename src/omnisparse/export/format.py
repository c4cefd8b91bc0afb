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
  model, masked at its gene's sparsity (``config.get(gene, 0.0)``; masks from
  :class:`~omnisparse.sparsity.masks.MaskBank`, i.e. from the weights' current magnitudes), stored
  according to ``fmt``:

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

This module is the layout: which tensors a file holds, with their dtypes and shapes
(:func:`artefact_tensors`, :func:`matrix_tensors`), its metadata and header (:func:`encode_header`),
and the size of a file computed without writing it (:func:`artefact_size`, :class:`ArtefactPricing`).
The writer (:func:`omnisparse.export.writer.write_artefact`) lays its file out with the same functions;
the reader (:func:`omnisparse.export.reader.read_artefact`) checks a file against them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from typing import Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn

from omnisparse.sparsity.masks import MaskSpec, kept_count, n_units, unit_grid

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
    """Exact size in bytes of the file :func:`~omnisparse.export.writer.write_artefact` writes for these
    inputs."""
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
        """Exact size of the file :func:`~omnisparse.export.writer.write_artefact` writes for ``config``
        (validated by the space)."""
        return artefact_size(self.params, config, fmt, spec, self.model_config)
