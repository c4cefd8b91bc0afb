def test_stage_seconds_of_the_last_pass(load_bench, tmp_path):
    mod = load_bench("main_job")
    csv = tmp_path / "stages.csv"
    csv.write_text("100.0,1/9 corpus: d\n130.0,2/9 features\n"  # an interrupted first pass
                   "200.0,1/9 corpus: d\n205.5,2/9 features\n260.0,3/9 dense\n900.0,done\n")
    got = mod.stage_seconds(csv, end=950.0)
    assert [(s["stage"], s["seconds"]) for s in got] == [("1/9 corpus: d", 5.5), ("2/9 features", 54.5),
                                                          ("3/9 dense", 640.0)]
    csv.write_text("10.0,1/9 corpus: d\n20.0,2/9 features\n")  # still running: the last stage ends at `end`
    assert mod.stage_seconds(csv, end=50.0)[-1]["seconds"] == 30.0


def test_current_stage_is_the_last_logged(load_bench, tmp_path):
    mod = load_bench("main_job")
    csv = tmp_path / "stages.csv"
    assert mod.current_stage(csv) == "setup"
    csv.write_text("10.0,1/9 corpus: d\n20.0,2/9 features, tokenizer\n")
    assert mod.current_stage(csv) == "2/9 features, tokenizer"
