import json

from omnisparse.config import load_config
from omnisparse.train.lm import train_lm


def test_lm_weight_chosen_on_dev_then_three_ways_on_test(load_bench, tiny_corpus, tiny_run, tmp_path):
    bench = load_bench("lm_fusion")
    lm = tmp_path / "lm"
    train_lm(load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--lm.out_dir={lm}", "--lm.max_steps=10"]))
    out = tmp_path / "fusion.json"
    assert bench.main(["--model", str(tiny_run), "--lm", str(lm), "--scales", "0.3", "1.0", "--bonuses", "0", "1",
                       "--beam", "2",
                       "--splits", "test-clean", "--max-utts", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [(r["scale"], r["bonus"]) for r in res["tune"]] == [(0, 0), (0, 1), (0.3, 0), (0.3, 1), (1, 0), (1, 1)]
    plain = min(res["tune"][:2], key=lambda r: r["wer"])
    top = min(res["tune"][2:], key=lambda r: r["wer"])
    assert res["best"] == {"scale": top["scale"], "bonus": top["bonus"], "plain_bonus": plain["bonus"]}
    bonus = [f"beam 2, bonus {plain['bonus']:g}"] if plain["bonus"] else []
    assert list(res["test"]) == ["greedy", "beam 2", *bonus, f"beam 2 + LM {top['scale']:g} (bonus {top['bonus']:g})"]
    assert all({"substitutions", "deletions", "insertions"} <= set(r) for r in res["tune"])
    assert all(rows["test-clean"]["utterances"] == 3 for rows in res["test"].values())
    assert res["wer_vs_greedy"]["greedy"]["test-clean"] == 0.0
    assert res["lm"]["step"] == 10 and res["lm"]["arch"]["vocab_size"] > 0
    assert {"commit", "command", "machine", "date"} <= set(res) and out.with_suffix(".png").stat().st_size > 0
