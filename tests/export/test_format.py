"""Artefact format: safetensors compatibility, round trips, determinism and corrupt files."""

from __future__ import annotations

import json
import os
import re
import struct

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from omnisparse.config import model_config_from_dict
from omnisparse.export.format import FORMATS, ArtefactPricing
from omnisparse.export.reader import read_artefact
from omnisparse.export.writer import write_artefact
from omnisparse.models.transducer import Transducer
from omnisparse.sparsity.masks import GRANULARITIES, MaskBank, MaskSpec
from omnisparse.sparsity.space import SearchSpace
from omnisparse.testing.dummies import VOCAB as V, random_batch as batch, tiny_model as _tiny_model


def tiny_model(seed: int = 0, **kw):
    """With a CTC head, which the artefact must leave out."""
    return _tiny_model(seed, **{"ctc_weight": 0.3, **kw})


CONFIG = {"enc.0.attn": 0.5, "enc.0.conv": 0.9, "enc.0.ffn": 0.0, "enc.1.attn": 0.3, "enc.1.ffn": 0.7,
          "joiner": 0.4}  # enc.1.conv and pred absent: dense


def outputs(model: Transducer) -> torch.Tensor:
    feats, feat_lens, tokens, token_lens = batch()
    with torch.no_grad():
        out = model(feats, feat_lens, tokens, token_lens)
        return model.join(out.enc, out.pred)


def masked_weights(model: Transducer, spec: MaskSpec, config: dict) -> dict[str, torch.Tensor]:
    bank = MaskBank(model, spec)
    bank.refresh()
    bank.apply(config)
    out = {f"{name}.weight": m.effective_weight().detach().clone() for name, m in bank.modules.items()}
    bank.clear()
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_round_trip(tmp_path, model, granularity, fmt):
    spec = MaskSpec(granularity, 3 if granularity == "block" else 8)  # 3: edge tiles everywhere
    path = tmp_path / "sub.safetensors"
    n = write_artefact(path, model, CONFIG, fmt, spec)
    assert n == os.path.getsize(path)
    assert all(m.mask is None for _, _, m in model.prunable_linears())  # the writer leaves the model alone
    assert not [p for p in tmp_path.iterdir() if p.name != "sub.safetensors"]  # no temporary left

    if fmt != "fp32-dense":  # genes at 0 are dense, enc.0.conv at 0.9 sparse: both layouts round trip
        names = set(safetensors.torch.load_file(str(path)))
        assert "encoder.layers.1.conv.pw2.weight.dense" in names
        assert "encoder.layers.0.conv.pw2.weight.values" in names

    model_config, config, fmt_read, spec_read, state = read_artefact(path)
    assert config == CONFIG and fmt_read == fmt and spec_read == spec
    assert model_config == json.loads(json.dumps(model.config.__dict__))

    ref = model.state_dict()
    expected_keys = {k for k in ref if not k.startswith("ctc_head.")}
    assert set(state) == expected_keys
    masked = masked_weights(model, spec, CONFIG)
    for name, t in state.items():
        assert t.dtype == torch.float32 and t.shape == ref[name].shape, name
        if name not in masked:
            assert torch.equal(t, ref[name]), name
        elif fmt == "int8-sparse":
            w = masked[name]
            tol = w.abs().amax(dim=1, keepdim=True) / 127 / 2 + 1e-7  # half a quantisation step per row
            assert bool(((t - w).abs() <= tol).all()), name
            assert bool((t[w == 0] == 0).all()), name  # pruned stays exactly zero
        else:
            assert torch.equal(t, masked[name]), name

    # a model rebuilt from the file alone reproduces the masked model
    fresh = Transducer.from_config(model_config_from_dict(model_config)).eval()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"ctc_head.weight", "ctc_head.bias"}
    bank = MaskBank(model, spec)
    bank.refresh()
    bank.apply(CONFIG)
    try:
        ref_out = outputs(model)
    finally:
        bank.clear()
    got = outputs(fresh)
    if fmt == "int8-sparse":
        torch.testing.assert_close(got, ref_out, atol=5e-2, rtol=0)
    else:
        torch.testing.assert_close(got, ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_safetensors_reads_it(tmp_path, model, granularity):
    spec = MaskSpec(granularity, 8)
    path = tmp_path / "sub.safetensors"
    write_artefact(path, model, CONFIG, "int8-sparse", spec)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["format"] == "int8-sparse" and meta["granularity"] == granularity and meta["block"] == "8"
    assert meta["omnisparse_format_version"] == "2"
    assert json.loads(meta["config"]) == CONFIG and list(json.loads(meta["config"])) == sorted(CONFIG)
    assert json.loads(meta["model_config"])["vocab_size"] == V
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == set(keys)
    assert not any(k.startswith("ctc_head") for k in loaded)
    w = "encoder.layers.0.attn.q.weight"  # (32, 32) at 0.5; dense layout: 32*32 I8 = 1024 B (+ scale)
    assert w not in loaded
    assert loaded[f"{w}.scale"].shape == (32,) and loaded[f"{w}.scale"].dtype == torch.float32
    if granularity == "row":  # 16 rows: 16*32 + rows 16*2 = 544 < 1024
        assert loaded[f"{w}.values"].shape == (16, 32) and loaded[f"{w}.rows"].dtype == torch.int16
        assert loaded[f"{w}.values"].dtype == torch.int8
    elif granularity == "block":  # 8 of 16 tiles: 8*64 + col_idx 8*2 + row_ptr 5*4 = 548 < 1024
        assert loaded[f"{w}.values"].shape == (8, 8, 8) and loaded[f"{w}.row_ptr"].shape == (5,)
        assert loaded[f"{w}.col_idx"].dtype == torch.int16 and loaded[f"{w}.row_ptr"].dtype == torch.int32
    else:  # nnz 512: 512*(1 + 2) + row_ptr 33*4 = 1668 > 1024: dense
        assert loaded[f"{w}.dense"].shape == (32, 32) and loaded[f"{w}.dense"].dtype == torch.int8
        assert f"{w}.values" not in loaded and f"{w}.col_idx" not in loaded
        c = "encoder.layers.0.conv.pw1.weight"  # (64, 32) at 0.9: nnz 205: 205*3 + 65*4 = 875 < 2048
        assert loaded[f"{c}.values"].shape == (205,) and loaded[f"{c}.row_ptr"].tolist()[-1] == 205
        assert f"{c}.dense" not in loaded
    # genes not in the config (sparsity 0) are stored dense: I8 (out, in) + scale
    p = "encoder.layers.1.conv.pw2.weight"
    assert loaded[f"{p}.dense"].dtype == torch.int8 and loaded[f"{p}.dense"].shape == (32, 32)
    assert f"{p}.values" not in loaded and p not in loaded and loaded[f"{p}.scale"].shape == (32,)
    assert loaded["encoder.layers.0.attn.q.bias"].dtype == torch.float32


def test_fp32_dense_is_plain_masked_weights(tmp_path, model):
    spec = MaskSpec("unstructured")
    path = tmp_path / "dense.safetensors"
    write_artefact(path, model, CONFIG, "fp32-dense", spec)
    loaded = safetensors.torch.load_file(str(path))
    masked = masked_weights(model, spec, CONFIG)
    for name, w in masked.items():
        assert torch.equal(loaded[name], w)
    assert set(loaded) == {k for k in model.state_dict() if not k.startswith("ctc_head.")}


def test_training_only_heads_are_not_exported(tmp_path):
    """The pruned loss's simple joint (like the CTC head) trains the model but is not part of it."""
    m = tiny_model(loss="pruned", simple_proj=True)
    assert m.simple_joint is not None
    path = tmp_path / "m.safetensors"
    size = write_artefact(path, m, {}, "int8-sparse", MaskSpec("unstructured"))
    assert size == path.stat().st_size
    _, _, _, _, state = read_artefact(path)
    assert not any(k.startswith(("simple_joint.", "ctc_head.")) for k in state)
    assert set(state) == {k for k in m.state_dict() if not k.startswith(("simple_joint.", "ctc_head."))}


def test_deterministic_and_atomic_overwrite(tmp_path, model):
    spec = MaskSpec("block", 8)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_artefact(a, model, CONFIG, "fp32-sparse", spec)
    write_artefact(b, model, dict(reversed(list(CONFIG.items()))), "fp32-sparse", spec)
    assert a.read_bytes() == b.read_bytes()
    # the data follows the header in name order, header padded to 8 bytes
    blob = a.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0 and blob[8] == ord("{")
    header = json.loads(blob[8:8 + n])
    names = [k for k in header if k != "__metadata__"]
    offsets = [header[k]["data_offsets"] for k in names]
    assert sorted(names) == [k for _, k in sorted(zip([o[0] for o in offsets], names))]
    # overwriting in place replaces the file (different config -> different bytes)
    write_artefact(a, model, {"enc.0.attn": 0.9}, "fp32-sparse", spec)
    assert a.read_bytes() != b.read_bytes() and sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors",
                                                                                                "b.safetensors"]


def test_config_and_format_errors(tmp_path, model):
    spec = MaskSpec()
    with pytest.raises(ValueError, match="unknown gene"):
        write_artefact(tmp_path / "x", model, {"enc.5.attn": 0.5}, "fp32-sparse", spec)
    with pytest.raises(ValueError):
        write_artefact(tmp_path / "x", model, {"enc.0.attn": 1.0}, "fp32-sparse", spec)
    with pytest.raises(ValueError, match="format"):
        write_artefact(tmp_path / "x", model, {}, "bf16-sparse", spec)
    assert not list(tmp_path.iterdir())


def test_pruned_weights_of_a_pruned_model_round_trip(tmp_path):
    # a pruning-baseline checkpoint holds zeros: the masks recomputed from it select the same units
    model = tiny_model(5)
    spec = MaskSpec("row")
    config = {g: 0.5 for g in model.prunable_groups()}
    bank = MaskBank(model, spec)
    bank.refresh()
    bank.apply(config)
    with torch.no_grad():
        for m in bank.modules.values():
            m.weight.mul_(m.mask)
    bank.clear()
    path = tmp_path / "p.safetensors"
    write_artefact(path, model, config, "fp32-sparse", spec)
    state = read_artefact(path)[4]
    for name, m in bank.modules.items():
        assert torch.equal(state[f"{name}.weight"], m.weight.detach())


# ---------------------------------------------------------------------- dense or sparse layout
def _prunable(model) -> list[tuple[str, tuple[int, int]]]:
    return [(f"{name}.weight", tuple(m.weight.shape)) for members in model.prunable_groups().values()
            for name, m in members]


def _data_bytes(path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return os.path.getsize(path) - 8 - n


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_dense_config_in_int8_is_one_byte_per_weight(tmp_path, model, granularity):
    """At sparsity 0 every matrix is ``.dense`` I8 + ``.scale``: int8 data = fp32-dense data minus
    3 bytes per prunable weight plus 4 bytes of scale per output row, whatever the granularity."""
    spec = MaskSpec(granularity, 8)
    space = SearchSpace.from_model(model, spec=spec, prune_pred_joiner=True, pricing=ArtefactPricing.of(model))
    paths = {fmt: tmp_path / f"{fmt}.safetensors" for fmt in FORMATS}
    for fmt, path in paths.items():
        assert write_artefact(path, model, {}, fmt, spec) == os.path.getsize(path) == space.size_bytes({}, fmt)
    loaded = safetensors.torch.load_file(str(paths["int8-sparse"]))
    prunable = _prunable(model)
    for name, shape in prunable:
        assert loaded[f"{name}.dense"].dtype == torch.int8 and tuple(loaded[f"{name}.dense"].shape) == shape
        assert loaded[f"{name}.scale"].dtype == torch.float32 and tuple(loaded[f"{name}.scale"].shape) == shape[:1]
    assert not any(k.endswith((".values", ".col_idx", ".row_ptr", ".rows")) for k in loaded)
    weights = sum(o * i for _, (o, i) in prunable)
    rows = sum(o for _, (o, _) in prunable)
    assert _data_bytes(paths["int8-sparse"]) == _data_bytes(paths["fp32-dense"]) - 3 * weights + 4 * rows
    assert _data_bytes(paths["fp32-sparse"]) == _data_bytes(paths["fp32-dense"])  # the same F32 matrices
    assert (weights + 4 * rows) / weights < 1.2  # here every in >= 32: <= 1 + 4/32 bytes per weight
    state = read_artefact(paths["int8-sparse"])[4]
    masked = masked_weights(model, spec, {})
    for name, _ in prunable:  # dense int8 dequantises to the per-row quantised weight
        q = loaded[f"{name}.dense"].float() * loaded[f"{name}.scale"][:, None]
        assert torch.equal(state[name], q), name
        tol = masked[name].abs().amax(dim=1, keepdim=True) / 127 / 2 + 1e-7
        assert bool(((state[name] - masked[name]).abs() <= tol).all()), name


@pytest.mark.parametrize("fmt", ["fp32-sparse", "int8-sparse"])
def test_both_layouts_round_trip_exactly(tmp_path, model, fmt):
    """Dense and sparse layout of the same masked weights decode to the same tensors (the masked weight,
    or its per-row quantisation), pruned entries exactly 0."""
    spec = MaskSpec("unstructured")
    config = {g: 0.6 for g in model.prunable_groups()}
    high_config = {**config, "enc.0.conv": 0.9}  # enc.0.conv sparse in both formats
    low, high = tmp_path / "low.safetensors", tmp_path / "high.safetensors"
    write_artefact(low, model, config, fmt, spec)
    write_artefact(high, model, high_config, fmt, spec)
    names_low = set(safetensors.torch.load_file(str(low)))
    names_high = set(safetensors.torch.load_file(str(high)))
    w = "encoder.layers.0.conv.pw1.weight"
    # int8, 64x32 at 0.6: nnz 819: 819*3 + 65*4 = 2717 > 2048 dense; at 0.9 nnz 205: 875 < 2048 sparse
    # fp32 at 0.6: 819*6 + 260 = 5174 < 8192 sparse already
    assert (f"{w}.dense" in names_low) == (fmt == "int8-sparse") and f"{w}.values" in names_high
    for path, cfg in ((low, config), (high, high_config)):
        state = read_artefact(path)[4]
        for name, t in masked_weights(model, spec, cfg).items():
            if fmt == "fp32-sparse":
                assert torch.equal(state[name], t), name
            else:
                scale = t.abs().amax(dim=1) / 127
                q = torch.round(t / torch.where(scale > 0, scale, 1)[:, None]).clamp(-127, 127)
                assert torch.equal(state[name], q * scale[:, None]), name
            assert bool((state[name][t == 0] == 0).all()), name


def test_version_1_file_reads(tmp_path, model):
    """A version 1 file (every matrix sparse, as version 1 always wrote them) still reads."""
    config = {g: 0.9 for g in model.prunable_groups()}
    path = tmp_path / "v2.safetensors"
    write_artefact(path, model, config, "int8-sparse", MaskSpec("unstructured"))
    blob = path.read_bytes()
    n, header = _header(blob)
    assert not any(k.endswith(".dense") for k in header)  # at 0.9 every matrix here is sparse
    header["__metadata__"]["omnisparse_format_version"] = "1"
    v1 = tmp_path / "v1.safetensors"
    v1.write_bytes(_with_header(blob, header))
    a, b = read_artefact(path), read_artefact(v1)
    assert a[:4] == b[:4] and a[4].keys() == b[4].keys()
    assert all(torch.equal(a[4][k], b[4][k]) for k in a[4])


@pytest.mark.parametrize("fmt,field,bad", [
    ("int8-sparse", "dtype", "U8"),        # same size, wrong dtype
    ("int8-sparse", "shape", [1024]),      # same bytes, 1-D
    ("int8-sparse", "shape", [16, 64]),    # same bytes, wrong (out, in)
    ("fp32-sparse", "dtype", "I32"),
    ("fp32-sparse", "shape", [64, 16]),
])
def test_malformed_dense_tensor_is_named(tmp_path, model, fmt, field, bad):
    path = tmp_path / "d.safetensors"
    write_artefact(path, model, {}, fmt, MaskSpec("unstructured"))
    blob = path.read_bytes()
    _, header = _header(blob)
    name = f"{DENSE_W}.dense"  # (32, 32)
    header[name][field] = bad
    path.write_bytes(_with_header(blob, header))
    with pytest.raises(ValueError, match=re.escape(name)):
        read_artefact(path)


def test_malformed_scale_of_a_dense_matrix_is_named(tmp_path, model):
    path = tmp_path / "d.safetensors"
    write_artefact(path, model, {}, "int8-sparse", MaskSpec("unstructured"))
    blob = path.read_bytes()
    _, header = _header(blob)
    header[f"{DENSE_W}.scale"]["shape"] = [2, 16]
    path.write_bytes(_with_header(blob, header))
    with pytest.raises(ValueError, match=re.escape(f"{DENSE_W}.scale")):
        read_artefact(path)


# ---------------------------------------------------------------------- corrupt files
@pytest.fixture(scope="module")
def good_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    write_artefact(path, model, CONFIG, "int8-sparse", MaskSpec("unstructured"))
    return path.read_bytes()


# in good_file (int8-sparse, unstructured): enc.0.conv at 0.9 is sparse, enc.1.conv (not in CONFIG) dense
SPARSE_W = "encoder.layers.0.conv.pw2.weight"
DENSE_W = "encoder.layers.1.conv.pw2.weight"


def _header(blob: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", blob[:8])
    return n, json.loads(blob[8:8 + n])


def _with_header(blob: bytes, header: dict) -> bytes:
    n, _ = _header(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def _mutations(blob: bytes) -> dict[str, bytes]:
    n, header = _header(blob)
    out = {
        "empty": b"",
        "short": blob[:5],
        "truncated data": blob[:-7],
        "truncated header": blob[:8 + n // 2],
        "huge header length": struct.pack("<Q", 1 << 40) + blob[8:],
        "garbage header": blob[:8] + b"\xff" * n + blob[8 + n:],
        "extra bytes": blob + b"\0" * 8,
    }
    h = json.loads(json.dumps(header))
    h["__metadata__"]["omnisparse_format_version"] = "3"
    out["wrong version"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h["__metadata__"]["omnisparse_format_version"] = "1"
    out["dense layout in a version 1 file"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    out["no metadata"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h["__metadata__"]["format"] = "fp64"
    out["bad format"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    del h[f"{SPARSE_W}.col_idx"]
    out["missing tensor"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h[f"{SPARSE_W}.values"]["dtype"] = "I16"
    out["wrong dtype size"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h[f"{SPARSE_W}.values"]["shape"] = ["x"]
    out["bad shape"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    del h[f"{DENSE_W}.dense"]
    out["missing dense tensor"] = _with_header(blob, h)
    # an out-of-range column index inside the data
    h = header
    begin, _ = h[f"{SPARSE_W}.col_idx"]["data_offsets"]
    pos = 8 + n + begin
    out["bad index"] = blob[:pos] + struct.pack("<h", 5000) + blob[pos + 2:]
    begin, _ = h[f"{SPARSE_W}.row_ptr"]["data_offsets"]
    pos = 8 + n + begin
    out["bad row_ptr"] = blob[:pos] + struct.pack("<i", 7) + blob[pos + 4:]
    return out


def test_corrupt_files_raise_value_error(tmp_path, good_file):
    path = tmp_path / "f.safetensors"
    path.write_bytes(good_file)
    read_artefact(path)  # the intact file reads
    for what, blob in _mutations(good_file).items():
        path.write_bytes(blob)
        with pytest.raises(ValueError):
            read_artefact(path)
            pytest.fail(f"no error for {what}")


def test_space_size_matches_for_stateless_model_without_ctc(tmp_path):
    model = tiny_model(6, pred_type="stateless", ctc_weight=0.0)
    spec = MaskSpec("block", 8)
    space = SearchSpace.from_model(model, spec=spec, prune_pred_joiner=True, pricing=ArtefactPricing.of(model))
    config = space.uniform(0.6)
    for fmt in FORMATS:
        path = tmp_path / f"{fmt}.safetensors"
        assert write_artefact(path, model, config, fmt, spec) == space.size_bytes(config, fmt) == \
            os.path.getsize(path)
    state = read_artefact(tmp_path / "fp32-sparse.safetensors")[4]
    fresh = Transducer.from_config(model.config)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not missing and not unexpected
