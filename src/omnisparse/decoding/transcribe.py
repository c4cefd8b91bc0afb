"""Audio -> text with a loaded model: :func:`read_audio` (any sample rate resampled to 16 kHz, several
channels averaged, a missing, unreadable, empty or too short file an :class:`AudioError` with a one-line
reason), :func:`transcribe_samples` (offline) and :func:`transcribe_stream` (streaming, printing each
new partial result).

Any sample rate from 1 kHz to 1 MHz is resampled to 16 kHz (an odd rate whose exact ratio to 16 kHz
would need a huge resampling filter, e.g. 15999 Hz, is first taken as the nearest multiple of 100 Hz:
a speed change under 0.5 %); several channels are averaged, block by block as the file is read. A
missing, unreadable, empty or non-regular file, one of another sample rate, and one longer than
:data:`MAX_AUDIO_S` (an hour; refused from its header, before anything is read) print one line on
stderr and make the exit status non-zero; the other files are still transcribed. Memory: the file's
samples as mono float32 at its own rate. Offline decoding attends to the whole file at once (memory
quadratic in its length), so a file longer than :data:`OFFLINE_MAX_S` is decoded chunk by chunk with
the streaming recognizer (bounded memory) when the model was trained for streaming, else refused.

The ``omnisparse transcribe`` command over files (opening the model directory, ``--fast``) is
:func:`omnisparse.deploy.apps.transcribe_files`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from omnisparse.data.features import fbank
from omnisparse.decoding.evaluate import beam_token_bonus, decode_batch
from omnisparse.decoding.streaming import StreamingRecognizer

SAMPLE_RATE = 16000
MAX_AUDIO_S = 3600.0  # longest file transcribed (= omnisparse.data.manifest.MAX_CUT_S)
OFFLINE_MAX_S = 300.0  # longer files are decoded by the streaming recognizer
MIN_RATE, MAX_RATE = 1000, 1_000_000  # sample rates read (Hz)
_BLOCK = 1 << 18  # frames read at a time


class AudioError(ValueError):
    pass


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _resample_rate(sr: int) -> int:
    """The rate to resample from: ``sr``, or the nearest multiple of 100 Hz when the exact ratio to
    16 kHz needs a filter bank of more than 160 phases (seconds and gigabytes for 15999 Hz)."""
    return sr if SAMPLE_RATE // math.gcd(sr, SAMPLE_RATE) <= 160 else max(100, round(sr / 100) * 100)


def read_audio(path: str | Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz; raises AudioError with a one-line reason."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file")
    try:
        f = sf.SoundFile(str(p))
    except Exception as e:  # libsndfile's error types vary by version
        raise AudioError(f"{p}: unreadable audio ({_first_line(e)})") from None
    with f:
        sr, frames = f.samplerate, f.frames
        if not MIN_RATE <= sr <= MAX_RATE:
            raise AudioError(f"{p}: sample rate {sr} Hz is outside the {MIN_RATE}..{MAX_RATE} Hz that are read")
        if frames / sr > MAX_AUDIO_S:
            raise AudioError(f"{p}: {frames / sr:.0f} s of audio; transcribe takes files of at most "
                             f"{MAX_AUDIO_S:.0f} s (1 h; split it)")
        try:  # downmixed block by block: memory for the mono samples only
            blocks = [b.mean(axis=1) for b in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True)]
        except Exception as e:  # noqa: BLE001 - a header that reads, samples that do not decode
            raise AudioError(f"{p}: unreadable audio ({_first_line(e)})") from None
    x = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if x.shape[0] == 0:
        raise AudioError(f"{p}: empty audio (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{p}: audio holds NaN or infinite samples")
    if sr != SAMPLE_RATE:
        from lhotse.augmentation.resample import resample

        x = resample(torch.from_numpy(x)[None], _resample_rate(sr), SAMPLE_RATE)[0].numpy()
    if x.shape[0] < 400:
        raise AudioError(f"{p}: too short ({x.shape[0]} samples at 16 kHz; need at least 25 ms)")
    return np.ascontiguousarray(x, dtype=np.float32)


def transcribe_samples(lm, samples: np.ndarray, mode: str | None = None, method: str = "greedy", fusion=None) -> str:
    """The whole utterance at once; ``fusion``: a loaded token LM (beam search, weight ``decode.lm_scale``)."""
    mode = mode or lm.trained_modes[0]
    feats = lm.normalizer(fbank(samples))[None]
    lens = torch.tensor([feats.shape[1]])
    dec = dataclasses.replace(lm.config.decode, method=method)  # the model's decode settings, this method
    return lm.tokenizer.decode(decode_batch(lm.model, feats, lens, mode, dec, fusion)[0])


def transcribe_stream(lm, samples: np.ndarray, out=None, name: str = "", method: str = "greedy", fusion=None) -> str:
    """Feed one chunk of audio at a time (the model's chunk length) and print each new partial to
    ``out`` (default: the current ``sys.stdout``, looked up at call time). ``method``: greedy or beam
    (width ``decode.beam``; ``fusion``: a loaded token LM fused with weight ``decode.lm_scale``)."""
    out = sys.stdout if out is None else out
    rec = StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, lm.config.decode.max_symbols_per_frame,
                              method=method, beam=lm.config.decode.beam, lm=fusion, lm_scale=lm.config.decode.lm_scale,
                              token_bonus=beam_token_bonus(lm.config.decode, fusion))
    step = lm.model.encoder.frames_per_chunk * 160
    last = None
    for start in range(0, samples.shape[0], step):
        text = rec.accept_audio(samples[start:start + step])
        if text != last:
            print(f"{name}\t[{(start + step) / SAMPLE_RATE:6.2f}s] {text}", file=out, flush=True)
            last = text
    return rec.finalize()
