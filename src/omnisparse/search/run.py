"""``omnisparse search``: the WER-vs-size Pareto front of a trained supernet, without retraining.

:func:`run_search` loads the supernet (``search.supernet``), builds its search space and mask bank from
the ``sparsity`` settings it was trained with, takes the first ``search.dev_subset`` cuts of
``data.dev_split`` as the fixed fitness set (greedy WER, the model's trained attention mode), prices
configs as ``space.size_bytes(config, search.format)`` and runs :class:`EvolutionFinder` into
``search.out_dir`` (default ``<supernet run dir>/search``). For reference it also evaluates every
uniform config of the grid (``pareto.json["uniform"]``). Sizes: bytes; MB = 1e6 bytes.

``search.cost`` picks what the front is on: ``bytes`` (above), ``latency`` (the measured latency of one
batch-1 streaming step on this machine, :mod:`omnisparse.search.latency`: a per-gene table measured once,
or reused from ``search.latency_table`` / the cache / a previous run in the output directory, saved as
``OUT/latency_table.json``; range ``[search.min_latency_ms, search.max_latency_ms]``, 0 = unbounded,
buckets ``search.bucket_ms``) or ``both``: the front on one with a constraint on the other
(``search.max_latency_ms`` set: front on bytes, configs slower than it infeasible; ``search.size_max_mb``
set: front on latency, configs larger than it infeasible; ``search.front`` decides when both are set).
The finder only ever sees one cost function. Whenever a table exists every reported row carries both
``size_bytes`` and ``latency_ms``; ``pareto.json["cost_key"]`` says which one the front is on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from omnisparse.config import Config, SearchConfig
from omnisparse.data.splits import load_split_cuts
from omnisparse.export.loading import load_model
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.json_file import content_digest
from omnisparse.io.lock import exclusive_dir
from omnisparse.search.evaluator import SubnetEvaluator
from omnisparse.search.latency import TABLE_FILE, LatencyTable, load_or_measure
from omnisparse.search.latency_onnx import load_or_measure_onnx
from omnisparse.search.rerank import RerankCache, rerank, rerank_candidates
from omnisparse.sparsity.space import space_and_bank
from omnisparse.search.evolution import EvolutionFinder, EvolutionSettings
from omnisparse.export.format import ArtefactPricing, check_format
from omnisparse.utils.provenance import provenance

log = logging.getLogger(__name__)


def search_device(pref: str) -> torch.device:
    """``train.device`` (auto | cpu | cuda) as a device; ``cuda`` without a GPU is a ValueError."""
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {pref!r} (auto | cpu | cuda)")
    return torch.device("cuda" if pref != "cpu" and torch.cuda.is_available() else "cpu")


def mb_to_bytes(mb: float) -> int:
    """``mb`` megabytes (1e6 bytes) as a whole number of bytes."""
    return int(round(mb * 1e6))


def cost_mode(sc: SearchConfig) -> tuple[str, str]:
    """``(cost, front)`` of a SearchConfig: cost ``bytes`` | ``latency`` | ``both`` and the quantity the
    front is on (``bytes`` | ``latency``); ValueError on an inconsistent setting."""
    cost = sc.cost
    if cost not in ("bytes", "latency", "both"):
        raise ValueError(f"search.cost must be bytes, latency or both, got {cost!r}")
    if cost != "both":
        return cost, cost
    front = sc.front
    if front not in ("", "bytes", "latency"):
        raise ValueError(f"search.front must be bytes or latency, got {front!r}")
    lat_set, size_set = sc.max_latency_ms > 0, sc.size_max_mb > 0
    if not front:
        if lat_set == size_set:
            raise ValueError("search.cost=both needs one constraint: search.max_latency_ms (front on bytes) or "
                             "search.size_max_mb (front on latency); with both set, choose with search.front")
        front = "bytes" if lat_set else "latency"
    if front == "bytes" and not lat_set:
        raise ValueError("search.cost=both with the front on bytes needs search.max_latency_ms > 0")
    if front == "latency" and not size_set:
        raise ValueError("search.cost=both with the front on latency needs search.size_max_mb > 0")
    return cost, front


def gain_vs_uniform(front: list[dict[str, Any]], uniform: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per in-range uniform config of the same supernet: the best front point no larger (by bytes) and
    its relative WER gain ``(wer_uniform - wer_front) / wer_uniform`` (> 0: the search found better)."""
    out = []
    for u in uniform:
        if not u.get("in_range") or "wer" not in u:
            continue
        under = [r for r in front if r["size_bytes"] <= u["size_bytes"] and "wer" in r]
        best = min(under, key=lambda r: r["wer"]) if under else None
        gain = (u["wer"] - best["wer"]) / u["wer"] if best is not None and u["wer"] > 0 else None
        out.append({"sparsity": u["sparsity"], "size_bytes": u["size_bytes"], "uniform_wer": u["wer"],
                    "front_wer": best["wer"] if best else None, "front_size_bytes": best["size_bytes"] if best else None,
                    "gain": gain})
    return out


def run_search(cfg: Config, resume: bool = True, progress: bool = True, tensorboard: bool = True) -> dict[str, Any]:
    """Search ``cfg.search.supernet``; returns ``{pareto, uniform, table, cost, out_dir, size_range_bytes}``.

    ``pareto``: the monotone front (by size: ``size_bytes``, ``size_mb``, ``nonzero_params``, ``wer``,
    ``config``, ...); ``uniform``: the same fields for every uniform config of the grid, with
    ``in_range``; ``cost``: candidates evaluated, generations, wall seconds (accumulated across resumes),
    decode seconds. Writes ``history.json``, ``pareto.json``, ``search.csv``, ``state.json`` into the
    output directory; running it again resumes (or, when finished, only re-reports); ``resume=False``
    starts afresh, overwriting a previous search there. The output directory is held meanwhile
    (:func:`omnisparse.io.lock.exclusive_dir`): a second search into it is refused.
    """
    with ExitStack() as held:
        return _run_search(cfg, resume, progress, tensorboard, held)


def _run_search(cfg: Config, resume: bool, progress: bool, tensorboard: bool, held: ExitStack) -> dict[str, Any]:
    sc = cfg.search
    given_out = Path(sc.out_dir) if sc.out_dir else None
    if given_out is not None:  # held before anything slow: a second search there is refused at once
        held.enter_context(exclusive_dir(given_out, "omnisparse search"))
    if not sc.supernet:
        raise ValueError("search.supernet is empty: set it to a supernet run directory or checkpoint "
                         "(e.g. --search.supernet=exp/small/supernet)")
    check_format(sc.format)
    cost_name, front_on = cost_mode(sc)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    lm = load_model(sc.supernet, device=search_device(cfg.train.device))
    state_path = lm.path / "state.json"
    if not state_path.exists():
        raise ValueError(f"{lm.path} is not a training checkpoint (an exported sub-network?): search.supernet must "
                         "name a supernet run directory or checkpoint")
    kind = json.loads(state_path.read_text()).get("kind")
    if kind != "supernet":
        log.warning("%s is a %r checkpoint, not a supernet: its sub-networks were not trained", lm.path, kind)
    mode = lm.trained_modes[0]
    space, bank = space_and_bank(lm.model, lm.config.sparsity, pricing=ArtefactPricing.of(lm.model))

    cuts = load_split_cuts(cfg, [cfg.data.dev_split])
    if sc.dev_subset > 0:
        cuts = cuts.subset(first=min(sc.dev_subset, len(cuts)))
    decode = dataclasses.replace(cfg.decode, method="greedy")
    evaluator = SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, mode, decode,
                                on_the_fly=cfg.data.on_the_fly_features, fitness=sc.fitness)
    score_key = evaluator.score_key

    def size_cost(config: dict[str, float]) -> int:
        return space.size_bytes(config, sc.format)

    out = given_out or lm.path.parent / "search"
    if given_out is None:
        held.enter_context(exclusive_dir(out, "omnisparse search"))  # before the first write into it
    table: LatencyTable | None = None
    finder_kw: dict[str, Any] = {}
    if cost_name != "bytes":
        if sc.latency_runtime == "onnxruntime":
            table, source = load_or_measure_onnx(lm, space, out / TABLE_FILE, table_path=sc.latency_table,
                                                 cache_dir=sc.latency_cache_dir or None, threads=sc.latency_threads,
                                                 repeats=sc.latency_repeats, dtype=sc.latency_dtype,
                                                 compact=sc.latency_compact, progress=progress)
        else:
            table, source = load_or_measure(lm.model, space, out / TABLE_FILE, table_path=sc.latency_table,
                                            cache_dir=sc.latency_cache_dir or None, threads=sc.latency_threads,
                                            repeats=sc.latency_repeats, dtype=sc.latency_dtype, progress=progress)
        log.info("latency table (%s): fixed %.1f us + genes; dense step %.1f us", source, table.fixed_us,
                 table.latency_us(space.sample_max()))

        def describe(config: dict[str, float]) -> dict[str, Any]:
            size = size_cost(config)
            return {"size_bytes": size, "size_mb": size / 1e6, "latency_ms": round(table.latency_ms(config), 4)}

        finder_kw["describe"] = describe
    sparsest, dense = space.sample_min(1.0), space.sample_max()
    size_min = mb_to_bytes(sc.size_min_mb) if sc.size_min_mb > 0 else size_cost(sparsest)
    size_max = mb_to_bytes(sc.size_max_mb) if sc.size_max_mb > 0 else size_cost(dense)
    range_lo, range_hi, bucket = size_min, size_max, mb_to_bytes(sc.bucket_mb)
    if front_on == "bytes":
        if cost_name == "both":
            max_us = sc.max_latency_ms * 1000.0

            def cost(config: dict[str, float]) -> int | None:
                return size_cost(config) if table.latency_us(config) <= max_us else None
        else:
            cost = size_cost
    else:
        finder_kw["cost_key"] = "latency_us"
        range_lo = int(round(sc.min_latency_ms * 1000))
        range_hi = int(round(sc.max_latency_ms * 1000)) if cost_name == "latency" and sc.max_latency_ms > 0 \
            else 2 ** 62
        bucket = max(1, int(round(sc.bucket_ms * 1000)))

        def cost(config: dict[str, float]) -> int | None:
            if cost_name == "both" and size_cost(config) > size_max:
                return None
            return int(round(table.latency_us(config)))
    settings = EvolutionSettings(size_min=range_lo, size_max=range_hi, bucket_bytes=bucket,
                                 population=sc.population, generations=sc.generations, mutations=sc.mutations,
                                 crossovers=sc.crossovers, mutate_prob=sc.mutate_prob, max_tries=sc.max_tries,
                                 seed=sc.seed, seed_uniform=sc.seed_uniform, sensitivity=sc.sensitivity,
                                 sensitivity_spread=sc.sensitivity_spread)
    fingerprint = {"supernet": str(lm.path.resolve()), "format": sc.format, "mode": mode,
                   "corpus_dir": str(cfg.data.corpus_dir), "dev_split": cfg.data.dev_split,
                   "dev_cuts": [c.id for c in cuts], "max_symbols_per_frame": decode.max_symbols_per_frame,
                   "granularity": space.spec.granularity, "block": space.spec.block}
    if sc.fitness != "wer":
        fingerprint["fitness"] = sc.fitness
    if cost_name != "bytes":
        fingerprint.update(cost=cost_name, front=front_on, latency_table=table.data.get("key_digest"),
                           max_latency_ms=sc.max_latency_ms, size_max_mb=sc.size_max_mb)
    if front_on == "bytes":
        span = f"[{size_min / 1e6:.4f}, {size_max / 1e6:.4f}] MB of {sc.format}"
    else:
        span = f"[{range_lo / 1e3:.3f}, {'inf' if range_hi >= 2 ** 62 else f'{range_hi / 1e3:.3f}'}] ms per step"
    if cost_name == "both":
        span += (f", latency <= {sc.max_latency_ms} ms" if front_on == "bytes"
                 else f", size <= {size_max / 1e6:.4f} MB of {sc.format}")
    log.info("searching %s (%s, mode %s) in %s, %d dev utterances -> %s", lm.path, space, mode, span,
             evaluator.utterances, out)
    finder = EvolutionFinder(space, evaluator, cost, settings, nonzero_params=space.nonzero_params,
                             fingerprint=fingerprint, progress=progress, tensorboard=tensorboard,
                             score_key=score_key, **finder_kw)
    result = finder.run(out, resume=resume)

    uniform = []
    for s in space.grid:
        config = space.uniform(s)
        size = size_cost(config)
        row = {"sparsity": s, "size_bytes": size, "size_mb": size / 1e6,
               "nonzero_params": space.nonzero_params(config), score_key: evaluator(config),
               "in_range": finder._in_range(finder.size_of(config)), "config": config}
        if table is not None:
            row["latency_ms"] = round(table.latency_ms(config), 4)
        uniform.append(row)
    cost_report = {**result["cost"], "decode_s": evaluator.decode_s, "decodes": evaluator.evaluations,
                   "feature_load_s": evaluator.prepare_s, "device": str(next(lm.model.parameters()).device)}
    pareto = json.loads((out / "pareto.json").read_text())
    front = result["front"]
    if sc.rerank_per_bucket > 0:
        front, rerank_info = _rerank(cfg, lm, space, bank, mode, decode, finder, front, uniform, out, score_key)
        cost_report["rerank_decode_s"] = rerank_info.pop("decode_s")
        pareto.update(search_front=result["front"], front=front, rerank=rerank_info)
    pareto["gain_vs_uniform"] = gain_vs_uniform(front, uniform)
    pareto.update(uniform=uniform, cost=cost_report, supernet=str(lm.path), mode=mode, format=sc.format,
                  dev_split=cfg.data.dev_split, dev_utterances=evaluator.utterances, space=repr(space),
                  size_range_bytes=[size_min, size_max], provenance=provenance())
    if cost_name != "bytes":
        pareto.update(cost_key=finder.cost_key, search_cost=cost_name, front_on=front_on,
                      latency_table=str(out / TABLE_FILE), latency_range_us=[range_lo, range_hi]
                      if front_on == "latency" else None, max_latency_ms=sc.max_latency_ms or None,
                      chunk_ms=table.chunk_ms, latency_fixed_us=table.fixed_us)
    atomic_write_text(out / "pareto.json", json.dumps(pareto, indent=1) + "\n")
    atomic_write_text(out / "config.json", cfg.to_json() + "\n")
    for row in front:
        log.info("pareto %.4f MB  %s%s %.4f", row["size_mb"],
                 f"{row['latency_ms']:.3f} ms " if "latency_ms" in row else "", "WER" if "wer" in row else score_key,
                 row.get("wer", row.get(score_key)))
    return {"pareto": front, "uniform": uniform, "table": result["table"], "cost": cost_report,
            "out_dir": str(out), "size_range_bytes": [size_min, size_max]}


def _rerank(cfg: Config, lm, space, bank, mode: str, decode, finder: EvolutionFinder, front: list[dict[str, Any]],
            uniform: list[dict[str, Any]], out: Path, score_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The front re-ranked by WER on the re-ranking cuts (:mod:`omnisparse.search.rerank`); every
    uniform row gains that WER too (as ``wer``; the fitness stays under ``score_key`` or ``search_wer``)."""
    sc = cfg.search
    cuts = load_split_cuts(cfg, [cfg.data.dev_split])
    if sc.rerank_subset > 0:
        cuts = cuts.subset(first=min(sc.rerank_subset, len(cuts)))
    wer_eval = SubnetEvaluator(lm.model, space, bank, cuts, lm.tokenizer, lm.normalizer, mode, decode,
                               on_the_fly=cfg.data.on_the_fly_features, fitness="wer")
    cache = RerankCache(out, {"supernet": str(lm.path.resolve()), "mode": mode, "dev_split": cfg.data.dev_split,
                              "cuts": content_digest([c.id for c in cuts]),
                              "max_symbols_per_frame": decode.max_symbols_per_frame})

    def wer_stats(config: dict[str, float]) -> dict[str, Any]:
        return cache.get(json.dumps(list(space.encode(config))), lambda: wer_eval.evaluate(config))

    bucket = finder.settings.bucket_bytes
    candidates = rerank_candidates(finder.history, front, score_key, finder.cost_key, bucket, sc.rerank_per_bucket)
    reranked, evaluated = rerank([finder.row_of(i) for i in candidates], wer_stats, finder.cost_key, bucket, score_key)
    for row in uniform:
        if score_key == "wer":
            row["search_wer"] = row.pop("wer")
        row["wer"] = wer_stats(row["config"])["wer"]
    info = {"utterances": wer_eval.utterances, "per_bucket": sc.rerank_per_bucket, "candidates": len(evaluated),
            "evaluated": evaluated, "decodes": wer_eval.evaluations, "decode_s": wer_eval.decode_s}
    return reranked, info
