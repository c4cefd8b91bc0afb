"""The latency table measured in onnxruntime, the runtime ``omnisparse export-onnx`` deploys to.

PyTorch's table (:mod:`omnisparse.search.latency`) times every Linear alone; in onnxruntime a lone
MatMul is dominated by the cost of a session call, so here every cell is a whole streaming encoder
step. For each gene and each sparsity ``s`` of the grid, the model with only that gene pruned at ``s``
(magnitude masks of the space's granularity, baked into the weights) is exported exactly as
``export-onnx --compact C --dtype D`` would (:func:`omnisparse.deploy.onnx_export.export_onnx`: FFN
hidden units removed for ``ffn``, every Linear's pruned rows for ``rows``; int8 dynamic quantisation
for ``int8``) and its encoder step timed at batch 1 on ``threads`` threads: one chunk of
``chunk_size * subsampling`` frames from a state primed with the first chunk, median over ``repeats``
of ``inner`` back-to-back calls. The cell is that step minus the dense model's step (so mostly <= 0),
and the fixed part is the dense step: ``latency(config) = dense step + sum over genes of (step with
only that gene pruned - dense step)``, the first-order (additive) model of the gene's effect. The
predictor and joiner are not pruned by the search and not part of the table. ``validation`` compares
the prediction with a measured step of the sparsest uniform sub-network, exported the same way.

The table has the format of :class:`omnisparse.search.latency.LatencyTable` (``runtime``:
``onnxruntime``); its key adds the runtime and the compaction, so the cache never mixes runtimes.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from omnisparse.deploy.onnx_export import export_onnx
from omnisparse.deploy.onnx_runner import OnnxModel
from omnisparse.deploy.timing import time_call
from omnisparse.export.loading import LoadedModel
from omnisparse.search.latency import TABLE_KIND, TABLE_VERSION, LatencyTable, key_digest, load_or_measure, table_key
from omnisparse.sparsity.masks import magnitude_pruned
from omnisparse.sparsity.space import SearchSpace

ONNX_RUNTIME = "onnxruntime"


def onnx_table_key(space: SearchSpace, threads: int, dtype: str, repeats: int, compact: str) -> dict[str, Any]:
    return {**table_key(space, threads, [ONNX_RUNTIME], dtype, repeats), "runtime": ONNX_RUNTIME, "compact": compact}


def onnx_step_us(lm: LoadedModel, model: torch.nn.Module, work: Path, dtype: str, compact: str, threads: int,
                 repeats: int, inner: int) -> float:
    """Microseconds of one steady-state streaming encoder step of ``model`` exported to ONNX (``lm``
    gives the tokenizer and statistics), in onnxruntime on ``threads`` threads."""
    out = export_onnx(dataclasses.replace(lm, model=model), work, compact=compact, dtype=dtype, overwrite=True)
    om = OnnxModel(out.path, threads)
    g = np.random.default_rng(0)
    first = g.standard_normal((1, om.first_chunk_frames, om.feat_dim)).astype(np.float32)
    _, state = om.encoder_step(first, om.C + om.R, om.initial_state())
    chunk = g.standard_normal((1, om.frames_per_chunk, om.feat_dim)).astype(np.float32)
    return time_call(lambda x: om.encoder_step(x, om.C + om.R, state), chunk, repeats, inner)


def measure_onnx_latency_table(lm: LoadedModel, space: SearchSpace, threads: int = 1, repeats: int = 5,
                               inner: int = 10, dtype: str = "int8", compact: str = "ffn", validate: bool = True,
                               progress: bool = False) -> dict[str, Any]:
    """The onnxruntime latency table of ``lm.model`` (dense weights, no masks set) over ``space``:
    ``{kind, version, runtime, compact, dtype, chunk_ms, step_us: {dense}, fixed_us, genes: {gene:
    {str(s): {us, step_us}}}, validation, key, key_digest, wall_s}`` (see the module docstring)."""
    t0 = time.perf_counter()
    model = copy.deepcopy(lm.model).cpu().eval()
    if hasattr(model, "clear_masks"):
        model.clear_masks()
    cells = [(g, s) for g in space.genes for s in space.grid if s > 0]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cells) + 2, desc="onnx latency table", unit="export")
    with tempfile.TemporaryDirectory(prefix="omnisparse-onnx-latency-") as tmp:
        work = Path(tmp) / "step"

        def step_us(config: dict[str, float]) -> float:
            with magnitude_pruned(model, config, space.spec) as pruned:  # the export copies it (compaction)
                t = onnx_step_us(lm, pruned, work, dtype, compact, threads, repeats, inner)
            if bar is not None:
                bar.update(1)
            return t

        dense = step_us({})
        genes: dict[str, dict[str, Any]] = {g: {"0": {"us": 0.0, "step_us": round(dense, 3)}} for g in space.genes}
        for gene, s in cells:
            t = step_us({gene: s})
            genes[gene][f"{float(s):g}"] = {"us": round(t - dense, 3), "step_us": round(t, 3)}
        table = {"kind": TABLE_KIND, "version": TABLE_VERSION, "runtime": ONNX_RUNTIME, "compact": compact,
                 "dtype": dtype, "threads": threads, "repeats": repeats, "inner": inner,
                 "chunk_ms": model.encoder.frames_per_chunk * 10, "grid": list(space.grid),
                 "gene_order": list(space.genes), "step_us": {"dense": round(dense, 3)},
                 "fixed_raw_us": round(dense, 3), "fixed_us": round(dense, 3), "genes": genes}
        if validate:
            s = max(space.grid)
            config = space.uniform(s)
            measured = step_us(config)
            predicted = LatencyTable(table).latency_us(config)
            table["validation"] = {"config": f"uniform:{s:g}", "predicted_us": round(predicted, 3),
                                   "measured_us": round(measured, 3),
                                   "ratio": round(measured / predicted, 4) if predicted > 0 else None}
    if bar is not None:
        bar.close()
    key = onnx_table_key(space, threads, dtype, repeats, compact)
    table.update(key=key, key_digest=key_digest(key), wall_s=round(time.perf_counter() - t0, 3))
    return table


def load_or_measure_onnx(lm: LoadedModel, space: SearchSpace, out_path: Optional[str | Path] = None,
                         table_path: str = "", cache_dir: Optional[str | Path] = None, threads: int = 1,
                         repeats: int = 5, dtype: str = "int8", compact: str = "ffn",
                         progress: bool = False) -> tuple[LatencyTable, str]:
    """:func:`omnisparse.search.latency.load_or_measure` (given table, resumed output, cache, or measured
    now) for the onnxruntime table of ``lm``'s model."""
    return load_or_measure(lm.model, space, out_path, table_path=table_path, cache_dir=cache_dir, threads=threads,
                           repeats=repeats, dtype=dtype, progress=progress,
                           key=onnx_table_key(space, threads, dtype, repeats, compact),
                           measure=lambda: measure_onnx_latency_table(lm, space, threads=threads, repeats=repeats,
                                                                      dtype=dtype, compact=compact, progress=progress))
