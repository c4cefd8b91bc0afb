"""bench/inference_speed.py end to end on the tiny supernet (a hand-made one-row Pareto front), into tmp."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from omnisparse.export.loading import load_model
from omnisparse.export.subnet import space_for

BENCH = Path(__file__).resolve().parents[2] / "bench" / "inference_speed.py"
KEYS = {"model", "size_bytes", "sparsity", "granularity", "runtime", "dtype", "rtf", "speedup_vs_dense",
        "speedup_vs_dense_same_runtime", "ideal_speedup", "wer_test_other"}


def test_inference_speed_smoke(tiny_supernet_run, tiny_run, tiny_corpus, tmp_path):
    spec = importlib.util.spec_from_file_location("inference_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    space = space_for(load_model(tiny_supernet_run))
    config = space.uniform(0.5)
    search = tmp_path / "search"
    search.mkdir()
    size = space.size_bytes(config, "int8-sparse")
    (search / "pareto.json").write_text(json.dumps({"format": "int8-sparse", "front": [
        {"size_bytes": size, "size_mb": size / 1e6, "wer": 1.0, "config": config}]}))
    out = tmp_path / "res" / "inference_speed.json"
    assert bench.main(["--supernet", str(tiny_supernet_run), "--dense", str(tiny_run), "--search-dir", str(search),
                       "--corpus", str(tiny_corpus), "--test-subset", "2", "--parity-utts", "2",
                       "--runtimes", "pytorch", "pytorch-fast", "onnxruntime", "--dtypes", "fp32",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {"rows", "targets", "commit", "command", "machine", "date"} <= set(res)
    assert len(res["rows"]) == 2 * 3 and all(KEYS <= set(r) for r in res["rows"])
    dense = [r for r in res["rows"] if r["model"] == "dense"]
    assert next(r for r in dense if r["runtime"] == "pytorch")["speedup_vs_dense"] == 1.0
    assert all(r["speedup_vs_dense_same_runtime"] == 1.0 for r in dense)  # dense against itself, per runtime
    sub = [r for r in res["rows"] if r["model"] != "dense"]
    assert all(abs(r["ideal_speedup"] - 1 / (1 - r["sparsity"])) < 1e-3 and 0.2 < r["sparsity"] < 0.5 for r in sub)
    par = res["targets"]["onnx_parity"]
    assert par["transcripts_equal"] and not par["whole_dev"] and not par["met"]
    assert isinstance(res["targets"]["speed"]["met"], bool) and out.with_suffix(".png").is_file()


def test_inference_speed_in_sherpa_onnx(tiny_supernet_run, tiny_stateless_run, tiny_corpus, tmp_path):
    """sherpa-onnx rows for the stateless dense model (parity on dev, same-runtime speed-up 1 against
    itself); the LSTM-predictor sub-network is listed as skipped with the reason, not a crash, and
    with --pred-history runs there over a token window, its parity against PyTorch with that window."""
    pytest.importorskip("sherpa_onnx", reason="the sherpa-onnx wheel is not installed")
    spec = importlib.util.spec_from_file_location("inference_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    space = space_for(load_model(tiny_supernet_run))
    search = tmp_path / "search"
    search.mkdir()
    config = space.uniform(0.5)
    size = space.size_bytes(config, "int8-sparse")
    (search / "pareto.json").write_text(json.dumps({"format": "int8-sparse", "front": [
        {"size_bytes": size, "size_mb": size / 1e6, "wer": 1.0, "config": config}]}))
    out = tmp_path / "res" / "inference_speed.json"
    assert bench.main(["--supernet", str(tiny_supernet_run), "--dense", str(tiny_stateless_run), "--search-dir",
                       str(search), "--corpus", str(tiny_corpus), "--test-subset", "2", "--parity-utts", "2",
                       "--runtimes", "pytorch", "sherpa-onnx", "--dtypes", "fp32", "int8", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sherpa = [r for r in res["rows"] if r["runtime"] == "sherpa-onnx"]
    assert [(r["model"], r["dtype"]) for r in sherpa] == [("dense", "fp32"), ("dense", "int8")]
    assert all(r["speedup_vs_dense_same_runtime"] == 1.0 and r["onnx_bytes"] > 0 for r in sherpa)
    assert {(s["runtime"], s["dtype"]) for s in res["skipped"]} == {("sherpa-onnx", "fp32"), ("sherpa-onnx", "int8")}
    assert all("--pred-history" in s["reason"] for s in res["skipped"])
    par = res["targets"]["sherpa_parity"]
    assert par["per_model"]["dense"] == {"utterances": 2, "equal": 2} and not par["met"]  # 2 cuts, not all of dev
    same = res["targets"]["speed_same_runtime"]["sherpa-onnx int8"]
    assert same["met"] is False and same["best_within_wer_limit"] is None  # no sub-network ran there

    assert bench.main(["--supernet", str(tiny_supernet_run), "--dense", str(tiny_stateless_run), "--search-dir",
                       str(search), "--corpus", str(tiny_corpus), "--test-subset", "2", "--parity-utts", "2",
                       "--runtimes", "pytorch", "sherpa-onnx", "--dtypes", "fp32", "--pred-history", "6",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sherpa = {r["model"]: r for r in res["rows"] if r["runtime"] == "sherpa-onnx"}
    assert len(sherpa) == 2 and not res["skipped"] and res["settings"]["sherpa_pred_history"] == 6
    sub = next(m for m in sherpa if m != "dense")
    assert sherpa[sub]["pred_history"] == 6 and sherpa["dense"]["pred_history"] == 0
    assert res["targets"]["sherpa_parity"]["per_model"][sub] == {"utterances": 2, "equal": 2}
