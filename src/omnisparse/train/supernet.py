"""Omni-sparsity supernet training (``omnisparse train --supernet``): one weight set for every
per-layer sparsity configuration.

Each optimizer step, on one batch (the sandwich rule):

1. masks rankings are refreshed once from the current weights (:meth:`MaskBank.refresh`);
2. the dense network (dropout on), the sparsest network (every gene at the current maximum
   sparsity) and ``sparsity.n_random`` random configurations (each gene drawn uniformly from the grid
   up to the current maximum; dropout off) each run forward + backward; gradients accumulate;
3. one clipped optimizer step on the sum.

The maximum sparsity ramps cubically from 0 to ``sparsity.max_sparsity`` over ``sparsity.ramp_steps``
steps (then holds). The configurations of a step come from ``Random(seed, step)``, so every DDP rank
samples the same ones and a resumed run samples what the uninterrupted one would. Optional in-place
distillation (``sparsity.distill``): the dense path's joiner posteriors (detached) teach the others.
With DDP, gradients are all-reduced once per step (``no_sync`` on all but the last path).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from omnisparse.sparsity.schedule import cubic_sparsity, snap_down
from omnisparse.train.sparse_base import SparseTrainerBase, dropout_disabled


class SupernetTrainer(SparseTrainerBase):
    kind = "supernet"

    def current_max_sparsity(self) -> float:
        """The sparsest sub-network's sparsity at this step (snapped down to the grid)."""
        sc = self.cfg.sparsity
        s = cubic_sparsity(self.step - self.sparse_start, sc.ramp_steps, sc.max_sparsity)
        return snap_down(s, self.space.grid)

    def step_configs(self) -> list[dict[str, float]]:
        """``[dense, sparsest, random_1 .. random_k]`` for the current step (identical on every rank)."""
        s_max = self.current_max_sparsity()
        rng = random.Random(f"{self.cfg.train.seed}-{self.step}")
        configs = [self.space.sample_max(), self.space.sample_min(s_max)]
        configs += [self.space.sample_random(rng, s_max) for _ in range(self.cfg.sparsity.n_random)]
        return configs

    def train_step(self, batch: dict) -> dict[str, Any]:
        if self.step < self.sparse_start:
            return super().train_step(batch)  # stage 1: dense warm-up
        sc = self.cfg.sparsity
        mode = self.cfg.train.mode
        configs = self.step_configs()
        self.record_step_paths(configs)
        self.bank.refresh()
        metrics: dict[str, Any] = {"max_sparsity": self.current_max_sparsity()}
        total, teacher = 0.0, None
        try:
            for i, config in enumerate(configs):
                self.bank.apply(config)
                last = i == len(configs) - 1
                sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.wrapped.no_sync()
                drop = contextlib.nullcontext() if i == 0 else dropout_disabled(self.model)
                kd = {}
                if sc.distill:
                    kd = {"return_log_probs": True} if i == 0 else \
                        {"teacher_log_probs": teacher, "distill_weight": sc.distill_weight}
                with sync, drop:
                    out = self.backward_path(batch, mode, **kd)
                if out is None:
                    return {"loss": float("nan")}
                if i == 0:
                    teacher = out.log_probs
                    metrics.update(loss_dense=float(out.loss.detach()), rnnt=out.rnnt, ctc=out.ctc)
                elif i == 1:
                    metrics["loss_sparsest"] = float(out.loss.detach())
                if i > 0 and sc.distill:
                    metrics[f"distill_{i}"] = out.distill
                total += float(out.loss.detach())
        finally:
            self.bank.clear()
        metrics["loss"] = total
        return metrics

    def validation_configs(self) -> dict[str, dict[str, float]]:
        sc = self.cfg.sparsity
        out = {"dense": self.space.sample_max()}
        for s in sorted({*sc.valid_ladder, snap_down(sc.max_sparsity, self.space.grid)}):
            out[f"u{s:g}"] = self.space.uniform(snap_down(s, self.space.grid))
        return out
