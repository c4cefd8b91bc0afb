"""Which sub-networks a supernet optimizer step trains, on which batch and on which DDP rank
(``sparsity.schedule``, ``sparsity.ddp_paths``).

Every step has a *plan*: a list of :class:`Path` (a role and a per-gene config), the same on every
rank because it is a function of ``(seed, step)`` only. The schedules:

* ``sandwich-same-batch``: ``[dense, sparsest, random_1 .. random_k]`` all on ONE batch; a step costs
  ``2 + k`` forward/backward passes but draws one batch of audio.
* ``sandwich-split``: the same ``2 + k`` paths, each on its own batch; gradients accumulate into one
  optimizer step, so a step draws ``2 + k`` batches: passes and audio grow together, as for one model.
* ``one-per-step``: ONE path per optimizer step (per rank), every path a full optimizer step. The
  role follows a fixed rotation ``dense, sparsest, random, random, ...`` (``2 + k`` long), or, with
  ``sparsity.path_probs = [p_dense, p_sparsest, p_random]``, is drawn from ``Random(seed, step)``.

``ddp_paths = same``: every rank trains every path of the plan (on its shard of the data).
``ddp_paths = per_rank``: the plan is dealt out, rank ``r`` trains paths ``r, r + W, ...`` (one-per-step:
the plan has ``W`` paths, one per rank), so a step of ``W`` ranks costs what one rank's share does: one
cost = one model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from omnisparse.sparsity.space import SearchSpace

SCHEDULES = ("sandwich-same-batch", "sandwich-split", "one-per-step")
ROLES = ("dense", "sparsest", "random")


@dataclass(frozen=True)
class Path:
    """One sub-network of a step: its place in the plan, its role, and its per-gene sparsities."""

    index: int
    role: str  # dense | sparsest | random
    config: dict[str, float]

    def describe(self) -> dict:
        return {"index": self.index, "role": self.role, "config": self.config}


def _config(space: SearchSpace, role: str, s_max: float, rng: random.Random) -> dict[str, float]:
    if role == "dense":
        return space.sample_max()
    if role == "sparsest":
        return space.sample_min(s_max)
    return space.sample_random(rng, s_max)


def step_plan(space: SearchSpace, schedule: str, step: int, seed: int, n_random: int, s_max: float,
              world_size: int = 1, ddp_paths: str = "same", path_probs: Sequence[float] = ()) -> list[Path]:
    """The plan of optimizer step ``step`` (identical on every rank, and after a resume)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown sparsity.schedule {schedule!r} ({' | '.join(SCHEDULES)})")
    if schedule != "one-per-step":
        rng = random.Random(f"{seed}-{step}")
        roles = ["dense", "sparsest"] + ["random"] * n_random
        return [Path(i, role, _config(space, role, s_max, rng)) for i, role in enumerate(roles)]
    rotation = ["dense", "sparsest"] + ["random"] * n_random
    width = world_size if ddp_paths == "per_rank" else 1
    plan = []
    for j in range(width):
        rng = random.Random(f"{seed}-{step}-{j}")
        if path_probs:
            role = rng.choices(ROLES, weights=list(path_probs))[0]
        else:
            role = rotation[(step * width + j) % len(rotation)]
        plan.append(Path(j, role, _config(space, role, s_max, rng)))
    return plan


def rank_paths(plan: list[Path], rank: int, world_size: int, ddp_paths: str) -> list[Path]:
    """The paths of ``plan`` that rank ``rank`` of ``world_size`` trains."""
    if ddp_paths == "same" or world_size == 1:
        return list(plan)
    return plan[rank::world_size]


def check_ddp_split(schedule: str, n_random: int, world_size: int, ddp_paths: str) -> None:
    """ValueError when ``per_rank`` cannot deal a sandwich out evenly (ranks would draw different
    numbers of batches per step, and an exact resume needs them in step)."""
    n = 2 + n_random
    if ddp_paths == "per_rank" and schedule != "one-per-step" and world_size > 1 and n % world_size:
        raise ValueError(f"sparsity.ddp_paths=per_rank deals the {n} paths of a step (2 + n_random) out among "
                         f"{world_size} ranks: they must divide evenly (set n_random so that {world_size} divides 2 + n_random)")


def step_cost(schedule: str, n_random: int, world_size: int = 1, ddp_paths: str = "same") -> tuple[int, int]:
    """``(passes, batches)`` one rank runs and draws per optimizer step of a supernet schedule (after any
    dense warm-up): forward/backward passes, and batches of audio consumed."""
    paths = 1 if schedule == "one-per-step" else 2 + n_random
    if schedule != "one-per-step" and ddp_paths == "per_rank" and world_size > 1:
        paths //= world_size
    return paths, (1 if schedule == "sandwich-same-batch" else paths)
