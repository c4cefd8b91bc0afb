"""Audio -> text with a loaded model: :func:`read_audio` (any sample rate resampled to 16 kHz, several
channels averaged, a missing, unreadable, empty or too short file an :class:`AudioError` with a one-line
reason), :func:`transcribe_samples` (offline) and :func:`transcribe_stream` (streaming, printing each
new partial result).

The ``omnisparse transcribe`` command over files (opening the model directory, ``--fast``) is
:func:`omnisparse.deploy.apps.transcribe_files`.
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
