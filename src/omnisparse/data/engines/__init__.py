"""The speech synthesisers ("engines") of the corpus: see :mod:`omnisparse.data.engines.base`.

``ENGINES`` maps each name to its engine, in a fixed order (espeak, mbrola, festival, hibari,
piper, pico).  Importing this package starts nothing: programs run, and models load, on the first
synthesis of each process.
"""

from __future__ import annotations

from omnisparse.data.engines.base import Engine, EngineUnavailable, split_speaker
from omnisparse.data.engines.espeak import EspeakEngine
from omnisparse.data.engines.festival import FestivalEngine
from omnisparse.data.engines.hibari import HibariEngine
from omnisparse.data.engines.mbrola import MbrolaEngine
from omnisparse.data.engines.pico import PicoEngine
from omnisparse.data.engines.piper import PiperEngine

__all__ = ["ENGINES", "Engine", "EngineUnavailable", "available_engines", "get_engine", "split_speaker"]

ENGINES: dict[str, Engine] = {e.name: e for e in (EspeakEngine(), MbrolaEngine(), FestivalEngine(), HibariEngine(),
                                                  PiperEngine(), PicoEngine())}


def get_engine(name: str) -> Engine:
    """The engine called ``name``; ValueError naming the known ones otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown speech engine {name!r}; known: {', '.join(ENGINES)}") from None


def available_engines() -> dict[str, str | None]:
    """``{name: None when it runs here, else the one-line reason (what to install)}``."""
    return {name: engine.unavailable() for name, engine in ENGINES.items()}
