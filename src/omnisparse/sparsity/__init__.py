"""Sparsity: magnitude masks (:mod:`.masks`), the sub-network search space (:mod:`.space`) and
sparsity schedules (:mod:`.schedule`).
"""

from .masks import GRANULARITIES, MaskBank, MaskSpec, MatrixRanking, kept_count, unit_scores
from .space import Pricing, SearchSpace, parse_subnet, space_and_bank

__all__ = ["GRANULARITIES", "MaskBank", "MaskSpec", "MatrixRanking", "kept_count", "unit_scores",
           "Pricing", "SearchSpace", "parse_subnet", "space_and_bank"]
