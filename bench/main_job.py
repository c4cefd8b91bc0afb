"""The README's main job timed end to end, stage by stage, from empty data and experiment directories.

    .venv/bin/python bench/main_job.py [--preset small] [--work /tmp/omnisparse-main-job] [--resume]
        [--out bench/results/main_job_small.json]

Runs ``PRESET=P DATA=WORK/data EXP=WORK/exp bash scripts/run_all.sh`` (the first README command:
setup, corpus, features + tokenizer, dense training, supernet, one pruned baseline, search, export,
report, streaming transcription), its output teed to ``WORK/main_job.log``. ``WORK`` is emptied
first unless ``--resume`` (then the job continues where it stopped and the stage times of the
interrupted pass are kept in the log, not in the result). Reads the stage starts the script logs to
``WORK/exp/stages.csv`` and writes the wall seconds of every stage and of the whole job (setup
included), the peak resident memory of each stage (VmRSS summed over the job's whole process tree,
sampled every 0.5 s from ``/proc``), the machine's CPU count, and the report's points (method, size, WER per split) to the
JSON, with a bar chart of the stage times beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.proc_memory import PeakRssSampler
from omnisparse.utils.provenance import write_result

REPO = Path(__file__).resolve().parents[1]


def stage_seconds(stages_csv: Path, end: float) -> list[dict]:
    """``[{stage, start, seconds}]`` of the last pass through the script (from its last ``1/9`` row)."""
    # "seconds,stage": the stage may hold commas itself (not CSV-quoted by the script)
    rows = [(float(t), name) for t, _, name in (ln.partition(",") for ln in stages_csv.read_text().splitlines() if ln)]
    first = max((i for i, (_, name) in enumerate(rows) if name.startswith("1/9")), default=0)
    rows = rows[first:]
    out = []
    for i, (t, name) in enumerate(rows):
        if name == "done":
            break
        nxt = rows[i + 1][0] if i + 1 < len(rows) else end
        out.append({"stage": name, "start": t, "seconds": round(nxt - t, 1)})
    return out


def current_stage(stages_csv: Path) -> str:
    """The stage the script logged last (``setup`` before its first)."""
    try:
        lines = stages_csv.read_text().splitlines()
    except OSError:
        return "setup"
    return lines[-1].partition(",")[2] if lines else "setup"


def short_label(stage: str, width: int = 30) -> str:
    """A stage's name for the chart: before its first colon, cut at a word to ``width`` characters."""
    name = stage.split(":")[0]
    if len(name) <= width:
        return name
    return name[:width].rsplit(" ", 1)[0] + " …"


def plot(result: dict, path: Path) -> None:
    """Wall minutes and peak resident memory of setup and every stage, side by side."""
    stages = [{"stage": "setup", "seconds": result["setup_s"] or 0.0, "peak_rss_mb": result["setup_peak_rss_mb"]},
              *result["stages"]]
    names = [short_label(s["stage"]) for s in stages][::-1]
    with saved_figure(path, 1, 2, figsize=(10, 4.2), sharey=True) as (fig, (left, right)):
        left.barh(names, [s["seconds"] / 60 for s in stages][::-1], color="tab:blue")
        left.set_xlabel("wall minutes")
        right.barh(names, [(s["peak_rss_mb"] or 0) / 1024 for s in stages][::-1], color="tab:orange")
        right.set_xlabel("peak resident memory, GiB (process tree)")
        for ax in (left, right):
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"main job ({result['preset']}), stage by stage: {result['total_s'] / 60:.0f} min in all, "
                     "setup included")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--work", default="/tmp/omnisparse-main-job")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted timing in WORK")
    ap.add_argument("--out", default=None, help="default bench/results/main_job_<preset>.json")
    ap.add_argument("--replot", action="store_true", help="only redraw the chart of the existing --out result")
    args = ap.parse_args(argv)
    out = Path(args.out or f"bench/results/main_job_{args.preset}.json")
    if args.replot:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return 0
    work = Path(args.work).resolve()
    if work.exists() and not args.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PRESET": args.preset, "DATA": str(work / "data"), "EXP": str(work / "exp")}
    t0 = time.time()
    with open(work / "main_job.log", "ab") as log:
        proc = subprocess.Popen(["bash", "scripts/run_all.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        with PeakRssSampler(proc.pid, lambda: current_stage(work / "exp" / "stages.csv")) as rss:
            for line in proc.stdout:
                log.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            rc = proc.wait()
    end = time.time()
    if rc != 0:
        raise SystemExit(f"scripts/run_all.sh failed (exit {rc}); see {work / 'main_job.log'}")
    stages = stage_seconds(work / "exp" / "stages.csv", end)
    for s in stages:
        s["peak_rss_mb"] = round(rss.peaks[s["stage"]] / 2**20, 1) if s["stage"] in rss.peaks else None
    total = end - t0
    points_file = work / "exp" / "report" / "points.json"
    points = json.loads(points_file.read_text()) if points_file.exists() else None
    result = {"preset": args.preset, "resumed": args.resume, "cpus": os.cpu_count(),
              "total_s": round(total, 1), "setup_s": round(stages[0]["start"] - t0, 1) if stages else None,
              "setup_peak_rss_mb": round(rss.peaks.get("setup", 0) / 2**20, 1),
              "stages": stages, "report_points": points, "work": str(work), "plot": str(out.with_suffix(".png"))}
    plot(result, out.with_suffix(".png"))
    write_result(out, result, command=" ".join(["bench/main_job.py", *(argv if argv is not None else sys.argv[1:])]))
    print(f"main job ({args.preset}): {total / 60:.1f} min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
