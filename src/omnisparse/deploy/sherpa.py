"""Export for sherpa-onnx (``omnisparse export-onnx MODEL --out DIR --target sherpa-onnx``) and the check
of an export directory (:func:`check_sherpa_export`). Running it as sherpa-onnx does and the parity
check against our own streaming recognizer (``omnisparse check-onnx DIR``) are in
:mod:`omnisparse.deploy.sherpa_run`.

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
    outputs  encoder_out (N, C * K, d): every frame K = symbols_per_frame times in a row (below),
             then the new value of every state input, in input order

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
sherpa take the NeMo code path). sherpa's icefall-style transducers carry no decoder state (its one
state-carrying decoder, NeMo's, comes with NeMo's own features and blank id), so the stateless
predictor fits as it is (``context_size = pred_context``), and an LSTM predictor is exported as a
window over its last ``pred_history`` tokens (``context_size = pred_history``): the graph runs the
LSTM from zero state over the window, skipping the -1 slots
(:meth:`omnisparse.models.predictor.LstmPredictor.window_output`, unrolled). That equals the trained
predictor until ``pred_history`` tokens have been emitted and approximates it after; our decoders
compute the same with ``decode.pred_history`` (its WER cost is measured in RESULTS.md). Joiner:
``encoder_out (N, d)``, ``decoder_out (N, P)`` -> ``logit (N, V)``. Blank is id 0, ``tokens.txt`` holds ``<piece> <id>``
per line (``<blk> 0``, ``<unk> 1``, ...).

sherpa's searches emit at most one token per encoder frame, ours up to ``decode.max_symbols_per_frame``
(subsampling 8 makes 80 ms frames, and a model trained that way often needs more than one). The
encoder therefore repeats each frame ``K = symbols_per_frame`` times (default: the model's
``max_symbols_per_frame``): a copy after a blank sees the same encoder and decoder outputs and emits
blank again, a copy after a token sees the new decoder output, so sherpa's greedy search over the
repeated frames is exactly our greedy search with ``max_symbols_per_frame = K``. The joiner runs K
times per frame (it is the smallest of the three graphs); sherpa's timestamps count repeated frames
at its fixed 40 ms, so a real time is ``timestamp * S / (4 * K)``, exact when ``K = S / 4``.

Other differences from :class:`omnisparse.decoding.streaming.StreamingRecognizer` that a user can see:
sherpa treats ``<unk>`` as blank; it decodes only whole windows, so the end of an utterance must be
followed by silence (``sherpa_run.tail_padding``; ours cuts the look-ahead of the last chunk instead);
its endpoint rules, like its timestamps, assume 40 ms frames. ``sherpa_run.check_sherpa`` measures all of it on a corpus split;
``sherpa_run.SherpaStreamingRecognizer`` puts a sherpa-onnx stream behind our recognizers' interface (e.g.
for :func:`omnisparse.decoding.streaming.recognizer_rtf`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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

    def __init__(self, encoder, normalizer, repeat: int = 1):
        super().__init__()
        self.repeat = repeat
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
        if self.repeat > 1:  # (N, C, d) -> (N, C * K, d), every frame K times in a row
            enc = enc[:, :, None].expand(-1, -1, self.repeat, -1).reshape(N, -1, s.d)
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


class LstmWindowStep(nn.Module):
    """``y (N, K) int64`` (oldest first; -1 = before the first token) -> ``decoder_out (N, P)``: an LSTM
    predictor over its last ``K`` tokens from zero state."""

    def __init__(self, predictor):
        super().__init__()
        self.pred = predictor

    def forward(self, y: Tensor) -> Tensor:
        return self.pred.window_output(y)


@torch.no_grad()
def export_sherpa(source, out_dir, compact: str = "ffn", dtype: str = "fp32", overwrite: bool = False,
                  opset: int = OPSET, pred_history: int = 0,
                  symbols_per_frame: int | None = None) -> OnnxExportResult:
    """Write the sherpa-onnx files of ``source`` (an export directory, run or checkpoint path, or a
    ``LoadedModel``) to ``out_dir``: compaction and int8 quantisation as :func:`export_onnx`, then
    :func:`check_sherpa_export` on the result before the directory is renamed into place. The result's
    ``metadata`` is the encoder's (JSON values decoded). ``pred_history``: the token window of an LSTM
    predictor's decoder (required >= 1 for one; must be 0 for a stateless predictor).
    ``symbols_per_frame``: how often the encoder repeats each frame, the most tokens sherpa can emit per
    frame (default: the model's ``decode.max_symbols_per_frame``, so that sherpa's greedy search is
    ours). ValueError for a missing or misplaced ``pred_history``, ``symbols_per_frame < 1``, unbounded
    left context, or what :func:`export_onnx` refuses."""
    lm, model, compaction = prepare_export(source, out_dir, compact, opset, overwrite, dtype)
    cfg = model.config
    if cfg.pred_type == "lstm" and pred_history < 1:
        raise ValueError("sherpa-onnx decoders carry no state: an LSTM predictor is exported over a window of its "
                         "last tokens, pass pred_history >= 1 (--pred-history N)")
    if cfg.pred_type != "lstm" and pred_history:
        raise ValueError(f"pred_history applies to an LSTM predictor; this one is {cfg.pred_type} "
                         f"(its window is model.pred_context={cfg.pred_context})")
    K = lm.config.decode.max_symbols_per_frame if symbols_per_frame is None else symbols_per_frame
    if K < 1:
        raise ValueError(f"symbols_per_frame must be >= 1 (the most tokens sherpa-onnx may emit per encoder frame), "
                         f"got {K}")
    enc = SherpaEncoder(model.encoder, lm.normalizer, K).eval()
    meta = lm.export_meta or {}
    ours = {"omnisparse_sherpa_version": SHERPA_VERSION, "chunk_size": cfg.chunk_size,
            "left_chunks": cfg.left_chunks, "lookahead": cfg.lookahead, "subsampling": cfg.subsampling,
            "blank_id": cfg.blank_id, "pred_type": cfg.pred_type, "pred_history": pred_history,
            "symbols_per_frame": K,
            "source": str(Path(lm.path).resolve()), "dtype": dtype,
            "compaction": compaction, "sparsity": {k: meta[k] for k in ("format", "config", "size_bytes")
                                                   if k in meta}}
    enc_meta = metadata_strings({"model_type": MODEL_TYPE, **enc.metadata(), **ours,
                         "comment": "omnisparse chunked conformer in sherpa-onnx's ebranchformer contract"})
    context = pred_history if cfg.pred_type == "lstm" else cfg.pred_context
    dec_meta = metadata_strings({"vocab_size": cfg.vocab_size, "context_size": context, **ours})

    def write(tmp: Path) -> None:
        spec = enc.state_spec()
        x = torch.zeros(1, enc.metadata()["T"], cfg.feat_dim)
        states = [torch.zeros(s, dtype=torch.int64 if t == "int64" else torch.float32) for _, s, t in spec]
        names = [n for n, _, _ in spec]
        _export(enc, (x, *states), tmp / "encoder.onnx", ["x", *names], ["encoder_out", *[f"new_{n}" for n in names]],
                {n: {0: "N"} for n in ["x", "encoder_out", *names, *[f"new_{n}" for n in names]]}, opset)
        ctx = torch.full((1, context), -1, dtype=torch.int64)
        step = LstmWindowStep(model.predictor) if cfg.pred_type == "lstm" else StatelessPredictorStep(model.predictor)
        _export(step.eval(), (ctx,), tmp / "decoder.onnx", ["y"], ["decoder_out"],
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
    if "subsampling" in enc_meta and "symbols_per_frame" in enc_meta:
        frames = ints["decode_chunk_len"] // int(enc_meta["subsampling"]) * int(enc_meta["symbols_per_frame"])
        if res[0].shape[1] != frames:
            raise ValueError(f"{path}/encoder.onnx: encoder_out of one window has {res[0].shape[1]} frames, the "
                             f"metadata (decode_chunk_len / subsampling * symbols_per_frame) means {frames}")
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
