"""Helpers shared by the engines: running a program, sox on a numpy array, the pitch-shift variants.

Engines with few voices get their *variants* from a fixed set of sox pitch shifts
(:data:`SHIFT_VARIANTS`, :func:`shift_cents`); sox's ``pitch`` changes the pitch and the formants
together (a different-sized vocal tract) and keeps the duration.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
from typing import Sequence

import numpy as np
import soundfile as sf

__all__ = ["SHIFT_VARIANTS", "shift_cents", "run_tool", "tool_output", "tool_version", "deb_version", "missing_tool",
           "sox_effects", "pitch_shift", "read_wav", "finish"]

#: pitch-shift variants: three steps down ("m3") to three steps up ("p3"); "0" is the voice as it is
SHIFT_VARIANTS = ("m3", "m2", "m1", "0", "p1", "p2", "p3")
#: cents per step (toward the other sex's range, away from it)
STEP_TOWARD, STEP_AWAY = 100, 50

_SOX_RAW = ["-t", "raw", "-e", "floating-point", "-b", "64", "-L", "-c", "1"]


def shift_cents(variant: str, female: bool) -> int:
    """The pitch shift (cents) of ``variant`` for a female or male voice.

    Steps are 100 cents toward the other sex and 50 away: a female voice spans -300..+150 cents,
    a male one -150..+300.  300 cents moves the formants by 19 %, about the difference between
    adult men and women; the same shift away from the other sex made child-like or outsized voices
    (pocketsphinx's word error rate on pico en-US went from 34 % to 101 % at +300 cents).
    """
    if variant not in SHIFT_VARIANTS:
        raise ValueError(f"unknown pitch-shift variant {variant!r}; known: {', '.join(SHIFT_VARIANTS)}")
    if variant == "0":
        return 0
    up = variant[0] == "p"
    step = STEP_AWAY if up == female else STEP_TOWARD
    return (step if up else -step) * int(variant[1:])


def missing_tool(program: str, install: str) -> str | None:
    """None when ``program`` is on PATH, else ``"<program> not found: <install>"``."""
    return None if shutil.which(program) else f"{program} not found: {install}"


def run_tool(cmd: Sequence[str], stdin: bytes | None = None, timeout: float = 120.0) -> bytes:
    """stdout of ``cmd``; RuntimeError with the program's one-line message when it fails."""
    try:
        r = subprocess.run(list(cmd), input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout:g} s") from None
    except OSError as e:
        raise RuntimeError(f"{cmd[0]} could not start: {e.strerror}") from None
    if r.returncode != 0:
        msg = " ".join(r.stderr.decode(errors="replace").split())[:300]
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {msg or 'no message'}")
    return r.stdout


def tool_output(cmd: Sequence[str]) -> str:
    """stdout and stderr of a program (for version banners); "" when it cannot be run."""
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
        return r.stdout + r.stderr
    except (OSError, subprocess.SubprocessError):
        return ""


def tool_version(cmd: Sequence[str], pattern: str = r"\d+(?:\.\w+)+") -> str:
    """The first match of ``pattern`` in a program's version output, "unknown" when none."""
    m = re.search(pattern, tool_output(cmd))
    return m.group(m.lastindex or 0) if m else "unknown"


def deb_version(package: str) -> str:
    """The installed Debian package's version, "unknown" without it or without dpkg."""
    try:
        return run_tool(["dpkg-query", "-W", "-f", "${Version}", package], timeout=30).decode().strip() or "unknown"
    except RuntimeError:
        return "unknown"


def sox_effects(x: np.ndarray, sample_rate: int, effects: Sequence[str], timeout: float = 120.0) -> np.ndarray:
    """``x`` (mono, any float scale) through the sox ``effects`` chain at ``sample_rate`` Hz; float64 out.

    The signal is sent at half its peak and scaled back, so effects that raise peaks (``pitch``)
    are not clipped by sox.
    """
    x = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x.copy()
    cmd = ["sox", "-R", "-D", "-V1", *_SOX_RAW, "-r", str(sample_rate), "-", *_SOX_RAW, "-", *effects]
    out = run_tool(cmd, stdin=(x * (0.5 / peak)).astype("<f8").tobytes(), timeout=timeout)
    return np.frombuffer(out, dtype="<f8") * (peak / 0.5)


def pitch_shift(x: np.ndarray, sample_rate: int, cents: float) -> np.ndarray:
    """``x`` shifted by ``cents`` (duration kept; formants move with the pitch); 0 returns a copy."""
    if round(cents) == 0:
        return np.asarray(x, dtype=np.float64).copy()
    return sox_effects(x, sample_rate, ["pitch", str(int(round(cents)))])


def read_wav(data: bytes, program: str) -> tuple[np.ndarray, int]:
    """``(float64 mono samples, rate)`` of a WAV file's bytes.

    16-bit PCM is parsed here because programs writing to a pipe (espeak-ng, mbrola) cannot seek
    back to fill in the sizes: the data chunk then says 0 or ~2 GB and runs to the end of the bytes.
    """
    fmt = data.find(b"fmt ", 12)
    pos = data.find(b"data", 12)
    if data[:4] == b"RIFF" and 0 < fmt < pos and len(data) >= pos + 8:
        tag, channels, rate = struct.unpack_from("<HHI", data, fmt + 8)
        bits = struct.unpack_from("<H", data, fmt + 22)[0]
        if tag == 1 and bits == 16 and channels >= 1:
            size = struct.unpack_from("<I", data, pos + 4)[0]
            body = data[pos + 8:]
            body = body[:size] if 0 < size <= len(body) else body
            body = body[: len(body) // (2 * channels) * 2 * channels]
            x = np.frombuffer(body, dtype="<i2").reshape(-1, channels)[:, 0] / 32768.0
            return x, int(rate)
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise RuntimeError(f"{program} wrote no readable WAV ({len(data)} bytes): {e}") from None
    return x[:, 0], int(sr)


def finish(x: np.ndarray, program: str) -> np.ndarray:
    """float64 mono in [-1, 1]; RuntimeError when ``x`` is empty, silent or not finite."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) == 0 or not np.all(np.isfinite(x)) or not np.any(x):
        raise RuntimeError(f"{program} produced no audio ({len(x)} samples)")
    peak = float(np.max(np.abs(x)))
    return x / peak if peak > 1.0 else x
