"""SubnetEvaluator against evaluate_cuts, and run_search end to end on the tiny supernet."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from omnisparse.config import load_config
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.export.loading import load_model
from omnisparse.search.evaluator import SubnetEvaluator
from omnisparse.sparsity.space import space_and_bank
from omnisparse.search.run import run_search


@pytest.fixture(scope="module")
def loaded(tiny_supernet_run, tiny_corpus):
    lm = load_model(tiny_supernet_run)
    cfg = load_config("supernet_tiny", [f"--data.corpus_dir={tiny_corpus}"])
    cuts = load_split_cuts(cfg, [cfg.data.dev_split])
    cuts = cuts.subset(first=min(6, len(cuts)))
    return lm, cuts


def test_evaluator_matches_evaluate_cuts(loaded):
    lm, cuts = loaded
    space, bank = space_and_bank(lm.model, lm.config.sparsity)
    decode = dataclasses.replace(lm.config.decode, method="greedy", batch_size=4)  # several batches
    mode = lm.trained_modes[0]
    ev = SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, mode, decode)
    assert ev.utterances == len(cuts)
    configs = [space.sample_max(), space.uniform(0.9), space.sample_random(random.Random(1))]
    for config in configs:
        got = ev.evaluate(config, hyps=True)
        bank.apply(config)
        try:
            ref = evaluate_cuts(lm.model, cuts, lm.tokenizer, lm.normalizer, mode=mode, decode=decode)
        finally:
            bank.clear()
        assert got["wer"] == ref["wer"] and got["words"] == ref["words"]
        assert got["hyps"] == ref["hyps"]
        assert ev(config) == ref["wer"]
    # masks are cleared after each evaluation and the model is left in eval mode as it was
    assert all(m.mask is None for m in bank.modules.values())
    # the cache: configs above were decoded once each (hyps=True bypasses the cache, the calls hit it)
    assert ev.evaluations == 3 and ev.cache_hits == 3 and ev.decode_s > 0
    ev(configs[2])
    assert ev.evaluations == 3 and ev.cache_hits == 4
    # a genes list works like the space (same key order)
    ev2 = SubnetEvaluator(lm.model, list(space.genes), bank, cuts, lm.tokenizer, lm.normalizer, mode, decode)
    assert ev2(configs[1]) == ev(configs[1])
    with pytest.raises(ValueError, match="decodes greedily"):
        SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, mode,
                        dataclasses.replace(decode, method="beam"))


def test_run_search_end_to_end(tiny_supernet_run, tiny_corpus, tmp_path):
    out = tmp_path / "search"
    cfg = load_config("search_tiny", [f"--data.corpus_dir={tiny_corpus}", f"--search.supernet={tiny_supernet_run}",
                                      f"--search.out_dir={out}", "--search.dev_subset=4"])
    res = run_search(cfg, progress=False, tensorboard=False)
    for name in ("history.json", "pareto.json", "search.csv", "state.json", "config.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    pareto = json.loads((out / "pareto.json").read_text())
    lo, hi = res["size_range_bytes"]
    assert history and all(lo <= h["bytes"] <= hi for h in history)
    assert history[0]["origin"] == "sparsest" and hi > lo
    assert pareto["front"] == res["pareto"] and res["pareto"]
    wers = [r["wer"] for r in res["pareto"]]
    assert all(a > b for a, b in zip(wers, wers[1:]))
    assert all({"size_bytes", "size_mb", "nonzero_params", "wer", "config"} <= set(r) for r in res["pareto"])
    assert len(pareto["uniform"]) == len(cfg.sparsity.grid) == len(res["uniform"])
    assert pareto["uniform"][0]["size_bytes"] == hi and pareto["uniform"][-1]["size_bytes"] == lo
    assert res["cost"]["generations"] == 2 and res["cost"]["evaluated"] == len(history)
    assert res["cost"]["wall_s"] > 0 and res["cost"]["decode_s"] > 0
    assert pareto["dev_utterances"] == 4 and pareto["format"] == "int8-sparse"
    # running it again resumes a finished search: same history, nothing re-searched
    again = run_search(cfg, progress=False, tensorboard=False)
    assert json.loads((out / "history.json").read_text()) == history
    assert again["cost"]["evaluated"] == len(history)
    assert again["pareto"] == res["pareto"]


def test_loss_fitness_is_per_token_and_grows_with_sparsity(loaded):
    lm, cuts = loaded
    space, bank = space_and_bank(lm.model, lm.config.sparsity)
    decode = dataclasses.replace(lm.config.decode, method="greedy", batch_size=4)
    ev = SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, lm.trained_modes[0], decode,
                         fitness="loss")
    dense, sparse = ev.evaluate(space.sample_max()), ev.evaluate(space.uniform(0.9))
    assert ev.score_key == "loss_per_token" and dense["tokens"] > 0 and "wer" not in dense
    assert 0 < dense["loss_per_token"] < sparse["loss_per_token"]
    assert ev(space.sample_max()) == dense["loss_per_token"] and ev.cache_hits == 1
    assert "wer" in ev.evaluate(space.sample_max(), hyps=True)  # hyps always decode
    with pytest.raises(ValueError, match="fitness"):
        SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, "stream", decode, fitness="bleu")


def test_run_search_loss_fitness_sensitivity_and_rerank(tiny_supernet_run, tiny_corpus, tmp_path):
    out = tmp_path / "search"
    cfg = load_config("search_tiny", [f"--data.corpus_dir={tiny_corpus}", f"--search.supernet={tiny_supernet_run}",
                                      f"--search.out_dir={out}", "--search.dev_subset=4", "--search.fitness=loss",
                                      "--search.sensitivity=true", "--search.rerank_per_bucket=1",
                                      "--search.rerank_subset=6", "--search.generations=1"])
    res = run_search(cfg, progress=False, tensorboard=False)
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["score_key"] == "loss_per_token" and pareto["sensitivity"]
    assert all("wer" in r and "search_loss_per_token" in r for r in pareto["front"])
    assert all("loss_per_token" in r for r in pareto["search_front"])
    assert pareto["rerank"]["utterances"] == 6 and pareto["rerank"]["candidates"] >= len(pareto["front"])
    wers = [r["wer"] for r in res["pareto"]]
    assert all(a > b for a, b in zip(wers, wers[1:]))
    assert all("wer" in u and "loss_per_token" in u for u in pareto["uniform"])
    assert pareto["gain_vs_uniform"] and all(g["front_wer"] <= g["uniform_wer"] or g["gain"] < 0
                                             for g in pareto["gain_vs_uniform"])
    decodes = pareto["rerank"]["decodes"]
    assert decodes > 0 and (out / "rerank.json").exists()
    again = run_search(cfg, progress=False, tensorboard=False)  # re-reporting decodes nothing again
    assert json.loads((out / "pareto.json").read_text())["rerank"]["decodes"] == 0
    assert again["pareto"] == res["pareto"]
    with pytest.raises(Exception, match="rerank_per_bucket"):
        load_config("search_tiny", ["--search.fitness=loss"])
