"""The headline experiment: one Omni-sparsity supernet + search against individually pruned models.

    .venv/bin/python bench/omni_vs_individual.py [--exp exp/small/omni] [--dense exp/small/dense]
        [--targets 0.5 0.7 0.8 0.9] [--supernet-preset supernet_small] [--prune-preset prune_small]
        [--search-preset search_small] [--test-subset 0] [--out bench/results/omni_vs_individual.json]

Stages, each resumable (re-running continues the first unfinished one):
  1. dense      the dense model of bench/dense_small.py (``--dense``; not retrained here)
  2. individual one gradual-magnitude-pruning run per target (``EXP/prune-<S>``), each with the full
                budget of its preset (cubic schedule, then fine-tuning with fixed masks)
  3. supernet   ``train --supernet`` (``EXP/supernet``) whose forward/backward passes (4 per step: dense,
                sparsest, 2 random) equal ONE individual run's, so its stage-2 cost is that of one model
  4. search     evolutionary search of the supernet (``EXP/supernet/search``)
  5. export     the best searched sub-network no larger than each individual model, as a shippable
                artefact (``EXP/export/<name>``), its file size checked against the search's size
  6. report     test-clean / test-other / dev WER and streaming RTF of every point (``EXP/report``)
Writes the JSON result (points, cost per method, search cost, headline comparison) and a PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from omnisparse.config import load_config
from omnisparse.io import checkpoint as ck
from omnisparse.report import build_report
from omnisparse.report.points import ExperimentLayout
from omnisparse.utils.provenance import write_result


def finished(run_dir: Path, max_steps: int) -> bool:
    found = ck.latest_checkpoint(run_dir) if run_dir.exists() else None
    return found is not None and found[1]["step"] >= max_steps


def stage_individual(layout: ExperimentLayout, dense: Path, preset: str, targets: list[float], extra: list[str]) -> None:
    from omnisparse.train.prune import prune

    for t in targets:
        out = layout.root / f"prune-{t:g}"
        cfg = load_config(preset, [f"--train.out_dir={out}", f"--sparsity.init_from={dense}",
                                   f"--sparsity.target={t}", *extra])
        if finished(out, cfg.train.max_steps):
            continue
        print(f"== individual: target {t:g} -> {out}", flush=True)
        prune(cfg)


def stage_supernet(layout: ExperimentLayout, dense: Path, preset: str, prune_preset: str, extra: list[str]) -> None:
    from omnisparse.train.registry import train

    cfg = load_config(preset, [f"--train.out_dir={layout.supernet}", f"--sparsity.init_from={dense}", *extra])
    one_run = load_config(prune_preset).train.max_steps
    paths = 2 + cfg.sparsity.n_random
    if cfg.train.max_steps * paths > one_run:
        raise SystemExit(f"supernet budget {cfg.train.max_steps} steps x {paths} paths exceeds one individual run "
                         f"({one_run} passes): lower train.max_steps of {preset}")
    if finished(layout.supernet, cfg.train.max_steps):
        return
    print(f"== supernet -> {layout.supernet}", flush=True)
    train(cfg, supernet=True)


def stage_search(layout: ExperimentLayout, preset: str, extra: list[str]) -> dict:
    from omnisparse.search.run import run_search

    cfg = load_config(preset, [f"--search.supernet={layout.supernet}",
                               f"--search.out_dir={layout.supernet / 'search'}", *extra])
    print(f"== search -> {layout.supernet / 'search'}", flush=True)
    return run_search(cfg)


def stage_export(layout: ExperimentLayout, fmt: str) -> list[dict]:
    """Export the best searched config under each individual model's size; check file size == search size."""
    from omnisparse.export.loading import load_model
    from omnisparse.export.subnet import export_subnet
    from omnisparse.report.points import best_under, read_pareto
    from omnisparse.report.collect import space_and_bank

    _, pareto = read_pareto(layout.pareto)
    out = []
    for run in layout.individual():
        lm = load_model(run)
        space, _ = space_and_bank(lm)
        limit = space.size_bytes(space.uniform(lm.config.sparsity.target), fmt)
        row = best_under(pareto, limit)
        if row is None:
            out.append({"individual": run.name, "exported": None})
            continue
        dest = layout.root / "export" / f"under-{run.name}"
        if not (dest / "meta.json").exists():
            if dest.exists():
                shutil.rmtree(dest)
            export_subnet(layout.supernet, row["config"], fmt, dest, extra_meta={"search_dev_wer": row["wer"]})
        size = (dest / "model.safetensors").stat().st_size
        if size != row["size_bytes"]:
            raise SystemExit(f"{dest}: file is {size} bytes but the search priced it at {row['size_bytes']}")
        out.append({"individual": run.name, "exported": str(dest), "size_bytes": size, "search_dev_wer": row["wer"]})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", default="exp/small/omni")
    ap.add_argument("--dense", default="exp/small/dense", help="dense run (bench/dense_small.py)")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--supernet-preset", default="supernet_small")
    ap.add_argument("--prune-preset", default="prune_small")
    ap.add_argument("--search-preset", default="search_small")
    ap.add_argument("--test-subset", type=int, default=0, help="first N cuts per split in the report (0 = all)")
    ap.add_argument("--rtf-utts", type=int, default=10)
    ap.add_argument("--out", default="bench/results/omni_vs_individual.json")
    args, extra = ap.parse_known_args(argv)
    dense = Path(args.dense)
    if ck.latest_checkpoint(dense) is None:
        raise SystemExit(f"no dense checkpoint in {dense}: run bench/dense_small.py first")
    layout = ExperimentLayout(Path(args.exp), dense_dir=dense)
    layout.root.mkdir(parents=True, exist_ok=True)

    stage_individual(layout, dense, args.prune_preset, args.targets, extra)
    stage_supernet(layout, dense, args.supernet_preset, args.prune_preset, extra)
    search = stage_search(layout, args.search_preset, extra)
    fmt = load_config(args.search_preset).search.format
    exported = stage_export(layout, fmt)
    print("== report", flush=True)
    rep = build_report(layout.root, dense_dir=dense, fmt=fmt, rtf_utts=args.rtf_utts, test_subset=args.test_subset)

    points = [{"method": p["method"], "name": p["name"], "size_bytes": p["size_bytes"][fmt],
               "size_bytes_by_format": p["size_bytes"], "nonzero_params": p["nonzero_params"],
               "sparsity": p["sparsity"] if p["method"] != "supernet-searched" else None, "wer": p["wer"],
               "rtf_stream": p["rtf"], "config": p["config"]} for p in rep["points"]]
    cost = {"dense": rep["costs"].get("dense", {}), "supernet": rep["costs"].get("supernet", {}),
            "individual": rep["costs"].get("individual", {}).get("per_run", [])}
    out = Path(args.out)
    shutil.copyfile(rep["paths"]["plot"], out.with_suffix(".png"))
    payload = {"format": fmt, "points": points, "cost": cost,
               "search": {"candidates_evaluated": (rep["search"] or {}).get("evaluated"),
                          "wall_s": (rep["search"] or {}).get("wall_s"), **(rep["search"] or {})},
               "headline": rep["headline"], "exported": exported, "exp_dir": str(layout.root),
               "report": rep["paths"]["markdown"], "plot": str(out.with_suffix(".png")),
               "search_summary": {k: v for k, v in search.items() if k in ("cost",)}}
    write_result(out, payload, command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(Path(rep["paths"]["markdown"]).read_text())


if __name__ == "__main__":
    main()
