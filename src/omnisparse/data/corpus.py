"""The offline default corpus: fortunes sentences spoken by espeak-ng voices, shaped by sox.

Splits (the shape of LibriSpeech's), with disjoint sentence sets:

* ``train``       seen speakers, mild effects (gain, tempo); sentences may repeat inside train
                  (with other voices) when the preset asks for more utterances than sentences;
* ``dev``         seen speakers, mild effects;
* ``test-clean``  seen speakers, mild effects;
* ``test-other``  held-out speakers (accent + variant combinations never used elsewhere), with
                  reverb and noise at 5-20 dB SNR.

A speaker is an accent + variant combination such as ``en-us+f3``.  Every random choice of
utterance ``i`` of split ``s`` comes from ``numpy.random.default_rng([seed, s, i])`` (the sentence
carving from ``default_rng([seed, 1000])``), so a seed gives byte-identical audio whatever the number
of processes and however often a build is interrupted and resumed.  Each file is written under a
temporary name and renamed; an existing valid file is kept.

Layout: see :mod:`omnisparse.data.layout`.  ``CORPUS/corpus.json`` records the preset, the seed,
a per-split summary, the held-out speakers and the tool versions.  ``CORPUS/.plan.json`` (written
first) holds the sha256 of the plan: a build refuses a directory planned differently, since files
are reused by name.  Manifests hold absolute audio paths: move a corpus by rebuilding it in place
(every file is reused, only the manifests are rewritten).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import soundfile as sf

from omnisparse.data.layout import CorpusLayout
from omnisparse.data.text import DEFAULT_FORTUNES_DIR, fortune_sentences
from omnisparse.utils.provenance import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_RATE",
    "SPLITS",
    "ACCENTS",
    "VARIANTS",
    "CorpusPreset",
    "CORPUS_PRESETS",
    "all_speakers",
    "held_out_speakers",
    "seen_speakers",
    "carve_sentences",
    "plan_corpus",
    "plan_fingerprint",
    "render",
    "synthesize",
    "audio_is_valid",
    "build_corpus",
    "speakers_in",
    "check_tools",
]

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test-clean", "test-other")

# English espeak-ng voices (``espeak-ng --voices=en``).  ``en`` is British English (gmw/en);
# the name ``en-gb`` is avoided on purpose: it resolves to an MBROLA voice entry and ignores the
# variant, so every ``en-gb+VARIANT`` sounds the same.
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
# Voice variants (``espeak-ng --voices=variant``): intelligible male / female / Klatt voices.
# Left out: whisper, croak, the breathy f5, novelty voices (robots, "Demonic", ...).
VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt")

RATE_WPM = (130, 200)  # espeak-ng -s, inclusive
PITCH = (30, 70)  # espeak-ng -p, inclusive
TEMPO = (0.9, 1.1)  # sox tempo factor
LEVEL_DBFS = (-30.0, -20.0)  # RMS of the active speech
SNR_DB = (5.0, 20.0)  # test-other only
NOISE_FLOOR_DBFS = -70.0  # Gaussian floor under every file: espeak-ng emits digital silence
EDGE_PAD_S = (0.1, 0.3)  # silence kept before / after the speech
PEAK = 0.97


@dataclass(frozen=True)
class CorpusPreset:
    name: str
    train_utts: int
    dev_utts: int
    test_clean_utts: int
    test_other_utts: int

    def counts(self) -> dict[str, int]:
        return {"train": self.train_utts, "dev": self.dev_utts, "test-clean": self.test_clean_utts,
                "test-other": self.test_other_utts}


CORPUS_PRESETS: dict[str, CorpusPreset] = {
    # tests: seconds on 2 cores
    "tiny": CorpusPreset("tiny", train_utts=200, dev_utts=40, test_clean_utts=30, test_other_utts=30),
    # CPU demo: ~5 h of train audio
    "small": CorpusPreset("small", train_utts=5600, dev_utts=500, test_clean_utts=1000, test_other_utts=1000),
    # a GPU: ~50 h of train audio (train sentences repeat, spoken by other voices)
    "medium": CorpusPreset("medium", train_utts=56000, dev_utts=1000, test_clean_utts=2000, test_other_utts=2000),
}


# ----------------------------------------------------------------------------------------------
# speakers
# ----------------------------------------------------------------------------------------------

def all_speakers() -> list[str]:
    return [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]


def held_out_speakers() -> list[str]:
    """The accent + variant combinations used only by ``test-other`` (20%, independent of the seed).

    Accent ``a`` holds out variants ``2a`` and ``2a + 1`` (mod the number of variants): every accent
    and every variant is still heard in train, only the combination is new.
    """
    out = []
    for a, accent in enumerate(ACCENTS):
        for k in (2 * a, 2 * a + 1):
            out.append(f"{accent}+{VARIANTS[k % len(VARIANTS)]}")
    return out


def seen_speakers() -> list[str]:
    held = set(held_out_speakers())
    return [s for s in all_speakers() if s not in held]


def speakers_in(cuts: Iterable[Any]) -> set[str]:
    """Speakers of all supervisions of ``cuts`` (a lhotse CutSet or any iterable of cuts)."""
    return {s.speaker for c in cuts for s in c.supervisions}


# ----------------------------------------------------------------------------------------------
# planning: every random choice, made in the parent from (seed, split, index)
# ----------------------------------------------------------------------------------------------

def _resolve_preset(preset: str | CorpusPreset) -> CorpusPreset:
    if isinstance(preset, CorpusPreset):
        return preset
    try:
        return CORPUS_PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown corpus preset {preset!r}; choose one of {sorted(CORPUS_PRESETS)}") from None


def carve_sentences(sentences: list[str], preset: CorpusPreset, seed: int) -> dict[str, list[str]]:
    """Disjoint sentence pools per split: dev, test-clean and test-other take exactly as many
    sentences as they have utterances, train gets the rest."""
    counts = preset.counts()
    need = counts["dev"] + counts["test-clean"] + counts["test-other"]
    if need + min(counts["train"], 1) > len(sentences):
        raise ValueError(f"preset {preset.name!r} needs {need} evaluation sentences plus train sentences, "
                         f"only {len(sentences)} available")
    order = np.random.default_rng([seed, 1000]).permutation(len(sentences))
    shuffled = [sentences[j] for j in order]
    pools: dict[str, list[str]] = {}
    start = 0
    for split in ("dev", "test-clean", "test-other"):
        pools[split] = shuffled[start:start + counts[split]]
        start += counts[split]
    pools["train"] = shuffled[start:]
    return pools


def _train_sentences(pool: list[str], seed: int, n: int) -> list[str]:
    """The ``n`` train texts: the pool in order, then (when ``n`` exceeds it) further passes, each in
    its own seeded order."""
    if n and not pool:
        raise ValueError("no sentences left for train")
    texts = list(pool[:n])
    epoch = 1
    while len(texts) < n:
        perm = np.random.default_rng([seed, 1001, epoch]).permutation(len(pool))
        texts += [pool[j] for j in perm[: n - len(texts)]]
        epoch += 1
    return texts


def _utt_plan(seed: int, split: str, i: int, text: str, speakers: list[str]) -> dict[str, Any]:
    s = SPLITS.index(split)
    rng = np.random.default_rng([seed, s, i])
    speaker = speakers[int(rng.integers(len(speakers)))]
    plan: dict[str, Any] = {
        "utt_id": f"{split}-{i:06d}",
        "split": split,
        "text": text,
        "speaker": speaker,
        "rate": int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
        "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
        "tempo": round(float(rng.uniform(*TEMPO)), 3),
        "level_dbfs": round(float(rng.uniform(*LEVEL_DBFS)), 2),
        "pad_start": round(float(rng.uniform(*EDGE_PAD_S)), 3),
        "pad_end": round(float(rng.uniform(*EDGE_PAD_S)), 3),
        "noise_seed": [seed, s, i, 1],
        "snr_db": None,
        "reverb": None,
        "noise_colour": None,
    }
    if split == "test-other":
        plan["snr_db"] = round(float(rng.uniform(*SNR_DB)), 2)
        plan["noise_colour"] = ["white", "pink", "brown"][int(rng.integers(3))]
        plan["reverb"] = {
            "reverberance": int(rng.integers(30, 81)),
            "hf_damping": int(rng.integers(20, 81)),
            "room_scale": int(rng.integers(40, 101)),
            "pre_delay_ms": int(rng.integers(0, 31)),
        }
    return plan


def plan_corpus(preset: str | CorpusPreset = "tiny", seed: int = 0,
                sentences: list[str] | None = None,
                fortunes_dir: str | Path = DEFAULT_FORTUNES_DIR) -> dict[str, list[dict[str, Any]]]:
    """What will be synthesised: per split, one dict per utterance (text, speaker, parameters)."""
    preset = _resolve_preset(preset)
    if sentences is None:
        sentences = fortune_sentences(fortunes_dir)
    pools = carve_sentences(sentences, preset, seed)
    seen, held = seen_speakers(), held_out_speakers()
    plans: dict[str, list[dict[str, Any]]] = {}
    for split, n in preset.counts().items():
        speakers = held if split == "test-other" else seen
        pool = pools[split]
        texts = _train_sentences(pool, seed, n) if split == "train" else pool[:n]
        plans[split] = [_utt_plan(seed, split, i, t, speakers) for i, t in enumerate(texts)]
    return plans


# ----------------------------------------------------------------------------------------------
# synthesis (runs in worker processes; must be a pure function of the plan)
# ----------------------------------------------------------------------------------------------

def check_tools() -> dict[str, str]:
    """Paths of espeak-ng and sox; a RuntimeError naming scripts/setup.sh when one is missing."""
    tools = {}
    for name in ("espeak-ng", "sox"):
        path = shutil.which(name)
        if path is None:
            raise RuntimeError(f"{name} not found on PATH: the default corpus needs espeak-ng and sox; "
                               "run scripts/setup.sh (it apt-installs espeak-ng, sox and fortunes)")
        tools[name] = path
    return tools


def _tool_versions() -> dict[str, str]:
    out = {}
    for name, args in (("espeak-ng", ["espeak-ng", "--version"]), ("sox", ["sox", "--version"])):
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=30)
            out[name] = (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out[name] = "unknown"
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
    espeak = ["espeak-ng", "-v", plan["speaker"], "-s", str(plan["rate"]), "-p", str(plan["pitch"]),
              "--stdout", "--stdin"]
    r = subprocess.run(espeak, input=(plan["text"] + "\n").encode(), capture_output=True, timeout=timeout)
    if r.returncode != 0 or len(r.stdout) <= 44:
        raise RuntimeError(f"espeak-ng failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()[:300]}")
    # resample first: tempo and reverb are cheaper at 16 kHz than at espeak-ng's 22.05 kHz
    effects = ["channels", "1", "rate", "-h", str(SAMPLE_RATE), "tempo", "-s", f"{plan['tempo']:.3f}"]
    if plan["reverb"]:
        rv = plan["reverb"]
        effects += ["reverb", str(rv["reverberance"]), str(rv["hf_damping"]), str(rv["room_scale"]), "100",
                    str(rv["pre_delay_ms"]), "0", "channels", "1"]
    sox = ["sox", "-R", "-D", "-V1", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
           "-L", "-"] + effects
    r2 = subprocess.run(sox, input=r.stdout, capture_output=True, timeout=timeout)
    if r2.returncode != 0:
        raise RuntimeError(f"sox failed ({r2.returncode}): {r2.stderr.decode(errors='replace').strip()[:300]}")
    x = np.frombuffer(r2.stdout, dtype="<f4").astype(np.float64)
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
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recordings, supervisions = [], []
    audio_dir = layout.audio_dir(split).resolve()
    for plan in plans:
        if plan["utt_id"] not in ok:
            continue
        rec = Recording.from_file(audio_dir / f"{plan['utt_id']}.flac", recording_id=plan["utt_id"])
        custom = {"rate": plan["rate"], "pitch": plan["pitch"], "tempo": plan["tempo"]}
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
    return {
        "utterances": len(recordings),
        "hours": round(sum(r.duration for r in recordings) / 3600.0, 4),
        "speakers": len({s.speaker for s in supervisions}),
        "words": sum(len(s.text.split()) for s in supervisions),
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


def plan_fingerprint(plans: dict[str, list[dict[str, Any]]]) -> str:
    """sha256 of everything that determines the audio and the transcripts."""
    return hashlib.sha256(json.dumps(plans, sort_keys=True).encode()).hexdigest()


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
    print(f"{'split':>12} {'utterances':>10} {'hours':>8} {'speakers':>8} {'failed':>6}")
    for split, s in summary.items():
        print(f"{split:>12} {s['utterances']:10d} {s['hours']:8.3f} {s['speakers']:8d} {s['failed']:6d}")


def build_corpus(out_dir: str | Path, preset: str | CorpusPreset = "tiny", seed: int = 0,
                 num_jobs: int | None = None, progress: bool = True,
                 fortunes_dir: str | Path = DEFAULT_FORTUNES_DIR) -> dict[str, Any]:
    """Synthesise (or finish synthesising) the default corpus into ``out_dir``.

    ``preset`` is a name of :data:`CORPUS_PRESETS` or a :class:`CorpusPreset`.  Returns what is also
    written to ``corpus.json``: ``{"preset", "seed", "splits": {split: {utterances, hours, speakers,
    words, failed, synthesised, reused}}, "held_out_speakers", ...}``.  Utterances that fail twice are
    left out of the manifests and counted under ``failed``.
    """
    t0 = time.time()
    preset = _resolve_preset(preset)
    check_tools()
    out = Path(out_dir)
    layout = CorpusLayout(out)
    num_jobs = max(1, int(num_jobs or os.cpu_count() or 1))

    plans = plan_corpus(preset, seed, fortunes_dir=fortunes_dir)
    fingerprint = _claim_directory(out, preset, seed, plans)
    t_plan = time.time()
    jobs: list[tuple[dict[str, Any], str]] = []
    for split in SPLITS:
        audio_dir = layout.audio_dir(split)
        audio_dir.mkdir(parents=True, exist_ok=True)
        _clean_temporaries(audio_dir)
        jobs += [(p, str(audio_dir / f"{p['utt_id']}.flac")) for p in plans[split]]

    from tqdm.auto import tqdm

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
        ok = {p["utt_id"] for p in plans[split] if results[p["utt_id"]]["status"] != "failed"}
        if plans[split] and not ok:
            example = next(r["error"] for r in failed if r["utt_id"].startswith(split + "-"))
            raise RuntimeError(f"every utterance of {split} failed to synthesise, e.g. {example}")
        s = _write_manifests(layout, split, plans[split], ok)
        statuses = [results[p["utt_id"]]["status"] for p in plans[split]]
        s.update(failed=statuses.count("failed"), synthesised=statuses.count("done"),
                 reused=statuses.count("skipped"))
        splits[split] = s

    summary = {
        "preset": asdict(preset),
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "splits": splits,
        "plan_sha256": fingerprint,
        "held_out_speakers": held_out_speakers(),
        "accents": list(ACCENTS),
        "variants": list(VARIANTS),
        "failed_utterances": sorted(r["utt_id"] for r in failed),
        "tools": _tool_versions(),
        "seconds": round(time.time() - t0, 2),
        "plan_seconds": round(t_plan - t0, 2),
        "synthesis_seconds": round(synth_seconds, 2),
        "utterances_per_second": round(len(jobs) / max(synth_seconds, 1e-9), 2),
        "num_jobs": num_jobs,
    }
    atomic_write_text(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    _print_summary(splits, out, summary["seconds"])
    return summary
