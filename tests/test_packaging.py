"""A non-editable install carries everything the package reads at run time (presets, type marker)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("checkout")  # a copy: the build writes build/ beside pyproject.toml
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"pip wheel failed: {r.stderr[-2000:]}")
    (whl,) = out.glob("omnisparse-*.whl")
    return whl


def test_wheel_holds_every_preset_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.name for p in (ROOT / "src" / "omnisparse" / "conf").glob("*.yaml")}
    assert presets and {f"omnisparse/conf/{p}" for p in presets} <= names
    assert "omnisparse/py.typed" in names
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "omnisparse").rglob("*.py")}
    assert modules <= names, sorted(modules - names)


def test_installed_copy_loads_presets_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    code = ("import omnisparse, omnisparse.config as c; "
            f"assert omnisparse.__file__.startswith({str(target)!r}), omnisparse.__file__; "
            "print(c.load_config('small').model.d_model)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().isdigit()


def test_pip_installed_cli_trains_tiny_from_another_directory(wheel, tiny_corpus, tmp_path):
    """``pip install`` of the wheel (not editable), then its ``omnisparse`` command run elsewhere: the
    preset comes from the installed package, and two steps train and checkpoint."""
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target), str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([str(target / "bin" / "omnisparse"), "train", "--config", "tiny",
                        f"--data.corpus_dir={tiny_corpus}", "--train.out_dir=run", "--train.max_steps=2",
                        "--train.valid_every=0", "--train.ckpt_every=2", "--train.threads=1"],
                       cwd=work, capture_output=True, text=True,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "run" / "ckpt-00000002" / "model.safetensors").is_file()
