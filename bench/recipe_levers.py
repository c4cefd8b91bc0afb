"""What each training-recipe lever buys in WER: one short dense run per lever, same step budget, same
data, same seed, against the preset unchanged.

    .venv/bin/python bench/recipe_levers.py [--preset small] [--steps 3000] [--levers baseline d192 ...]
        [--exp exp/small/levers] [--splits dev test-clean] [--nproc 1] [--out bench/results/recipe_levers_small.json]
        [--section.key=value ...]   (applied to every run, e.g. --train.device=cuda)

Every run is the preset with its cosine schedule shortened to ``--steps`` (warm-up and validation
scaled alike) plus the lever's overrides (``LEVERS`` below), in ``EXP/<lever>``; it resumes from its
last checkpoint, and a finished run is only evaluated (greedy, streaming; evaluations are cached in
``EXP/<lever>/eval_levers.json``). ``batch30`` halves the batch and doubles the steps, so every lever
sees the same audio. Rows give the WER per split, the run's optimizer steps, wall time, seconds per
step and audio seconds per wall second on the device it ran on; the CPU cost of a step per lever on
its own is ``bench/train_profile.py``'s. Writes the JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisparse.utils.plotting import saved_figure

# lever -> (overrides, what it changes); step-dependent keys are scaled in run_config()
LEVERS: dict[str, tuple[list[str], str]] = {
    "baseline": ([], "the preset as is"),
    "vocab128": (["--data.vocab_size=128"], "128 BPE pieces instead of 256 (smaller joint output)"),
    "lr4e-3": (["--train.lr=4e-3"], "peak learning rate x2"),
    "lr1e-3": (["--train.lr=1e-3"], "peak learning rate /2"),
    "no-ctc": (["--model.ctc_weight=0"], "no auxiliary CTC head"),
    "lstm-pred": (["--model.pred_type=lstm"], "LSTM predictor instead of the stateless one"),
    "x4": (["--model.subsampling=4", "--model.chunk_size=4"], "x4 subsampling (40 ms frames), same 160 ms chunks"),
    "batch30": (["--data.max_duration=30"], "30 s batches, twice the steps (same audio)"),
    "no-specaug": (["--data.spec_augment=false"], "no SpecAugment"),
    # recipe v3's open levers: model size (int8 artefact <= 10 MB) and augmentation strength
    "d192": (["--model.d_model=192", "--model.ffn_dim=768"], "d 192 (FFN 768) instead of 144 (576): ~1.7x the encoder"),
    "layers12": (["--model.n_layers=12"], "12 blocks instead of 8"),
    "speed-wide": (["--augment.speed_factors=[0.8, 0.9, 1.0, 1.1, 1.2]"], "speed perturbation 0.8-1.2 instead of 0.9-1.1"),
    "aug-strong": (["--augment.noise_prob=0.8", "--augment.reverb_prob=0.5", "--augment.snr_db=[0.0, 20.0]"],
                   "noise on 80 % of utterances at 0-20 dB, reverberation on 50 % (from 50 % at 5-20 dB, 30 %)"),
    "aug-off": (["--augment.enabled=false"], "no audio augmentation (SpecAugment kept)"),
}


def run_overrides(preset: str, lever: str, steps: int, out_dir: Path, extra: list[str]) -> list[str]:
    """The ``--section.key=value`` list of one lever's run: the preset's schedule scaled to ``steps``."""
    from omnisparse.config import load_config

    base = load_config(preset)
    scale = steps / base.train.max_steps
    overrides, _ = LEVERS[lever]
    n = steps * 2 if lever == "batch30" else steps
    k = n / steps
    return [f"--train.out_dir={out_dir}", f"--train.max_steps={n}", "--train.max_wall_s=0",
            f"--train.warmup_steps={max(1, round(base.train.warmup_steps * scale * k))}",
            f"--train.valid_every={max(1, n // 6)}", f"--train.ckpt_every={max(1, min(base.train.ckpt_every, n // 10))}",
            *overrides, *extra]


def run_config(preset: str, lever: str, steps: int, out_dir: Path, extra: list[str]):
    from omnisparse.config import load_config

    return load_config(preset, run_overrides(preset, lever, steps, out_dir, extra))


def plot(rows: list[dict], splits: list[str], path: Path) -> None:
    with saved_figure(path, figsize=(8, 4)) as (fig, ax):
        width = 0.8 / len(splits)
        for k, split in enumerate(splits):
            xs = [i + k * width for i in range(len(rows))]
            ax.bar(xs, [r["wer"][split] for r in rows], width, label=split)
        base = next((r for r in rows if r["lever"] == "baseline"), None)
        if base is not None:
            for k, split in enumerate(splits):
                ax.axhline(base["wer"][split], ls="--", lw=0.8, color=f"C{k}")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))],
                      [f"{r['lever']}\n{r['s_per_step']:.2f} s/step" for r in rows], fontsize=8)
        ax.set_ylabel("WER (greedy, streaming)")
        ax.set_title(f"recipe levers, {rows[0]['optimizer_steps']}-step runs (dashed: baseline)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--levers", nargs="+", default=["baseline", "d192", "speed-wide", "aug-strong"],
                    choices=sorted(LEVERS), help="default: the open levers of the current recipe")
    ap.add_argument("--exp", default=None, help="default exp/<preset>/levers")
    ap.add_argument("--splits", nargs="+", default=["dev", "test-clean"])
    ap.add_argument("--nproc", type=int, default=1, help="DDP ranks per run (torchrun, one thread each; 1 = in-process)")
    ap.add_argument("--out", default="bench/results/recipe_levers_small.json")
    args, extra = ap.parse_known_args(argv)

    from omnisparse.data.splits import load_split_cuts
    from omnisparse.decoding.evaluate import evaluate_cuts
    from omnisparse.export.loading import load_model
    from omnisparse.io import checkpoint as ck
    from omnisparse.train.distributed import run_under_torchrun
    from omnisparse.train.registry import train
    from omnisparse.utils.provenance import write_result

    exp = Path(args.exp or f"exp/{args.preset}/levers")
    rows = []
    for lever in args.levers:
        out_dir = exp / lever
        cfg = run_config(args.preset, lever, args.steps, out_dir, extra)
        found = ck.latest_checkpoint(out_dir) if out_dir.exists() else None
        if found is None or found[1]["step"] < cfg.train.max_steps:
            print(f"== {lever}: train {cfg.train.max_steps} steps -> {out_dir}", flush=True)
            if args.nproc > 1:
                run_under_torchrun("train", ["--config", args.preset,
                                             *run_overrides(args.preset, lever, args.steps, out_dir, extra)], args.nproc)
            else:
                train(cfg)
            found = ck.latest_checkpoint(out_dir)
        cache_path = out_dir / "eval_levers.json"
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        if cache.get("checkpoint") != str(found[0]):
            cache = {"checkpoint": str(found[0]), "wer": {}}
        lm = None
        for split in args.splits:
            if split in cache["wer"]:
                continue
            lm = lm or load_model(str(found[0]))
            print(f"== {lever}: decode {split}", flush=True)
            r = evaluate_cuts(lm.model, load_split_cuts(lm.config, [split]), lm.tokenizer, lm.normalizer,
                              mode=lm.trained_modes[0], decode=lm.config.decode,
                              on_the_fly=lm.config.data.on_the_fly_features, progress=True)
            cache["wer"][split] = r["wer"]
            cache_path.write_text(json.dumps(cache, indent=2))
        cost = json.loads((out_dir / "cost.json").read_text())
        rows.append({"lever": lever, "overrides": LEVERS[lever][0], "what": LEVERS[lever][1],
                     "optimizer_steps": cost["optimizer_steps"], "train_wall_s": cost["wall_s"],
                     "s_per_step": cost["wall_s"] / max(cost["optimizer_steps"], 1),
                     "audio_s_per_wall_s": cost["audio_seconds"] / max(cost["wall_s"], 1e-9),
                     "device": cost.get("device"), "wer": {s: cache["wer"][s] for s in args.splits},
                     "run_dir": str(out_dir)})
        print(f"{lever}: " + ", ".join(f"{s} {w:.3f}" for s, w in rows[-1]["wer"].items())
              + f", {rows[-1]['s_per_step']:.2f} s/step", flush=True)

    out = Path(args.out)
    plot(rows, args.splits, out.with_suffix(".png"))
    base = next((r for r in rows if r["lever"] == "baseline"), None)
    if base is not None:
        for r in rows:
            r["relative_wer_vs_baseline"] = {s: r["wer"][s] / base["wer"][s] - 1 for s in args.splits}
    write_result(out, {"preset": args.preset, "steps": args.steps, "rows": rows, "plot": str(out.with_suffix(".png"))},
                 command=" ".join(["bench/recipe_levers.py", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    main()
