"""Export the dense `small` run as the int8 model shipped in ``models/`` and write its model card.

    .venv/bin/python bench/ship_model.py [--run exp/small/dense] [--result bench/results/dense_small.json]
                                         [--out models/small-int8]

The artefact is ``omnisparse export RUN --config uniform:0 --format int8-sparse`` (dense weights,
int8 per output row); ``README.md`` beside it says what the model is, what it was trained on (from
the corpus's ``corpus.json``) and its measured WER (from the ``bench/dense_small.py`` result, whose
commit and command it quotes). Refuses a result that belongs to another run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omnisparse.export.subnet import export_subnet
from omnisparse.io.atomic import atomic_write_text


def model_card(result: dict, corpus: dict, size_bytes: int, nonzero: int) -> str:
    wer = result["wer"]
    anchor = result.get("anchor") or {}
    cfg = result["config"]
    m = cfg["model"]
    lines = [
        "# small-int8: a streaming English RNN-T for the CPU",
        "",
        f"{nonzero:,} parameters ({m['n_layers']} Conformer-lite blocks, d {m['d_model']}, x{m['subsampling']} "
        f"subsampling, {m['chunk_size'] * m['subsampling'] * 10} ms chunks, {m['pred_type']} predictor, "
        f"{cfg['data']['vocab_size']}-piece BPE), stored as int8 per output row: {size_bytes / 1e6:.2f} MB. "
        "16 kHz mono audio in, lower-case words out.",
        "",
        "```bash",
        "omnisparse transcribe models/small-int8 a.wav --stream",
        "```",
        "",
        "## Trained on",
        "",
        f"The `{corpus['preset']['name']}` default corpus (`omnisparse data build --preset "
        f"{corpus['preset']['name']} --seed {corpus['seed']}`): synthetic speech only, "
        f"{corpus['splits']['train']['hours']:.1f} h of train audio from the engines "
        f"{', '.join(corpus['engines']['train'])}, with on-the-fly speed, noise, reverberation and gain "
        f"augmentation; {result['optimizer_steps']:,} optimizer steps, {result['train_wall_s'] / 60:.0f} min on "
        "2 CPU cores. It has never heard a human voice.",
        "",
        "## Word error rate (greedy, streaming)",
        "",
        "| split | this model | pocketsphinx (same utterances) |",
        "|---|---:|---:|",
    ]
    for split, w in wer.items():
        a = anchor.get(split)
        ours = result.get("anchor_subset_wer", {}).get(split)
        ps = f"{a['wer']:.3f} (ours {ours:.3f} on those {a['utterances']})" if a and ours is not None else "—"
        lines.append(f"| {split} | {w:.3f} | {ps} |")
    lines += ["", f"Measured by `{result['command']}` at commit `{result['commit']}` ({result['date']}); "
              "see `bench/results/dense_small.json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="exp/small/dense")
    ap.add_argument("--result", default="bench/results/dense_small.json")
    ap.add_argument("--out", default="models/small-int8")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.result).read_text())
    if Path(result["run_dir"]).resolve() != Path(args.run).resolve():
        raise SystemExit(f"{args.result} describes {result['run_dir']}, not {args.run}")
    corpus = json.loads((Path(result["config"]["data"]["corpus_dir"]) / "corpus.json").read_text())
    res = export_subnet(args.run, "uniform:0", "int8-sparse", args.out, overwrite=True,
                        extra_meta={"wer": result["wer"], "result_commit": result["commit"]})
    atomic_write_text(Path(args.out) / "README.md", model_card(result, corpus, res.size_bytes, res.nonzero_params))
    print(f"shipped {res.path}: {res.size_bytes:,} bytes, {res.nonzero_params:,} parameters")


if __name__ == "__main__":
    main()
