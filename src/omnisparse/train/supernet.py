"""Omni-sparsity supernet training (``omnisparse train --supernet``): one weight set for every
per-layer sparsity configuration.

Each optimizer step:

1. mask rankings are refreshed once from the current weights (:meth:`MaskBank.refresh`);
2. the step's sub-networks (:func:`omnisparse.sparsity.paths.step_plan`: the sandwich rule's dense,
   sparsest and ``sparsity.n_random`` random configurations, or one of them for ``one-per-step``) each
   run forward + backward, on the same batch (``sandwich-same-batch``) or each on its own
   (``sandwich-split``, ``one-per-step``); the dense path keeps dropout, the others run without;
   gradients accumulate;
3. one clipped optimizer step on the sum.

The maximum sparsity ramps cubically from 0 to ``sparsity.max_sparsity`` over ``sparsity.ramp_steps``
steps (then holds). A step's plan comes from ``(seed, step)``, so every DDP rank agrees on it and a
resumed run trains what the uninterrupted one would. With ``sparsity.ddp_paths = per_rank`` each rank
trains its share of the plan (losses weighted by the world size, so that DDP's gradient mean is the
sum over paths, as with ``same``).

In-place distillation (``sparsity.distill``): the dense network's joiner posteriors (detached) teach
every other path. A path whose batch the dense path did not run on this rank gets its teacher from
an extra gradient-free dense forward (dropout off), counted in ``cost['teacher_forwards']``.
With DDP, gradients are all-reduced once per step (``no_sync`` on all but the last path).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from omnisparse.sparsity.paths import ROLES, Path, check_ddp_split, rank_paths, step_plan
from omnisparse.sparsity.schedule import cubic_sparsity, snap_down
from omnisparse.train.sparse_base import SparseTrainerBase, dropout_disabled


class SupernetTrainer(SparseTrainerBase):
    kind = "supernet"

    def __init__(self, cfg, resume: bool = True):
        super().__init__(cfg, resume=resume)
        sc = cfg.sparsity
        check_ddp_split(sc.schedule, sc.n_random, self.dist.world_size, sc.ddp_paths)

    def current_max_sparsity(self) -> float:
        """The sparsest sub-network's sparsity at this step (snapped down to the grid)."""
        sc = self.cfg.sparsity
        s = cubic_sparsity(self.step - self.sparse_start, sc.ramp_steps, sc.max_sparsity)
        return snap_down(s, self.space.grid)

    def step_plan(self) -> list[Path]:
        """Every sub-network of the current step, all ranks' (identical on every rank)."""
        sc = self.cfg.sparsity
        return step_plan(self.space, sc.schedule, self.step, self.cfg.train.seed, sc.n_random,
                         self.current_max_sparsity(), self.dist.world_size, sc.ddp_paths, sc.path_probs)

    def my_paths(self) -> list[Path]:
        """The sub-networks this rank trains at the current step."""
        return rank_paths(self.step_plan(), self.dist.rank, self.dist.world_size, self.cfg.sparsity.ddp_paths)

    def step_configs(self) -> list[dict[str, float]]:
        """The configs of the current step's plan (``[dense, sparsest, random_1 .. random_k]`` for a sandwich)."""
        return [p.config for p in self.step_plan()]

    def batches_per_step(self) -> int:
        if self.step < self.sparse_start or self.cfg.sparsity.schedule == "sandwich-same-batch":
            return 1
        return len(self.my_paths())

    def _teacher(self, batch: dict) -> torch.Tensor:
        """Dense, dropout-free joiner log-posteriors of ``batch`` without gradients (a distillation teacher)."""
        self.bank.apply(self.space.sample_max())
        dev = self.dist.device
        with torch.no_grad(), dropout_disabled(self.model):
            out = self.loss_module(batch["feats"].to(dev), batch["feat_lens"].to(dev), batch["tokens"].to(dev),
                                   batch["token_lens"].to(dev), mode=self.cfg.train.mode, return_log_probs=True)
        self.cost["teacher_forwards"] = self.cost.get("teacher_forwards", 0) + 1
        return out.log_probs

    def train_step(self, batch: dict | list[dict]) -> dict[str, Any]:
        if self.step < self.sparse_start:
            return super().train_step(batch)  # stage 1: dense warm-up
        sc = self.cfg.sparsity
        mode = self.cfg.train.mode
        plan = self.step_plan()
        self.record_step_paths([p.describe() for p in plan])
        paths = rank_paths(plan, self.dist.rank, self.dist.world_size, sc.ddp_paths)
        batches = batch if isinstance(batch, list) else [batch] * len(paths)
        weight = float(self.dist.world_size) if sc.ddp_paths == "per_rank" and self.dist.world_size > 1 else 1.0
        self.bank.refresh()
        metrics: dict[str, Any] = {"max_sparsity": self.current_max_sparsity()}
        total = 0.0
        teachers: dict[int, torch.Tensor] = {}  # id(batch) -> the dense path's log-probs on it
        try:
            for i, (path, b) in enumerate(zip(paths, batches)):
                kd = {}
                if sc.distill:
                    if path.role == "dense":
                        kd = {"return_log_probs": True}
                    else:
                        teacher = teachers.get(id(b))
                        kd = {"teacher_log_probs": teacher if teacher is not None else self._teacher(b),
                              "distill_weight": sc.distill_weight}
                self.bank.apply(path.config)
                last = i == len(paths) - 1
                sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.wrapped.no_sync()
                drop = contextlib.nullcontext() if path.role == "dense" else dropout_disabled(self.model)
                with sync, drop:
                    out = self.backward_path(b, mode, weight=weight, **kd)
                if out is None:
                    return {"loss": float("nan")}
                if path.role == "dense":
                    if out.log_probs is not None:
                        teachers[id(b)] = out.log_probs
                    metrics.update(loss_dense=float(out.loss.detach()), rnnt=out.rnnt, ctc=out.ctc)
                elif path.role == "sparsest":
                    metrics["loss_sparsest"] = float(out.loss.detach())
                if path.role != "dense" and sc.distill:
                    metrics[f"distill_{path.index}"] = out.distill
                total += float(out.loss.detach())
        finally:
            self.bank.clear()
        metrics["loss"] = total
        if sc.schedule == "one-per-step":
            metrics["path_role"] = float(ROLES.index(paths[0].role))
        return metrics

    def validation_configs(self) -> dict[str, dict[str, float]]:
        sc = self.cfg.sparsity
        out = {"dense": self.space.sample_max()}
        for s in sorted({*sc.valid_ladder, snap_down(sc.max_sparsity, self.space.grid)}):
            out[f"u{s:g}"] = self.space.uniform(snap_down(s, self.space.grid))
        return out
