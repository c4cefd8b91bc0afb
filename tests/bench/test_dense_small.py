"""bench/dense_small.py on the tiny corpus: a finished run is only evaluated; the result holds WER per
split, both streaming real-time factors (PyTorch, onnxruntime int8), the anchor and provenance; under
``--nproc 2`` it trains through torchrun."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("pocketsphinx")
pytest.importorskip("onnxruntime")

# the overrides the session's tiny_run was trained with (a resumed run must match its config)
TINY_RUN = ["--train.max_steps=30", "--train.ckpt_every=30"]


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("dense_small")


def test_finished_run_is_evaluated(bench, tiny_corpus, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "dense_tiny.json"
    bench.main(["--preset", "tiny", "--out", str(out), "--rtf-utts", "2", "--anchor-utts", "1",
                f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={run}", *TINY_RUN])
    res = json.loads(out.read_text())
    assert res["optimizer_steps"] == 30 and res["world_size"] == 1
    assert {"dev", "test-clean", "test-other"} <= set(res["wer"])
    assert res["rtf_stream"] > 0 and res["rtf_stream_onnx_int8"] > 0
    assert set(res["rtf_subset_wer"]) == {"pytorch", "onnx_int8"}
    assert res["rtf_detail"]["utterances"] == 2 and "hyps" not in res["rtf_detail"]
    assert res["anchor"]["engine"] == "pocketsphinx" and res["commit"] and res["plot"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert (run / "onnx-int8" / "encoder.onnx").exists()


def test_nproc_trains_under_torchrun(bench, tiny_corpus, tmp_path):
    run = tmp_path / "ddp"
    cost = bench.train_distributed("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={run}",
                                            "--train.max_steps=3", "--train.ckpt_every=3", "--train.valid_every=0"],
                                   2, run)
    assert cost["world_size"] == 2 and cost["optimizer_steps"] == 3
    assert json.loads((run / "run.json").read_text())["config"]["train"]["threads"] == 1
