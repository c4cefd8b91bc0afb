"""Dual-mode training via self-pruning (``omnisparse train --dual-mode``; Liu et al., "Learning a
Dual-Mode Speech Recognition Model via Self-Pruning", SLT 2022): ONE weight set that is both a dense full-context (server) model and a sparse streaming
(on-device) model carved out of it by magnitude masks.

Each optimizer step, on one batch:

1. mask rankings are refreshed once from the current weights (:meth:`MaskBank.refresh`);
2. paths, each forward + backward, gradients accumulating into the same tensors:

   a. ``full``: dense weights, ``full`` attention mode (padding mask only), dropout on;
      loss x ``dual.full_weight``;
   b. ``stream``: every gene at the current streaming sparsity ``s`` (uniform), ``stream`` mode (chunk
      mask), dropout off (on with ``dual.stream_dropout``); loss x ``dual.stream_weight``;
   c. ``extra_1 .. extra_k`` (``k = dual.extra_sparsities``, Omni-sparsity style): random
      configurations, each gene drawn uniformly from the grid values ``<= s``, ``stream`` mode, dropout
      off; loss x ``dual.stream_weight``. Skipped while ``s == 0`` (they would all be the dense stream);
   d. with ``dual.distill``: the full path's joiner lattice log-posteriors ``(B, T', U+1, V)``
      (detached) teach every streaming path (:class:`TransducerLoss` ``teacher_log_probs``, weight
      ``dual.distill_weight``; the KD term is part of that path's loss and so also weighted);

3. one clipped optimizer step on the sum. Under DDP, ``no_sync`` on all paths but the last, so
   gradients are all-reduced once per step.

``s`` ramps cubically from 0 to ``s* = dual.sparsity`` over ``dual.ramp_steps`` steps after the start
of sparse training (then holds; not snapped to the grid, masks exist at any sparsity). The extra
configurations of a step come from ``Random(seed, step)``: every DDP rank trains the same paths and a
resumed run trains what the uninterrupted one would.

Starting point: a dense checkpoint (``sparsity.init_from``), ``sparsity.dense_steps`` warm-up steps in
the same run (during which ``s = 0``: a dense full path + a dense stream path), or - unlike the supernet
and the pruning baseline - from scratch with neither: the dense full path trains every weight, and
the ramp keeps the streaming path (nearly) dense while the weights are still random, with rankings
recomputed every step from the weights as they train. ``train.init_encoder_from`` (e.g. a wav2vec 2.0
pre-training run) combines with any of them. ``train.mode`` is ignored: the modes are fixed.

Convolution in ``full`` mode: the encoder's depthwise conv module (and the subsampling) stays CAUSAL
in both modes (:mod:`omnisparse.models.encoder`). The two modes share every weight, and the conv
kernel's taps mean the same time offsets in both; the only differences between the two models are
the attention mask and the weight masks. Full-context right context comes from attention, where every
frame of every block sees the whole utterance.

Validation (``train.valid_every`` and at the end): dev WER of (dense, full) -> ``dev_wer_full`` (also
``dev_wer``, what ``omnisparse eval RUN`` reports by default) and of (uniform s*, stream) ->
``dev_wer_stream``, in ``metrics.csv`` and TensorBoard. Checkpoints record ``trained_modes: ["full",
"stream"]`` (``eval``/``transcribe`` accept both; the default is ``full``) and ``stream_sparsity``
(s*, also in the saved config's ``dual`` section), which ``omnisparse export RUN --mode stream`` uses.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from omnisparse.config import Config
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.sparsity.masks import check_sparsity
from omnisparse.sparsity.schedule import cubic_sparsity
from omnisparse.train.sparse_base import SparseTrainerBase, dropout_disabled

log = logging.getLogger(__name__)

TRAINED_MODES = ("full", "stream")  # order matters: the first is the default decoding mode


def check_dual_config(cfg: Config) -> None:
    """ValueError (one line) for a ``dual`` section that cannot train."""
    d, grid = cfg.dual, cfg.sparsity.grid
    top = max(grid) if grid else 0.0
    if not 0.0 < d.sparsity <= top + 1e-9:
        raise ValueError(f"dual.sparsity (s*) must be in (0, {top:g}], the range of sparsity.grid {list(grid)}; "
                         f"got {d.sparsity:g}")
    check_sparsity(d.sparsity, "dual.sparsity")
    if not (d.full_weight > 0 and d.stream_weight > 0):
        raise ValueError(f"dual.full_weight and dual.stream_weight must be > 0, got {d.full_weight:g}, "
                         f"{d.stream_weight:g} (dual mode trains both paths)")
    if d.extra_sparsities < 0 or d.ramp_steps < 0:
        raise ValueError(f"dual.extra_sparsities and dual.ramp_steps must be >= 0, got {d.extra_sparsities}, "
                         f"{d.ramp_steps}")
    if d.distill and d.distill_weight < 0:
        raise ValueError(f"dual.distill_weight must be >= 0, got {d.distill_weight:g}")


@dataclass(frozen=True)
class DualPath:
    """One forward + backward of a dual-mode step: ``name`` (``full`` | ``stream`` | ``extra_<i>``),
    attention ``mode``, sub-network ``config`` ``{gene: sparsity}``, loss ``weight``, ``dropout`` on/off."""

    name: str
    mode: str
    config: dict[str, float]
    weight: float
    dropout: bool


class DualModeTrainer(SparseTrainerBase):
    """Dense full-context + sparse streaming training of one weight set (see the module docstring)."""

    kind = "dual"
    needs_dense_start = False

    def __init__(self, cfg: Config, resume: bool = True):
        check_dual_config(cfg)  # before data and model are set up
        super().__init__(cfg, resume=resume)
        sc, d = cfg.sparsity, cfg.dual
        if self.step == 0 and not sc.init_from and sc.dense_steps <= 0:
            log.info("dual mode from scratch%s: streaming sparsity ramps 0 -> %g over %d steps",
                     f" (encoder from {cfg.train.init_encoder_from})" if cfg.train.init_encoder_from else "",
                     d.sparsity, d.ramp_steps)
            if d.ramp_steps == 0 and not cfg.train.init_encoder_from:
                log.warning("dual.ramp_steps=0 from random weights: the streaming path starts at s*=%g with "
                            "magnitude masks of random weights", d.sparsity)

    # ---------------------------------------------------------------- schedule
    def current_sparsity(self) -> float:
        """Streaming-path sparsity ``s`` at this step: 0 before ``sparse_start``, then the cubic ramp to s*."""
        d = self.cfg.dual
        if self.step < self.sparse_start:
            return 0.0
        return cubic_sparsity(self.step - self.sparse_start, d.ramp_steps, d.sparsity)

    def step_paths(self) -> list[DualPath]:
        """``[full, stream, extra_1 .. extra_k]`` of the current step (identical on every DDP rank)."""
        d = self.cfg.dual
        s = self.current_sparsity()
        dense = self.space.sample_max()
        paths = [DualPath("full", "full", dense, d.full_weight, True),
                 DualPath("stream", "stream", self.space.uniform(s) if s > 0 else dense, d.stream_weight,
                          d.stream_dropout)]
        if s > 0 and d.extra_sparsities > 0:
            rng = random.Random(f"{self.cfg.train.seed}-{self.step}")
            paths += [DualPath(f"extra_{i + 1}", "stream", self.space.sample_random(rng, s), d.stream_weight, False)
                      for i in range(d.extra_sparsities)]
        return paths

    # ---------------------------------------------------------------- step
    def train_step(self, batch: dict) -> dict[str, Any]:
        d = self.cfg.dual
        paths = self.step_paths()
        self.record_step_paths([[p.mode, p.config] for p in paths])
        self.bank.refresh()
        metrics: dict[str, Any] = {"stream_sparsity": self.current_sparsity()}
        total, teacher = 0.0, None
        try:
            for i, p in enumerate(paths):
                self.bank.apply(p.config)
                last = i == len(paths) - 1
                sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.wrapped.no_sync()
                drop = contextlib.nullcontext() if p.dropout else dropout_disabled(self.model)
                kd = {}
                if d.distill:
                    kd = {"return_log_probs": True} if i == 0 else \
                        {"teacher_log_probs": teacher, "distill_weight": d.distill_weight}
                with sync, drop:
                    out = self.backward_path(batch, p.mode, weight=p.weight, **kd)
                if out is None:
                    return {"loss": float("nan")}
                loss = float(out.loss.detach())
                if i == 0:
                    teacher = out.log_probs
                    metrics.update(loss_full=loss, rnnt=out.rnnt, ctc=out.ctc)
                elif i == 1:
                    metrics.update(loss_stream=loss, rnnt_stream=out.rnnt)
                else:
                    metrics[f"loss_{p.name}"] = loss
                if i > 0 and d.distill:
                    metrics["distill" if i == 1 else f"distill_{p.name}"] = out.distill
                total += p.weight * loss
        finally:
            self.bank.clear()
        metrics["loss"] = total
        return metrics

    # ---------------------------------------------------------------- validation / checkpoints
    def validation_paths(self) -> dict[str, tuple[str, dict[str, float]]]:
        """Name -> (mode, config) validated: ``full`` (dense, full) and ``stream`` (uniform s*, stream)."""
        return {"full": ("full", self.space.sample_max()),
                "stream": ("stream", self.space.uniform(self.cfg.dual.sparsity))}

    def validate(self) -> dict[str, float]:
        out = {}
        try:
            self.bank.refresh()
            for name, (mode, config) in self.validation_paths().items():
                self.bank.apply(config)
                res = evaluate_cuts(self.model, self.dev_cuts, self.tokenizer, self.normalizer, mode=mode,
                                    decode=self.cfg.decode, device=self.dist.device,
                                    on_the_fly=self.cfg.data.on_the_fly_features)
                out[f"dev_wer_{name}"] = res["wer"]
        finally:
            self.restore_masks()
        log.info("step %d: dev WER (dense, full) %.4f, (s*=%g, stream) %.4f", self.step, out["dev_wer_full"],
                 self.cfg.dual.sparsity, out["dev_wer_stream"])
        return {"dev_wer": out["dev_wer_full"], **out}

    def checkpoint_state(self) -> dict:
        return {**super().checkpoint_state(), "trained_modes": list(TRAINED_MODES),
                "stream_sparsity": self.cfg.dual.sparsity}
