"""MBROLA diphone voices driven by espeak-ng: 4 voices x 7 pitch shifts (16 kHz).

Speaker ``mbrola:<voice>+<shift>``, e.g. ``mbrola:mb-us2+p1``.  Voices: ``mb-us1`` (US female),
``mb-us2`` and ``mb-us3`` (US male), ``mb-en1`` (British male).  Shifts: :data:`SHIFT_VARIANTS`
(through sox; -300..+150 cents for the female voice, -150..+300 for the male ones: see
:func:`shift_cents`).  Parameters per utterance: ``rate`` (words per minute, 130..200) and
``pitch`` (espeak-ng's 0..99 scale, 30..70), as for espeak.

espeak-ng writes the phonemes (``--pho``) and mbrola is run on them here rather than inside
espeak-ng, which on a diphone missing from the database silently puts silence in its place
(mb-us3 has no ``O2``: every "on", "long", "law" lost its vowel in ~1 utterance in 5).  Instead
phonemes a database lacks are renamed (:data:`PHONEME_FIXES`), and for a diphone it lacks a
marked phoneme (syllabic ``n-``, ``l=``) becomes its plain form, or else a 10 ms pause goes
between the two (17 repairs in 2,000 fortunes sentences); what still fails (none of them) is a
RuntimeError.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from omnisparse.data.engines._sox import missing_tool, read_wav, run_tool, tool_version
from omnisparse.data.engines.base import ShiftVariantEngine
from omnisparse.data.engines.espeak import draw_rate_pitch, espeak_version

__all__ = ["VOICES", "PHONEME_FIXES", "MbrolaEngine", "mbrola_pho"]

#: espeak-ng voice -> MBROLA database (Debian package mbrola-<name>)
VOICES = {"mb-us1": "us1", "mb-us2": "us2", "mb-us3": "us3", "mb-en1": "en1"}
FEMALE = ("mb-us1",)
MBROLA_DIR = "/usr/share/mbrola"
#: phonemes espeak-ng's tables emit that the database does not have -> the nearest one it has
PHONEME_FIXES = {"us3": {"O2": "O"}}
#: mbrola output gain: espeak-ng's full scale saturates on some plosives of mb-us2
VOLUME = 0.7
PAUSE_MS = 10
MAX_REPAIRS = 16

_BANNER = r"MBROLA\s+(\S+)"
_UNKNOWN = re.compile(r"Unknown recovery for (\S+)-(\S+) segment")


def _install() -> str:
    return ("apt-get install espeak-ng mbrola " + " ".join(f"mbrola-{db}" for db in VOICES.values())
            + " (Debian contrib/non-free; scripts/setup.sh enables it)")


def mbrola_pho(voice: str, text: str, rate: int, pitch: int) -> list[list[str]]:
    """espeak-ng's MBROLA phoneme lines for ``text``, each split into its tab-separated fields."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "-q", "--pho", "--stdin"]
    pho = run_tool(cmd, stdin=(" ".join(text.split()) + "\n").encode()).decode()
    fixes = PHONEME_FIXES.get(VOICES[voice], {})
    lines = []
    for line in pho.splitlines():
        fields = line.split("\t")
        if fields and fields[0]:
            fields[0] = fixes.get(fields[0], fields[0])
            lines.append(fields)
    if not any(f[0] != "_" for f in lines):
        raise RuntimeError(f"espeak-ng -v {voice} produced no phonemes for {text[:60]!r}")
    return lines


def _base(phoneme: str) -> str:
    """``"n-"`` -> ``"n"``, ``"l="`` -> ``"l"``, ``"O2"`` -> ``"O"`` (espeak-ng's marked variants)."""
    return re.sub(r"(?<=\w)[-=0-9]+$", "", phoneme)


def _repair(lines: list[list[str]], a: str, b: str) -> bool:
    """Make the unknown diphone ``a-b`` known wherever it occurs: a marked phoneme (syllabic,
    numbered) becomes its plain form, else a short pause goes between the two; False when
    neither applies."""
    out: list[list[str]] = []
    changed = False
    for i, fields in enumerate(lines):
        out.append(fields)
        if fields[0] != a or i + 1 >= len(lines) or lines[i + 1][0] != b:
            continue
        if _base(b) != b:
            lines[i + 1][0] = _base(b)
        elif _base(a) != a:
            fields[0] = _base(a)
        elif "_" not in (a, b):
            out.append(["_", str(PAUSE_MS)])
        else:
            continue
        changed = True
    lines[:] = out
    return changed


def _run_mbrola(db: str, lines: list[list[str]]) -> bytes:
    """The WAV bytes mbrola makes of ``lines``, repairing unknown diphones (:func:`_repair`)."""
    path = os.path.join(MBROLA_DIR, db, db)
    for _ in range(MAX_REPAIRS + 1):
        pho = ("\n".join("\t".join(f) for f in lines) + "\n").encode()
        try:
            return run_tool(["mbrola", "-v", str(VOLUME), path, "-", "-.wav"], stdin=pho)
        except RuntimeError as e:
            m = _UNKNOWN.search(str(e))
            if m is None or not _repair(lines, m.group(1), m.group(2)):
                raise
    raise RuntimeError(f"mbrola {db}: more than {MAX_REPAIRS} unknown diphones")


class MbrolaEngine(ShiftVariantEngine):
    """MBROLA's US / British diphone voices with sox pitch-shift variants."""

    name = "mbrola"
    speed_x_realtime = 100.0
    voices = tuple(VOICES)
    female_voices = FEMALE
    article = "an"

    def unavailable(self) -> str | None:
        for program in ("espeak-ng", "mbrola", "sox"):
            reason = missing_tool(program, _install())
            if reason:
                return reason
        for db in VOICES.values():
            if not os.path.isfile(os.path.join(MBROLA_DIR, db, db)):
                return f"MBROLA voice {db} not found in {MBROLA_DIR}: {_install()}"
        return None

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"rate": words per minute, "pitch": 0..99}``, as for espeak."""
        return draw_rate_pitch(rng)

    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        lines = mbrola_pho(voice, text, params["rate"], params["pitch"])
        return read_wav(_run_mbrola(VOICES[voice], lines), "mbrola")

    def program(self, voice: str) -> str:
        return f"mbrola {voice}"

    def version(self) -> str:
        """``"mbrola 3.02b, espeak-ng 1.51"`` (mbrola shows its version only in its usage banner)."""
        return f"mbrola {tool_version(['mbrola'], _BANNER)}, {espeak_version()}"
