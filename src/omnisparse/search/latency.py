"""Measured per-layer latency table of a model on this machine, and the latency cost of a sub-network.

The table (:func:`measure_latency_table`) holds, for every gene of a :class:`SearchSpace` and every
value ``s`` of its sparsity grid, the time the gene's Linears take in ONE streaming step at batch 1 on
``threads`` (default 1) threads: the encoder's ``infer`` on one chunk (``chunk_size * subsampling``
fbank frames, state primed with the first chunk) followed by greedy decoding of its frames (joiner per
frame, predictor per emitted token), exactly what :class:`StreamingRecognizer` runs per chunk.

How a cell ``(gene, s)`` is measured: the gene's weights get their magnitude masks at ``s`` (the
space's granularity, ranked from the model's weights); a ``ffn`` gene is first shrunk exactly as
:func:`omnisparse.deploy.fast.shrink_ffns` does (pruned hidden units removed); every resulting Linear is
built in each execution kind of :mod:`omnisparse.deploy.kinds` (``dense``, ``sparse-csr``,
``sparse-bsr``, ``row-compact``, ``int8``, ``row-compact-int8``; kinds torch cannot run for a shape are
recorded as unavailable) and timed on the input it really receives in that step (captured by hooks),
cold cache (a model-sized buffer read before every call, median, as ``optimize_for_cpu``), times the
number of calls it gets per step. The cell's latency is the sum over its Linears of the fastest kind
allowed for the table's ``dtype`` (``fp32``: the fp32 kinds; ``int8``: ``int8``, ``row-compact-int8``,
CSR, BSR); every kind's time is recorded. The *fixed part* (subsampling, LayerNorms, attention
arithmetic, depthwise convs, caches, the non-prunable predictor, Python overhead) is measured as the
whole step of the dense model minus the sum of its dense cells (clamped at 0; the raw difference is
kept). So ``latency(config) = fixed + sum over genes of cell(gene, config[gene])`` in microseconds per
streaming step (one chunk of ``chunk_ms`` of audio; ``latency / chunk_ms`` estimates the real-time
factor). ``validation`` (optional) compares the prediction with a measured step of the sparsest uniform
sub-network run through ``optimize_for_cpu``.

Units: microseconds (``*_us``), milliseconds (``*_ms``). The table is plain JSON, written next to the
search output (``latency_table.json``) and cached in ``cache_dir`` under a key of the machine (CPU
model, architecture, torch version and quantised engine, threads) and the model's dimensions
(model config, genes, grid, granularity, block, kinds, dtype, timing settings): a search of another
supernet with the same dimensions on the same machine reuses it (:func:`load_or_measure`).
Timings are noisy on a busy machine; nothing asserts they are monotone in ``s``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from omnisparse.deploy.fast import optimize_for_cpu
from omnisparse.deploy.kinds import FP32_KINDS, INT8_DTYPE_KINDS, KINDS, build_kind
from omnisparse.deploy.timing import flush_buffer, time_call
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.json_file import content_digest
from omnisparse.sparsity.masks import MatrixRanking, magnitude_pruned_copy
from omnisparse.sparsity.space import SearchSpace

log = logging.getLogger(__name__)

TABLE_KIND = "omnisparse-latency-table"
TABLE_VERSION = 1
TABLE_FILE = "latency_table.json"


def default_cache_dir() -> Path:
    """``$OMNISPARSE_CACHE/latency``, else ``~/.cache/omnisparse/latency``."""
    root = os.environ.get("OMNISPARSE_CACHE") or Path.home() / ".cache" / "omnisparse"
    return Path(root) / "latency"


def machine_key(threads: int) -> dict[str, Any]:
    """What the timings depend on besides the model: CPU model, architecture, torch, threads."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "arch": platform.machine(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "quantized_engine": torch.backends.quantized.engine, "threads": threads}


def table_key(space: SearchSpace, threads: int, kinds: Sequence[str], dtype: str, repeats: int) -> dict[str, Any]:
    """The cache key of a table: machine + model dimensions + what was measured."""
    return {"machine": machine_key(threads), "model_config": json.loads(space.model_config),
            "genes": list(space.genes), "grid": list(space.grid), "granularity": space.spec.granularity,
            "block": space.spec.block, "kinds": list(kinds), "dtype": dtype, "repeats": repeats, "cache": "cold"}


def key_digest(key: Mapping[str, Any]) -> str:
    return content_digest(key)[:16]


# ---------------------------------------------------------------------------------------------- one step
class _Step:
    """One batch-1 streaming step of ``model`` (see the module docstring) as a callable on a chunk."""

    def __init__(self, model: nn.Module, max_symbols: int = 4):
        from omnisparse.decoding.greedy import greedy_step_frames, init_greedy

        self.model, self.max_symbols = model, max_symbols
        self._greedy, self._init = greedy_step_frames, init_greedy
        enc = model.encoder
        g = torch.Generator().manual_seed(0)
        first = (enc.chunk_size + enc.lookahead) * enc.subsampling_factor
        feats = torch.randn(1, first + enc.frames_per_chunk, enc.subsampling.feat_dim, generator=g)
        with torch.no_grad():
            _, self.state = model.infer(feats[:, :first], model.init_stream_state(1))
        self.chunk = feats[:, first:]

    def __call__(self, x: Tensor) -> None:
        y, _ = self.model.infer(x, self.state)
        gs = self._init(self.model, 1)
        if y.shape[1]:
            self._greedy(self.model, y, gs, max_symbols=self.max_symbols)


@torch.no_grad()
def _capture(model: nn.Module, step: _Step, names: Sequence[str]) -> dict[str, tuple[Tensor, int]]:
    """``{module name: (last input, calls per step)}`` of the named Linears during one ``step``."""
    seen: dict[str, list] = {n: [None, 0] for n in names}
    handles = []
    for n in names:
        def hook(mod, args, n=n):
            seen[n][0] = args[0].detach().clone()
            seen[n][1] += 1
        handles.append(model.get_submodule(n).register_forward_pre_hook(hook))
    try:
        step(step.chunk)
    finally:
        for h in handles:
            h.remove()
    return {n: (x, c) for n, (x, c) in seen.items()}


def _time_linear(w: Tensor, b: Optional[Tensor], x: Tensor, kinds: Sequence[str], repeats: int,
                 flush: Tensor) -> tuple[dict[str, float], dict[str, str]]:
    """Microseconds per call of every buildable kind on input ``x``, and the reasons of the others."""
    times, unavailable = {}, {}
    for kind in kinds:
        try:
            mod = build_kind(kind, w, b).eval()
        except (RuntimeError, ValueError, NotImplementedError) as e:
            unavailable[kind] = (str(e).splitlines() or [type(e).__name__])[0][:200]
            continue
        times[kind] = round(time_call(mod, x, repeats, 1, flush), 3)
    return times, unavailable


def _gene_linears(model: nn.Module, gene: str, members: list[tuple[str, nn.Module]], s: float, spec,
                  inputs: Mapping[str, tuple[Tensor, int]]) -> list[tuple[str, Tensor, Optional[Tensor], Tensor, int]]:
    """``[(name, masked weight, bias, input, calls)]`` of ``gene`` at sparsity ``s``; an FFN gene shrunk."""
    out = []
    for name, m in members:
        w = m.weight.detach().float()
        if s > 0:
            w = w * MatrixRanking(w, spec).mask(s)
        out.append([name, w, None if m.bias is None else m.bias.detach().float(), inputs[name][0], inputs[name][1]])
    if gene.endswith(".ffn") and len(out) == 2:
        (n1, w1, b1, x1, c1), (n2, w2, b2, x2, c2) = out
        zero = (w1 == 0).all(dim=1)
        if bool(zero.any()):
            kept, pruned = (~zero).nonzero().flatten(), zero.nonzero().flatten()
            act = model.get_submodule(n1.rpartition(".")[0]).act
            b1 = b1 if b1 is not None else w1.new_zeros(w1.shape[0])
            b2 = (b2 if b2 is not None else w2.new_zeros(w2.shape[0])) + w2[:, pruned] @ act(b1[pruned])
            out = [[n1, w1[kept], b1[kept], x1, c1], [n2, w2[:, kept].contiguous(), b2, x2[..., kept], c2]]
    return [tuple(r) for r in out]


def allowed_kinds(dtype: str) -> tuple[str, ...]:
    """Kinds a cell's best time is taken among for ``dtype``."""
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"latency dtype must be fp32 or int8, got {dtype!r}")
    return FP32_KINDS if dtype == "fp32" else INT8_DTYPE_KINDS


@torch.no_grad()
def measure_latency_table(model: nn.Module, space: SearchSpace, threads: int = 1, repeats: int = 5,
                          kinds: Sequence[str] = KINDS, dtype: str = "fp32", validate: bool = True,
                          progress: bool = False) -> dict[str, Any]:
    """The latency table of ``model`` (a Transducer; dense weights, no masks set) over ``space``.

    Returns ``{kind, version, key, key_digest, dtype, chunk_ms, step_us: {dense}, fixed_us,
    fixed_raw_us, genes: {gene: {str(s): {us, kind_us: {kind: us}, layers: {name: {shape, calls,
    times_us, unavailable, kind}}}}}, validation, wall_s}`` (see the module docstring)."""
    best_of = allowed_kinds(dtype)
    kinds = list(dict.fromkeys([*kinds, *best_of, "dense"]))
    t_start = time.perf_counter()
    model = copy.deepcopy(model).cpu().eval()
    if hasattr(model, "clear_masks"):
        model.clear_masks()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        groups = model.prunable_groups()
        step = _Step(model)
        names = [n for g in space.genes for n, _ in groups[g]]
        inputs = _capture(model, step, names)
        flush = flush_buffer(model)
        genes: dict[str, dict[str, Any]] = {}
        cells = [(g, s) for g in space.genes for s in (0.0, *[v for v in space.grid if v > 0])]
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(cells), desc="latency table", unit="cell")
        for gene, s in cells:
            layers, total, kind_us = {}, 0.0, {k: 0.0 for k in kinds}
            for name, w, b, x, calls in _gene_linears(model, gene, groups[gene], s, space.spec, inputs):
                times, unavailable = _time_linear(w, b, x, kinds, repeats, flush)
                best = min((k for k in best_of if k in times), key=lambda k: times[k])
                total += times[best] * calls
                for k in kinds:  # a kind that cannot run this layer counts as the best kind there
                    kind_us[k] += times.get(k, times[best]) * calls
                layers[name] = {"shape": list(w.shape), "calls": calls, "times_us": times,
                                "unavailable": unavailable, "kind": best}
            genes.setdefault(gene, {})[_skey(s)] = {"us": round(total, 3), "layers": layers,
                                                    "kind_us": {k: round(v, 3) for k, v in kind_us.items()}}
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        dense_step = time_call(step, step.chunk, repeats + 4, 1, flush)
        dense_cells = sum(genes[g][_skey(0.0)]["us"] for g in space.genes)
        enc = model.encoder
        table = {"kind": TABLE_KIND, "version": TABLE_VERSION, "dtype": dtype, "threads": threads,
                 "repeats": repeats, "kinds": kinds, "best_of": list(best_of),
                 "chunk_ms": enc.frames_per_chunk * 10, "grid": list(space.grid), "gene_order": list(space.genes),
                 "step_us": {"dense": round(dense_step, 3)}, "fixed_raw_us": round(dense_step - dense_cells, 3),
                 "fixed_us": round(max(dense_step - dense_cells, 0.0), 3), "genes": genes}
        if validate:
            table["validation"] = _validate(model, space, table, dtype, threads, repeats, flush)
    finally:
        torch.set_num_threads(saved)
    key = table_key(space, threads, kinds, dtype, repeats)
    table.update(key=key, key_digest=key_digest(key), wall_s=round(time.perf_counter() - t_start, 3))
    return table


def _skey(s: float) -> str:
    return f"{float(s):g}"


def _validate(model, space, table, dtype, threads, repeats, flush) -> dict[str, Any]:
    """Predicted vs measured step of the sparsest uniform sub-network (masks baked in, then
    ``optimize_for_cpu`` with the table's dtype, timed)."""
    s = max(space.grid)
    config = space.uniform(s)
    m = magnitude_pruned_copy(model, config, space.spec)
    fast, _ = optimize_for_cpu(m, dtype=dtype, threads=threads, repeats=repeats, inplace=True)
    step = _Step(fast)
    measured = time_call(step, step.chunk, repeats + 4, 1, flush)
    predicted = LatencyTable(table).latency_us(config)
    return {"config": f"uniform:{s:g}", "predicted_us": round(predicted, 3), "measured_us": round(measured, 3),
            "ratio": round(measured / predicted, 4) if predicted else None}


# ---------------------------------------------------------------------------------------------- use
class LatencyTable:
    """A measured table as a cost: ``latency_us(config)`` = fixed part + the cells of the config's
    sparsities (an off-grid sparsity takes the nearest measured grid value; missing genes are dense)."""

    def __init__(self, data: Mapping[str, Any]):
        if data.get("kind") != TABLE_KIND or data.get("version") != TABLE_VERSION:
            raise ValueError(f"not an omnisparse latency table (kind {TABLE_KIND!r}, version {TABLE_VERSION})")
        self.data = dict(data)
        self.fixed_us = float(data["fixed_us"])
        self.cells = {g: {float(s): float(c["us"]) for s, c in cells.items()} for g, cells in data["genes"].items()}
        self.chunk_ms = float(data["chunk_ms"])

    def cell_us(self, gene: str, s: float) -> float:
        cells = self.cells[gene]
        return cells[min(cells, key=lambda v: abs(v - float(s)))]

    def latency_us(self, config: Mapping[str, float]) -> float:
        """Microseconds of one streaming step (batch 1) of sub-network ``config``."""
        unknown = [g for g in config if g not in self.cells]
        if unknown:
            raise ValueError(f"gene(s) {unknown} are not in the latency table")
        return self.fixed_us + sum(self.cell_us(g, config.get(g, 0.0)) for g in self.cells)

    def latency_ms(self, config: Mapping[str, float]) -> float:
        return self.latency_us(config) / 1000.0

    def rtf(self, config: Mapping[str, float]) -> float:
        """Estimated real-time factor: step time / chunk duration."""
        return self.latency_ms(config) / self.chunk_ms

    def check_space(self, space: SearchSpace) -> None:
        """ValueError unless the table covers every gene of ``space`` at every grid value."""
        missing = [g for g in space.genes if g not in self.cells]
        if missing:
            raise ValueError(f"latency table lacks gene(s) {missing}")
        for g in space.genes:
            lack = [s for s in space.grid if not any(abs(s - v) < 1e-9 for v in self.cells[g])]
            if lack:
                raise ValueError(f"latency table lacks sparsities {lack} of gene {g}")


def load_table(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable latency table ({e})") from None
    LatencyTable(data)  # checks kind / version
    return data


def load_or_measure(model: nn.Module, space: SearchSpace, out_path: Optional[str | Path] = None,
                    table_path: str = "", cache_dir: Optional[str | Path] = None, threads: int = 1,
                    repeats: int = 5, dtype: str = "fp32", kinds: Sequence[str] = KINDS,
                    progress: bool = False, log_fn: Callable[[str], None] = log.info,
                    key: Optional[Mapping[str, Any]] = None,
                    measure: Optional[Callable[[], dict[str, Any]]] = None) -> tuple[LatencyTable, str]:
    """A table for ``model`` / ``space``: ``table_path`` when given (a warning when its key differs);
    else ``out_path`` when it holds one with the same key (a resumed search); else the cache entry of the
    same key in ``cache_dir`` (default :func:`default_cache_dir`; ``"none"`` disables the cache); else
    measured now (and cached). Always written to ``out_path`` (when given). Returns ``(table, source)``,
    ``source`` one of ``given``, ``output``, ``cache``, ``measured``. ``key`` and ``measure``: another
    runtime's table key and measurement (:mod:`omnisparse.search.latency_onnx`); default PyTorch's."""
    kinds = list(dict.fromkeys([*kinds, *allowed_kinds(dtype), "dense"]))
    key = dict(key) if key is not None else table_key(space, threads, kinds, dtype, repeats)
    digest = key_digest(key)
    cache = None if str(cache_dir) == "none" else Path(cache_dir) if cache_dir else default_cache_dir()
    data, source = None, "measured"
    if table_path:
        data, source = load_table(table_path), "given"
        if data.get("key_digest") != digest:
            log.warning("latency table %s was measured for another machine or model (key %s, here %s)",
                        table_path, data.get("key_digest"), digest)
    else:
        for where, path in (("output", Path(out_path) if out_path else None),
                            ("cache", cache / f"latency-{digest}.json" if cache else None)):
            if path is not None and path.is_file():
                try:
                    cand = load_table(path)
                except ValueError as e:
                    log.warning("%s", e)
                    continue
                if cand.get("key_digest") == digest:
                    data, source = cand, where
                    break
    if data is None:
        log_fn(f"measuring the latency table ({len(space.genes)} genes x {len(space.grid)} sparsities x "
               f"{len(kinds)} kinds, {threads} thread(s))")
        data = measure() if measure is not None else measure_latency_table(
            model, space, threads=threads, repeats=repeats, kinds=kinds, dtype=dtype, progress=progress)
        if cache is not None:
            atomic_write_text(cache / f"latency-{digest}.json", json.dumps(data, indent=1) + "\n")
    table = LatencyTable(data)
    table.check_space(space)
    if out_path is not None:
        atomic_write_text(Path(out_path), json.dumps(data, indent=1) + "\n")
    return table, source
