"""Figures written to disk by reports and benchmarks: one place for the headless backend and the save."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

DPI = 120


@contextmanager
def saved_figure(path: str | Path, nrows: int = 1, ncols: int = 1, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``with saved_figure(path, figsize=(7, 4)) as (fig, ax): ax.plot(...)`` - ``plt.subplots(nrows,
    ncols, **subplots)``; on leaving the block the figure is laid out, written to ``path`` (PNG by its
    suffix) and closed, also when the block raises (then nothing is written)."""
    fig, axes = plt.subplots(nrows, ncols, **subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
