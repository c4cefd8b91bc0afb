"""Shallow fusion of the token LM (``omnisparse train-lm``) into beam search, side by side with greedy
and plain beam search, on one recogniser.

    .venv/bin/python bench/lm_fusion.py --model models/small-int8 --lm exp/small/lm
        [--scales 0.2 0.3 0.5] [--bonuses 0.5 1 1.5 2] [--beam 4] [--tune-split dev]
        [--splits test-clean test-other test-unseen-engine]
        [--max-utts 0] [--corpus DIR] [--out bench/results/lm_fusion_small.json]

The LM weight and the reward per emitted token (``decode.lm_token_bonus``: fusion alone trades
substitutions for deletions) are chosen on ``--tune-split``: plain beam search, plain beam search with
each of ``--bonuses`` (``decode.token_bonus``, no LM) and every ``--scales`` x ``--bonuses`` pair are
decoded there, the lowest WER of each family wins (substitutions, deletions and insertions are kept
per row). The test splits are then decoded four ways: greedy, plain beam, beam with the chosen
token bonus and beam + LM at the chosen pair. Streaming encoder (the model's trained mode), batch
decoding. ``decode_s`` is each configuration's wall time in this one process (only ratios mean
anything on a shared machine). Writes the JSON (``tune`` rows, ``best_scale``, ``test`` rows, relative
WER of each configuration against greedy, the LM's size, text and dev perplexity) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from omnisparse.config import DecodeConfig
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.export.loading import load_model
from omnisparse.io.checkpoint import resolve_checkpoint
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result


def decode(asr, cuts, method: str, beam: int, lm: str = "", scale: float = 0.0, bonus: float = 0.0) -> dict:
    """WER of one configuration; ``bonus`` is the LM's token bonus when ``scale`` > 0, else plain beam's."""
    dec = DecodeConfig(method=method, beam=beam, max_symbols_per_frame=asr.config.decode.max_symbols_per_frame,
                       batch_size=asr.config.decode.batch_size, lm=lm if scale > 0 else "", lm_scale=scale,
                       lm_token_bonus=bonus, token_bonus=0.0 if scale > 0 else bonus)
    r = evaluate_cuts(asr.model, cuts, asr.tokenizer, asr.normalizer, mode=asr.trained_modes[0], decode=dec,
                      on_the_fly=asr.config.data.on_the_fly_features, progress=True)
    return {k: r[k] for k in ("wer", "utterances", "words", "substitutions", "deletions", "insertions")} | \
        {"decode_s": round(r["decode_s"], 1)}


def lm_info(lm_dir: str) -> dict:
    ckpt, state = resolve_checkpoint(lm_dir)
    info = {"checkpoint": str(ckpt), "step": state["step"], "arch": state["lm"], "text": state.get("text")}
    metrics = Path(lm_dir) / "metrics.csv"
    if metrics.exists():
        with open(metrics) as f:
            dev = [r for r in csv.DictReader(f) if r.get("dev_ppl")]
        if dev:
            info["dev_ppl"] = float(dev[-1]["dev_ppl"])
    return info


def plot(tune: list[dict], test: dict, path: Path) -> None:
    with saved_figure(path, 1, 2, figsize=(10, 3.8)) as (fig, (a, b)):
        plain = [r for r in tune if r["scale"] == 0]
        a.plot([0.0] * len(plain), [r["wer"] for r in plain], "k.", label="no LM, each token bonus")
        for bonus in sorted({r["bonus"] for r in tune if r["scale"] > 0}):
            rows = [r for r in tune if r["bonus"] == bonus and r["scale"] > 0]
            a.plot([r["scale"] for r in rows], [r["wer"] for r in rows], marker="o", label=f"token bonus {bonus:g}")
        a.axhline(tune[0]["wer"], color="k", ls="--", lw=0.8, label="plain beam search")
        a.legend(fontsize=7)
        a.set_xlabel("LM weight")
        a.set_ylabel("WER")
        a.set_title("choosing the LM weight on dev")
        a.grid(alpha=0.3)
        splits = list(next(iter(test.values())))
        width = 0.8 / len(test)
        for i, (name, rows) in enumerate(test.items()):
            b.bar([j + i * width for j in range(len(splits))], [rows[s]["wer"] for s in splits], width, label=name)
        b.set_xticks([j + 0.4 - width / 2 for j in range(len(splits))], splits, fontsize=8)
        b.set_ylabel("WER")
        b.set_title("test splits")
        b.legend(fontsize=7)
        b.grid(axis="y", alpha=0.3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/small-int8", help="run, checkpoint or exported model")
    ap.add_argument("--lm", default="exp/small/lm", help="`omnisparse train-lm` run directory or checkpoint")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    ap.add_argument("--bonuses", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--tune-split", default="dev")
    ap.add_argument("--splits", nargs="+", default=["test-clean", "test-other", "test-unseen-engine"])
    ap.add_argument("--max-utts", type=int, default=0, help="first N cuts per split (0 = all)")
    ap.add_argument("--corpus", default=None, help="corpus directory (default: the model's data.corpus_dir)")
    ap.add_argument("--out", default="bench/results/lm_fusion_small.json")
    args = ap.parse_args(argv)

    asr = load_model(args.model)
    if args.corpus:
        asr.config.data.corpus_dir = args.corpus

    def cuts(split: str):
        c = load_split_cuts(asr.config, [split])
        return c.subset(first=min(args.max_utts, len(c))) if args.max_utts else c

    tune_cuts = cuts(args.tune_split)
    tune = []
    bonuses = sorted(set(args.bonuses))
    pairs = [(0.0, 0.0), *((0.0, b) for b in bonuses if b > 0), *((s, b) for s in sorted(set(args.scales)) for b in bonuses)]
    for scale, bonus in pairs:
        r = decode(asr, tune_cuts, "beam", args.beam, args.lm, scale, bonus)
        tune.append({"scale": scale, "bonus": bonus, **r})
        print(f"  {args.tune_split} beam {args.beam}, LM weight {scale:g}, token bonus {bonus:g}: WER {r['wer']:.4f} "
              f"(S {r['substitutions']} D {r['deletions']} I {r['insertions']}; {r['decode_s']:.0f} s)", flush=True)
    plain = min((r for r in tune if r["scale"] == 0), key=lambda r: r["wer"])
    top = min((r for r in tune if r["scale"] > 0), key=lambda r: r["wer"], default=plain)
    best = {"scale": top["scale"], "bonus": top["bonus"], "plain_bonus": plain["bonus"]}
    configs = {"greedy": ("greedy", 0.0, 0.0), f"beam {args.beam}": ("beam", 0.0, 0.0)}
    if plain["bonus"] > 0:
        configs[f"beam {args.beam}, bonus {plain['bonus']:g}"] = ("beam", 0.0, plain["bonus"])
    if top["scale"] > 0:
        configs[f"beam {args.beam} + LM {top['scale']:g} (bonus {top['bonus']:g})"] = ("beam", top["scale"], top["bonus"])
    test: dict[str, dict] = {name: {} for name in configs}
    for split in args.splits:
        c = cuts(split)
        for name, (method, scale, bonus) in configs.items():
            test[name][split] = decode(asr, c, method, args.beam, args.lm, scale, bonus)
            print(f"  {split} {name}: WER {test[name][split]['wer']:.4f} ({test[name][split]['decode_s']:.0f} s)",
                  flush=True)
    base = test["greedy"]
    rel = {name: {s: round(rows[s]["wer"] / base[s]["wer"] - 1, 4) for s in rows} for name, rows in test.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(tune, test, out.with_suffix(".png"))
    write_result(out, {"model": args.model, "lm": lm_info(args.lm), "beam": args.beam, "tune_split": args.tune_split,
                       "max_utts": args.max_utts, "tune": tune, "best": best, "test": test,
                       "wer_vs_greedy": rel, "plot": str(out.with_suffix(".png"))},
                 command=" ".join(["bench/lm_fusion.py", *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps(rel, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
