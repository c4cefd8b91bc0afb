"""An outside anchor: pocketsphinx (the offline CPU recogniser a user would otherwise pick) on our test splits.

    .venv/bin/python bench/anchor.py --corpus data/small --splits test-clean test-other test-unseen-engine \\
                                     [--max-utts N] [--out bench/results/anchor_small.json]

pocketsphinx runs with its defaults and its bundled US-English model (``pocketsphinx.Decoder()``: the
continuous-density acoustic model, ``cmudict-en-us.dict`` and the ``en-us.lm.bin`` trigram LM); no
adaptation and no vocabulary of our corpus.  Every utterance is decoded on its own and whole
(``process_raw(..., full_utt=True)``; the default cepstral mean is the utterance's own, ``cmn=batch``)
from 16 kHz int16 PCM, the front end reset first (``reinit_feat``: the default ``remove_noise``
estimate would otherwise carry over from the previous utterance), so a hypothesis is the one a newly
created ``Decoder()`` gives, whatever was decoded before it.

WER is the project's (:func:`omnisparse.decoding.evaluate.word_error_rate`: references and
hypotheses through :func:`omnisparse.data.text.normalize_for_scoring`, corpus-level jiwer).  The real-
time factor times the decoder only (``start_utt`` .. ``hyp``; reading and converting the audio is not
counted), wall clock and process CPU, on one thread (pocketsphinx does not use more):
``rtf = decode seconds / audio seconds``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from lhotse import CutSet, load_manifest_lazy
from lhotse.cut import Cut

from omnisparse.data.layout import CorpusLayout
from omnisparse.decoding.evaluate import word_error_rate
from omnisparse.io.atomic import atomic_write_text
from omnisparse.utils.provenance import write_result

__all__ = ["ENGINE", "MODEL", "UNSEEN_SPLIT", "SAMPLE_RATE", "pocketsphinx_version", "pcm16", "decode_utterance",
           "pocketsphinx_eval", "cached_pocketsphinx_eval", "main"]

ENGINE = "pocketsphinx"
MODEL = "en-us (bundled)"
#: the corpus split spoken by a synthesiser no other split uses (not in every corpus)
UNSEEN_SPLIT = "test-unseen-engine"
#: the rate of pocketsphinx's default acoustic model (and of our corpora)
SAMPLE_RATE = 16000
# an alternative pronunciation's marker, should a dictionary word reach the hypothesis ("read(2)")
_RE_ALT = re.compile(r"\(\d+\)")


def pocketsphinx_version() -> str:
    """The installed pocketsphinx package's version (``unknown`` when it reports none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pocketsphinx")
    except PackageNotFoundError:
        return "unknown"


def _new_decoder():
    """A pocketsphinx decoder with every setting at its default (the bundled en-us model)."""
    try:
        from pocketsphinx import Decoder
    except ImportError as e:  # not a project dependency: only this anchor needs it
        raise ImportError("bench/anchor.py needs pocketsphinx: .venv/bin/pip install pocketsphinx") from e
    return Decoder()


def pcm16(cut: Cut) -> bytes:
    """The cut's first channel at 16 kHz as little-endian int16 PCM (the decoder's input format)."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    audio = np.asarray(cut.load_audio(), dtype=np.float64)
    audio = audio[0] if audio.ndim > 1 else audio
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2").tobytes()


def decode_utterance(decoder, pcm: bytes) -> tuple[str, float, float]:
    """Decode one whole utterance from a fresh front-end state; returns ``(hypothesis, wall_s, cpu_s)``
    of the decoding alone (the front-end reset included, ~0.1 ms)."""
    w0, c0 = time.perf_counter(), time.process_time()
    decoder.reinit_feat()  # the noise-removal estimate starts afresh: no state from the previous utterance
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    text = hyp.hypstr if hyp is not None else ""
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return _RE_ALT.sub("", text), wall, cpu


def _header() -> dict[str, Any]:
    """What was run: the engine, its version and model, threads and the decoding protocol."""
    return {"engine": ENGINE, "version": pocketsphinx_version(), "model": MODEL, "threads": 1,
            "decoding": "whole utterance, one at a time, fresh front end (reinit_feat; process_raw full_utt=True), "
                        "int16 PCM 16 kHz"}


def _reference(cut: Cut) -> str:
    return " ".join(s.text for s in cut.supervisions if s.text)


def _select(cuts: CutSet, max_utts: int | None, ids: Iterable[str] | None) -> list[Cut]:
    """The cuts named by ``ids`` (in that order; every one must exist), else the first ``max_utts``
    in manifest order (all when None)."""
    if ids is not None:
        by_id = {c.id: c for c in cuts}
        wanted = list(ids)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise KeyError(f"{len(missing)} utterance ids not in the manifest, e.g. {missing[0]!r}")
        chosen = [by_id[i] for i in wanted]
    else:
        chosen = list(cuts)
    return chosen if max_utts is None else chosen[:max_utts]


def pocketsphinx_eval(corpus_dir: str | Path, splits: Iterable[str], max_utts: int | None = None,
                      progress: bool = True, *, ids: dict[str, list[str]] | None = None,
                      keep_hyps: bool = False) -> dict[str, Any]:
    """WER and real-time factor of default pocketsphinx on each split's audio cuts manifest.

    ``corpus_dir``: a corpus (``CORPUS/manifests/cuts_<split>.jsonl.gz``, see
    :class:`omnisparse.data.layout.CorpusLayout`).  ``max_utts``: decode only the first N cuts of a
    split (manifest order).  ``ids``: per split, the exact utterances to decode (e.g. those a model's
    WER was computed on; ``max_utts`` then cuts that list).  A split without a manifest is skipped
    with a message and listed under ``skipped_splits``.  ``keep_hyps``: add ``hyps: [{id, ref, hyp}]``
    per split.

    Returns ``{"engine", "version", "model", "threads", "load_s", "skipped_splits", <split>: {"wer",
    "utterances", "words", "substitutions", "insertions", "deletions", "audio_s", "decode_wall_s",
    "decode_cpu_s", "rtf", "rtf_cpu"}}``; ``rtf`` is wall-clock decode seconds per audio second,
    ``rtf_cpu`` process CPU seconds per audio second.
    """
    from tqdm.auto import tqdm

    layout = CorpusLayout(corpus_dir)
    out: dict[str, Any] = {**_header(), "skipped_splits": []}
    decoder = None
    for split in splits:
        path = layout.cuts(split)
        if not path.exists():
            print(f"anchor: skipping split {split!r}: no cuts manifest at {path}", file=sys.stderr)
            out["skipped_splits"].append(split)
            continue
        cuts = _select(load_manifest_lazy(path), max_utts, None if ids is None else ids.get(split))
        if decoder is None:
            t0 = time.perf_counter()
            decoder = _new_decoder()
            out["load_s"] = time.perf_counter() - t0
        rows, audio_s, wall_s, cpu_s = [], 0.0, 0.0, 0.0
        for cut in tqdm(cuts, desc=f"pocketsphinx {split}", disable=not progress, leave=False):
            pcm = pcm16(cut)
            hyp, wall, cpu = decode_utterance(decoder, pcm)
            audio_s += len(pcm) / 2 / SAMPLE_RATE
            wall_s += wall
            cpu_s += cpu
            rows.append({"id": cut.id, "ref": _reference(cut), "hyp": hyp})
        stats = word_error_rate([r["ref"] for r in rows], [r["hyp"] for r in rows])
        res = {**stats, "utterances": len(rows), "audio_s": audio_s, "decode_wall_s": wall_s, "decode_cpu_s": cpu_s,
               "rtf": wall_s / audio_s if audio_s else float("nan"),
               "rtf_cpu": cpu_s / audio_s if audio_s else float("nan")}
        if keep_hyps:
            res["hyps"] = rows
        out[split] = res
        if progress:
            print(f"anchor: {split}: pocketsphinx WER {res['wer']:.4f}, RTF {res['rtf']:.3f} "
                  f"({res['utterances']} utterances, {audio_s:.1f} s of audio)", file=sys.stderr)
    return out


def _ids_key(corpus_dir: str | Path, split: str, ids: list[str]) -> str:
    """What a cached split result depends on: the split's manifest bytes, the utterances, the version."""
    h = hashlib.sha256()
    h.update(CorpusLayout(corpus_dir).cuts(split).read_bytes())
    h.update("\n".join(ids).encode())
    h.update(pocketsphinx_version().encode())
    return h.hexdigest()


def cached_pocketsphinx_eval(cache_path: str | Path, corpus_dir: str | Path, ids: dict[str, list[str]],
                             progress: bool = True) -> dict[str, Any]:
    """:func:`pocketsphinx_eval` on exactly ``ids`` (per split), a split's result kept in ``cache_path``
    (JSON) and reused while its manifest, its utterance list and the pocketsphinx version are unchanged."""
    cache_path = Path(cache_path)
    layout = CorpusLayout(corpus_dir)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    out: dict[str, Any] = {**_header(), "skipped_splits": []}
    for split, wanted in ids.items():
        if not layout.cuts(split).exists():
            print(f"anchor: skipping split {split!r}: no cuts manifest at {layout.cuts(split)}", file=sys.stderr)
            out["skipped_splits"].append(split)
            continue
        key = _ids_key(corpus_dir, split, wanted)
        if cache.get(split, {}).get("key") != key:
            res = pocketsphinx_eval(corpus_dir, [split], progress=progress, ids={split: wanted})
            cache[split] = {"key": key, "result": res[split]}
            atomic_write_text(cache_path, json.dumps(cache, indent=2))
        out[split] = cache[split]["result"]
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: decode the splits, print a summary, write the JSON result with provenance."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="data/small")
    ap.add_argument("--splits", nargs="+", default=["test-clean", "test-other", UNSEEN_SPLIT])
    ap.add_argument("--max-utts", type=int, default=None, help="decode the first N cuts of each split (all by default)")
    ap.add_argument("--out", default="bench/results/anchor_small.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not CorpusLayout(args.corpus).manifests.is_dir():
        ap.error(f"no corpus at {args.corpus} (no manifests/ directory)")
    res = pocketsphinx_eval(args.corpus, args.splits, args.max_utts, progress=not args.no_progress)
    payload = {"corpus": str(args.corpus), "max_utts": args.max_utts, **res}
    written = write_result(args.out, payload,
                           command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps({s: {k: written[s][k] for k in ("wer", "rtf", "rtf_cpu", "utterances", "audio_s")}
                      for s in args.splits if s in written}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
