"""Hostile exports: an ``export`` directory whose ``meta.json`` disagrees with its weights (model config,
sub-network config, granularity, format, artefact and layout versions, streaming summary) or lists a
file outside it; ONNX directories with garbage graphs, missing, mistyped or other-version metadata, or
metadata that does not fit the graphs. ``transcribe`` / ``eval`` / ``check-onnx`` answer each with one
error line (exit status 2), never a traceback; ``export-onnx`` into a non-empty directory follows the
rule of ``export``.

Covered elsewhere (not repeated): another layout version and another model config's artefact
(``test_untrusted.py``), damaged export files (``tests/io/test_export_dir.py``,
``tests/export/test_subnet.py``), broken sherpa-onnx exports (``tests/deploy/test_sherpa.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omnisparse.cli import main
from omnisparse.utils.faults import held_dir, tree_digest
from omnisparse.utils.hostile_inputs import EXPORT_META_EDITS, ONNX_META_EDITS, set_onnx_metadata


@pytest.fixture(scope="module")
def sparse_export(tiny_run, tmp_path_factory) -> Path:
    from omnisparse.export.subnet import export_subnet

    out = tmp_path_factory.mktemp("hostile") / "export"
    export_subnet(tiny_run, "uniform:0.5", "int8-sparse", out)
    return out


@pytest.fixture(scope="module")
def onnx_dir(sparse_export, tmp_path_factory) -> Path:
    from omnisparse.deploy.onnx_export import export_onnx

    return export_onnx(sparse_export, tmp_path_factory.mktemp("hostile") / "onnx").path


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "x.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)
    return path


def _one_line(capsys, rc: int, want_rc: int = 2) -> str:
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("omnisparse: error")]
    assert rc == want_rc and len(lines) == 1, (rc, lines)
    return lines[0]


@pytest.mark.parametrize("kind", list(EXPORT_META_EDITS))
def test_export_meta_disagreeing_with_its_weights(sparse_export, wav, tmp_path, capsys, kind):
    edit, words = EXPORT_META_EDITS[kind]
    d = shutil.copytree(sparse_export, tmp_path / "e")
    meta = json.loads((d / "meta.json").read_text())
    edit(meta)
    (d / "meta.json").write_text(json.dumps(meta))
    before = tree_digest(d)
    assert words in _one_line(capsys, main(["transcribe", str(d), str(wav)]))
    assert words in _one_line(capsys, main(["eval", str(d), "--splits", "dev", f"--out={tmp_path / 'ev'}"]))
    assert tree_digest(d) == before and not (tmp_path / "ev").exists()


def test_the_untouched_export_loads(sparse_export, wav, capsys):
    assert main(["transcribe", str(sparse_export), str(wav)]) == 0


@pytest.mark.parametrize("kind", [*ONNX_META_EDITS, "garbage graph", "garbage tokenizer", "garbage stats"])
def test_onnx_export_with_wrong_metadata(onnx_dir, wav, tmp_path, capsys, kind):
    d = shutil.copytree(onnx_dir, tmp_path / "o")
    if kind in ONNX_META_EDITS:
        changes, words = ONNX_META_EDITS[kind]
        set_onnx_metadata(d / "encoder.onnx", changes)
    else:
        name, words = {"garbage graph": ("encoder.onnx", "not a loadable ONNX graph"),
                       "garbage tokenizer": ("tokenizer.model", "tokenizer.model is unreadable"),
                       "garbage stats": ("global_stats.json", "global_stats.json is corrupt")}[kind]
        (d / name).write_bytes(b"\xff\xfe garbage" * 50)
    assert words in _one_line(capsys, main(["check-onnx", str(d), "--max-utts", "1"]))
    assert "is an ONNX export" in _one_line(capsys, main(["transcribe", str(d), str(wav)]))


def test_export_onnx_refuses_a_non_empty_directory_like_export(sparse_export, onnx_dir, tiny_run, tmp_path, capsys):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, words in [(other, "already exists and is not empty"), (a_file, "is not a directory"),
                       (onnx_dir, "already exists and is not empty")]:
        before = tree_digest(out) if out.is_dir() else out.read_text()
        for cmd in (["export-onnx", str(sparse_export)], ["export", str(tiny_run), "--sparsity", "0.5"]):
            assert words in _one_line(capsys, main([*cmd, "--out", str(out)]))
        assert (tree_digest(out) if out.is_dir() else out.read_text()) == before
    with held_dir(other, "omnisparse train") as holder:
        for cmd in (["export-onnx", str(sparse_export)], ["export", str(tiny_run), "--sparsity", "0.5"]):
            line = _one_line(capsys, main([*cmd, "--out", str(other), "--overwrite"]), want_rc=1)
            assert f"in use by pid {holder.pid}" in line
    assert main(["export-onnx", str(sparse_export), "--out", str(other), "--overwrite"]) == 0
    assert (other / "encoder.onnx").is_file() and not (other / "keep.txt").exists()
