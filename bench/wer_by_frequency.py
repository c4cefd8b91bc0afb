"""Where a model's word errors come from: WER split by how often each reference word occurs in the
training transcripts (never / 1-2 times / 3-20 / more), so "what limits the WER" is a measurement.

    .venv/bin/python bench/wer_by_frequency.py [--model exp/small/dense] [--splits test-clean]
        [--eval-dir MODEL/eval] [--out bench/results/wer_by_frequency_small.json]

Decodes each split with ``omnisparse eval`` (greedy, the model's training mode) unless
``EVAL_DIR/hyps_<split>.txt`` already holds hypotheses of the same model (``EVAL_DIR/wer.json``
names it). Errors are attributed to reference words through jiwer's word alignment: a reference word
counts as an error when it is substituted or deleted; insertions are reported on their own. Writes
the JSON (per split and frequency bucket: share of reference words, word error rate, contribution to
the WER) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from omnisparse.utils.plotting import saved_figure

BUCKETS = (("unseen", 0, 0), ("1-2", 1, 2), ("3-20", 3, 20), (">20", 21, None))


def bucket_of(count: int) -> str:
    for name, lo, hi in BUCKETS:
        if count >= lo and (hi is None or count <= hi):
            return name
    raise AssertionError(count)


def read_hyps(path: Path) -> tuple[list[str], list[str]]:
    """``hyps_<split>.txt`` of ``omnisparse eval``: alternating ``ID\\tref: ...`` / ``ID\\thyp: ...`` lines."""
    refs, hyps = [], []
    lines = path.read_text().splitlines()
    for ref_line, hyp_line in zip(lines[0::2], lines[1::2]):
        refs.append(ref_line.split("\tref: ", 1)[1] if "\tref: " in ref_line else "")
        hyps.append(hyp_line.split("\thyp: ", 1)[1] if "\thyp: " in hyp_line else "")
    return refs, hyps


def breakdown(refs: list[str], hyps: list[str], train_counts: Counter) -> dict:
    import jiwer

    out = jiwer.process_words(refs, hyps)
    words, errors = Counter(), Counter()
    for ref, align in zip(out.references, out.alignments):
        for chunk in align:
            if chunk.type == "insert":
                continue
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                b = bucket_of(train_counts[ref[i]])
                words[b] += 1
                errors[b] += chunk.type != "equal"
    n = sum(words.values())
    rows = {name: {"words": words[name], "share_of_words": words[name] / n,
                   "word_error": errors[name] / max(words[name], 1), "wer_contribution": errors[name] / n}
            for name, _, _ in BUCKETS}
    # every error is a substitution, deletion or insertion: the contributions add up to jiwer's WER
    total = sum(r["wer_contribution"] for r in rows.values()) + out.insertions / n
    assert abs(total - out.wer) < 1e-9, (total, out.wer)
    return {"wer": out.wer, "words": n, "substitutions": out.substitutions, "deletions": out.deletions,
            "insertions": out.insertions, "insertion_contribution": out.insertions / n, "buckets": rows}


def plot(result: dict, path: Path) -> None:
    splits = list(result)
    names = [b[0] for b in BUCKETS]
    with saved_figure(path, 1, 2, figsize=(9, 3.8)) as (fig, (ax1, ax2)):
        width = 0.8 / len(splits)
        for k, split in enumerate(splits):
            xs = [i + k * width for i in range(len(names))]
            ax1.bar(xs, [result[split]["buckets"][b]["word_error"] for b in names], width, label=split)
            ax2.bar(xs, [result[split]["buckets"][b]["wer_contribution"] for b in names], width, label=split)
        for ax, title in ((ax1, "word error rate of the bucket"), (ax2, "contribution to the split's WER")):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
            ax.set_xlabel("occurrences of the word in the training transcripts")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3, axis="y")
        ax1.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="exp/small/dense")
    ap.add_argument("--splits", nargs="+", default=["test-clean"])
    ap.add_argument("--eval-dir", default=None, help="default MODEL/eval")
    ap.add_argument("--out", default="bench/results/wer_by_frequency_small.json")
    args = ap.parse_args(argv)

    from lhotse import load_manifest

    from omnisparse.data.layout import CorpusLayout
    from omnisparse.deploy.apps import evaluate_checkpoint
    from omnisparse.io import checkpoint as ck
    from omnisparse.utils.provenance import write_result

    model = Path(args.model)
    eval_dir = Path(args.eval_dir) if args.eval_dir else model / "eval"
    if not (model / "config.json").exists():
        raise SystemExit(f"{model}: not a run directory (no config.json)")
    data_cfg = json.loads((model / "config.json").read_text())["data"]
    found = ck.latest_checkpoint(model)
    if found is None:
        raise SystemExit(f"{model}: no checkpoint")
    ckpt = str(found[0])
    previous = json.loads((eval_dir / "wer.json").read_text()) if (eval_dir / "wer.json").exists() else {}
    todo = [s for s in args.splits
            if not ((eval_dir / f"hyps_{s}.txt").exists() and Path(previous.get("model", "")).resolve() == Path(ckpt).resolve())]
    if todo:
        print(f"decoding {todo} with {ckpt} -> {eval_dir}", flush=True)
        evaluate_checkpoint(ckpt, splits=todo, out_dir=str(eval_dir))

    layout = CorpusLayout(data_cfg["corpus_dir"])
    train_counts = Counter(w for split in data_cfg["train_splits"]
                           for sup in load_manifest(layout.supervisions(split)) for w in sup.text.split())
    result = {s: breakdown(*read_hyps(eval_dir / f"hyps_{s}.txt"), train_counts) for s in args.splits}
    out = Path(args.out)
    plot(result, out.with_suffix(".png"))
    write_result(out, {"model": ckpt, "train_word_types": len(train_counts), "train_words": sum(train_counts.values()),
                       "splits": result, "plot": str(out.with_suffix(".png"))},
                 command=" ".join(["bench/wer_by_frequency.py", *(argv if argv is not None else sys.argv[1:])]))
    for s, r in result.items():
        print(f"{s}: WER {r['wer']:.3f}; " + ", ".join(
            f"{b}: {v['share_of_words']:.0%} of words, error {v['word_error']:.2f}" for b, v in r["buckets"].items()))


if __name__ == "__main__":
    main()
