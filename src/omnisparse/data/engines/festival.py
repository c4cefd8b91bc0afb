"""festival with its US male diphone voice ``ked_diphone`` (Debian festvox-kdlpc16k; 16 kHz) x 7
pitch shifts.

Speaker ``festival:ked+<shift>``, e.g. ``festival:ked+m1``; shifts: :data:`SHIFT_VARIANTS`
(-150..+300 cents for this male voice, through sox; see :func:`shift_cents`).  Parameters per
utterance: ``stretch`` (festival's ``Duration_Stretch``, 0.85..1.25; the voice's own is 1.1),
``f0_mean`` (Hz, 85..135; the voice's 105) and ``f0_std`` (Hz, 10..25; the voice's 15), the
targets of festival's ``int_lr_params``.
This is the only festival voice used: the others are kept for independent evaluation.

A festival process costs 0.3-1 s to start, so each worker process keeps one (``festival --pipe``,
started on first use, restarted when it dies) and sets every parameter before each utterance, so
an utterance does not depend on the ones before it.  No other festival voice is ever loaded, not
even as festival's start-up default.
"""

from __future__ import annotations

import atexit
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from typing import Any

import numpy as np
import soundfile as sf

from omnisparse.data.engines._sox import deb_version, missing_tool, tool_version
from omnisparse.data.engines.base import ShiftVariantEngine

__all__ = ["VOICE", "FestivalEngine", "scheme_string"]

VOICE = "ked"
VOICE_DIR = "/usr/share/festival/voices/english/ked_diphone"
STRETCH = (0.85, 1.25)
F0_MEAN_HZ = (85.0, 135.0)
F0_STD_HZ = (10.0, 25.0)
TIMEOUT_S = 60.0
INSTALL = "apt-get install festival festvox-kdlpc16k"

_DONE = "@@omnisparse-done@@"


def scheme_string(text: str) -> str:
    """``text`` as a festival (SIOD) string literal, one line."""
    return '"' + " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Festival:
    """One ``festival --pipe`` of this process, talked to over stdin; its stderr (unbuffered,
    unlike its stdout) carries the messages and the end-of-command marker."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # festival loads its default voice on start-up, the first installed one of a list that
        # starts with voices reserved for evaluation: a ~/.festivalrc of our own names ked first
        home = tempfile.mkdtemp(prefix="omnisparse-festival-")
        try:
            with open(os.path.join(home, ".festivalrc"), "w", encoding="utf-8") as f:
                f.write("(set! voice_default 'voice_ked_diphone)\n")
            self.proc = subprocess.Popen(["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, env={**os.environ, "HOME": home})
            self.command("(voice_ked_diphone)")  # answered once start-up, which reads the file, is over
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if self.command('(format stderr "%s\\n" current-voice)').strip() != "ked_diphone":
            self.close()
            raise RuntimeError("festival could not select voice_ked_diphone: " + INSTALL)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def command(self, scheme: str) -> str:
        """Run one scheme expression; what it wrote to stderr."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.write(f'{scheme}\n(format stderr "{_DONE}\\n")\n'.encode())
            self.proc.stdin.flush()
        except OSError:
            raise RuntimeError(f"festival exited ({self.proc.poll()})") from None
        buf = b""
        deadline = time.monotonic() + TIMEOUT_S
        fd = self.proc.stderr.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while _DONE.encode() not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.close()
                    raise RuntimeError(f"festival did not answer within {TIMEOUT_S:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.close()
                    said = " ".join(buf.decode(errors="replace").split())[:300]
                    raise RuntimeError(f"festival exited ({self.proc.returncode}){': ' + said if said else ''}")
                buf += chunk
        return buf.decode(errors="replace").split(_DONE)[0]

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # a forked child must not stop its parent's festival
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_PROC: _Festival | None = None


def _festival() -> _Festival:
    global _PROC
    if _PROC is None or not _PROC.alive():
        if _PROC is not None:
            _PROC.close()
        _PROC = _Festival()
    return _PROC


@atexit.register
def _stop() -> None:
    if _PROC is not None:
        _PROC.close()


class FestivalEngine(ShiftVariantEngine):
    """festival's ked diphone voice with random duration / intonation and pitch-shift variants."""

    name = "festival"
    speed_x_realtime = 120.0
    voices = (VOICE,)

    def unavailable(self) -> str | None:
        reason = missing_tool("festival", INSTALL) or missing_tool("sox", "apt-get install sox")
        if reason:
            return reason
        if not os.path.isdir(VOICE_DIR):
            return f"festival voice ked_diphone not found in {VOICE_DIR}: {INSTALL}"
        return None

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"stretch": duration factor, "f0_mean": Hz, "f0_std": Hz}``."""
        return {"stretch": round(float(rng.uniform(*STRETCH)), 3),
                "f0_mean": round(float(rng.uniform(*F0_MEAN_HZ)), 1),
                "f0_std": round(float(rng.uniform(*F0_STD_HZ)), 1)}

    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        if not any(c.isalnum() for c in text):
            raise RuntimeError(f"festival: nothing to say in {text[:60]!r}")  # it would crash on it
        fd, wav = tempfile.mkstemp(prefix="omnisparse-festival-", suffix=".wav")
        os.close(fd)
        lr = (f"((target_f0_mean {float(params['f0_mean'])}) (target_f0_std {float(params['f0_std'])}) "
              "(model_f0_mean 170) (model_f0_std 34))")
        scheme = (f"(Parameter.set 'Duration_Stretch {float(params['stretch'])})"
                  f"(set! int_lr_params '{lr})"
                  f"(utt.save.wave (utt.synth (Utterance Text {scheme_string(text)})) {scheme_string(wav)} 'riff)")
        try:
            messages = _festival().command(scheme)
            if os.path.getsize(wav) <= 44:
                raise RuntimeError(f"festival wrote no audio: {' '.join(messages.split())[:300] or 'no message'}")
            x, sr = sf.read(wav, dtype="float64", always_2d=True)
        finally:
            if os.path.exists(wav):
                os.unlink(wav)
        return x[:, 0], int(sr)

    def version(self) -> str:
        return f"festival {tool_version(['festival', '--version'])}, festvox-kdlpc16k {deb_version('festvox-kdlpc16k')}"
