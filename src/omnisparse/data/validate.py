"""Check a CutSet before use: every bad utterance is skipped (or fixed) and counted, never silent.

Problems found, by reason:
  ``missing``       audio file does not exist
  ``unreadable``    soundfile cannot open/decode it, or it has zero samples (a file whose header
                    reads but whose samples do not decode is found, and counted under the same
                    reason, when features are computed: ``features.prepare_features``)
  ``sample_rate``   the file's rate differs from the manifest's (the manifest is wrong: skipped)
  ``resampled``     the manifest's rate is not 16 kHz: fixed by resampling on load (counted, kept)
  ``multichannel``  a stereo / multi-channel recording: fixed by keeping its first channel (the one
                    lhotse computes features of; counted, kept)
  ``empty_text``    no supervision, or the transcript normalises to nothing
  ``non_ascii``     the transcript holds non-ASCII characters: fixed by the normaliser (accents
                    stripped, other scripts and symbols dropped; counted, kept)
  ``too_long``      longer than ``max_duration`` seconds (would not fit a batch)
  ``zero_length``   duration <= 0
  and the reasons of :mod:`omnisparse.data.manifest` for cuts that are damaged or unsafe to load
  (``bad_entry``, ``bad_duration``, ``unsafe_source``, ``unsafe_path`` ...).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from lhotse import CutSet
from lhotse.cut import MultiCut

from omnisparse.data.manifest import cut_problem
from omnisparse.data.text import normalize_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
KEPT_REASONS = {"resampled", "multichannel", "non_ascii"}


@dataclass
class ValidationReport:
    total: int = 0
    kept: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, what: str, max_examples: int = 20) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < max_examples:
            self.examples[reason].append(what)

    @property
    def skipped(self) -> int:
        return self.total - self.kept

    def summary(self, name: str = "") -> str:
        head = f"{name}: " if name else ""
        if not self.counts:
            return f"{head}{self.total} utterances, all valid"
        lines = [f"{head}{self.total} utterances, kept {self.kept}, skipped {self.skipped}"]
        for reason, n in sorted(self.counts.items()):
            verb = "fixed" if reason in KEPT_REASONS else "skipped"
            ex = ", ".join(self.examples[reason][:5])
            more = " ..." if n > 5 else ""
            lines.append(f"  {reason} ({verb}): {n}  e.g. {ex}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "counts": dict(self.counts),
                "examples": {k: list(v) for k, v in self.examples.items()}}


def _audio_path(cut) -> str | None:
    rec = getattr(cut, "recording", None)
    if rec is None or not rec.sources:
        return None
    src = rec.sources[0]
    return src.source if src.type == "file" else None


def validate_cuts(cuts: CutSet, max_duration: float = float("inf"), check_audio: bool = True,
                  name: str = "") -> tuple[CutSet, ValidationReport]:
    """Return the usable cuts (resampled to 16 kHz where the manifest says another rate) and a report.

    ``check_audio`` opens every file header (cheap: no decoding beyond the header); set it False
    for cuts that will only be read through stored features.
    """
    report = ValidationReport()
    good = []
    for cut in cuts:
        report.total += 1
        cid = cut.id
        problem = cut_problem(cut)
        if problem is not None:
            report.add(problem, str(cid)[:80])
            continue
        sups = [s for s in cut.supervisions if s.text is not None]
        if not sups or not any(normalize_text(s.text) for s in sups):
            report.add("empty_text", cid)
            continue
        odd = next((s.text for s in sups if not s.text.isascii()), None)
        if cut.duration <= 0:
            report.add("zero_length", cid)
            continue
        if cut.duration > max_duration:
            report.add("too_long", f"{cid} ({cut.duration:.1f}s)")
            continue
        if check_audio and cut.has_recording:
            path = _audio_path(cut)
            if path is not None:
                if not Path(path).exists():
                    report.add("missing", path)
                    continue
                try:
                    info = sf.info(path)
                except Exception:  # soundfile raises its own LibsndfileError / RuntimeError
                    report.add("unreadable", path)
                    continue
                if info.frames <= 0:
                    report.add("unreadable", f"{path} (0 samples)")
                    continue
                if info.samplerate != cut.recording.sampling_rate:
                    report.add("sample_rate", f"{path} ({info.samplerate} Hz, manifest says {cut.recording.sampling_rate})")
                    continue
        if cut.has_recording and len(getattr(cut.recording, "channel_ids", [0])) > 1:
            report.add("multichannel", f"{cid} ({len(cut.recording.channel_ids)} channels)")
            if isinstance(cut, MultiCut):  # -> the MonoCut of its first channel (same file, no copy)
                mono = cut.to_mono(mono_downmix=False)
                cut = (mono[0] if isinstance(mono, list) else mono).with_id(cid)
        if odd is not None:
            report.add("non_ascii", f"{cid} ({odd[:40]!r})")
        if cut.has_recording and cut.sampling_rate != SAMPLE_RATE:
            report.add("resampled", f"{cid} ({cut.sampling_rate} Hz)")
            cut = cut.resample(SAMPLE_RATE)
        good.append(cut)
        report.kept += 1
    if report.counts:
        log.warning(report.summary(name))
    return CutSet.from_cuts(good), report
