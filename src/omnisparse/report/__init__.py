"""``omnisparse report EXP``: WER vs size of the dense model, the individually pruned baselines and the
supernet's uniform and searched sub-networks, with training and search cost.

Writes ``EXP/report/points.json`` (evaluation cache and machine-readable result), ``report.md`` and
``wer_vs_size.png``. See :mod:`omnisparse.report.points` for the expected directory layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from omnisparse.report.points import ExperimentLayout, run_cost


def search_summary(layout: ExperimentLayout) -> Optional[dict[str, Any]]:
    if not layout.pareto.exists():
        return None
    data = json.loads(layout.pareto.read_text())
    return {"format": data.get("format"), **data.get("cost", {})}


def costs(layout: ExperimentLayout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if layout.dense.exists():
        out["dense"] = run_cost(layout.dense)
    ind = [dict(run_cost(r), run=r.name) for r in layout.individual()]
    if ind:
        out["individual"] = {"per_run": ind}
    if layout.supernet.exists():
        out["supernet"] = run_cost(layout.supernet)
    return out


def build_report(exp_dir: str | Path, dense_dir: str | Path | None = None, splits: Optional[list[str]] = None, uniform: Optional[list[float]] = None,
                 fmt: Optional[str] = None, rtf_utts: int = 20, test_subset: int = 0, progress: bool = True) -> dict:
    """Evaluate what is missing, render the report; returns ``{points, costs, search, headline, paths}``."""
    from omnisparse.report.collect import evaluate
    from omnisparse.report.render import headline, headline_split, markdown, plot

    layout = ExperimentLayout(Path(exp_dir), Path(dense_dir) if dense_dir else None)
    if not any(p.exists() for p in (layout.dense, layout.supernet)) and not layout.individual():
        raise FileNotFoundError(f"{exp_dir}: no dense/, supernet/ or prune-*/ run to report on")
    splits = splits or ["dev", "test-clean", "test-other"]
    uniform = [0.5, 0.7, 0.8, 0.9] if uniform is None else uniform
    search = search_summary(layout)
    fmt = fmt or (search or {}).get("format") or "int8-sparse"
    points = evaluate(layout, splits, uniform, rtf_utts=rtf_utts, test_subset=test_subset, progress=progress)
    out = layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    png = out / "wer_vs_size.png"
    plot(points, fmt, [s for s in splits if s.startswith("test")] or splits, png, title=str(exp_dir))
    cost = costs(layout)
    md = out / "report.md"
    md.write_text(markdown(points, fmt, splits, cost, search, png.name))
    return {"points": [asdict(p) for p in points], "costs": cost, "search": search, "format": fmt,
            "headline": headline(points, fmt, headline_split(splits)), "paths": {"markdown": str(md), "plot": str(png),
                                                          "points": str(out / "points.json")}}
