from __future__ import annotations

import sys
import time

import pytest

from omnisparse.utils.faults import run_killed
from omnisparse.utils.proc_memory import PROC

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")

# a launcher whose worker runs in a session of its own, as torchrun starts its workers; argv[1]: where
# the worker's pid goes
LAUNCHER = ("import pathlib, subprocess, sys, time; "
            "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
            "pathlib.Path(sys.argv[1]).write_text(str(w.pid)); time.sleep(60)")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_run_killed_leaves_no_worker_of_another_session(tmp_path, how):
    """A launch that times out, or is SIGKILLed as a whole, takes its workers with it even where they
    left its process group (no orphan keeping a port or a run directory)."""
    pid_file = tmp_path / "worker.pid"
    cmd = [sys.executable, "-c", LAUNCHER, str(pid_file)]
    if how == "timeout":
        with pytest.raises(TimeoutError):
            run_killed(cmd, kill_when=pid_file.exists, delay_s=60, timeout_s=3)
    else:
        assert run_killed(cmd, kill_when=pid_file.exists, delay_s=0.2, timeout_s=30).killed
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)
