"""Reading a corpus's lhotse cut manifests (``*.jsonl.gz``) without trusting them.

A manifest is data, possibly written by someone else or damaged: every consumer (``data prepare``,
training, ``eval``, ``search``, ``check-onnx``) reads it through :func:`read_cuts`, which parses it
line by line, and :func:`cut_problem`, which checks each cut before anything is loaded from it. A
bad cut is left out and counted by reason, never the whole command:

  ``bad_entry``        a line that is not a cut: not JSON, not an object, missing or mistyped fields
                       (no ``id`` or ``duration``, a text that is not a string ...)
  ``unsupported_cut``  a cut type other than ``MonoCut`` / ``MultiCut`` (mixed or padding cuts)
  ``duplicate_id``     a cut id seen before in the same manifest
  ``bad_duration``     a duration or start that is not a finite number, a negative start, or a
                       duration over :data:`MAX_CUT_S` (an hour: no utterance is that long)
  ``zero_length``      a duration <= 0
  ``unsafe_source``    audio from anything but a file or bytes in the manifest (lhotse would run the
                       ``command`` of a ``command`` source in a shell, fetch a ``url``), features in a
                       storage other than the local ones of :data:`SAFE_FEATURE_STORAGE`
  ``unsafe_path``      a relative audio or feature path that climbs out with ``..``

Paths are read as lhotse reads them: absolute ones as given (a prepared LibriSpeech corpus points at
its source directory, outside the corpus), relative ones from the working directory; only a relative
path with a ``..`` component is refused, so a manifest cannot walk out of where it was meant to
point. A file that is not a gzip'ed (or plain) JSON-lines manifest at all is a one-line ValueError.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from pathlib import Path
from typing import Any, Iterable, Optional

MAX_CUT_S = 3600.0  # longest utterance a manifest may hold (also the limit of `transcribe`)
SAFE_AUDIO_SOURCES = ("file", "memory")
SAFE_FEATURE_STORAGE = ("lilcom_chunky", "lilcom_files", "numpy_files", "lilcom_hdf5", "numpy_hdf5",
                        "chunked_lilcom_hdf5", "memory_lilcom", "memory_npy", "memory_raw")
REASONS = ("bad_entry", "unsupported_cut", "duplicate_id", "bad_duration", "zero_length", "unsafe_source",
           "unsafe_path")


def _lines(path: Path) -> Iterable[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from f
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable JSON-lines cut manifest ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def read_cuts(path: str | Path) -> tuple[list, list[tuple[str, str]]]:
    """``(cuts, problems)``: the cuts of manifest ``path`` that parse and pass :func:`cut_problem`,
    and ``(reason, what)`` for each line left out (see the module docstring)."""
    from lhotse import MonoCut, MultiCut

    classes = {"MonoCut": MonoCut, "MultiCut": MultiCut}
    path = Path(path)
    cuts, problems, seen = [], [], set()
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            problems.append(("bad_entry", f"{where} (not JSON)"))
            continue
        if not isinstance(data, dict):
            problems.append(("bad_entry", f"{where} (not an object)"))
            continue
        cls = classes.get(data.get("type"))
        if cls is None:
            problems.append(("unsupported_cut", f"{where} (type {str(data.get('type'))[:40]!r})"))
            continue
        try:
            cut = cls.from_dict(data)
            reason = cut_problem(cut)
        except Exception as e:  # noqa: BLE001 - lhotse's from_dict raises whatever the fields cause
            problems.append(("bad_entry", f"{where} ({type(e).__name__}: {str(e)[:80]})"))
            continue
        if reason is None and cut.id in seen:
            reason = "duplicate_id"
        if reason is not None:
            problems.append((reason, f"{where} ({str(cut.id)[:60]})"))
            continue
        seen.add(cut.id)
        cuts.append(cut)
    return cuts, problems


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _unsafe_path(p: Any) -> bool:
    return not isinstance(p, str) or (not Path(p).is_absolute() and ".." in Path(p).parts)


def cut_problem(cut) -> Optional[str]:
    """The reason (of :data:`REASONS`) not to use ``cut``, or None when it may be loaded."""
    if not isinstance(cut.id, str) or not cut.id:
        return "bad_entry"
    for s in cut.supervisions or []:
        if s.text is not None and not isinstance(s.text, str):
            return "bad_entry"
    if not (_finite(cut.duration) and _finite(cut.start)) or cut.duration > MAX_CUT_S or cut.start < 0:
        return "bad_duration"
    if cut.duration <= 0:
        return "zero_length"
    rec = getattr(cut, "recording", None)
    if rec is not None:
        for src in rec.sources or []:
            if src.type not in SAFE_AUDIO_SOURCES:
                return "unsafe_source"
            if src.type == "file" and _unsafe_path(src.source):
                return "unsafe_path"
    feats = getattr(cut, "features", None)
    if feats is not None:
        if feats.storage_type not in SAFE_FEATURE_STORAGE:
            return "unsafe_source"
        if not feats.storage_type.startswith("memory") and _unsafe_path(feats.storage_path):
            return "unsafe_path"
    return None


def count_problems(problems: list[tuple[str, str]], report: Optional[dict] = None) -> dict[str, int]:
    """``{reason: count}`` of ``problems``, added into ``report`` when given."""
    out: dict[str, int] = {}
    for reason, _ in problems:
        out[reason] = out.get(reason, 0) + 1
    if report is not None:
        for k, v in out.items():
            report[k] = report.get(k, 0) + v
    return out
