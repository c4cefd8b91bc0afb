from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omnisparse.utils.proc_memory import PROC, PeakRssSampler, tree_rss_bytes

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")

HOLD = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"


def test_tree_rss_counts_a_child_process():
    alone = tree_rss_bytes(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with_child = tree_rss_bytes(os.getpid())
        assert with_child - alone >= 180 * 2**20
        assert tree_rss_bytes(child.pid) >= 200 * 2**20
    finally:
        child.kill()
        child.wait()


def test_sampler_keeps_peak_per_label():
    label = ["a"]
    with PeakRssSampler(os.getpid(), lambda: label[0], interval_s=0.05) as rss:
        label[0] = "b"
        rss.sample()
    assert set(rss.peaks) >= {"a", "b"}
    assert all(v > 10 * 2**20 for v in rss.peaks.values())
    assert tree_rss_bytes(2**22 + 12345) == 0  # no such process: nothing counted
