"""The WER-vs-size report: planning, cached evaluation, rendering and the headline comparison."""

from __future__ import annotations

import json

import pytest

from omnisparse.report.points import ExperimentLayout, Point, best_under
from omnisparse.report.render import headline, markdown


def _pt(method, name, size, wer, sparsity=None):
    return Point(method, name, "run", {}, sparsity, {"int8-sparse": size}, size, {"test-other": wer})


def test_best_under_picks_lowest_wer_that_fits():
    pareto = [{"size_bytes": 10, "wer": 0.5}, {"size_bytes": 20, "wer": 0.3}, {"size_bytes": 30, "wer": 0.2}]
    assert best_under(pareto, 25)["size_bytes"] == 20
    assert best_under(pareto, 9) is None


def test_headline_compares_with_the_best_searched_point_no_larger():
    pts = [_pt("individual", "prune-0.7", 100, 0.40, 0.7), _pt("individual", "prune-0.9", 50, 0.60, 0.9),
           _pt("supernet-searched", "a", 99, 0.38), _pt("supernet-searched", "b", 101, 0.10),
           _pt("supernet-searched", "c", 60, 0.59)]
    rows = {r["individual"]: r for r in headline(pts, "int8-sparse")}
    assert rows["prune-0.7"]["searched"] == "a"  # b is better but larger
    assert rows["prune-0.7"]["relative_gain"] == pytest.approx(0.05)
    assert rows["prune-0.7"]["meets_target"]
    assert rows["prune-0.9"]["searched"] is None and not rows["prune-0.9"]["meets_target"]
    md = markdown(pts, "int8-sparse", ["test-other"], {"individual": {"per_run": [{"wall_s": 60, "fwd_bwd_passes": 3}]}})
    assert "| prune-0.7 | 0.000 | 40.0 | a |" in md and "+5.0%" in md


@pytest.fixture(scope="module")
def tiny_experiment(tiny_corpus, tiny_run, tiny_supernet_run, tmp_path_factory):
    """EXP with a pruned baseline (trained here), the tiny supernet and a one-row Pareto table."""
    from omnisparse.config import load_config
    from omnisparse.export.loading import load_model
    from omnisparse.report.collect import space_and_bank
    from omnisparse.train.prune import prune

    root = tmp_path_factory.mktemp("exp")
    (root / "supernet").symlink_to(tiny_supernet_run)
    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={root / 'prune-0.5'}",
                               f"--sparsity.init_from={tiny_run}", "--sparsity.target=0.5", "--sparsity.prune_steps=4",
                               "--sparsity.prune_every=2", "--train.max_steps=6", "--train.ckpt_every=6"])
    prune(cfg)
    space, _ = space_and_bank(load_model(tiny_supernet_run))
    cfg_a = space.uniform(0.6)
    cfg_a[space.genes[0]] = 0.2
    search = root / "report-search"
    search.mkdir()
    pareto = {"format": "int8-sparse", "cost": {"evaluated": 3, "wall_s": 1.5, "generations": 1},
              "front": [{"config": cfg_a, "size_bytes": space.size_bytes(cfg_a, "int8-sparse"), "wer": 0.9}]}
    layout = ExperimentLayout(root, dense_dir=tiny_run)
    return layout, pareto


def test_report_end_to_end_is_cached(tiny_experiment, monkeypatch):
    from omnisparse.decoding import evaluate as ev
    from omnisparse.report import build_report

    layout, pareto = tiny_experiment
    pareto_path = layout.pareto
    pareto_path.parent.mkdir(parents=True, exist_ok=True)
    pareto_path.write_text(json.dumps(pareto))
    try:
        rep = build_report(layout.root, dense_dir=layout.dense, splits=["dev"], uniform=[0.5, 0.9], rtf_utts=1,
                           progress=False)
        methods = [p["method"] for p in rep["points"]]
        assert methods.count("dense") == 1 and methods.count("individual") == 1
        assert methods.count("supernet-uniform") == 2 and methods.count("supernet-searched") == 1
        for p in rep["points"]:
            assert 0 <= p["wer"]["dev"] and p["rtf"] > 0
            assert p["size_bytes"]["int8-sparse"] < p["size_bytes"]["fp32-sparse"]
        sizes = {p["name"]: p["size_bytes"] for p in rep["points"]}
        assert sizes["u0.9"]["fp32-sparse"] < sizes["u0.5"]["fp32-sparse"] < sizes["dense"]["fp32-sparse"]
        # unstructured int8 at 0.5 keeps the dense layout (3 bytes per kept weight > 1 per weight)
        assert sizes["u0.9"]["int8-sparse"] < sizes["u0.5"]["int8-sparse"] <= sizes["dense"]["int8-sparse"]
        assert rep["headline"][0]["individual"] == "prune-0.5"
        md = (layout.report_dir / "report.md").read_text()
        assert "supernet-searched" in md and "prune-0.5" in md
        assert (layout.report_dir / "wer_vs_size.png").stat().st_size > 1000

        calls = []
        real = ev.evaluate_cuts
        monkeypatch.setattr(ev, "evaluate_cuts", lambda *a, **k: calls.append(1) or real(*a, **k))
        again = build_report(layout.root, dense_dir=layout.dense, splits=["dev"], uniform=[0.5, 0.9], rtf_utts=1,
                             progress=False)
        assert calls == [] and again["points"] == rep["points"]
    finally:
        pareto_path.unlink()


def test_report_of_an_empty_directory_is_a_clear_error(tmp_path):
    from omnisparse.report import build_report

    with pytest.raises(FileNotFoundError, match="no dense"):
        build_report(tmp_path)
