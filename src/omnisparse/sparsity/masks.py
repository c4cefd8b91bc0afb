"""Magnitude masks of every granularity, nested across sparsities, for the PrunableLinears of a model.

A *unit* is what a mask keeps or drops as a whole:

* ``unstructured``: one weight; score ``|w|``; ``N = out * in`` units;
* ``block``: a square ``b x b`` tile of the weight (tiles at the right/bottom edge are smaller when
  ``b`` does not divide the shape); score = L2 norm of the tile; ``N = ceil(out/b) * ceil(in/b)``;
* ``row``: one output row (a whole output neuron, bias untouched); score = L2 norm of the row;
  ``N = out``.

:class:`MatrixRanking` sorts the units of one matrix once (0 = most important); the mask at sparsity
``s`` keeps the ``round((1 - s) * N)`` best-ranked units (:func:`kept_count`). Because every sparsity
cuts the *same* ranking, the masks are nested: what survives at ``s2 > s1`` also survives at ``s1``.

:class:`MaskBank` holds one ranking per PrunableLinear of the pruned genes. The supernet trainer calls
:meth:`MaskBank.refresh` once per optimizer step (rankings from the current weights) and then
:meth:`MaskBank.apply` for each sub-network of that step; masks are cached per (module, sparsity)
until the next refresh.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import torch
from torch import Tensor, nn

from omnisparse.models.layers import PrunableLinear

GRANULARITIES = ("unstructured", "block", "row")


@dataclass(frozen=True)
class MaskSpec:
    """How masks are shaped: ``granularity`` in :data:`GRANULARITIES`; ``block`` = side (in weights)
    of the square tiles of the ``block`` granularity (ignored by the others, but validated)."""

    granularity: str = "unstructured"
    block: int = 8

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown mask granularity {self.granularity!r}; expected one of {GRANULARITIES}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"mask block size must be a positive integer, got {self.block!r}")


def check_sparsity(s: float, what: str = "sparsity") -> float:
    """``s`` as a float, or ValueError unless ``0 <= s < 1`` (a finite number)."""
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        raise ValueError(f"{what} must be a number in [0, 1), got {s!r}")
    s = float(s)
    if not 0.0 <= s < 1.0:  # also rejects NaN
        raise ValueError(f"{what} must be in [0, 1), got {s!r}")
    return s


def unit_grid(shape: tuple[int, int], spec: MaskSpec) -> tuple[int, ...]:
    """Shape of the unit scores of a weight of ``shape = (out, in)``: ``(out, in)``,
    ``(ceil(out/b), ceil(in/b))`` or ``(out,)``."""
    out_f, in_f = shape
    if spec.granularity == "unstructured":
        return (out_f, in_f)
    if spec.granularity == "block":
        b = spec.block
        return (-(-out_f // b), -(-in_f // b))
    return (out_f,)


def n_units(shape: tuple[int, int], spec: MaskSpec) -> int:
    """Number of units ``N`` of a weight of ``shape = (out, in)``."""
    return math.prod(unit_grid(shape, spec))


def kept_count(n: int, s: float) -> int:
    """Units kept at sparsity ``s`` out of ``n``: ``round((1 - s) * n)`` (Python's round, i.e. ties to
    even). The one formula used by masks, the search space's sizes and the export format."""
    return int(round((1.0 - check_sparsity(s)) * n))


def kept_weights(shape: tuple[int, int], spec: MaskSpec, s: float) -> int:
    """Weights kept at sparsity ``s``: ``kept units * numel / N``, rounded half up. Exact for
    ``unstructured`` and ``row``, and for ``block`` when ``b`` divides both dimensions; with smaller
    edge tiles it counts each kept tile at the average tile area (which tiles survive depends on the
    weights, this count must not)."""
    n = n_units(shape, spec)
    numel = shape[0] * shape[1]
    k = kept_count(n, s)
    return (k * numel + n // 2) // n if n else 0


def unit_scores(weight: Tensor, spec: MaskSpec) -> Tensor:
    """Importance of every unit of ``weight (out, in)``, in float32 on the weight's device.

    ``unstructured``: ``|w|`` ``(out, in)``; ``block``: L2 norm of each ``b x b`` tile
    ``(ceil(out/b), ceil(in/b))`` (edge tiles smaller when not divisible); ``row``: L2 norm of each
    output row ``(out,)``. NaN weights score below every finite weight (they are pruned first).
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    w = torch.nan_to_num(weight.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    bad = ~torch.isfinite(weight.detach())
    if spec.granularity == "unstructured":
        scores = w.abs()
        if bad.any():
            scores = scores.masked_fill(bad, -1.0)
        return scores
    if spec.granularity == "row":
        scores = w.norm(dim=1)
        if bad.any():
            scores = scores.masked_fill(bad.any(dim=1), -1.0)
        return scores
    b = spec.block
    out_f, in_f = w.shape
    rows, cols = unit_grid((out_f, in_f), spec)
    padded = torch.nn.functional.pad(w, (0, cols * b - in_f, 0, rows * b - out_f))
    scores = padded.square().reshape(rows, b, cols, b).sum(dim=(1, 3)).sqrt()
    if bad.any():
        bad_p = torch.nn.functional.pad(bad, (0, cols * b - in_f, 0, rows * b - out_f))
        scores = scores.masked_fill(bad_p.reshape(rows, b, cols, b).any(dim=3).any(dim=1), -1.0)
    return scores


class MatrixRanking:
    """Ranks of the units of one weight ``(out, in)`` under ``spec``, computed once.

    ``rank`` (shape :func:`unit_grid`, int64, on the weight's device): 0 = most important. Ties are
    broken deterministically: a stable sort on descending score, so among equal scores the unit with
    the lower (row-major) index ranks first.
    """

    def __init__(self, weight: Tensor, spec: MaskSpec):
        with torch.no_grad():
            scores = unit_scores(weight, spec)
            flat = scores.reshape(-1)
            order = torch.sort(flat, descending=True, stable=True).indices
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel(), device=order.device)
        self.spec = spec
        self.shape: tuple[int, int] = (int(weight.shape[0]), int(weight.shape[1]))
        self.dtype = weight.dtype
        self.device = weight.device
        self.rank: Tensor = rank.reshape(scores.shape)
        self.n_units: int = flat.numel()

    def kept_units(self, s: float) -> int:
        """``round((1 - s) * n_units)`` for ``s`` in ``[0, 1)``."""
        return kept_count(self.n_units, s)

    def unit_mask(self, s: float) -> Tensor:
        """Bool mask over the units (shape :func:`unit_grid`): True = kept."""
        return self.rank < self.kept_units(s)

    def mask(self, s: float) -> Tensor:
        """Mask at sparsity ``s`` in the weight's dtype and device, broadcastable to the weight:
        ``(out, in)`` for ``unstructured`` and ``block`` (tiles expanded, edges cropped), ``(out, 1)``
        for ``row``. 1 = kept, 0 = pruned. At ``s = 0`` (or when every unit survives the rounding) it
        is all ones, still a valid mask."""
        units = self.unit_mask(s)
        out_f, in_f = self.shape
        if self.spec.granularity == "unstructured":
            m = units
        elif self.spec.granularity == "row":
            m = units[:, None]
        else:
            b = self.spec.block
            rows, cols = units.shape
            m = units[:, None, :, None].expand(rows, b, cols, b).reshape(rows * b, cols * b)[:out_f, :in_f]
        return m.to(self.dtype).contiguous()


def magnitude_pruned_copy(model: nn.Module, config: Mapping[str, float], spec: MaskSpec) -> nn.Module:
    """A deep copy of ``model`` with every gene of ``config`` (``{gene: sparsity}``, genes of
    ``model.prunable_groups()``) magnitude-pruned at its sparsity under ``spec``, the zeros baked
    into the weights (no masks attached); ``model`` is left as it was."""
    m = copy.deepcopy(model)
    _prune_weights(m, config, spec, keep=False)
    return m


@contextmanager
def magnitude_pruned(model: nn.Module, config: Mapping[str, float], spec: MaskSpec) -> Iterator[nn.Module]:
    """``model`` itself, pruned as :func:`magnitude_pruned_copy` prunes its copy, for the ``with``
    block; the weights it zeroed are restored at the end. For a caller that measures many
    configurations of one model: no copy of the whole model per configuration."""
    saved = _prune_weights(model, config, spec, keep=True)
    try:
        yield model
    finally:
        with torch.no_grad():
            for lin, weight in reversed(saved):
                lin.weight.copy_(weight)


def _prune_weights(model: nn.Module, config: Mapping[str, float], spec: MaskSpec,
                   keep: bool) -> list[tuple[nn.Module, Tensor]]:
    """Zero the weights of ``config``'s genes in place -> ``[(linear, its weight before)]`` (empty
    unless ``keep``)."""
    groups = model.prunable_groups()
    saved = []
    with torch.no_grad():
        for gene, s in config.items():
            if s > 0:
                for _, lin in groups[gene]:
                    if keep:
                        saved.append((lin, lin.weight.detach().clone()))
                    lin.weight.mul_(MatrixRanking(lin.weight, spec).mask(s))
    return saved


class MaskBank:
    """Masks for the PrunableLinears of ``genes`` of ``model`` (a :class:`Transducer` or anything with
    ``prunable_groups() -> {gene: [(module name, PrunableLinear)]}``).

    ``genes``: the genes this bank may prune (default: every gene of ``model.prunable_groups()``);
    an unknown gene is a ValueError. Usage::

        bank.refresh()                       # rankings from the current weights (once per step)
        bank.apply({"enc.0.attn": 0.5, ...}) # masks on every PrunableLinear of the bank's genes
        bank.clear()                         # dense again
    """

    def __init__(self, model: nn.Module, spec: MaskSpec, genes: Optional[list[str]] = None):
        if not isinstance(spec, MaskSpec):
            raise TypeError(f"spec must be a MaskSpec, got {type(spec).__name__}")
        groups = model.prunable_groups()
        if genes is None:
            genes = list(groups)
        genes = list(genes)
        unknown = [g for g in genes if g not in groups]
        if unknown:
            raise ValueError(f"unknown gene(s) {unknown}; the model has {list(groups)}")
        if len(set(genes)) != len(genes):
            raise ValueError(f"duplicate genes in {genes}")
        self.spec = spec
        self.genes: list[str] = genes
        self.groups: OrderedDict[str, list[tuple[str, PrunableLinear]]] = OrderedDict(
            (g, list(groups[g])) for g in genes)
        self.modules: OrderedDict[str, PrunableLinear] = OrderedDict(
            (name, m) for g in genes for name, m in self.groups[g])
        self.rankings: Optional[dict[str, MatrixRanking]] = None
        self.refresh_count = 0
        self._cache: dict[tuple[str, float], Tensor] = {}

    def refresh(self) -> None:
        """Recompute every matrix's ranking from the current weights (on their device, no grad) and
        drop the cached masks."""
        with torch.no_grad():
            self.rankings = {name: MatrixRanking(m.weight, self.spec) for name, m in self.modules.items()}
        self._cache.clear()
        self.refresh_count += 1

    def ranking(self, name: str) -> MatrixRanking:
        """The ranking of module ``name`` (RuntimeError before the first :meth:`refresh`)."""
        if self.rankings is None:
            raise RuntimeError("MaskBank.refresh() must be called before masks can be derived")
        return self.rankings[name]

    def mask_for(self, name: str, s: float) -> Tensor:
        """The (cached) mask of module ``name`` at sparsity ``s``, without setting it."""
        s = check_sparsity(s, f"sparsity of {name}")
        key = (name, s)
        mask = self._cache.get(key)
        if mask is None:
            mask = self.ranking(name).mask(s)
            self._cache[key] = mask
        return mask

    def check_config(self, config: Mapping[str, float]) -> dict[str, float]:
        """``config`` as ``{gene: float}``; ValueError for a gene outside the bank or a sparsity outside [0, 1)."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a sub-network config must be a mapping gene -> sparsity, got {type(config).__name__}")
        unknown = [g for g in config if g not in self.groups]
        if unknown:
            raise ValueError(f"config names gene(s) {unknown} that this mask bank does not prune "
                             f"(its genes: {self.genes})")
        return {g: check_sparsity(s, f"sparsity of gene {g}") for g, s in config.items()}

    def apply(self, config: Mapping[str, float]) -> None:
        """Set the masks of sub-network ``config`` (``{gene: sparsity}``): sparsity 0 and genes of the
        bank missing from ``config`` are dense (``set_mask(None)``)."""
        if self.rankings is None:
            raise RuntimeError("MaskBank.apply() called before MaskBank.refresh(): no rankings yet")
        config = self.check_config(config)
        for gene, members in self.groups.items():
            s = config.get(gene, 0.0)
            for name, m in members:
                m.set_mask(None if s == 0.0 else self.mask_for(name, s))

    def clear(self) -> None:
        """Remove the masks of every module of the bank (dense network)."""
        for m in self.modules.values():
            m.set_mask(None)

    def densities(self) -> dict[str, float]:
        """Module name -> fraction of its weights kept by its current mask (1.0 when unmasked)."""
        return {name: m.density() for name, m in self.modules.items()}
