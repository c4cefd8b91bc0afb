"""Metrics to CSV and TensorBoard (and the dev-WER curve read back from the CSV), and the run's
environment record."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from omnisparse.io.atomic import atomic_write_text
from omnisparse.utils.provenance import git_commit, machine


class MetricLogger:
    """Append rows of scalars to ``RUN/metrics.csv`` (one file, columns grow as new keys appear)
    and to TensorBoard under ``RUN/tb``. Only rank 0 should create one."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path) as f:
                self.rows = list(csv.DictReader(f))
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (they belong to work lost by an interruption)."""
        self.rows = [r for r in self.rows if int(float(r["step"])) <= step]
        self._rewrite()

    def log(self, step: int, **values: float | str) -> None:
        row = {"step": step, **values}
        self.rows.append(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        self._rewrite()

    def _rewrite(self) -> None:
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue(), fsync=False)  # rewritten at every row: no fsync

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_dev_curve(run_dir: str | Path, max_step: Optional[int] = None) -> list[dict[str, Any]]:
    """The dev-WER curve of a run from its ``RUN/metrics.csv`` (as :class:`MetricLogger` writes it):
    ``[{"step": int, "wall_s": float, "dev_wer": float}]`` in logged order, one per validation row
    (a row with a ``dev_wer``), up to ``max_step`` included (None: all); ``wall_s`` is None where a
    row lacks it."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    curve = []
    for r in rows:
        if not r.get("dev_wer"):
            continue
        step = int(float(r["step"]))
        if max_step is not None and step > max_step:
            continue
        curve.append({"step": step, "wall_s": float(r["wall_s"]) if r.get("wall_s") else None,
                      "dev_wer": float(r["dev_wer"])})
    return curve


def write_run_record(run_dir: str | Path, cfg_dict: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """``RUN/run.json``: config, git commit, machine, library versions, command line."""
    import lhotse
    import sentencepiece

    rec = {
        "config": cfg_dict,
        "commit": git_commit(),
        "machine": machine(),
        "argv": sys.argv,
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "lhotse": lhotse.__version__, "sentencepiece": sentencepiece.__version__},
        "env": {k: v for k, v in os.environ.items() if k in ("OMP_NUM_THREADS", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES")},
        **(extra or {}),
    }
    atomic_write_text(Path(run_dir) / "run.json", json.dumps(rec, indent=2, default=str))
