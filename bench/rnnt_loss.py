"""Benchmark the RNN-T loss: warprnnt-numba vs omnisparse's loss (plain, float64, fused joiner path).

Usage:  .venv/bin/python bench/rnnt_loss.py [--out bench/results/rnnt_loss.json] [--repeats N]

For each shape (B, T, U, V) and in the same process, times forward+backward (median of --repeats
after --warmup runs; wall clock and process CPU time) of

* ``warprnnt_numba``: ``RNNTLossNumba(blank=0, reduction="mean", clamp=-1)`` fed the logits (on CPU
  it applies ``log_softmax`` itself, then runs its forward-backward; version 0.4.1's CPU path is
  plain Python loops over tensor elements, so it gets --warp-repeats runs, no warm-up);
* ``rnnt_loss`` float32 and float64 (default recursion ``alphabeta``), and float32 with the
  autograd recursions ``time`` and ``diagonal``;
* "joiner+loss": ``tanh(enc[:, :, None] + pred[:, None]) @ W.T + b`` then ``rnnt_loss`` (plain), vs
  ``rnnt_loss_from_joiner`` (fused, chunked), both including the joiner matmuls, J = --joiner-dim.

Timings are taken at torch's default thread count (the machine's cores) and again at 1 thread
(--no-single-thread skips it); rounds are interleaved across variants, so load from other
processes hits them alike. Peak memory: each (shape, variant) is re-run once in a fresh
subprocess; reported is the growth of the resident set's high-water mark (``VmHWM``, reset after
the inputs exist and one small warm-up step ran) during one forward+backward, next to the
theoretical bytes of one copy of the joint and of the fused path's per-chunk temporaries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

from omnisparse.losses.rnnt import fused_chunk_bytes, joint_bytes, rnnt_loss, rnnt_loss_from_joiner
from omnisparse.utils.provenance import write_result

SHAPES = [(8, 100, 20, 256), (16, 50, 25, 256), (8, 100, 20, 500)]
VARIANTS = ["warprnnt_numba", "ours_f32", "ours_f64", "ours_f32_time_autograd", "ours_f32_diagonal_autograd",
            "joiner+loss_plain", "joiner+loss_fused"]


def make_inputs(B, T, U, V, J, seed=0):
    g = torch.Generator().manual_seed(seed)
    tl = torch.randint(T // 2, T + 1, (B,), generator=g)
    ul = torch.randint(U // 2, U + 1, (B,), generator=g)
    tl[0], ul[0] = T, U  # warprnnt-numba requires T == max(tl), U == max(ul)
    targets = torch.randint(1, V, (B, U), generator=g)
    logits = torch.randn(B, T, U + 1, V, generator=g)
    enc = torch.randn(B, T, J, generator=g)
    pred = torch.randn(B, U + 1, J, generator=g)
    w = torch.randn(V, J, generator=g) / J ** 0.5
    b = torch.zeros(V)
    return dict(logits=logits, targets=targets, tl=tl, ul=ul, enc=enc, pred=pred, w=w, b=b)


def make_step(variant: str, x: dict, chunk_frames: int):
    """A closure running one forward+backward of ``variant`` on fresh leaf tensors."""
    tl, ul, targets = x["tl"], x["ul"], x["targets"]
    if variant == "warprnnt_numba":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from warprnnt_numba.rnnt_loss.rnnt_pytorch import RNNTLossNumba
        fn = RNNTLossNumba(blank=0, reduction="mean", fastemit_lambda=0.0, clamp=-1)
        t32, tl32, ul32 = targets.to(torch.int32), tl.to(torch.int32), ul.to(torch.int32)

        def step():
            logits = x["logits"].clone().requires_grad_(True)
            fn(logits, t32, tl32, ul32).sum().backward()
        return step
    if variant.startswith("ours_"):
        dtype = torch.float64 if variant == "ours_f64" else torch.float32
        recursion = {"ours_f32_time_autograd": "time", "ours_f32_diagonal_autograd": "diagonal"}.get(variant, "alphabeta")

        def step():
            logits = x["logits"].clone().requires_grad_(True)
            rnnt_loss(logits, targets, tl, ul, dtype=dtype, recursion=recursion).backward()
        return step

    def leaves():
        return [x[k].clone().requires_grad_(True) for k in ("enc", "pred", "w", "b")]
    if variant == "joiner+loss_plain":
        def step():
            enc, pred, w, b = leaves()
            logits = torch.tanh(enc[:, :, None, :] + pred[:, None, :, :]) @ w.t() + b
            rnnt_loss(logits, targets, tl, ul).backward()
        return step
    if variant == "joiner+loss_fused":
        def step():
            enc, pred, w, b = leaves()
            rnnt_loss_from_joiner(enc, pred, w, b, targets, tl, ul, chunk_frames=chunk_frames).backward()
        return step
    raise ValueError(variant)


def time_steps(steps: dict, repeats: int, warmup: int) -> dict:
    """Median/min wall and median CPU time per step; rounds are interleaved across the steps so
    that load from other processes hits every variant alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"median_ms": 1e3 * statistics.median(wall[k]), "min_ms": 1e3 * min(wall[k]),
                "cpu_median_ms": 1e3 * statistics.median(cpu[k]), "repeats": repeats, "warmup": warmup}
            for k in steps}


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mem_probe(variant: str, B: int, T: int, U: int, V: int, J: int, chunk_frames: int) -> dict:
    """(in a fresh process) peak RSS growth of one forward+backward over the inputs' baseline.

    The baseline is the resident set once the inputs exist and the step's imports are done; the
    high-water mark is reset there (so import-time peaks do not hide the step's own), after one
    small warm-up step (so first-use code pages do not count)."""
    x = make_inputs(B, T, U, V, J)
    step = make_step(variant, x, chunk_frames)
    # page in the code paths (BLAS kernels, autograd engine) on a small input of the same V and J
    make_step(variant, make_inputs(2, 4, 2, V, J), chunk_frames)()
    if _reset_peak_rss() and _status_kib("VmHWM") is not None:
        base = _status_kib("VmRSS")
        step()
        return {"peak_rss_delta_bytes": 1024 * (_status_kib("VmHWM") - base), "method": "VmHWM-VmRSS"}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return {"peak_rss_delta_bytes": 1024 * (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base),
            "method": "ru_maxrss (lower bound: import peaks may hide it)"}


def run_mem_probe(variant, shape, J, chunk_frames, threads) -> int | None:
    cmd = [sys.executable, __file__, "--mem-probe", variant, *map(str, shape), "--joiner-dim", str(J),
           "--chunk-frames", str(chunk_frames), "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
        return int(json.loads(out.strip().splitlines()[-1])["peak_rss_delta_bytes"])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        print(f"  memory probe failed for {variant} {shape}: {e}", file=sys.stderr)
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/rnnt_loss.json")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--warp-repeats", type=int, default=1, help="warprnnt-numba's CPU path takes seconds per call")
    ap.add_argument("--joiner-dim", type=int, default=256)
    ap.add_argument("--chunk-frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--no-single-thread", action="store_true",
                    help="skip the extra pass at 1 torch thread (less sensitive to other load on a small box)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant subprocess memory probes")
    ap.add_argument("--shapes", default=None, help="e.g. 8x100x20x256,16x50x25x256 (B x T x U x V)")
    ap.add_argument("--mem-probe", nargs=5, metavar=("VARIANT", "B", "T", "U", "V"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.mem_probe:
        v, *dims = args.mem_probe
        print(json.dumps(mem_probe(v, *map(int, dims), args.joiner_dim, args.chunk_frames)))
        return 0

    shapes = SHAPES if not args.shapes else [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    thread_counts = [threads] + ([1] if threads > 1 and not args.no_single_thread else [])
    J, ch = args.joiner_dim, args.chunk_frames
    # import + first-call costs out of the way
    make_step("warprnnt_numba", make_inputs(1, 2, 1, 3, 4), ch)()
    load_before = os.getloadavg()
    rows = []
    for shape in shapes:
        B, T, U, V = shape
        x = make_inputs(B, T, U, V, J)
        # warprnnt-numba's CPU path is single-threaded Python: timed once per shape, reused for both thread counts
        warp_t = time_steps({"warprnnt_numba": make_step("warprnnt_numba", x, ch)}, args.warp_repeats, 0)
        mems = {}
        for nth in thread_counts:
            torch.set_num_threads(nth)
            timings = dict(warp_t)
            timings.update(time_steps({v: make_step(v, x, ch) for v in VARIANTS[1:]}, args.repeats, args.warmup))
            warp = timings["warprnnt_numba"]["median_ms"]
            for variant in VARIANTS:
                tm = timings[variant]
                print(f"{shape} threads={nth} {variant:28s} median {tm['median_ms']:9.1f} ms "
                      f"(min {tm['min_ms']:.1f}, cpu {tm['cpu_median_ms']:.1f}) x{warp / tm['median_ms']:.1f} vs warp",
                      flush=True)
                if variant not in mems:
                    mems[variant] = None if args.no_memory else run_mem_probe(variant, shape, J, ch, threads)
                rows.append({
                    "B": B, "T": T, "U": U, "V": V, "J": J if variant.startswith("joiner") else None,
                    "variant": variant, "torch_threads": nth,
                    "chunk_frames": ch if variant == "joiner+loss_fused" else None,
                    **tm,
                    "speedup_vs_warprnnt_numba": warp / tm["median_ms"],
                    "peak_rss_delta_bytes": mems[variant],
                    "joint_bytes_one_copy": joint_bytes(B, T, U, V),
                    "fused_chunk_bytes": fused_chunk_bytes(B, ch, U, V, J) if variant == "joiner+loss_fused" else None,
                })
        torch.set_num_threads(threads)
    payload = {
        "benchmark": "rnnt_loss forward+backward",
        "units": {"time": "ms (median wall of repeats after warm-up; cpu = process CPU time)",
                  "memory": ("bytes: peak resident-set growth of one forward+backward over the inputs' baseline "
                             "(VmHWM after resetting it, fresh process per shape x variant)")},
        "torch_threads": threads,
        "thread_counts": thread_counts,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "notes": ("warprnnt-numba 0.4.1 on CPU: pure-Python loops over tensor elements (numba only for CUDA), "
                  "fed logits (it log-softmaxes internally on CPU), int32 labels/lengths, reduction='mean' = "
                  "sum/B; it is an oracle, not a speed baseline; timed once per shape (--warp-repeats) and the same "
                  "figure is used for both thread counts. joiner+loss rows include the joiner "
                  "(tanh(enc+pred) @ W.T + b) forward and backward."),
        "rows": rows,
    }
    cmd = " ".join(["bench/rnnt_loss.py", *(argv if argv is not None else sys.argv[1:])])
    write_result(args.out, payload, command=cmd)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
