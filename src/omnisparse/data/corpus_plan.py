"""What the default corpus will hold, decided before any audio is made.

Splits (the shape of LibriSpeech's, plus one), with disjoint sentence sets:

* ``train``               seen speakers of the train engines, mild effects (gain, tempo);
  sentences may repeat inside train (other voices) when a preset asks for more utterances than
  sentences;
* ``dev``, ``test-clean`` seen speakers of the train engines, mild effects;
* ``test-other``          held-out speakers (voice + variant combinations never used elsewhere) of
  the train engines, with reverb and noise at 5-20 dB SNR;
* ``test-unseen-engine``  a whole synthesiser family never used by any other split (default
  ``pico``), clean.

A speaker is ``ENGINE:VOICE+VARIANT`` (:mod:`omnisparse.data.engines`).  Every random choice of
utterance ``i`` of split ``s`` comes from ``numpy.random.default_rng([seed, s, i])`` (the sentence
carving from ``default_rng([seed, 1000])``), so a seed gives the same plan whatever the number of
processes; the engine's own parameters are drawn from the same generator.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from omnisparse.data.engines import ENGINES, get_engine
from omnisparse.data.sentences import english_sentences

__all__ = [
    "SPLITS",
    "UNSEEN_SPLIT",
    "CorpusPreset",
    "CORPUS_PRESETS",
    "resolve_preset",
    "engine_speakers",
    "carve_sentences",
    "plan_corpus",
    "plan_fingerprint",
    "speakers_in",
]

SPLITS = ("train", "dev", "test-clean", "test-other", "test-unseen-engine")
UNSEEN_SPLIT = "test-unseen-engine"
EVAL_SPLITS = ("dev", "test-clean", "test-other", UNSEEN_SPLIT)

TEMPO = (0.9, 1.1)  # sox tempo factor
LEVEL_DBFS = (-30.0, -20.0)  # RMS of the active speech
SNR_DB = (5.0, 20.0)  # test-other only
EDGE_PAD_S = (0.1, 0.3)  # silence kept before / after the speech

# Share of the utterances of train, dev, test-clean and test-other spoken by each engine.  piper
# gets a small share because it is ~10x slower than the others; espeak-ng has by far the most
# voices.  Engines that cannot run here are dropped and the rest renormalised (corpus.json says so).
DEFAULT_ENGINE_SHARES = (("espeak", 0.35), ("mbrola", 0.22), ("festival", 0.2), ("hibari", 0.15),
                         ("piper", 0.08))
TINY_ENGINE_SHARES = (("espeak", 0.55), ("mbrola", 0.15), ("festival", 0.15), ("hibari", 0.15))


@dataclass(frozen=True)
class CorpusPreset:
    """Utterance counts per split, the engine mix and the held-out engine."""

    name: str
    train_utts: int
    dev_utts: int
    test_clean_utts: int
    test_other_utts: int
    test_unseen_utts: int = 0
    engines: tuple[tuple[str, float], ...] = DEFAULT_ENGINE_SHARES
    unseen_engine: str = "pico"
    sources: tuple[str, ...] | None = None  # sentence sources (None: omnisparse.data.sentences defaults)

    def counts(self) -> dict[str, int]:
        return {"train": self.train_utts, "dev": self.dev_utts, "test-clean": self.test_clean_utts,
                "test-other": self.test_other_utts, UNSEEN_SPLIT: self.test_unseen_utts}

    def __post_init__(self) -> None:
        names = [e for e, _ in self.engines]
        if self.unseen_engine in names:
            raise ValueError(f"preset {self.name!r}: the unseen engine {self.unseen_engine!r} is also a train engine")
        for e in [*names, self.unseen_engine]:
            if e not in ENGINES:
                raise ValueError(f"preset {self.name!r}: unknown engine {e!r}; known: {', '.join(ENGINES)}")
        if any(w <= 0 for _, w in self.engines) or not self.engines:
            raise ValueError(f"preset {self.name!r}: engine shares must be positive")


CORPUS_PRESETS: dict[str, CorpusPreset] = {
    # tests: seconds on 2 cores (fast engines only)
    "tiny": CorpusPreset("tiny", 200, 40, 30, 30, 20, engines=TINY_ENGINE_SHARES),
    # the CPU demo: ~20 h of train audio from ~70k distinct sentences
    "small": CorpusPreset("small", 24000, 500, 1000, 1000, 600),
    # a GPU: ~100 h of train audio (train sentences repeat, spoken by other voices)
    "medium": CorpusPreset("medium", 120000, 1000, 2000, 2000, 1000),
}


def resolve_preset(preset: str | CorpusPreset) -> CorpusPreset:
    if isinstance(preset, CorpusPreset):
        return preset
    try:
        return CORPUS_PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown corpus preset {preset!r}; choose one of {sorted(CORPUS_PRESETS)}") from None


def engine_speakers(engine: str) -> tuple[list[str], list[str]]:
    """``(seen, held_out)`` speakers of one engine."""
    eng = get_engine(engine)
    held = eng.held_out()
    return [s for s in eng.speakers() if s not in set(held)], held


def speakers_in(cuts: Iterable[Any]) -> set[str]:
    """Speakers of all supervisions of ``cuts`` (a lhotse CutSet or any iterable of cuts)."""
    return {s.speaker for c in cuts for s in c.supervisions}


# ----------------------------------------------------------------------------------------------
# sentences
# ----------------------------------------------------------------------------------------------

def carve_sentences(sentences: Sequence[tuple[str, str]], preset: CorpusPreset,
                    seed: int) -> dict[str, list[tuple[str, str]]]:
    """Disjoint pools of ``(sentence, source)`` per split: each evaluation split takes exactly as
    many sentences as it has utterances, train gets the rest."""
    counts = preset.counts()
    need = sum(counts[s] for s in EVAL_SPLITS)
    if need + min(counts["train"], 1) > len(sentences):
        raise ValueError(f"preset {preset.name!r} needs {need} evaluation sentences plus train sentences, "
                         f"only {len(sentences)} available")
    order = np.random.default_rng([seed, 1000]).permutation(len(sentences))
    shuffled = [sentences[j] for j in order]
    pools: dict[str, list[tuple[str, str]]] = {}
    start = 0
    for split in EVAL_SPLITS:
        pools[split] = shuffled[start:start + counts[split]]
        start += counts[split]
    pools["train"] = shuffled[start:]
    return pools


def _train_sentences(pool: list[tuple[str, str]], seed: int, n: int) -> list[tuple[str, str]]:
    """The ``n`` train sentences: the pool in order, then (when ``n`` exceeds it) further passes,
    each in its own seeded order."""
    if n and not pool:
        raise ValueError("no sentences left for train")
    texts = list(pool[:n])
    epoch = 1
    while len(texts) < n:
        perm = np.random.default_rng([seed, 1001, epoch]).permutation(len(pool))
        texts += [pool[j] for j in perm[: n - len(texts)]]
        epoch += 1
    return texts


def _as_pairs(sentences: Sequence[str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(s, "custom") if isinstance(s, str) else (s[0], s[1]) for s in sentences]


# ----------------------------------------------------------------------------------------------
# utterances
# ----------------------------------------------------------------------------------------------

@dataclass
class _Voices:
    """Per split: the engines that may speak it, their shares and speakers."""

    engines: list[str]
    weights: np.ndarray
    speakers: dict[str, list[str]] = field(default_factory=dict)


def _voices(preset: CorpusPreset, usable: set[str]) -> dict[str, _Voices | None]:
    train = [(e, w) for e, w in preset.engines if e in usable]
    out: dict[str, _Voices | None] = {}
    for split in SPLITS:
        if split == UNSEEN_SPLIT:
            if preset.unseen_engine not in usable:
                out[split] = None
                continue
            out[split] = _Voices([preset.unseen_engine], np.ones(1),
                                 {preset.unseen_engine: get_engine(preset.unseen_engine).speakers()})
            continue
        pick = 1 if split == "test-other" else 0
        pairs = [(e, w) for e, w in train if engine_speakers(e)[pick]]
        if not pairs:
            out[split] = None
            continue
        w = np.array([w for _, w in pairs], dtype=np.float64)
        out[split] = _Voices([e for e, _ in pairs], w / w.sum(), {e: engine_speakers(e)[pick] for e, _ in pairs})
    return out


def _utt_plan(seed: int, split: str, i: int, text: str, source: str, voices: _Voices) -> dict[str, Any]:
    s = SPLITS.index(split)
    rng = np.random.default_rng([seed, s, i])
    engine = voices.engines[int(rng.choice(len(voices.engines), p=voices.weights))]
    speakers = voices.speakers[engine]
    eng = get_engine(engine)
    plan: dict[str, Any] = {
        "utt_id": f"{split}-{i:06d}",
        "split": split,
        "text": text,
        "source": source,
        "engine": engine,
        "engine_revision": eng.revision,
        "speaker": speakers[int(rng.integers(len(speakers)))],
        "params": eng.draw_params(rng),
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
                sentences: Sequence[str] | Sequence[tuple[str, str]] | None = None,
                usable_engines: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per split, one dict per utterance (text, its source, engine, speaker, parameters).

    ``sentences``: ``(text, source)`` pairs or plain texts (source ``custom``); default: the
    preset's sentence sources.  ``usable_engines``: the engines that run here (default: all);
    a split none of whose engines is usable is planned empty.
    """
    preset = resolve_preset(preset)
    if sentences is None:
        sentences = english_sentences(preset.sources) if preset.sources else english_sentences()
    pools = carve_sentences(_as_pairs(sentences), preset, seed)
    voices = _voices(preset, set(ENGINES) if usable_engines is None else set(usable_engines))
    plans: dict[str, list[dict[str, Any]]] = {}
    for split, n in preset.counts().items():
        v = voices[split]
        if v is None or n == 0:
            plans[split] = []
            continue
        pool = pools[split]
        chosen = _train_sentences(pool, seed, n) if split == "train" else pool[:n]
        plans[split] = [_utt_plan(seed, split, i, t, src, v) for i, (t, src) in enumerate(chosen)]
    return plans


def plan_fingerprint(plans: dict[str, list[dict[str, Any]]]) -> str:
    """sha256 of everything that determines the audio and the transcripts."""
    return hashlib.sha256(json.dumps(plans, sort_keys=True).encode()).hexdigest()
