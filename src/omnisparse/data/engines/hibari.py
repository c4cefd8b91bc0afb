"""hibari (PyPI hibari-tts): its bundled voice ``heart`` (US female, distilled from Kokoro-82M's
af_heart; 24 kHz) x 7 pitch shifts.

Speaker ``hibari:heart+<shift>``, e.g. ``hibari:heart+m2``; shifts: :data:`SHIFT_VARIANTS`
(-300..+150 cents for this female voice, through sox; see :func:`shift_cents`).  Parameters per
utterance: ``speed`` (hibari's speed, 0.85..1.2; > 1 is faster), ``f0_scale`` (the predicted
pitch curve x, 0.9..1.1; the spectrum is kept, so this moves the pitch alone) and ``seed`` (the
vocoder's noise; hibari is deterministic for a seed).  Only ``heart`` is used: the other hibari
voices are downloaded on first use.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np

from omnisparse.data.engines.base import PerProcess, ShiftVariantEngine

__all__ = ["VOICE", "SPEED", "F0_SCALE", "HibariEngine"]

VOICE = "heart"
SPEED = (0.85, 1.2)
F0_SCALE = (0.9, 1.1)
INSTALL = "pip install hibari-tts (the 'tts' extra: pip install -e '.[tts]')"


class _Hibari:
    """hibari's model and G2P, loaded once per process on one onnxruntime thread."""

    def __init__(self) -> None:
        import hibari

        self.tts = hibari.Hibari(voice=VOICE, threads=1)
        self.sample_rate = int(hibari.SAMPLE_RATE)

    def synth(self, text: str, speed: float, f0_scale: float, seed: int) -> np.ndarray:
        """float32 samples: :meth:`hibari.Hibari.__call__` with the pitch curve scaled before the
        vocoder (hibari 0.2: ``sess`` -> ``dsp.synth``)."""
        from hibari import dsp

        rng = np.random.default_rng(seed)
        parts = []
        for phonemes in self.tts.phonemize(text):
            ids = self.tts.ids(phonemes)
            if len(ids) < 3:
                continue
            out = self.tts.sess.run(None, {"ids": np.asarray([ids], np.int64),
                                           "speed": np.asarray([speed], np.float32)})
            lh, th, ln, lr, phi, f0 = (o[0] for o in out)
            parts.append(dsp.synth(lh, th, ln, lr, phi, f0 * np.float32(f0_scale), rng))
        if not parts:
            raise RuntimeError(f"hibari: no phonemes for {text[:60]!r}")
        return np.concatenate(parts)


_MODEL = PerProcess(_Hibari, lambda: HibariEngine().unavailable())


class HibariEngine(ShiftVariantEngine):
    """hibari's bundled neural voice with random speed / pitch and pitch-shift variants."""

    name = "hibari"
    speed_x_realtime = 60.0
    voices = (VOICE,)
    female_voices = (VOICE,)

    def unavailable(self) -> str | None:
        spec = importlib.util.find_spec("hibari")  # not imported here: hibari pulls in scipy.fft (~0.5 s)
        if spec is None or not spec.submodule_search_locations:
            return f"python package hibari not found: {INSTALL}"
        assets = os.path.join(list(spec.submodule_search_locations)[0], "assets")
        try:
            with open(os.path.join(assets, "voices.json"), encoding="utf-8") as f:
                info = json.load(f).get(VOICE, {})
        except (OSError, ValueError):
            info = {}
        if not info.get("bundled") or not os.path.isfile(os.path.join(assets, str(info.get("file", "")))):
            return f"hibari voice {VOICE!r} is not inside the installed package: {INSTALL} (0.2.x)"
        return None

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"speed": factor, "f0_scale": factor, "seed": vocoder noise seed}``."""
        return {"speed": round(float(rng.uniform(*SPEED)), 3),
                "f0_scale": round(float(rng.uniform(*F0_SCALE)), 3),
                "seed": int(rng.integers(2**31))}

    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        m = _MODEL.get()
        return m.synth(text, float(params["speed"]), float(params["f0_scale"]), int(params["seed"])), m.sample_rate

    def version(self) -> str:
        try:
            import hibari
        except ImportError:
            return "unknown"
        return f"hibari-tts {hibari.__version__} ({VOICE})"
