"""What the corpus builder needs from a speech synthesiser ("engine").

An engine is one synthesiser family (espeak-ng, MBROLA through espeak-ng, festival, pico, a neural
voice ...).  A *speaker* is ``"<engine>:<voice>+<variant>"``: one voice of the engine with one
variant (an espeak-ng voice variant, or a fixed pitch shift for engines with few voices).  Every
speaker of an engine is listed by :meth:`Engine.speakers`; :meth:`Engine.held_out` names those
kept for ``test-other``, two per voice (20 % of espeak's, 29 % of mbrola's and pico's; none of an
engine with one voice): every voice and every variant is still heard in train, only the
combination is new.

The corpus plans everything in the parent process: :meth:`Engine.draw_params` turns one seeded
``numpy`` generator into the engine's own parameters (speaking rate, pitch, ...; JSON-serialisable).
:meth:`Engine.synthesize` is then a pure function of ``(text, speaker, params)`` run in a worker:
the same arguments give the same samples (byte for byte), whatever the process.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = ["Engine", "EngineUnavailable", "split_speaker"]


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (a program, voice or package is missing); the message says
    what to install."""


def split_speaker(speaker: str) -> tuple[str, str, str]:
    """``"espeak:en-us+f3"`` -> ``("espeak", "en-us", "f3")``."""
    engine, _, rest = speaker.partition(":")
    voice, _, variant = rest.partition("+")
    if not engine or not voice or not variant:
        raise ValueError(f"not a speaker name of the form ENGINE:VOICE+VARIANT: {speaker!r}")
    return engine, voice, variant


class Engine(abc.ABC):
    #: short family name, the prefix of every speaker name ("espeak", "festival", ...)
    name: str = ""
    #: bumped whenever the same (text, speaker, params) would give other samples: it is part of every
    #: planned utterance, so a corpus directory made by an older revision is refused, not reused
    revision: int = 1
    #: roughly how many seconds of audio per second of one CPU core (for planning messages only)
    speed_x_realtime: float = 1.0

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """None when the engine works here, else one line saying what is missing and how to get it."""

    @abc.abstractmethod
    def speakers(self) -> list[str]:
        """Every speaker of the engine, ``"<name>:<voice>+<variant>"``, in a fixed order."""

    def held_out(self) -> list[str]:
        """The speakers kept for ``test-other``: voice ``a`` (in :meth:`speakers` order) holds out
        variants ``2a`` and ``2a + 1`` (mod its number of variants); a voice with fewer than 3
        variants holds out none.  Empty for an engine with a single voice: a held-out variant
        would then be heard nowhere else."""
        by_voice: dict[str, list[str]] = {}
        for s in self.speakers():
            _, voice, _ = split_speaker(s)
            by_voice.setdefault(voice, []).append(s)
        if len(by_voice) < 2:
            return []
        out = []
        for a, (_voice, spk) in enumerate(by_voice.items()):
            for k in (2 * a, 2 * a + 1):
                if len(spk) > 2:
                    out.append(spk[k % len(spk)])
        order = {s: i for i, s in enumerate(self.speakers())}
        return sorted(set(out), key=order.__getitem__)

    @abc.abstractmethod
    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """The engine's own random parameters of one utterance (JSON-serialisable)."""

    @abc.abstractmethod
    def synthesize(self, text: str, speaker: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        """``(samples, sample_rate)``: float64 mono samples in [-1, 1] at the engine's own rate.
        Raises RuntimeError with the engine's message when synthesis fails."""

    def version(self) -> str:
        """The engine's version string (recorded in corpus.json)."""
        return "unknown"
