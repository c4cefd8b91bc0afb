"""Untrusted files: weights load only through safetensors + JSON, a file from another model config or
format version is refused with a message naming the mismatch, and nothing in ``src/`` unpickles.

Already covered elsewhere (not repeated here): resuming into another model config
(``tests/train/test_trainer.py::test_resume_with_other_model_config_is_refused``), initialising a
supernet / encoder from another config (``tests/train/test_supernet.py``, ``tests/train/test_pretrain.py``),
an artefact of another format version and corrupt artefact headers (``tests/export/test_format.py``),
corrupt or incomplete export directories (``tests/export/test_subnet.py``), decoding with streaming
settings the model was not trained for (``tests/test_cli.py``), a search resumed with other settings
(``tests/search/test_evolution.py``).
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.export.loading import load_model
from omnisparse.io import checkpoint as ck

SRC = Path(__file__).resolve().parents[2] / "src" / "omnisparse"


def _error_lines(capsys) -> list[str]:
    """The command's error lines (stderr also holds progress bars and warnings); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("omnisparse: error")]


# ---------------------------------------------------------------------------------------------- static check

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Places in ``source`` that can unpickle (``file:line what``): an import of a pickling module,
    ``torch.load`` / ``torch.jit.load`` without ``weights_only=True``, ``np.load(allow_pickle=True)``,
    ``yaml.load`` / ``yaml.unsafe_load`` (only ``yaml.safe_load`` is allowed), ``pandas.read_pickle``."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            out += [f"{filename}:{node.lineno} import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            out.append(f"{filename}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if name.endswith("jit.load"):  # TorchScript archives hold pickles
                out.append(f"{filename}:{node.lineno} {name}(...)")
            elif name.endswith("torch.load"):
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    out.append(f"{filename}:{node.lineno} {name}(...) without weights_only=True")
            elif name.endswith(("np.load", "numpy.load")):
                ap = kw.get("allow_pickle")
                if not (ap is None or isinstance(ap, ast.Constant) and ap.value is False):
                    out.append(f"{filename}:{node.lineno} {name}(allow_pickle=...)")
            elif name.endswith(("yaml.load", "yaml.unsafe_load", "yaml.full_load", "read_pickle")):
                out.append(f"{filename}:{node.lineno} {name}(...)")
    return out


def test_the_static_check_finds_what_it_looks_for():
    bad = """
import pickle
from dill import loads
import torch, numpy as np, yaml
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
torch.jit.load("m.pt")
np.load("a.npy", allow_pickle=True)
yaml.load(open("c.yaml"))
"""
    found = unsafe_calls(bad)
    assert len(found) == 7, found
    ok = """
import torch, numpy as np, yaml, json
torch.load("x.pt", weights_only=True)
np.load("a.npy")
yaml.safe_load(open("c.yaml"))
json.loads("{}")
"""
    assert unsafe_calls(ok) == []


def test_no_code_path_in_src_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the package, not an empty directory
    found = [hit for f in files for hit in unsafe_calls(f.read_text(), str(f.relative_to(SRC.parent)))]
    assert found == []


# ---------------------------------------------------------------------------------------------- checkpoints

def _cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=4",
                                "--train.ckpt_every=2", "--train.keep_last=0", *extra])


def _set_format_version(ckpt: Path, version, by="9.9.9") -> None:
    """What another release writes: its own version, state.json sealed with its checksum (an edit that
    leaves the old checksum is damage, not a version: ``test_state_bitflip.py``)."""
    state = json.loads((ckpt / "state.json").read_text())
    state["format_version"] = version
    state["omnisparse_version"] = by
    ck.write_state(ckpt, state)


def test_checkpoint_of_another_format_version_is_refused_not_set_aside(tiny_corpus, tmp_path, capsys):
    """A newer release's checkpoint is intact: resuming must neither skip it as corrupt nor start
    over beside it; eval / transcribe say which versions differ, in one line."""
    from omnisparse.train.registry import train

    run = tmp_path / "r"
    train(_cfg(tiny_corpus, run))
    newest = run / "ckpt-00000004"
    _set_format_version(newest, 2)
    with pytest.raises(ck.CheckpointVersionError, match=r"format version 2 \(written by omnisparse 9\.9\.9\).*version 1"):
        train(_cfg(tiny_corpus, run, "--train.max_steps=6"))
    assert newest.is_dir() and not list(run.glob("*.corrupt")) and not (run / "ckpt-00000006").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--splits", "dev"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "format version 2" in err[0]
    assert main(["train", "--config", "tiny", f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={run}",
                 "--train.max_steps=6"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "format version 2" in err[0]


def test_checkpoint_without_a_version_is_corrupt_and_falls_back(tiny_corpus, tmp_path, caplog):
    """No version at all (or a non-integer one) is damage, not a release: the previous checkpoint is used."""
    from omnisparse.train.registry import train

    run = tmp_path / "r"
    train(_cfg(tiny_corpus, run))
    _set_format_version(run / "ckpt-00000004", "1")
    found = ck.latest_checkpoint(run)
    assert found is not None and found[0].name == "ckpt-00000002"
    assert "no valid format_version" in caplog.text


def test_checkpoint_weights_of_another_config_are_named(tiny_corpus, tiny_run, tmp_path, capsys):
    """model.safetensors swapped for another config's (checksums updated, so only the shapes tell)."""
    from omnisparse.train.registry import train

    other = tmp_path / "other"
    train(_cfg(tiny_corpus, other, "--model.d_model=48", "--train.max_steps=2"))
    ckpt = shutil.copytree(ck.resolve_checkpoint(tiny_run)[0], tmp_path / "swapped")
    shutil.copy(other / "ckpt-00000002" / "model.safetensors", ckpt / "model.safetensors")
    state = json.loads((ckpt / "state.json").read_text())
    state["sha256"]["model.safetensors"] = ck.sha256(ckpt / "model.safetensors")
    ck.write_state(ckpt, state)
    with pytest.raises(ck.CheckpointError, match=r"shape mismatch .*\(48"):
        load_model(ckpt)
    capsys.readouterr()
    assert main(["transcribe", str(ckpt), "x.wav"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "shape mismatch" in err[0]


# ---------------------------------------------------------------------------------------------- exports

@pytest.fixture(scope="module")
def dense_export(tiny_run, tmp_path_factory) -> Path:
    from omnisparse.export.subnet import export_subnet

    out = tmp_path_factory.mktemp("untrusted") / "export"
    export_subnet(tiny_run, "uniform:0", "fp32-dense", out)
    return out


def _rewrite_meta(d: Path, **changes) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta.update(changes)
    (d / "meta.json").write_text(json.dumps(meta))


def test_export_of_another_layout_version_is_refused(dense_export, tmp_path, capsys):
    d = shutil.copytree(dense_export, tmp_path / "v2")
    _rewrite_meta(d, export_version=2, omnisparse_version="9.9.9")
    with pytest.raises(ck.CheckpointError, match=r"export layout version 2 \(written by omnisparse 9\.9\.9\)"):
        load_model(d)
    assert main(["transcribe", str(d), "x.wav"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "export layout version 2" in err[0]
    load_model(dense_export)  # the untouched export loads


def test_export_artefact_of_another_model_config_is_named(dense_export, tiny_run, tmp_path):
    """An artefact written for another model (d_model 48) put into the export, checksums updated."""
    from omnisparse.export.writer import write_artefact
    from omnisparse.models.transducer import Transducer
    from omnisparse.sparsity.masks import MaskSpec

    d = shutil.copytree(dense_export, tmp_path / "swapped")
    mcfg = load_model(tiny_run).config.model
    mcfg.d_model = 48
    write_artefact(d / "model.safetensors", Transducer.from_config(mcfg), {}, "fp32-dense", MaskSpec("unstructured", 8))
    meta = json.loads((d / "meta.json").read_text())
    meta["files"]["model.safetensors"] = ck.sha256(d / "model.safetensors")
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError, match=r"differing keys .*'d_model': \(48, "):
        load_model(d)


class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code run by a malicious file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_in_place_of_safetensors_is_refused_unopened(tiny_run, tmp_path, capsys):
    """A checkpoint whose model.safetensors is a pickle (checksum updated to match): refused in one
    line, and the pickle is never run."""
    import pickle

    ckpt = shutil.copytree(ck.resolve_checkpoint(tiny_run)[0], tmp_path / "pickled")
    marker = tmp_path / "pwned"
    (ckpt / "model.safetensors").write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    state = json.loads((ckpt / "state.json").read_text())
    state["sha256"]["model.safetensors"] = ck.sha256(ckpt / "model.safetensors")
    ck.write_state(ckpt, state)
    with pytest.raises(ck.CheckpointError, match="not a readable safetensors file"):
        load_model(ckpt)
    capsys.readouterr()
    assert main(["transcribe", str(ckpt), "x.wav"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "not a readable safetensors file" in err[0]
    assert not marker.exists()
