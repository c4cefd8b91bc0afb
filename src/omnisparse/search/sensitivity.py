"""Per-gene sensitivity of a supernet and the sparsity ladder it suggests (``search.sensitivity``).

:func:`gene_sensitivity` measures, for every gene, the fitness cost of pruning that gene ALONE to the
grid's largest value (the others at its smallest): ``genes + 1`` evaluations. :func:`sensitivity_ladder`
turns it into one config per grid level ``u``: genes ranked by sensitivity, least first, move linearly
from ``+spread`` to ``-spread`` grid steps around ``u`` (clipped to the grid), so the sparsity goes where
it costs least. Both know only the genes, the grid and an evaluator ``config -> fitness``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

Config = dict[str, float]


def _finite(v: float) -> float:
    return math.inf if math.isnan(v) else v


def gene_sensitivity(genes: Sequence[str], grid: Iterable[float], evaluator: Callable[[Config], float],
                     progress: Callable[[Sequence[str]], Iterable[str]] = iter) -> dict[str, float]:
    """``{gene: fitness(gene alone at max(grid)) - fitness(every gene at min(grid))}``; ``progress``
    wraps the gene loop (e.g. a tqdm)."""
    grid = list(grid)
    reference = {g: min(grid) for g in genes}
    base = _finite(float(evaluator(reference)))
    return {g: _finite(float(evaluator({**reference, g: max(grid)}))) - base for g in progress(genes)}


def sensitivity_ladder(genes: Sequence[str], grid: Iterable[float], sensitivity: Mapping[str, float],
                       spread: int) -> list[Config]:
    """One config per grid level, sparsest first (see the module docstring)."""
    grid = sorted(grid)
    order = sorted(genes, key=lambda g: (sensitivity[g], g))
    n = len(order)
    offset = {g: round(spread * (1 - 2 * i / (n - 1))) if n > 1 else 0 for i, g in enumerate(order)}
    ladder = [{g: grid[min(len(grid) - 1, max(0, level + offset[g]))] for g in genes} for level in range(len(grid))]
    return ladder[::-1]
