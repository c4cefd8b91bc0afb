"""Every bench script imports (so a moved or renamed module breaks a test, not a benchmark hours in)
and answers ``--help``; their full runs are the benchmarks themselves."""

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"

# scripts (a __main__ entry), not the helper modules they import
SCRIPTS = sorted(p.stem for p in BENCH_DIR.glob("*.py") if '__name__ == "__main__"' in p.read_text())


def test_every_script_is_listed():
    assert len(SCRIPTS) >= 14 and "omni_vs_individual" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_loads_and_answers_help(load_bench, name, monkeypatch, capsys):
    mod = load_bench(name)
    monkeypatch.setattr(sys, "argv", [f"bench/{name}.py", "--help"])
    with pytest.raises(SystemExit) as exc:
        mod.main() if name == "faults" else mod.main(["--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()
