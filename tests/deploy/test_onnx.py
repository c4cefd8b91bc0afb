"""ONNX export: the encoder chunk step equals ``Encoder.infer`` with state carried, the onnxruntime
recognizer gives PyTorch's streaming transcripts, metadata, and the export-onnx / check-onnx CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from omnisparse.cli import main
from omnisparse.decoding.streaming import StreamingRecognizer
from omnisparse.deploy.onnx_export import ONNX_FILES, export_onnx
from omnisparse.deploy.onnx_runner import OnnxEncoderStream, OnnxModel, OnnxStreamingRecognizer
from omnisparse.export.loading import load_model
from omnisparse.models.transducer import Transducer
from omnisparse.sparsity.masks import MaskBank, MaskSpec

VARIANTS = {  # name -> model config changes of a random-weight model (beside the chatty export itself)
    "stateless_no_lookahead": {"pred_type": "stateless", "pred_context": 2, "lookahead": 0, "left_chunks": 1},
    "no_left_context_lookahead2": {"lookahead": 2, "left_chunks": 0, "conv_kernel": 3},
}


@pytest.fixture(scope="module")
def chatty(chatty_export):
    return load_model(chatty_export)


@pytest.fixture(scope="module")
def chatty_onnx(chatty, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "chatty"
    export_onnx(chatty.path, out)
    return out


def variant_lm(lm, changes: dict, seed: int = 0):
    """A LoadedModel like ``lm`` holding a random-weight, row-pruned (0.4) model of another config."""
    cfg = dataclasses.replace(lm.model.config, **changes)
    torch.manual_seed(seed)
    model = Transducer.from_config(cfg).eval()
    bank = MaskBank(model, MaskSpec("row"))
    bank.refresh()
    bank.apply({g: 0.4 for g in model.prunable_groups()})
    with torch.no_grad():
        for _, _, m in model.prunable_linears():
            m.weight.copy_(m.effective_weight())
            m.set_mask(None)
        model.joiner.out.bias[model.blank_id] += 0.3
    return dataclasses.replace(lm, model=model)


def check_encoder_steps(lm, onnx_dir, seed: int = 0) -> None:
    """Feed random fbank in irregular pieces to the ONNX encoder stream and to ``Encoder.infer`` (state
    carried by both): the same frames after every piece, to 1e-4, through the final flush."""
    om = OnnxModel(onnx_dir)
    g = torch.Generator().manual_seed(seed)
    for total in (3, 29, 157):  # shorter than a first chunk, a few chunks, many chunks
        feats = torch.randn(total, 80, generator=g)
        state = lm.model.init_stream_state(1)
        stream = OnnxEncoderStream(om)
        pos, pieces = 0, [5, 16, 1, 23, 7]
        emitted = 0
        with torch.no_grad():
            while pos < total:
                n = pieces[pos % len(pieces)]
                piece = feats[pos:pos + n]
                pos += n
                final = pos >= total
                ref, state = lm.model.infer(piece[None], state, final=final)
                got = stream.accept(piece.numpy())
                if final:
                    got = np.concatenate([got, stream.finalize()])
                assert got.shape == tuple(ref.shape[1:]), (total, pos)
                if got.size:
                    assert float(np.abs(got - ref[0].numpy()).max()) < 1e-4
                emitted += got.shape[0]
        assert emitted == total // lm.model.encoder.subsampling_factor == stream.emitted


def streaming_transcripts(lm, onnx_dir, audio) -> tuple[list[str], list[str]]:
    om = OnnxModel(onnx_dir)
    ref, got = [], []
    for x in audio:
        a = StreamingRecognizer(lm.model, lm.tokenizer, lm.normalizer, lm.config.decode.max_symbols_per_frame)
        b = OnnxStreamingRecognizer(om)
        for i in range(0, len(x), 2560):
            a.accept_audio(x[i:i + 2560])
            b.accept_audio(x[i:i + 2560])
        ref.append(a.finalize())
        got.append(b.finalize())
    return ref, got


# ---------------------------------------------------------------------- equivalence
def test_encoder_chunk_step_equals_infer(chatty, chatty_onnx):
    check_encoder_steps(chatty, chatty_onnx)


def test_runner_transcripts_equal_pytorch(chatty, chatty_onnx, dev_audio):
    ref, got = streaming_transcripts(chatty, chatty_onnx, dev_audio)
    assert got == ref
    assert all(ref) and len(set(" ".join(ref).split())) > 2  # real, varied transcripts


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_configs(chatty, dev_audio, tmp_path, variant):
    lm = variant_lm(chatty, VARIANTS[variant])
    export_onnx(lm, tmp_path / "onnx", compact="rows" if variant.startswith("no_left") else "ffn")
    check_encoder_steps(lm, tmp_path / "onnx", seed=1)
    ref, got = streaming_transcripts(lm, tmp_path / "onnx", dev_audio[:2])
    assert got == ref and all(ref)
    names = [i.name for i in onnx.load(str(tmp_path / "onnx" / "encoder.onnx")).graph.input]
    if VARIANTS[variant]["lookahead"] == 0:
        assert "pending" not in names
    if VARIANTS[variant]["left_chunks"] == 0:
        assert "k_cache" not in names and "cache_len" not in names


def test_metadata(chatty, chatty_onnx):
    meta = chatty.export_meta
    cfg = chatty.model.config
    for name in ONNX_FILES:
        m = onnx.load(str(chatty_onnx / name))
        props = {p.key: p.value for p in m.metadata_props}
        assert m.opset_import[0].version >= 17
        assert props["graph"] == {"encoder.onnx": "encoder_step", "predictor.onnx": "predictor_step",
                                  "joiner.onnx": "joiner"}[name]
        for key in ("chunk_size", "left_chunks", "lookahead", "subsampling", "blank_id"):
            assert int(props[key]) == getattr(cfg, key)
        vocab = json.loads(props["vocabulary"])
        assert len(vocab) == cfg.vocab_size == chatty.tokenizer.vocab_size
        assert vocab[5] == chatty.tokenizer.sp.id_to_piece(5)
        sparsity = json.loads(props["sparsity"])
        assert sparsity["config"] == meta["config"] and sparsity["granularity"] == "row"
        assert sparsity["format"] == "int8-sparse"
        assert props["tokenizer"] == "tokenizer.model"
    assert (chatty_onnx / "tokenizer.model").read_bytes() == (chatty.path / "tokenizer.model").read_bytes()
    om = OnnxModel(chatty_onnx)
    assert om.meta["encoder_state"] and om.meta["source"] == str(chatty.path.resolve())
    assert json.loads((chatty_onnx / "onnx_meta.json").read_text())["chunk_size"] == cfg.chunk_size
    init = {i.name for i in onnx.load(str(chatty_onnx / "encoder.onnx")).graph.input}
    assert {"feats", "num_valid", "pending", "k_cache", "v_cache", "cache_len", "conv_cache"} <= init


# ---------------------------------------------------------------------- CLI
def test_cli_export_onnx_row_export(row_export, tmp_path, capsys, dev_audio):
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(row_export), "--out", str(out), "--compact", "rows"]) == 0
    assert "encoder.onnx" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*ONNX_FILES, "tokenizer.model", "global_stats.json", "onnx_meta.json"])
    assert not [p for p in tmp_path.iterdir() if p.name != "onnx"]  # no temporary left behind
    meta = OnnxModel(out).meta
    # the row-pruned FFN really shrinks; zero rows elsewhere are compacted
    assert meta["compaction"]["mode"] == "rows" and meta["sparsity"]["granularity"] == "row"
    ffn = meta["compaction"]["ffn"]["encoder.layers.0.ffn"]
    assert ffn["kept"] < ffn["hidden"]
    assert meta["compaction"]["row_compact"]
    w1 = [i for i in onnx.load(str(out / "encoder.onnx")).graph.initializer
          if list(i.dims) in ([ffn["kept"], 32], [32, ffn["kept"]])]
    assert w1, "the shrunk FFN matrices are in the graph"
    check_encoder_steps(load_model(row_export), out)
    # a second export into the same directory needs --overwrite
    assert main(["export-onnx", str(row_export), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export-onnx", str(row_export), "--out", str(out), "--overwrite", "--compact", "none"]) == 0
    assert OnnxModel(out).meta["compaction"] == {"mode": "none", "ffn": {}, "row_compact": []}
    ref, got = streaming_transcripts(load_model(row_export), out, dev_audio[:1])
    assert got == ref


def test_cli_export_onnx_run_dir(tiny_run, tmp_path, dev_audio):
    """A dense run directory exports too (its newest checkpoint; no sparsity metadata)."""
    out = tmp_path / "dense"
    assert main(["export-onnx", str(tiny_run), "--out", str(out)]) == 0
    om = OnnxModel(out)
    assert om.meta["sparsity"] == {} and om.meta["compaction"]["ffn"] == {}
    ref, got = streaming_transcripts(load_model(tiny_run), out, dev_audio[:1])
    assert got == ref


def test_cli_check_onnx(row_export, chatty_export, chatty_onnx, tmp_path, capsys):
    assert main(["check-onnx", str(chatty_onnx), "--split", "dev", "--max-utts", "2"]) == 0
    out = capsys.readouterr().out
    assert "transcripts equal 2/2" in out
    diff = float(out.split("encoder max abs diff ")[1].split(";")[0])
    assert diff < 1e-4
    # against another model the transcripts differ: exit status 1
    assert main(["check-onnx", str(chatty_onnx), "--max-utts", "2", "--model", str(row_export)]) == 1
    assert "DIFF" in capsys.readouterr().out
    # not an ONNX directory / missing split: one-line error, exit status 2
    assert main(["check-onnx", str(chatty_export)]) == 2
    assert "encoder.onnx missing" in capsys.readouterr().err
    assert main(["check-onnx", str(chatty_onnx), "--split", "nope"]) == 2
    assert "no 'nope' split" in capsys.readouterr().err
