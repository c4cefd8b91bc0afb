"""``omnisparse transcribe``: audio files -> text, offline or streaming with partial results.

Any sample rate is resampled to 16 kHz; several channels are averaged. A missing, unreadable or
empty file prints one line on stderr and makes the exit status non-zero; the other files are still
transcribed.

``--fast`` (``fast=True``) first runs the model through :func:`omnisparse.deploy.fast.optimize_for_cpu`
(per-Linear execution kind chosen by timing on this machine, feed-forward shrinking; ``dtype="int8"``
for int8 combined with sparsity; ``plan`` re-applies a saved plan without timing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from omnisparse.config import DecodeConfig
from omnisparse.data.features import fbank
from omnisparse.decoding.evaluate import decode_batch
from omnisparse.decoding.streaming import StreamingRecognizer

SAMPLE_RATE = 16000


class AudioError(ValueError):
    pass


def read_audio(path: str | Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz; raises AudioError with a one-line reason."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's error types vary by version
        raise AudioError(f"{p}: unreadable audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: empty audio (0 samples)")
    x = data.mean(axis=1)
    if not np.isfinite(x).all():
        raise AudioError(f"{p}: audio holds NaN or infinite samples")
    if sr != SAMPLE_RATE:
        from lhotse.augmentation.resample import resample

        x = resample(torch.from_numpy(x)[None], sr, SAMPLE_RATE)[0].numpy()
    if x.shape[0] < 400:
        raise AudioError(f"{p}: too short ({x.shape[0]} samples at 16 kHz; need at least 25 ms)")
    return np.ascontiguousarray(x, dtype=np.float32)


def transcribe_samples(lm, samples: np.ndarray, mode: str | None = None, method: str = "greedy") -> str:
    mode = mode or lm.trained_modes[0]
    feats = lm.normalizer(fbank(samples))[None]
    lens = torch.tensor([feats.shape[1]])
    dec = DecodeConfig(method=method, beam=lm.config.decode.beam, max_symbols_per_frame=lm.config.decode.max_symbols_per_frame)
    return lm.tokenizer.decode(decode_batch(lm.model, feats, lens, mode, dec)[0])


def transcribe_stream(lm, samples: np.ndarray, out=None, name: str = "") -> str:
    """Feed one chunk of audio at a time (the model's chunk length) and print each new partial to
    ``out`` (default: the current ``sys.stdout``, looked up at call time)."""
    out = sys.stdout if out is None else out
    rec = StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, lm.config.decode.max_symbols_per_frame)
    step = lm.model.encoder.frames_per_chunk * 160
    last = None
    for start in range(0, samples.shape[0], step):
        text = rec.accept_audio(samples[start:start + step])
        if text != last:
            print(f"{name}\t[{(start + step) / SAMPLE_RATE:6.2f}s] {text}", file=out, flush=True)
            last = text
    return rec.finalize()


def transcribe_files(model_path: str, audio: list[str], stream: bool = False, method: str = "greedy",
                     fast: bool = False, dtype: str = "fp32", plan: str | None = None) -> int:
    from omnisparse.decoding.loading import load_model

    lm = load_model(model_path)
    if fast or plan:
        from omnisparse.deploy.fast import optimize_for_cpu

        lm.model, _ = optimize_for_cpu(lm.model, plan=plan, dtype=dtype, inplace=True)
    if stream:
        lm.check_mode("stream")
    status = 0
    for path in audio:
        try:
            samples = read_audio(path)
        except AudioError as e:
            print(f"omnisparse: error: {e}", file=sys.stderr)
            status = 1
            continue
        try:
            text = transcribe_stream(lm, samples, name=path) if stream else transcribe_samples(lm, samples, method=method)
        except ValueError as e:  # fbank's input checks (e.g. amplitudes so large the power overflows)
            print(f"omnisparse: error: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}\t{text}", flush=True)
    return status
