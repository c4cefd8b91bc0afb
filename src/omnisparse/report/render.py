"""Render a report: WER-vs-size plot (PNG), Markdown table, and the headline comparison.

The headline (the claim of Yang et al., "Omni-sparsity DNN", ICASSP 2022, reproduced in spirit): for every individually pruned model, the best
searched sub-network no larger than it should have a test-other WER at least 2% lower (relative),
with a supernet that cost no more than one individually pruned run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omnisparse.report.points import Point
from omnisparse.utils.plotting import saved_figure

STYLE = {  # method -> (label, marker, line style)
    "dense": ("dense model", "*", ""),
    "individual": ("individually pruned", "s", "-"),
    "supernet-uniform": ("supernet, uniform sparsity", "o", "--"),
    "supernet-searched": ("supernet, searched", "^", "-"),
}


def headline_split(splits: list[str]) -> str:
    """The split of the headline comparison: test-other when reported, else the last split."""
    return "test-other" if "test-other" in splits else splits[-1]


def headline(points: list[Point], fmt: str, split: str = "test-other", min_rel: float = 0.02) -> list[dict[str, Any]]:
    """Per individual model: the best searched point no larger than it and the relative WER gain."""
    searched = [p for p in points if p.method == "supernet-searched" and split in p.wer]
    rows = []
    for ind in (p for p in points if p.method == "individual" and split in p.wer):
        limit = ind.size_bytes[fmt]
        fits = [p for p in searched if p.size_bytes[fmt] <= limit]
        best: Optional[Point] = min(fits, key=lambda p: p.wer[split]) if fits else None
        rel = None if best is None or ind.wer[split] == 0 else (ind.wer[split] - best.wer[split]) / ind.wer[split]
        rows.append({"individual": ind.name, "size_bytes": limit, "individual_wer": ind.wer[split],
                     "searched": best.name if best else None, "searched_size_bytes": best.size_bytes[fmt] if best else None,
                     "searched_wer": best.wer[split] if best else None, "relative_gain": rel,
                     "meets_target": rel is not None and rel >= min_rel})
    return rows


def plot(points: list[Point], fmt: str, splits: list[str], path: Path, title: str = "") -> None:
    """WER vs size (MB, ``fmt``), one panel per split."""
    splits = [s for s in splits if any(s in p.wer for p in points)]
    with saved_figure(path, 1, len(splits), figsize=(5.5 * len(splits), 4.3), squeeze=False) as (fig, axes):
        for ax, split in zip(axes[0], splits):
            for method, (label, marker, ls) in STYLE.items():
                pts = sorted((p for p in points if p.method == method and split in p.wer), key=lambda p: p.size_bytes[fmt])
                if not pts:
                    continue
                xs = [p.size_bytes[fmt] / 1e6 for p in pts]
                ax.plot(xs, [p.wer[split] for p in pts], marker=marker, ls=ls or "none", label=label,
                        markersize=9 if method == "dense" else 6)
            ax.set_xlabel(f"model size, {fmt} (MB)")
            ax.set_ylabel(f"WER {split} (greedy, streaming)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)


def _fmt_wer(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(points: list[Point], fmt: str, splits: list[str], costs: dict[str, Any],
             search: Optional[dict] = None, plot_name: str = "wer_vs_size.png") -> str:
    """The report as Markdown: points table, training cost per method, search cost, headline."""
    lines = [f"# WER vs size ({fmt})", "", f"![WER vs size]({plot_name})", "",
             "| method | point | sparsity | size (MB) | nonzero params | " + " | ".join(f"WER {s} (%)" for s in splits)
             + " | RTF stream |",
             "|---|---|---|---:|---:|" + "---:|" * len(splits) + "---:|"]
    for p in sorted(points, key=lambda p: (list(STYLE).index(p.method), p.size_bytes.get(fmt, 0))):
        sp = "-" if p.sparsity is None else f"{p.sparsity:g}"
        rtf = "-" if p.rtf is None else f"{p.rtf:.3f}"
        lines.append(f"| {p.method} | {p.name} | {sp} | {p.size_bytes.get(fmt, 0) / 1e6:.3f} | {p.nonzero_params:,} | "
                     + " | ".join(_fmt_wer(p.wer.get(s)) for s in splits) + f" | {rtf} |")
    lines += ["", "## Training cost", "", "| method | runs | wall (min) | optimizer steps | forward/backward passes |",
              "|---|---:|---:|---:|---:|"]
    for method, c in costs.items():
        per = c.get("per_run", [c])
        wall = sum(r.get("wall_s", 0.0) for r in per) / 60
        lines.append(f"| {method} | {len(per)} | {wall:.1f} | {sum(r.get('optimizer_steps', 0) for r in per):,} | "
                     f"{sum(r.get('fwd_bwd_passes', 0) for r in per):,} |")
    if search:
        lines += ["", f"Search: {search.get('evaluated', '?')} candidates evaluated in "
                  f"{search.get('wall_s', 0) / 60:.1f} min over {search.get('generations', '?')} generations."]
    split = headline_split(splits)
    rows = headline(points, fmt, split)
    if rows:
        lines += ["", f"## Searched vs individually pruned ({split}, target: >= 2% relative lower WER)", "",
                  "| individual | size (MB) | WER (%) | best searched <= size | size (MB) | WER (%) | relative gain |",
                  "|---|---:|---:|---|---:|---:|---:|"]
        for r in rows:
            gain = "-" if r["relative_gain"] is None else f"{100 * r['relative_gain']:+.1f}%"
            ssize = "-" if r["searched_size_bytes"] is None else f"{r['searched_size_bytes'] / 1e6:.3f}"
            lines.append(f"| {r['individual']} | {r['size_bytes'] / 1e6:.3f} | {_fmt_wer(r['individual_wer'])} | "
                         f"{r['searched'] or '-'} | {ssize} | {_fmt_wer(r['searched_wer'])} | {gain} |")
    return "\n".join(lines) + "\n"
