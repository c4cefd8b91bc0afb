"""Audio without transcripts, for self-supervised pre-training (``omnisparse pretrain``).

Two sources, both lhotse CutSets batched by the usual samplers (:mod:`omnisparse.data.batching`):

* a corpus's splits (stored fbank; transcripts ignored): ``omnisparse.data.splits.load_split_cuts``;
* any directory of ``.wav`` / ``.flac`` files (:func:`audio_dir_cuts`, recursive): fbank computed per
  batch; unreadable files are skipped with a counted warning; recordings longer than
  ``max_duration`` are cut into windows of at most that length instead of being dropped; audio is
  mixed to mono and resampled to 16 kHz when needed.

A batch is ``{"feats" (B, T, 80) float32 normalised, zero-padded; "feat_lens" (B,) int64 frames of
10 ms; "ids" list[str]}``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, Recording, RecordingSet

from omnisparse.data.augment import Augmenter, cut_rng
from omnisparse.data.batching import load_checked, pad_sequences
from omnisparse.data.features import NUM_MEL_BINS, FeatureNormalizer, fbank
from omnisparse.data.validate import SAMPLE_RATE

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def audio_dir_cuts(audio_dir: str | Path, max_duration: float = 20.0, min_duration: float = 0.5
                   ) -> tuple[CutSet, Counter]:
    """Cuts of every wav/flac under ``audio_dir`` (sorted by path) and the counts of what was skipped
    (``unreadable``, ``too_short``). Files are probed (header only) here; decoding errors at batch
    time are counted by :class:`UnlabelledDataset`."""
    root = Path(audio_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"pretrain.audio_dir {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {root}")
    skipped: Counter = Counter()
    recs = []
    for p in files:
        rid = str(p.relative_to(root)).replace("/", "__")
        try:
            rec = Recording.from_file(p, recording_id=rid)
            if rec.num_samples <= 0:
                raise ValueError("no samples")
        except Exception as e:  # any unreadable file: skip it, count it
            skipped["unreadable"] += 1
            log.warning("skipping %s: unreadable audio (%s: %s)", p, type(e).__name__, e)
            continue
        recs.append(rec)
    if not recs:
        raise ValueError(f"none of the {len(files)} audio files under {root} is readable")
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs))
    cuts = cuts.cut_into_windows(duration=max_duration).to_eager() if max_duration > 0 else cuts.to_eager()
    n = len(cuts)
    cuts = cuts.filter(lambda c: c.duration >= min_duration).to_eager()
    if len(cuts) < n:
        skipped["too_short"] += n - len(cuts)
    if skipped:
        log.warning("audio_dir %s: %d files, skipped %s", root, len(files), dict(skipped))
    if len(cuts) == 0:
        raise ValueError(f"no usable audio under {root} (skipped: {dict(skipped)})")
    return cuts, skipped


def cut_audio(cut) -> np.ndarray:
    """``(N,)`` float32 samples of a cut's audio, mixed to mono and resampled to 16 kHz if needed."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    audio = np.asarray(cut.load_audio(), dtype=np.float32)
    return audio.mean(0) if audio.ndim == 2 else audio


def cut_fbank(cut, augmenter: Augmenter | None = None, rng: np.random.Generator | None = None) -> torch.Tensor:
    """``(T, 80)`` fbank of a cut's audio (:func:`cut_audio`), augmented first when ``augmenter`` is given."""
    audio = cut_audio(cut)
    if augmenter is not None:
        audio = augmenter(audio, rng, cut_id=cut.id)
    return fbank(audio, SAMPLE_RATE)


def audio_stats(cuts: CutSet, max_cuts: int = 500) -> dict:
    """Per-bin mean/std (``global_stats.json`` format) over the fbank of the first ``max_cuts`` cuts."""
    total = np.zeros(NUM_MEL_BINS)
    total_sq = np.zeros(NUM_MEL_BINS)
    n = used = 0
    for cut in cuts:
        if used >= max_cuts:
            break
        try:
            f = cut_fbank(cut).double().numpy()
        except Exception as e:
            log.warning("stats: skipping %s (%s: %s)", cut.id, type(e).__name__, e)
            continue
        total += f.sum(0)
        total_sq += (f ** 2).sum(0)
        n += f.shape[0]
        used += 1
    if n == 0:
        raise ValueError("no readable audio to compute feature statistics from")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-8))
    return {"mean": mean.tolist(), "std": std.tolist(), "frames": int(n), "cuts": int(used)}


class UnlabelledDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch) to padded normalised fbank; supervisions are ignored. Stored features
    are used when the cut has them (unless ``on_the_fly``), else fbank of the audio; with an
    ``augmenter``, from epoch ``augment_start_epoch`` on, fbank of the augmented audio (keyed by
    ``(seed, epoch, cut id)``, as for labelled training). Unloadable or
    empty/non-finite utterances are dropped with a counted warning (``self.skipped``)."""

    def __init__(self, normalizer: FeatureNormalizer, on_the_fly: bool = False, augmenter: Augmenter | None = None,
                 seed: int = 0, augment_start_epoch: int = 0):
        self.normalizer = normalizer
        self.on_the_fly = on_the_fly
        self.augmenter = augmenter
        self.seed = seed
        self.augment_start_epoch = augment_start_epoch
        self.epoch = 0
        self.skipped: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """The epoch that keys augmentation (as :meth:`AsrDataset.set_epoch`)."""
        self.epoch = epoch

    def _load(self, cut) -> torch.Tensor:
        if self.augmenter is not None and self.epoch >= self.augment_start_epoch:
            return cut_fbank(cut, self.augmenter, cut_rng(self.seed, self.epoch, cut.id))
        if not self.on_the_fly and cut.has_features:
            return torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32))
        return cut_fbank(cut)

    def __getitem__(self, cuts: CutSet) -> dict:
        feats, ids = [], []
        for cut in cuts:
            f = load_checked(self._load, cut, self.skipped)
            if f is None:
                continue
            feats.append(self.normalizer(f))
            ids.append(cut.id)
        if not feats:
            return {"feats": torch.zeros(0, 0, NUM_MEL_BINS), "feat_lens": torch.zeros(0, dtype=torch.int64), "ids": []}
        x, x_lens = pad_sequences(feats)
        return {"feats": x, "feat_lens": x_lens, "ids": ids}
