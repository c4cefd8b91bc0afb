"""Dev-WER curves of finished or stopped training runs, side by side: which recipe learns faster per step.

    .venv/bin/python bench/run_curves.py --run NAME=RUN_DIR [--run NAME=RUN_DIR ...]
        [--max-step N] [--out bench/results/recipe_v3_diagnostics.json]

Each run directory is read, never written: its ``run.json`` (the git commit and the command line the
run was started with, the parameter count), ``config.json`` and ``metrics.csv`` (the dev-subset WER
the trainer logged every ``train.valid_every`` steps, and the wall clock). A row per run gives its
curve up to ``--max-step`` and its optimizer steps per wall second over that stretch; runs made side
by side on a shared machine (e.g. two 1-thread runs on 2 cores) compare by step, their wall clocks
only roughly. Writes the JSON and a PNG of the curves beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from omnisparse.train.metrics import read_dev_curve
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result


def read_run(name: str, run_dir: Path, max_step: int) -> dict:
    """One row: the run's provenance, its dev curve up to ``max_step`` and its steps per wall second."""
    for f in ("run.json", "config.json", "metrics.csv"):
        if not (run_dir / f).exists():
            raise SystemExit(f"{run_dir}: no {f} (not a training run directory?)")
    run = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    curve = read_dev_curve(run_dir, max_step)
    logged = [r for r in rows if r.get("loss") and int(r["step"]) <= max_step]
    last = logged[-1] if logged else None
    return {
        "name": name,
        "run_dir": str(run_dir),
        "commit": run.get("commit"),
        "argv": run.get("argv"),
        "params": run.get("params"),
        "curve": curve,
        "steps_per_wall_s": int(last["step"]) / float(last["wall_s"]) if last and float(last["wall_s"]) > 0 else None,
        "config": json.loads((run_dir / "config.json").read_text()),
    }


def plot(rows: list[dict], path: Path) -> None:
    with saved_figure(path, figsize=(7, 4)) as (fig, ax):
        for r in rows:
            ax.plot([c["step"] for c in r["curve"]], [c["dev_wer"] for c in r["curve"]], marker="o", label=r["name"])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("dev-subset WER (greedy, streaming)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    ap.add_argument("--max-step", type=int, default=10 ** 9)
    ap.add_argument("--out", default="bench/results/recipe_v3_diagnostics.json")
    args = ap.parse_args(argv)
    rows = []
    for spec in args.run:
        name, sep, run_dir = spec.partition("=")
        if not sep or not name or not run_dir:
            raise SystemExit(f"--run expects NAME=RUN_DIR, got {spec!r}")
        rows.append(read_run(name, Path(run_dir), args.max_step))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, out.with_suffix(".png"))
    write_result(out, {"runs": rows, "max_step": args.max_step, "plot": str(out.with_suffix(".png"))},
                 command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    for r in rows:
        print(r["name"], " ".join(f"{c['step']}:{c['dev_wer']:.3f}" for c in r["curve"]))


if __name__ == "__main__":
    main()
