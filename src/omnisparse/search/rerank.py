"""Re-ranking a finished search's Pareto candidates by WER on a larger dev set (``search.rerank_per_bucket``).

The search's fitness (WER on ``search.dev_subset`` utterances, or the RNN-T loss per token) is noisy or
only a proxy; picking the front's members by it keeps their luck. :func:`rerank` takes, for every size
bucket on the search's monotone front, its ``per_bucket`` best configs by fitness, decodes each on the
re-ranking cuts (``search.rerank_subset``, 0 = the whole dev split), and builds the monotone front again
from those WERs. Results are cached in ``OUT/rerank.json`` (keyed by the re-ranking set), so a search
run again only decodes what it has not.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.json_file import read_json_object

log = logging.getLogger(__name__)

RERANK_FILE = "rerank.json"


def _sort(v: float) -> float:
    return math.inf if math.isnan(v) else v


def rerank_candidates(history: list[dict[str, Any]], front: list[dict[str, Any]], score_key: str, cost_key: str,
                      bucket: int, per_bucket: int) -> list[int]:
    """Indices into ``history`` to re-rank: the ``per_bucket`` best by ``score_key`` of every bucket on ``front``."""
    front_buckets = {row["size_bytes" if cost_key == "bytes" else cost_key] // bucket for row in front}
    by_bucket: dict[int, list[int]] = {}
    for i, rec in enumerate(history):
        b = rec[cost_key] // bucket
        if b in front_buckets:
            by_bucket.setdefault(b, []).append(i)
    out = []
    for b in sorted(by_bucket):
        out += sorted(by_bucket[b], key=lambda i: (_sort(history[i][score_key]), history[i][cost_key], i))[:per_bucket]
    return out


class RerankCache:
    """``OUT/rerank.json``: WER stats per config key for one re-ranking set (``fingerprint``)."""

    def __init__(self, out_dir: Path, fingerprint: Mapping[str, Any]):
        self.path = Path(out_dir) / RERANK_FILE
        self.fingerprint = json.loads(json.dumps(dict(fingerprint)))
        saved = None
        if self.path.exists():
            try:
                saved = read_json_object(self.path, "re-ranking cache")
            except ValueError as e:  # only a cache: decode again
                log.warning("%s; re-ranking from scratch", e)
        self.results: dict[str, dict[str, Any]] = {}
        if saved and saved.get("fingerprint") == self.fingerprint:
            self.results = dict(saved.get("results", {}))

    def get(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.results:
            self.results[key] = compute()
            atomic_write_text(self.path, json.dumps({"fingerprint": self.fingerprint, "results": self.results}) + "\n")
        return self.results[key]


def rerank(rows: list[dict[str, Any]], wer_stats: Callable[[Mapping[str, float]], dict[str, Any]], cost_key: str,
           bucket: int, score_key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(front, evaluated)``: every candidate's report row (``rows``, with ``config`` and ``score_key``)
    with ``wer`` from ``wer_stats(config)`` (the search's fitness moved to ``search_<score_key>``), and the
    monotone front of those rows (best WER per bucket, ties -> smaller; kept when strictly below every
    smaller bucket)."""
    evaluated = []
    for cand in rows:
        row = dict(cand)
        row[f"search_{score_key}"] = row.pop(score_key)
        stats = wer_stats(row["config"])
        row.update(wer=stats["wer"], rerank_words=stats.get("words"))
        evaluated.append(row)
    key = "size_bytes" if cost_key == "bytes" else cost_key
    best: dict[int, dict[str, Any]] = {}
    for row in evaluated:
        b = row[key] // bucket
        if b not in best or (_sort(row["wer"]), row[key]) < (_sort(best[b]["wer"]), best[b][key]):
            best[b] = row
    front, lowest = [], math.inf
    for b in sorted(best):
        if _sort(best[b]["wer"]) < lowest:
            lowest = _sort(best[b]["wer"])
            front.append(best[b])
    return front, evaluated
