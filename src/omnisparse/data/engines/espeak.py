"""espeak-ng: 8 English accents x 10 voice variants (formant synthesis, 22.05 kHz).

Speaker ``espeak:<accent>+<variant>``, e.g. ``espeak:en-us+f3``; run as
``espeak-ng -v ACCENT+VARIANT -s RATE -p PITCH --stdout --stdin``.  Parameters per utterance:
``rate`` (words per minute, 130..200) and ``pitch`` (espeak-ng's 0..99 scale, 30..70).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omnisparse.data.engines._sox import finish, missing_tool, read_wav, run_tool, tool_version
from omnisparse.data.engines.base import Engine

__all__ = ["ACCENTS", "VARIANTS", "RATE_WPM", "PITCH", "EspeakEngine", "espeak_wav", "espeak_version",
           "draw_rate_pitch"]

# English voices (``espeak-ng --voices=en``).  ``en`` is British English (gmw/en); the name ``en-gb``
# is avoided on purpose: it resolves to an MBROLA voice entry and ignores the variant, so every
# ``en-gb+VARIANT`` sounds the same.
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
# Voice variants (``espeak-ng --voices=variant``): intelligible male / female / Klatt voices.
# Left out: whisper, croak, the breathy f5, novelty voices (robots, "Demonic", ...).
VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt")
RATE_WPM = (130, 200)  # espeak-ng -s, inclusive
PITCH = (30, 70)  # espeak-ng -p, inclusive

INSTALL = "apt-get install espeak-ng"


def espeak_wav(voice: str, text: str, rate: int, pitch: int, timeout: float = 120.0) -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of ``espeak-ng -v voice``; RuntimeError when it fails or says nothing."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "--stdout", "--stdin"]
    out = run_tool(cmd, stdin=(" ".join(text.split()) + "\n").encode(), timeout=timeout)
    if len(out) <= 44:
        raise RuntimeError(f"espeak-ng -v {voice} produced no audio for {text[:60]!r}")
    x, sr = read_wav(out, "espeak-ng")
    return finish(x, f"espeak-ng -v {voice}"), sr


def espeak_version() -> str:
    """``"espeak-ng 1.51"``."""
    return f"espeak-ng {tool_version(['espeak-ng', '--version'])}"


def draw_rate_pitch(rng: np.random.Generator) -> dict[str, Any]:
    """``{"rate": words per minute, "pitch": 0..99}``, uniform over :data:`RATE_WPM` and :data:`PITCH`."""
    return {"rate": int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
            "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1))}


class EspeakEngine(Engine):
    """espeak-ng's English accents with its male / female / Klatt variants."""

    name = "espeak"
    speed_x_realtime = 150.0
    voices = ACCENTS
    variants = VARIANTS
    article = "an"

    def unavailable(self) -> str | None:
        return missing_tool("espeak-ng", INSTALL)

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"rate": words per minute, "pitch": 0..99}`` (the draws of the first corpus)."""
        return draw_rate_pitch(rng)

    def synthesize(self, text: str, speaker: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        accent, variant = self.voice_variant(speaker)
        return espeak_wav(f"{accent}+{variant}", text, params["rate"], params["pitch"])

    def version(self) -> str:
        return espeak_version()
