"""What the corpus builder needs from a speech synthesiser ("engine").

An engine is one synthesiser family (espeak-ng, MBROLA through espeak-ng, festival, pico, a neural
voice ...).  A *speaker* is ``"<engine>:<voice>+<variant>"``: one voice of the engine with one
variant (an espeak-ng voice variant, or a fixed pitch shift for engines with few voices: those are
:class:`ShiftVariantEngine`).  Every speaker of an engine is listed by :meth:`Engine.speakers`
(:attr:`Engine.voices` x :attr:`Engine.variants`); :meth:`Engine.held_out` names those
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
import os
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from omnisparse.data.engines._sox import SHIFT_VARIANTS, finish, pitch_shift, shift_cents

__all__ = ["Engine", "EngineUnavailable", "PerProcess", "ShiftVariantEngine", "split_speaker"]

T = TypeVar("T")


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
    #: the engine's voices and variants, in speaker order: every voice is heard with every variant
    voices: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    #: the article of the name in error messages ("an mbrola speaker")
    article: str = "a"

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """None when the engine works here, else one line saying what is missing and how to get it."""

    def speakers(self) -> list[str]:
        """Every speaker of the engine, ``"<name>:<voice>+<variant>"``, in a fixed order."""
        return [f"{self.name}:{v}+{s}" for v in self.voices for s in self.variants]

    def voice_variant(self, speaker: str) -> tuple[str, str]:
        """``(voice, variant)`` of one of :meth:`speakers`; ValueError for any other name."""
        engine, voice, variant = split_speaker(speaker)
        if engine != self.name or voice not in self.voices or variant not in self.variants:
            raise ValueError(f"not {self.article} {self.name} speaker: {speaker!r}")
        return voice, variant

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


class ShiftVariantEngine(Engine):
    """An engine with few voices, each heard at every pitch shift of :data:`SHIFT_VARIANTS` (sox,
    after synthesis; the cents depend on the voice's sex, see :func:`shift_cents`).

    Subclasses set :attr:`voices` and :attr:`female_voices` and synthesise one voice as it is
    (:meth:`synthesize_voice`)."""

    variants = SHIFT_VARIANTS
    #: the voices shifted as female ones; the others as male ones
    female_voices: tuple[str, ...] = ()

    @abc.abstractmethod
    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        """``(samples, sample_rate)`` of ``voice`` unshifted: mono samples of any float dtype, not yet
        checked or scaled (:func:`finish` does that).  ``voice`` is one of :attr:`voices`."""

    def program(self, voice: str) -> str:
        """What made the audio of ``voice``, for error messages."""
        return self.name

    def synthesize(self, text: str, speaker: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        voice, variant = self.voice_variant(speaker)
        x, sr = self.synthesize_voice(text, voice, params)
        program = self.program(voice)
        x = finish(x, program)
        return finish(pitch_shift(x, sr, shift_cents(variant, female=voice in self.female_voices)), program), sr


class PerProcess(Generic[T]):
    """One ``T`` per process, made by ``make`` on first use after ``unavailable`` (the engine's
    check) found nothing missing, else :class:`EngineUnavailable`.

    A forked worker makes its own rather than use its parent's: an onnxruntime session's thread pool
    does not survive a fork."""

    def __init__(self, make: Callable[[], T], unavailable: Callable[[], str | None]) -> None:
        self._make = make
        self._unavailable = unavailable
        self._value: T | None = None
        self._pid = -1

    def get(self) -> T:
        if self._value is None or self._pid != os.getpid():
            reason = self._unavailable()
            if reason:
                raise EngineUnavailable(reason)
            self._value = self._make()
            self._pid = os.getpid()
        return self._value
