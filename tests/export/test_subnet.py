"""Exported sub-networks: exact sizes, same hypotheses as inside the supernet, loading without the
supernet code path, the CLI on export directories, atomicity and clear errors."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from lhotse import load_manifest
from safetensors import safe_open

from omnisparse.cli import main
from omnisparse.data.batching import AsrDataset
from omnisparse.data.layout import CorpusLayout
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.decoding.transcribe import read_audio, transcribe_samples
from omnisparse.export.format import FORMATS
from omnisparse.export.loading import load_model
from omnisparse.export.subnet import ExportError, export_subnet, space_for
from omnisparse.io.checkpoint import CheckpointError, resolve_checkpoint, write_state
from omnisparse.sparsity.masks import MaskBank

N_DEV = 8  # dev cuts decoded per comparison (speed)
VARIANTS = {  # granularity -> (block, prune_pred_joiner) of a copy of the supernet checkpoint
    "unstructured": (8, False),
    "row": (8, True),  # also covers the pred / joiner genes
    "block": (4, False),
}


def nonuniform(space) -> dict[str, float]:
    """Every gene of the space, sparsities cycling through the grid (0 and the largest included)."""
    levels = [0.0, 0.3, 0.9, 0.5, 0.7, 0.1, 0.8]
    return {g: levels[i % len(levels)] for i, g in enumerate(space.genes)}


@pytest.fixture(scope="module")
def supernet_ckpt(tiny_supernet_run) -> Path:
    return resolve_checkpoint(tiny_supernet_run)[0]


@pytest.fixture(scope="module")
def variants(supernet_ckpt, tmp_path_factory) -> dict[str, Path]:
    """The supernet checkpoint under each granularity: copies whose saved ``sparsity`` settings differ
    (state.json re-sealed with its new checksum; the weights are the same)."""
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for gran, (block, pj) in VARIANTS.items():
        dst = root / gran / supernet_ckpt.name
        shutil.copytree(supernet_ckpt, dst)
        state = json.loads((dst / "state.json").read_text())
        state["config"]["sparsity"].update(granularity=gran, block=block, prune_pred_joiner=pj)
        write_state(dst, state)
        out[gran] = dst
    return out


@pytest.fixture(scope="module")
def dev_cuts(tiny_corpus):
    return load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=N_DEV)


@pytest.fixture(scope="module")
def in_supernet(variants, dev_cuts):
    """Per granularity: ``(config, {module.weight: masked weight}, greedy hyps)`` of the non-uniform
    sub-network decoded inside the supernet (MaskBank.apply on the checkpoint's model)."""
    out = {}
    for gran, ckpt in variants.items():
        lm = load_model(ckpt)
        space = space_for(lm)
        config = nonuniform(space)
        bank = MaskBank(lm.model, space.spec, genes=list(space.genes))
        bank.refresh()
        bank.apply(config)
        weights = {f"{n}.weight": m.effective_weight().detach().clone() for n, m in bank.modules.items()}
        r = evaluate_cuts(lm.model, dev_cuts, lm.tokenizer, lm.normalizer, mode=lm.trained_modes[0])
        out[gran] = (config, weights, r, joint_logits(lm, dev_cuts))
    return out


def joint_logits(lm, cuts) -> torch.Tensor:
    """Joiner logits ``(B, T', U+1, V)`` of a few cuts with their reference tokens (a numeric check
    that does not depend on what greedy search happens to emit)."""
    b = AsrDataset(lm.tokenizer, lm.normalizer)[cuts.subset(first=3)]
    with torch.no_grad():
        out = lm.model(b["feats"], b["feat_lens"], b["tokens"], b["token_lens"], mode=lm.trained_modes[0])
        return lm.model.join(out.enc, out.pred)


@pytest.fixture(scope="module")
def export_dir(supernet_ckpt, tmp_path_factory) -> Path:
    """One fp32-sparse export of the unstructured supernet for the CLI / error tests."""
    lm = load_model(supernet_ckpt)
    out = tmp_path_factory.mktemp("exports") / "sub"
    export_subnet(supernet_ckpt, nonuniform(space_for(lm)), "fp32-sparse", out,
                  extra_meta={"search_wer": 0.5, "bad": [float("nan")]})
    return out


@pytest.fixture(scope="module")
def wav(dev_cuts, tmp_path_factory) -> Path:
    cut = dev_cuts[0]
    p = tmp_path_factory.mktemp("audio") / "utt.wav"
    sf.write(str(p), cut.load_audio()[0], int(cut.sampling_rate))
    return p


# ---------------------------------------------------------------------- sizes and equivalence
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("granularity", list(VARIANTS))
def test_export_size_and_same_hypotheses(tmp_path, variants, in_supernet, dev_cuts, granularity, fmt):
    ckpt = variants[granularity]
    config, masked, ref, ref_logits = in_supernet[granularity]
    out = tmp_path / "export"
    res = export_subnet(ckpt, config, fmt, out)
    space = space_for(load_model(ckpt))
    assert len(set(config.values())) > 3  # really non-uniform
    assert res.size_bytes == os.path.getsize(out / "model.safetensors") == space.size_bytes(config, fmt)
    assert sorted(p.name for p in out.iterdir()) == ["global_stats.json", "meta.json", "model.safetensors",
                                                    "tokenizer.model"]
    assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no temporary left behind

    lm = load_model(out)
    assert lm.export_meta is not None and lm.path == out
    assert all(m.mask is None for _, _, m in lm.model.prunable_linears())
    state = lm.model.state_dict()
    for name, w in masked.items():
        if fmt == "int8-sparse":
            assert bool((state[name][w == 0] == 0).all()), name  # pruned weights stay exact zeros
        else:
            assert torch.equal(state[name], w), name  # bit-identical weights, pruned ones exact zeros
    r = evaluate_cuts(lm.model, dev_cuts, lm.tokenizer, lm.normalizer, mode=lm.trained_modes[0])
    assert r["utterances"] == ref["utterances"] == N_DEV
    logits = joint_logits(lm, dev_cuts)
    if fmt == "int8-sparse":
        assert math.isfinite(r["wer"]) and bool(torch.isfinite(logits).all())
    else:
        assert torch.equal(logits, ref_logits)  # the same network, bit for bit
        assert [h["hyp"] for h in r["hyps"]] == [h["hyp"] for h in ref["hyps"]]
        assert r["wer"] == ref["wer"]


def test_meta_json_and_safetensors_compat(export_dir, supernet_ckpt):
    meta = json.loads((export_dir / "meta.json").read_text())
    state = json.loads((supernet_ckpt / "state.json").read_text())
    assert meta["kind"] == "omnisparse-subnet-export" and meta["format"] == "fp32-sparse"
    assert meta["size_bytes"] == os.path.getsize(export_dir / "model.safetensors")
    assert meta["source"] == {"checkpoint": str(supernet_ckpt.resolve()), "step": state["step"]}
    assert meta["extra"] == {"search_wer": 0.5, "bad": [None]}  # strict JSON
    assert meta["granularity"] == state["config"]["sparsity"]["granularity"]
    assert 0 < meta["nonzero_params"] < meta["dense_params"]
    assert meta["trained_modes"] and meta["omnisparse_version"]
    for k in ("chunk_size", "left_chunks", "lookahead", "subsampling"):
        assert meta["model_config"][k] == state["model_config"][k] == meta["streaming"][k]
    with safe_open(str(export_dir / "model.safetensors"), "pt") as f:
        md = f.metadata()
        assert md["format"] == "fp32-sparse" and json.loads(md["config"]) == meta["config"]
        assert md["omnisparse_format_version"] == meta["artefact_format_version"] == "2"
        # the genes at 0.0 are stored dense (.dense F32), the sparser ones as CSR (.col_idx)
        assert any(k.endswith(".col_idx") for k in f.keys()) and any(k.endswith(".dense") for k in f.keys())
        assert not any(k.startswith("ctc_head.") for k in f.keys())


# ---------------------------------------------------------------------- CLI on an export directory
def test_cli_transcribe_export(export_dir, supernet_ckpt, wav, capsys):
    # reference: the same sub-network decoded inside the supernet
    lm = load_model(supernet_ckpt)
    space = space_for(lm)
    bank = MaskBank(lm.model, space.spec, genes=list(space.genes))
    bank.refresh()
    bank.apply(nonuniform(space))
    expected = transcribe_samples(lm, read_audio(wav))

    assert main(["transcribe", str(export_dir), str(wav)]) == 0
    offline = capsys.readouterr().out.splitlines()
    assert offline == [f"{wav}\t{expected}"]
    assert main(["transcribe", str(export_dir), str(wav), "--stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and lines[-1] == f"{wav}\t{expected}"
    assert all("s]" in line for line in lines[:-1])  # partial results carry a timestamp


def test_cli_eval_export(export_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(export_dir), "--splits", "dev", "--out", str(out)]) == 0
    wer = json.loads((out / "wer.json").read_text())
    assert math.isfinite(wer["results"]["dev"]["wer"]) and wer["model"] == str(export_dir)
    assert "WER" in capsys.readouterr().out
    # a config is fixed at export; streaming settings cannot change
    assert main(["eval", str(export_dir), "--subnet", "uniform:0.5", "--out", str(out)]) == 2
    assert main(["eval", str(export_dir), "--splits", "dev", "--out", str(out), "--model.chunk_size=8"]) == 2
    err = capsys.readouterr().err
    assert "--subnet applies to supernet checkpoints" in err and "chunk_size=8 (trained with" in err
    with pytest.raises(CheckpointError, match="streaming settings"):
        load_model(export_dir, model_overrides={"lookahead": 3})


# ---------------------------------------------------------------------- atomicity and errors
def test_refuses_overwrite_then_replaces(supernet_ckpt, export_dir, tmp_path):
    out = tmp_path / "sub"
    export_subnet(supernet_ckpt, "uniform:0.5", "fp32-dense", out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ExportError, match="refusing to overwrite"):
        export_subnet(supernet_ckpt, "uniform:0.7", "int8-sparse", out)
    assert (out / "model.safetensors").read_bytes() == before
    res = export_subnet(supernet_ckpt, "uniform:0.7", "int8-sparse", out, overwrite=True)
    assert load_model(out).export_meta["format"] == "int8-sparse" == res.meta["format"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export_subnet(supernet_ckpt, {}, "fp32-sparse", empty)  # an empty directory is fine
    with pytest.raises(ExportError, match="already an exported"):
        export_subnet(export_dir, {}, "fp32-sparse", tmp_path / "again")
    with pytest.raises(ValueError, match="unknown gene"):
        export_subnet(supernet_ckpt, {"enc.99.ffn": 0.5}, "fp32-sparse", tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown artefact format"):
        export_subnet(supernet_ckpt, {}, "fp16", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_or_incomplete_exports_fail_in_one_line(export_dir, wav, tmp_path, capsys):
    # truncated artefact: caught by the checksum ...
    d = _copy(export_dir, tmp_path / "trunc")
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors fails its checksum"):
        load_model(d)
    assert main(["transcribe", str(d), str(wav)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err
    # ... and by the artefact reader when meta.json carries no checksums
    meta = json.loads((d / "meta.json").read_text())
    meta.pop("files")
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(d)
    (d / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="not an omnisparse artefact"):
        load_model(d)
    # missing files, bad meta.json
    d = _copy(export_dir, tmp_path / "notok")
    (d / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="tokenizer.model fails its checksum"):
        load_model(d)
    meta = json.loads((d / "meta.json").read_text())
    meta.pop("files")
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="tokenizer.model is unreadable"):
        load_model(d)
    (d / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model is missing"):
        load_model(d)
    d = _copy(export_dir, tmp_path / "nometa")
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="neither meta.json"):
        load_model(d)
    d = _copy(export_dir, tmp_path / "badmeta")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json is unreadable or corrupt"):
        load_model(d)
    (d / "meta.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(CheckpointError, match="does not describe an omnisparse export"):
        load_model(d)


def test_only_the_ctc_head_may_be_missing(export_dir, monkeypatch):
    import omnisparse.export.loading as loading_mod  # load_export reads with the name it imported

    real = loading_mod.read_artefact

    def dropping(path):
        mc, config, fmt, spec, state = real(path)
        state.pop(next(k for k in state if k.startswith("encoder.")))
        return mc, config, fmt, spec, state

    def adding(path):
        mc, config, fmt, spec, state = real(path)
        state["encoder.extra.weight"] = torch.zeros(2)
        return mc, config, fmt, spec, state

    monkeypatch.setattr(loading_mod, "read_artefact", dropping)
    with pytest.raises(CheckpointError, match="missing \\['encoder"):
        load_model(export_dir)
    monkeypatch.setattr(loading_mod, "read_artefact", adding)
    with pytest.raises(CheckpointError, match="unexpected \\['encoder.extra.weight'\\]"):
        load_model(export_dir)
    monkeypatch.setattr(loading_mod, "read_artefact", real)
    lm = load_model(export_dir)
    if lm.model.ctc_head is not None:  # the head is never exported; decoding never uses it
        assert lm.model.config.ctc_weight > 0
