"""The decode-time levers of a trained model, measured side by side: its newest checkpoint against the
mean of its newest N (``omnisparse average``) for each N of ``--last``, decoded greedily and with
modified beam search.

    .venv/bin/python bench/decode_levers.py [--run exp/small/dense_v3] [--last 3 [8 16 ...]] [--beam 4]
        [--pred-history 4 8 ...] [--max-symbols 1 2 ...] [--splits dev test-clean test-other] [--max-utts 0]
        [--out bench/results/decode_levers_small.json]

The newest checkpoint is decoded both ways, every average greedily, and the average that greedy search
found best on the first split (dev: chosen on dev, never on a test split) with beam search too, and
greedily with each ``--pred-history`` window (an LSTM predictor decoding from its last N tokens, as
the sherpa-onnx export computes it: ``decode.pred_history``) and with each ``--max-symbols`` limit on
the tokens greedy search may emit per encoder frame (``decode.max_symbols_per_frame``; default 4;
sherpa-onnx's searches emit one per frame of its export). ``--beam 0`` leaves out the beam-search rows. Each
averaged checkpoint is written to ``RUN/avg-<first>-<last>`` (reused when it is there). WER per
split and configuration comes from jiwer (``omnisparse.decoding.evaluate``); ``decode_s`` is the wall
time of each configuration's decoding, measured in this one process, so the ratio beam / greedy is the
figure to read (the machine is shared). ``--max-utts N`` decodes the first N cuts of each split (0 =
all). Writes the JSON and a bar chart beside it (``--replot`` redraws the chart of an existing result).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnisparse.config import DecodeConfig
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.export.loading import load_model
from omnisparse.io.average import average_checkpoints, default_average_dir, last_checkpoints
from omnisparse.io.checkpoint import verify_checkpoint
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result


def averaged(run: Path, last: int) -> tuple[Path, Path]:
    """(newest checkpoint, the average of the newest ``last``), writing the average once."""
    ckpts = last_checkpoints(run, last)
    paths = [p for p, _ in ckpts]
    out = default_average_dir(paths)
    if out.is_dir():
        sources = [a["checkpoint"] for a in verify_checkpoint(out).get("averaged_from", [])]
        if sources == [p.name for p in paths]:
            return paths[-1], out
    return paths[-1], average_checkpoints(ckpts, out)


def measure(model_dir: Path, splits: list[str], decode: DecodeConfig, max_utts: int) -> dict:
    lm = load_model(model_dir)
    mode = lm.trained_modes[0]
    rows = {}
    for split in splits:
        cuts = load_split_cuts(lm.config, [split])
        if max_utts:
            cuts = cuts.subset(first=min(max_utts, len(cuts)))
        r = evaluate_cuts(lm.model, cuts, lm.tokenizer, lm.normalizer, mode=mode, decode=decode,
                          on_the_fly=lm.config.data.on_the_fly_features, progress=True)
        rows[split] = {"wer": r["wer"], "utterances": r["utterances"], "words": r["words"],
                       "decode_s": round(r["decode_s"], 1)}
        print(f"  {model_dir.name:>24} {decode.method:>6} {split:>12}: WER {r['wer']:.4f} ({r['decode_s']:.0f} s)")
    return rows


def plot(results: dict, splits: list[str], path: Path) -> None:
    """Bars of each configuration's WER relative to the newest checkpoint decoded greedily (%)."""
    with saved_figure(path, figsize=(7.5, 3.8)) as (fig, ax):
        names = list(results)
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + i * width for j in range(len(splits))]
            rel = [100 * (results[name]["wer_vs_newest_greedy"][s] - 1) for s in splits]
            ax.bar(xs, rel, width, label=f"{name} (decode x{results[name]['decode_s_vs_newest_greedy']:.1f})")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(splits))], splits)
        ax.set_ylabel("WER vs newest checkpoint, greedy (%)")
        ax.set_title("decode-time levers (below 0 = better)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="exp/small/dense_v3")
    ap.add_argument("--last", type=int, nargs="+", default=[3], help="checkpoints averaged (one average per N)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--splits", nargs="+", default=["dev", "test-clean", "test-other"])
    ap.add_argument("--pred-history", type=int, nargs="*", default=[],
                    help="LSTM predictor windows (tokens) to decode the best average with, greedily")
    ap.add_argument("--max-symbols", type=int, nargs="*", default=[],
                    help="greedy search's tokens-per-frame limits to decode the best average with")
    ap.add_argument("--max-utts", type=int, default=0, help="first N cuts per split (0 = all)")
    ap.add_argument("--out", default="bench/results/decode_levers_small.json")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG of an existing --out result")
    args = ap.parse_args(argv)
    if args.replot:
        res = json.loads(Path(args.out).read_text())
        plot(res["results"], list(next(iter(res["results"].values()))["wer"]), Path(args.out).with_suffix(".png"))
        return 0
    run = Path(args.run)
    newest = last_checkpoints(run, 1)[0][0]
    averages = {n: averaged(run, n)[1] for n in sorted(set(args.last))}
    results = {}

    def decode(label: str, model_dir: Path, method: str, history: int = 0, symbols: int = 0) -> None:
        cfg = DecodeConfig(method=method, beam=max(args.beam, 1), pred_history=history)
        if symbols:
            cfg.max_symbols_per_frame = symbols
        key = f"{label}, {method}" + (f", history {history}" if history else "") + \
            (f", max symbols {symbols}" if symbols else "")
        results[key] = {"model": str(model_dir), "method": method, "beam": args.beam, "pred_history": history,
                        "max_symbols_per_frame": cfg.max_symbols_per_frame,
                        "wer": measure(model_dir, args.splits, cfg, args.max_utts)}

    decode(f"newest ({newest.name})", newest, "greedy")
    if args.beam:
        decode(f"newest ({newest.name})", newest, "beam")
    for n, model_dir in averages.items():
        decode(f"mean of last {n}", model_dir, "greedy")
    best = min(averages, key=lambda n: results[f"mean of last {n}, greedy"]["wer"][args.splits[0]]["wer"])
    if args.beam:
        decode(f"mean of last {best}", averages[best], "beam")
    for k in args.pred_history:
        decode(f"mean of last {best}", averages[best], "greedy", k)
    for k in args.max_symbols:
        decode(f"mean of last {best}", averages[best], "greedy", symbols=k)
    base = next(iter(results.values()))["wer"]
    for r in results.values():
        r["wer_vs_newest_greedy"] = {s: round(r["wer"][s]["wer"] / base[s]["wer"], 4) for s in args.splits}
        r["decode_s_vs_newest_greedy"] = round(sum(v["decode_s"] for v in r["wer"].values())
                                               / max(sum(v["decode_s"] for v in base.values()), 1e-9), 3)
    out = Path(args.out)
    plot(results, args.splits, out.with_suffix(".png"))
    write_result(out, {"run": args.run, "averaged": {str(n): str(p) for n, p in averages.items()},
                       "averaged_checkpoints": sorted(averages), "best_average": best, "chosen_on": args.splits[0],
                       "max_utts": args.max_utts, "results": results, "plot": str(out.with_suffix(".png"))},
                 command=" ".join(["bench/decode_levers.py", *(argv if argv is not None else sys.argv[1:])]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
