import json
import math

import pytest

from omnisparse.data.splits import load_split_cuts
from omnisparse.config import load_config


def _args(tmp_path, corpus, *more):
    return ["--preset-suffix", "tiny", "--exp", str(tmp_path / "exp"), f"--data.corpus_dir={corpus}",
            "--test-subset", "2", "--steps", "2", "--out", str(tmp_path / "dual_mode.json"), *more]


def test_labelled_budgets_train_on_their_subset_and_pretrain_on_all_audio(load_bench, tiny_corpus, tmp_path):
    bench = load_bench("dual_mode")
    bench.main(_args(tmp_path, tiny_corpus, "--labelled-hours", "0.08", "0.03", "--dense-steps", "4",
                     "--pretrain-steps", "2", "--systems", "dual-mode", "dual-mode+ssl", "individual-pruned-stream"))
    out = json.loads((tmp_path / "dual_mode.json").read_text())
    exp = tmp_path / "exp"
    assert [b["labelled"] for b in out["budgets"]] == ["0.03h", "0.08h"]  # smallest first
    assert set(out["targets"]) == {"0.03h", "0.08h"} and set(out["shortfalls"]) == {"0.03h", "0.08h"}
    for b in out["budgets"]:
        rows = [r for r in out["rows"] if r["labelled"] == b["labelled"]]
        assert len(rows) == b["rows"] == 5 and b["dense_init_steps"] == 4
        hours = float(b["labelled"][:-1])
        # the subset holds at least the budget, and no more than one utterance beyond it
        assert all(hours <= r["labelled_hours"] < hours + 15 / 3600 for r in rows)
        for run in ("dense", "dense-ssl", "dual-mode", "dual-mode-ssl", "prune-0.7"):
            cfg = json.loads((exp / f"labelled-{b['labelled']}" / run / "config.json").read_text())
            assert cfg["data"]["train_hours"] == hours, run
    # one pre-training for every budget, on the whole train split's audio
    assert not list(exp.glob("labelled-*/pretrain"))
    assert json.loads((exp / "pretrain" / "config.json").read_text())["data"]["train_hours"] == 0
    # the SSL claim is held to a 5 % gain at the smallest budget only
    assert out["targets"]["0.03h"]["ssl_improves_both"]["full"]["relation"] == "<= (1 - 0.05) x"
    assert out["targets"]["0.08h"]["ssl_improves_both"]["full"]["relation"] == "<"
    # pre-training health: every dev validation of both paths, plotted
    for path in ("dense", "sparse"):
        curve = out["pretrain_curves"][path]
        assert curve and curve[-1]["step"] == 2 and set(curve[-1]) == {"step", *(k for k, _ in bench.HEALTH)}
    assert (tmp_path / "dual_mode_pretrain.png").stat().st_size > 0 and out["pretrain_plot"].endswith("_pretrain.png")


def test_a_subset_dense_start_stays_clean_as_many_steps_as_the_whole_split(load_bench, tiny_corpus, tmp_path):
    bench = load_bench("dual_mode")
    ns = bench.argparse.Namespace(preset_suffix="tiny", exp=str(tmp_path / "exp"), dense=None, steps=4, sparsity=None,
                                  pretrain_steps=0, dense_steps=0)
    extra = [f"--data.corpus_dir={tiny_corpus}", "--augment.start_epoch=2", "--data.spec_augment_start_epoch=1"]
    cfg = bench.Experiment(ns, extra, 0.03).dense_init_config()
    base = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}"])
    train_h = sum(c.duration for c in load_split_cuts(base, base.data.train_splits)) / 3600
    assert cfg.augment.start_epoch == math.ceil(2 * train_h / 0.03)
    assert cfg.data.spec_augment_start_epoch == math.ceil(train_h / 0.03)
    assert bench.Experiment(ns, extra).dense_init_config().augment.start_epoch == 2  # the whole split: as given


def test_labelled_budgets_refuse_a_given_dense_start(load_bench, tiny_corpus, tmp_path):
    bench = load_bench("dual_mode")
    with pytest.raises(SystemExit, match="every budget trains its own dense start"):
        bench.main(_args(tmp_path, tiny_corpus, "--labelled-hours", "1", "--dense", str(tmp_path / "d")))
    with pytest.raises(SystemExit, match="must be > 0"):
        bench.main(_args(tmp_path, tiny_corpus, "--labelled-hours", "0"))
