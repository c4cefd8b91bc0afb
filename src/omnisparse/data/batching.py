"""Batches for training and evaluation: lhotse duration-bucketed samplers + an ASR dataset.

A batch is a dict::

    feats       (B, T, 80) float32, globally normalised, zero-padded
    feat_lens   (B,) int64, frames (10 ms each)
    tokens      (B, U) int64, BPE ids, padded with 0
    token_lens  (B,) int64
    texts       list[str], normalised transcripts
    ids         list[str], cut ids

With an :class:`~omnisparse.data.augment.Augmenter`, each utterance's audio is augmented and its fbank
computed on the fly (stored features unused); the augmentation of a cut is keyed by (seed, epoch, cut id),
the epoch set with ``set_epoch`` before each epoch's DataLoader is made.

Utterances whose features or audio cannot be loaded are dropped from their batch with a counted
warning (``AsrDataset.skipped``) rather than crashing an epoch.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from omnisparse.data.augment import Augmenter, cut_rng
from omnisparse.data.features import FeatureNormalizer, fbank
from omnisparse.data.text import normalize_text
from omnisparse.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_fraction: float = 0.1


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """Zero random frequency bands and time spans of normalised fbank (B, T, F), in place."""
    B, T, F = feats.shape
    for b in range(B):
        n = int(lens[b])
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=generator))
            f0 = int(torch.randint(0, max(1, F - w), (1,), generator=generator))
            feats[b, :n, f0:f0 + w] = 0.0
        max_w = int(cfg.time_mask_fraction * n)
        for _ in range(cfg.time_masks):
            if max_w < 1:
                break
            w = int(torch.randint(0, max_w + 1, (1,), generator=generator))
            t0 = int(torch.randint(0, max(1, n - w), (1,), generator=generator))
            feats[b, t0:t0 + w, :] = 0.0
    return feats


def pad_sequences(seqs: list[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    out = seqs[0].new_full((len(seqs), int(lens.max()), *seqs[0].shape[1:]), value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lens


def load_checked(load, cut, skipped: Counter) -> torch.Tensor | None:
    """``load(cut)`` -> features ``(T, F)``, or None when the audio or features cannot be loaded or are
    empty / non-finite: the utterance is skipped (logged, counted in ``skipped`` under ``unloadable`` or
    ``bad_features``), not the run."""
    try:
        f = load(cut)
    except Exception as e:  # corrupt/missing audio or features
        skipped["unloadable"] += 1
        log.warning("skipping %s: cannot load (%s: %s)", cut.id, type(e).__name__, e)
        return None
    if f.shape[0] == 0 or not torch.isfinite(f).all():
        skipped["bad_features"] += 1
        log.warning("skipping %s: empty or non-finite features", cut.id)
        return None
    return f


class AsrDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch, from a lhotse sampler) to padded tensors."""

    def __init__(self, tokenizer: Tokenizer, normalizer: FeatureNormalizer, on_the_fly: bool = False,
                 spec_augment: SpecAugmentConfig | None = None, seed: int = 0, augmenter: Augmenter | None = None,
                 augment_start_epoch: int = 0, spec_augment_start_epoch: int = 0):
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.on_the_fly = on_the_fly
        self.spec_augment = spec_augment
        self.seed = seed
        self.augmenter = augmenter
        self.augment_start_epoch = augment_start_epoch
        self.spec_augment_start_epoch = spec_augment_start_epoch
        self.epoch = 0
        self.skipped: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """The epoch that keys augmentation. DataLoader workers copy the dataset when an iterator starts
        (the loaders are not persistent), so setting it before each epoch's loader reaches them too."""
        self.epoch = epoch

    def _load(self, cut) -> torch.Tensor:
        if self.augmenter is not None and self.epoch >= self.augment_start_epoch:
            audio = self.augmenter(cut.load_audio()[0], cut_rng(self.seed, self.epoch, cut.id), cut_id=cut.id)
            return fbank(audio, cut.sampling_rate)
        if not self.on_the_fly and cut.has_features:
            return torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32))
        return fbank(cut.load_audio()[0], cut.sampling_rate)

    def __getitem__(self, cuts: CutSet) -> dict:
        feats, texts, ids = [], [], []
        for cut in cuts:
            text = normalize_text(" ".join(s.text or "" for s in cut.supervisions))
            if not text:
                self.skipped["empty_text"] += 1
                log.warning("skipping %s: empty transcript", cut.id)
                continue
            f = load_checked(self._load, cut, self.skipped)
            if f is None:
                continue
            feats.append(self.normalizer(f))
            texts.append(text)
            ids.append(cut.id)
        if not feats:
            return {"feats": torch.zeros(0, 0, 80), "feat_lens": torch.zeros(0, dtype=torch.int64),
                    "tokens": torch.zeros(0, 0, dtype=torch.int64), "token_lens": torch.zeros(0, dtype=torch.int64),
                    "texts": [], "ids": []}
        x, x_lens = pad_sequences(feats)
        if self.spec_augment is not None and self.epoch >= self.spec_augment_start_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(",".join(ids).encode()))
            spec_augment(x, x_lens, self.spec_augment, g)
        toks = [torch.tensor(t, dtype=torch.int64) for t in self.tokenizer.encode_batch(texts)]
        y, y_lens = pad_sequences(toks, 0)
        return {"feats": x, "feat_lens": x_lens, "tokens": y, "token_lens": y_lens, "texts": texts, "ids": ids}


def make_sampler(cuts: CutSet, max_duration: float, shuffle: bool, num_buckets: int = 10, seed: int = 0,
                 world_size: int | None = None, rank: int | None = None, drop_last: bool = False):
    """Duration-bucketed sampler for training; a plain sequential one for evaluation.

    Each yielded CutSet holds about ``max_duration`` seconds of audio: lhotse checks the budget
    before adding a cut, so a batch can overshoot by less than one utterance. Samplers are resumable through ``state_dict()`` / ``load_state_dict()``.
    """
    if shuffle:
        with warnings.catch_warnings():
            # lhotse suggests lazy CutSets for memory; ours are read eagerly on purpose (filtered by duration and
            # counted first, and a split's manifest is a few MB), and bucketing is what we use the sampler for
            warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read")
            return DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=True, num_buckets=num_buckets,
                                           seed=seed, world_size=world_size, rank=rank, drop_last=drop_last)
    return SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False, world_size=world_size, rank=rank)


def make_loader(dataset: AsrDataset, sampler, num_workers: int = 0) -> torch.utils.data.DataLoader:
    # An own generator: DataLoader would otherwise draw its base seed from the global RNG each time
    # an iterator starts, which would make a resumed run's dropout differ from an uninterrupted one.
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(0))
