"""ONNX export of the streaming RNN-T: an encoder chunk step with explicit fixed-shape state, a
predictor step and the joiner, plus the tokenizer and feature statistics (``omnisparse export-onnx``).

Output directory::

    encoder.onnx        one chunk step of the encoder (below)
    predictor.onnx      LSTM: token (B,) int64, h, c (layers, B, P) -> pred (B, P), new_h, new_c;
                        stateless: context (B, pred_context) int64 (-1 = before the first token,
                        a zero embedding) -> pred (B, P)
    joiner.onnx         enc (N, d_model), pred (N, P) -> logits (N, V) (unnormalised)
    tokenizer.model     sentencepiece model; global_stats.json: feature mean / std per mel bin
    onnx_meta.json      the metadata stored in the .onnx files (``metadata_props``), as JSON

Encoder step (``C`` = chunk_size, ``R`` = lookahead, ``S`` = subsampling, ``Lc`` = left_chunks * C
encoder frames, ``d`` = d_model, ``H`` heads of ``dh``, ``K`` conv kernel, ``n`` layers; batch 1)::

    inputs   feats (1, T, 80) normalised fbank, T = (C + R) * S on the first call, C * S after
             num_valid (1,) int64: valid frames among pending + the T / S new ones (C + R but at the end)
             pending (1, P, d): subsampled frames waiting for the chunk (P = 0 first, then R)   [R > 0]
             sub_cache_<i> (1, C_i, 1, F_i): each subsampling stage's last input frame (zeros first)
             k_cache, v_cache (n, 1, H, Lc, dh): keys / values of the last Lc frames, right-aligned
             cache_len (1,) int64: how many of the Lc cache slots are valid (0 first)          [Lc > 0]
             conv_cache (n, 1, d, K - 1): each block's last GLU outputs (zeros first)           [K > 1]
    outputs  enc (1, C, d): the chunk's encoder frames (the first min(C, num_valid) are valid),
             new_<name> for every state input (same shapes; new_pending has R frames)

Every structural choice is static (fixed chunk, fixed cache with a validity length, relative-position
bias indices precomputed for the right-aligned cache), so the graph has no data-dependent control
flow; cache slots before ``Lc - cache_len`` and buffer frames from ``num_valid`` on are masked out of
attention. The last, partial chunk of a stream is the same graph with zero-padded ``feats`` and a
smaller ``num_valid`` (see :class:`omnisparse.deploy.onnx_runner.OnnxStreamingRecognizer`). Outputs
equal :meth:`Encoder.infer` (tests: 1e-4). Unbounded left context (``left_chunks < 0``) is refused.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset 17. torch 2.13
defaults to the dynamo (``torch.export``) exporter, which needs the extra ``onnxscript`` package;
the TorchScript one needs nothing beyond ``onnx`` and handles the dynamic time axes used here.
``compact`` reshapes the model first with :func:`optimize_for_cpu`, exactly: ``"ffn"`` (default)
shrinks feed-forward hidden sizes (a pruned row of ``w1`` drops that unit and ``w2``'s column), so a
``row``-pruned sub-network has genuinely smaller FFN matrices; ``"rows"`` also multiplies only the
nonzero rows of every other Linear (``row-compact``: Gemm of the kept rows, Concat with the pruned
rows' biases, Gather); ``"none"`` exports the zeros as they are. Measured with onnxruntime on one
thread, one encoder step of a `small`-sized model with 70 % row sparsity: none 1.1 ms, ffn 0.95 ms,
rows 1.27 ms (the Gathers cost more than the smaller Gemms save at d_model 144).

``dtype="int8"`` (``--dtype int8``) then quantises the three graphs with onnxruntime's dynamic
quantisation (``onnxruntime.quantization.quantize_dynamic``: int8 weights per output channel,
activations quantised per call; MatMul/Gemm become MatMulInteger / DynamicQuantizeMatMul, the LSTM
DynamicQuantizeLSTM), after the structural compaction, so int8 combines with the smaller matrices.
Not exact: check the transcripts (``check-onnx`` compares them with the fp32 PyTorch model).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnisparse.deploy.fast import optimize_for_cpu
from omnisparse.models.encoder import Encoder, rel_pos_index

ONNX_VERSION = "1"
OPSET = 17
ONNX_FILES = ("encoder.onnx", "predictor.onnx", "joiner.onnx")
COMPACT = ("none", "ffn", "rows")
DTYPES = ("fp32", "int8")
NEG = -1e9  # additive mask of invalid keys (finite: an all-masked padding row stays NaN-free)


class EncoderStep(nn.Module):
    """Pure-tensor chunk step of an :class:`Encoder` (see the module docstring for inputs/outputs).
    It reuses the encoder's submodules (so a compacted encoder exports compacted)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        if encoder.left_chunks < 0:
            raise ValueError("ONNX export needs a bounded left context (left_chunks >= 0); "
                             "this model attends to its whole past")
        self.enc = encoder
        self.C, self.R, self.S = encoder.chunk_size, encoder.lookahead, encoder.subsampling_factor
        self.Lc = encoder.left_chunks * encoder.chunk_size
        self.H, self.d = encoder.n_heads, encoder.d_model
        self.dh = self.d // self.H
        self.n_layers = len(encoder.layers)
        self.kernel = encoder.layers[0].conv.kernel if self.n_layers and encoder.layers[0].conv is not None else 0
        clip = encoder.layers[0].attn.clip if self.n_layers else 0
        q_pos = torch.arange(self.C) + self.Lc
        k_pos = torch.arange(self.Lc + self.C + self.R)
        self.register_buffer("rel_index", rel_pos_index(q_pos, k_pos, clip), persistent=False)

    # ------------------------------------------------------------------ state layout
    def state_spec(self) -> list[tuple[str, tuple[int, ...], str]]:
        """``[(name, shape, dtype)]`` of the state inputs, in input order (``pending`` with its
        steady-state length R; it is empty on the first call)."""
        sub = self.enc.subsampling
        spec: list[tuple[str, tuple[int, ...], str]] = []
        if self.R > 0:
            spec.append(("pending", (1, self.R, self.d), "float32"))
        for i, (c, f) in enumerate(sub.stage_in_shapes):
            spec.append((f"sub_cache_{i}", (1, c, 1, f), "float32"))
        if self.Lc > 0:
            spec += [("k_cache", (self.n_layers, 1, self.H, self.Lc, self.dh), "float32"),
                     ("v_cache", (self.n_layers, 1, self.H, self.Lc, self.dh), "float32"),
                     ("cache_len", (1,), "int64")]
        if self.kernel > 1:
            spec.append(("conv_cache", (self.n_layers, 1, self.d, self.kernel - 1), "float32"))
        return spec

    def initial_state(self) -> dict[str, Tensor]:
        """Zeros for every state input (``pending`` empty)."""
        out = {}
        for name, shape, dtype in self.state_spec():
            if name == "pending":
                shape = (1, 0, self.d)
            out[name] = torch.zeros(shape, dtype=torch.int64 if dtype == "int64" else torch.float32)
        return out

    # ------------------------------------------------------------------ computation
    def forward(self, feats: Tensor, num_valid: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        st = dict(zip([n for n, _, _ in self.state_spec()], state))
        n_sub = len(self.enc.subsampling.convs)
        x, new_sub = self.subsample(feats, [st[f"sub_cache_{i}"] for i in range(n_sub)])
        buf = torch.cat([st["pending"], x], dim=1) if self.R > 0 else x  # (1, C + R, d)
        buf_ok = torch.arange(self.C + self.R)[None, :] < num_valid[:, None]  # (1, C + R)
        kv = [(st["k_cache"][i], st["v_cache"][i]) for i in range(self.n_layers)] if self.Lc > 0 else None
        conv = [st["conv_cache"][i] for i in range(self.n_layers)] if self.kernel > 1 else None
        enc, new_kv, cache_len, new_conv = self.blocks(buf, buf_ok, kv, st.get("cache_len"), conv)
        outs = [enc]
        if self.R > 0:
            outs.append(buf[:, self.C:])
        outs += new_sub
        if self.Lc > 0:
            outs += [torch.stack([k for k, _ in new_kv]), torch.stack([v for _, v in new_kv]), cache_len]
        if self.kernel > 1:
            outs.append(torch.stack(new_conv))
        return tuple(outs)

    def subsample(self, feats: Tensor, caches: list[Tensor], cut: Optional[int] = None
                  ) -> tuple[Tensor, list[Tensor]]:
        """``feats (B, T, F)``, ``caches``: each stage's input frame before ``feats`` ``(B, C_i, 1, F_i)``
        -> ``((B, T / S, d), new caches)``. The new cache of a stage is its last input frame, or with
        ``cut`` the input frame just before fbank frame ``cut`` (the state at ``cut`` frames in)."""
        sub = self.enc.subsampling
        x = feats.unsqueeze(1)  # (B, 1, T, F)
        new = []
        for i, conv in enumerate(sub.convs):
            z = torch.cat([caches[i], x], dim=2)  # 1 + 2m frames: conv consumes all but the last
            new.append(z[:, :, -1:] if cut is None else z[:, :, (cut >> i):(cut >> i) + 1])
            x = F.relu(conv(z))
        b, c, t, f = x.shape
        return sub.norm(sub.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))), new

    def blocks(self, buf: Tensor, buf_ok: Tensor, kv: Optional[list[tuple[Tensor, Tensor]]],
               cache_len: Optional[Tensor], conv: Optional[list[Tensor]]):
        """The chunk through the blocks: ``buf (B, C + R, d)`` subsampled frames of the chunk and its
        look-ahead, ``buf_ok (B, C + R)`` which of them are valid, ``kv`` per layer ``(k, v)`` caches
        ``(B, H, Lc, dh)`` (None when ``Lc = 0``) with ``cache_len (B,)`` valid slots, ``conv`` per layer
        ``(B, d, K - 1)`` (None when ``K <= 1``) -> ``(enc (B, C, d), new kv, new cache_len, new conv)``."""
        h, ahead = buf[:, :self.C], buf[:, self.C:]
        if self.Lc > 0:
            cache_ok = torch.arange(self.Lc)[None, :] >= (self.Lc - cache_len)[:, None]
            key_ok = torch.cat([cache_ok, buf_ok], dim=1)
        else:
            key_ok = buf_ok
        mask = torch.where(key_ok, 0.0, NEG)[:, None, None, :]  # (B, 1, 1, Lc + C + R)
        n_first = self.Lc + self.C + self.R
        new_kv, new_conv = [], []
        for i, layer in enumerate(self.enc.layers):
            kc, vc = kv[i] if kv is not None else (None, None)
            cc = conv[i] if conv is not None else None
            keys = n_first if i == 0 else self.Lc + self.C
            h, k_chunk, v_chunk, cc = self._block(layer, h, ahead if i == 0 else None, kc, vc, cc,
                                                  mask[..., :keys], self.rel_index[:, :keys])
            if self.Lc > 0:
                new_kv.append((torch.cat([kc, k_chunk], dim=2)[:, :, self.C:],
                               torch.cat([vc, v_chunk], dim=2)[:, :, self.C:]))
            if cc is not None:
                new_conv.append(cc)
        new_len = torch.clamp(cache_len + self.C, max=self.Lc) if self.Lc > 0 else None
        return self.enc.norm(h), new_kv, new_len, new_conv

    def _heads(self, x: Tensor) -> Tensor:
        return x.reshape(x.size(0), -1, self.H, self.dh).transpose(1, 2)  # (B, H, t, dh)

    def _block(self, layer, x: Tensor, ahead: Optional[Tensor], kc: Optional[Tensor], vc: Optional[Tensor],
               cc: Optional[Tensor], mask: Tensor, index: Tensor):
        """``x (B, C, d)``, ``ahead (B, R, d)`` (first block) -> ``(y, k (B, H, C, dh), v, conv cache)``."""
        xa = torch.cat([x, ahead], dim=1) if ahead is not None and self.R > 0 else x
        hn = layer.attn_norm(xa)
        attn = layer.attn
        q = self._heads(attn.q(hn[:, :self.C]))
        k_new, v_new = self._heads(attn.k(hn)), self._heads(attn.v(hn))
        k = torch.cat([kc, k_new], dim=2) if kc is not None else k_new
        v = torch.cat([vc, v_new], dim=2) if vc is not None else v_new
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.dh ** -0.5) + attn.rel_bias[:, index] + mask
        o = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(x.size(0), self.C, self.d)
        x = x + attn.out(o)
        if layer.conv is not None:
            conv = layer.conv
            g = F.glu(conv.pw1(conv.norm(x)), dim=-1).transpose(1, 2)  # (B, d, C)
            if cc is not None:
                g = torch.cat([cc, g], dim=2)
                cc = g[:, :, -(conv.kernel - 1):]
            y = conv.depthwise(g).transpose(1, 2)  # (B, C, d): valid conv over K - 1 + C frames
            x = x + conv.pw2(conv.act(conv.conv_norm(y)))
        x = x + layer.ffn(x)
        return x, k_new[:, :, :self.C], v_new[:, :, :self.C], cc


class LstmPredictorStep(nn.Module):
    """``token (B,) int64, h (layers, B, P), c (layers, B, P) -> (pred (B, P), new_h, new_c)``."""

    def __init__(self, predictor):
        super().__init__()
        self.pred = predictor

    def forward(self, token: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pred.embed(token)
        hs, cs = [], []
        for i, layer in enumerate(self.pred.layers):
            hi, ci = layer.cell(layer.x2g(x), h[i], c[i])
            hs.append(hi)
            cs.append(ci)
            x = hi
        return x, torch.stack(hs), torch.stack(cs)


class StatelessPredictorStep(nn.Module):
    """``context (B, pred_context) int64`` (oldest first; -1 = before the first token) -> ``pred (B, P)``."""

    def __init__(self, predictor):
        super().__init__()
        self.pred = predictor

    def forward(self, context: Tensor) -> Tensor:
        e = self.pred.embed(context.clamp(min=0)) * (context >= 0).unsqueeze(-1).to(torch.float32)
        return self.pred._apply_conv(e)[:, -1]


class JoinerStep(nn.Module):
    """``enc (N, d_model), pred (N, P) -> logits (N, V)``."""

    def __init__(self, joiner):
        super().__init__()
        self.joiner = joiner

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        return self.joiner.step(self.joiner.project_enc(enc), self.joiner.project_pred(pred))


# ---------------------------------------------------------------------------------------------- export
@dataclass
class OnnxExportResult:
    path: Path
    files: dict[str, int]  # file name -> bytes
    metadata: dict[str, str]


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def model_metadata(lm, step: EncoderStep, compaction: dict[str, Any], source: str,
                   dtype: str = "fp32") -> dict[str, str]:
    """The ``metadata_props`` shared by the three files (all values strings; JSON where structured)."""
    cfg = lm.model.config
    meta = lm.export_meta or {}
    sparsity = {k: meta[k] for k in ("format", "granularity", "block", "config", "nonzero_params",
                                     "dense_params", "size_bytes") if k in meta}
    pieces = [lm.tokenizer.sp.id_to_piece(i) for i in range(lm.tokenizer.vocab_size)]
    values: dict[str, Any] = {
        "omnisparse_onnx_version": ONNX_VERSION,
        "chunk_size": cfg.chunk_size, "left_chunks": cfg.left_chunks, "lookahead": cfg.lookahead,
        "subsampling": cfg.subsampling, "feat_dim": cfg.feat_dim, "d_model": cfg.d_model,
        "frames_per_chunk": cfg.chunk_size * cfg.subsampling,
        "first_chunk_frames": (cfg.chunk_size + cfg.lookahead) * cfg.subsampling,
        "left_context_frames": step.Lc, "chunk_ms": cfg.chunk_size * cfg.subsampling * 10,
        "lookahead_ms": cfg.lookahead * cfg.subsampling * 10,
        "blank_id": cfg.blank_id, "vocab_size": cfg.vocab_size, "vocabulary": pieces,
        "tokenizer": "tokenizer.model", "feature_stats": "global_stats.json",
        "pred_type": cfg.pred_type, "pred_dim": cfg.pred_dim, "pred_layers": cfg.pred_layers,
        "pred_context": cfg.pred_context,
        "max_symbols_per_frame": lm.config.decode.max_symbols_per_frame,
        "encoder_state": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in step.state_spec()],
        "sparsity": sparsity, "compaction": compaction, "model_config": dataclasses.asdict(cfg),
        "source": source, "trained_modes": list(lm.trained_modes), "dtype": dtype,
    }
    return metadata_strings(values)


def metadata_strings(values: dict[str, Any]) -> dict[str, str]:
    """``metadata_props`` values: strings as they are, anything else as compact JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
            for k, v in values.items()}


@torch.no_grad()
def export_onnx(source, out_dir: str | os.PathLike, compact: str = "ffn", opset: int = OPSET,
                overwrite: bool = False, dtype: str = "fp32") -> OnnxExportResult:
    """Export ``source`` (an export directory, run or checkpoint path, or a ``LoadedModel``) to
    ``out_dir`` (see the module docstring). ``compact``: one of :data:`COMPACT` (exact reshaping
    first). An existing non-empty ``out_dir`` is a ValueError unless ``overwrite`` (the rule of
    ``export``: :func:`omnisparse.export.subnet.check_out_dir`). The directory is
    written under a temporary name and renamed at the end. ``dtype``: ``fp32`` or ``int8`` (dynamic
    quantisation of the exported graphs, see the module docstring)."""
    lm, model, compaction = prepare_export(source, out_dir, compact, opset, overwrite, dtype)
    step = EncoderStep(model.encoder).eval()
    meta = model_metadata(lm, step, compaction, str(Path(lm.path).resolve()), dtype)

    def write(tmp: Path) -> None:
        _export_encoder(step, tmp / "encoder.onnx", opset)
        _export_predictor(model, tmp / "predictor.onnx", opset)
        d, P = model.config.d_model, model.predictor.output_dim
        _export(JoinerStep(model.joiner).eval(), (torch.zeros(1, d), torch.zeros(1, P)), tmp / "joiner.onnx",
                ["enc", "pred"], ["logits"], {"enc": {0: "N"}, "pred": {0: "N"}, "logits": {0: "N"}}, opset)
        for name, graph in zip(ONNX_FILES, ("encoder_step", "predictor_step", "joiner")):
            if dtype == "int8":
                _quantise_int8(tmp / name)
            _set_metadata(tmp / name, {**meta, "graph": graph})
        shutil.copyfile(lm.tokenizer.model_path, tmp / "tokenizer.model")
        (tmp / "global_stats.json").write_text(json.dumps(lm.normalizer.to_dict()))
        (tmp / "onnx_meta.json").write_text(json.dumps({k: _maybe_json(v) for k, v in meta.items()},
                                                       indent=2, sort_keys=True) + "\n")

    out = write_export_dir(out_dir, write)
    return OnnxExportResult(out, {p.name: p.stat().st_size for p in sorted(out.iterdir())}, meta)


def prepare_export(source, out_dir: str | os.PathLike, compact: str, opset: int, overwrite: bool, dtype: str):
    """Check the export arguments, load ``source`` (a path or a ``LoadedModel``) and compact it
    (:data:`COMPACT`) -> ``(lm, model, compaction)``. ValueError for bad arguments, a source not trained
    for streaming, or an ``out_dir`` that :func:`omnisparse.export.subnet.check_out_dir` refuses (a file,
    a non-empty directory without ``overwrite``, a directory a live command holds)."""
    from omnisparse.export.loading import LoadedModel, load_model
    from omnisparse.export.subnet import check_out_dir

    check_out_dir(out_dir, overwrite)  # the rule of `export`, before the model is loaded
    if opset < 17:
        raise ValueError(f"opset {opset} < 17 is not supported")
    if compact not in COMPACT:
        raise ValueError(f"compact must be one of {COMPACT}, got {compact!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    lm = source if isinstance(source, LoadedModel) else load_model(source)
    if "stream" not in lm.trained_modes:
        raise ValueError(f"{lm.path} was not trained for streaming (modes {list(lm.trained_modes)})")
    model, compaction = compact_model(lm.model, compact)
    return lm, model, compaction


def compact_model(model: nn.Module, compact: str) -> tuple[nn.Module, dict[str, Any]]:
    """The exact reshaping of :data:`COMPACT` applied to (a copy of) ``model`` -> ``(model in eval mode,
    compaction record {mode, ffn, row_compact})``."""
    compaction: dict[str, Any] = {"mode": compact, "ffn": {}, "row_compact": []}
    if compact != "none":
        kinds = ["row-compact"] if compact == "rows" else ["dense"]
        model, plan = optimize_for_cpu(model, kinds=kinds, measure=False)
        compaction.update(ffn=plan["ffn"], row_compact=sorted(n for n, e in plan["layers"].items()
                                                              if e["kind"] == "row-compact"))
    return model.eval(), compaction


def write_export_dir(out_dir: str | os.PathLike, write) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``out_dir``, which then replaces ``out_dir``
    (nothing is left behind when ``write`` fails)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.onnx-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if out.exists():
            from omnisparse.io.lock import ensure_not_held

            ensure_not_held(out)  # again: a command may have started there while we wrote
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _quantise_int8(path: Path) -> None:
    """In place: onnxruntime dynamic int8 quantisation of the graph at ``path`` (weights int8 per
    channel; graphs without a quantisable op are left as they are)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = path.with_name(path.stem + ".int8.onnx")
    logging.disable(logging.WARNING)  # "consider pre-processing" notices on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    os.replace(q, path)


def _maybe_json(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _export_encoder(step: EncoderStep, path: Path, opset: int) -> None:
    spec = step.state_spec()
    state = step.initial_state()
    feats = torch.zeros(1, (step.C + step.R) * step.S, step.enc.subsampling.feat_dim)
    num_valid = torch.tensor([step.C + step.R])
    names = [n for n, _, _ in spec]
    dyn = {"feats": {1: "frames"}}
    if step.R > 0:
        dyn["pending"] = {1: "pending"}
    _export(step, (feats, num_valid, *[state[n] for n in names]), path, ["feats", "num_valid", *names],
            ["enc", *[f"new_{n}" for n in names]], dyn, opset)


def _export_predictor(model, path: Path, opset: int) -> None:
    pred = model.predictor
    if hasattr(pred, "layers"):  # LSTM
        P, n = pred.dim, len(pred.layers)
        args = (torch.zeros(1, dtype=torch.int64), torch.zeros(n, 1, P), torch.zeros(n, 1, P))
        _export(LstmPredictorStep(pred).eval(), args, path, ["token", "h", "c"], ["pred", "new_h", "new_c"],
                {"token": {0: "B"}, "h": {1: "B"}, "c": {1: "B"}, "pred": {0: "B"}, "new_h": {1: "B"},
                 "new_c": {1: "B"}}, opset)
    else:
        ctx = torch.full((1, pred.context), -1, dtype=torch.int64)
        _export(StatelessPredictorStep(pred).eval(), (ctx,), path, ["context"], ["pred"],
                {"context": {0: "B"}, "pred": {0: "B"}}, opset)
