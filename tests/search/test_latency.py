"""Latency-aware search: the measured per-gene latency table (shape, kinds, cache, reuse), the latency
cost, EvolutionFinder with a non-byte / constrained cost, and run_search with search.cost=latency|both.
Timings are never asserted to be monotone (the machine may be busy)."""

from __future__ import annotations

import json
import math
import random

import pytest

from omnisparse.config import load_config
from omnisparse.deploy.kinds import FP32_KINDS, KINDS
from omnisparse.export.format import ArtefactPricing
from omnisparse.export.loading import load_model
from omnisparse.search.evolution import EvolutionFinder, EvolutionSettings
from omnisparse.search.latency import (TABLE_FILE, LatencyTable, key_digest, load_or_measure, measure_latency_table,
                                       table_key)
from omnisparse.search.run import cost_mode, run_search
from omnisparse.sparsity.space import SearchSpace

from .test_evolution import FakeWer

GRID = (0.0, 0.5, 0.9)


@pytest.fixture(scope="module")
def lm(tiny_supernet_run):
    return load_model(tiny_supernet_run)


@pytest.fixture(scope="module")
def space(lm) -> SearchSpace:
    return SearchSpace.from_model(lm.model, grid=GRID, pricing=ArtefactPricing.of(lm.model))


@pytest.fixture(scope="module")
def table(lm, space) -> dict:
    return measure_latency_table(lm.model, space, repeats=2)


def test_table_shape_and_kinds(table, space, lm):
    assert set(table["genes"]) == set(space.genes) and table["gene_order"] == list(space.genes)
    groups = lm.model.prunable_groups()
    for gene, cells in table["genes"].items():
        assert set(cells) == {"0", "0.5", "0.9"}
        for s, cell in cells.items():
            assert cell["us"] > 0 and set(cell["kind_us"]) == set(KINDS)
            assert set(cell["layers"]) == {n for n, _ in groups[gene]}
            for e in cell["layers"].values():
                assert e["calls"] >= 1 and e["kind"] in FP32_KINDS and "dense" in e["times_us"]
                assert set(e["times_us"]) | set(e["unavailable"]) == set(KINDS)
                best = min(e["times_us"][k] for k in FP32_KINDS if k in e["times_us"])
                assert e["times_us"][e["kind"]] == best
            assert cell["us"] == pytest.approx(sum(e["times_us"][e["kind"]] * e["calls"]
                                                   for e in cell["layers"].values()), abs=1e-2)
        # a row-pruned-free (unstructured) FFN keeps its shape; the dense cell is the full matrix
        if gene.endswith(".ffn"):
            w1 = next(e for n, e in cells["0"]["layers"].items() if n.endswith("w1"))
            assert w1["shape"] == [lm.model.config.ffn_dim, lm.model.config.d_model]
    assert table["step_us"]["dense"] > 0 and table["fixed_us"] >= 0
    assert table["chunk_ms"] == lm.model.encoder.frames_per_chunk * 10
    v = table["validation"]
    assert v["config"] == "uniform:0.9" and v["predicted_us"] > 0 and v["measured_us"] > 0
    assert table["key_digest"] == key_digest(table["key"]) and table["key"]["machine"]["threads"] == 1
    json.dumps(table)  # plain JSON


def test_cost_function_plumbing(table, space):
    t = LatencyTable(table)
    dense, sparse = space.sample_max(), space.uniform(0.9)
    assert t.latency_us(dense) == pytest.approx(t.fixed_us + sum(table["genes"][g]["0"]["us"] for g in space.genes))
    one = {**dense, space.genes[0]: 0.5}
    assert t.latency_us(one) - t.latency_us(dense) == pytest.approx(
        table["genes"][space.genes[0]]["0.5"]["us"] - table["genes"][space.genes[0]]["0"]["us"])
    assert t.latency_us({}) == t.latency_us(dense)  # missing genes are dense
    assert t.latency_us({space.genes[0]: 0.45}) == t.latency_us({space.genes[0]: 0.5})  # nearest grid value
    assert t.latency_ms(sparse) == t.latency_us(sparse) / 1000 and t.rtf(dense) > 0
    with pytest.raises(ValueError, match="not in the latency table"):
        t.latency_us({"enc.99.ffn": 0.5})
    with pytest.raises(ValueError, match="lacks sparsities"):
        t.check_space(SearchSpace(space.genes, (0.0, 0.3), space.spec, space.pricing))


def test_cache_and_reuse(lm, space, table, tmp_path):
    cache = tmp_path / "cache"
    key = table_key(space, 1, table["kinds"], "fp32", 2)
    (cache).mkdir()
    (cache / f"latency-{key_digest(key)}.json").write_text(json.dumps(table))
    out = tmp_path / "out" / TABLE_FILE
    t, source = load_or_measure(lm.model, space, out, cache_dir=cache, repeats=2)
    assert source == "cache" and out.is_file() and t.latency_us({}) == LatencyTable(table).latency_us({})
    t2, source2 = load_or_measure(lm.model, space, out, cache_dir="none", repeats=2)
    assert source2 == "output"
    t3, source3 = load_or_measure(lm.model, space, None, table_path=str(out), cache_dir="none", repeats=7)
    assert source3 == "given"  # another key: used anyway (with a warning)


def test_finder_with_latency_cost_and_constraint(space, table):
    t = LatencyTable(table)
    ev = FakeWer(space)
    settings = EvolutionSettings(size_min=0, size_max=2 ** 62, bucket_bytes=5, population=6, generations=2,
                                 mutations=4, crossovers=4, seed=0)
    f = EvolutionFinder(space, ev, lambda c: int(round(t.latency_us(c))), settings, cost_key="latency_us",
                        describe=lambda c: {"size_bytes": space.size_bytes(c, "int8-sparse")}, progress=False)
    res = f.run()
    assert res["front"] and all({"latency_us", "latency_ms", "size_bytes", "wer"} <= set(r) for r in res["front"])
    assert all("bytes" not in h and h["latency_us"] > 0 for h in res["history"])
    lats = [r["latency_us"] for r in res["front"]]
    assert lats == sorted(lats)
    # a constraint on the other quantity: infeasible configs (cost None) are never drawn
    limit = space.size_bytes(space.uniform(0.5), "int8-sparse")
    g = EvolutionFinder(space, FakeWer(space),
                        lambda c: (int(round(t.latency_us(c))) if space.size_bytes(c, "int8-sparse") <= limit
                                   else None), settings, cost_key="latency_us", progress=False)
    hist = g.run()["history"]
    assert hist and all(space.size_bytes(h["config"], "int8-sparse") <= limit for h in hist)


def test_cost_mode():
    cfg = load_config("search_tiny")
    assert cost_mode(cfg.search) == ("bytes", "bytes")
    cfg.search.cost = "both"
    with pytest.raises(ValueError, match="one constraint"):
        cost_mode(cfg.search)
    cfg.search.max_latency_ms = 1.0
    assert cost_mode(cfg.search) == ("both", "bytes")
    cfg.search.max_latency_ms, cfg.search.size_max_mb = 0.0, 0.3
    assert cost_mode(cfg.search) == ("both", "latency")
    cfg.search.cost = "watts"
    with pytest.raises(ValueError, match="search.cost"):
        cost_mode(cfg.search)


def test_run_search_cost_latency_and_both(tiny_supernet_run, tiny_corpus, tmp_path):
    common = [f"--data.corpus_dir={tiny_corpus}", f"--search.supernet={tiny_supernet_run}", "--search.dev_subset=4",
              "--sparsity.grid=[0.0,0.5,0.9]", f"--search.latency_cache_dir={tmp_path / 'cache'}",
              "--search.latency_repeats=2", "--search.bucket_ms=0.005"]
    out = tmp_path / "lat"
    cfg = load_config("search_tiny", [*common, f"--search.out_dir={out}", "--search.cost=latency"])
    res = run_search(cfg, progress=False, tensorboard=False)
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["cost_key"] == "latency_us" and pareto["front_on"] == "latency"
    assert (out / TABLE_FILE).is_file() and list((tmp_path / "cache").glob("latency-*.json"))
    front = res["pareto"]
    assert front and all({"latency_us", "latency_ms", "size_bytes", "size_mb", "wer", "config"} <= set(r)
                         for r in front)
    assert [r["latency_us"] for r in front] == sorted(r["latency_us"] for r in front)
    assert all("latency_ms" in u for u in pareto["uniform"])
    # both, front on bytes under a latency limit: the table is reused from the cache, the limit holds
    table = LatencyTable(json.loads((out / TABLE_FILE).read_text()))
    rng = random.Random(0)
    sp = SearchSpace.from_model(load_model(tiny_supernet_run).model, grid=GRID)
    lats = sorted(table.latency_ms(sp.sample_random(rng)) for _ in range(40))
    limit_ms = lats[len(lats) // 2]  # about half the configs are feasible, whatever the timings
    out2 = tmp_path / "both"
    cfg2 = load_config("search_tiny", [*common, f"--search.out_dir={out2}", "--search.cost=both",
                                       f"--search.max_latency_ms={limit_ms}"])
    res2 = run_search(cfg2, progress=False, tensorboard=False)
    hist = json.loads((out2 / "history.json").read_text())
    assert hist and all("bytes" in h and table.latency_ms(h["config"]) <= limit_ms for h in hist)
    assert all({"size_bytes", "latency_ms"} <= set(r) for r in res2["pareto"])
    assert json.loads((out2 / "pareto.json").read_text())["cost_key"] == "bytes"
    assert not math.isnan(res2["pareto"][0]["wer"])
