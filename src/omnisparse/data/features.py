"""Log-mel front end: 80-dim lhotse Fbank (25 ms window, 10 ms shift), stored once or on the fly.

``prepare_features`` validates each split's cuts (bad audio is skipped and reported), computes and
stores fbank with lhotse (lilcom-compressed chunky storage) and writes ``fbank/cuts_<split>.jsonl.gz``.
``global_stats.json`` holds the per-dimension mean and std over the train splits; batches are
normalised with it (``FeatureNormalizer``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, load_manifest_lazy
from tqdm.auto import tqdm

from omnisparse.data.layout import CorpusLayout
from omnisparse.data.manifest import read_cuts
from omnisparse.data.validate import SAMPLE_RATE, ValidationReport, validate_cuts
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.lock import exclusive_dir

log = logging.getLogger(__name__)

NUM_MEL_BINS = 80
PREPARE_COMMAND = "omnisparse data prepare"  # how a lock taken to prepare a corpus names its holder
MIN_SAMPLES = 140  # shortest input lhotse's Fbank (25 ms window, snip_edges=False) turns into a frame


def make_extractor() -> Fbank:
    # dither=0: the corpus already has a noise floor; features must be deterministic.
    return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS, sampling_rate=SAMPLE_RATE, dither=0.0))


def fbank(samples: np.ndarray, sampling_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``samples`` float mono (N,) at 16 kHz -> (T, 80) float32 log-mel, T = ~N/160.

    ValueError (never a crash deeper down, never non-finite output) for multi-channel arrays, fewer
    than ``MIN_SAMPLES`` samples, NaN / infinite samples, or amplitudes so large the power overflows."""
    if sampling_rate != SAMPLE_RATE:
        raise ValueError(f"fbank expects {SAMPLE_RATE} Hz audio, got {sampling_rate} (resample first)")
    with np.errstate(over="ignore"):  # float64 samples beyond float32 become inf: refused just below
        x = np.asarray(samples, dtype=np.float32)
    if x.ndim > 1 and sum(d > 1 for d in x.shape) > 1:
        raise ValueError(f"fbank expects mono samples, got an array of shape {x.shape} (downmix first)")
    x = x.reshape(1, -1)
    if x.shape[1] < MIN_SAMPLES:
        raise ValueError(f"audio too short for one fbank frame: {x.shape[1]} samples (need {MIN_SAMPLES})")
    if not np.isfinite(x).all():
        raise ValueError("audio holds NaN or infinite samples")
    feats = make_extractor().extract(x, SAMPLE_RATE)
    if not np.isfinite(feats).all():
        raise ValueError("fbank of this audio is not finite (samples of absurd amplitude?)")
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


@contextlib.contextmanager
def _single_threaded_workers(active: bool):
    """Worker processes each get one torch thread: N workers x N threads oversubscribe the cores
    (lhotse warns that this can stall)."""
    if not active:
        yield
        return
    saved_env, saved_threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env
        torch.set_num_threads(saved_threads)


def _atomic_cuts_write(cuts: CutSet, path: Path) -> None:
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    cuts.to_file(tmp)
    os.replace(tmp, path)


def _count_undecodable(cuts: CutSet, stored: CutSet, report: ValidationReport, split: str) -> None:
    """Cuts lhotse dropped while computing features (a file whose header reads but whose samples do
    not decode: lhotse suppresses the error and leaves the cut out): counted as ``unreadable``."""
    kept = set(stored.ids)
    lost = [c for c in cuts if c.id not in kept]
    names = [c.recording.sources[0].source if c.has_recording and c.recording.sources else c.id for c in lost]
    for name in names:
        report.add("unreadable", f"{name} (samples do not decode)")
    report.kept -= len(lost)
    if lost:
        msg = (f"{split}: {len(lost)} more utterances skipped, their audio does not decode: "
               f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
        log.warning(msg)


def prepare_features(corpus_dir: str | Path, splits: list[str] | None = None, num_jobs: int | None = None,
                     max_duration: float = float("inf"), overwrite: bool = False) -> dict[str, ValidationReport]:
    """Validate cuts and store fbank for each split (skips splits already done unless ``overwrite``).
    When there is something to compute, ``corpus_dir`` is held meanwhile
    (:func:`omnisparse.io.lock.exclusive_dir`): a second writer (``data build``, another ``data prepare``
    or a training preparing the same corpus) is refused with one line; readers of a prepared corpus
    take no lock."""
    layout = CorpusLayout(corpus_dir)
    splits = splits or layout.splits()
    if not splits:
        raise FileNotFoundError(f"no cuts manifests under {layout.manifests}; build or prepare a corpus first")
    todo = [split for split in splits if overwrite or not layout.feature_cuts(split).exists()]
    for split in sorted(set(splits) - set(todo)):
        log.info("features for %s already stored: %s", split, layout.feature_cuts(split))
    if not todo:
        return {}
    with exclusive_dir(layout.root, PREPARE_COMMAND):
        return _store_features(layout, todo, num_jobs or max(1, os.cpu_count() or 1), max_duration, overwrite)


def _store_features(layout: CorpusLayout, splits: list[str], num_jobs: int, max_duration: float,
                    overwrite: bool) -> dict[str, ValidationReport]:
    layout.fbank.mkdir(parents=True, exist_ok=True)
    reports: dict[str, ValidationReport] = {}
    for split in splits:
        out = layout.feature_cuts(split)
        if out.exists() and not overwrite:  # stored by a writer that held the lock before this one
            continue
        src = layout.cuts(split)
        if not src.exists():
            raise FileNotFoundError(f"missing manifest {src}")
        parsed, problems = read_cuts(src)
        cuts, report = validate_cuts(CutSet.from_cuts(parsed), max_duration=max_duration, name=split)
        for reason, what in problems:  # lines of the manifest that are no usable cut at all
            report.total += 1
            report.add(reason, what)
        reports[split] = report
        if len(cuts) == 0:
            print(report.summary(split))
            raise ValueError(f"split {split!r} has no usable utterances (see the report above)")
        storage = layout.feature_storage(split)
        if storage.exists():  # a partial store from an interrupted run: recompute it whole
            shutil.rmtree(storage)
        jobs = num_jobs if len(cuts) > 50 else 1
        with _single_threaded_workers(jobs > 1):
            with_feats = cuts.compute_and_store_features(
                extractor=make_extractor(), storage_path=storage, num_jobs=jobs,
                storage_type=LilcomChunkyWriter, progress_bar=True,
            )
        with_feats = with_feats.to_eager()
        _count_undecodable(cuts, with_feats, report, split)
        print(report.summary(split))  # final: includes the files that did not decode
        if len(with_feats) == 0:
            raise ValueError(f"split {split!r} has no decodable utterances (see the report above)")
        _atomic_cuts_write(with_feats, out)
        atomic_write_text(layout.fbank / f"validation_{split}.json", json.dumps(report.to_dict(), indent=2))
    return reports


def compute_global_stats(corpus_dir: str | Path, splits: list[str], max_cuts: int = 2000) -> dict:
    """Mean / std per mel bin over (up to ``max_cuts``) train cuts with stored features."""
    layout = CorpusLayout(corpus_dir)
    total = np.zeros(NUM_MEL_BINS, dtype=np.float64)
    total_sq = np.zeros(NUM_MEL_BINS, dtype=np.float64)
    n = 0
    seen = 0
    for split in splits:
        for cut in tqdm(load_manifest_lazy(layout.feature_cuts(split)), desc=f"stats {split}", leave=False):
            if seen >= max_cuts:
                break
            f = cut.load_features().astype(np.float64)
            total += f.sum(0)
            total_sq += (f**2).sum(0)
            n += f.shape[0]
            seen += 1
    if n == 0:
        raise ValueError(f"no features found for global statistics in splits {splits}")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 1e-8))
    stats = {"mean": mean.tolist(), "std": std.tolist(), "frames": int(n), "cuts": int(seen)}
    atomic_write_text(layout.global_stats, json.dumps(stats))
    return stats


class FeatureNormalizer:
    """(x - mean) / std per mel bin, from ``global_stats.json``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.float()
        self.std = std.float()

    @classmethod
    def from_file(cls, path: str | Path) -> "FeatureNormalizer":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"global feature statistics not found: {path} (run `omnisparse data features`)")
        d = json.loads(path.read_text())
        return cls(torch.tensor(d["mean"]), torch.tensor(d["std"]))

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureNormalizer":
        return cls(torch.tensor(d["mean"]), torch.tensor(d["std"]))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.mean) / self.std
