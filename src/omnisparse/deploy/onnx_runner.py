"""Streaming recognition with onnxruntime from an ``export-onnx`` directory, and its check against PyTorch.

:class:`OnnxModel` opens the three graphs (CPU execution provider, ``threads`` intra-op threads) and
reads their metadata; :class:`OnnxEncoderStream` turns normalised fbank frames into encoder frames
chunk by chunk (the first call takes ``(C + R) * S`` frames, later ones ``C * S``; ``finalize`` pads
the rest with zeros and passes the number of valid frames); :class:`OnnxStreamingRecognizer` chains
:class:`StreamingFbank`, the normaliser, the encoder stream and frame-synchronous greedy decoding
(the same loop as :func:`omnisparse.decoding.greedy.greedy_step_frames` at batch 1), so its transcript
equals :class:`StreamingRecognizer`'s on the PyTorch model. :func:`check_onnx` measures both on a
corpus split (``omnisparse check-onnx``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.streaming import SHIFT, StreamingFbank, StreamingRecognizer, recognizer_rtf
from omnisparse.deploy.onnx_export import ONNX_VERSION


INT_KEYS = ("chunk_size", "lookahead", "subsampling", "blank_id", "d_model", "feat_dim", "max_symbols_per_frame")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _meta_int(meta: dict, key: str) -> int:
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"metadata {key!r} is {v!r}, expected an integer")
    return v


def _maybe_json(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


class OnnxModel:
    """The three ONNX graphs of an export directory, with tokenizer, feature statistics and metadata
    (``meta``: the ``metadata_props`` of ``encoder.onnx``, JSON values decoded)."""

    def __init__(self, onnx_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(onnx_dir)
        for name in ("encoder.onnx", "predictor.onnx", "joiner.onnx", "tokenizer.model", "global_stats.json"):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path}: {name} missing (not an `omnisparse export-onnx` directory?)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3

        def session(name: str):
            try:
                return ort.InferenceSession(str(self.path / name), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
                raise ValueError(f"{self.path}/{name}: not a loadable ONNX graph ({_first_line(e)})") from None

        self.encoder, self.predictor, self.joiner = session("encoder.onnx"), session("predictor.onnx"), session("joiner.onnx")
        self.meta = {k: _maybe_json(v) for k, v in self.encoder.get_modelmeta().custom_metadata_map.items()}
        version = self.meta.get("omnisparse_onnx_version")
        if version is None:
            raise ValueError(f"{self.path}/encoder.onnx carries no omnisparse metadata")
        if str(version) != ONNX_VERSION:
            raise ValueError(f"{self.path}/encoder.onnx: omnisparse ONNX layout version {version!r}; this omnisparse "
                             f"reads version {ONNX_VERSION} only")
        m = self.meta
        try:
            ints = {k: _meta_int(m, k) for k in INT_KEYS}
            self.state_spec = [(str(s["name"]), tuple(int(d) for d in s["shape"]), str(s["dtype"]))
                               for s in m["encoder_state"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.path}/encoder.onnx: bad omnisparse metadata ({_first_line(e)})") from None
        self.C, self.R, self.S = ints["chunk_size"], ints["lookahead"], ints["subsampling"]
        self.blank = ints["blank_id"]
        self.d_model, self.feat_dim = ints["d_model"], ints["feat_dim"]
        self.max_symbols = ints["max_symbols_per_frame"]
        try:
            self.tokenizer = Tokenizer(self.path / "tokenizer.model")
        except (OSError, RuntimeError, ValueError) as e:
            raise ValueError(f"{self.path}/tokenizer.model is unreadable ({_first_line(e)})") from None
        try:
            self.normalizer = FeatureNormalizer.from_file(self.path / "global_stats.json")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.path}/global_stats.json is corrupt ({_first_line(e)})") from None
        self.pred_inputs = [i.name for i in self.predictor.get_inputs()]
        self._self_test()

    def _self_test(self) -> None:
        """One encoder step, the predictor's start and one joint on zeros: a ValueError (one line) when
        the graphs do not take or give what the metadata says (edited metadata, mixed-up files)."""
        try:
            if not 0 <= self.blank < self.tokenizer.vocab_size:
                raise ValueError(f"blank_id {self.blank} outside the {self.tokenizer.vocab_size} tokenizer pieces")
            if min(self.C, self.S, self.d_model, self.feat_dim, self.max_symbols) < 1 or self.R < 0:
                raise ValueError("chunk_size, subsampling, d_model, feat_dim, max_symbols_per_frame must be >= 1")
            feats = np.zeros((1, self.first_chunk_frames, self.feat_dim), dtype=np.float32)
            enc, state = self.encoder_step(feats, self.C + self.R, self.initial_state())
            if enc.shape != (1, self.C, self.d_model):
                raise ValueError(f"an encoder step gives {enc.shape}, the metadata means (1, {self.C}, {self.d_model})")
            pred, _ = self.predictor_init()
            logits = self.join(enc[0, :1], pred)
            if logits.shape != (1, self.tokenizer.vocab_size):
                raise ValueError(f"the joiner gives {logits.shape[-1]} logits, the tokenizer has "
                                 f"{self.tokenizer.vocab_size} pieces")
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            raise ValueError(f"{self.path}: the ONNX graphs do not match their metadata ({_first_line(e)})") from None

    @property
    def first_chunk_frames(self) -> int:
        return (self.C + self.R) * self.S

    @property
    def frames_per_chunk(self) -> int:
        return self.C * self.S

    def initial_state(self) -> dict[str, np.ndarray]:
        """Zeros for every encoder state input (``pending`` empty)."""
        out = {}
        for name, shape, dtype in self.state_spec:
            shape = (1, 0, self.d_model) if name == "pending" else shape
            out[name] = np.zeros(shape, dtype=np.int64 if dtype == "int64" else np.float32)
        return out

    def encoder_step(self, feats: np.ndarray, num_valid: int, state: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``feats (1, T, F)`` float32 -> ``(enc (1, C, d), new state)``."""
        feeds = {"feats": np.ascontiguousarray(feats, dtype=np.float32),
                 "num_valid": np.array([num_valid], dtype=np.int64), **state}
        outs = self.encoder.run(None, feeds)
        return outs[0], {name: o for (name, _, _), o in zip(self.state_spec, outs[1:])}

    def predictor_init(self) -> tuple[np.ndarray, Any]:
        """``(pred (1, P), state)`` after the start symbol (blank)."""
        if self.pred_inputs == ["context"]:
            ctx = np.full((1, int(self.meta["pred_context"])), -1, dtype=np.int64)
            return self.predictor_step(self.blank, ctx)
        n, P = int(self.meta["pred_layers"]), int(self.meta["pred_dim"])
        z = np.zeros((n, 1, P), dtype=np.float32)
        return self.predictor_step(self.blank, (z, z))

    def predictor_step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """Feed ``token``: stateless state = context ``(1, ctx)`` int64; LSTM state = ``(h, c)``."""
        if self.pred_inputs == ["context"]:
            ctx = np.concatenate([state[:, 1:], np.array([[token]], dtype=np.int64)], axis=1)
            return self.predictor.run(None, {"context": ctx})[0], ctx
        pred, h, c = self.predictor.run(None, {"token": np.array([token], dtype=np.int64),
                                               "h": state[0], "c": state[1]})
        return pred, (h, c)

    def join(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """``enc (N, d)``, ``pred (N, P)`` -> logits ``(N, V)``."""
        return self.joiner.run(None, {"enc": enc, "pred": pred})[0]


class OnnxEncoderStream:
    """Normalised fbank frames ``(n, F)`` in, encoder frames ``(m, d)`` out, with explicit state."""

    def __init__(self, model: OnnxModel):
        self.model = model
        self.state = model.initial_state()
        self.buf = np.zeros((0, model.feat_dim), dtype=np.float32)
        self.started = False
        self.emitted = 0

    def _step(self, feats: np.ndarray, num_valid: int) -> np.ndarray:
        enc, self.state = self.model.encoder_step(feats[None], num_valid, self.state)
        self.started = True
        n = min(num_valid, self.model.C)
        self.emitted += n
        return enc[0, :n]

    def accept(self, feats: np.ndarray) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.asarray(feats, dtype=np.float32)])
        m, outs = self.model, []
        while True:
            need = m.frames_per_chunk if self.started else m.first_chunk_frames
            if self.buf.shape[0] < need:
                break
            outs.append(self._step(self.buf[:need], m.C + m.R))
            self.buf = self.buf[need:]
        return np.concatenate(outs) if outs else np.zeros((0, m.d_model), dtype=np.float32)

    def finalize(self) -> np.ndarray:
        """The remaining frames: a last chunk (look-ahead cut at the end), like ``infer(final=True)``."""
        m, outs = self.model, []
        p = self.buf.shape[0] // m.S + (m.R if self.started else 0)
        while p > 0:
            need = m.frames_per_chunk if self.started else m.first_chunk_frames
            feats = np.zeros((need, m.feat_dim), dtype=np.float32)
            k = min(need, self.buf.shape[0])
            feats[:k] = self.buf[:k]
            self.buf = self.buf[k:]
            outs.append(self._step(feats, p))
            p -= m.C
        self.buf = self.buf[:0]
        return np.concatenate(outs) if outs else np.zeros((0, m.d_model), dtype=np.float32)


class OnnxStreamingRecognizer:
    """Feed audio pieces (16 kHz float32), read partial transcripts; the ONNX twin of
    :class:`omnisparse.decoding.streaming.StreamingRecognizer`. ``keep_encoder``: keep every encoder
    frame in ``self.enc_frames`` (for comparisons)."""

    def __init__(self, model: OnnxModel | str | Path, threads: int = 1, max_symbols: Optional[int] = None,
                 keep_encoder: bool = False):
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, threads)
        self.max_symbols = self.model.max_symbols if max_symbols is None else max_symbols
        self.fbank = StreamingFbank()
        self.encoder = OnnxEncoderStream(self.model)
        self.pred, self.pred_state = self.model.predictor_init()
        self.hyp: list[int] = []
        self.keep_encoder = keep_encoder
        self.enc_frames: list[np.ndarray] = []

    def _decode(self, enc: np.ndarray) -> None:
        m = self.model
        if self.keep_encoder and enc.shape[0]:
            self.enc_frames.append(enc)
        for t in range(enc.shape[0]):
            frame = enc[t:t + 1]
            for _ in range(self.max_symbols):
                y = int(np.argmax(m.join(frame, self.pred)[0]))
                if y == m.blank:
                    break
                self.hyp.append(y)
                self.pred, self.pred_state = m.predictor_step(y, self.pred_state)

    def accept_feats(self, feats: torch.Tensor | np.ndarray) -> str:
        """Raw (unnormalised) fbank frames ``(n, F)``."""
        feats = self.model.normalizer(torch.as_tensor(feats)).numpy()
        self._decode(self.encoder.accept(feats))
        return self.text

    def accept_audio(self, samples: np.ndarray) -> str:
        return self.accept_feats(self.fbank.accept(samples))

    def finalize(self) -> str:
        feats = self.model.normalizer(self.fbank.finalize()).numpy()
        self._decode(self.encoder.accept(feats))
        self._decode(self.encoder.finalize())
        return self.text

    @property
    def text(self) -> str:
        return self.model.tokenizer.decode(self.hyp)


# ---------------------------------------------------------------------------------------------- check
@torch.no_grad()
def check_onnx(onnx_dir: str | Path, split: str = "dev", max_utts: int = 0, model: Optional[str] = None,
               corpus: Optional[str] = None, threads: int = 1) -> dict[str, Any]:
    """Compare the ONNX directory with its PyTorch source (``model``, default the metadata's
    ``source``) on the first ``max_utts`` cuts (0 = all) of ``split`` of ``corpus`` (default: the
    source's ``data.corpus_dir``), both streaming audio chunk by chunk at batch 1 on ``threads`` threads
    and timed by :func:`~omnisparse.decoding.streaming.recognizer_rtf` (PyTorch over every cut, then ONNX).

    Returns ``{utterances, equal, max_abs_diff (encoder outputs), audio_s, onnx_s, torch_s, rows:
    [{id, torch, onnx, equal, max_abs_diff}]}``."""
    om = OnnxModel(onnx_dir, threads)
    src = model or om.meta.get("source")
    lm, cuts = source_and_cuts(onnx_dir, src, corpus, split, max_utts)
    step = lm.model.encoder.frames_per_chunk * SHIFT
    ms = lm.config.decode.max_symbols_per_frame
    ref = recognizer_rtf(lambda: StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, ms), cuts, len(cuts),
                         step, threads)
    rows = []

    def compare(cut_id: str, samples: np.ndarray, rec: OnnxStreamingRecognizer, text: str) -> None:
        torch_text = ref["hyps"][cut_id]
        rows.append({"id": cut_id, "torch": torch_text, "onnx": text, "equal": torch_text == text,
                     "max_abs_diff": _encoder_diff(lm, ref_fbank(samples), rec.enc_frames)})

    got = recognizer_rtf(lambda: OnnxStreamingRecognizer(om, keep_encoder=True), cuts, len(cuts), step, threads,
                         on_final=compare)
    return {"utterances": len(rows), "equal": sum(r["equal"] for r in rows),
            "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0.0),
            "audio_s": got["audio_s"], "torch_s": ref["compute_s"], "onnx_s": got["compute_s"], "model": str(src),
            "split": split, "rows": rows}


def source_and_cuts(onnx_dir, src: Optional[str], corpus: Optional[str], split: str, max_utts: int):
    """``(LoadedModel of src, the first max_utts cuts of split (0 = all))`` for comparing an ONNX
    directory with its PyTorch model; the corpus defaults to the model's ``data.corpus_dir``.
    FileNotFoundError (one line) for a missing model or split."""
    from omnisparse.data.layout import CorpusLayout
    from omnisparse.data.manifest import read_cuts
    from omnisparse.export.loading import load_model

    if not src or not Path(src).exists():
        raise FileNotFoundError(f"PyTorch model {src!r} of {onnx_dir} not found (give --model)")
    lm = load_model(src)
    corpus_dir = Path(corpus or lm.config.data.corpus_dir)
    manifest = CorpusLayout(corpus_dir).cuts(split)
    if not manifest.exists():
        raise FileNotFoundError(f"no {split!r} split in corpus {corpus_dir} ({manifest} missing; give --corpus)")
    cuts = read_cuts(manifest)[0]  # damaged or unsafe cuts left out (omnisparse.data.manifest)
    return lm, (cuts[:max_utts] if max_utts > 0 else cuts)


def ref_fbank(samples: np.ndarray) -> torch.Tensor:
    """Offline fbank ``(T, 80)`` of ``samples`` (what :class:`StreamingFbank` reproduces)."""
    from omnisparse.data.features import fbank

    return fbank(samples)


def _encoder_diff(lm, feats: torch.Tensor, onnx_frames: list[np.ndarray]) -> float:
    """Max abs difference between ``Encoder.infer`` on all of ``feats`` and the ONNX frames
    (inf when the frame counts differ)."""
    model = lm.model
    enc, _ = model.infer(lm.normalizer(feats)[None], model.init_stream_state(1), final=True)
    got = np.concatenate(onnx_frames) if onnx_frames else np.zeros((0, enc.shape[2]), dtype=np.float32)
    if got.shape != tuple(enc.shape[1:]):
        return float("inf")
    return float(np.abs(got - enc[0].numpy()).max()) if got.size else 0.0
