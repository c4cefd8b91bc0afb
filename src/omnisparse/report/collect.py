"""Evaluate the points of an experiment directory (see :mod:`omnisparse.report.points`).

Per run directory the model is loaded once; a point's masks are switched in place with
:class:`MaskBank` (rankings from the run's final weights), the WER of every split is computed with
batched greedy decoding, and the streaming real-time factor is measured with the masked weights baked
into plain dense weights (what a dense-kernel deployment of the sub-network runs; unstructured sparsity
buys no speed there - see the deployment benchmarks for sparse kernels).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
from tqdm import tqdm

from omnisparse.export.format import ArtefactPricing
from omnisparse.report.points import (ExperimentLayout, Point, best_under, load_cache, read_pareto, save_cache,
                                      size_fields)

log = logging.getLogger(__name__)


def space_and_bank(lm):
    """Search space (priced in the artefact) and refreshed mask bank of a loaded model, under the sparsity
    settings it was trained with."""
    from omnisparse.sparsity.space import space_and_bank as of_model

    return of_model(lm.model, lm.config.sparsity, refresh=True, pricing=ArtefactPricing.of(lm.model))


@contextlib.contextmanager
def baked_masks(model) -> Iterator[None]:
    """Temporarily replace every masked weight by ``weight * mask`` with no mask set (restored after)."""
    saved = []
    with torch.no_grad():
        for _, _, m in model.prunable_linears():
            if m.mask is not None:
                saved.append((m, m.weight.detach().clone(), m.mask))
                m.weight.mul_(m.mask)
                m.mask = None
    try:
        yield
    finally:
        with torch.no_grad():
            for m, w, mask in saved:
                m.weight.copy_(w)
                m.mask = mask


def plan(layout: ExperimentLayout, uniform: list[float]) -> list[tuple[Path, Point]]:
    """Every point to report, without results, grouped by the run its weights come from."""
    from omnisparse.export.loading import load_model

    todo: list[tuple[Path, Point]] = []
    if layout.dense.exists():
        space, _ = space_and_bank(load_model(layout.dense))
        todo.append((layout.dense, Point("dense", "dense", str(layout.dense), {}, 0.0,
                                         **size_fields(space, space.uniform(0.0)))))
    individual_sizes: list[tuple[str, float]] = []
    for run in layout.individual():
        lm = load_model(run)
        target = lm.config.sparsity.target
        space, _ = space_and_bank(lm)
        p = Point("individual", run.name, str(run), space.uniform(target), target, **size_fields(space, space.uniform(target)))
        todo.append((run, p))
        individual_sizes.append((run.name, target))
    if layout.supernet.exists():
        lm = load_model(layout.supernet)
        space, _ = space_and_bank(lm)
        for s in uniform:
            cfg = space.uniform(s)
            todo.append((layout.supernet, Point("supernet-uniform", f"u{s:g}", str(layout.supernet), cfg, s,
                                                **size_fields(space, cfg))))
        if layout.pareto.exists():
            fmt, pareto = read_pareto(layout.pareto)
            budgets = [(p.name, p.size_bytes[fmt]) for _, p in todo if p.method in ("individual", "supernet-uniform")]
            chosen: dict[tuple, dict] = {}
            for _, limit in budgets:
                row = best_under(pareto, limit)
                if row is not None:
                    chosen[space.encode(row["config"])] = row
            for row in sorted(chosen.values(), key=lambda r: r["size_bytes"]):
                cfg = space.check(row["config"])
                p = Point("supernet-searched", f"s{row['size_bytes'] / 1e6:.3f}MB", str(layout.supernet), cfg, None,
                          **size_fields(space, cfg), search_dev_wer=row["wer"])
                todo.append((layout.supernet, p))
    return todo


def evaluate(layout: ExperimentLayout, splits: list[str], uniform: list[float], rtf_utts: int = 20,
             test_subset: int = 0, progress: bool = True, cache: Optional[Path] = None) -> list[Point]:
    """Evaluate (or take from the cache) every planned point; returns them in plan order."""
    from omnisparse.data.splits import load_split_cuts
    from omnisparse.decoding.evaluate import evaluate_cuts
    from omnisparse.decoding.streaming import streaming_rtf
    from omnisparse.export.loading import load_model

    cache = cache or layout.report_dir / "points.json"
    done = load_cache(cache)
    todo = plan(layout, uniform)
    loaded: dict[Path, tuple] = {}
    cuts_of: dict[str, object] = {}
    out: list[Point] = []
    bar = tqdm(todo, desc="report: evaluate", disable=not progress)
    for run, point in bar:
        prev = done.get(point.key())
        if prev is not None and prev.config == point.config and set(splits) <= set(prev.wer) and prev.source == point.source:
            out.append(prev)
            continue
        bar.set_postfix_str(point.key())
        if run not in loaded:
            lm = load_model(run)
            loaded = {run: (lm, *space_and_bank(lm))}  # one model in memory at a time
        lm, space, bank = loaded[run]
        mode = lm.trained_modes[0]
        t0 = time.time()
        bank.apply(point.config) if point.config else bank.clear()
        for split in splits:
            if split not in cuts_of:
                c = load_split_cuts(lm.config, [split])
                cuts_of[split] = c.subset(first=min(test_subset, len(c))) if test_subset > 0 else c
            r = evaluate_cuts(lm.model, cuts_of[split], lm.tokenizer, lm.normalizer, mode=mode, decode=lm.config.decode)
            point.wer[split] = r["wer"]
        if rtf_utts > 0:
            with baked_masks(lm.model):
                rtf_split = "test-clean" if "test-clean" in splits else splits[0]
                point.rtf = streaming_rtf(lm.model, lm.tokenizer, lm.normalizer, cuts_of[rtf_split], rtf_utts)["rtf"]
        bank.clear()
        log.info("%s: WER %s, rtf %s (%.0f s)", point.key(), point.wer, point.rtf, time.time() - t0)
        done[point.key()] = point
        save_cache(cache, done)
        out.append(point)
    return out
