"""Artefact format: safetensors compatibility, round trips, determinism and corrupt files."""

from __future__ import annotations

import json
import os
import struct

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from omnisparse.config import load_config, model_config_from_dict
from omnisparse.export.format import FORMATS, ArtefactPricing, read_artefact, write_artefact
from omnisparse.models.transducer import Transducer
from omnisparse.sparsity.masks import GRANULARITIES, MaskBank, MaskSpec
from omnisparse.sparsity.space import SearchSpace

V = 17
CONFIG = {"enc.0.attn": 0.5, "enc.0.conv": 0.9, "enc.0.ffn": 0.0, "enc.1.attn": 0.3, "enc.1.ffn": 0.7,
          "joiner": 0.4}  # enc.1.conv and pred absent: dense


def tiny_model(seed: int = 0, **kw) -> Transducer:
    cfg = load_config("tiny").model
    cfg.vocab_size = V
    cfg.ctc_weight = 0.3
    for k, v in kw.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    return Transducer.from_config(cfg).eval()


def batch(B: int = 2, T: int = 24, U: int = 4):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, T, 80, generator=g)
    tokens = torch.randint(1, V, (B, U), generator=g)
    return feats, torch.tensor([T, T - 5]), tokens, torch.tensor([U, U - 1])


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
    assert meta["omnisparse_format_version"] == "1"
    assert json.loads(meta["config"]) == CONFIG and list(json.loads(meta["config"])) == sorted(CONFIG)
    assert json.loads(meta["model_config"])["vocab_size"] == V
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == set(keys)
    assert not any(k.startswith("ctc_head") for k in loaded)
    w = "encoder.layers.0.attn.q.weight"
    assert w not in loaded and loaded[f"{w}.values"].dtype == torch.int8
    assert loaded[f"{w}.scale"].shape == (32,) and loaded[f"{w}.scale"].dtype == torch.float32
    if granularity == "row":
        assert loaded[f"{w}.values"].shape == (16, 32) and loaded[f"{w}.rows"].dtype == torch.int16
    elif granularity == "block":
        assert loaded[f"{w}.values"].shape == (8, 8, 8) and loaded[f"{w}.row_ptr"].shape == (5,)
        assert loaded[f"{w}.col_idx"].dtype == torch.int16 and loaded[f"{w}.row_ptr"].dtype == torch.int32
    else:
        assert loaded[f"{w}.values"].shape == (512,) and loaded[f"{w}.row_ptr"].tolist()[-1] == 512
    # genes not in the config are still stored sparse (density 1)
    p = "encoder.layers.1.conv.pw2.weight"
    assert f"{p}.values" in loaded and p not in loaded
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


# ---------------------------------------------------------------------- corrupt files
@pytest.fixture(scope="module")
def good_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    write_artefact(path, model, CONFIG, "int8-sparse", MaskSpec("unstructured"))
    return path.read_bytes()


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
    h["__metadata__"]["omnisparse_format_version"] = "2"
    out["wrong version"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    del h["__metadata__"]
    out["no metadata"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h["__metadata__"]["format"] = "fp64"
    out["bad format"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    del h["encoder.layers.0.attn.q.weight.col_idx"]
    out["missing tensor"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h["encoder.layers.0.attn.q.weight.values"]["dtype"] = "I16"
    out["wrong dtype size"] = _with_header(blob, h)
    h = json.loads(json.dumps(header))
    h["encoder.layers.0.attn.q.weight.values"]["shape"] = ["x"]
    out["bad shape"] = _with_header(blob, h)
    # an out-of-range column index inside the data
    h = header
    begin, _ = h["encoder.layers.0.attn.q.weight.col_idx"]["data_offsets"]
    pos = 8 + n + begin
    out["bad index"] = blob[:pos] + struct.pack("<h", 5000) + blob[pos + 2:]
    begin, _ = h["encoder.layers.0.attn.q.weight.row_ptr"]["data_offsets"]
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
