"""The search space of sub-networks: one sparsity per gene, drawn from a grid.

A *config* is ``{gene: sparsity}`` (genes ``enc.{i}.attn``, ``enc.{i}.conv``, ``enc.{i}.ffn``, and with
``prune_pred_joiner`` also ``pred`` / ``joiner``); a missing gene means sparsity 0 (dense).
:class:`SearchSpace` samples configs (sandwich rule of the supernet, evolutionary search) and, given a
:class:`Pricing`, prices them: :meth:`SearchSpace.nonzero_params` and :meth:`SearchSpace.size_bytes`.
The space knows no storage format: the pricing is built by the caller from the model and passed in
(``omnisparse.export.format.ArtefactPricing.of(model)``: exact sizes of the file ``write_artefact``
writes). Pricing needs only shapes, never weights, so the space keeps no reference to the model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

from torch import nn

from omnisparse.io.json_file import read_json_object
from omnisparse.sparsity.masks import MaskBank, MaskSpec, check_sparsity, kept_weights

__all__ = ["Pricing", "SearchSpace", "parse_subnet", "DEFAULT_GRID"]

DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(10))  # 0.0, 0.1, ..., 0.9
_TOL = 1e-9


class Pricing(Protocol):
    """What a :class:`SearchSpace` prices configs with, built outside the space (from the model, by the
    caller) and passed in. :class:`omnisparse.export.format.ArtefactPricing` prices in the artefact
    every tool writes.

    ``params``: the entries of the stored model, each with ``name``, ``shape`` and ``gene`` (the gene
    of a prunable weight, else None); ``model_config``: JSON text of the model's config;
    ``check_format(fmt)`` raises ValueError for a format it cannot price; ``size_bytes(config, fmt,
    spec)``: exact size in bytes of the stored sub-network (``config`` validated by the space)."""

    params: Sequence[Any]
    model_config: str

    def check_format(self, fmt: str) -> str: ...

    def size_bytes(self, config: Mapping[str, float], fmt: str, spec: MaskSpec) -> int: ...


class SearchSpace:
    """Genes, sparsity grid, mask spec and, optionally, the pricing of configs.

    Attributes: ``genes`` (tuple, model order), ``grid`` (sorted tuple of floats in [0, 1)), ``spec``
    (:class:`MaskSpec`), ``pricing`` (:class:`Pricing` or None: then the space samples and validates
    configs but cannot count or size them), and with a pricing ``params`` / ``model_config`` (its
    entries and model config JSON). Build it with :meth:`from_model`.
    """

    def __init__(self, genes: Sequence[str], grid: Iterable[float], spec: MaskSpec, pricing: Optional[Pricing] = None):
        if not isinstance(spec, MaskSpec):
            raise TypeError(f"spec must be a MaskSpec, got {type(spec).__name__}")
        grid = sorted({check_sparsity(g, "grid value") for g in grid})
        if not grid:
            raise ValueError("the sparsity grid is empty")
        genes = tuple(genes)
        if len(set(genes)) != len(genes):
            raise ValueError(f"duplicate genes in {list(genes)}")
        if pricing is not None:
            known = {p.gene for p in pricing.params if p.gene is not None}
            missing = [g for g in genes if g not in known]
            if missing:
                raise ValueError(f"gene(s) {missing} have no prunable matrix; known genes: {sorted(known)}")
        self.genes: tuple[str, ...] = genes
        self._gene_set = frozenset(genes)
        self.grid: tuple[float, ...] = tuple(grid)
        self.spec = spec
        self.pricing = pricing
        if pricing is not None:
            self._fixed_params = sum(_numel(p.shape) for p in pricing.params if p.gene is None)
            self._matrices = [(p.gene, tuple(p.shape)) for p in pricing.params if p.gene is not None]

    @classmethod
    def from_model(cls, model: nn.Module, grid: Iterable[float] = DEFAULT_GRID, genes: Optional[Sequence[str]] = None,
                   prune_pred_joiner: bool = False, spec: MaskSpec = MaskSpec(),
                   pricing: Optional[Pricing] = None) -> "SearchSpace":
        """Space of ``model`` (no reference to it or its weights is kept).

        ``genes``: default every ``enc.*`` gene of ``model.prunable_groups()``, plus ``pred`` / ``joiner``
        (when the model has them) with ``prune_pred_joiner``; an explicit list must name real genes.
        ``pricing``: the pricing of the same model (e.g. ``ArtefactPricing.of(model)``), None for a space
        that only samples and validates configs."""
        groups = model.prunable_groups()
        if genes is None:
            genes = [g for g in groups if g.startswith("enc.")]
            if prune_pred_joiner:
                genes += [g for g in ("pred", "joiner") if g in groups]
        else:
            genes = list(genes)
            unknown = [g for g in genes if g not in groups]
            if unknown:
                raise ValueError(f"unknown gene(s) {unknown}; the model has {list(groups)}")
        return cls(genes, grid, spec, pricing)

    @classmethod
    def from_sparsity_config(cls, model: nn.Module, sparsity, pricing: Optional[Pricing] = None) -> "SearchSpace":
        """Space of ``model`` under a :class:`omnisparse.config.SparsityConfig` (grid, granularity, block,
        prune_pred_joiner): the space a run was trained with, as every consumer must rebuild it."""
        return cls.from_model(model, grid=tuple(sparsity.grid), prune_pred_joiner=sparsity.prune_pred_joiner,
                              spec=MaskSpec(sparsity.granularity, sparsity.block), pricing=pricing)

    def __repr__(self) -> str:
        return (f"SearchSpace({len(self.genes)} genes, grid={list(self.grid)}, "
                f"granularity={self.spec.granularity}, block={self.spec.block})")

    # ------------------------------------------------------------------ configs
    def _snap(self, s: float) -> Optional[float]:
        """The grid value equal to ``s`` (within 1e-9), 0.0 for 0, else None."""
        for g in self.grid:
            if abs(g - s) <= _TOL:
                return g
        return 0.0 if abs(s) <= _TOL else None

    def _allowed(self, s_max: float) -> list[float]:
        """Grid values ``<= s_max`` (``[0.0]`` when none)."""
        vals = [g for g in self.grid if g <= s_max + _TOL]
        return vals or [0.0]

    def check(self, config: Mapping[str, float]) -> dict[str, float]:
        """Lenient validation: known genes, sparsities in [0, 1) (off-grid allowed). Returns floats."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a sub-network config must be a mapping gene -> sparsity, got {type(config).__name__}")
        gs = self._gene_set
        for g in config:
            if g not in gs:
                raise ValueError(f"unknown gene {g!r} in config; genes of this space: {list(self.genes)}")
        return {g: check_sparsity(s, f"sparsity of gene {g}") for g, s in config.items()}

    def validate(self, config: Mapping[str, float]) -> dict[str, float]:
        """Strict validation: known genes and grid values (0.0 always allowed). Returns the config with
        every gene of the space (missing ones at 0.0) snapped to the exact grid values."""
        config = self.check(config)
        out = {}
        for g in self.genes:
            s = config.get(g, 0.0)
            snapped = self._snap(s)
            if snapped is None:
                raise ValueError(f"sparsity {s} of gene {g} is not on the grid {list(self.grid)}")
            out[g] = snapped
        return out

    def uniform(self, s: float) -> dict[str, float]:
        """Every gene at sparsity ``s`` (any value in [0, 1), not necessarily on the grid)."""
        s = check_sparsity(s)
        return {g: s for g in self.genes}

    def sample_max(self) -> dict[str, float]:
        """The largest sub-network: every gene at 0.0 (dense)."""
        return {g: 0.0 for g in self.genes}

    def sample_min(self, s_max: float) -> dict[str, float]:
        """The smallest sub-network up to ``s_max``: every gene at the largest grid value ``<= s_max``."""
        return {g: max(self._allowed(s_max)) for g in self.genes}

    def sample_random(self, rng: random.Random, s_max: float = 1.0) -> dict[str, float]:
        """Each gene drawn uniformly from the grid values ``<= s_max`` (in gene order, from ``rng``)."""
        allowed = self._allowed(s_max)
        return {g: rng.choice(allowed) for g in self.genes}

    def mutate(self, config: Mapping[str, float], rng: random.Random, prob: float,
               s_max: float = 1.0) -> dict[str, float]:
        """Copy of ``config`` where each gene, with probability ``prob``, moves to another grid value
        ``<= s_max`` (uniformly among the others; unchanged when there is no other)."""
        config = self.validate(config)
        allowed = self._allowed(s_max)
        out = {}
        for g in self.genes:
            s = config[g]
            if rng.random() < prob:
                others = [v for v in allowed if v != s]
                if others:
                    s = rng.choice(others)
            out[g] = s
        return out

    def crossover(self, a: Mapping[str, float], b: Mapping[str, float], rng: random.Random) -> dict[str, float]:
        """Uniform crossover: each gene from ``a`` or ``b`` with probability 1/2."""
        a, b = self.validate(a), self.validate(b)
        return {g: a[g] if rng.random() < 0.5 else b[g] for g in self.genes}

    def encode(self, config: Mapping[str, float]) -> tuple[float, ...]:
        """Hashable key: the sparsities in gene order (missing genes = 0.0, grid-snapped)."""
        c = self.validate(config)
        return tuple(c[g] for g in self.genes)

    def decode(self, key: Sequence[float]) -> dict[str, float]:
        """Inverse of :meth:`encode`."""
        key = tuple(key)
        if len(key) != len(self.genes):
            raise ValueError(f"key has {len(key)} values, the space has {len(self.genes)} genes")
        return self.validate(dict(zip(self.genes, key)))

    # ------------------------------------------------------------------ size
    def _priced(self) -> Pricing:
        if self.pricing is None:
            raise RuntimeError(f"{self!r} has no pricing: build it with pricing=... (e.g. "
                               "omnisparse.export.format.ArtefactPricing.of(model)) to count or size sub-networks")
        return self.pricing

    @property
    def params(self) -> Sequence[Any]:
        """The pricing's entries of the stored model (name, shape, gene, ...)."""
        return self._priced().params

    @property
    def model_config(self) -> str:
        """The pricing's JSON text of the model's config."""
        return self._priced().model_config

    def nonzero_params(self, config: Mapping[str, float]) -> int:
        """Parameters of the stored sub-network (for the artefact: CTC head excluded) that survive its
        masks: every non-prunable entry of the pricing in full (biases, norms, embeddings, ...) plus the
        kept weights of every prunable matrix (see :func:`kept_weights`; genes outside the space are dense)."""
        self._priced()
        config = self.check(config)
        total = self._fixed_params
        for gene, shape in self._matrices:
            s = config.get(gene, 0.0)
            total += shape[0] * shape[1] if s == 0.0 else kept_weights(shape, self.spec, s)
        return total

    def size_bytes(self, config: Mapping[str, float], fmt: str) -> int:
        """Exact size in bytes of the stored sub-network of ``config`` in ``fmt``, by the pricing: with
        ``ArtefactPricing``, ``os.path.getsize`` of the file ``write_artefact(path, model, config, fmt,
        spec)`` writes (``fmt`` one of ``omnisparse.export.format.FORMATS``)."""
        pricing = self._priced()
        pricing.check_format(fmt)
        return pricing.size_bytes(self.check(config), fmt, self.spec)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def parse_subnet(subnet: str | Mapping[str, float], space: SearchSpace) -> dict[str, float]:
    """A sub-network given as ``"uniform:S"``, a path to a JSON file ``{gene: sparsity}`` or a mapping,
    checked against ``space`` (known genes, sparsities in [0, 1); off-grid values are accepted)."""
    if isinstance(subnet, Mapping):
        return space.check(subnet)
    text = str(subnet)
    if text.startswith("uniform:"):
        try:
            s = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad sub-network {text!r}: expected uniform:S with S a number in [0, 1)") from None
        return space.uniform(s)
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"sub-network {text!r} is neither `uniform:S` nor an existing JSON file")
    return space.check(read_json_object(path, "sub-network config {gene: sparsity}"))


def space_and_bank(model: nn.Module, sparsity, refresh: bool = False,
                   pricing: Optional[Pricing] = None) -> tuple[SearchSpace, MaskBank]:
    """The search space of ``model`` under ``sparsity`` (a SparsityConfig) and a mask bank over its genes;
    ``refresh``: rank the current weights now (otherwise call ``bank.refresh()`` before ``apply``);
    ``pricing``: see :meth:`SearchSpace.from_model`."""
    space = SearchSpace.from_sparsity_config(model, sparsity, pricing)
    bank = MaskBank(model, space.spec, genes=list(space.genes))
    if refresh:
        bank.refresh()
    return space, bank
