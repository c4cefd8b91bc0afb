"""The points of a WER-vs-size report, collected from an experiment directory and evaluated once.

An experiment directory holds the runs of the headline comparison under fixed names::

    EXP/dense/            dense run (``omnisparse train``)
    EXP/supernet/         supernet run (``omnisparse train --supernet``)
    EXP/supernet/search/  its search (``omnisparse search``): pareto.json
    EXP/prune-<S>/        individually pruned baselines (``omnisparse prune``), one per target S

Every point is one sub-network of one run: ``dense`` (the dense model), ``individual`` (a pruned
baseline at its uniform target), ``supernet-uniform`` (the supernet at uniform sparsity S) and
``supernet-searched`` (a configuration from the search's Pareto table). Only the searched points
that matter for the comparison are evaluated: for every individual and uniform size, the best
Pareto configuration no larger than it.

Evaluation (greedy WER per split, streaming real-time factor at batch 1) is cached in
``EXP/report/points.json`` point by point (written atomically after each one), so an interrupted
report resumes where it stopped and a finished one is free to re-render.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omnisparse.export.format import FORMATS
from omnisparse.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

METHODS = ("dense", "individual", "supernet-uniform", "supernet-searched")


@dataclass
class Point:
    """One evaluated sub-network. Sizes in bytes per storage format; WER as fractions per split;
    ``rtf``: compute seconds per audio second, streaming, batch 1, 1 thread."""

    method: str
    name: str
    source: str  # run directory the weights come from
    config: dict[str, float]  # gene -> sparsity (empty = dense)
    sparsity: Optional[float]  # the uniform value, None for a searched configuration
    size_bytes: dict[str, int] = field(default_factory=dict)
    nonzero_params: int = 0
    wer: dict[str, float] = field(default_factory=dict)
    rtf: Optional[float] = None
    search_dev_wer: Optional[float] = None  # the search's fitness (dev subset), searched points only

    def key(self) -> str:
        return f"{self.method}:{self.name}"


@dataclass
class ExperimentLayout:
    """Run directories of an experiment; ``dense_dir`` overrides ``root/dense`` (a dense run kept elsewhere)."""

    root: Path
    dense_dir: Optional[Path] = None

    @property
    def dense(self) -> Path:
        return Path(self.dense_dir) if self.dense_dir is not None else self.root / "dense"

    @property
    def supernet(self) -> Path:
        return self.root / "supernet"

    @property
    def pareto(self) -> Path:
        return self.supernet / "search" / "pareto.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def individual(self) -> list[Path]:
        """``prune-*`` run directories, by target sparsity."""
        def target(p: Path) -> float:
            try:
                return float(p.name.split("-", 1)[1])
            except ValueError:
                return float("inf")
        return sorted((p for p in self.root.glob("prune-*") if p.is_dir()), key=target)


def run_cost(run_dir: Path) -> dict[str, Any]:
    """``cost.json`` of a training run (wall_s, optimizer_steps, fwd_bwd_passes, audio seconds)."""
    path = Path(run_dir) / "cost.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_cache(path: Path) -> dict[str, Point]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {p["method"] + ":" + p["name"]: Point(**p) for p in data.get("points", [])}


def save_cache(path: Path, points: dict[str, Point]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"points": [asdict(p) for p in points.values()]}, indent=2) + "\n")


def read_pareto(path: Path) -> tuple[str, list[dict]]:
    """``(format, front)`` of a search's pareto.json: the monotone Pareto front ``[{config, size_bytes,
    wer, ...}]`` sorted by size (the lowest WER under any size limit is always on it)."""
    data = json.loads(path.read_text())
    rows = data.get("front", [])
    return data.get("format", "int8-sparse"), sorted(rows, key=lambda r: r["size_bytes"])


def best_under(pareto: list[dict], max_bytes: int) -> Optional[dict]:
    """The lowest-WER Pareto row with ``size_bytes <= max_bytes`` (None if there is none)."""
    fits = [r for r in pareto if r["size_bytes"] <= max_bytes]
    return min(fits, key=lambda r: (r["wer"], r["size_bytes"])) if fits else None


def size_fields(space, config: dict[str, float]) -> dict[str, Any]:
    return {"size_bytes": {f: space.size_bytes(config, f) for f in FORMATS},
            "nonzero_params": space.nonzero_params(config)}
