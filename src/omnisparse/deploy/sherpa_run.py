"""Running a sherpa-onnx export (``omnisparse export-onnx --target sherpa-onnx``, :mod:`omnisparse.deploy.sherpa`)
the way sherpa-onnx runs it, and the parity check against our own streaming recognizer
(``omnisparse check-onnx DIR``: :func:`check_sherpa`).

sherpa-onnx decodes only whole windows, so the end of an utterance must be followed by silence
(:func:`tail_padding`); :class:`SherpaOnnxEncoder` runs ``encoder.onnx`` with onnxruntime in sherpa's
schedule, :func:`sherpa_reference` computes with our PyTorch model what sherpa should emit (greedy,
one token per frame of the export's repeated frames, ``<unk>`` as blank), and :class:`SherpaStreamingRecognizer` puts a sherpa-onnx
stream behind our recognizers' interface.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from omnisparse.data.features import fbank
from omnisparse.decoding.beam_search import modified_beam_search_one
from omnisparse.decoding.streaming import StreamingRecognizer
from omnisparse.deploy.onnx_runner import source_and_cuts
from omnisparse.deploy.sherpa import SHIFT, STAMP_S, check_sherpa_export, read_tokens, sherpa_state_spec
from omnisparse.models.predictor import predictor_history


# ---------------------------------------------------------------------------------------------- running
def tail_padding(num_samples: int, meta: dict) -> int:
    """Zero samples to append to ``num_samples`` of audio so that sherpa-onnx, which decodes a window
    only once one more frame than it holds is ready, covers every encoder frame that our streaming
    recognizer emits for that audio (the last chunk's look-ahead then reads this silence)."""
    T, shift, S = int(meta["T"]), int(meta["decode_chunk_len"]), int(meta["subsampling"])
    frames = (num_samples + SHIFT // 2) // SHIFT
    chunks = math.ceil((frames // S) / (shift // S))
    need = chunks * shift + (T - shift) + 1  # fbank frames for `chunks` windows to be ready
    return max(0, need * SHIFT - SHIFT // 2 - num_samples)


def sherpa_windows(num_frames: int, meta: dict) -> int:
    """How many windows sherpa-onnx decodes from ``num_frames`` fbank frames (after input_finished)."""
    T, shift = int(meta["T"]), int(meta["decode_chunk_len"])
    return max(0, math.ceil((num_frames - T) / shift)) if num_frames > T else 0


class SherpaOnnxEncoder:
    """Runs a sherpa-onnx export's ``encoder.onnx`` with onnxruntime the way sherpa-onnx does
    (zero states of the shapes the metadata gives, windows of ``T`` frames every ``decode_chunk_len``,
    states stacked on dim 0), for numerical checks against :meth:`Encoder.infer`."""

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        self.meta = check_sherpa_export(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(Path(path) / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.spec = sherpa_state_spec(self.meta)
        self.names = [i.name for i in self.sess.get_inputs()]

    def __call__(self, feats: list[np.ndarray]) -> list[np.ndarray]:
        """Raw fbank ``(T_b, 80)`` of ``B`` streams -> each stream's encoder frames, decoded as one batch
        while every stream has a window ready (the shortest stream sets the number of windows)."""
        T, shift = int(self.meta["T"]), int(self.meta["decode_chunk_len"])
        states = [np.zeros((len(feats), *s[1:]), dtype=np.int64 if t == "int64" else np.float32)
                  for _, s, t in self.spec]
        out: list[list[np.ndarray]] = [[] for _ in feats]
        for w in range(min(sherpa_windows(f.shape[0], self.meta) for f in feats)):
            x = np.stack([f[w * shift:w * shift + T] for f in feats]).astype(np.float32)
            enc, *states = self.sess.run(None, dict(zip(self.names, [x, *states])))
            for b in range(len(feats)):
                out[b].append(enc[b])
        d = int(self.meta["hidden_size"])
        return [np.concatenate(o) if o else np.zeros((0, d), dtype=np.float32) for o in out]


@torch.no_grad()
def sherpa_reference(lm, samples: np.ndarray, meta: dict) -> tuple[list[int], list[int], Tensor]:
    """What sherpa-onnx should emit for ``samples`` (tail padding included) computed with our PyTorch
    model: the encoder frames of the windows it decodes, each repeated ``meta["symbols_per_frame"]``
    times as the export does, greedy search with at most one token per (repeated) frame and ``<unk>``
    taken as blank -> ``(tokens, repeated frame of each token, repeated encoder frames (n * K, d))``."""
    model = lm.model
    feats = fbank(samples)
    enc, _ = model.infer(lm.normalizer(feats)[None], model.init_stream_state(1))
    enc = enc[0, :sherpa_windows(feats.shape[0], meta) * model.config.chunk_size]
    enc = enc.repeat_interleave(int(meta.get("symbols_per_frame") or 1), dim=0)
    blank, unk = model.config.blank_id, lm.tokenizer.sp.unk_id()
    out, state = model.predictor.step(torch.tensor([blank]), model.predictor.init_state(1))
    pred = model.joiner.project_pred(out)
    enc_p = model.joiner.project_enc(enc)
    tokens, frames = [], []
    for t in range(enc.shape[0]):
        y = int(model.joiner.step(enc_p[t:t + 1], pred).argmax(-1))
        if y not in (blank, unk):
            tokens.append(y)
            frames.append(t)
            out, state = model.predictor.step(torch.tensor([y]), state)
            pred = model.joiner.project_pred(out)
    return tokens, frames, enc


def sherpa_recognizer(path, threads: int = 1, **kw):
    """``sherpa_onnx.OnlineRecognizer.from_transducer`` on a checked export directory: greedy search
    unless ``kw`` says otherwise, 80-bin kaldi fbank with the defaults our features use (dither 0,
    snip_edges false); ``kw`` goes to ``from_transducer``."""
    try:
        import sherpa_onnx
    except ImportError as e:
        raise ValueError(f"sherpa-onnx is not importable ({e}): pip install sherpa-onnx") from None

    path = Path(path)
    check_sherpa_export(path)
    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(path / "tokens.txt"), encoder=str(path / "encoder.onnx"), decoder=str(path / "decoder.onnx"),
        joiner=str(path / "joiner.onnx"), num_threads=threads, sample_rate=16000, feature_dim=80,
        **{"decoding_method": "greedy_search", **kw})


class SherpaStreamingRecognizer:
    """One sherpa-onnx stream behind the interface of our recognizers (``accept_audio(samples)`` ->
    partial text, ``finalize()`` -> text, as :func:`omnisparse.decoding.streaming.recognizer_rtf` takes):
    ``recognizer`` from :func:`sherpa_recognizer`, ``meta`` the export's metadata (for
    :func:`tail_padding`, which ``finalize`` appends before ``input_finished``)."""

    def __init__(self, recognizer, meta: dict):
        self.rec, self.meta = recognizer, meta
        self.stream = recognizer.create_stream()
        self.samples = 0

    def _decode(self) -> str:
        while self.rec.is_ready(self.stream):
            self.rec.decode_stream(self.stream)
        return self.text

    def accept_audio(self, samples: np.ndarray) -> str:
        """16 kHz float32 samples in [-1, 1]."""
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        self.samples += x.size
        self.stream.accept_waveform(16000, x)
        return self._decode()

    def finalize(self) -> str:
        tail = tail_padding(self.samples, self.meta)
        if tail:
            self.stream.accept_waveform(16000, np.zeros(tail, dtype=np.float32))
        self.stream.input_finished()
        return self._decode()

    @property
    def text(self) -> str:
        return " ".join(self.rec.get_result(self.stream).split())

    def tokens(self, pieces: dict[str, int]) -> tuple[list[int], list[int]]:
        """``(token ids, encoder frame of each)`` so far; ``pieces``: ``{piece: id}`` of tokens.txt."""
        r = self.rec.get_result_all(self.stream)
        return [pieces.get(t.replace(" ", "\u2581"), -1) for t in r.tokens], [round(t / STAMP_S) for t in r.timestamps]


@torch.no_grad()
def check_sherpa(sherpa_dir, split: str = "dev", max_utts: int = 0, model: Optional[str] = None,
                 corpus: Optional[str] = None, threads: int = 1, max_symbols: Optional[int] = None,
                 method: str = "greedy", beam: int = 4) -> dict[str, Any]:
    """sherpa-onnx against our streaming recognizer on the first ``max_utts`` cuts (0 = all) of
    ``split`` of ``corpus`` (default: the source model's ``data.corpus_dir``), audio streamed one chunk
    at a time into both, each utterance followed by one window (``T`` frames) of silence, as speech is
    in a live stream (without it the two differ at the last chunk: ours cuts its look-ahead, sherpa reads
    the tail padding's silence). Per utterance: ``equal`` — sherpa's text (that audio +
    :func:`tail_padding`) is :class:`StreamingRecognizer`'s on that audio (``max_symbols`` per frame, default the export's
    ``symbols_per_frame``, with which the greedy searches are the same);
    ``tokens_equal`` — sherpa's tokens and their frames are :func:`sherpa_reference`'s (our PyTorch model
    in sherpa's schedule, the exact contract); ``max_abs_diff`` — this export's encoder run as sherpa runs
    it (:class:`SherpaOnnxEncoder`) against ``Encoder.infer``. Returns ``{utterances, equal,
    tokens_equal, max_abs_diff, audio_s, sherpa_s, torch_s, model, split, rows: [{id, torch, sherpa,
    equal, tokens_equal, max_abs_diff}]}``."""
    meta = check_sherpa_export(sherpa_dir)
    src = model or meta.get("source")
    lm, cuts = source_and_cuts(sherpa_dir, src, corpus, split, max_utts)
    max_symbols = int(meta.get("symbols_per_frame") or 1) if max_symbols is None else max_symbols
    kw = {"decoding_method": "modified_beam_search", "max_active_paths": beam, "temperature_scale": 1.0} \
        if method == "beam" else {}
    rec = sherpa_recognizer(sherpa_dir, threads, **kw)
    enc_runner = SherpaOnnxEncoder(sherpa_dir, threads)
    piece = int(meta["decode_chunk_len"]) * SHIFT
    ids = {p: i for i, p in read_tokens(Path(sherpa_dir) / "tokens.txt").items()}
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, sherpa_s, torch_s, audio_s = [], 0.0, 0.0, 0.0
    try:
        with predictor_history(lm.model.predictor, int(meta.get("pred_history") or 0)):
            for cut in cuts:
                x = cut.load_audio()[0].astype(np.float32)
                audio_s += len(x) / 16000
                x = np.concatenate([x, np.zeros(int(meta["T"]) * SHIFT, dtype=np.float32)])  # silence after speech
                padded = np.concatenate([x, np.zeros(tail_padding(len(x), meta), dtype=np.float32)])
                t0 = time.perf_counter()
                sh = SherpaStreamingRecognizer(rec, meta)
                for i in range(0, len(x), piece):
                    sh.accept_audio(x[i:i + piece])
                text = sh.finalize()
                t1 = time.perf_counter()
                ours = StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, max_symbols, method=method, beam=beam)
                for i in range(0, len(x), piece):
                    ours.accept_audio(x[i:i + piece])
                ref_text = ours.finalize()
                t2 = time.perf_counter()
                sherpa_s += t1 - t0
                torch_s += t2 - t1
                ref_tokens, ref_frames, ref_enc = sherpa_reference(lm, padded, meta)
                got = sh.tokens(ids)
                if method == "beam":  # our beam search over the frames sherpa decodes; tokens only
                    ref, got = modified_beam_search_one(lm.model, ref_enc, beam), got[0]
                else:
                    ref = (ref_tokens, ref_frames)
                enc = enc_runner([fbank(padded).numpy()])[0]
                diff = float(np.abs(enc - ref_enc.numpy()).max()) if enc.shape == tuple(ref_enc.shape) and enc.size \
                    else (0.0 if enc.shape == tuple(ref_enc.shape) else float("inf"))
                rows.append({"id": cut.id, "torch": ref_text, "sherpa": text,
                             "equal": text == " ".join(ref_text.split()), "tokens_equal": got == ref,
                             "max_abs_diff": diff})
    finally:
        torch.set_num_threads(saved)
    return {"utterances": len(rows), "equal": sum(r["equal"] for r in rows),
            "tokens_equal": sum(r["tokens_equal"] for r in rows),
            "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0.0), "audio_s": audio_s,
            "sherpa_s": sherpa_s, "torch_s": torch_s, "model": str(src), "split": split, "method": method,
            "max_symbols": max_symbols, "symbols_per_frame": int(meta.get("symbols_per_frame") or 1),
            "beam": beam if method == "beam" else None, "rows": rows}
