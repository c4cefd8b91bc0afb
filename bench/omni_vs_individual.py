"""The headline experiment: one Omni-sparsity supernet + search against individually pruned models.

    .venv/bin/python bench/omni_vs_individual.py [--exp exp/small/omni] [--dense exp/small/dense]
        [--targets 0.5 0.7 0.8 0.9] [--supernet-preset supernet_small] [--prune-preset prune_small]
        [--search-preset search_small] [--budget 1] [--nproc 1] [--test-subset 0]
        [--out bench/results/omni_vs_individual.json] [--section.key=value ...]

``--budget B`` scales the training budget: each pruned model gets B x its preset's steps (and pruning
schedule); the supernet gets the steps whose forward/backward passes AND batches of audio equal ONE
pruned model's (``sparsity.schedule``: a same-batch sandwich of 4 paths takes a quarter of the
steps and sees a quarter of the audio; ``sandwich-split`` the same passes and audio; ``one-per-step``
as many steps), its ramp scaled likewise. The script refuses a supernet that would get more passes
or audio than one pruned model. ``--nproc N`` trains every model as N DDP ranks (torchrun; the same
for all methods). Overrides (``--section.key=value``) go to every training and the search.

Stages, each resumable (re-running continues the first unfinished one):
  1. dense      the dense model of bench/dense_small.py (``--dense``; not retrained here)
  2. individual one gradual-magnitude-pruning run per target (``EXP/prune-<S>``), each with the full
                budget of its preset (cubic schedule, then fine-tuning with fixed masks)
  3. supernet   ``train --supernet`` (``EXP/supernet``) whose forward/backward passes and audio equal ONE
                individual run's, so its stage-2 cost is that of one model
  4. search     evolutionary search of the supernet (``EXP/supernet/search``)
  5. export     the best searched sub-network no larger than each individual model, as a shippable
                artefact (``EXP/export/<name>``), its file size checked against the search's size
  6. report     test-clean / test-other / dev WER and streaming RTF of every point (``EXP/report``)
Writes the JSON result (points, cost per method, search cost, headline comparison) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from omnisparse.config import Config, load_config
from omnisparse.io import checkpoint as ck
from omnisparse.sparsity.paths import step_cost
from omnisparse.train.distributed import run_under_torchrun
from omnisparse.report import build_report
from omnisparse.report.points import ExperimentLayout
from omnisparse.utils.provenance import write_result


def finished(run_dir: Path, max_steps: int) -> bool:
    found = ck.latest_checkpoint(run_dir) if run_dir.exists() else None
    return found is not None and found[1]["step"] >= max_steps


def prune_overrides(preset: str, budget: int, extra: list[str]) -> list[str]:
    """Overrides of every pruned model at ``budget`` x its preset (steps, pruning schedule, checkpoints)."""
    tc, sc = load_config(preset, extra).train, load_config(preset, extra).sparsity
    return [f"--train.max_steps={tc.max_steps * budget}", f"--sparsity.prune_steps={sc.prune_steps * budget}",
            f"--train.valid_every={tc.valid_every * budget}", *extra]


def supernet_overrides(preset: str, one_run_steps: int, extra: list[str], nproc: int) -> tuple[list[str], dict]:
    """Overrides giving the supernet the passes and batches of ONE pruned run of ``one_run_steps`` steps,
    and the budget record; SystemExit if the preset's own settings would exceed them."""
    cfg = load_config(preset, extra)
    sc = cfg.sparsity
    passes, batches = step_cost(sc.schedule, sc.n_random, nproc, sc.ddp_paths)
    steps = one_run_steps // max(passes, batches)
    ramp_fraction = sc.ramp_steps / cfg.train.max_steps
    budget = {"schedule": sc.schedule, "ddp_paths": sc.ddp_paths, "n_random": sc.n_random, "distill": sc.distill,
              "supernet_steps": steps, "passes_per_step": passes, "batches_per_step": batches,
              "supernet_passes": steps * passes, "supernet_batches": steps * batches,
              "pruned_model_steps": one_run_steps}
    if steps * passes > one_run_steps or steps * batches > one_run_steps:
        raise SystemExit(f"supernet budget {steps} steps x {passes} passes / {batches} batches exceeds one "
                         f"individual run ({one_run_steps} passes and batches)")
    out = [f"--train.max_steps={steps}", f"--sparsity.ramp_steps={max(1, round(ramp_fraction * steps))}",
           f"--train.valid_every={max(1, steps // 2)}", f"--train.ckpt_every={max(1, min(cfg.train.ckpt_every, steps // 4))}",
           f"--train.warmup_steps={max(1, round(cfg.train.warmup_steps * steps / cfg.train.max_steps))}", *extra]
    return out, budget


def run_training(command: str, preset: str, overrides: list[str], nproc: int, **kw) -> None:
    """``omnisparse <command>`` in this process (nproc 1) or as nproc torchrun ranks."""
    if nproc > 1:
        run_under_torchrun(command, ["--config", preset, *overrides, *(["--supernet"] if kw.get("supernet") else [])],
                           nproc)
        return
    cfg: Config = load_config(preset, overrides)
    if command == "prune":
        from omnisparse.train.prune import prune

        prune(cfg)
    else:
        from omnisparse.train.registry import train

        train(cfg, **kw)


def stage_individual(layout: ExperimentLayout, dense: Path, preset: str, targets: list[float], overrides: list[str],
                     nproc: int) -> None:
    for t in targets:
        out = layout.root / f"prune-{t:g}"
        args = [f"--train.out_dir={out}", f"--sparsity.init_from={dense}", f"--sparsity.target={t}", *overrides]
        if finished(out, load_config(preset, args).train.max_steps):
            continue
        print(f"== individual: target {t:g} -> {out}", flush=True)
        run_training("prune", preset, args, nproc)


def stage_supernet(layout: ExperimentLayout, dense: Path, preset: str, overrides: list[str], nproc: int) -> None:
    args = [f"--train.out_dir={layout.supernet}", f"--sparsity.init_from={dense}", *overrides]
    if finished(layout.supernet, load_config(preset, args).train.max_steps):
        return
    print(f"== supernet -> {layout.supernet}", flush=True)
    run_training("train", preset, args, nproc, supernet=True)


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
    ap.add_argument("--budget", type=int, default=1, help="x the pruned preset's steps (default 1)")
    ap.add_argument("--nproc", type=int, default=1, help="DDP ranks of every training (torchrun; 1 = in-process)")
    ap.add_argument("--out", default="", help="default bench/results/omni_vs_individual[_xB].json")
    args, extra = ap.parse_known_args(argv)
    if args.budget < 1:
        raise SystemExit("--budget must be >= 1")
    out = Path(args.out or f"bench/results/omni_vs_individual{'' if args.budget == 1 else f'_x{args.budget}'}.json")
    dense = Path(args.dense)
    if ck.latest_checkpoint(dense) is None:
        raise SystemExit(f"no dense checkpoint in {dense}: run bench/dense_small.py first")
    layout = ExperimentLayout(Path(args.exp), dense_dir=dense)
    layout.root.mkdir(parents=True, exist_ok=True)

    prune_args = prune_overrides(args.prune_preset, args.budget, extra)
    one_run = load_config(args.prune_preset, prune_args).train.max_steps
    supernet_args, budget = supernet_overrides(args.supernet_preset, one_run, extra, args.nproc)
    budget.update(multiplier=args.budget, nproc=args.nproc)
    stage_individual(layout, dense, args.prune_preset, args.targets, prune_args, args.nproc)
    stage_supernet(layout, dense, args.supernet_preset, supernet_args, args.nproc)
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
    cost["summary"] = {name: {k: c.get(k) for k in ("optimizer_steps", "fwd_bwd_passes", "audio_seconds",
                                                    "path_audio_seconds", "wall_s")}
                       for name, c in [("supernet", cost["supernet"]),
                                       *[(f"individual[{i}]", c) for i, c in enumerate(cost["individual"])]]}
    pareto = json.loads(layout.pareto.read_text()) if layout.pareto.exists() else {}
    shutil.copyfile(rep["paths"]["plot"], out.with_suffix(".png"))
    payload = {"format": fmt, "budget": budget, "points": points, "cost": cost,
               "search_gain_vs_uniform": pareto.get("gain_vs_uniform"),
               "search": {"candidates_evaluated": (rep["search"] or {}).get("evaluated"),
                          "wall_s": (rep["search"] or {}).get("wall_s"), **(rep["search"] or {})},
               "headline": rep["headline"], "exported": exported, "exp_dir": str(layout.root),
               "report": rep["paths"]["markdown"], "plot": str(out.with_suffix(".png")),
               "search_summary": {k: v for k, v in search.items() if k in ("cost",)}}
    write_result(out, payload, command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(Path(rep["paths"]["markdown"]).read_text())


if __name__ == "__main__":
    main()
