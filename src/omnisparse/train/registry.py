"""What ``omnisparse train`` runs: the trainers by kind, and :func:`train`, which picks one.

``dense`` (:class:`~omnisparse.train.trainer.Trainer`), ``supernet`` (the Omni-sparsity supernet,
:class:`~omnisparse.train.supernet.SupernetTrainer`) and ``dual-mode`` (dense full-context + sparse
streaming, :class:`~omnisparse.train.dual_mode.DualModeTrainer`). The choice is made here, above the
trainers: the base trainer knows none of its subclasses.
"""

from __future__ import annotations

from typing import Any

from omnisparse.config import Config
from omnisparse.train.dual_mode import DualModeTrainer
from omnisparse.train.supernet import SupernetTrainer
from omnisparse.train.trainer import Trainer, train_in_run_dir

__all__ = ["TRAINERS", "trainer_kind", "train"]

TRAINERS: dict[str, type[Trainer]] = {"dense": Trainer, "supernet": SupernetTrainer, "dual-mode": DualModeTrainer}


def trainer_kind(supernet: bool = False, dual_mode: bool = False) -> str:
    """The key of :data:`TRAINERS` that ``omnisparse train [--supernet | --dual-mode]`` runs."""
    if supernet and dual_mode:
        raise ValueError("supernet and dual-mode training are mutually exclusive (--supernet / --dual-mode): "
                         "a dual-mode run trains its own dense full-context and sparse streaming paths")
    return "dual-mode" if dual_mode else "supernet" if supernet else "dense"


def train(cfg: Config, resume: bool = True, supernet: bool = False, dual_mode: bool = False) -> dict[str, Any]:
    """Run (or resume) dense training, or with ``supernet`` the Omni-sparsity supernet training, or with
    ``dual_mode`` the dual-mode (dense full-context + sparse streaming) training."""
    return train_in_run_dir(TRAINERS[trainer_kind(supernet, dual_mode)], cfg, resume, "omnisparse train")
