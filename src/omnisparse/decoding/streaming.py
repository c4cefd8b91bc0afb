"""Streaming recognition: audio in pieces -> fbank -> ``model.infer`` -> greedy, with explicit state.

``StreamingFbank`` reproduces the offline 80-dim fbank (lhotse, ``snip_edges=False``) exactly while
receiving audio in arbitrary pieces: frame k covers samples [160k - 120, 160k + 280) of the signal,
the first 120 samples are mirrored at the start and the end is mirrored as Kaldi does once the
stream is finalised. ``StreamingRecognizer`` chains it with the encoder's ``infer`` (per-layer
K/V caches) and frame-synchronous greedy decoding, so its final transcript equals offline
stream-mode greedy decoding of the same audio.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from lhotse import FbankConfig
from lhotse.features.kaldi.layers import Wav2LogFilterBank

from omnisparse.data.features import NUM_MEL_BINS
from omnisparse.decoding.beam_search import beam_step_frames, init_beam
from omnisparse.decoding.greedy import greedy_step_frames, init_greedy

SHIFT = 160  # samples per 10 ms frame at 16 kHz
WINDOW = 400  # 25 ms
LEFT_PAD = (WINDOW - SHIFT) // 2  # 120


def _snip_extractor() -> Wav2LogFilterBank:
    cfg = FbankConfig(num_mel_bins=NUM_MEL_BINS, sampling_rate=16000, dither=0.0)
    d = cfg.to_dict()
    d["snip_edges"] = True
    d.pop("device", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Wav2LogFilterBank(**d).eval()


class StreamingFbank:
    """Incremental fbank. ``accept(samples) -> (n, 80)`` new frames; ``finalize() -> (m, 80)`` the rest."""

    def __init__(self):
        self.ext = _snip_extractor()
        self.padded = np.zeros(0, dtype=np.float32)  # the mirrored-left-padded signal, from sample p0 on
        self.p0 = 0
        self.head = np.zeros(0, dtype=np.float32)  # raw samples before the left pad could be built
        self.started = False
        self.num_samples = 0
        self.next_frame = 0

    def _frames(self, k0: int, k1: int, sig: np.ndarray) -> torch.Tensor:
        if k1 <= k0:
            return torch.zeros(0, NUM_MEL_BINS)
        seg = sig[SHIFT * k0 - self.p0: SHIFT * (k1 - 1) + WINDOW - self.p0]
        with torch.no_grad():
            return self.ext(torch.from_numpy(np.ascontiguousarray(seg))[None])[0]

    def accept(self, samples: np.ndarray) -> torch.Tensor:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.num_samples += samples.size
        if not self.started:
            self.head = np.concatenate([self.head, samples])
            if self.head.size < LEFT_PAD:
                return torch.zeros(0, NUM_MEL_BINS)
            self.padded = np.concatenate([self.head[:LEFT_PAD][::-1], self.head])
            self.started = True
        else:
            self.padded = np.concatenate([self.padded, samples])
        avail = self.p0 + self.padded.size  # padded samples received
        k1 = (avail - WINDOW) // SHIFT + 1 if avail >= WINDOW else 0
        out = self._frames(self.next_frame, k1, self.padded)
        if k1 > self.next_frame:
            self.next_frame = k1
            drop = SHIFT * self.next_frame - self.p0
            self.padded = self.padded[drop:]
            self.p0 += drop
        return out

    def finalize(self) -> torch.Tensor:
        n = self.num_samples
        num_frames = (n + SHIFT // 2) // SHIFT
        if num_frames <= self.next_frame:
            return torch.zeros(0, NUM_MEL_BINS)
        if not self.started:  # very short input: build the left pad from what there is
            self.padded = np.concatenate([self.head[:LEFT_PAD][::-1], self.head])
            self.started = True
        raw_tail_len = self.padded.size if self.p0 >= LEFT_PAD else self.padded.size - (LEFT_PAD - self.p0)
        npad_right = (num_frames - 1) * SHIFT + WINDOW - n - LEFT_PAD
        sig = self.padded
        if npad_right > 0:
            tail = self.padded[-min(npad_right, raw_tail_len):][::-1]
            sig = np.concatenate([self.padded, tail])
        out = self._frames(self.next_frame, num_frames, sig)
        self.next_frame = num_frames
        return out


class StreamingRecognizer:
    """Feed audio pieces, read partial transcripts; state is explicit in its attributes.

    ``method="greedy"`` (at most ``max_symbols`` tokens per encoder frame) or ``"beam"``: modified beam
    search of width ``beam`` carried across chunks (the partial is the best hypothesis so far; it may
    change words already shown, as the hypotheses re-rank). ``lm``, ``lm_scale``: a loaded token LM
    fused into the beam search; ``token_bonus``: the reward per emitted token
    (:mod:`omnisparse.decoding.beam_search`)."""

    def __init__(self, model, tokenizer, normalizer, max_symbols: int = 4, method: str = "greedy", beam: int = 4,
                 lm=None, lm_scale: float = 0.0, token_bonus: float = 0.0):
        if method not in ("greedy", "beam"):
            raise ValueError(f"unknown decoding method {method!r}: greedy or beam")
        if lm is not None and method != "beam":
            raise ValueError("an LM is fused into beam search only: use method='beam'")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.max_symbols = max_symbols
        self.method = method
        self.fbank = StreamingFbank()
        self.enc_state = model.init_stream_state(1)
        self.greedy = init_greedy(model, 1) if method == "greedy" else None
        self.beam = init_beam(model, beam, lm=lm, lm_scale=lm_scale, token_bonus=token_bonus) \
            if method == "beam" else None
        self.frames_in = 0

    @torch.no_grad()
    def _feed(self, feats: torch.Tensor, final: bool) -> None:
        feats = self.normalizer(feats)[None]
        self.frames_in += feats.shape[1]
        enc, self.enc_state = self.model.infer(feats, self.enc_state, final=final)
        if enc.shape[1] and self.beam is not None:
            beam_step_frames(self.model, enc[0], self.beam)
        elif enc.shape[1]:
            greedy_step_frames(self.model, enc, self.greedy, max_symbols=self.max_symbols)

    def accept_audio(self, samples: np.ndarray) -> str:
        self._feed(self.fbank.accept(samples), final=False)
        return self.text

    def finalize(self) -> str:
        self._feed(self.fbank.finalize(), final=True)
        return self.text

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.beam.best if self.beam is not None else self.greedy.hyps[0])


def audio_rtf(new_recognizer, audio: Iterable[tuple[str, np.ndarray]], piece: int, threads: int = 1,
              on_final: Optional[Callable[[str, np.ndarray, Any, str], None]] = None) -> dict:
    """Real-time factor of a streaming recogniser on ``audio``, ``(id, 16 kHz float32 samples)`` pairs
    (taken one at a time, so a generator can load them lazily, untimed): for each, a fresh
    ``new_recognizer()`` (an object with ``accept_audio(samples)`` and ``finalize() -> text``:
    :class:`StreamingRecognizer`, or a runtime's twin of it) is fed ``piece`` samples at a time and
    finalised; that feeding (fbank included) is timed, torch on ``threads`` threads. ``on_final(id,
    samples, recognizer, text)``, if given, runs after each utterance, untimed (e.g. to compare
    against a reference). Returns ``{rtf, audio_s, compute_s, utterances, threads, hyps: {id: text}}``
    (``hyps`` in ``audio`` order)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        audio_s = compute_s = 0.0
        hyps: dict[str, str] = {}
        for uid, x in audio:
            rec = new_recognizer()
            t0 = time.perf_counter()
            for i in range(0, len(x), piece):
                rec.accept_audio(x[i:i + piece])
            text = rec.finalize()
            compute_s += time.perf_counter() - t0
            audio_s += len(x) / 16000
            hyps[uid] = text
            if on_final is not None:
                on_final(uid, x, rec, text)
    finally:
        torch.set_num_threads(saved)
    return {"rtf": compute_s / max(audio_s, 1e-9), "audio_s": audio_s, "compute_s": compute_s,
            "utterances": len(hyps), "threads": threads, "hyps": hyps}


def recognizer_rtf(new_recognizer, cuts, n: int, piece: int, threads: int = 1,
                   on_final: Optional[Callable[[str, np.ndarray, Any, str], None]] = None) -> dict:
    """:func:`audio_rtf` over the first ``n`` cuts (audio decoding excluded from the timing, fbank
    included): compute seconds per audio second of ``new_recognizer()`` fed ``piece`` samples at a
    time, torch on ``threads`` threads. Returns ``{rtf, audio_s, compute_s, utterances, threads, hyps:
    {cut id: text}}``."""
    audio = ((cut.id, cut.load_audio()[0].astype(np.float32)) for cut in list(cuts)[:n])
    return audio_rtf(new_recognizer, audio, piece, threads, on_final)


def streaming_rtf(model, tokenizer, normalizer, cuts, n: int, threads: int = 1) -> dict:
    """:func:`recognizer_rtf` of :class:`StreamingRecognizer` on ``model`` (PyTorch, as loaded), audio fed
    one encoder chunk (``encoder.frames_per_chunk`` x 10 ms) at a time."""
    return recognizer_rtf(lambda: StreamingRecognizer(model, tokenizer, normalizer), cuts, n,
                          model.encoder.frames_per_chunk * SHIFT, threads)
