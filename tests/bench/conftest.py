"""Benchmark scripts are files, not a package: fixtures load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench("anchor")`` -> the module ``bench/anchor.py``; its sibling modules import by name,
    as they do when the script runs (``bench/`` first on ``sys.path``)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
