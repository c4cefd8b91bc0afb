import json


def test_levers_train_evaluate_and_compare_to_the_baseline(load_bench, tiny_corpus, tmp_path):
    """Two short tiny runs (the preset and one lever), each evaluated once (a re-run only reads the
    cache), rows relative to the baseline; the lever's overrides reached its run's config."""
    bench = load_bench("recipe_levers")
    out = tmp_path / "levers.json"
    argv = ["--preset", "tiny", "--steps", "4", "--levers", "baseline", "speed-wide", "--exp", str(tmp_path / "exp"),
            "--splits", "dev", "--out", str(out), f"--data.corpus_dir={tiny_corpus}", "--augment.enabled=true",
            "--augment.start_epoch=0"]
    bench.main(argv)
    res = json.loads(out.read_text())
    rows = {r["lever"]: r for r in res["rows"]}
    assert set(rows) == {"baseline", "speed-wide"} and all(r["optimizer_steps"] == 4 for r in rows.values())
    assert rows["baseline"]["relative_wer_vs_baseline"]["dev"] == 0.0
    assert 0.0 <= rows["speed-wide"]["wer"]["dev"]
    config = json.loads((tmp_path / "exp" / "speed-wide" / "config.json").read_text())
    assert config["augment"]["speed_factors"] == [0.8, 0.9, 1.0, 1.1, 1.2] and config["train"]["max_steps"] == 4
    cache = (tmp_path / "exp" / "baseline" / "eval_levers.json").stat().st_mtime_ns
    bench.main(argv)  # finished runs: nothing trained or decoded again
    assert (tmp_path / "exp" / "baseline" / "eval_levers.json").stat().st_mtime_ns == cache
    assert out.with_suffix(".png").stat().st_size > 0
