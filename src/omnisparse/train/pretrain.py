"""wav2vec 2.0 self-supervised pre-training of the RNN-T encoder (``omnisparse pretrain``), supernet-style.

Each optimizer step, on one batch of audio without transcripts (supernet training during
wav2vec 2.0 pre-training, as in Liu et al., SLT 2022):

1. one span mask over the encoder frames (:func:`compute_mask_spans`, from a generator seeded by
   (seed, step, rank): deterministic, resumable, different per DDP rank like the data);
2. with ``pretrain.supernet`` (default): the dense network in ``full`` attention mode, then the
   network under magnitude masks at ``pretrain.sparsity`` (s*, every encoder gene; granularity and block
   from the ``sparsity`` section; rankings refreshed from the current weights once per step,
   :class:`MaskBank`) in ``stream`` mode; each forward +
   backward, gradients accumulate, both paths share the quantizer (fed by the unmasked, un-pruned
   subsampled features), the mask embedding and the projections. Without ``supernet``: the dense
   network alone in ``train.mode``. Dropout is on in both paths (each is a model that gets deployed);
3. one clipped AdamW step on the sum (the :class:`Trainer` machinery: schedule, clipping, skipping
   non-finite steps, checkpoints, exact resume, CSV/TensorBoard logs, DDP, cost accounting).

The Gumbel temperature is ``max(temp_max * temp_decay ** step, temp_min)``. Logged per path
(``dense_*``, ``sparse_*``): ``loss``, ``contrastive``, ``diversity``, ``feat_pen``, ``accuracy``
(masked-frame accuracy: positive above every distractor), ``trivial`` (the share of masked frames
whose distractors all carry the positive's code, correct whatever the encoder does: a collapsing
codebook inflates ``accuracy``), ``hard_accuracy`` (the accuracy of the other frames), ``code_ppl``,
``prob_ppl``; plus
``temperature``, ``sparsity``, ``masked_frames``. Validation (``train.valid_every`` and at the end):
the same losses in eval mode (argmax codes) on the first ``pretrain.valid_batches`` dev batches,
with fixed masks.

Data: the corpus's ``data.train_splits`` (stored fbank, transcripts ignored; no tokenizer needed),
or every wav/flac under ``pretrain.audio_dir`` (fbank on the fly, normalised with the corpus's
global stats, or with stats of that audio - see ``pretrain.audio_stats``; the stats used are stored
in every checkpoint and in ``RUN/global_stats.json``). No SpecAugment: masking is the augmentation.

A checkpoint holds the whole pre-training model (``encoder.*``, ``quantizer.*``, ``project_q.*``,
``final_proj.*``, ``mask_emb``); fine-tuning takes its encoder with ``train.init_encoder_from``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from omnisparse.config import Config
from omnisparse.data.augment import Augmenter, load_or_make_rir_bank
from omnisparse.data.batching import make_loader, make_sampler
from omnisparse.data.features import FeatureNormalizer, compute_global_stats, prepare_features
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.unlabelled import UnlabelledDataset, audio_dir_cuts, audio_stats
from omnisparse.io import checkpoint as ck
from omnisparse.io.atomic import atomic_write_text
from omnisparse.losses.contrastive import compute_mask_spans
from omnisparse.models.wav2vec import PretrainOutput, Wav2VecPretrainModel
from omnisparse.sparsity.masks import MaskBank, MaskSpec, check_sparsity
from omnisparse.sparsity.schedule import cubic_sparsity
from omnisparse.train.trainer import Trainer, train_in_run_dir

log = logging.getLogger(__name__)

AUDIO_STATS = ("auto", "corpus", "audio")
_PARTS = ("loss", "contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity", "prob_perplexity",
          "trivial", "hard_accuracy")
_SHORT = {"feature_penalty": "feat_pen", "code_perplexity": "code_ppl", "prob_perplexity": "prob_ppl"}


def check_pretrain_config(cfg: Config) -> None:
    p = cfg.pretrain
    check_sparsity(p.sparsity, "pretrain.sparsity")
    if p.audio_stats not in AUDIO_STATS:
        raise ValueError(f"pretrain.audio_stats must be one of {AUDIO_STATS}, got {p.audio_stats!r}")
    if p.mask_length < 1 or not 0.0 < p.mask_prob <= 1.0:
        raise ValueError(f"need pretrain.mask_length >= 1 and 0 < pretrain.mask_prob <= 1, got {p.mask_length}, {p.mask_prob}")
    if p.num_negatives < 1 or p.logit_temp <= 0:
        raise ValueError("need pretrain.num_negatives >= 1 and pretrain.logit_temp > 0")
    if p.codevector_dim % p.codebook_groups:
        raise ValueError(f"pretrain.codevector_dim {p.codevector_dim} not divisible by codebook_groups {p.codebook_groups}")


class PretrainTrainer(Trainer):
    """Self-supervised pre-training run in ``cfg.train.out_dir``. Reuses :class:`Trainer`'s loop,
    checkpoints, resume, logging and DDP; builds its own model and data (no tokenizer, no RNN-T)."""

    kind = "pretrain"

    def __init__(self, cfg: Config, resume: bool = True):
        check_pretrain_config(cfg)
        super().__init__(cfg, resume=resume)

    def _prepare(self, cfg: Config) -> None:
        self.train_cuts, self.dev_cuts, self.normalizer, self._on_the_fly = self._load_data()

    def _build_model(self, cfg: Config) -> tuple[torch.nn.Module, torch.nn.Module]:
        model = Wav2VecPretrainModel.from_config(cfg.model, cfg.pretrain).to(self.dist.device)
        return model, model  # the model computes its own contrastive loss

    def _build_data(self, cfg: Config) -> None:
        augmenter = None
        if cfg.augment.enabled:  # the RIR bank is simulated once by rank 0, then read by every rank
            if self.dist.is_main and cfg.augment.reverb_prob > 0:
                load_or_make_rir_bank(cfg.augment, self._rir_cache_dir())
            if self.dist.world_size > 1:
                dist.barrier()
            augmenter = Augmenter.from_config(cfg.augment, self._rir_cache_dir(), self.train_cuts, cfg.train.seed)
        self.dataset = UnlabelledDataset(self.normalizer, self._on_the_fly, augmenter, seed=cfg.train.seed,
                                         augment_start_epoch=cfg.augment.start_epoch)
        self.bank = MaskBank(self.model, MaskSpec(cfg.sparsity.granularity, cfg.sparsity.block))

    def _cost_extra(self) -> dict[str, Any]:
        pc = self.cfg.pretrain
        return {"train_cuts": len(self.train_cuts),
                "data": pc.audio_dir or f"{self.cfg.data.corpus_dir}:{','.join(self.cfg.data.train_splits)}"}

    def _run_record_extra(self) -> dict[str, Any]:
        return {"kind": self.kind}

    # ---------------------------------------------------------------- data
    def _load_data(self):
        """``(train cuts, dev cuts or None, normalizer, on_the_fly)``; rank 0 prepares, the others wait."""
        cfg, pc = self.cfg, self.cfg.pretrain
        layout = CorpusLayout(cfg.data.corpus_dir)
        stats_path = self.run_dir / "global_stats.json"
        if pc.audio_dir:
            train, skipped = audio_dir_cuts(pc.audio_dir, cfg.data.max_cut_duration)
            self.audio_skipped = dict(skipped)
            if self.dist.is_main and not stats_path.exists():  # a resumed run keeps the stats it started with
                use_corpus = pc.audio_stats == "corpus" or (pc.audio_stats == "auto" and layout.global_stats.exists())
                if use_corpus:
                    if not layout.global_stats.exists():
                        raise FileNotFoundError(f"pretrain.audio_stats=corpus but {layout.global_stats} does not exist")
                    stats = json.loads(layout.global_stats.read_text())
                    stats["source"] = str(layout.global_stats)
                else:
                    stats = {**audio_stats(train), "source": f"audio_dir {pc.audio_dir}"}
                atomic_write_text(stats_path, json.dumps(stats))
            self._barrier()
            stats = json.loads(stats_path.read_text())
            log.info("pre-training on %d cuts from %s (normalisation: %s)", len(train), pc.audio_dir, stats.get("source"))
            dev = self._dev_cuts(layout)
            return train, dev, FeatureNormalizer.from_dict(stats), True
        if self.dist.is_main:
            prepare_features(cfg.data.corpus_dir)
            if not layout.global_stats.exists():
                compute_global_stats(cfg.data.corpus_dir, cfg.data.train_splits)
            atomic_write_text(stats_path, layout.global_stats.read_text())
        self._barrier()
        train = load_split_cuts(cfg, cfg.data.train_splits, cfg.data.max_cut_duration)
        return train, self._dev_cuts(layout), FeatureNormalizer.from_file(layout.global_stats), cfg.data.on_the_fly_features

    def _dev_cuts(self, layout: CorpusLayout):
        """The corpus's dev split (stored features) for validation, or None when absent/disabled."""
        d = self.cfg.data
        if self.cfg.pretrain.valid_batches <= 0 or not layout.feature_cuts(d.dev_split).exists():
            return None
        cuts = load_split_cuts(self.cfg, [d.dev_split], d.max_cut_duration)
        return cuts.subset(first=min(d.dev_subset, len(cuts))) if d.dev_subset > 0 else cuts

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            torch.distributed.barrier()

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {**super().checkpoint_state(), "kind": self.kind, "pretrain_config": self.cfg.pretrain.__dict__}

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        extra = {"global_stats.json": json.dumps(self.normalizer.to_dict()).encode()}
        path = ck.save_checkpoint(self.run_dir, self.step, self.model, self.checkpoint_state(), self.optimizer,
                                  extra_files=extra, keep_last=self.cfg.train.keep_last)
        atomic_write_text(self.run_dir / "cost.json", json.dumps(self.cost, indent=2))
        return path

    # ---------------------------------------------------------------- steps
    def current_sparsity(self) -> float:
        """s* of the sparse path at this step (cubic ramp over ``pretrain.sparsity_ramp_steps``)."""
        pc = self.cfg.pretrain
        return cubic_sparsity(self.step, pc.sparsity_ramp_steps, pc.sparsity)

    def paths(self) -> list[tuple[str, str, float]]:
        """``[(name, attention mode, sparsity)]`` of this step's forward/backward passes."""
        if not self.cfg.pretrain.supernet:
            return [("dense", self.cfg.train.mode, 0.0)]
        return [("dense", "full", 0.0), ("sparse", "stream", self.current_sparsity())]

    def _generator(self, tag: str, step: int | None = None) -> torch.Generator:
        key = f"{self.cfg.train.seed}-{self.step if step is None else step}-{self.dist.rank}-{tag}"
        return torch.Generator().manual_seed(zlib.crc32(key.encode()))

    def make_mask(self, feat_lens: torch.Tensor, max_frames: int, generator: torch.Generator) -> torch.Tensor:
        """Span mask ``(B, T')`` over the encoder frames of a batch of ``max_frames`` fbank frames."""
        pc = self.cfg.pretrain
        enc_lens = self.model.encoder_frames(feat_lens.cpu())
        T = int(self.model.encoder_frames(torch.tensor([max_frames]))[0])
        return compute_mask_spans(enc_lens, T, pc.mask_prob, pc.mask_length, generator, pc.min_masks)

    def _set_path_masks(self, s: float) -> None:
        if s > 0:
            self.bank.apply({g: s for g in self.bank.genes})
        else:
            self.bank.clear()

    def train_step(self, batch: dict) -> dict[str, Any]:
        dev = self.dist.device
        self.model.quantizer.set_num_updates(self.step)
        feats, lens = batch["feats"].to(dev), batch["feat_lens"].to(dev)
        mask = self.make_mask(batch["feat_lens"], feats.size(1), self._generator("mask")).to(dev)
        paths = self.paths()
        if any(s > 0 for _, _, s in paths):
            self.bank.refresh()
        metrics: dict[str, Any] = {"temperature": float(self.model.quantizer.temperature),
                                   "masked_frames": float(mask.sum())}
        if self.cfg.pretrain.supernet:
            metrics["sparsity"] = float(paths[-1][2])
        total = 0.0
        try:
            for i, (name, mode, s) in enumerate(paths):
                self._set_path_masks(s)
                last = i == len(paths) - 1
                sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.wrapped.no_sync()
                with sync:
                    out: PretrainOutput = self.wrapped(feats, lens, mask, mode=mode, generator=self._generator(f"neg-{name}"))
                    if not torch.isfinite(out.loss):
                        return {"loss": float("nan")}
                    out.loss.backward()
                self.cost["fwd_bwd_passes"] += 1
                self.cost["path_audio_seconds"] += float(batch["feat_lens"].sum()) * 0.01 * self.dist.world_size
                total += float(out.loss.detach())
                metrics.update(self._path_metrics(name, out))
        finally:
            self.bank.clear()
        metrics["loss"] = total
        return metrics

    @staticmethod
    def _path_metrics(name: str, out: PretrainOutput) -> dict[str, float]:
        return {f"{name}_{_SHORT.get(k, k)}": float(out.loss.detach()) if k == "loss" else float(getattr(out, k))
                for k in _PARTS}

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Eval-mode losses of each path on the first ``pretrain.valid_batches`` dev batches (fixed masks
        and distractors), weighted by masked frames."""
        pc, d = self.cfg.pretrain, self.cfg.data
        if self.dev_cuts is None or pc.valid_batches <= 0:
            return {}
        dev = self.dist.device
        sampler = make_sampler(self.dev_cuts, d.max_duration, shuffle=False)
        batches = []
        for batch in make_loader(UnlabelledDataset(self.normalizer, d.on_the_fly_features), sampler):
            if len(batch["ids"]):
                batches.append(batch)
            if len(batches) >= pc.valid_batches:
                break
        if not batches:
            return {}
        self.model.eval()
        out: dict[str, float] = {}
        try:
            if any(s > 0 for _, _, s in self.paths()):
                self.bank.refresh()
            for name, mode, s in self.paths():
                self._set_path_masks(s)
                sums = {"contrastive": 0.0, "accuracy": 0.0, "code_perplexity": 0.0, "trivial": 0.0}
                hard_right = hard_n = 0.0
                n = 0
                for j, batch in enumerate(batches):
                    mask = self.make_mask(batch["feat_lens"], batch["feats"].size(1), self._generator("valid-mask", j))
                    o = self.model(batch["feats"].to(dev), batch["feat_lens"].to(dev), mask.to(dev), mode=mode,
                                   generator=self._generator("valid-neg", j))
                    for k in sums:
                        sums[k] += float(getattr(o, k)) * o.num_masked
                    n += o.num_masked
                    hard_right += o.hard_accuracy * (1 - o.trivial) * o.num_masked
                    hard_n += (1 - o.trivial) * o.num_masked
                for k, v in sums.items():
                    out[f"dev_{name}_{_SHORT.get(k, k)}"] = v / max(n, 1)
                out[f"dev_{name}_hard_accuracy"] = hard_right / hard_n if hard_n else 0.0
        finally:
            self.bank.clear()
            self.model.train()
        return out

    def _validate_and_log(self) -> None:
        if not self.dist.is_main:
            return
        v = self.validate()
        if v and self.logger is not None:
            self.logger.log(self.step, wall_s=round(self.cost["wall_s"], 2), **v)
        if v:
            log.info("step %d: %s", self.step, ", ".join(f"{k} {x:.4f}" for k, x in v.items()))


def pretrain(cfg: Config, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) wav2vec 2.0 pre-training in ``cfg.train.out_dir``."""
    return train_in_run_dir(PretrainTrainer, cfg, resume, "omnisparse pretrain")
