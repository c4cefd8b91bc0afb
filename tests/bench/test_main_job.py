def test_stage_seconds_of_the_last_pass(load_bench, tmp_path):
    mod = load_bench("main_job")
    csv = tmp_path / "stages.csv"
    csv.write_text("100.0,1/9 corpus: d\n130.0,2/9 features\n"  # an interrupted first pass
                   "200.0,1/9 corpus: d\n205.5,2/9 features\n260.0,3/9 dense\n900.0,done\n")
    got = mod.stage_seconds(csv, end=950.0)
    assert [(s["stage"], s["seconds"]) for s in got] == [("1/9 corpus: d", 5.5), ("2/9 features", 54.5),
                                                          ("3/9 dense", 640.0)]
    csv.write_text("10.0,1/9 corpus: d\n20.0,2/9 features, tokenizer\n")  # a comma in a name; still running: the last stage ends at `end`
    assert mod.stage_seconds(csv, end=50.0)[-1] == {"stage": "2/9 features, tokenizer", "start": 20.0, "seconds": 30.0}


def test_current_stage_is_the_last_logged(load_bench, tmp_path):
    mod = load_bench("main_job")
    csv = tmp_path / "stages.csv"
    assert mod.current_stage(csv) == "setup"
    csv.write_text("10.0,1/9 corpus: d\n20.0,2/9 features, tokenizer\n")
    assert mod.current_stage(csv) == "2/9 features, tokenizer"


def test_the_main_jobs_size_limit_snippet_runs(tiny_supernet_run, tmp_path):
    """The inline Python of scripts/run_all.sh that sizes the pruned baseline (stage 7) runs against
    this package (it is no test of its own otherwise, and the main job takes an hour to reach it)."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "scripts" / "run_all.sh").read_text()
    (snippet,) = [py for py in re.findall(r"<<'PY'\n(.*?)\nPY\n", script, flags=re.S) if "size_bytes" in py]
    shutil.copytree(tiny_supernet_run, tmp_path / "prune-0.7")  # any run with a sparsity section
    r = subprocess.run([sys.executable, "-", str(tmp_path)], input=snippet, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip()) > 0


def test_replot_redraws_the_chart_of_a_result(load_bench, tmp_path):
    mod = load_bench("main_job")
    assert mod.short_label("9/9 transcribe an example with the exported model: x") == "9/9 transcribe an example …"
    out = tmp_path / "main_job_tiny.json"
    out.write_text('{"preset": "tiny", "total_s": 300.0, "setup_s": 60.0, "setup_peak_rss_mb": 200.0, "stages": '
                   '[{"stage": "1/9 corpus: d", "seconds": 200.0, "peak_rss_mb": 900.0}, '
                   '{"stage": "2/9 features", "seconds": 40.0, "peak_rss_mb": null}]}')
    assert mod.main(["--replot", f"--out={out}"]) == 0
    assert out.with_suffix(".png").stat().st_size > 10_000
