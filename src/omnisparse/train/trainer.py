"""Dense RNN-T training: AdamW + warm-up/decay, clipping, validation WER, exact resume, DDP.

``run_trainer(Trainer(cfg))`` runs (or resumes) the run in ``cfg.train.out_dir``
(:func:`omnisparse.train.registry.train` picks the trainer ``omnisparse train`` runs); the commands
go through :func:`train_in_run_dir`, which holds the run directory meanwhile (one writer per run
directory, :mod:`omnisparse.io.lock`). Launch several processes with
``torchrun --nproc_per_node=N -m omnisparse.cli train ...``: gloo on CPU, nccl on GPU
(:mod:`omnisparse.train.distributed`); every rank reads a different share of each epoch (lhotse
sampler ``world_size``/``rank``), gradients are all-reduced by DDP, rank 0 writes checkpoints and logs.

Exact resume: the checkpoint stores the optimizer, the step, the epoch and the number of batches
already drawn from it, and every RNG state; resuming re-creates the epoch's sampler and skips
those batches, so an interrupted run ends with the same weights as an uninterrupted one on CPU.

Faults (each counted in ``cost.json``, with a warning, and summarised at the end of the run):

* a batch with a NaN / infinite loss or gradient is skipped, one that runs out of memory retried as
  two halves, and too many bad batches in a row stop the run (:mod:`omnisparse.train.recovery`);
* a checkpoint that cannot be written (disk full) stops the run with :class:`CheckpointWriteError`,
  the previous checkpoint intact; newer checkpoints that fail their checksum on resume are moved
  aside (``ckpt-N.corrupt``) with a warning and the run resumes from the newest valid one;
* utterances that cannot be used (too long, empty transcript, unloadable audio/features) are
  skipped with a warning and counted in ``skipped_utterances``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from omnisparse.config import Config, TrainConfig
from omnisparse.data.augment import Augmenter, load_or_make_rir_bank
from omnisparse.data.batching import AsrDataset, SpecAugmentConfig, make_loader, make_sampler
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.prepare import prepare_training_data
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.subset import labelled_subset
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.io import checkpoint as ck
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.lock import exclusive_dir
from omnisparse.losses.transducer import LossOutput, TransducerLoss
from omnisparse.models.transducer import Transducer
from omnisparse.train.distributed import check_ranks_agree, launch_rank, rank_facts, setup_distributed
from omnisparse.train.metrics import MetricLogger, write_run_record
from omnisparse.train.recovery import FaultRecovery
from omnisparse.train.weights_init import init_encoder_from, init_model_from

log = logging.getLogger(__name__)

__all__ = ["Trainer", "run_trainer", "train_in_run_dir"]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based): linear warm-up, then decay."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return 1.0
    if cfg.decay == "noam":
        return math.sqrt(max(1, cfg.warmup_steps) / max(step + 1, 1))
    if cfg.decay == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        t = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr decay {cfg.decay!r} (cosine | noam | constant)")


def trainable_parameters(model: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: all of them, or (``train.trainable``) those whose name
    starts with one of ``prefixes``; the others are frozen (``requires_grad=False``). ValueError when a
    prefix names no parameter (a typo would otherwise train nothing of what was meant)."""
    if not prefixes:
        return list(model.parameters())
    named = dict(model.named_parameters())
    unused = [p for p in prefixes if not any(n.startswith(p) for n in named)]
    if unused:
        tops = sorted({n.split(".")[0] + "." for n in named})
        raise ValueError(f"train.trainable: {unused} name no parameter of this model (its modules: {tops})")
    keep = [p for n, p in named.items() if n.startswith(tuple(prefixes))]
    for n, p in named.items():
        p.requires_grad_(n.startswith(tuple(prefixes)))
    log.info("training %d of %d parameters (train.trainable=%s)", sum(p.numel() for p in keep),
             sum(p.numel() for p in named.values()), prefixes)
    return keep


class Trainer(FaultRecovery):
    """One dense training run. Subclasses (supernet, pruning) override ``train_step``."""

    def _start_run(self, cfg: Config) -> None:
        """What every trainer does first: threads, the process group, the run directory (main rank)."""
        self.cfg = cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.dist = setup_distributed(cfg.train.device)
        check_ranks_agree(self.dist, lambda: rank_facts(cfg))
        self.run_dir = Path(cfg.train.out_dir)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def __init__(self, cfg: Config, resume: bool = True):
        """The steps every run takes, in this order (subclasses fill in the hooks): the run directory
        and process group, :meth:`_prepare` (what is read before the model), the model and its loss
        (:meth:`_build_model`, after seeding torch with ``train.seed``), DDP and AdamW,
        :meth:`_build_data`, the counters, resume (or refusal to overwrite checkpoints), the optional
        encoder initialisation, and the run's ``config.json`` / ``run.json``."""
        self._start_run(cfg)
        tc = cfg.train
        self._prepare(cfg)
        torch.manual_seed(tc.seed)
        self.model, self.loss_module = self._build_model(cfg)
        params = trainable_parameters(self.model, tc.trainable)
        self.wrapped = self.loss_module
        if self.dist.world_size > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas),
                                           weight_decay=tc.weight_decay)
        self._build_data(cfg)

        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.bad_in_row = 0
        # audio_seconds: data drawn (once per step); path_audio_seconds: audio through forward+backward
        # passes (x the sub-networks of a supernet step)
        self.cost = {"optimizer_steps": 0, "fwd_bwd_passes": 0, "audio_seconds": 0.0, "path_audio_seconds": 0.0, "wall_s": 0.0,
                     "skipped_batches": 0, "device": str(self.dist.device), "world_size": self.dist.world_size,
                     **self._cost_extra()}
        self.best_wer: float | None = None
        self.logger = MetricLogger(self.run_dir) if self.dist.is_main else None
        if resume:
            self._maybe_resume()
        elif self.dist.is_main and ck.list_checkpoints(self.run_dir):
            raise FileExistsError(f"{self.run_dir} already holds checkpoints; resume or choose another train.out_dir")
        if self.step == 0 and tc.init_from:  # a fresh run (not a resume) from another run's weights
            info = init_model_from(self.model, tc.init_from, cfg.model, self.tokenizer, "train.init_from")
            self.cost["init_from"], self.cost["init_cost"] = info["path"], info["cost"]
        if self.step == 0 and tc.init_encoder_from:  # a fresh run (not a resume) from another run's encoder
            self.cost["init_encoder_from"] = init_encoder_from(self.model, tc.init_encoder_from, cfg.model)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
            write_run_record(self.run_dir, cfg.to_dict(), {"params": self.model.num_params(), **self._run_record_extra()})

    # ---------------------------------------------------------------- setup hooks
    def _prepare(self, cfg: Config) -> None:
        """Before the model: features, tokenizer and RIRs on disk (rank 0; the others wait), the
        tokenizer and normaliser loaded, the vocabulary written into ``cfg.model``."""
        if self.dist.is_main:
            prepare_training_data(cfg.data.corpus_dir, cfg.data.train_splits, cfg.data.vocab_size)
            if cfg.augment.enabled and cfg.augment.reverb_prob > 0:  # simulated once here, read by every rank
                load_or_make_rir_bank(cfg.augment, self._rir_cache_dir())
        if self.dist.world_size > 1:
            dist.barrier()
        layout = CorpusLayout(cfg.data.corpus_dir)
        self.tokenizer = Tokenizer(layout.bpe_model(cfg.data.vocab_size))
        self.normalizer = FeatureNormalizer.from_file(layout.global_stats)
        cfg.model.vocab_size = self.tokenizer.vocab_size
        cfg.model.blank_id = self.tokenizer.blank_id

    def _build_model(self, cfg: Config) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(model, loss module)`` on the run's device; the loss module is what DDP wraps."""
        model = Transducer.from_config(cfg.model).to(self.dist.device)
        autocast = torch.bfloat16 if cfg.train.autocast == "bf16" else None
        return model, TransducerLoss(model, getattr(torch, cfg.train.loss_dtype), autocast)

    def _build_data(self, cfg: Config) -> None:
        """Train cuts, the training dataset (SpecAugment, augmentation) and the dev cuts."""
        tc = cfg.train
        self.too_long: dict = {}
        self.train_cuts = load_split_cuts(cfg, cfg.data.train_splits, cfg.data.max_cut_duration, report=self.too_long)
        if cfg.data.train_hours > 0:
            self.train_cuts = labelled_subset(self.train_cuts, cfg.data.train_hours, cfg.data.train_subset_seed)
            self._labelled_hours = sum(c.duration for c in self.train_cuts) / 3600
            log.info("training on a %.2f h labelled subset (%d utterances)", self._labelled_hours, len(self.train_cuts))
        spec = SpecAugmentConfig(cfg.data.freq_masks, cfg.data.freq_mask_width, cfg.data.time_masks,
                                 cfg.data.time_mask_fraction) if cfg.data.spec_augment else None
        augmenter = Augmenter.from_config(cfg.augment, self._rir_cache_dir(), self.train_cuts, tc.seed) \
            if cfg.augment.enabled else None
        self.dataset = AsrDataset(self.tokenizer, self.normalizer, cfg.data.on_the_fly_features, spec, seed=tc.seed,
                                  augmenter=augmenter, augment_start_epoch=cfg.augment.start_epoch,
                                  spec_augment_start_epoch=cfg.data.spec_augment_start_epoch)
        self.dev_cuts = load_split_cuts(cfg, [cfg.data.dev_split])
        if cfg.data.dev_subset > 0:
            self.dev_cuts = self.dev_cuts.subset(first=min(cfg.data.dev_subset, len(self.dev_cuts)))

    def _cost_extra(self) -> dict[str, Any]:
        """Run-specific entries of ``cost.json`` besides the counters (the labelled subset's hours)."""
        hours = getattr(self, "_labelled_hours", None)
        return {} if hours is None else {"labelled_hours": round(hours, 4)}

    def _run_record_extra(self) -> dict[str, Any]:
        """Run-specific entries of ``run.json`` besides the parameter count."""
        return {}

    def _rir_cache_dir(self) -> Path:
        return Path(self.cfg.augment.rir_cache_dir or Path(self.cfg.data.corpus_dir) / "augment")

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        self.cost["skipped_utterances"] = self.skipped_utterances()
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch, "rng": ck.rng_state(),
                "config": self.cfg.to_dict(), "cost": self.cost, "best_wer": self.best_wer,
                "model_config": self.cfg.model.__dict__}

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        layout = CorpusLayout(self.cfg.data.corpus_dir)
        extra = {"tokenizer.model": self.tokenizer.model_bytes(), "global_stats.json": layout.global_stats.read_bytes()}
        path = ck.save_checkpoint(self.run_dir, self.step, self.model, self.checkpoint_state(), self.optimizer,
                                  extra_files=extra, keep_last=self.cfg.train.keep_last)
        self._write_cost()
        return path

    def _write_cost(self) -> None:
        """cost.json beside the checkpoints (a copy of what each checkpoint holds: failure only warns)."""
        try:
            atomic_write_text(self.run_dir / "cost.json", json.dumps(self.cost, indent=2))
        except OSError as e:
            log.warning("could not write %s (%s); the checkpoint holds the same numbers", self.run_dir / "cost.json", e)

    def skipped_utterances(self) -> dict[str, int]:
        """Utterances left out so far, by reason: too long (when the run started) and those the dataset
        dropped from its batches (cumulative across resumes)."""
        out = dict(getattr(self, "too_long", {}) or {})
        for k, v in getattr(getattr(self, "dataset", None), "skipped", {}).items():
            out[k] = out.get(k, 0) + int(v)
        return out

    def _set_aside_newer(self, path: Path | None) -> None:
        """Checkpoints newer than ``path`` (all, for None) failed verification: rename them
        ``ckpt-N.corrupt`` so that keep_last pruning never counts them and the step is written afresh."""
        for newer in ck.list_checkpoints(self.run_dir):
            if path is None or newer.name > path.name:
                aside = newer.with_name(newer.name + ".corrupt")
                if aside.exists():
                    shutil.rmtree(aside, ignore_errors=True)
                os.replace(newer, aside)
                log.warning("moved the corrupt checkpoint %s aside to %s; %s", newer, aside.name,
                            f"resuming from {path.name}" if path else "no valid checkpoint: starting from step 0")

    def _maybe_resume(self) -> None:
        found = ck.latest_checkpoint(self.run_dir)
        if found is None:
            if self.dist.is_main:
                self._set_aside_newer(None)
            return
        path, state = found
        if self.dist.is_main:
            self._set_aside_newer(path)
        saved_model = state.get("model_config", {})
        diff = {k: (v, self.cfg.model.__dict__.get(k)) for k, v in saved_model.items() if self.cfg.model.__dict__.get(k) != v}
        if diff:
            raise ck.CheckpointError(f"{path} was trained with another model config; differing keys "
                                     f"(checkpoint, requested): {diff}. Use another train.out_dir or the same config.")
        ck.load_weights(self.model, path)
        ck.load_optimizer(self.optimizer, path, state)
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.batches_in_epoch = state["batches_in_epoch"]
        self.cost = state["cost"]
        dataset = getattr(self, "dataset", None)
        if dataset is not None and hasattr(dataset, "skipped"):  # continue the counts of the interrupted run
            saved = dict(self.cost.get("skipped_utterances", {}))
            for k, v in getattr(self, "too_long", {}).items():
                saved[k] = saved.get(k, 0) - v
            dataset.skipped.clear()
            dataset.skipped.update({k: v for k, v in saved.items() if v > 0})
        self.best_wer = state.get("best_wer")
        ck.set_rng_state(state["rng"])
        if self.logger is not None:
            self.logger.truncate_after(self.step)
        log.info("resumed from %s (step %d, epoch %d)", path, self.step, self.epoch)

    # ---------------------------------------------------------------- data
    def batches(self) -> Iterator[dict]:
        """Endless stream of batches, resuming inside an epoch where the checkpoint left off."""
        d = self.cfg.data
        while True:
            sampler = make_sampler(self.train_cuts, d.max_duration, shuffle=True, num_buckets=d.num_buckets,
                                   seed=self.cfg.train.seed, world_size=self.dist.world_size, rank=self.dist.rank,
                                   drop_last=self.dist.world_size > 1)
            sampler.set_epoch(self.epoch)
            if hasattr(self.dataset, "set_epoch"):  # augmentation is keyed by the epoch
                self.dataset.set_epoch(self.epoch)
            skip = self.batches_in_epoch
            if skip:
                it = iter(sampler)
                for _ in range(skip):
                    next(it, None)
                sampler = _Remaining(it)
            for batch in make_loader(self.dataset, sampler, d.num_workers):
                self.batches_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batches_in_epoch = 0

    def batches_per_step(self) -> int:
        """Batches the coming optimizer step consumes on this rank (a supernet schedule may draw one per path)."""
        return 1

    def _draw_step_batches(self, batches: Iterator[dict]) -> dict | list[dict]:
        """The next non-empty batch, or a list of ``batches_per_step()`` of them when that is > 1."""
        n = self.batches_per_step()
        out: list[dict] = []
        while len(out) < n:
            b = next(batches)
            if len(b["ids"]):
                out.append(b)
        return out[0] if n == 1 else out

    # ---------------------------------------------------------------- steps
    def backward_path(self, batch: dict, mode: str, weight: float = 1.0, **loss_kwargs) -> LossOutput | None:
        """Forward + backward of the network as currently masked; gradients of ``weight * loss``
        accumulate into ``.grad`` (``out.loss`` stays unweighted).

        Returns None (and skips the backward) when the loss is not finite. ``loss_kwargs`` go to
        :class:`TransducerLoss` (distillation)."""
        dev = self.dist.device
        out = self.wrapped(batch["feats"].to(dev), batch["feat_lens"].to(dev), batch["tokens"].to(dev),
                           batch["token_lens"].to(dev), mode=mode, **loss_kwargs)
        if not torch.isfinite(out.loss):
            return None
        (out.loss if weight == 1.0 else out.loss * weight).backward()
        self.cost["fwd_bwd_passes"] += 1
        self.cost["path_audio_seconds"] = self.cost.get("path_audio_seconds", 0.0) + \
            float(batch["feat_lens"].sum()) * 0.01 * self.dist.world_size
        return out

    def forward_backward(self, batch: dict, mode: str) -> tuple[float, dict]:
        out = self.backward_path(batch, mode)
        if out is None:
            return float("nan"), {}
        return float(out.loss.detach()), {"rnnt": out.rnnt, "ctc": out.ctc}

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimizer step on ``batch`` (a list of batches when :meth:`batches_per_step` > 1); returns
        metrics (``loss`` NaN = skipped)."""
        loss, parts = self.forward_backward(batch, self.cfg.train.mode)
        return {"loss": loss, **parts}

    def _apply_step(self, metrics: dict) -> bool:
        tc = self.cfg.train
        grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in self.model.parameters())
        if not math.isfinite(metrics["loss"]) or not grads_ok:
            self._skip_batch("non_finite")
            return False
        self.bad_in_row = 0
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip))
        lr = tc.lr * lr_factor(self.step, tc)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        metrics["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def validate(self) -> dict[str, float]:
        res = evaluate_cuts(self.model, self.dev_cuts, self.tokenizer, self.normalizer, mode=self.cfg.train.mode,
                            decode=self.cfg.decode, device=self.dist.device, on_the_fly=self.cfg.data.on_the_fly_features)
        return {"dev_wer": res["wer"]}

    def run(self) -> dict[str, Any]:
        tc = self.cfg.train
        self.model.train()
        start_wall = time.time()
        wall_before = self.cost["wall_s"]
        pbar = tqdm(total=tc.max_steps, initial=self.step, desc="train", disable=not self.dist.is_main, dynamic_ncols=True)
        batches = self.batches()
        stopped_by_time = False
        try:
            while self.step < tc.max_steps:
                if tc.max_wall_s > 0 and wall_before + time.time() - start_wall >= tc.max_wall_s:
                    stopped_by_time = True
                    break
                batch = self._draw_step_batches(batches)
                t0 = time.time()
                metrics = self.guarded_step(batch)
                if metrics is None or not self._apply_step(metrics):
                    continue
                self.step += 1
                audio_s = sum(float(b["feat_lens"].sum()) for b in _as_list(batch)) * 0.01 * self.dist.world_size
                self.cost["optimizer_steps"] = self.step
                self.cost["audio_seconds"] += audio_s
                self.cost["wall_s"] = wall_before + time.time() - start_wall
                metrics["audio_s_per_s"] = audio_s / max(1e-9, time.time() - t0)
                pbar.update(1)
                pbar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics.get('lr', 0):.2e}")
                if self.logger is not None and (self.step % tc.log_every == 0 or self.step == 1):
                    self.logger.log(self.step, epoch=self.epoch, wall_s=round(self.cost["wall_s"], 2),
                                    **{k: v for k, v in metrics.items() if isinstance(v, float)})
                if tc.valid_every > 0 and self.step % tc.valid_every == 0:
                    self._validate_and_log()
                if self.step % tc.ckpt_every == 0:
                    self.save()
        finally:  # a fault stops the run: the error line must not land on the progress bar's line
            pbar.close()
        self.cost["wall_s"] = wall_before + time.time() - start_wall
        if not stopped_by_time and (tc.valid_every <= 0 or self.step % tc.valid_every != 0):
            self._validate_and_log()
        if self.dist.world_size > 1:
            self.cost["ddp_replicas_identical"] = self.replicas_identical()
        path = self.save()
        if self.logger is not None:
            self.logger.close()
        self._log_fault_summary()
        return {"step": self.step, "checkpoint": str(path) if path else None, "cost": self.cost,
                "best_wer": self.best_wer, "stopped_by_time": stopped_by_time}

    def replicas_identical(self) -> bool:
        """True when every DDP rank holds bitwise the same parameters (checked by all-gather)."""
        flat = torch.cat([p.detach().reshape(-1).cpu().double() for p in self.model.parameters()])
        digest = torch.tensor([float(flat.sum()), float((flat * torch.arange(flat.numel(), dtype=torch.float64)).sum())])
        gathered = [torch.zeros_like(digest) for _ in range(self.dist.world_size)]
        dist.all_gather(gathered, digest.to(self.dist.device) if self.dist.device.type == "cuda" else digest)
        return all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)

    def _validate_and_log(self) -> None:
        if not self.dist.is_main:
            return
        v = self.validate()
        self.model.train()
        self.best_wer = v["dev_wer"] if self.best_wer is None else min(self.best_wer, v["dev_wer"])
        if self.logger is not None:
            self.logger.log(self.step, wall_s=round(self.cost["wall_s"], 2), **v)
        log.info("step %d: dev WER %.4f", self.step, v["dev_wer"])


def _as_list(batch: dict | list[dict]) -> list[dict]:
    return batch if isinstance(batch, list) else [batch]


class _Remaining:
    """Wraps a partly consumed sampler iterator so DataLoader can iterate the rest."""

    def __init__(self, it: Iterator):
        self.it = it

    def __iter__(self):
        return self.it


def run_trainer(trainer: Trainer) -> dict[str, Any]:
    """Run ``trainer`` to the end, tearing down the process group afterwards."""
    try:
        return trainer.run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_in_run_dir(trainer_cls: type[Trainer], cfg: Config, resume: bool, command: str) -> dict[str, Any]:
    """What the training commands run: ``trainer_cls(cfg, resume=resume)`` built and run to the end
    while the run directory is held as ``command`` (:func:`omnisparse.io.lock.exclusive_dir`); a
    second command on the same run directory meanwhile is refused
    (:class:`~omnisparse.errors.DirectoryInUseError`) before it writes anything. Only the main rank
    holds it: the other ranks of a ``torchrun`` launch write nothing into the run directory."""
    lock = exclusive_dir(cfg.train.out_dir, command) if launch_rank() == 0 else nullcontext()
    with lock:
        return run_trainer(trainer_cls(cfg, resume=resume))
