"""Deployment speed: streaming real-time factor of the dense model and the searched sub-networks, in
PyTorch (plain masked weights, and the measured fast plan) and onnxruntime, fp32 and int8, at batch 1
on 1 thread; speed-up against the dense fp32 PyTorch model measured in the same run; WER on test-other.

The real run on the `small` model (after ``bench/omni_vs_individual.py`` has trained and searched
``exp/small/omni/supernet``; ~1 h on 2 idle cores with these bounds)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/inference_speed.py \\
        --supernet exp/small/omni/supernet --dense exp/small/dense \\
        --search-dir exp/small/omni/supernet/search --max-points 6 --test-subset 200 \\
        --out bench/results/inference_speed.json

Smoke test on tiny artefacts (seconds; never write those numbers to bench/results)::

    .venv/bin/python bench/inference_speed.py --supernet /tmp/x/supernet --dense /tmp/x/dense \\
        --search-dir /tmp/x/search --test-subset 8 --parity-utts 8 --out /tmp/x/inference_speed.json

Models: ``dense`` (``--dense``, a run directory) and up to ``--max-points`` sub-networks of the search's
Pareto front (``SEARCH_DIR/pareto.json``, evenly spread over its sizes, smallest and largest included;
a front searched on bytes or on latency both work), each exported from ``--supernet`` with
``export_subnet`` into ``--work-dir`` (default ``SEARCH_DIR/inference_speed``) in ``--export-format``
(fp32-sparse: the weights the supernet holds), plus any ``--exports`` directories. ``size_bytes`` is
the size in the search's storage format (``pareto.json["format"]``, e.g. int8-sparse).

Runtimes (``--runtimes``, ``--dtypes``), each streaming the audio one chunk at a time through the
same fbank front end and greedy search (``StreamingRecognizer`` / ``OnnxStreamingRecognizer``):

* ``pytorch``        the loaded model as is (pruned weights are zeros in dense matrices); int8: every
                     prunable Linear dynamically quantised (``optimize_for_cpu(kinds=["int8"])``, no
                     shrinking);
* ``pytorch-fast``   ``optimize_for_cpu(dtype=fp32|int8)``: FFN shrinking + per-Linear kind measured
                     here (plans saved in the work dir);
* ``onnxruntime``    ``export_onnx(compact="ffn", dtype=fp32|int8)`` run by onnxruntime on 1 thread;
* ``sherpa-onnx``    ``export_sherpa(compact="ffn", dtype=fp32|int8)`` run by ``sherpa_onnx.OnlineRecognizer``
                     on 1 thread (greedy; its own fbank). sherpa-onnx transducers have stateless
                     decoders: an LSTM predictor is exported over its last ``--pred-history`` tokens
                     (its parity is then against PyTorch decoding with the same window); without one
                     such a model is listed under ``skipped`` with the reason.

Per row: ``rtf`` = compute seconds / audio seconds over the first ``--test-subset`` test-other cuts
(audio decoding excluded, fbank included), ``speedup_vs_dense`` = rtf(dense, pytorch, fp32) / rtf,
``speedup_vs_dense_same_runtime`` = rtf(dense, same runtime, same dtype) / rtf (what the sparsity
itself buys in the runtime a user deploys with), ``ideal_speedup`` = 1 / (1 - s) with ``s`` the fraction of zero weights among the prunable matrices,
``wer_test_other`` from that row's own transcripts. Parity: the fp32 onnxruntime and sherpa-onnx
transcripts of every model against its fp32 PyTorch transcripts on the first ``--parity-utts`` dev cuts
(0 = whole dev).

Targets, recorded under ``targets``: ``speed`` = some sub-network whose test-other WER is
at most 2 % (relative) above the dense fp32 PyTorch WER runs at least 2x faster than it (any runtime /
dtype); ``speed_same_runtime`` = per int8 deployment runtime (onnxruntime, sherpa-onnx), some
sub-network within 2 % of the dense model's WER in that runtime runs >= 2x faster than the dense model
there; ``onnx_parity`` / ``sherpa_parity`` = that runtime's transcripts equal PyTorch's on the whole
dev set (only ``met`` when ``--parity-utts 0``). Writes ``--out`` (JSON: ``rows``, ``models``, ``targets``, settings,
``commit``, ``command``, ``machine``, ``date``) and a PNG of WER vs measured latency beside it.
Timings are only comparable within one run, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional
from pathlib import Path

import numpy as np
import torch

from omnisparse.decoding.evaluate import word_error_rate
from omnisparse.decoding.streaming import SHIFT, StreamingRecognizer, audio_rtf
from omnisparse.export.loading import load_model
from omnisparse.models.predictor import predictor_history
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result

RUNTIMES = ("pytorch", "pytorch-fast", "onnxruntime", "sherpa-onnx")
DTYPES = ("fp32", "int8")
WER_TOL = 0.02  # relative
SPEEDUP_TARGET = 2.0


def load_audio(corpus: Path, split: str, n: int) -> list[tuple[str, str, np.ndarray]]:
    """``[(id, normalised reference, samples)]`` of the first ``n`` cuts (0 = all) of ``split``."""
    from lhotse import load_manifest

    from omnisparse.data.layout import CorpusLayout
    from omnisparse.data.text import normalize_text

    path = CorpusLayout(corpus).cuts(split)
    if not path.exists():
        raise SystemExit(f"no {split!r} split in {corpus} ({path} missing; give --corpus)")
    cuts = list(load_manifest(path))
    cuts = cuts[:n] if n > 0 else cuts
    return [(c.id, normalize_text(" ".join(s.text or "" for s in c.supervisions)), c.load_audio()[0].astype(np.float32))
            for c in cuts]


def stream(make_recognizer, audio, step: int) -> tuple[list[str], float, float]:
    """Transcripts (in ``audio`` order), compute seconds and audio seconds of streaming every utterance
    at batch 1 on 1 thread (:func:`~omnisparse.decoding.streaming.audio_rtf`)."""
    r = audio_rtf(make_recognizer, [(str(i), x) for i, (_, _, x) in enumerate(audio)], step, threads=1)
    return list(r["hyps"].values()), r["compute_s"], r["audio_s"]


def prunable_sparsity(model) -> float:
    """Fraction of exact zeros among the weights of every prunable Linear."""
    zeros = total = 0
    for _, _, m in model.prunable_linears():
        w = m.effective_weight() if hasattr(m, "effective_weight") else m.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def pick(front: list[dict], k: int) -> list[dict]:
    """Up to ``k`` rows of ``front`` evenly spread by size, smallest and largest included."""
    rows = sorted(front, key=lambda r: r["size_bytes"])
    if k <= 0 or len(rows) <= k:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [rows[i] for i in idx]


def build_runtime(lm, runtime: str, dtype: str, work: Path, name: str, pred_history: int = 0):
    """``(factory of a fresh streaming recogniser, info)`` for one runtime / dtype of ``lm``
    (``pred_history``: the sherpa-onnx decoder window of an LSTM predictor)."""
    from omnisparse.deploy.fast import optimize_for_cpu, save_plan

    info: dict = {}
    if runtime == "onnxruntime":
        from omnisparse.deploy.onnx_export import export_onnx
        from omnisparse.deploy.onnx_runner import OnnxModel, OnnxStreamingRecognizer

        res = export_onnx(lm, work / "onnx" / f"{name}-{dtype}", dtype=dtype, overwrite=True)
        om = OnnxModel(res.path, threads=1)
        info["onnx_bytes"] = sum(b for n, b in res.files.items() if n.endswith(".onnx"))
        return (lambda: OnnxStreamingRecognizer(om)), info
    if runtime == "sherpa-onnx":
        from omnisparse.deploy.sherpa import export_sherpa
        from omnisparse.deploy.sherpa_run import SherpaStreamingRecognizer, sherpa_recognizer

        history = pred_history if lm.config.model.pred_type == "lstm" else 0
        res = export_sherpa(lm, work / "sherpa" / f"{name}-{dtype}", dtype=dtype, overwrite=True, pred_history=history)
        rec, meta = sherpa_recognizer(res.path, threads=1), res.metadata
        info["onnx_bytes"] = sum(b for n, b in res.files.items() if n.endswith(".onnx"))
        info["pred_history"] = history
        return (lambda: SherpaStreamingRecognizer(rec, meta)), info
    if runtime == "pytorch":
        model = lm.model if dtype == "fp32" else optimize_for_cpu(lm.model, kinds=["int8"], measure=False,
                                                                  ffn_shrink=False)[0]
    else:
        t0 = time.perf_counter()
        model, plan = optimize_for_cpu(lm.model, dtype=dtype, threads=1)
        save_plan(plan, work / "plans" / f"{name}-{dtype}.json")
        kinds: dict[str, int] = {}
        for e in plan["layers"].values():
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        info.update(plan_kinds=kinds, plan_s=round(time.perf_counter() - t0, 2),
                    encoder_step_us=plan.get("encoder_step_us"))
    model.eval()
    ms = lm.config.decode.max_symbols_per_frame
    return (lambda: StreamingRecognizer(model, lm.tokenizer, lm.normalizer, ms)), info


def plot(rows: list[dict], path: Path) -> None:
    with saved_figure(path, figsize=(7.5, 5)) as (fig, ax):
        markers = {"pytorch": "o", "pytorch-fast": "s", "onnxruntime": "^", "sherpa-onnx": "D"}
        for (rt, dt) in sorted({(r["runtime"], r["dtype"]) for r in rows}):
            sel = sorted((r for r in rows if r["runtime"] == rt and r["dtype"] == dt), key=lambda r: r["rtf"])
            ax.plot([r["rtf"] * 1000 for r in sel], [r["wer_test_other"] for r in sel], marker=markers.get(rt, "x"),
                    linestyle="none", fillstyle="full" if dt == "fp32" else "none", label=f"{rt} {dt}")
            for r in sel:
                if r["model"] == "dense":
                    ax.annotate("dense", (r["rtf"] * 1000, r["wer_test_other"]), fontsize=7)
        ax.set_xlabel("measured latency: compute ms per second of audio (streaming, batch 1, 1 thread)")
        ax.set_ylabel("WER test-other")
        ax.set_title("WER vs measured latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _pick_row(r: Optional[dict]) -> Optional[dict]:
    return None if r is None else {k: r[k] for k in ("model", "runtime", "dtype", "rtf", "speedup_vs_dense",
                                                     "speedup_vs_dense_same_runtime", "wer_test_other")}


def _parity(per_model: dict, whole_dev: bool) -> dict:
    equal = all(p["equal"] == p["utterances"] for p in per_model.values())
    return {"met": bool(per_model) and equal and whole_dev, "transcripts_equal": equal, "whole_dev": whole_dev,
            "per_model": per_model}


def targets(rows: list[dict], parity: dict[str, dict], parity_whole_dev: bool) -> dict:
    """``speed``: some sub-network within +2 % of the dense fp32 PyTorch WER at >= 2x its speed (any
    runtime); ``speed_same_runtime``: per int8 deployment runtime measured, some sub-network within +2 %
    of the dense model's WER *in that runtime* at >= 2x the dense model's speed there; parity of the
    ONNX runtimes' dev transcripts with PyTorch's."""
    dense = next(r for r in rows if r["model"] == "dense" and r["runtime"] == "pytorch" and r["dtype"] == "fp32")
    limit = dense["wer_test_other"] * (1 + WER_TOL)
    ok = [r for r in rows if r["model"] != "dense" and r["wer_test_other"] <= limit + 1e-12]
    fast = [r for r in ok if r["speedup_vs_dense"] >= SPEEDUP_TARGET]
    best = max(ok, key=lambda r: r["speedup_vs_dense"], default=None)
    same = {}
    for rt in ("onnxruntime", "sherpa-onnx"):
        d = next((r for r in rows if r["model"] == "dense" and r["runtime"] == rt and r["dtype"] == "int8"), None)
        if d is None:
            continue
        lim = d["wer_test_other"] * (1 + WER_TOL)
        cand = [r for r in rows if r["model"] != "dense" and r["runtime"] == rt and r["dtype"] == "int8"
                and r["wer_test_other"] <= lim + 1e-12]
        top = max(cand, key=lambda r: r["speedup_vs_dense_same_runtime"], default=None)
        same[f"{rt} int8"] = {"met": top is not None and top["speedup_vs_dense_same_runtime"] >= SPEEDUP_TARGET,
                              "dense_wer_test_other": d["wer_test_other"], "wer_limit": lim,
                              "best_within_wer_limit": _pick_row(top)}
    return {
        "speed": {"met": bool(fast), "dense_wer_test_other": dense["wer_test_other"], "wer_limit": limit,
                  "speedup_target": SPEEDUP_TARGET, "best_within_wer_limit": _pick_row(best),
                  "passing": [_pick_row(r) for r in fast]},
        "speed_same_runtime": same,
        "onnx_parity": _parity(parity.get("onnxruntime", {}), parity_whole_dev),
        "sherpa_parity": _parity(parity.get("sherpa-onnx", {}), parity_whole_dev),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", required=True, help="supernet run directory the sub-networks come from")
    ap.add_argument("--dense", required=True, help="dense run directory (the reference)")
    ap.add_argument("--search-dir", default=None, help="search output (default SUPERNET/search)")
    ap.add_argument("--exports", nargs="*", default=[], help="extra exported sub-network directories")
    ap.add_argument("--max-points", type=int, default=6, help="Pareto sub-networks to measure (0 = all)")
    ap.add_argument("--export-format", default="fp32-sparse")
    ap.add_argument("--work-dir", default=None, help="exports, ONNX files, plans (default SEARCH_DIR/inference_speed)")
    ap.add_argument("--corpus", default=None, help="corpus directory (default: the dense run's data.corpus_dir)")
    ap.add_argument("--test-split", default="test-other")
    ap.add_argument("--test-subset", type=int, default=0, help="first N test cuts (0 = all)")
    ap.add_argument("--parity-utts", type=int, default=0, help="dev cuts for ONNX parity (0 = whole dev)")
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    ap.add_argument("--pred-history", type=int, default=0,
                    help="sherpa-onnx: an LSTM predictor's decoder window in tokens (0 = skip such models there)")
    ap.add_argument("--out", default="bench/results/inference_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from omnisparse.export.format import ArtefactPricing
    from omnisparse.export.subnet import export_subnet
    from omnisparse.sparsity.space import SearchSpace

    search_dir = Path(args.search_dir) if args.search_dir else Path(args.supernet) / "search"
    work = Path(args.work_dir) if args.work_dir else search_dir / "inference_speed"
    pareto_path = search_dir / "pareto.json"
    if not pareto_path.exists() and not args.exports:
        raise SystemExit(f"{pareto_path} not found: run the search first (or give --exports)")
    pareto = json.loads(pareto_path.read_text()) if pareto_path.exists() else {}
    fmt = pareto.get("format", "int8-sparse")

    dense = load_model(args.dense)
    corpus = Path(args.corpus or dense.config.data.corpus_dir)
    models: list[dict] = [{"name": "dense", "lm": dense, "path": str(args.dense), "granularity": None,
                           "size_bytes": SearchSpace.from_sparsity_config(dense.model, dense.config.sparsity,
                                                                          ArtefactPricing.of(dense.model))
                           .size_bytes({}, fmt)}]
    for row in pick(pareto.get("front", []), args.max_points):
        name = f"pareto-{row['size_bytes'] / 1e6:.4f}MB"
        dest = work / "export" / name
        print(f"== export {name} -> {dest}", flush=True)
        export_subnet(args.supernet, row["config"], args.export_format, dest, overwrite=True,
                      extra_meta={"search_dev_wer": row.get("wer"), "search_size_bytes": row["size_bytes"]})
        models.append({"name": name, "path": str(dest), "size_bytes": row["size_bytes"], "search_row": row})
    for d in args.exports:
        models.append({"name": Path(d).name, "path": d, "size_bytes": None})
    for m in models[1:]:
        m["lm"] = load_model(m["path"])
        meta = m["lm"].export_meta or {}
        m["granularity"] = meta.get("granularity")
        if m["size_bytes"] is None:
            m["size_bytes"] = meta.get("size_bytes")
    for m in models:
        m["sparsity"] = round(prunable_sparsity(m["lm"].model), 6)

    test = load_audio(corpus, args.test_split, args.test_subset)
    onnx_runtimes = [rt for rt in ("onnxruntime", "sherpa-onnx") if rt in args.runtimes]
    dev = load_audio(corpus, "dev", args.parity_utts) if onnx_runtimes and "fp32" in args.dtypes else []
    refs = [r for _, r, _ in test]
    print(f"{len(models)} models, {len(test)} {args.test_split} utterances "
          f"({sum(len(x) for *_, x in test) / 16000:.0f} s), {len(dev)} dev utterances for ONNX parity", flush=True)

    rows, parity, skipped, dense_rtf = [], {rt: {} for rt in onnx_runtimes}, [], None
    dense_same: dict[tuple[str, str], float] = {}  # (runtime, dtype) -> the dense model's rtf there
    combos = [(rt, dt) for rt in RUNTIMES if rt in args.runtimes for dt in DTYPES if dt in args.dtypes]
    if ("pytorch", "fp32") not in combos:
        combos.insert(0, ("pytorch", "fp32"))  # the reference is always measured
    for m in models:
        lm = m["lm"]
        step = lm.model.encoder.frames_per_chunk * SHIFT
        dev_torch = None
        for rt, dt in combos:
            t0 = time.perf_counter()
            try:
                make, info = build_runtime(lm, rt, dt, work, m["name"], args.pred_history)
            except ValueError as e:  # what a runtime cannot run (sherpa-onnx: only stateless predictors)
                skipped.append({"model": m["name"], "runtime": rt, "dtype": dt, "reason": str(e)})
                print(f"{m['name']:>18} {rt:>12} {dt}: skipped: {e}", flush=True)
                continue
            build_s = time.perf_counter() - t0
            hyps, compute, audio_s = stream(make, test, step)
            rtf = compute / audio_s
            if m["name"] == "dense":
                dense_same[(rt, dt)] = rtf
                if (rt, dt) == ("pytorch", "fp32"):
                    dense_rtf = rtf
            wer = word_error_rate(refs, hyps)["wer"]
            s = m["sparsity"]
            row = {"model": m["name"], "size_bytes": m["size_bytes"], "size_format": fmt, "sparsity": s,
                   "granularity": m["granularity"], "runtime": rt, "dtype": dt, "rtf": round(rtf, 6),
                   "speedup_vs_dense": round(dense_rtf / rtf, 4),
                   "speedup_vs_dense_same_runtime": round(dense_same[(rt, dt)] / rtf, 4) if (rt, dt) in dense_same
                   else None, "ideal_speedup": round(1.0 / (1.0 - s), 4),
                   "wer_test_other": wer, "audio_s": round(audio_s, 2), "compute_s": round(compute, 3),
                   "build_s": round(build_s, 2), **info}
            rows.append(row)
            print(f"{m['name']:>18} {rt:>12} {dt}: rtf {rtf:.4f}  x{row['speedup_vs_dense']:.2f} "
                  f"(same runtime x{row['speedup_vs_dense_same_runtime'] or float('nan'):.2f}) "
                  f"(ideal x{row['ideal_speedup']:.2f})  WER {wer:.4f}", flush=True)
            if dev and dt == "fp32" and rt in ("pytorch", *onnx_runtimes):
                texts, _, _ = stream(make, dev, step)
                if rt == "pytorch":
                    dev_torch = {0: texts}
                    if args.pred_history and lm.config.model.pred_type == "lstm" and "sherpa-onnx" in onnx_runtimes:
                        with predictor_history(lm.model.predictor, args.pred_history):  # what sherpa computes
                            dev_torch[args.pred_history] = stream(make, dev, step)[0]
                else:
                    equal = sum(a == b for a, b in zip(dev_torch[info.get("pred_history", 0)], texts))
                    parity[rt][m["name"]] = {"utterances": len(texts), "equal": equal}
                    print(f"{m['name']:>18} {rt} parity on dev: {equal}/{len(texts)} transcripts equal", flush=True)

    out = Path(args.out)
    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, png)
    tg = targets(rows, parity, parity_whole_dev=args.parity_utts == 0)
    payload = {
        "rows": rows, "skipped": skipped, "targets": tg, "met": tg["speed"]["met"] and tg["onnx_parity"]["met"],
        "models": [{k: v for k, v in m.items() if k != "lm"} for m in models],
        "settings": {"test_split": args.test_split, "test_utterances": len(test), "parity_dev_utterances": len(dev),
                     "threads": 1, "batch": 1, "search_dir": str(search_dir), "size_format": fmt,
                     "export_format": args.export_format, "search_cost_key": pareto.get("cost_key", "bytes"),
                     "sherpa_pred_history": args.pred_history},
        "plot": str(png),
    }
    write_result(out, payload, command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]))
    print(f"speed target {'MET' if tg['speed']['met'] else 'not met'}: best within +{WER_TOL:.0%} WER "
          f"{tg['speed']['best_within_wer_limit']}")
    for key, v in tg["speed_same_runtime"].items():
        print(f"same-runtime speed ({key}) {'MET' if v['met'] else 'not met'}: {v['best_within_wer_limit']}")
    for key in ("onnx_parity", "sherpa_parity"):
        print(f"{key} {'MET' if tg[key]['met'] else 'not met'}: {tg[key]['per_model']}")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
