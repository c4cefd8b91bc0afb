"""Supernet recipe ablations against the individually pruned baselines, in one table and one plot.

    .venv/bin/python bench/supernet_ablations.py [--baselines bench/results/omni_vs_individual.json]
        [--runs NAME=bench/results/supernet_small.json ...] [--out bench/results/supernet_ablations_small.json]

Reads, never trains: each ``--runs`` entry is a ``bench/supernet_small.py`` result (one supernet
recipe: KD on/off, k random paths, ramp, sparsity grid; uniform sub-networks evaluated on the test
splits) and the baselines are the ``individual`` points of ``bench/omni_vs_individual.py`` (one
pruned model per uniform sparsity, each with its own full budget, from the same dense run). For every
run and uniform sparsity s it reports the supernet's WER, the baseline's, and the relative gap
``wer_supernet / wer_individual - 1`` (negative = the supernet is better; the target is
<= -0.02 on both test splits), plus the run's cost (forward/backward passes, audio seconds drawn, wall time) and
its command (the recipe's overrides). The schedules (``sparsity.schedule``) at the budget of one pruned
model (1,200 passes and 1,200 batches), trained like the baselines (``--nproc 2``), e.g.:

    bench/supernet_small.py --nproc 2 --sparsity.schedule=sandwich-split --train.out_dir=exp/small/omni/supernet-split \
        --out bench/results/supernet_small_split.json            # 300 steps x 4 paths, each on its own batch
    bench/supernet_small.py --nproc 2 --sparsity.schedule=one-per-step --train.max_steps=1200 \
        --sparsity.ramp_steps=600 --train.out_dir=exp/small/omni/supernet-ops \
        --out bench/results/supernet_small_one_per_step.json
    (+ --sparsity.distill=true for the ``+kd`` rows; ``--sparsity.schedule=sandwich-same-batch`` ->
    ``supernet_small.json``)
Writes the JSON and a PNG of the test-other gap per sparsity, one line per recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisparse.utils.plotting import saved_figure

DEFAULT_RUNS = [  # the schedules at the budget of one pruned model, all with augmenting fine-tunes (corpus v2)
    "same-batch=bench/results/supernet_small.json",
    "split=bench/results/supernet_small_split.json",
    "split+kd=bench/results/supernet_small_split_kd.json",
    "one-per-step=bench/results/supernet_small_one_per_step.json",
    "one-per-step+kd=bench/results/supernet_small_one_per_step_kd.json",
    "one-per-step-sparse=bench/results/supernet_small_one_per_step_sparse.json",  # path_probs [0.1, 0.4, 0.5]
]
SPLITS = ("test-clean", "test-other")


def load_baselines(path: Path) -> dict[float, dict]:
    """{sparsity: individual point} from an omni_vs_individual result."""
    points = json.loads(path.read_text())["points"]
    return {round(p["sparsity"], 3): p for p in points if p["method"] == "individual"}


def compare(name: str, path: Path, baselines: dict[float, dict]) -> dict:
    res = json.loads(path.read_text())
    rows = []
    for r in res["results"]:
        if not r["name"].startswith("u"):
            continue
        s = round(float(r["name"][1:]), 3)
        base = baselines.get(s)
        if base is None:
            continue
        gap = {k: r["wer"][k] / base["wer"][k] - 1 for k in SPLITS}
        rows.append({"sparsity": s, "size_bytes": r["size_bytes"]["int8-sparse"],
                     "wer": {k: r["wer"][k] for k in SPLITS},
                     "individual_wer": {k: base["wer"][k] for k in SPLITS},
                     "relative_gap": gap, "target_met": all(g <= -0.02 for g in gap.values())})
    dense = next((r for r in res["results"] if r["name"] == "dense"), None)
    cost = res["cost"]
    return {"name": name, "source": str(path), "command": res.get("command"),
            "fwd_bwd_passes": cost["fwd_bwd_passes"], "optimizer_steps": cost["optimizer_steps"],
            "audio_seconds": cost.get("audio_seconds"), "path_audio_seconds": cost.get("path_audio_seconds"),
            "teacher_forwards": cost.get("teacher_forwards", 0),
            "wall_s": cost["wall_s"], "dense_path_wer": dense["wer"] if dense else None,
            "mean_test_other_gap": sum(r["relative_gap"]["test-other"] for r in rows) / max(len(rows), 1),
            "rows": rows}


def plot(runs: list[dict], path: Path) -> None:
    with saved_figure(path, 1, 2, figsize=(10, 4), sharex=True) as (fig, axes):
        for ax, split in zip(axes, SPLITS):
            for run in runs:
                xs = [r["sparsity"] for r in run["rows"]]
                ax.plot(xs, [100 * r["relative_gap"][split] for r in run["rows"]], marker="o", label=run["name"])
            ax.axhline(0, color="k", lw=0.8)
            if split == "test-other":
                ax.axhline(-2, color="g", ls="--", lw=0.8, label="target (-2 %)")
            ax.set_xlabel("uniform sparsity")
            ax.set_ylabel(f"{split} WER vs individually pruned (%)")
            ax.set_title(f"{split}: supernet uniform sub-network / individual - 1", fontsize=9)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.suptitle("supernet recipes vs individually pruned models (below 0 = supernet better)", fontsize=10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baselines", default="bench/results/omni_vs_individual.json")
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="NAME=RESULT_JSON of bench/supernet_small.py")
    ap.add_argument("--out", default="bench/results/supernet_ablations_small.json")
    args = ap.parse_args(argv)

    from omnisparse.utils.provenance import write_result

    baselines = load_baselines(Path(args.baselines))
    runs = []
    for spec in args.runs:
        name, _, path = spec.partition("=")
        if not Path(path).exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        runs.append(compare(name, Path(path), baselines))
    if not runs:
        raise SystemExit("no supernet results found")
    out = Path(args.out)
    plot(runs, out.with_suffix(".png"))
    for run in runs:
        gaps = " ".join(f"{r['sparsity']}:{100 * r['relative_gap']['test-other']:+.1f}%" for r in run["rows"])
        print(f"{run['name']:12s} test-other gap {gaps}  (mean {100 * run['mean_test_other_gap']:+.1f}%)")
    write_result(out, {"baselines": args.baselines, "target": "relative gap <= -0.02 on test-clean and test-other at every size",
                       "runs": runs, "plot": str(out.with_suffix(".png"))},
                 command=" ".join(["bench/supernet_ablations.py", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
