"""Resident memory of a process tree, sampled from ``/proc`` (Linux), for the benchmarks that report
the peak memory of each stage of a job.

A job's stages are often several processes (``torchrun`` and its ranks, dataloader workers, a
corpus build's synthesiser subprocesses), so the figure that matters to a user sizing a machine is
the resident set of the whole tree at once, not of one process: :func:`tree_rss_bytes` sums VmRSS
over a process and all its descendants (shared pages counted once per process, so an upper bound
of what the tree really occupies), and :class:`PeakRssSampler` keeps the largest sum seen per label
while a background thread samples it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

PROC = Path("/proc")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, breadth first (every process before its children), from
    ``/proc/<pid>/task/*/children``; a process that ends meanwhile is listed without its children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        try:
            for task in (PROC / str(p) / "task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # ended while we looked
            continue
    return out


def _rss_bytes(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # ended, or a kernel thread without VmRSS


def tree_rss_bytes(pid: int) -> Optional[int]:
    """Sum of VmRSS (bytes) of ``pid`` and all its descendants now; None where ``/proc`` is absent."""
    if not PROC.is_dir():
        return None
    return sum(_rss_bytes(p) for p in process_tree(pid))


class PeakRssSampler:
    """Samples :func:`tree_rss_bytes` of ``pid`` every ``interval_s`` seconds in a daemon thread and
    keeps the peak per label, the label being what ``label()`` returns at the sample (e.g. the
    current stage of a job). Use as a context manager; ``peaks`` maps label -> peak bytes."""

    def __init__(self, pid: int, label: Callable[[], str], interval_s: float = 0.5):
        self.pid, self.label, self.interval_s = pid, label, interval_s
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def sample(self) -> None:
        rss = tree_rss_bytes(self.pid)
        if rss is None:
            return
        key = self.label()
        self.peaks[key] = max(self.peaks.get(key, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakRssSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

