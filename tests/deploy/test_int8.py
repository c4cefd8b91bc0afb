"""int8 combined with sparsity: ``optimize_for_cpu(dtype="int8")`` (PyTorch) and ``export_onnx(dtype="int8")``
(onnxruntime) stay close to fp32, and greedy transcripts of the trained tiny model mostly match."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
import torch

from omnisparse.cli import main as cli_main
from omnisparse.deploy.fast import load_plan, optimize_for_cpu, save_plan
from omnisparse.deploy.kinds import INT8_DTYPE_KINDS
from omnisparse.export.loading import load_model

from .test_fast import INT8_CER, INT8_ENC_TOL, stream_outputs, transcripts

TRAINED_CER = 0.1  # int8 vs fp32 transcripts of the trained tiny model (measured: identical)
# ONNX dynamic int8 of the random-weight chatty model quantises activations too (LSTM included) and
# flips its near-tied argmaxes more often than PyTorch int8: CER 0.27 measured on the tiny dev audio of
# the multi-engine corpus; a broken quantisation gives ~1.
ONNX_INT8_CER = 0.35


@pytest.fixture(scope="module")
def chatty(chatty_export):
    return load_model(chatty_export)


def test_dtype_int8_rule_combines_with_row_sparsity(chatty, dev_audio):
    fast, plan = optimize_for_cpu(chatty.model, dtype="int8", measure=False)
    kinds = {e["kind"] for e in plan["layers"].values()}
    assert plan["dtype"] == "int8" and plan["ffn"], "FFNs shrunk before quantising"
    assert kinds <= {"int8", "row-compact-int8"} and "row-compact-int8" in kinds
    for name in plan["layers"]:  # every prunable Linear is quantised (plain or row-compacted)
        m = fast.get_submodule(name)
        assert type(getattr(m, "inner", m)) is not torch.nn.Linear
    enc0, logits0, _ = stream_outputs(chatty.model)
    enc1, logits1, _ = stream_outputs(fast)
    assert 0 < float((enc0 - enc1).abs().max()) < INT8_ENC_TOL
    ref, got = transcripts(chatty.model, chatty, dev_audio), transcripts(fast, chatty, dev_audio)
    assert jiwer.cer(ref, got) < INT8_CER


def test_dtype_int8_measured_plan(chatty, tmp_path):
    fast, plan = optimize_for_cpu(chatty.model, dtype="int8", repeats=2, inner=2)
    assert plan["measured"] and plan["dtype"] == "int8" and plan["kinds"] == list(INT8_DTYPE_KINDS)
    for e in plan["layers"].values():
        assert e["kind"] in INT8_DTYPE_KINDS and "dense" in e["times_us"] and "int8" in e["times_us"]
    again, plan2 = optimize_for_cpu(chatty.model, plan=load_plan(save_plan(plan, tmp_path / "plan.json")))
    assert plan2["dtype"] == "int8"
    a, _, _ = stream_outputs(fast, seed=3)
    b, _, _ = stream_outputs(again, seed=3)
    assert float((a - b).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="dtype"):
        optimize_for_cpu(chatty.model, dtype="fp16", measure=False)


def test_dtype_int8_trained_tiny_transcripts(row_export, dev_audio):
    lm = load_model(row_export)
    fast, _ = optimize_for_cpu(lm.model, dtype="int8", measure=False)
    ref, got = transcripts(lm.model, lm, dev_audio), transcripts(fast, lm, dev_audio)
    assert jiwer.cer(ref, got) <= TRAINED_CER


def onnx_transcripts(onnx_dir, audio) -> list[str]:
    from omnisparse.deploy.onnx_runner import OnnxModel, OnnxStreamingRecognizer

    om = OnnxModel(onnx_dir)
    out = []
    for x in audio:
        rec = OnnxStreamingRecognizer(om)
        for i in range(0, len(x), 2560):
            rec.accept_audio(x[i:i + 2560])
        out.append(rec.finalize())
    return out


def test_onnx_int8_close_to_fp32(chatty, row_export, dev_audio, tmp_path):
    from omnisparse.deploy.onnx_export import export_onnx
    from omnisparse.deploy.onnx_runner import OnnxModel

    res8 = export_onnx(chatty, tmp_path / "int8", dtype="int8")
    res32 = export_onnx(chatty, tmp_path / "fp32")
    assert OnnxModel(res8.path).meta["dtype"] == "int8"
    assert res8.files["encoder.onnx"] < res32.files["encoder.onnx"]  # int8 weights
    ref, got = onnx_transcripts(res32.path, dev_audio), onnx_transcripts(res8.path, dev_audio)
    assert all(ref) and jiwer.cer(ref, got) < ONNX_INT8_CER
    # the trained tiny row export: int8 ONNX transcripts mostly match PyTorch fp32
    lm = load_model(row_export)
    assert cli_main(["export-onnx", str(row_export), "--out", str(tmp_path / "row8"), "--dtype", "int8"]) == 0
    assert jiwer.cer(transcripts(lm.model, lm, dev_audio), onnx_transcripts(tmp_path / "row8", dev_audio)) \
        <= TRAINED_CER


def test_cli_transcribe_fast(row_export, tiny_corpus, tmp_path, capsys):
    import soundfile as sf
    from lhotse import load_manifest

    from omnisparse.data.layout import CorpusLayout

    cut = next(iter(load_manifest(CorpusLayout(tiny_corpus).cuts("dev"))))
    wav = tmp_path / "a.wav"
    sf.write(str(wav), cut.load_audio()[0].astype(np.float32), 16000)
    outs = []
    for extra in ([], ["--fast"], ["--fast", "--dtype", "int8"]):
        assert cli_main(["transcribe", str(row_export), str(wav), "--stream", *extra]) == 0
        outs.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert outs[0] == outs[1]  # fp32 fast kinds are exact
    assert outs[2].startswith(str(wav))
