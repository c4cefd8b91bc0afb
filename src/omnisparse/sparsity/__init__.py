"""Sparsity: magnitude masks (:mod:`.masks`), the sub-network search space (:mod:`.space`) and
sparsity schedules (:mod:`.schedule`).

Only the mask API is re-exported here (``from omnisparse.sparsity.space import SearchSpace`` for the
space): :mod:`.space` depends on :mod:`omnisparse.export.format`, which itself imports :mod:`.masks`.
"""

from .masks import GRANULARITIES, MaskBank, MaskSpec, MatrixRanking, kept_count, unit_scores

__all__ = ["GRANULARITIES", "MaskBank", "MaskSpec", "MatrixRanking", "kept_count", "unit_scores"]
