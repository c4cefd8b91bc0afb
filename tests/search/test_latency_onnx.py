"""The onnxruntime latency table: every cell a whole exported encoder step (gene pruned alone), in the
format of LatencyTable, cached under a key of its own, usable by run_search. Timings never asserted."""

from __future__ import annotations

import json

import pytest

from omnisparse.config import load_config
from omnisparse.export.format import ArtefactPricing
from omnisparse.export.loading import load_model
from omnisparse.search.latency import TABLE_FILE, LatencyTable, key_digest, table_key
from omnisparse.search.latency_onnx import load_or_measure_onnx, measure_onnx_latency_table
from omnisparse.search.run import run_search
from omnisparse.sparsity.masks import MaskSpec
from omnisparse.sparsity.space import SearchSpace

GRID = (0.0, 0.5)


@pytest.fixture(scope="module")
def lm(tiny_supernet_run):
    return load_model(tiny_supernet_run)


@pytest.fixture(scope="module")
def space(lm) -> SearchSpace:
    return SearchSpace.from_model(lm.model, grid=GRID, spec=MaskSpec(granularity="row"),
                                  pricing=ArtefactPricing.of(lm.model))


@pytest.fixture(scope="module")
def table(lm, space) -> dict:
    return measure_onnx_latency_table(lm, space, repeats=2, inner=2, dtype="int8")


def test_table_cells_are_whole_steps_minus_the_dense_one(table, space):
    t = LatencyTable(table)
    t.check_space(space)
    assert table["runtime"] == "onnxruntime" and table["compact"] == "ffn" and table["dtype"] == "int8"
    dense = table["step_us"]["dense"]
    assert dense > 0 and table["fixed_us"] == dense
    for gene in space.genes:
        cells = table["genes"][gene]
        assert cells["0"] == {"us": 0.0, "step_us": dense}
        assert cells["0.5"]["step_us"] > 0 and cells["0.5"]["us"] == pytest.approx(cells["0.5"]["step_us"] - dense,
                                                                                     abs=2e-3)
    assert t.latency_us(space.sample_max()) == pytest.approx(dense)
    v = table["validation"]
    assert v["config"] == "uniform:0.5" and v["measured_us"] > 0 and v["predicted_us"] == pytest.approx(
        t.latency_us(space.uniform(0.5)), abs=1e-3)


def test_key_is_its_own_and_the_table_is_reused(lm, space, table, tmp_path):
    assert table["key"]["runtime"] == "onnxruntime"
    assert table["key_digest"] != key_digest(table_key(space, 1, ["onnxruntime"], "int8", 2))
    out = tmp_path / TABLE_FILE
    out.write_text(json.dumps(table))
    got, source = load_or_measure_onnx(lm, space, out, cache_dir="none", repeats=2, dtype="int8")
    assert source == "output" and got.fixed_us == table["fixed_us"]


def test_run_search_on_the_onnxruntime_table(tiny_supernet_run, tiny_corpus, table, lm, tmp_path):
    """The search's ONNX branch, on a given table (the supernet's grid filled from the two measured
    sparsities: the plumbing is tested here, not the timings)."""
    full = json.loads(json.dumps(table))
    for cells in full["genes"].values():
        for s in lm.config.sparsity.grid:
            cells.setdefault(f"{float(s):g}", cells["0.5" if s >= 0.25 else "0"])
    given = tmp_path / "given.json"
    given.write_text(json.dumps(full))
    out = tmp_path / "lat"
    cfg = load_config("search_tiny", [f"--data.corpus_dir={tiny_corpus}", f"--search.supernet={tiny_supernet_run}",
                                      "--search.dev_subset=4", "--search.generations=1",
                                      f"--search.out_dir={out}", "--search.cost=latency",
                                      "--search.latency_runtime=onnxruntime", f"--search.latency_table={given}",
                                      "--search.bucket_ms=0.005"])
    res = run_search(cfg, progress=False, tensorboard=False)
    assert json.loads((out / TABLE_FILE).read_text())["runtime"] == "onnxruntime"
    assert res["pareto"] and all("latency_ms" in r for r in res["pareto"])
