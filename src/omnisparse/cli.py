"""The ``omnisparse`` command line: a thin layer that parses arguments and calls the library.

    omnisparse data build --preset tiny|small|medium [--out DIR] [--seed N] [--jobs N]
    omnisparse data librispeech SRC_DIR [--out DIR] [--parts p1 p2 ...]
    omnisparse data prepare --corpus DIR [--vocab-size V] [--train-splits train ...]
    omnisparse train --config PRESET|FILE [--supernet | --dual-mode] [--section.key=value ...]
    omnisparse average RUN_DIR [--last N] [--out DIR]  |  omnisparse average CKPT CKPT ... --out DIR
    omnisparse import-model EXPORT_DIR --out CKPT_DIR [--seed N]
    omnisparse eval RUN_DIR|CHECKPOINT [--splits dev test-clean] [--method greedy|beam] [--mode stream|full]
    omnisparse prune --config PRESET|FILE [--section.key=value ...]
    omnisparse pretrain --config PRESET|FILE [--pretrain.audio_dir=DIR] [--section.key=value ...]
    omnisparse search --config PRESET|FILE [--section.key=value ...]
    omnisparse export SUPERNET (--size-mb X | --config uniform:S|FILE.json) --out DIR [--format F]
    omnisparse export DUAL_RUN --mode full | --mode stream [--sparsity S] --out DIR [--format F]
    omnisparse transcribe MODEL|EXPORT_DIR AUDIO... [--stream] [--fast [--dtype fp32|int8] [--plan PLAN.json]]
    omnisparse report EXP_DIR [--dense DIR] [--splits ...] [--test-subset N]
    omnisparse export-onnx EXPORT_DIR|RUN --out DIR [--compact none|ffn|rows] [--dtype fp32|int8]
                           [--target omnisparse|sherpa-onnx [--pred-history N] [--symbols-per-frame K]] [--overwrite]
    omnisparse check-onnx ONNX_DIR [--split dev] [--max-utts N] [--model DIR] [--corpus DIR] [--method greedy|beam]

Errors a user can cause (missing files, bad configs, bad audio) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from omnisparse.config import ConfigError
from omnisparse.errors import FatalRunError

log = logging.getLogger("omnisparse")


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def _cmd_data_build(args: argparse.Namespace) -> int:
    from omnisparse.data.corpus import build_corpus

    out = args.out or f"data/{args.preset}"
    build_corpus(out, preset=args.preset, seed=args.seed, num_jobs=args.jobs)
    return 0


def _cmd_data_librispeech(args: argparse.Namespace) -> int:
    from omnisparse.data.librispeech import prepare_librispeech

    summary = prepare_librispeech(args.src, args.out, parts=args.parts or None)
    for part, s in summary.items():
        print(f"{part:>16}: {s['utterances']:7d} utterances {s['hours']:8.2f} h {s['speakers']:5d} speakers")
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from omnisparse.data.prepare import prepare_training_data

    info = prepare_training_data(args.corpus, args.train_splits, args.vocab_size, num_jobs=args.jobs)
    print(f"prepared {args.corpus}: splits {info['splits']}, tokenizer {info['tokenizer']} ({info['vocab_size']} pieces)")
    return 0


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.config import load_config
    from omnisparse.train.registry import train

    cfg = load_config(args.config, overrides)
    train(cfg, resume=not args.no_resume, supernet=args.supernet, dual_mode=args.dual_mode)
    return 0


def _cmd_prune(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.config import load_config
    from omnisparse.train.prune import prune

    cfg = load_config(args.config, overrides)
    prune(cfg, resume=not args.no_resume)
    return 0


def _cmd_pretrain(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.config import load_config
    from omnisparse.train.pretrain import pretrain

    cfg = load_config(args.config, overrides)
    pretrain(cfg, resume=not args.no_resume)
    return 0


def _cmd_train_lm(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.config import load_config
    from omnisparse.train.lm import train_lm

    out = train_lm(load_config(args.config, overrides), resume=not args.no_resume)
    print(f"LM: step {out['step']}, dev perplexity {out['dev_ppl']:.3f} per token, {out['sentences']} sentences "
          f"-> {out['checkpoint']}")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from omnisparse.io.average import average_checkpoints, default_average_dir, last_checkpoints, named_checkpoints

    if len(args.sources) == 1 and not (Path(args.sources[0]) / "state.json").exists():
        ckpts = last_checkpoints(args.sources[0], args.last)
    elif args.out is None:
        raise UserError("averaging named checkpoints needs --out DIR")
    else:
        ckpts = named_checkpoints(args.sources)
    names = [p for p, _ in ckpts]
    out = average_checkpoints(ckpts, args.out or default_average_dir(names))
    print(f"averaged {len(ckpts)} checkpoints ({', '.join(p.name for p in names)}) -> {out}")
    return 0


def _cmd_import_model(args: argparse.Namespace) -> int:
    from omnisparse.export.import_model import import_model

    out = import_model(args.export_dir, args.out, seed=args.seed)
    print(f"imported {args.export_dir} -> {out} (train its ctc_head./simple_joint. before training the rest: "
          "--train.init_from with --train.trainable)")
    return 0


def _cmd_eval(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.deploy.apps import evaluate_checkpoint

    results = evaluate_checkpoint(args.model, splits=args.splits, method=args.method, mode=args.mode,
                                  out_dir=args.out, overrides=overrides, subnet=args.subnet)
    for split, r in results.items():
        print(f"{split:>12}: WER {r['wer']:.4f}  ({r['utterances']} utterances, {r['words']} words)")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from omnisparse.deploy.apps import transcribe_files

    return transcribe_files(args.model, args.audio, stream=args.stream, method=args.method, fast=args.fast,
                            dtype=args.dtype, plan=args.plan, lm_path=args.lm, lm_scale=args.lm_scale,
                            lm_token_bonus=args.lm_token_bonus)


def _cmd_search(args: argparse.Namespace, overrides: list[str]) -> int:
    from omnisparse.config import load_config
    from omnisparse.search.run import run_search

    cfg = load_config(args.config, overrides)
    s = run_search(cfg, resume=not args.no_resume)
    lat = any("latency_ms" in r for r in s["pareto"])
    print(f"{'size (MB)':>10}  " + (f"{'step (ms)':>9}  " if lat else "") + f"{'dev WER':>8}  nonzero params")
    for r in s["pareto"]:
        print(f"{r['size_mb']:10.4f}  " + (f"{r['latency_ms']:9.3f}  " if lat else "")
              + f"{r['wer']:8.4f}  {r['nonzero_params']:,}")
    c = s["cost"]
    print(f"{c['evaluated']} candidates, {c['generations']} generations, {c['wall_s']:.0f} s -> {s['out_dir']}")
    return 0


def _pick_from_search(pareto_path: Path, size_mb: float) -> dict:
    """The lowest-WER searched configuration of at most ``size_mb`` MB (1e6 bytes) in a pareto.json."""
    from omnisparse.report.points import best_under

    if not pareto_path.exists():
        raise UserError(f"{pareto_path} not found: run `omnisparse search` first, or give --pareto")
    front = json.loads(pareto_path.read_text()).get("front", [])
    row = best_under(front, int(size_mb * 1e6))
    if row is None:
        smallest = min((r["size_bytes"] for r in front), default=None)
        raise UserError(f"no searched sub-network of at most {size_mb} MB in {pareto_path}"
                        + (f" (the smallest is {smallest / 1e6:.4f} MB)" if smallest else ""))
    return row


def _cmd_export(args: argparse.Namespace) -> int:
    from omnisparse.export.subnet import export_subnet

    fmt = args.format
    extra = {}
    if args.mode == "full" and (args.size_mb is not None or args.subnet is not None or args.sparsity is not None):
        raise UserError("--mode full exports the dense server model: drop --size-mb/--config/--sparsity")
    if args.mode is None and args.size_mb is None and args.subnet is None and args.sparsity is None:
        raise UserError("export: give one of --size-mb, --config, --sparsity or --mode full|stream")
    if args.size_mb is not None:
        pareto = Path(args.pareto) if args.pareto else Path(args.model) / "search" / "pareto.json"
        row = _pick_from_search(pareto, args.size_mb)
        searched_fmt = json.loads(pareto.read_text()).get("format")
        if fmt is None:
            fmt = searched_fmt
        config = row["config"]
        extra = {"search_dev_wer": row["wer"], "search_size_bytes": row["size_bytes"], "search_format": searched_fmt,
                 "pareto": str(pareto)}
    elif args.sparsity is not None:
        config = f"uniform:{args.sparsity}"
    else:
        config = args.subnet  # None with --mode: the dense network (full) or uniform s* (stream)
    res = export_subnet(args.model, config, fmt or ("fp32-dense" if args.mode == "full" else "int8-sparse"),
                        args.out, extra_meta=extra, overwrite=args.overwrite, mode=args.mode)
    print(f"exported {res.path} ({res.fmt}): model.safetensors {res.size_bytes:,} bytes "
          f"({res.size_bytes / 1e6:.4f} MB), {res.nonzero_params:,} nonzero parameters")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from omnisparse.report import build_report

    r = build_report(args.exp_dir, dense_dir=args.dense, splits=args.splits, uniform=args.uniform, fmt=args.format,
                     rtf_utts=args.rtf_utts, test_subset=args.test_subset)
    print(Path(r["paths"]["markdown"]).read_text())
    print(f"plot: {r['paths']['plot']}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    if args.target == "sherpa-onnx":
        from omnisparse.deploy.sherpa import export_sherpa as export
    else:
        from omnisparse.deploy.onnx_export import export_onnx as export

    kw = {"pred_history": args.pred_history, "symbols_per_frame": args.symbols_per_frame} \
        if args.target == "sherpa-onnx" else {}
    if args.pred_history and args.target != "sherpa-onnx":
        raise UserError("--pred-history applies to --target sherpa-onnx (our runner carries the LSTM state)")
    if args.symbols_per_frame is not None and args.target != "sherpa-onnx":
        raise UserError("--symbols-per-frame applies to --target sherpa-onnx (our runner decodes with "
                        "decode.max_symbols_per_frame)")
    res = export(args.model, args.out, compact=args.compact, overwrite=args.overwrite, dtype=args.dtype, **kw)
    sizes = ", ".join(f"{n} {b:,} B" for n, b in res.files.items() if n.endswith(".onnx"))
    print(f"exported {res.path}: {sizes}")
    return 0


def _cmd_check_onnx(args: argparse.Namespace) -> int:
    from omnisparse.deploy.onnx_runner import check_onnx
    from omnisparse.deploy.sherpa import is_sherpa_dir
    from omnisparse.deploy.sherpa_run import check_sherpa

    if is_sherpa_dir(args.onnx_dir):
        return _report_sherpa(check_sherpa(args.onnx_dir, split=args.split, max_utts=args.max_utts, model=args.model,
                                           corpus=args.corpus, threads=args.threads, method=args.method,
                                           beam=args.beam))
    if args.method != "greedy":
        raise UserError(f"--method {args.method} applies to sherpa-onnx exports; {args.onnx_dir} is one of our "
                        "ONNX runner's (greedy)")
    r = check_onnx(args.onnx_dir, split=args.split, max_utts=args.max_utts, model=args.model, corpus=args.corpus,
                   threads=args.threads)
    for row in r["rows"]:
        if not row["equal"]:
            print(f"DIFF {row['id']}\n  torch: {row['torch']}\n  onnx:  {row['onnx']}")
    print(f"{r['split']}: transcripts equal {r['equal']}/{r['utterances']}, encoder max abs diff "
          f"{r['max_abs_diff']:.3g}; streaming compute {r['torch_s']:.2f} s (PyTorch) vs {r['onnx_s']:.2f} s "
          f"(onnxruntime) for {r['audio_s']:.1f} s of audio")
    return 0 if r["equal"] == r["utterances"] else 1


def _report_sherpa(r: dict) -> int:
    for row in r["rows"]:
        if not (row["equal"] and row["tokens_equal"]):
            print(f"DIFF {row['id']}{'' if row['tokens_equal'] else ' (tokens)'}\n  torch:  {row['torch']}\n"
                  f"  sherpa: {row['sherpa']}")
    n = r["utterances"]
    what = "tokens and frames" if r["method"] == "greedy" else f"beam-{r['beam']} tokens"
    print(f"{r['split']}: sherpa-onnx transcripts equal {r['equal']}/{n}, {what} equal {r['tokens_equal']}/{n} "
          f"(our model in sherpa's schedule; {r['symbols_per_frame']} symbols per frame in sherpa, "
          f"{r['max_symbols']} in ours), encoder max abs diff {r['max_abs_diff']:.3g}; streaming compute "
          f"{r['torch_s']:.2f} s (PyTorch) vs {r['sherpa_s']:.2f} s (sherpa-onnx) for {r['audio_s']:.1f} s of audio")
    return 0 if r["equal"] == r["tokens_equal"] == n else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omnisparse", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build, prepare or import corpora").add_subparsers(dest="data_command", required=True)
    b = data.add_parser("build", help="synthesise the offline default corpus (espeak-ng + fortunes)")
    b.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    b.add_argument("--out", default=None, help="corpus directory (default data/PRESET)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    b.set_defaults(func=_cmd_data_build)

    ls = data.add_parser("librispeech", help="prepare a LibriSpeech directory via lhotse")
    ls.add_argument("src", help="directory holding LibriSpeech parts (train-clean-100/, dev-clean/, ...)")
    ls.add_argument("--out", default="data/librispeech")
    ls.add_argument("--parts", nargs="*", default=None)
    ls.set_defaults(func=_cmd_data_librispeech)

    pr = data.add_parser("prepare", help="fbank features, global stats and BPE tokenizer for a corpus")
    pr.add_argument("--corpus", required=True)
    pr.add_argument("--vocab-size", type=int, default=256)
    pr.add_argument("--train-splits", nargs="+", default=["train"])
    pr.add_argument("--jobs", type=int, default=None)
    pr.set_defaults(func=_cmd_data_prepare)

    t = sub.add_parser("train", help="train a streaming RNN-T (overrides: --section.key=value)")
    t.add_argument("--config", required=True, help="preset name (omnisparse/conf/) or a YAML file")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if OUT_DIR has checkpoints")
    t.add_argument("--supernet", action="store_true",
                   help="Omni-sparsity supernet training (sandwich rule; settings in the `sparsity` section)")
    t.add_argument("--dual-mode", action="store_true",
                   help="dual-mode training: dense full-context + sparse streaming paths (section `dual`)")
    t.set_defaults(func=_cmd_train, takes_overrides=True)

    pr2 = sub.add_parser("prune", help="individually pruned baseline: gradual magnitude pruning + fine-tuning")
    pr2.add_argument("--config", required=True, help="preset name (omnisparse/conf/) or a YAML file")
    pr2.add_argument("--no-resume", action="store_true", help="start afresh even if OUT_DIR has checkpoints")
    pr2.set_defaults(func=_cmd_prune, takes_overrides=True)

    pt = sub.add_parser("pretrain", help="wav2vec 2.0 self-supervised pre-training of the encoder (section `pretrain`)")
    pt.add_argument("--config", required=True, help="preset name (omnisparse/conf/) or a YAML file")
    pt.add_argument("--no-resume", action="store_true", help="start afresh even if OUT_DIR has checkpoints")
    pt.set_defaults(func=_cmd_pretrain, takes_overrides=True)

    lmp = sub.add_parser("train-lm", help="token LSTM LM for shallow fusion in beam search (section `lm`)")
    lmp.add_argument("--config", required=True, help="preset name (omnisparse/conf/) or a YAML file")
    lmp.add_argument("--no-resume", action="store_true", help="start afresh even if lm.out_dir has checkpoints")
    lmp.set_defaults(func=_cmd_train_lm, takes_overrides=True)

    av = sub.add_parser("average", help="mean of the weights of a run's last N checkpoints (or of named ones)")
    av.add_argument("sources", nargs="+", help="a run directory, or checkpoint directories")
    av.add_argument("--last", type=int, default=3, help="with a run directory: its newest N valid checkpoints")
    av.add_argument("--out", default=None, help="output checkpoint directory (default RUN/avg-<first>-<last>)")
    av.set_defaults(func=_cmd_average)

    im = sub.add_parser("import-model", help="an exported model (e.g. models/small-int8) as a checkpoint to train from")
    im.add_argument("export_dir", help="an `omnisparse export` directory")
    im.add_argument("--out", required=True, help="the checkpoint directory to write (must not exist)")
    im.add_argument("--seed", type=int, default=0, help="seed of the training-only heads' initialisation")
    im.set_defaults(func=_cmd_import_model)

    e = sub.add_parser("eval", help="WER per split, hypotheses written beside the model")
    e.add_argument("model", help="run directory or checkpoint directory")
    e.add_argument("--splits", nargs="+", default=None, help="default: dev + test splits of the run's config")
    e.add_argument("--method", default=None, choices=["greedy", "beam"])
    e.add_argument("--mode", default=None, choices=["stream", "full"], help="default: the mode it was trained in")
    e.add_argument("--out", default=None, help="where to write results (default RUN_DIR/eval)")
    e.add_argument("--subnet", default=None,
                   help="decode a sub-network of a supernet: `uniform:S` or a JSON file {gene: sparsity}")
    e.set_defaults(func=_cmd_eval, takes_overrides=True)

    tr = sub.add_parser("transcribe", help="transcribe audio files")
    tr.add_argument("model", help="run directory, checkpoint directory or exported model")
    tr.add_argument("audio", nargs="+")
    tr.add_argument("--stream", action="store_true", help="decode chunk by chunk and print partial results")
    tr.add_argument("--method", default="greedy", choices=["greedy", "beam"])
    tr.add_argument("--fast", action="store_true",
                    help="fast CPU execution: per-Linear kind chosen by timing here (deploy/fast.py)")
    tr.add_argument("--dtype", default="fp32", choices=["fp32", "int8"], help="with --fast: int8 combined with sparsity")
    tr.add_argument("--plan", default=None, help="with --fast: a saved CPU plan (JSON) applied without timing")
    tr.add_argument("--lm", default="", help="a `train-lm` run fused into beam search (needs --method beam)")
    tr.add_argument("--lm-scale", type=float, default=None, help="LM weight (default: the model's decode.lm_scale)")
    tr.add_argument("--lm-token-bonus", type=float, default=None,
                    help="reward per emitted token with an LM (default: the model's decode.lm_token_bonus)")
    tr.set_defaults(func=_cmd_transcribe)

    sp = sub.add_parser("search", help="evolutionary search of a supernet's WER-vs-size Pareto front")
    sp.add_argument("--config", required=True, help="preset name (omnisparse/conf/) or a YAML file (section `search`)")
    sp.add_argument("--no-resume", action="store_true", help="start afresh even if the output holds a search state")
    sp.set_defaults(func=_cmd_search, takes_overrides=True)

    ex = sub.add_parser("export", help="write a sub-network as a standalone model directory")
    ex.add_argument("model", help="supernet run directory or checkpoint")
    pick = ex.add_mutually_exclusive_group()  # one of them, or none with --mode
    pick.add_argument("--size-mb", type=float, help="the best searched sub-network of at most this size (MB = 1e6 B)")
    pick.add_argument("--config", dest="subnet", help="`uniform:S` or a JSON file {gene: sparsity}")
    pick.add_argument("--sparsity", type=float, default=None,
                      help="every gene at sparsity S (= --config uniform:S); with --mode stream default: "
                           "the dual-mode checkpoint's dual.sparsity")
    ex.add_argument("--mode", default=None, choices=["full", "stream"],
                    help="export for one attention mode (dual-mode checkpoints): full = the dense server model "
                         "(default format fp32-dense), stream = the sparse on-device model")
    ex.add_argument("--pareto", default=None, help="search result to pick from (default MODEL/search/pareto.json)")
    ex.add_argument("--format", default=None, choices=["fp32-dense", "fp32-sparse", "int8-sparse"],
                    help="storage format (default: the search's with --size-mb, fp32-dense with --mode full, "
                         "else int8-sparse)")
    ex.add_argument("--out", required=True, help="output directory (model.safetensors, meta.json, tokenizer, stats)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export directory")
    ex.set_defaults(func=_cmd_export)

    rp = sub.add_parser("report", help="WER vs size of dense, individually pruned and supernet sub-networks")
    rp.add_argument("exp_dir", help="experiment directory holding dense/, supernet/ (+ search/), prune-*/")
    rp.add_argument("--dense", default=None, help="dense run directory (default EXP_DIR/dense)")
    rp.add_argument("--splits", nargs="+", default=None, help="default: dev test-clean test-other")
    rp.add_argument("--uniform", type=float, nargs="+", default=None,
                    help="uniform sparsities of the supernet to report (default 0.5 0.7 0.8 0.9)")
    rp.add_argument("--format", default=None, choices=["fp32-dense", "fp32-sparse", "int8-sparse"],
                    help="storage format of the sizes (default: the search's)")
    rp.add_argument("--rtf-utts", type=int, default=20, help="utterances for the streaming RTF (0 = skip)")
    rp.add_argument("--test-subset", type=int, default=0, help="first N cuts per split (0 = all)")
    rp.set_defaults(func=_cmd_report)

    eo = sub.add_parser("export-onnx", help="ONNX files of the streaming model (encoder chunk step, predictor, joiner)")
    eo.add_argument("model", help="exported sub-network, run or checkpoint directory")
    eo.add_argument("--out", required=True, help="output directory")
    eo.add_argument("--compact", default="ffn", choices=["none", "ffn", "rows"],
                    help="exact reshaping first: shrink FFN hidden sizes (ffn, default), also drop pruned "
                         "rows of every Linear (rows), or keep the zeros (none)")
    eo.add_argument("--dtype", default="fp32", choices=["fp32", "int8"],
                    help="int8: onnxruntime dynamic quantisation of the graphs (after the compaction)")
    eo.add_argument("--target", default="omnisparse", choices=["omnisparse", "sherpa-onnx"],
                    help="omnisparse: our runner's graphs (default); sherpa-onnx: encoder/decoder/joiner.onnx + "
                         "tokens.txt for sherpa_onnx.OnlineRecognizer")
    eo.add_argument("--pred-history", type=int, default=0,
                    help="sherpa-onnx with an LSTM predictor: its decoder sees the last N tokens (required; "
                         "decode.pred_history=N gives the same transcripts in our decoders)")
    eo.add_argument("--symbols-per-frame", type=int, default=None,
                    help="sherpa-onnx: the encoder repeats each frame K times so that sherpa's one-token-per-frame "
                         "searches can emit K (default: the model's decode.max_symbols_per_frame, which makes "
                         "sherpa's greedy search ours)")
    eo.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    eo.set_defaults(func=_cmd_export_onnx)

    co = sub.add_parser("check-onnx", help="ONNX (or sherpa-onnx) vs PyTorch streaming: encoder outputs and transcripts")
    co.add_argument("onnx_dir")
    co.add_argument("--split", default="dev")
    co.add_argument("--max-utts", type=int, default=0, help="first N utterances (0 = all)")
    co.add_argument("--model", default=None, help="PyTorch model to compare with (default: the export's source)")
    co.add_argument("--corpus", default=None, help="corpus directory (default: the model's data.corpus_dir)")
    co.add_argument("--threads", type=int, default=1)
    co.add_argument("--method", default="greedy", choices=["greedy", "beam"],
                    help="sherpa-onnx exports: its modified_beam_search against our streaming beam search")
    co.add_argument("--beam", type=int, default=4, help="beam width (max_active_paths) with --method beam")
    co.set_defaults(func=_cmd_check_onnx)
    return p


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a full disk: one line, not a traceback


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = [u for u in unknown if u.startswith("--") and "=" in u]
    stray = [u for u in unknown if u not in overrides]
    if stray or (overrides and not getattr(args, "takes_overrides", False)):
        parser.error(f"unrecognised arguments: {' '.join(stray or overrides)}")
    try:
        if getattr(args, "takes_overrides", False):
            return int(args.func(args, overrides) or 0)
        return int(args.func(args) or 0)
    except FatalRunError as e:  # a run stopped by a fault (disk full, NaNs, OOM): last checkpoint usable
        print(f"omnisparse: error: {e}", file=sys.stderr)
        return 1
    except (UserError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"omnisparse: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        print(f"omnisparse: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("omnisparse: interrupted (checkpoints written so far are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
