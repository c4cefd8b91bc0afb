"""Evolutionary search of the supernet's WER-vs-size Pareto front (``omnisparse search``).

* :class:`EvolutionFinder` / :class:`EvolutionSettings` (``evolution``): the algorithm, knowing only a
  space, an evaluator ``config -> WER`` and a cost ``config -> bytes``; its saved state (``state``);
* :class:`SubnetEvaluator` (``evaluator``): greedy WER of a sub-network on a fixed dev subset;
* :func:`run_search` (``run``): the whole job from a :class:`~omnisparse.config.Config`.
"""

from omnisparse.search.evaluator import SubnetEvaluator
from omnisparse.sparsity.space import space_and_bank
from omnisparse.search.evolution import EvolutionFinder, EvolutionSettings
from omnisparse.search.run import run_search

__all__ = ["EvolutionFinder", "EvolutionSettings", "SubnetEvaluator", "run_search", "space_and_bank"]
