"""Prepare a LibriSpeech directory into the omnisparse corpus layout through lhotse's recipe.

``DIR`` holds LibriSpeech parts (``train-clean-100/``, ``dev-clean/``, ``test-other/`` ...; the
usual ``LibriSpeech/`` top folder is also accepted). Each utterance is parsed with lhotse's own
``parse_utterance``; one that cannot be read (missing or corrupt FLAC) is skipped and reported
instead of aborting the whole part. Transcripts are normalised with the scoring normaliser; one
holding non-ASCII characters is counted as fixed (``fixed["non_ascii"]``), one left empty is skipped.

The parts keep their LibriSpeech names as split names; ``omnisparse/conf/librispeech_*.yaml`` say which of
them form train / dev / test.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.qa import fix_manifests, validate_recordings_and_supervisions
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, parse_utterance
from tqdm.auto import tqdm

from omnisparse.data.layout import CorpusLayout
from omnisparse.data.text import normalize_text
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.lock import exclusive_dir

log = logging.getLogger(__name__)


def find_parts(root: Path) -> tuple[Path, list[str]]:
    for base in (root, root / "LibriSpeech"):
        parts = sorted(p.name for p in base.glob("*") if p.is_dir() and p.name in (*LIBRISPEECH, *MINI_LIBRISPEECH))
        if parts:
            return base, parts
    raise FileNotFoundError(f"no LibriSpeech parts ({', '.join(LIBRISPEECH)}) found in {root}")


def prepare_librispeech(src_dir: str | Path, out_dir: str | Path, parts: list[str] | None = None,
                        overwrite: bool = False) -> dict[str, dict]:
    """Write manifests for each part; returns per-part counts ``{utterances, hours, speakers, skipped, fixed}``.
    ``out_dir`` is held meanwhile (:func:`omnisparse.io.lock.exclusive_dir`): a second writer is refused."""
    base, found = find_parts(Path(src_dir))
    parts = parts or found
    missing = sorted(set(parts) - set(found))
    if missing:
        raise FileNotFoundError(f"LibriSpeech parts not found in {base}: {missing}")
    with exclusive_dir(out_dir, "omnisparse data librispeech"):
        return _prepare_parts(base, parts, CorpusLayout(out_dir), overwrite)


def _prepare_parts(base: Path, parts: list[str], layout: CorpusLayout, overwrite: bool) -> dict[str, dict]:
    layout.manifests.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for part in parts:
        if layout.cuts(part).exists() and not overwrite:
            log.info("%s already prepared", part)
            continue
        recs, sups, skipped, examples, fixed = [], [], Counter(), [], Counter()
        lines = [(t, line) for t in sorted((base / part).rglob("*.trans.txt")) for line in t.read_text().splitlines() if line.strip()]
        for trans, line in tqdm(lines, desc=f"LibriSpeech {part}"):
            if len(line.split(maxsplit=1)) < 2:
                skipped["empty_text"] += 1
                examples.append(line.strip())
                continue
            try:
                res = parse_utterance(base / part, line, {})
            except Exception as e:  # unreadable audio: lhotse raises from Recording.from_file
                skipped["unreadable"] += 1
                examples.append(f"{line.split()[0]} ({type(e).__name__})")
                continue
            if res is None:
                skipped["missing"] += 1
                examples.append(line.split()[0])
                continue
            rec, sup = res
            text = normalize_text(sup.text)
            if not text:
                skipped["empty_text"] += 1
                examples.append(rec.id)
                continue
            if not sup.text.isascii():
                fixed["non_ascii"] += 1
                log.warning("%s: non-ASCII transcript normalised to %r", rec.id, text)
            sup.text = text
            recs.append(rec)
            sups.append(sup)
        if skipped:
            log.warning("LibriSpeech %s: skipped %s, e.g. %s", part, dict(skipped), examples[:5])
            print(f"LibriSpeech {part}: skipped {sum(skipped.values())} utterances {dict(skipped)}: {', '.join(examples[:5])}")
        if fixed:
            print(f"LibriSpeech {part}: fixed {dict(fixed)} (transcripts normalised)")
        if not recs:
            raise ValueError(f"LibriSpeech part {part} has no usable utterances")
        rset, sset = fix_manifests(RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups))
        validate_recordings_and_supervisions(rset, sset)
        cuts = CutSet.from_manifests(recordings=rset, supervisions=sset)
        for obj, path in ((rset, layout.recordings(part)), (sset, layout.supervisions(part)), (cuts, layout.cuts(part))):
            tmp = path.with_name(f".tmp_{path.name}")
            obj.to_file(tmp)
            tmp.replace(path)
        summary[part] = {"utterances": len(cuts), "hours": round(sum(c.duration for c in cuts) / 3600, 3),
                         "speakers": len({s.speaker for s in sset}), "skipped": dict(skipped), "fixed": dict(fixed)}
    if summary:
        atomic_write_text(layout.root / "librispeech.json", json.dumps(summary, indent=2))
    return summary
