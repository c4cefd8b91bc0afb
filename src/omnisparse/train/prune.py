"""Individually pruned baselines (``omnisparse prune``): the comparison point of the supernet.

From the dense weights (``sparsity.init_from`` or ``sparsity.dense_steps`` of dense training),
gradual magnitude pruning to one uniform target sparsity ``sparsity.target`` - every gene of the
search space, same granularity and same prunable set as the supernet - following the cubic
schedule of Zhu & Gupta over ``sparsity.prune_steps`` steps with masks recomputed every
``sparsity.prune_every`` steps, then fine-tuning with the masks fixed until ``train.max_steps``.
Same optimizer, data and schedule machinery as dense training; one run per target.

Pruned weights are set to zero after every optimizer step (AdamW's moments would otherwise move
them while they are masked), so a checkpoint of this run IS the pruned model: the plain dense
evaluation path decodes it, and its masks are recovered exactly from the zeros on resume.
"""

from __future__ import annotations

from typing import Any

import torch

from omnisparse.sparsity.schedule import cubic_sparsity
from omnisparse.train.sparse_base import SparseTrainerBase


class PruneTrainer(SparseTrainerBase):
    kind = "prune"

    def __init__(self, cfg, resume: bool = True):
        super().__init__(cfg, resume=resume)
        if not 0.0 < cfg.sparsity.target < 1.0:
            raise ValueError(f"sparsity.target must be in (0, 1), got {cfg.sparsity.target}")
        self.current_sparsity: float | None = None
        if self.step > self.sparse_start:  # resumed mid-run: rebuild the masks the run was using
            self._update_masks(self.schedule_sparsity(self.last_update_step(self.step - 1)))

    def schedule_sparsity(self, step: int) -> float:
        sc = self.cfg.sparsity
        return cubic_sparsity(step - self.sparse_start, sc.prune_steps, sc.target)

    def is_update_step(self, step: int) -> bool:
        """Masks are recomputed every ``prune_every`` steps of the schedule and at its last step."""
        t, sc = step - self.sparse_start, self.cfg.sparsity
        return 0 <= t <= sc.prune_steps and (t % sc.prune_every == 0 or t == sc.prune_steps)

    def last_update_step(self, step: int) -> int:
        """The latest mask-update step ``<= step`` (``step >= sparse_start``)."""
        t, sc = step - self.sparse_start, self.cfg.sparsity
        t = sc.prune_steps if t >= sc.prune_steps else (t // sc.prune_every) * sc.prune_every
        return self.sparse_start + t

    def _update_masks(self, s: float) -> None:
        self.bank.refresh()
        self.bank.apply(self.space.uniform(s))
        self.current_sparsity = s
        self._zero_pruned()

    @torch.no_grad()
    def _zero_pruned(self) -> None:
        for _, _, m in self.model.prunable_linears():
            if m.mask is not None:
                m.weight.mul_(m.mask)

    def train_step(self, batch: dict) -> dict[str, Any]:
        if self.is_update_step(self.step):
            self._update_masks(self.schedule_sparsity(self.step))
        metrics = super().train_step(batch)
        metrics["sparsity"] = float(self.current_sparsity or 0.0)
        return metrics

    def _apply_step(self, metrics: dict) -> bool:
        ok = super()._apply_step(metrics)
        if ok:
            self._zero_pruned()
        return ok

    def validation_configs(self) -> dict[str, dict[str, float]]:
        return {"dense": self.space.uniform(self.current_sparsity or 0.0)}

    def restore_masks(self) -> None:
        if self.current_sparsity is None:
            self.bank.clear()
        else:
            self.bank.refresh()
            self.bank.apply(self.space.uniform(self.current_sparsity))


def prune(cfg, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) one pruning baseline in ``cfg.train.out_dir``."""
    from omnisparse.train.trainer import train_in_run_dir

    return train_in_run_dir(PruneTrainer, cfg, resume, "omnisparse prune")
