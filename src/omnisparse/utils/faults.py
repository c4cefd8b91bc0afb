"""Fault injection for the reliability tests (``tests/faults``) and ``bench/faults.py``.

* :func:`run_killed` starts an ``omnisparse`` command in its own process group and SIGKILLs the
  whole group when a condition becomes true (a checkpoint appears, a delay passes), as ``kill -9``
  or a lost machine would;
* :func:`disk_full` makes a function raise ``OSError(ENOSPC)`` after it has been called ``n`` times;
* comparisons: :func:`weights_equal` (bitwise, every tensor of two ``.safetensors`` files) and
  :func:`tree_digest` (sha256 of every file under a directory).

Nothing here is used by training or inference.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["KillResult", "omnisparse_cmd", "run_killed", "checkpoint_exists", "disk_full", "weights_equal",
           "tree_digest", "child_env"]


@dataclass
class KillResult:
    killed: bool  # True when the SIGKILL was sent before the command ended by itself
    returncode: int
    seconds: float
    output: str  # the command's stdout + stderr (last 4000 characters)


def omnisparse_cmd(*args: str) -> list[str]:
    """``python -m omnisparse.cli ARGS`` with this interpreter (the venv's, in tests)."""
    return [sys.executable, "-m", "omnisparse.cli", *args]


def child_env(threads: int = 1) -> dict[str, str]:
    """The environment for a child run: one intra-op thread, no progress-bar noise."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}


def run_killed(cmd: Sequence[str], kill_when: Optional[Callable[[], bool]] = None, delay_s: float = 0.0,
               timeout_s: float = 600.0, poll_s: float = 0.005, env: Optional[dict] = None,
               cwd: Optional[str | os.PathLike] = None) -> KillResult:
    """Run ``cmd``; SIGKILL its process group ``delay_s`` seconds after ``kill_when()`` first returns
    True (``kill_when=None``: ``delay_s`` after the start). The command may finish first
    (``killed=False``). A command still running after ``timeout_s`` is killed and raises TimeoutError."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"omnisparse-fault-{os.getpid()}-{time.monotonic_ns()}.log"
    t0 = time.monotonic()
    with open(log, "w+b") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env if env is not None else child_env(), cwd=cwd)
        fire_at = t0 + delay_s if kill_when is None else None
        killed = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if fire_at is None and kill_when is not None and kill_when():
                    fire_at = now + delay_s
                if fire_at is not None and now >= fire_at:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                if now - t0 > timeout_s:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise TimeoutError(f"{' '.join(cmd)} still running after {timeout_s} s")
                time.sleep(poll_s)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    log.unlink(missing_ok=True)
    # a SIGKILL that raced with a normal exit counts as not killed
    killed = killed and rc == -signal.SIGKILL
    return KillResult(killed, rc, time.monotonic() - t0, text[-4000:])


def checkpoint_exists(run_dir: str | os.PathLike, step: int) -> Callable[[], bool]:
    """A ``kill_when`` condition: ``RUN/ckpt-<step>`` has been renamed into place."""
    path = Path(run_dir) / f"ckpt-{step:08d}"
    return path.is_dir


class disk_full:
    """A stand-in for ``fn`` that behaves like it for ``after`` calls, then raises ENOSPC (every call).

    >>> monkeypatch.setattr(checkpoint, "save_file", disk_full(checkpoint.save_file, after=3))
    """

    def __init__(self, fn: Callable, after: int = 0):
        self.fn = fn
        self.after = after
        self.calls = 0
        self.raised = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            self.raised += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fn(*args, **kwargs)


def weights_equal(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two safetensors files hold the same tensor names with bitwise identical values."""
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]) for k in ta)


def tree_digest(root: str | os.PathLike, pattern: str = "*", exclude: Sequence[str] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` matching ``pattern`` (names starting
    with one of ``exclude`` left out)."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob(pattern)):
        rel = str(p.relative_to(root))
        if p.is_file() and not any(rel.startswith(e) for e in exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
