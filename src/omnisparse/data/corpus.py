"""The offline default corpus: English sentences spoken by several offline synthesisers, shaped by sox.

What is planned (splits, speakers, engines, sentences, every random parameter) lives in
:mod:`omnisparse.data.corpus_plan`; this module renders the plan into audio and manifests.

Each file is written under a temporary name and renamed; an existing valid file is kept, so a killed
build resumes.  Layout: see :mod:`omnisparse.data.layout`.  ``CORPUS/corpus.json`` records the
preset, the seed, a per-split and per-engine summary, the held-out speakers, the engines that could
not run here and the tool versions.  ``CORPUS/.plan.json`` (written first) holds the sha256 of the
plan: a build refuses a directory planned differently, since files are reused by name.  Manifests
hold absolute audio paths: move a corpus by rebuilding it in place (every file is reused, only the
manifests are rewritten).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from tqdm.auto import tqdm

from omnisparse.data.corpus_plan import (
    CORPUS_PRESETS,
    SPLITS,
    UNSEEN_SPLIT,
    CorpusPreset,
    engine_speakers,
    plan_corpus,
    plan_fingerprint,
    resolve_preset,
    speakers_in,
)
from omnisparse.data.engines import available_engines, get_engine
from omnisparse.data.layout import CorpusLayout
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.lock import exclusive_dir

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_RATE",
    "SPLITS",
    "UNSEEN_SPLIT",
    "CorpusPreset",
    "CORPUS_PRESETS",
    "plan_corpus",
    "plan_fingerprint",
    "render",
    "synthesize",
    "audio_is_valid",
    "build_corpus",
    "speakers_in",
    "check_tools",
    "held_out_speakers",
]

SAMPLE_RATE = 16000
NOISE_FLOOR_DBFS = -70.0  # Gaussian floor under every file: several engines emit digital silence
PEAK = 0.97


def held_out_speakers(engines: list[str]) -> list[str]:
    """The speakers of ``engines`` kept for ``test-other``."""
    return [s for e in engines for s in engine_speakers(e)[1]]


# ----------------------------------------------------------------------------------------------
# synthesis (runs in worker processes; must be a pure function of the plan)
# ----------------------------------------------------------------------------------------------

def check_tools() -> dict[str, str]:
    """Path of sox (every engine's output goes through it); a RuntimeError naming scripts/setup.sh
    when it is missing.  The engines are checked one by one by :func:`usable_engines`."""
    path = shutil.which("sox")
    if path is None:
        raise RuntimeError("sox not found on PATH: the default corpus needs sox and at least one speech engine; "
                           "run scripts/setup.sh (it apt-installs sox, espeak-ng, festival, mbrola, pico and fortunes)")
    return {"sox": path}


def usable_engines(preset: CorpusPreset) -> tuple[list[str], dict[str, str]]:
    """``(usable, missing)``: the preset's engines that run here, and why the others do not."""
    reasons = available_engines()
    names = [e for e, _ in preset.engines] + [preset.unseen_engine]
    missing = {e: reasons[e] for e in names if reasons.get(e)}
    usable = [e for e in names if e not in missing]
    if not any(e in usable for e, _ in preset.engines):
        raise RuntimeError("no speech engine of the train splits runs here: "
                           + "; ".join(f"{e}: {r}" for e, r in missing.items()) + " (run scripts/setup.sh)")
    return usable, missing


def _tool_versions(engines: list[str]) -> dict[str, str]:
    out = {}
    try:
        r = subprocess.run(["sox", "--version"], capture_output=True, text=True, timeout=30)
        out["sox"] = (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        out["sox"] = "unknown"
    for e in engines:
        try:
            out[e] = get_engine(e).version()
        except Exception:  # noqa: BLE001 - a version string is informative only
            out[e] = "unknown"
    return out


def _coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white" or n < 4:
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-0.5 if colour == "pink" else -1.0)
    spec[0] = 0.0
    out = np.fft.irfft(spec, n)
    return out / (np.std(out) + 1e-12)


def _active_power(x: np.ndarray, frame: int = 320) -> float:
    """Mean power of the frames within 40 dB of the loudest one (the speech, not the pauses)."""
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x ** 2)) if len(x) else 0.0
    p = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    peak = p.max()
    if peak <= 0:
        return 0.0
    return float(p[p >= peak * 1e-4].mean())


def _trim(x: np.ndarray, pad_start: float, pad_end: float, threshold_db: float = -50.0) -> np.ndarray:
    """Cut leading / trailing near-silence, keeping ``pad_*`` seconds around the speech."""
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak <= 0:
        return x
    above = np.flatnonzero(np.abs(x) >= peak * 10 ** (threshold_db / 20))
    start = max(0, above[0] - int(pad_start * SAMPLE_RATE))
    end = min(len(x), above[-1] + 1 + int(pad_end * SAMPLE_RATE))
    return x[start:end]


def render(plan: dict[str, Any], timeout: float = 120.0) -> np.ndarray:
    """The int16 samples (16 kHz mono) of one planned utterance."""
    x, sr = get_engine(plan["engine"]).synthesize(plan["text"], plan["speaker"], plan["params"])
    if len(x) <= 16:
        raise RuntimeError(f"{plan['engine']} produced no audio")
    # resample first: tempo and reverb are cheaper at 16 kHz than at the engine's rate
    effects = ["channels", "1", "rate", "-h", str(SAMPLE_RATE), "tempo", "-s", f"{plan['tempo']:.3f}"]
    if plan["reverb"]:
        rv = plan["reverb"]
        effects += ["reverb", str(rv["reverberance"]), str(rv["hf_damping"]), str(rv["room_scale"]), "100",
                    str(rv["pre_delay_ms"]), "0", "channels", "1"]
    sox = ["sox", "-R", "-D", "-V1", "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1", "-r", str(sr),
           "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"] + effects
    r = subprocess.run(sox, input=np.asarray(x, dtype="<f4").tobytes(), capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"sox failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()[:300]}")
    x = np.frombuffer(r.stdout, dtype="<f4").astype(np.float64)
    x = _trim(x, plan["pad_start"], plan["pad_end"])
    power = _active_power(x)
    if len(x) < SAMPLE_RATE // 10 or power <= 0:
        raise RuntimeError(f"no speech synthesised ({len(x)} samples)")
    x *= 10 ** (plan["level_dbfs"] / 20) / np.sqrt(power)
    rng = np.random.default_rng(plan["noise_seed"])
    if plan["snr_db"] is not None:
        noise = _coloured_noise(rng, len(x), plan["noise_colour"])
        x = x + noise * np.sqrt(_active_power(x) / 10 ** (plan["snr_db"] / 10))
    peak = np.max(np.abs(x))
    if peak > PEAK:
        x *= PEAK / peak
    x = x + rng.standard_normal(len(x)) * 10 ** (NOISE_FLOOR_DBFS / 20)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def audio_is_valid(path: str | Path) -> int:
    """Number of frames of a complete, readable 16 kHz mono file; 0 when missing or broken."""
    try:
        info = sf.info(str(path))
        if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames <= 0:
            return 0
        data, _ = sf.read(str(path), dtype="int16", always_2d=False)
        return int(len(data)) if len(data) == info.frames else 0
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not there"
        return 0


def _write_flac(path: Path, samples: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.flac")
    try:
        sf.write(str(tmp), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def synthesize(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """Worker: make ``path`` from ``plan`` unless a valid file is already there.

    Returns ``{utt_id, status: done|skipped|failed, num_samples, error}``; one retry on failure. A full
    disk is not a per-utterance failure: it is raised (the build stops; finished files are kept).
    """
    plan, path_str = job
    path = Path(path_str)
    n = audio_is_valid(path)
    if n:
        return {"utt_id": plan["utt_id"], "status": "skipped", "num_samples": n, "error": None}
    error = None
    for _attempt in range(2):
        try:
            samples = render(plan)
            _write_flac(path, samples)
            return {"utt_id": plan["utt_id"], "status": "done", "num_samples": int(len(samples)), "error": None}
        except Exception as e:  # noqa: BLE001 - reported and counted by the parent
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise OSError(e.errno, f"cannot write {path}: {e.strerror}; the corpus build stopped (files "
                                       "written so far are kept and reused when it is run again)") from None
            error = f"{type(e).__name__}: {e}"
    return {"utt_id": plan["utt_id"], "status": "failed", "num_samples": 0, "error": error}


# ----------------------------------------------------------------------------------------------
# manifests
# ----------------------------------------------------------------------------------------------

def _atomic_to_file(manifest: Any, path: Path) -> None:
    """``manifest.to_file`` through a temporary name with the same suffixes, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    try:
        manifest.to_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_manifests(layout: CorpusLayout, split: str, plans: list[dict[str, Any]],
                     ok: set[str]) -> dict[str, Any]:
    recordings, supervisions = [], []
    audio_dir = layout.audio_dir(split).resolve()
    for plan in plans:
        if plan["utt_id"] not in ok:
            continue
        rec = Recording.from_file(audio_dir / f"{plan['utt_id']}.flac", recording_id=plan["utt_id"])
        custom = {"engine": plan["engine"], "source": plan["source"], "params": plan["params"],
                  "tempo": plan["tempo"]}
        if plan["snr_db"] is not None:
            custom.update(snr_db=plan["snr_db"], noise=plan["noise_colour"], reverb=plan["reverb"])
        recordings.append(rec)
        supervisions.append(SupervisionSegment(
            id=plan["utt_id"], recording_id=plan["utt_id"], start=0.0, duration=rec.duration, channel=0,
            text=plan["text"], speaker=plan["speaker"], language="English", custom=custom))
    recs = RecordingSet.from_recordings(recordings)
    sups = SupervisionSet.from_segments(supervisions)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    _atomic_to_file(recs, layout.recordings(split))
    _atomic_to_file(sups, layout.supervisions(split))
    _atomic_to_file(cuts, layout.cuts(split))
    per_engine: dict[str, dict[str, Any]] = defaultdict(lambda: {"utterances": 0, "hours": 0.0, "speakers": set()})
    per_source: dict[str, int] = defaultdict(int)
    for sup in supervisions:
        e = per_engine[sup.custom["engine"]]
        e["utterances"] += 1
        e["hours"] += sup.duration / 3600.0
        e["speakers"].add(sup.speaker)
        per_source[sup.custom["source"]] += 1
    return {
        "utterances": len(recordings),
        "hours": round(sum(r.duration for r in recordings) / 3600.0, 4),
        "speakers": len({s.speaker for s in supervisions}),
        "words": sum(len(s.text.split()) for s in supervisions),
        "engines": {k: {"utterances": v["utterances"], "hours": round(v["hours"], 4), "speakers": len(v["speakers"])}
                    for k, v in sorted(per_engine.items())},
        "sources": dict(sorted(per_source.items())),
    }


# ----------------------------------------------------------------------------------------------
# the build
# ----------------------------------------------------------------------------------------------

PLAN_MARKER = ".plan.json"
_RE_TMP = re.compile(r"^\..*\.tmp\d+\.flac$")


def _clean_temporaries(audio_dir: Path) -> None:
    """Half-written files of an interrupted build (never under a final name)."""
    if audio_dir.is_dir():
        for p in audio_dir.iterdir():
            if _RE_TMP.match(p.name):
                p.unlink(missing_ok=True)


def _claim_directory(out: Path, preset: CorpusPreset, seed: int, plans: dict[str, list[dict[str, Any]]]) -> str:
    """Resuming reuses files by name, which is only right for the same plan: refuse a directory
    that holds (part of) a corpus planned differently (another preset, seed or sentence list)."""
    fingerprint = plan_fingerprint(plans)
    marker = out / PLAN_MARKER
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("plan_sha256") != fingerprint:
            raise ValueError(
                f"{out} holds a corpus built with another plan (preset {old.get('preset')!r}, seed "
                f"{old.get('seed')!r}); asked for preset {preset.name!r}, seed {seed}. Use another "
                "directory or delete this one.")
    elif (out / "audio").is_dir() and any((out / "audio").rglob("*.flac")):
        raise ValueError(f"{out} holds audio of an unknown corpus (no {PLAN_MARKER}); use another directory "
                         "or delete this one")
    else:
        atomic_write_text(marker, json.dumps({"preset": preset.name, "seed": seed, "plan_sha256": fingerprint})
                          + "\n")
    return fingerprint


def _print_summary(summary: dict[str, dict[str, Any]], out: Path, seconds: float) -> None:
    print(f"default corpus at {out} ({seconds:.1f} s)")
    print(f"{'split':>18} {'engine':>9} {'utterances':>10} {'hours':>8} {'speakers':>8} {'failed':>6}")
    for split, s in summary.items():
        print(f"{split:>18} {'all':>9} {s['utterances']:10d} {s['hours']:8.3f} {s['speakers']:8d} {s['failed']:6d}")
        for engine, e in s["engines"].items():
            print(f"{'':>18} {engine:>9} {e['utterances']:10d} {e['hours']:8.3f} {e['speakers']:8d}")


def build_corpus(out_dir: str | Path, preset: str | CorpusPreset = "tiny", seed: int = 0,
                 num_jobs: int | None = None, progress: bool = True,
                 sentences: list[tuple[str, str]] | list[str] | None = None) -> dict[str, Any]:
    """Synthesise (or finish synthesising) the default corpus into ``out_dir``.

    ``preset`` is a name of :data:`CORPUS_PRESETS` or a :class:`CorpusPreset`; ``sentences``
    replaces the preset's sentence sources (tests).  Engines that cannot run here are left out
    (with a warning naming what to install) and the plan is made without them; a split none of whose
    engines runs is left empty.  Returns what is also written to ``corpus.json``: ``{"preset", "seed",
    "splits": {split: {utterances, hours, speakers, words, engines, sources, failed, synthesised,
    reused}}, "held_out_speakers", "engines", "missing_engines", ...}``.  Utterances that fail twice
    are left out of the manifests and counted under ``failed``. ``out_dir`` is held meanwhile
    (:func:`omnisparse.io.lock.exclusive_dir`): a second build into it is refused.
    """
    with ExitStack() as held:
        return _build_corpus(out_dir, preset, seed, num_jobs, progress, sentences, held)


def _build_corpus(out_dir: str | Path, preset: str | CorpusPreset, seed: int, num_jobs: int | None, progress: bool,
                  sentences: list[tuple[str, str]] | list[str] | None, held: ExitStack) -> dict[str, Any]:
    t0 = time.time()
    preset = resolve_preset(preset)
    check_tools()
    usable, missing = usable_engines(preset)
    for engine, reason in missing.items():
        log.warning("engine %s left out of the corpus: %s", engine, reason)
    out = Path(out_dir)
    held.enter_context(exclusive_dir(out, "omnisparse data build"))  # before planning (slow) and any write
    layout = CorpusLayout(out)
    num_jobs = max(1, int(num_jobs or os.cpu_count() or 1))

    plans = plan_corpus(preset, seed, sentences=sentences, usable_engines=usable)
    fingerprint = _claim_directory(out, preset, seed, plans)
    t_plan = time.time()
    jobs: list[tuple[dict[str, Any], str]] = []
    for split in SPLITS:
        if not plans[split]:
            continue
        audio_dir = layout.audio_dir(split)
        audio_dir.mkdir(parents=True, exist_ok=True)
        _clean_temporaries(audio_dir)
        jobs += [(p, str(audio_dir / f"{p['utt_id']}.flac")) for p in plans[split]]

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc=f"synthesising {preset.name}", unit="utt", disable=not progress)
    try:
        if num_jobs == 1:
            for job in jobs:
                r = synthesize(job)
                results[r["utt_id"]] = r
                bar.update(1)
        else:
            pool = ProcessPoolExecutor(max_workers=num_jobs)
            try:
                for r in pool.map(synthesize, jobs, chunksize=4):
                    results[r["utt_id"]] = r
                    bar.update(1)
            except BaseException:
                # Ctrl-C or a broken worker: drop what has not started; finished files are complete
                # (atomic renames) and are reused by the next build.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    finally:
        bar.close()
    synth_seconds = time.time() - t_plan

    failed = [r for r in results.values() if r["status"] == "failed"]
    for r in failed[:10]:
        log.warning("synthesis of %s failed twice: %s", r["utt_id"], r["error"])
    if failed:
        log.warning("%d of %d utterances failed and are left out of the manifests", len(failed), len(jobs))

    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        if not plans[split]:
            if preset.counts()[split]:
                log.warning("split %s left empty: none of its engines runs here", split)
            continue
        ok = {p["utt_id"] for p in plans[split] if results[p["utt_id"]]["status"] != "failed"}
        if not ok:
            example = next(r["error"] for r in failed if r["utt_id"].startswith(split + "-"))
            raise RuntimeError(f"every utterance of {split} failed to synthesise, e.g. {example}")
        s = _write_manifests(layout, split, plans[split], ok)
        statuses = [results[p["utt_id"]]["status"] for p in plans[split]]
        s.update(failed=statuses.count("failed"), synthesised=statuses.count("done"),
                 reused=statuses.count("skipped"))
        splits[split] = s

    train_engines = [e for e, _ in preset.engines if e in usable]
    summary = {
        "preset": asdict(preset),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "splits": splits,
        "plan_sha256": fingerprint,
        "engines": {"train": train_engines,
                    "unseen": preset.unseen_engine if preset.unseen_engine in usable else None},
        "missing_engines": missing,
        "held_out_speakers": held_out_speakers(train_engines),
        "failed_utterances": sorted(r["utt_id"] for r in failed),
        "tools": _tool_versions(usable),
        "seconds": round(time.time() - t0, 2),
        "plan_seconds": round(t_plan - t0, 2),
        "synthesis_seconds": round(synth_seconds, 2),
        "utterances_per_second": round(len(jobs) / max(synth_seconds, 1e-9), 2),
        "num_jobs": num_jobs,
    }
    atomic_write_text(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    _print_summary(splits, out, summary["seconds"])
    return summary
