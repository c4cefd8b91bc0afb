"""Dense streaming RNN-T on the `small` default corpus: WER, training time and streaming speed.

    .venv/bin/python bench/dense_small.py [--preset small] [--out bench/results/dense_small.json]
                                          [--rtf-utts 50] [--anchor-utts 0] [--nproc 1]
                                          [--section.key=value ...]

Stages (each resumable: re-running continues where it stopped):
  1. build the corpus and its features/tokenizer (skipped when present)
  2. train the preset `<preset>` (resumes from the run's last checkpoint); ``--nproc N > 1`` trains with
     ``torchrun --standalone --nproc_per_node=N`` (DDP, gloo on CPU; one intra-op thread per rank
     unless ``--train.threads`` says otherwise: on 2 cores two 1-thread ranks do more work than one
     2-thread process), then evaluates here
  3. WER on dev / test-clean / test-other (+ test-unseen-engine when the corpus has it; greedy, the
     trained streaming mode)
  4. streaming real-time factor: audio -> streaming fbank -> encoder ``infer`` -> greedy, batch 1,
     1 thread, on the first ``--rtf-utts`` test-clean utterances, in PyTorch as trained (``rtf_stream``)
     and in the runtime a device runs: the ONNX export, int8, in onnxruntime (``rtf_stream_onnx_int8``;
     its WER on those utterances beside PyTorch's, ``rtf_subset_wer``)
  5. ``anchor``: pocketsphinx (bench/anchor.py) on the same test splits and utterances as stage 3's
     WER (the first ``--anchor-utts`` of each split when given: pocketsphinx decodes at about real
     time on one core; ``anchor_subset_wer`` then holds our WER on exactly those utterances), its
     WER and real-time factor (cached in RUN_DIR/eval_anchor.json)
Writes the JSON result and a PNG of the dev-WER curve over training time beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path


from omnisparse.config import load_config
from omnisparse.data.corpus import build_corpus
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.prepare import prepare_training_data
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts, word_error_rate
from omnisparse.decoding.streaming import SHIFT, recognizer_rtf, streaming_rtf
from omnisparse.deploy.onnx_export import export_onnx
from omnisparse.deploy.onnx_runner import OnnxModel, OnnxStreamingRecognizer
from omnisparse.export.loading import load_model
from omnisparse.train.distributed import run_under_torchrun
from omnisparse.train.metrics import read_dev_curve
from omnisparse.train.registry import train
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result


def _anchor_module():
    """bench/anchor.py, imported from beside this file (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_anchor", Path(__file__).with_name("anchor.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    with saved_figure(path, figsize=(6, 4)) as (fig, ax):
        ax.plot([c["wall_s"] / 60 for c in curve], [c["dev_wer"] for c in curve], marker="o")
        ax.set_xlabel("training wall time (min)")
        ax.set_ylabel("dev WER (greedy, streaming)")
        ax.set_title(title)
        ax.grid(alpha=0.3)


def train_distributed(preset: str, overrides: list[str], nproc: int, run_dir: Path) -> dict:
    """Train (or resume) ``preset`` under torchrun with ``nproc`` ranks; returns the run's cost record."""
    run_under_torchrun("train", ["--config", preset, *overrides], nproc)
    with open(run_dir / "cost.json") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--out", default="bench/results/dense_small.json")
    ap.add_argument("--rtf-utts", type=int, default=50)
    ap.add_argument("--nproc", type=int, default=1, help="DDP ranks for training (torchrun; default 1: in-process)")
    ap.add_argument("--anchor-utts", type=int, default=0, help="pocketsphinx on the first N utterances per test "
                    "split (0 = all)")
    args, overrides = ap.parse_known_args(argv)
    cfg = load_config(args.preset, overrides)
    corpus = Path(cfg.data.corpus_dir)
    if not CorpusLayout(corpus).cuts("train").exists():
        build_corpus(corpus, preset=args.preset, seed=0)
    prepare_training_data(corpus, cfg.data.train_splits, cfg.data.vocab_size)

    run_dir = Path(cfg.train.out_dir)
    if args.nproc > 1:
        cost = train_distributed(args.preset, overrides, args.nproc, run_dir)
    else:
        cost = train(cfg)["cost"]
    lm = load_model(run_dir)
    mode = lm.trained_modes[0]
    anchor_mod = _anchor_module()
    test_splits = list(cfg.data.test_splits)
    if anchor_mod.UNSEEN_SPLIT not in test_splits and CorpusLayout(corpus).cuts(anchor_mod.UNSEEN_SPLIT).exists():
        test_splits.append(anchor_mod.UNSEEN_SPLIT)
    wer, wer_ids, subset_wer, refs_of = {}, {}, {}, {}
    for split in [cfg.data.dev_split, *test_splits]:
        r = evaluate_cuts(lm.model, load_split_cuts(cfg, [split]), lm.tokenizer, lm.normalizer, mode=mode,
                          decode=cfg.decode, progress=True)
        wer[split] = r["wer"]
        hyps = sorted(r["hyps"], key=lambda h: h["id"])
        refs_of[split] = hyps
        if args.anchor_utts > 0:
            hyps = hyps[:args.anchor_utts]
        wer_ids[split] = [h["id"] for h in hyps]
        subset_wer[split] = word_error_rate([h["ref"] for h in hyps], [h["hyp"] for h in hyps])["wer"]
        print(f"{split}: WER {r['wer']:.4f} ({r['utterances']} utterances)")
    anchor = anchor_mod.cached_pocketsphinx_eval(run_dir / "eval_anchor.json", corpus,
                                                 {s: wer_ids[s] for s in test_splits})
    rtf_split = cfg.data.test_splits[0]
    rtf_cuts = load_split_cuts(cfg, [rtf_split])
    rtf = streaming_rtf(lm.model, lm.tokenizer, lm.normalizer, rtf_cuts, args.rtf_utts)
    onnx = OnnxModel(export_onnx(lm, run_dir / "onnx-int8", dtype="int8", overwrite=True).path, threads=1)
    rtf_ort = recognizer_rtf(lambda: OnnxStreamingRecognizer(onnx), rtf_cuts, args.rtf_utts,
                             lm.model.encoder.frames_per_chunk * SHIFT)
    rtf_refs = {h["id"]: h["ref"] for h in refs_of[rtf_split]}
    rtf_subset_wer = {name: word_error_rate([rtf_refs[i] for i in r["hyps"]], list(r["hyps"].values()))["wer"]
                      for name, r in (("pytorch", rtf), ("onnx_int8", rtf_ort))}
    curve = read_dev_curve(run_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(curve, out.with_suffix(".png"), f"{args.preset}: dense streaming RNN-T")
    payload = {
        "preset": args.preset,
        "params": lm.model.num_params(),
        "train_wall_s": cost["wall_s"],
        "optimizer_steps": cost["optimizer_steps"],
        "world_size": cost.get("world_size", 1),
        "audio_s_per_wall_s": cost["audio_seconds"] / max(1e-9, cost["wall_s"]),
        "wer": {"dev": wer[cfg.data.dev_split], **{s: wer[s] for s in test_splits}},
        "rtf_stream": rtf["rtf"],
        "rtf_stream_onnx_int8": rtf_ort["rtf"],
        "rtf_detail": {k: v for k, v in rtf.items() if k != "hyps"},
        "rtf_subset_wer": rtf_subset_wer,
        "anchor": anchor,
        "anchor_subset_wer": {s: subset_wer[s] for s in test_splits},
        "wer_curve": curve,
        "run_dir": str(run_dir),
        "config": cfg.to_dict(),
        "plot": str(out.with_suffix(".png")),
    }
    written = write_result(out, payload, command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(json.dumps({k: written[k] for k in ("params", "train_wall_s", "wer", "rtf_stream", "rtf_stream_onnx_int8",
                                                   "audio_s_per_wall_s")}, indent=2))


if __name__ == "__main__":
    main()
