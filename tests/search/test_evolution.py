"""EvolutionFinder on a real (shapes-only) search space with cheap fake evaluators."""

from __future__ import annotations

import csv
import json
import random
import zlib

import pytest

from omnisparse.config import load_config
from omnisparse.export.format import ArtefactPricing
from omnisparse.models.transducer import Transducer
from omnisparse.search.evolution import EvolutionFinder, EvolutionSettings
from omnisparse.search.state import _rng_from_json, _rng_to_json
from omnisparse.sparsity.space import SearchSpace

FMT = "int8-sparse"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """The tiny model's space: 6 genes, grid 0.0 .. 0.9; int8-sparse sizes 241510 (sparsest) .. 251544
    (dense; a few configs just past a matrix's layout switch are up to a few hundred bytes larger: the
    sparse layout's header entries outweigh the data it saves)."""
    cfg = load_config("tiny").model
    cfg.vocab_size = 17
    model = Transducer.from_config(cfg)
    return SearchSpace.from_model(model, pricing=ArtefactPricing.of(model))


@pytest.fixture(scope="module")
def small_space() -> SearchSpace:
    """Same genes, grid {0, 0.5, 0.9}: 729 configs, so duplicates are common."""
    cfg = load_config("tiny").model
    cfg.vocab_size = 17
    model = Transducer.from_config(cfg)
    return SearchSpace.from_model(model, grid=(0.0, 0.5, 0.9), pricing=ArtefactPricing.of(model))


class FakeWer:
    """Deterministic fake WER: grows with sparsity (unevenly per gene) plus hash noise; counts calls,
    optionally raises at call ``fail_at`` (1-based)."""

    def __init__(self, space: SearchSpace, fail_at: int = 0):
        self.space = space
        self.calls = 0
        self.fail_at = fail_at
        self.seen: list[tuple] = []

    def __call__(self, config: dict[str, float]) -> float:
        self.calls += 1
        if self.fail_at and self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        key = self.space.encode(config)
        self.seen.append(key)
        noise = (zlib.crc32(repr(key).encode()) % 1000) / 1e5
        return 0.1 + sum((i + 1) * 0.02 * s * s for i, s in enumerate(key)) + noise


def make(space, evaluator, size_min=None, size_max=None, **kw):
    lo = space.size_bytes(space.sample_min(1.0), FMT) if size_min is None else size_min
    hi = space.size_bytes(space.sample_max(), FMT) if size_max is None else size_max
    settings = dict(population=8, generations=3, mutations=6, crossovers=6, mutate_prob=0.3, max_tries=50,
                    seed=0, bucket_bytes=4000)
    settings.update(kw)
    return EvolutionFinder(space, evaluator, lambda c: space.size_bytes(c, FMT),
                           EvolutionSettings(size_min=lo, size_max=hi, **settings),
                           nonzero_params=space.nonzero_params, progress=False)


def test_children_stay_inside_the_size_range(space):
    lo, hi = 245_000, 250_000
    finder = make(space, FakeWer(space), lo, hi, generations=4)
    res = finder.run()
    assert res["history"] and res["cost"]["generations"] == 4
    assert all(lo <= h["bytes"] <= hi for h in res["history"])
    assert all(h["bytes"] == space.size_bytes(h["config"], FMT) for h in res["history"])
    # the last (unevaluated) population too, and every origin shows up
    assert finder.population and all(lo <= space.size_bytes(p["config"], FMT) <= hi for p in finder.population)
    assert {h["origin"] for h in res["history"]} >= {"random", "mutation", "crossover"}
    # the sparsest config (every gene at 0.9) is outside this range: not a parent
    assert "sparsest" not in {h["origin"] for h in res["history"]}


def test_initial_population_and_pareto_front_is_monotone(space):
    finder = make(space, FakeWer(space), generations=4, population=14)
    res = finder.run()
    hist = res["history"]
    assert hist[0]["origin"] == "sparsest" and set(hist[0]["config"].values()) == {0.9}
    assert sum(h["generation"] == 0 for h in hist) == 14  # population: sparsest + 9 uniform + 4 random
    front, table = res["front"], res["table"]
    assert front and len(front) <= len(table)
    sizes, wers = [r["size_bytes"] for r in front], [r["wer"] for r in front]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert all(a > b for a, b in zip(wers, wers[1:]))
    # every table row is the best (then smallest) evaluation of its bucket
    for row in table:
        b = row["size_bytes"] // 4000
        same = [h for h in hist if h["bytes"] // 4000 == b]
        assert (row["wer"], row["size_bytes"]) == min((h["wer"], h["bytes"]) for h in same)
    # front = table minus buckets not strictly better than every smaller bucket
    best, expected = float("inf"), []
    for row in table:
        if row["wer"] < best:
            best = row["wer"]
            expected.append(row)
    assert front == expected
    assert all(r["nonzero_params"] == space.nonzero_params(r["config"]) for r in front)
    assert all(r["size_mb"] == r["size_bytes"] / 1e6 for r in front)


def test_same_seed_same_history_other_seed_differs(space):
    a = make(space, FakeWer(space), seed=3).run()["history"]
    b = make(space, FakeWer(space), seed=3).run()["history"]
    c = make(space, FakeWer(space), seed=4).run()["history"]
    assert a == b
    assert [h["config"] for h in a] != [h["config"] for h in c]


def test_global_rng_is_not_used(space):
    random.seed(1)
    a = make(space, FakeWer(space)).run()["history"]
    random.seed(2)
    before = random.getstate()
    b = make(space, FakeWer(space)).run()["history"]
    assert a == b and random.getstate() == before


def test_cache_avoids_re_evaluation(small_space):
    ev = FakeWer(small_space)
    finder = make(small_space, ev, generations=5, bucket_bytes=20000)
    res = finder.run()
    keys = [small_space.encode(h["config"]) for h in res["history"]]
    assert ev.calls == len(res["history"]) == len(set(keys)) == res["cost"]["evaluated"]
    assert res["cost"]["duplicates_skipped"] > 0


def test_resume_after_a_crash_reproduces_the_history(space, tmp_path):
    full = make(space, FakeWer(space), generations=4).run(tmp_path / "full")
    # crash in the middle of generation 2 (8 initial + ~12 per generation, minus duplicates)
    crashing = FakeWer(space, fail_at=len([h for h in full["history"] if h["generation"] < 2]) + 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make(space, crashing, generations=4).run(tmp_path / "crash")
    state = json.loads((tmp_path / "crash" / "state.json").read_text())
    assert state["generation"] == 2
    resumed_ev = FakeWer(space)
    resumed = make(space, resumed_ev, generations=4).run(tmp_path / "crash")
    assert resumed["history"] == full["history"]
    assert resumed["front"] == full["front"]
    assert resumed_ev.calls == sum(h["generation"] >= 2 for h in full["history"])  # nothing redone before
    assert resumed["cost"]["generations"] == 4 and resumed["cost"]["evaluated"] == len(full["history"])
    for name in ("history.json", "pareto.json", "search.csv", "state.json"):
        assert (tmp_path / "crash" / name).exists()
    assert json.loads((tmp_path / "crash" / "history.json").read_text()) == full["history"]
    pareto = json.loads((tmp_path / "crash" / "pareto.json").read_text())
    assert pareto["front"] == full["front"] and pareto["cost"]["wall_s"] > 0
    with open(tmp_path / "crash" / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["generation"]) for r in rows] == [0, 1, 2, 3]
    # a finished search run again evaluates nothing
    again = FakeWer(space)
    assert make(space, again, generations=4).run(tmp_path / "crash")["history"] == full["history"]
    assert again.calls == 0


def test_more_generations_continue_a_finished_search(space, tmp_path):
    direct = make(space, FakeWer(space), generations=4).run()["history"]
    make(space, FakeWer(space), generations=2).run(tmp_path)
    assert make(space, FakeWer(space), generations=4).run(tmp_path)["history"] == direct


def test_resume_with_other_settings_is_refused(space, tmp_path):
    make(space, FakeWer(space), generations=1).run(tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        make(space, FakeWer(space), generations=2, seed=9).run(tmp_path)
    # resume=False starts afresh
    assert make(space, FakeWer(space), generations=1, seed=9).run(tmp_path, resume=False)["history"]


def test_unsatisfiable_range_is_a_clear_error(space):
    with pytest.raises(ValueError, match="empty size range"):
        make(space, FakeWer(space), 300_000, 200_000)
    with pytest.raises(ValueError, match="no random config inside the size range"):
        make(space, FakeWer(space), 1_000, 2_000).run()
    with pytest.raises(ValueError, match="bucket_bytes"):
        make(space, FakeWer(space), bucket_bytes=0)


def test_rng_state_json_round_trip():
    rng = random.Random(5)
    rng.random()
    state = json.loads(json.dumps(_rng_to_json(rng.getstate())))
    other = random.Random()
    other.setstate(_rng_from_json(state))
    assert [other.random() for _ in range(5)] == [rng.random() for _ in range(5)]


def test_uniform_configs_in_range_seed_the_first_generation(space):
    lo, hi = 245_000, 250_000
    in_range = [s for s in space.grid if lo <= space.size_bytes(space.uniform(s), FMT) <= hi]
    assert 0 < len(in_range) < len(space.grid)  # the range cuts the ladder: both sides are exercised
    finder = make(space, FakeWer(space), lo, hi, population=12)
    first = finder.initial_population()
    seeded = [p for p in first if p["origin"] == "uniform"]
    assert sorted(set(p["config"].values()).pop() for p in seeded) == sorted(in_range)
    assert all(len(set(p["config"].values())) == 1 for p in seeded)
    assert len(first) == 12 and {p["origin"] for p in first} == {"uniform", "random"}
    # the full range: sparsest + the 9 other uniform configs, even past `population` (up to the largest
    # uniform config: uniform 0.7 is a little larger than the dense one, see the fixture)
    top = max(space.size_bytes(space.uniform(s), FMT) for s in space.grid)
    full = make(space, FakeWer(space), size_max=top, population=4).initial_population()
    assert [p["origin"] for p in full] == ["sparsest"] + ["uniform"] * (len(space.grid) - 1)
    # off: the old behaviour
    off = make(space, FakeWer(space), lo, hi, population=12, seed_uniform=False).initial_population()
    assert "uniform" not in {p["origin"] for p in off}


def test_sensitivity_measures_each_gene_once_and_seeds_its_ladder(space, tmp_path):
    ev = FakeWer(space)  # cost of a gene grows with its position: gene 0 least sensitive
    top = max(space.size_bytes(space.uniform(s), FMT) for s in space.grid)
    finder = make(space, ev, size_max=top, population=4, sensitivity=True, sensitivity_spread=2, generations=1)
    sens = finder.measure_sensitivity()
    assert list(sens) == list(space.genes) and ev.calls == len(space.genes) + 1
    assert finder.measure_sensitivity() is sens and ev.calls == len(space.genes) + 1  # measured once
    ladder = finder.sensitivity_ladder()
    grid = sorted(space.grid)
    least, most = min(sens, key=sens.get), max(sens, key=sens.get)
    mid = ladder[len(grid) // 2]  # a level inside the grid: least sensitive 2 steps up, most 2 down
    assert grid.index(mid[least]) - grid.index(mid[most]) == 4
    first = finder.initial_population()
    assert "sensitivity" in {p["origin"] for p in first}
    res = finder.run(tmp_path / "s")
    pareto = json.loads((tmp_path / "s" / "pareto.json").read_text())
    assert pareto["sensitivity"] == pytest.approx(sens) and res["cost"]["sensitivity_evaluations"] == 7
    # a resumed finder keeps the measurement (no re-evaluation)
    again = make(space, FakeWer(space), size_max=top, population=4, sensitivity=True, generations=1)
    again.run(tmp_path / "s")
    assert again.sensitivity == pytest.approx(sens)


def test_score_key_names_the_fitness_everywhere(space, tmp_path):
    finder = make(space, FakeWer(space), population=6, generations=1)
    finder.score_key = "loss_per_token"
    res = finder.run(tmp_path / "k")
    assert all("loss_per_token" in r and "wer" not in r for r in res["front"] + res["history"])
    rows = list(csv.DictReader(open(tmp_path / "k" / "search.csv")))
    assert "best_loss_per_token" in rows[0]
    with pytest.raises(ValueError, match="score_key"):  # a state saved under another fitness is not resumed
        make(space, FakeWer(space), population=6, generations=1).run(tmp_path / "k")
