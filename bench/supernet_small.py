"""Omni-sparsity supernet on the `small` corpus: WER and size of the dense path and of uniform
sub-networks, against the dense model of bench/dense_small.py, with the run's cost.

    .venv/bin/python bench/supernet_small.py [--preset supernet_small] [--out bench/results/supernet_small.json]
                                             [--uniform 0.5 0.7 0.8 0.9] [--nproc 1] [--section.key=value ...]

Stages (each resumable): 1. needs the dense run of bench/dense_small.py (``sparsity.init_from``);
2. ``train --supernet`` (resumes from the run's last checkpoint; ``--nproc N``: as N torchrun DDP ranks,
one thread each, the way ``bench/omni_vs_individual.py --nproc N`` trains the baselines it is compared
with); 3. greedy streaming WER on the test
splits of the dense path and of every uniform config (masks from the final weights); 4. size in
bytes of each for every storage format; 5. JSON + a PNG of WER against size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisparse.config import load_config
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.export.format import FORMATS, ArtefactPricing
from omnisparse.export.loading import load_model
from omnisparse.io import checkpoint as ck
from omnisparse.sparsity.space import space_and_bank
from omnisparse.report.points import run_cost
from omnisparse.train.distributed import run_under_torchrun
from omnisparse.train.registry import train
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result


def plot(rows: list[dict], dense_ref: dict, splits: list[str], path: Path) -> None:
    with saved_figure(path, figsize=(6.5, 4.2)) as (fig, ax):
        for split, marker in zip(splits, "os"):
            xs = [r["size_bytes"]["fp32-sparse"] / 1e6 for r in rows]
            ax.plot(xs, [r["wer"][split] for r in rows], marker=marker, label=f"supernet, uniform ({split})")
            for r, x in zip(rows, xs):
                ax.annotate(r["name"], (x, r["wer"][split]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if split in dense_ref:
                ax.axhline(dense_ref[split], ls="--", lw=0.8, color="gray")
        ax.set_xlabel("model size, fp32-sparse (MB)")
        ax.set_ylabel("WER (greedy, streaming)")
        ax.set_title("small: supernet sub-networks (dashed: dense model)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="supernet_small")
    ap.add_argument("--out", default="bench/results/supernet_small.json")
    ap.add_argument("--dense-result", default="bench/results/dense_small.json")
    ap.add_argument("--uniform", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--nproc", type=int, default=1, help="DDP ranks of the training (torchrun; 1 = in-process)")
    args, overrides = ap.parse_known_args(argv)
    cfg = load_config(args.preset, overrides)
    if not cfg.sparsity.init_from or ck.latest_checkpoint(cfg.sparsity.init_from) is None:
        raise SystemExit(f"no dense checkpoint at {cfg.sparsity.init_from!r}: run bench/dense_small.py first")

    run_dir = Path(cfg.train.out_dir)
    if args.nproc > 1:
        run_under_torchrun("train", ["--config", args.preset, *overrides, "--supernet"], args.nproc)
        cost = run_cost(run_dir)
    else:
        cost = train(cfg, supernet=True)["cost"]
    lm = load_model(run_dir)
    sc = cfg.sparsity
    space, bank = space_and_bank(lm.model, sc, refresh=True, pricing=ArtefactPricing.of(lm.model))
    splits = list(cfg.data.test_splits)
    test_cuts = {s: load_split_cuts(cfg, [s]) for s in splits}
    rows = []
    for name, config in [("dense", space.sample_max())] + [(f"u{s:g}", space.uniform(s)) for s in args.uniform]:
        bank.apply(config)
        wer = {}
        for split in splits:
            r = evaluate_cuts(lm.model, test_cuts[split], lm.tokenizer, lm.normalizer, mode=cfg.train.mode,
                              decode=cfg.decode, progress=True)
            wer[split] = r["wer"]
        rows.append({"name": name, "config": "dense" if name == "dense" else f"uniform {name[1:]}", "wer": wer,
                     "size_bytes": {f: space.size_bytes(config, f) for f in FORMATS},
                     "nonzero_params": space.nonzero_params(config)})
        print(name, json.dumps(wer), rows[-1]["size_bytes"])
    bank.clear()

    dense_ref = {}
    ref_path = Path(args.dense_result)
    if ref_path.exists():
        dense_ref = json.loads(ref_path.read_text())["wer"]
    rel = {}
    for r in rows:
        rel[r["name"]] = {s: (r["wer"][s] - dense_ref[s]) / dense_ref[s] for s in splits if dense_ref.get(s)}
    out = Path(args.out)
    plot(rows, dense_ref, splits, out.with_suffix(".png"))
    payload = {
        "preset": args.preset,
        "granularity": sc.granularity,
        "genes": list(space.genes),
        "results": rows,
        "wer": {r["name"]: r["wer"] for r in rows},
        "size_bytes": {r["name"]: r["size_bytes"] for r in rows},
        "dense_model_wer": dense_ref,
        "relative_wer_vs_dense_model": rel,
        "cost": cost,
        "nproc": args.nproc,
        "run_dir": str(run_dir),
        "config": cfg.to_dict(),
        "plot": str(out.with_suffix(".png")),
    }
    write_result(out, payload, command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps({"wer": payload["wer"], "relative": rel}, indent=2))


if __name__ == "__main__":
    main()
