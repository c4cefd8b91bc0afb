"""Export for sherpa-onnx (``omnisparse export-onnx MODEL --out DIR --target sherpa-onnx``), its
check, and the parity check against our own streaming recognizer (``omnisparse check-onnx DIR``).

sherpa-onnx's ``OnlineRecognizer`` (Python, C, C++, Android, iOS, ...) loads ``encoder.onnx``,
``decoder.onnx``, ``joiner.onnx`` and ``tokens.txt``. The encoder's ``model_type`` metadata picks
the C++ class that drives it; we present the contract of ``ebranchformer``
(``sherpa-onnx/csrc/online-ebranchformer-transducer-model.cc``), the one whose state layout fits our
chunked conformer: per layer a key cache, a value cache and two convolution caches, plus one int64
``processed_lens`` per stream, every tensor batched on dim 0 and bound by position.

Encoder (``n`` layers, ``H`` heads of ``dh``, ``d = H * dh``, ``C`` = chunk_size, ``R`` = lookahead,
``S`` = subsampling, ``Lc = left_chunks * C``, ``K`` conv kernel; ``N`` streams)::

    inputs   x (N, T, 80) raw kaldi fbank, T = (C + R) * S: a window that sherpa advances by
             decode_chunk_len = C * S frames (so the look-ahead frames are read again next call)
             per layer i: cached_key_i, cached_value_i (N, H, Lc, dh) keys / values, right-aligned;
                          cached_conv_i (N, d, K - 1) the conv module's last GLU outputs;
                          cached_conv_fusion_i (N, 2d, M) slice i of the packed subsampling caches
             processed_lens (N,) int64: valid key/value slots (0 first, then min(Lc, calls * C))
    outputs  encoder_out (N, C, d), then the new value of every state input, in input order

sherpa creates the initial states as zeros of the shapes it reads from the metadata: num_hidden_layers
= n, num_heads = H, head_dim = dh, left_context_len = Lc, hidden_size = d, intermediate_size = 2d,
csgu_kernel_size = K (conv cache K - 1 frames), merge_conv_kernel = M + 1, T, decode_chunk_len. A slot
our model has no use for (``Lc = 0``, no conv module) is one frame long and passed through. The
subsampling stages' caches (their input frame before the window, as in
:class:`omnisparse.deploy.onnx_export.EncoderStep`, but taken at the chunk boundary because the
window overlaps the next one by ``R * S`` frames) are flattened, zero-padded and split over the
``cached_conv_fusion_i`` slots. sherpa applies no feature normalisation: the global mean / std of
``global_stats.json`` is folded into the graph.

Decoder: ``y (N, context_size)`` int64, the last tokens with -1 before the first (sherpa starts every
stream with ``[-1, ..., -1, 0]``) -> ``decoder_out (N, P)``, exactly one output (a second output makes
sherpa take the NeMo code path). Only the stateless predictor fits: sherpa's icefall-style transducers
carry no decoder state, and its one state-carrying decoder (NeMo) comes with NeMo's own features and
blank id. An LSTM predictor is refused with a one-line error. Joiner: ``encoder_out (N, d)``,
``decoder_out (N, P)`` -> ``logit (N, V)``. Blank is id 0, ``tokens.txt`` holds ``<piece> <id>``
per line (``<blk> 0``, ``<unk> 1``, ...).

Differences from :class:`omnisparse.decoding.streaming.StreamingRecognizer` that a user can see:
sherpa's greedy search emits at most one token per encoder frame (ours ``max_symbols_per_frame``) and
treats ``<unk>`` as blank; it decodes only whole windows, so the end of an utterance must be followed
by silence (:func:`tail_padding`; ours cuts the look-ahead of the last chunk instead); its timestamps
and endpoint rules assume subsampling 4. :func:`check_sherpa` measures all of it on a corpus split;
:class:`SherpaStreamingRecognizer` puts a sherpa-onnx stream behind our recognizers' interface (e.g.
for :func:`omnisparse.decoding.streaming.recognizer_rtf`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnisparse.deploy.onnx_export import (OPSET, EncoderStep, JoinerStep, OnnxExportResult, StatelessPredictorStep,
                                           _export, _maybe_json, _quantise_int8, _set_metadata, metadata_strings,
                                           prepare_export, write_export_dir)

SHERPA_VERSION = "1"
MODEL_TYPE = "ebranchformer"
SHERPA_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")
ENCODER_KEYS = ("T", "decode_chunk_len", "num_hidden_layers", "hidden_size", "intermediate_size",
                "csgu_kernel_size", "merge_conv_kernel", "left_context_len", "num_heads", "head_dim")
DECODER_KEYS = ("vocab_size", "context_size")
SHIFT = 160  # samples per 10 ms fbank frame
STAMP_S = 0.04  # sherpa-onnx's transducer timestamps: encoder frame x 4 (its fixed subsampling) x 10 ms


class SherpaEncoder(nn.Module):
    """The ebranchformer-contract wrapper of an :class:`EncoderStep` (see the module docstring)."""

    def __init__(self, encoder, normalizer):
        super().__init__()
        if not len(encoder.layers):
            raise ValueError("sherpa-onnx export needs at least one encoder layer")
        self.step = EncoderStep(encoder)
        self.register_buffer("mean", normalizer.mean.float().clone(), persistent=False)
        self.register_buffer("std", normalizer.std.float().clone(), persistent=False)
        s = self.step
        self.n = s.n_layers
        self.stages = list(encoder.subsampling.stage_in_shapes)
        sub_floats = sum(c * f for c, f in self.stages)
        self.M = max(1, math.ceil(sub_floats / (self.n * 2 * s.d)))  # frames of each fusion slot
        self.pad = self.n * 2 * s.d * self.M - sub_floats

    def metadata(self) -> dict[str, int]:
        """The keys sherpa-onnx reads from the encoder (initial state shapes, window, shift)."""
        s = self.step
        return {"T": (s.C + s.R) * s.S, "decode_chunk_len": s.C * s.S, "num_hidden_layers": self.n,
                "hidden_size": s.d, "intermediate_size": 2 * s.d, "csgu_kernel_size": max(s.kernel, 2),
                "merge_conv_kernel": self.M + 1, "left_context_len": max(s.Lc, 1), "num_heads": s.H,
                "head_dim": s.dh}

    def state_spec(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``[(name, shape at batch 1, dtype)]`` of the state inputs, in input order."""
        return sherpa_state_spec(self.metadata())

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        s, N = self.step, x.size(0)
        slots = [states[4 * i:4 * i + 4] for i in range(self.n)]
        cache_len = states[-1]
        flat = torch.cat([sl[3].reshape(N, -1) for sl in slots], dim=1)
        caches, off = [], 0
        for c, f in self.stages:
            caches.append(flat[:, off:off + c * f].reshape(N, c, 1, f))
            off += c * f
        buf, new_sub = s.subsample((x - self.mean) / self.std, caches, cut=s.C * s.S)
        buf_ok = torch.ones(N, s.C + s.R, dtype=torch.bool)
        kv = [(sl[0], sl[1]) for sl in slots] if s.Lc > 0 else None
        conv = [sl[2] for sl in slots] if s.kernel > 1 else None
        enc, new_kv, new_len, new_conv = s.blocks(buf, buf_ok, kv, cache_len, conv)
        packed = F.pad(torch.cat([c.reshape(N, -1) for c in new_sub], dim=1), (0, self.pad))
        fusion = packed.reshape(N, self.n, 2 * s.d, self.M)
        outs = [enc]
        for i, sl in enumerate(slots):
            outs += [*(new_kv[i] if s.Lc > 0 else sl[:2]), new_conv[i] if s.kernel > 1 else sl[2], fusion[:, i]]
        outs.append(new_len if s.Lc > 0 else cache_len)
        return tuple(outs)


def sherpa_state_spec(meta: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """The encoder states sherpa-onnx creates from the metadata ``meta`` (as ``GetEncoderInitStates``
    of its ebranchformer model does): ``[(name, shape at batch 1, dtype)]`` in input order."""
    m = {k: int(meta[k]) for k in ENCODER_KEYS}
    kv = (1, m["num_heads"], m["left_context_len"], m["head_dim"])
    spec = []
    for i in range(m["num_hidden_layers"]):
        spec += [(f"cached_key_{i}", kv, "float32"), (f"cached_value_{i}", kv, "float32"),
                 (f"cached_conv_{i}", (1, m["intermediate_size"] // 2, m["csgu_kernel_size"] - 1), "float32"),
                 (f"cached_conv_fusion_{i}", (1, 2 * m["hidden_size"], m["merge_conv_kernel"] - 1), "float32")]
    return spec + [("processed_lens", (1,), "int64")]


# ---------------------------------------------------------------------------------------------- export
def tokens_txt(tokenizer) -> str:
    """``<piece> <id>`` per line, every id of the tokenizer (0 = ``<blk>``)."""
    return "".join(f"{tokenizer.sp.id_to_piece(i)} {i}\n" for i in range(tokenizer.vocab_size))


@torch.no_grad()
def export_sherpa(source, out_dir, compact: str = "ffn", dtype: str = "fp32", overwrite: bool = False,
                  opset: int = OPSET) -> OnnxExportResult:
    """Write the sherpa-onnx files of ``source`` (an export directory, run or checkpoint path, or a
    ``LoadedModel``) to ``out_dir``: compaction and int8 quantisation as :func:`export_onnx`, then
    :func:`check_sherpa_export` on the result before the directory is renamed into place. The result's
    ``metadata`` is the encoder's (JSON values decoded). ValueError for an LSTM
    predictor, unbounded left context, or what :func:`export_onnx` refuses."""
    lm, model, compaction = prepare_export(source, out_dir, compact, opset, overwrite, dtype)
    cfg = model.config
    if cfg.pred_type != "stateless":
        raise ValueError(f"sherpa-onnx transducers have a stateless decoder; this model has an {cfg.pred_type} "
                         f"predictor (train with --model.pred_type=stateless, or use --target omnisparse)")
    enc = SherpaEncoder(model.encoder, lm.normalizer).eval()
    meta = lm.export_meta or {}
    ours = {"omnisparse_sherpa_version": SHERPA_VERSION, "chunk_size": cfg.chunk_size,
            "left_chunks": cfg.left_chunks, "lookahead": cfg.lookahead, "subsampling": cfg.subsampling,
            "blank_id": cfg.blank_id, "source": str(Path(lm.path).resolve()), "dtype": dtype,
            "compaction": compaction, "sparsity": {k: meta[k] for k in ("format", "config", "size_bytes")
                                                   if k in meta}}
    enc_meta = metadata_strings({"model_type": MODEL_TYPE, **enc.metadata(), **ours,
                         "comment": "omnisparse chunked conformer in sherpa-onnx's ebranchformer contract"})
    dec_meta = metadata_strings({"vocab_size": cfg.vocab_size, "context_size": cfg.pred_context, **ours})

    def write(tmp: Path) -> None:
        spec = enc.state_spec()
        x = torch.zeros(1, enc.metadata()["T"], cfg.feat_dim)
        states = [torch.zeros(s, dtype=torch.int64 if t == "int64" else torch.float32) for _, s, t in spec]
        names = [n for n, _, _ in spec]
        _export(enc, (x, *states), tmp / "encoder.onnx", ["x", *names], ["encoder_out", *[f"new_{n}" for n in names]],
                {n: {0: "N"} for n in ["x", "encoder_out", *names, *[f"new_{n}" for n in names]]}, opset)
        ctx = torch.full((1, cfg.pred_context), -1, dtype=torch.int64)
        _export(StatelessPredictorStep(model.predictor).eval(), (ctx,), tmp / "decoder.onnx", ["y"], ["decoder_out"],
                {"y": {0: "N"}, "decoder_out": {0: "N"}}, opset)
        pair = (torch.zeros(1, cfg.d_model), torch.zeros(1, model.predictor.output_dim))
        _export(JoinerStep(model.joiner).eval(), pair, tmp / "joiner.onnx", ["encoder_out", "decoder_out"], ["logit"],
                {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}, opset)
        for name, props in (("encoder.onnx", enc_meta), ("decoder.onnx", dec_meta),
                            ("joiner.onnx", metadata_strings(ours))):
            if dtype == "int8":
                _quantise_int8(tmp / name)
            _set_metadata(tmp / name, props)
        (tmp / "tokens.txt").write_text(tokens_txt(lm.tokenizer), encoding="utf-8")
        check_sherpa_export(tmp)

    out = write_export_dir(out_dir, write)
    return OnnxExportResult(out, {p.name: p.stat().st_size for p in sorted(out.iterdir())},
                            {k: _maybe_json(v) for k, v in enc_meta.items()})


# ---------------------------------------------------------------------------------------------- check
def is_sherpa_dir(path) -> bool:
    """Whether ``path`` looks like an ``export-onnx --target sherpa-onnx`` directory (tokens.txt, no
    tokenizer.model)."""
    return (Path(path) / "tokens.txt").is_file() and not (Path(path) / "tokenizer.model").exists()


def check_sherpa_export(path) -> dict[str, Any]:
    """Check that ``path`` holds what sherpa-onnx's ebranchformer transducer reads, before sherpa
    itself does (sherpa exits the process on a missing key). Returns the encoder metadata (JSON values
    decoded); a ValueError naming the file and the problem in one line otherwise. Checked: the four
    files; the encoder's ``model_type`` and integer keys; state inputs and outputs matching, by
    position, the shapes sherpa derives from those keys (batch and window free); one decoder input of
    ``(N, context_size)`` int64 and exactly one output; the joiner's two inputs and ``vocab_size``
    logits; ``tokens.txt`` with ids ``0 .. vocab_size - 1`` and ``<blk>`` at 0."""
    import onnxruntime as ort

    path = Path(path)
    for name in SHERPA_FILES:
        if not (path / name).is_file():
            raise ValueError(f"{path}: {name} missing (not an `export-onnx --target sherpa-onnx` directory?)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = {}
    for n in SHERPA_FILES[:3]:
        try:
            sess[n] = ort.InferenceSession(str(path / n), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"{path}/{n}: not a loadable ONNX graph ({reason})") from None
    enc_meta = sess["encoder.onnx"].get_modelmeta().custom_metadata_map
    dec_meta = sess["decoder.onnx"].get_modelmeta().custom_metadata_map
    if enc_meta.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path}/encoder.onnx: metadata model_type is {enc_meta.get('model_type')!r}, "
                         f"expected {MODEL_TYPE!r}")
    ints = {}
    for file, meta, keys in (("encoder.onnx", enc_meta, ENCODER_KEYS), ("decoder.onnx", dec_meta, DECODER_KEYS)):
        for k in keys:
            try:
                ints[k] = int(meta[k])
            except (KeyError, ValueError):
                raise ValueError(f"{path}/{file}: metadata {k!r} is {meta.get(k)!r}, expected an integer") from None
            if ints[k] < 1:
                raise ValueError(f"{path}/{file}: metadata {k}={ints[k]} is out of range (>= 1)")
    if ints["decode_chunk_len"] > ints["T"]:
        raise ValueError(f"{path}/encoder.onnx: metadata decode_chunk_len {ints['decode_chunk_len']} > T {ints['T']}")
    spec = sherpa_state_spec(ints)
    e = sess["encoder.onnx"]
    ins, outs = e.get_inputs(), e.get_outputs()
    if len(ins) != len(spec) + 1 or len(outs) != len(spec) + 1:
        raise ValueError(f"{path}/encoder.onnx: {len(ins)} inputs and {len(outs)} outputs; the metadata "
                         f"(num_hidden_layers={ints['num_hidden_layers']}) means {len(spec) + 1} of each")
    for (name, shape, dtype), i in zip(spec, ins[1:]):
        if not _fits(i, shape, dtype):
            raise ValueError(f"{path}/encoder.onnx: state input {i.name} is {i.type} {i.shape}; the metadata "
                             f"means {dtype} {[-1, *shape[1:]]} ({name})")
    if not _fits(ins[0], (1, ints["T"], -1), "float32") or not isinstance(ins[0].shape[2], int):
        raise ValueError(f"{path}/encoder.onnx: input {ins[0].name} is {ins[0].shape}, "
                         f"expected (N, T={ints['T']}, feature_dim)")
    zeros = [np.zeros(s, dtype=np.dtype(t)) for _, s, t in spec]
    x = np.zeros((1, ints["T"], ins[0].shape[2]), np.float32)
    try:
        res = e.run(None, dict(zip([i.name for i in ins], [x, *zeros])))
    except Exception as ex:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
        reason = str(ex).strip().splitlines()[0][:200] if str(ex).strip() else type(ex).__name__
        raise ValueError(f"{path}/encoder.onnx: one window of zeros does not run ({reason})") from None
    if res[0].ndim != 3 or res[0].shape[0] != 1 or res[0].shape[1] < 1:
        raise ValueError(f"{path}/encoder.onnx: encoder_out of one window is {res[0].shape}")
    for (name, shape, dtype), o, r in zip(spec, outs[1:], res[1:]):
        if r.shape != shape or r.dtype != np.dtype(dtype):
            raise ValueError(f"{path}/encoder.onnx: output {o.name} is {r.dtype} {list(r.shape)} after one window; "
                             f"sherpa feeds it back as {name}, {dtype} {list(shape)}")
    d = sess["decoder.onnx"]
    if len(d.get_inputs()) != 1 or len(d.get_outputs()) != 1 or \
            not _fits(d.get_inputs()[0], (1, ints["context_size"]), "int64"):
        raise ValueError(f"{path}/decoder.onnx: needs one int64 input (N, {ints['context_size']}) and exactly one "
                         f"output, has {[(t.name, t.shape) for t in d.get_inputs()]} -> {len(d.get_outputs())} outputs")
    j = sess["joiner.onnx"]
    if len(j.get_inputs()) != 2 or len(j.get_outputs()) != 1 or j.get_outputs()[0].shape[-1] != ints["vocab_size"]:
        raise ValueError(f"{path}/joiner.onnx: needs (encoder_out, decoder_out) -> logit (N, vocab_size="
                         f"{ints['vocab_size']}), has {len(j.get_inputs())} inputs -> "
                         f"{[t.shape for t in j.get_outputs()]}")
    ids = read_tokens(path / "tokens.txt")
    if sorted(ids) != list(range(ints["vocab_size"])) or ids.get(0) != "<blk>":
        raise ValueError(f"{path}/tokens.txt: {len(ids)} tokens, expected ids 0..{ints['vocab_size'] - 1} "
                         f"(vocab_size) with <blk> at 0")
    return {k: _maybe_json(v) for k, v in enc_meta.items()}


def _fits(t, shape: tuple, dtype: str) -> bool:
    """onnxruntime NodeArg ``t`` has ``dtype`` and ``shape`` but for a free dim 0 (and -1 entries)."""
    want = {"float32": "tensor(float)", "int64": "tensor(int64)"}[dtype]
    if t.type != want or len(t.shape) != len(shape):
        return False
    return all(s == -1 or g == s or (k == 0 and not isinstance(g, int))
               for k, (g, s) in enumerate(zip(t.shape, shape)))


def read_tokens(path) -> dict[int, str]:
    """``tokens.txt`` -> ``{id: piece}``; ValueError for a line that is not ``<piece> <id>``."""
    out = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: expected '<piece> <id>', got {line!r}")
        out[int(parts[1])] = parts[0]
    return out


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
    model: the encoder frames of the windows it decodes, greedy search with at most one token per
    frame and ``<unk>`` taken as blank -> ``(tokens, frame of each token, encoder frames (n, d))``."""
    from omnisparse.data.features import fbank

    model = lm.model
    feats = fbank(samples)
    enc, _ = model.infer(lm.normalizer(feats)[None], model.init_stream_state(1))
    enc = enc[0, :sherpa_windows(feats.shape[0], meta) * model.config.chunk_size]
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
                 corpus: Optional[str] = None, threads: int = 1, max_symbols: Optional[int] = None) -> dict[str, Any]:
    """sherpa-onnx against our streaming recognizer on the first ``max_utts`` cuts (0 = all) of
    ``split`` of ``corpus`` (default: the source model's ``data.corpus_dir``), audio streamed one chunk
    at a time into both. Per utterance: ``equal`` — sherpa's text (audio + :func:`tail_padding`) is
    :class:`StreamingRecognizer`'s on the same audio (``max_symbols`` per frame, default the model's);
    ``tokens_equal`` — sherpa's tokens and their frames are :func:`sherpa_reference`'s (our PyTorch model
    in sherpa's schedule, the exact contract); ``max_abs_diff`` — this export's encoder run as sherpa runs
    it (:class:`SherpaOnnxEncoder`) against ``Encoder.infer``. Returns ``{utterances, equal,
    tokens_equal, max_abs_diff, audio_s, sherpa_s, torch_s, model, split, rows: [{id, torch, sherpa,
    equal, tokens_equal, max_abs_diff}]}``."""
    from omnisparse.data.features import fbank
    from omnisparse.decoding.streaming import StreamingRecognizer
    from omnisparse.deploy.onnx_runner import source_and_cuts

    meta = check_sherpa_export(sherpa_dir)
    src = model or meta.get("source")
    lm, cuts = source_and_cuts(sherpa_dir, src, corpus, split, max_utts)
    max_symbols = lm.config.decode.max_symbols_per_frame if max_symbols is None else max_symbols
    rec = sherpa_recognizer(sherpa_dir, threads)
    enc_runner = SherpaOnnxEncoder(sherpa_dir, threads)
    piece = int(meta["decode_chunk_len"]) * SHIFT
    ids = {p: i for i, p in read_tokens(Path(sherpa_dir) / "tokens.txt").items()}
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, sherpa_s, torch_s, audio_s = [], 0.0, 0.0, 0.0
    try:
        for cut in cuts:
            x = cut.load_audio()[0].astype(np.float32)
            audio_s += len(x) / 16000
            t0 = time.perf_counter()
            sh = SherpaStreamingRecognizer(rec, meta)
            for i in range(0, len(x), piece):
                sh.accept_audio(x[i:i + piece])
            text = sh.finalize()
            t1 = time.perf_counter()
            ours = StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, max_symbols)
            for i in range(0, len(x), piece):
                ours.accept_audio(x[i:i + piece])
            ref_text = ours.finalize()
            t2 = time.perf_counter()
            sherpa_s += t1 - t0
            torch_s += t2 - t1
            padded = np.concatenate([x, np.zeros(tail_padding(len(x), meta), dtype=np.float32)])
            ref_tokens, ref_frames, ref_enc = sherpa_reference(lm, padded, meta)
            enc = enc_runner([fbank(padded).numpy()])[0]
            diff = float(np.abs(enc - ref_enc.numpy()).max()) if enc.shape == tuple(ref_enc.shape) and enc.size \
                else (0.0 if enc.shape == tuple(ref_enc.shape) else float("inf"))
            rows.append({"id": cut.id, "torch": ref_text, "sherpa": text, "equal": text == " ".join(ref_text.split()),
                         "tokens_equal": sh.tokens(ids) == (ref_tokens, ref_frames), "max_abs_diff": diff})
    finally:
        torch.set_num_threads(saved)
    return {"utterances": len(rows), "equal": sum(r["equal"] for r in rows),
            "tokens_equal": sum(r["tokens_equal"] for r in rows),
            "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0.0), "audio_s": audio_s,
            "sherpa_s": sherpa_s, "torch_s": torch_s, "model": str(src), "split": split, "rows": rows}
