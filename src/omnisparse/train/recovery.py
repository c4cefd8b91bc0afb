"""What a training step does when a batch fails, for every trainer (:class:`FaultRecovery`, a base of
:class:`~omnisparse.train.trainer.Trainer`); each fault is counted in ``cost.json`` with a warning, and
summarised in one line at the end of the run (with the utterances the data pipeline skipped):

* a NaN / infinite loss or gradient skips its batch (``skipped_by_reason["non_finite"]``);
* a batch that runs out of memory is retried once as two halves (:func:`split_batch`; gradients
  weighted so that the step equals the whole batch's, ``oom_split_batches``), else skipped
  (``skipped_by_reason["out_of_memory"]``); under DDP it stops the run (a retry on one rank would
  desynchronise the others);
* ``train.max_bad_steps`` skipped batches in a row stop the run (:class:`NonFiniteLossError` /
  :class:`OutOfMemoryStop`, one line on the command line); the last checkpoint stays usable.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from omnisparse.errors import NonFiniteLossError, OutOfMemoryStop
from omnisparse.io import checkpoint as ck
from omnisparse.losses.transducer import TransducerLoss

log = logging.getLogger(__name__)

__all__ = ["FaultRecovery", "is_out_of_memory", "split_batch"]

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                 "failed to allocate")


def is_out_of_memory(e: BaseException) -> bool:
    """True for the errors an allocation failure raises: ``torch.OutOfMemoryError`` (CUDA),
    ``MemoryError``, and RuntimeErrors of the CPU allocator (``DefaultCPUAllocator: can't allocate memory``)."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in _OOM_MESSAGES)


def split_batch(batch: dict) -> tuple[dict, dict]:
    """A batch as two halves (first ``ceil(B/2)`` utterances, the rest), padding trimmed to each half."""
    n = len(batch["ids"])
    k = (n + 1) // 2
    halves = []
    for sl in (slice(0, k), slice(k, n)):
        half = {}
        for key, v in batch.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n:
                half[key] = v[sl]
            elif isinstance(v, list) and len(v) == n:
                half[key] = v[sl]
            else:
                half[key] = v
        for data, lens in (("feats", "feat_lens"), ("tokens", "token_lens")):
            if data in half and lens in half and half[lens].numel():
                half[data] = half[data][:, : int(half[lens].max())].contiguous()
        halves.append(half)
    return halves[0], halves[1]


class FaultRecovery:
    """The fault handling of a training step, a base of :class:`~omnisparse.train.trainer.Trainer`: it
    works on the trainer's ``model``, ``optimizer``, ``loss_module``, ``train_step``, ``step``,
    ``bad_in_row``, ``cost``, ``cfg``, ``dist`` and ``run_dir``."""

    def _skip_batch(self, reason: str) -> None:
        """Drop the current batch (gradients cleared), count it, warn; stop the run after
        ``train.max_bad_steps`` skipped batches in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_in_row += 1
        self.cost["skipped_batches"] = self.cost.get("skipped_batches", 0) + 1
        by = self.cost.setdefault("skipped_by_reason", {})
        by[reason] = by.get(reason, 0) + 1
        what = {"non_finite": "non-finite loss or gradient", "out_of_memory": "out of memory"}.get(reason, reason)
        log.warning("%s at step %d: batch skipped (%d in a row, %d in all)", what, self.step, self.bad_in_row,
                    self.cost["skipped_batches"])
        if self.bad_in_row >= self.cfg.train.max_bad_steps:
            ckpts = ck.list_checkpoints(self.run_dir)
            last = f"last good checkpoint: {ckpts[-1]}" if ckpts else f"no checkpoint was written yet in {self.run_dir}"
            if reason == "out_of_memory":
                raise OutOfMemoryStop(f"{self.bad_in_row} batches in a row ran out of memory, even split in half, at "
                                      f"step {self.step} (lower data.max_duration or data.max_cut_duration); {last}")
            raise NonFiniteLossError(f"{self.bad_in_row} non-finite batches in a row at step {self.step} "
                                     f"(train.max_bad_steps={self.cfg.train.max_bad_steps}); {last}")

    def _free_memory(self) -> None:
        import gc

        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.dist.device.type == "cuda":
            torch.cuda.empty_cache()

    def guarded_step(self, batch: dict | list[dict]) -> dict[str, Any] | None:
        """``train_step`` with out-of-memory recovery: on OOM, memory is freed and the batch is run again
        as two halves whose gradients add up to the whole batch's (the losses are means over utterances);
        if a half runs out of memory too, the batch is skipped (None), as is a step of several batches
        (a supernet schedule's, ``batch`` a list) at once. Under DDP a retry on one rank
        would desynchronise the others: the batch is skipped on no rank and the run stops."""
        if isinstance(self.loss_module, TransducerLoss):  # the pruned loss's warm-up follows optimizer steps
            self.loss_module.step = self.step
        try:
            return self.train_step(batch)
        except Exception as e:  # noqa: BLE001 - only OOM is handled; everything else re-raised
            if not is_out_of_memory(e):
                raise
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        # outside the except block: the traceback (and the autograd graph it holds) is released
        self._free_memory()
        self.cost["oom_batches"] = self.cost.get("oom_batches", 0) + 1
        n = len(batch["ids"]) if isinstance(batch, dict) else 0  # a step of several batches is not split
        if self.dist.world_size > 1:
            raise OutOfMemoryStop(f"out of memory at step {self.step} under DDP ({reason}); a batch cannot be retried "
                                  "on one rank: lower data.max_duration")
        if n >= 2:
            log.warning("out of memory at step %d on a batch of %d utterances (%s): retrying it as two halves",
                        self.step, n, reason)
            try:
                metrics = self._step_in_halves(batch)
                self.cost["oom_split_batches"] = self.cost.get("oom_split_batches", 0) + 1
                return metrics
            except Exception as e:  # noqa: BLE001
                if not is_out_of_memory(e):
                    raise
            self._free_memory()
        self._skip_batch("out_of_memory")
        return None

    @torch.no_grad()
    def _scale_grads(self, factor: float) -> None:
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(factor)

    def _step_in_halves(self, batch: dict) -> dict[str, Any]:
        a, b = split_batch(batch)
        na, nb = len(a["ids"]), len(b["ids"])
        ma = self.train_step(a)
        if not math.isfinite(ma["loss"]):
            return ma
        self._scale_grads(na / nb)  # grads: na/nb * g_a, then + g_b, then * nb/N = (na g_a + nb g_b) / N
        mb = self.train_step(b)
        if not math.isfinite(mb["loss"]):
            return mb
        self._scale_grads(nb / (na + nb))
        merged = {k: (na * v + nb * mb[k]) / (na + nb) for k, v in ma.items()
                  if isinstance(v, float) and isinstance(mb.get(k), float)}
        return {**ma, **merged}

    def _log_fault_summary(self) -> None:
        """One line at the end of a run: what was skipped or retried (nothing is dropped silently)."""
        if not self.dist.is_main:
            return
        parts = []
        utts = self.cost.get("skipped_utterances") or {}
        if utts:
            parts.append(f"{sum(utts.values())} utterances skipped ({', '.join(f'{k} {v}' for k, v in sorted(utts.items()))})")
        by = self.cost.get("skipped_by_reason") or {}
        if by:
            parts.append(f"{sum(by.values())} batches skipped ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})")
        if self.cost.get("oom_split_batches"):
            parts.append(f"{self.cost['oom_split_batches']} batches retried in halves after running out of memory")
        if parts:
            log.warning("run summary: %s", "; ".join(parts))
        else:
            log.info("run summary: no utterance or batch skipped")
