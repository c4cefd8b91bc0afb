"""Fast CPU execution of a (sparse) sub-network in PyTorch: one execution kind per Linear, chosen by timing.

Every :class:`PrunableLinear` of a model (an exported sub-network loaded with ``load_model``: pruned
weights are exact zeros; or any Transducer, masks baked in) is replaced by the module of one execution
kind of :mod:`omnisparse.deploy.kinds`: ``dense`` (the reference), ``sparse-csr``, ``sparse-bsr``,
``row-compact`` (only the nonzero rows are multiplied), ``int8`` or ``row-compact-int8`` (dynamic
quantisation: not exact, see below).

Feed-forward shrinking (``ffn_shrink=True``, exact, structural, applied before the choice): in a
:class:`FeedForward`, a pruned row ``j`` of ``w1`` makes hidden unit ``j`` the constant
``act(b1[j])``, so ``w2 @ h = w2[:, kept] @ h[kept] + w2[:, pruned] @ act(b1[pruned])``: ``w1`` loses
its pruned rows, ``w2`` the matching columns, and the constant goes into ``w2``'s bias. The hidden
size really shrinks; both smaller Linears then get their kind chosen like every other one.

How a kind is chosen (:func:`optimize_for_cpu` with ``measure=True``): one streaming step of the model
(``Encoder.infer`` on two chunks, greedy decoding of the result) records the input each Linear really
receives at batch 1 (``C`` or ``C + R`` frames for encoder Linears, one row for the predictor and the
joiner step); each candidate kind is built, checked against the dense output, and timed on that input
on ``threads`` threads (:mod:`omnisparse.deploy.timing`). ``cache="cold"`` (default) reads a buffer
as large as the whole model before every timed call (in a streaming step every other weight is
touched between two uses of a layer's weights) and takes the median of ``repeats + 2`` single calls;
``cache="hot"`` times ``inner`` back-to-back calls, ``repeats`` times. A non-dense kind is chosen
only when it beats dense by more than ``margin`` (relative). Kinds that torch cannot run for a shape
(e.g. BSR when no block size divides it) are skipped and recorded with the reason. The plan also holds the time of one whole
streaming encoder step before and after (``encoder_step_us``), the check that per-layer choices add
up. It is plain JSON (:func:`save_plan` / :func:`load_plan`) and can be re-applied without timing
(``optimize_for_cpu(model, plan=...)``), as long as the weights are the same sub-network.

What it finds here (2-core CPU, 1 thread, torch 2.13): at the `tiny` and `small` sizes (d_model 32
and 144, 4-5 frames per chunk) dense wins nearly every Linear: the index copy of ``row-compact``, the
sparse-matmul setup and the per-call activation quantisation of int8 each cost more than the
multiply they save (144 x 144: dense 10 us hot / 17 us cold per call, int8 about twice that,
row-compact at 70 % about twice that, CSR / BSR 3-6x). What does pay off is
exact structure: feed-forward shrinking took one streaming encoder step of a `small`-sized model with
70 %-sparse rows from 4.8 ms to 4.0 ms. Larger matrices (d_model >= 256) move the balance toward the
other kinds; the measurement decides per machine.

Data type (``dtype``): ``"fp32"`` (default) chooses among the fp32 kinds (plus the int8 ones as timed
candidates with ``int8=True``). ``"int8"`` combines int8 with sparsity: every Linear that stays dense
becomes ``int8`` and every row-compacted one ``row-compact-int8`` (dynamic quantisation of the
physically smaller matrix, after feed-forward shrinking); ``sparse-csr`` / ``sparse-bsr`` stay fp32
(torch has no int8 sparse matmul) and are chosen only when measured faster than ``int8`` by ``margin``.
Without timing (``measure=False``): ``row-compact-int8`` where a weight has all-zero rows, else ``int8``.

Exactness: the fp32 kinds give the unoptimised model's outputs to float rounding (tests: 1e-5).
The int8 kinds quantise weights (per tensor) and activations (per call) to 8 bits: on the tiny test
model with random weights the encoder output moves by ~0.02 (LayerNorm-scaled outputs), the
frame-wise joiner argmax agrees on ~97 % of frames and greedy transcripts differ by ~4 % of characters
(one flipped near-tie changes the rest of a greedy path); on the trained tiny model the transcripts
are the same. Check a real model on its dev set before shipping int8.

The optimised model keeps ``infer`` / ``init_stream_state`` / ``predictor.step`` / ``joiner`` as they
were (only Linear submodules are swapped), so ``StreamingRecognizer`` and ``greedy_search`` run it
unchanged. It is inference only (no gradients through sparse or quantised weights).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnisparse.deploy.kinds import FP32_KINDS, INT8_DTYPE_KINDS, INT8_KINDS, KINDS, bsr_block, build_kind
from omnisparse.deploy.timing import flush_buffer, time_call, time_encoder_step
from omnisparse.io.atomic import atomic_write_text
from omnisparse.models.encoder import FeedForward
from omnisparse.models.layers import PrunableLinear

PLAN_KIND = "omnisparse-cpu-plan"
PLAN_VERSION = 1
DTYPES = ("fp32", "int8")


# ---------------------------------------------------------------------------------------------- model surgery
def _linear_targets(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: PrunableLinear}`` in ``named_modules`` order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PrunableLinear)}


def _weight_bias(m: nn.Module) -> tuple[Tensor, Optional[Tensor]]:
    w = m.effective_weight() if isinstance(m, PrunableLinear) else m.weight
    return w.detach().float(), (None if m.bias is None else m.bias.detach().float())


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def shrink_ffns(model: nn.Module) -> dict[str, dict[str, int]]:
    """In place: every :class:`FeedForward` whose ``w1`` has all-zero rows loses those hidden units
    (see the module docstring). ``w1`` / ``w2`` stay :class:`PrunableLinear` (masks baked in) so that
    the kind choice sees them. Returns ``{ffn module name: {"hidden": before, "kept": after}}``."""
    out = {}
    for name, ffn in list(model.named_modules()):
        if not isinstance(ffn, FeedForward) or not isinstance(ffn.w1, PrunableLinear) \
                or not isinstance(ffn.w2, PrunableLinear):
            continue
        w1, b1 = _weight_bias(ffn.w1)
        w2, b2 = _weight_bias(ffn.w2)
        zero = (w1 == 0).all(dim=1)
        if not bool(zero.any()):
            continue
        kept, pruned = (~zero).nonzero().flatten(), zero.nonzero().flatten()
        b1 = b1 if b1 is not None else w1.new_zeros(w1.shape[0])
        with torch.no_grad():
            const = ffn.act(b1[pruned])  # (p,) the constant hidden units
            new_b2 = (b2 if b2 is not None else w2.new_zeros(w2.shape[0])) + w2[:, pruned] @ const
            n1 = PrunableLinear(w1.shape[1], kept.numel())
            n1.weight.copy_(w1[kept])
            n1.bias.copy_(b1[kept])
            n2 = PrunableLinear(kept.numel(), w2.shape[0])
            n2.weight.copy_(w2[:, kept])
            n2.bias.copy_(new_b2)
        ffn.w1, ffn.w2 = n1.eval(), n2.eval()
        out[name] = {"hidden": int(w1.shape[0]), "kept": int(kept.numel())}
    return out


@torch.no_grad()
def capture_inputs(model: nn.Module) -> dict[str, Tensor]:
    """The input each PrunableLinear of a Transducer receives in one batch-1 streaming step: the encoder
    on two chunks of random features (``Encoder.infer``), then greedy decoding of its output.
    ``{module name: input (..., in_features)}`` (the last call's input)."""
    from omnisparse.decoding.greedy import greedy_step_frames, init_greedy

    seen: dict[str, Tensor] = {}
    handles = []
    for name, m in _linear_targets(model).items():
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, name=name: seen.__setitem__(name, args[0].detach().clone())))
    try:
        enc_mod = model.encoder
        frames = (2 * enc_mod.chunk_size + enc_mod.lookahead) * enc_mod.subsampling_factor
        gen = torch.Generator().manual_seed(0)
        p = next(model.parameters())
        feats = torch.randn(1, frames, enc_mod.subsampling.feat_dim, generator=gen).to(p)
        enc, _ = model.infer(feats, model.init_stream_state(1))
        gs = init_greedy(model, 1, p.device)
        if enc.shape[1]:
            greedy_step_frames(model, enc, gs, max_symbols=1)
    finally:
        for h in handles:
            h.remove()
    return seen


def _candidate_kinds(kinds: Optional[Sequence[str]], int8: bool) -> list[str]:
    if kinds is None:
        return list(FP32_KINDS + (INT8_KINDS if int8 else ()))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown execution kind(s) {bad}; expected some of {KINDS}")
    return list(dict.fromkeys(kinds))


# ---------------------------------------------------------------------------------------------- the optimiser
def optimize_for_cpu(model: nn.Module, plan: Mapping[str, Any] | str | os.PathLike | None = None,
                     int8: bool = False, measure: bool = True, kinds: Optional[Sequence[str]] = None,
                     ffn_shrink: bool = True, threads: int = 1, repeats: int = 5, inner: int = 10,
                     margin: float = 0.05, cache: str = "cold", inplace: bool = False, dtype: str = "fp32"
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """Replace every PrunableLinear of ``model`` (a Transducer) by its fastest execution kind.

    ``plan``: a plan (dict or JSON path) from an earlier call: its kinds are applied without timing
    (ValueError when a layer or shape does not match this model; a kind torch cannot build here falls
    back to dense, noted under ``fallback``). Otherwise the kinds are chosen among ``kinds`` (default:
    the fp32 kinds, plus the int8 ones when ``int8``): by timing when ``measure`` (see the module
    docstring; ``threads``, ``repeats``, ``inner``, ``margin``), else by :func:`rule_order` (the first
    of ``kinds`` in the given order that applies to the layer; by default ``row-compact`` where a weight
    has all-zero rows, int8 when ``int8``, else dense).
    ``ffn_shrink``: shrink feed-forward hidden sizes first (exact). ``inplace=False`` works on a deep
    copy. ``dtype``: ``"fp32"`` or ``"int8"`` (int8 combined with sparsity, see the module docstring;
    default candidates :data:`INT8_DTYPE_KINDS`, reference kind ``int8``). Returns ``(optimised model in
    eval mode, plan)``.
    """
    if cache not in ("cold", "hot"):
        raise ValueError(f"cache must be 'cold' or 'hot', got {cache!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "int8":
        int8 = True
        if kinds is None:
            kinds = list(INT8_DTYPE_KINDS)
    if plan is not None and not isinstance(plan, Mapping):
        plan = load_plan(plan)
    if plan is not None:
        check_plan(plan)
        ffn_shrink = bool(plan.get("ffn_shrink", True))
    model = model if inplace else copy.deepcopy(model)
    model.cpu().eval()
    if not _linear_targets(model):
        raise ValueError("the model has no PrunableLinear left (already optimised?)")
    measuring = plan is None and measure
    step_before = time_encoder_step(model, threads, repeats, inner) if measuring else None
    ffn = shrink_ffns(model) if ffn_shrink else {}
    if plan is not None:
        want = {k: v["kept"] for k, v in plan.get("ffn", {}).items()}
        if want != {k: v["kept"] for k, v in ffn.items()}:
            raise ValueError("plan does not match this model: feed-forward shrinking differs "
                             f"(plan {want}, model {ffn})")
    targets = _linear_targets(model)
    allowed = _candidate_kinds(kinds, int8)
    inputs = capture_inputs(model) if measuring else {}
    flush = flush_buffer(model) if measuring and cache == "cold" else None
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    layers: dict[str, dict[str, Any]] = {}
    try:
        for name, m in targets.items():
            w, b = _weight_bias(m)
            entry: dict[str, Any] = {
                "shape": [int(w.shape[0]), int(w.shape[1])],
                "density": round(float((w != 0).float().mean()), 6),
                "zero_rows": int((w == 0).all(dim=1).sum()),
            }
            if plan is not None:
                entry = _apply_planned(name, w, b, plan, entry)
                new = entry.pop("_module")
            elif measure:
                new, entry = _choose_by_timing(w, b, inputs.get(name), allowed, entry, repeats, inner, margin, flush,
                                               base="int8" if dtype == "int8" else "dense")
            else:
                order = rule_order(None, True) if dtype == "int8" else rule_order(kinds, int8)
                new, entry = _choose_by_rule(w, b, order, entry)
            _set_module(model, name, new.eval())
            layers[name] = entry
    finally:
        torch.set_num_threads(saved_threads)
    out_plan = {
        "kind": PLAN_KIND, "version": PLAN_VERSION, "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "threads": threads, "repeats": repeats, "inner": inner, "margin": margin, "cache": cache,
        "measured": plan is None and measure, "int8": bool(int8) if plan is None else plan.get("int8", False),
        "dtype": dtype if plan is None else plan.get("dtype", "int8" if plan.get("int8") else "fp32"),
        "kinds": allowed if plan is None else plan.get("kinds"),
        "ffn_shrink": ffn_shrink, "ffn": ffn, "layers": layers,
    }
    if plan is not None:
        out_plan.update({k: plan[k] for k in ("threads", "repeats", "inner", "margin", "cache", "measured")
                         if k in plan})
    timed = [e for e in layers.values() if e.get("times_us")]
    if timed:
        out_plan["total_us"] = {
            "dense": round(sum(e["times_us"]["dense"] for e in timed), 3),
            "chosen": round(sum(e["times_us"][e["kind"]] for e in timed), 3)}
    if step_before is not None:
        out_plan["encoder_step_us"] = {"unoptimised": round(step_before, 3),
                                       "optimised": round(time_encoder_step(model, threads, repeats, inner), 3)}
    return model, out_plan


def _choose_by_timing(w: Tensor, b: Optional[Tensor], x: Optional[Tensor], allowed: Sequence[str],
                      entry: dict[str, Any], repeats: int, inner: int, margin: float, flush: Optional[Tensor],
                      base: str = "dense") -> tuple[nn.Module, dict[str, Any]]:
    """Time ``dense`` (always, as the reference of the check and the report) and every kind of
    ``allowed``; the choice is ``base`` (when allowed and built) unless another allowed kind is more
    than ``margin`` faster than it."""
    if x is None:
        x = torch.randn(1, w.shape[1], generator=torch.Generator().manual_seed(0))
    x = x.detach().float().cpu()
    entry["input_shape"] = list(x.shape)
    ref = F.linear(x, w, b)
    modules: dict[str, nn.Module] = {"dense": build_kind("dense", w, b)}
    times: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    for kind in ["dense"] + [k for k in allowed if k != "dense"]:
        try:
            mod = modules.get(kind) or build_kind(kind, w, b)
            with torch.no_grad():
                y = mod(x)
            tol = 1e-4 if kind in FP32_KINDS else 0.1 * float(ref.abs().max()) + 1e-3
            if y.shape != ref.shape or not bool(torch.isfinite(y).all()) or float((y - ref).abs().max()) > tol:
                raise RuntimeError(f"wrong result (max abs diff {float((y - ref).abs().max()):.3g})")
        except (RuntimeError, ValueError, NotImplementedError) as e:
            if kind != "dense":
                unavailable[kind] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            continue
        modules[kind] = mod
        times[kind] = round(time_call(mod, x, repeats, inner, flush), 3)
    ref_kind = base if base in allowed and base in times else ("dense" if "dense" in allowed else None)
    choice = ref_kind
    for kind, t in times.items():
        if kind not in allowed:
            continue
        if choice is None:
            choice = kind
            continue
        bar = times[ref_kind] * (1.0 - margin) if ref_kind is not None and kind != ref_kind else math.inf
        if t < bar and t < times[choice]:
            choice = kind
    choice = choice or "dense"
    entry.update(kind=choice, times_us=times, unavailable=unavailable)
    if "sparse-bsr" in times:
        entry["bsr_block"] = bsr_block(w.shape)
    return modules[choice], entry


def rule_order(kinds: Optional[Sequence[str]], int8: bool) -> list[str]:
    """Kinds tried in order without timing: ``kinds`` as given, or by default ``row-compact`` (then
    ``int8`` when ``int8``), each only where it applies; dense last."""
    if kinds is not None:
        return _candidate_kinds(kinds, int8) + ["dense"]
    return (["row-compact-int8", "row-compact", "int8"] if int8 else ["row-compact"]) + ["dense"]


def _choose_by_rule(w: Tensor, b: Optional[Tensor], order: Sequence[str], entry: dict[str, Any]
                    ) -> tuple[nn.Module, dict[str, Any]]:
    for kind in order:
        try:
            mod = build_kind(kind, w, b)
        except (RuntimeError, ValueError, NotImplementedError):
            continue
        entry.update(kind=kind, times_us={}, unavailable={})
        return mod, entry
    raise AssertionError("unreachable: dense always builds")


def _apply_planned(name: str, w: Tensor, b: Optional[Tensor], plan: Mapping[str, Any],
                   entry: dict[str, Any]) -> dict[str, Any]:
    planned = plan["layers"].get(name)
    if planned is None:
        raise ValueError(f"plan does not match this model: no entry for {name}")
    if list(planned.get("shape", [])) != entry["shape"] or planned.get("zero_rows") != entry["zero_rows"]:
        raise ValueError(f"plan does not match this model: {name} is {entry['shape']} with "
                         f"{entry['zero_rows']} zero rows, the plan says {planned.get('shape')} with "
                         f"{planned.get('zero_rows')}")
    out = dict(planned)
    try:
        out["_module"] = build_kind(planned["kind"], w, b)
    except (RuntimeError, ValueError, NotImplementedError) as e:
        out["fallback"] = {"from": planned["kind"], "reason": str(e).splitlines()[0][:200]}
        out["kind"] = "dense"
        out["_module"] = build_kind("dense", w, b)
    return out


# ---------------------------------------------------------------------------------------------- plans on disk
def check_plan(plan: Mapping[str, Any]) -> None:
    """ValueError unless ``plan`` looks like a plan of this version."""
    if not isinstance(plan, Mapping) or plan.get("kind") != PLAN_KIND:
        raise ValueError(f"not an omnisparse CPU plan (expected \"kind\": \"{PLAN_KIND}\")")
    if plan.get("version") != PLAN_VERSION:
        raise ValueError(f"unsupported CPU plan version {plan.get('version')!r} (expected {PLAN_VERSION})")
    layers = plan.get("layers")
    if not isinstance(layers, Mapping) or not all(isinstance(e, Mapping) and e.get("kind") in KINDS
                                                  for e in layers.values()):
        raise ValueError(f"CPU plan: 'layers' must map module names to entries with a kind in {KINDS}")


def save_plan(plan: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``plan`` as indented JSON (atomic: temporary file + rename, no fsync). Returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(plan, indent=2, sort_keys=True) + "\n", fsync=False)
    return path


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a plan written by :func:`save_plan`."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable CPU plan ({e})") from None
    check_plan(plan)
    return plan


def summarize_plan(plan: Mapping[str, Any]) -> str:
    """One line per layer: name, shape, density, kind, measured times (for the CLI / logs)."""
    lines = []
    for name, e in plan["layers"].items():
        times = " ".join(f"{k}={v:.1f}" for k, v in e.get("times_us", {}).items())
        lines.append(f"{name:40s} {e['shape'][0]:5d}x{e['shape'][1]:<5d} density {e['density']:.2f} "
                     f"-> {e['kind']:16s} {times}")
    if "total_us" in plan:
        t = plan["total_us"]
        lines.append(f"Linears per step: dense {t['dense']:.1f} us, chosen {t['chosen']:.1f} us")
    return "\n".join(lines)
