"""Text for the external language model (``omnisparse train-lm``): sentences no dev or test utterance says.

For a corpus built by ``omnisparse data build`` the text is its *train sentence pool*: every sentence
of its sources that :func:`~omnisparse.data.corpus_plan.carve_sentences` did not set aside for an
evaluation split — the ~24k sentences the train audio speaks and the ~65k (``small``) no utterance
speaks. It is re-derived from the preset and seed in ``corpus.json`` and checked against the corpus
(every train transcript in it, no dev or test transcript in it), so a change of the Debian text
packages since the build is a one-line error, not a silent leak. Any other text (``lm.text``: a
UTF-8 file, one sentence per line) is normalised like the transcripts and purged of every sentence
a dev or test utterance of the corpus says. The pool is cached as ``CORPUS/lang/lm_text-<id>.txt``,
``<id>`` from the sha256 of ``corpus.json`` (a corpus rebuilt with another preset or seed gets its own).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from lhotse import load_manifest

from omnisparse.data.corpus_plan import CorpusPreset, _as_pairs, carve_sentences
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.sentences import english_sentences
from omnisparse.data.text import normalize_text
from omnisparse.io.atomic import atomic_write_text, sha256


def _transcripts(layout: CorpusLayout, split: str) -> set[str]:
    path = layout.cuts(split)
    if not path.exists():
        return set()
    return {normalize_text(" ".join(s.text or "" for s in c.supervisions)) for c in load_manifest(path)}


def held_out_transcripts(corpus_dir: str | Path, train_splits: tuple[str, ...] = ("train",)) -> set[str]:
    """The normalised transcripts of every split of the corpus that is not a train split."""
    layout = CorpusLayout(corpus_dir)
    out: set[str] = set()
    for split in layout.splits():
        if split not in train_splits:
            out |= _transcripts(layout, split)
    return out


def _preset_of(corpus_dir: Path) -> tuple[CorpusPreset, int]:
    path = corpus_dir / "corpus.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: not a corpus built by `omnisparse data build` "
                                f"(give the LM a text file with --lm.text)")
    info = json.loads(path.read_text())
    raw = info["preset"]
    known = {f.name for f in fields(CorpusPreset)}
    kw = {k: v for k, v in raw.items() if k in known}
    kw["engines"] = tuple((e, float(w)) for e, w in kw.get("engines", ()))
    if kw.get("sources") is not None:
        kw["sources"] = tuple(kw["sources"])
    return CorpusPreset(**kw), int(info["seed"])


def corpus_sentence_pool(corpus_dir: str | Path) -> list[str]:
    """The train sentence pool of a built corpus, checked against its manifests (ValueError when the
    sentence sources no longer give the pool the corpus was built from)."""
    corpus_dir = Path(corpus_dir)
    preset, seed = _preset_of(corpus_dir)
    sentences = english_sentences(preset.sources) if preset.sources else english_sentences()
    pool = [t for t, _ in carve_sentences(_as_pairs(sentences), preset, seed)["train"]]
    have = set(pool)
    layout = CorpusLayout(corpus_dir)
    missing = _transcripts(layout, "train") - have
    leaked = held_out_transcripts(corpus_dir) & have
    if missing or leaked:
        raise ValueError(f"{corpus_dir}: the sentence sources here do not give the pool this corpus was built from "
                         f"({len(missing)} train transcripts missing, {len(leaked)} dev/test sentences in it); "
                         f"give the LM a text file with --lm.text")
    return pool


def lm_sentences(corpus_dir: str | Path, text: str | Path = "") -> list[str]:
    """The LM's training sentences for ``corpus_dir``: its train sentence pool (``text`` empty) or
    ``text``'s lines, normalised, without empty lines or any dev/test transcript. The pool is cached
    (see the module docstring); ValueError when nothing is left."""
    corpus_dir = Path(corpus_dir)
    info = corpus_dir / "corpus.json"
    cache = CorpusLayout(corpus_dir).lang / f"lm_text-{sha256(info)[:12] if info.exists() else 'none'}.txt"
    if not text and cache.exists():
        return cache.read_text(encoding="utf-8").splitlines()
    if text:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"no such LM text file: {path}")
        held = held_out_transcripts(corpus_dir)
        lines = (normalize_text(ln) for ln in path.read_text(encoding="utf-8", errors="replace").splitlines())
        out = [ln for ln in lines if ln and ln not in held]
    else:
        out = corpus_sentence_pool(corpus_dir)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, "\n".join(out) + "\n")
    if not out:
        raise ValueError(f"no LM training sentences left from {text or corpus_dir}")
    return out
