"""Provenance of a result: the command, the git commit, the machine and the date (the atomic writes
it uses are :mod:`omnisparse.io.atomic`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from omnisparse.io.atomic import atomic_write_text


def git_commit(cwd: str | Path | None = None, ignore: Iterable[str | Path] = ()) -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git.

    ``ignore``: files whose changes do not count (a benchmark's own outputs, e.g. the plot it wrote just
    before its JSON), so that a result written from a clean checkout does not call itself dirty.
    """
    cwd = cwd or Path(__file__).resolve().parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

        sha = git("rev-parse", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
        skip = {Path(p).resolve() for p in ignore}
        changed = [entry[3:] for entry in git("status", "--porcelain", "-z", "--untracked-files=no").split("\0")
                   if len(entry) > 3]
        dirty = [c for c in changed if (top / c).resolve() not in skip]
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(command: str | None = None, outputs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """``outputs``: files this result itself wrote; their changes do not make the commit dirty."""
    return {
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": git_commit(ignore=outputs),
        "machine": machine(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(path: str | Path, payload: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Write a benchmark result JSON with provenance keys merged in; returns what was written.

    The JSON itself and the plot named in ``payload["plot"]`` (if any) are this result's own outputs:
    rewriting them does not mark the commit dirty.
    """
    outputs = [Path(path)] + ([Path(payload["plot"])] if isinstance(payload.get("plot"), str) else [])
    out = {**payload, **provenance(command, outputs)}
    atomic_write_text(path, json.dumps(out, indent=2, sort_keys=False) + "\n")
    return out
