"""Sparsity schedules (Zhu & Gupta 2017, "To prune, or not to prune").

``cubic_sparsity(t, n, s_final) = s_final * (1 - (1 - t / n) ** 3)`` for ``0 <= t <= n``, then
``s_final``: fast growth while weights are redundant, slow near the end. Used for the supernet's
maximum sparsity and for the gradual pruning of the individually pruned baselines.
"""

from __future__ import annotations


def cubic_sparsity(step: int, ramp_steps: int, final: float, initial: float = 0.0) -> float:
    """Sparsity at ``step`` (0-based) of a cubic ramp from ``initial`` to ``final`` over ``ramp_steps``."""
    if not 0.0 <= initial <= final < 1.0:
        raise ValueError(f"need 0 <= initial <= final < 1, got initial={initial}, final={final}")
    if ramp_steps <= 0 or step >= ramp_steps:
        return final
    frac = max(0.0, step) / ramp_steps
    return final + (initial - final) * (1.0 - frac) ** 3


def snap_down(value: float, grid: list[float] | tuple[float, ...]) -> float:
    """The largest grid value ``<= value`` (the grid's smallest if none); tolerant to float rounding."""
    below = [g for g in grid if g <= value + 1e-9]
    return max(below) if below else min(grid)
