"""``omnisparse import-model``: an export back as a checkpoint, and fitting its training-only heads."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from omnisparse.cli import main
from omnisparse.config import ConfigError, load_config
from omnisparse.export.import_model import import_model
from omnisparse.export.loading import load_model
from omnisparse.export.subnet import export_subnet
from omnisparse.io.checkpoint import CheckpointError, verify_checkpoint
from omnisparse.train.registry import train
from omnisparse.train.trainer import Trainer

HEADS = ("ctc_head.", "simple_joint.")
# the `small` recipe's training-only heads: a CTC head and the pruned loss's own simple joint
WITH_HEADS = ("--model.loss=pruned", "--model.simple_proj=true", "--model.ctc_weight=0.3", "--data.max_duration=15")


def _cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", *WITH_HEADS, *extra])


@pytest.fixture(scope="module")
def int8_export(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("import")
    train(_cfg(tiny_corpus, root / "run", "--train.max_steps=3", "--train.ckpt_every=3"))
    export_subnet(root / "run", "uniform:0", "int8-sparse", root / "int8")
    return root / "int8"


def test_imported_checkpoint_decodes_like_the_export(int8_export, tmp_path):
    ckpt = import_model(int8_export, tmp_path / "imp")
    state = verify_checkpoint(ckpt)
    assert state["kind"] == "imported" and state["step"] == 0
    assert state["imported_from"]["format"] == "int8-sparse" and state["imported_from"]["fresh_heads"] == ["ctc_head", "simple_joint"]
    assert not (ckpt / "optimizer.safetensors").exists()
    exp, imp = load_model(int8_export), load_model(ckpt)
    x = torch.randn(1, 60, exp.model.config.feat_dim)
    lengths = torch.tensor([60])
    with torch.no_grad():
        a, la = exp.model.encoder(x, lengths)
        b, lb = imp.model.encoder(x, lengths)
    assert torch.equal(a, b) and torch.equal(la, lb)
    own = load_file(str(ckpt / "model.safetensors"))
    for k, v in exp.model.state_dict().items():
        if not k.startswith(HEADS):
            assert torch.equal(own[k], v), k


def test_fitting_the_heads_moves_only_them(int8_export, tiny_corpus, tmp_path):
    ckpt = import_model(int8_export, tmp_path / "imp")
    start = load_file(str(ckpt / "model.safetensors"))
    trainer = Trainer(_cfg(tiny_corpus, tmp_path / "heads", f"--train.init_from={ckpt}", "--train.max_steps=2",
                           "--train.ckpt_every=2", "--train.trainable=[ctc_head., simple_joint.]"))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, start[k]), k  # started from every imported tensor
    trainer.run()
    assert trainer.cost["init_from"] == str(ckpt)
    after = load_file(str(tmp_path / "heads" / "ckpt-00000002" / "model.safetensors"))
    moved = {k for k in after if not torch.equal(after[k], start[k])}
    assert moved and all(k.startswith(HEADS) for k in moved), moved
    assert any(k.startswith("ctc_head.") for k in moved) and any(k.startswith("simple_joint.") for k in moved)


def test_bad_inputs_are_one_line_errors(int8_export, tiny_corpus, tmp_path, capsys):
    ckpt = import_model(int8_export, tmp_path / "imp")
    with pytest.raises(CheckpointError, match="already exists"):
        import_model(int8_export, ckpt)
    assert main(["import-model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not an `omnisparse export` directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name no parameter"):
        Trainer(_cfg(tiny_corpus, tmp_path / "typo", f"--train.init_from={ckpt}", "--train.trainable=[ctc.]"))
    with pytest.raises(ConfigError, match="train.init_from"):
        _cfg(tiny_corpus, tmp_path / "both", f"--train.init_from={ckpt}", f"--sparsity.init_from={ckpt}")
    with pytest.raises(CheckpointError, match="another model config"):
        Trainer(_cfg(tiny_corpus, tmp_path / "other", f"--train.init_from={ckpt}", "--model.d_model=48"))


def test_cli_import_model(int8_export, tmp_path, capsys):
    assert main(["import-model", str(int8_export), "--out", str(tmp_path / "imp")]) == 0
    assert "imported" in capsys.readouterr().out
    assert (tmp_path / "imp" / "tokenizer.model").read_bytes() == (int8_export / "tokenizer.model").read_bytes()
