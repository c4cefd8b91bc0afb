"""SVOX pico (``pico2wave``, Debian libttspico-utils): US and British English female voices x 7
pitch shifts (16 kHz).

Speaker ``pico:<voice>+<shift>``, e.g. ``pico:en-GB+p1``; voices ``en-US``, ``en-GB``; shifts:
:data:`SHIFT_VARIANTS` (-300..+150 cents for these female voices, through sox; see
:func:`shift_cents`).  Parameters per utterance: ``speed`` and ``pitch``, pico's own markup
levels in percent (``<speed level='N'><pitch level='M'>``; 100 is the voice as it is): speed
80..125, pitch 85..115 (pico moves the pitch alone, the formants stay).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf

from omnisparse.data.engines._sox import deb_version, missing_tool, run_tool
from omnisparse.data.engines.base import ShiftVariantEngine

__all__ = ["VOICES", "SPEED_PCT", "PITCH_PCT", "PicoEngine", "pico_markup"]

VOICES = ("en-US", "en-GB")
SPEED_PCT = (80, 125)
PITCH_PCT = (85, 115)
LANG_DIR = "/usr/share/pico/lang"
INSTALL = "apt-get install libttspico-utils (Debian non-free; scripts/setup.sh enables it)"


def pico_markup(text: str, speed: int, pitch: int) -> str:
    """``text`` (XML-escaped) inside pico's speed and pitch markup."""
    body = escape(" ".join(text.split()))
    return f"<speed level='{int(speed)}'><pitch level='{int(pitch)}'>{body}</pitch></speed>"


class PicoEngine(ShiftVariantEngine):
    """pico2wave's two English voices with markup speed / pitch and pitch-shift variants."""

    name = "pico"
    speed_x_realtime = 100.0
    voices = VOICES
    female_voices = VOICES

    def unavailable(self) -> str | None:
        reason = missing_tool("pico2wave", INSTALL) or missing_tool("sox", "apt-get install sox")
        if reason:
            return reason
        for voice in VOICES:
            if not any(f.startswith(voice) for f in _listdir(LANG_DIR)):
                return f"pico voice {voice} not found in {LANG_DIR}: apt-get install libttspico-data (Debian non-free)"
        return None

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"speed": percent, "pitch": percent}``."""
        return {"speed": int(rng.integers(SPEED_PCT[0], SPEED_PCT[1] + 1)),
                "pitch": int(rng.integers(PITCH_PCT[0], PITCH_PCT[1] + 1))}

    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="omnisparse-pico-") as tmp:
            wav = os.path.join(tmp, "out.wav")  # pico2wave wants a path ending in .wav
            run_tool(["pico2wave", "-l", voice, "-w", wav, "--", pico_markup(text, params["speed"], params["pitch"])])
            if not os.path.isfile(wav):
                raise RuntimeError(f"pico2wave -l {voice} wrote no audio for {text[:60]!r}")
            x, sr = sf.read(wav, dtype="float64", always_2d=True)
        return x[:, 0], int(sr)

    def program(self, voice: str) -> str:
        return f"pico2wave -l {voice}"

    def version(self) -> str:
        return "pico2wave " + deb_version("libttspico-utils")


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
