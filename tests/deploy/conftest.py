"""Fixtures for the deployment tests: row-granularity exports of the tiny supernet, and of a "chatty"
random-weight copy of it (the 10-step tiny supernet emits only blanks, so transcripts alone would not
tell decoders apart; random weights emit varied tokens)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from lhotse import load_manifest
from safetensors.torch import save_file

from omnisparse.config import model_config_from_dict
from omnisparse.data.layout import CorpusLayout
from omnisparse.export.loading import load_model
from omnisparse.export.subnet import export_subnet, space_for
from omnisparse.io.atomic import sha256
from omnisparse.io.checkpoint import resolve_checkpoint, write_state
from omnisparse.models.transducer import Transducer

N_UTTS = 3  # dev utterances per transcript comparison


def nonuniform(space) -> dict[str, float]:
    """Every gene of the space, sparsities cycling through the grid (as in tests/export)."""
    levels = [0.0, 0.3, 0.9, 0.5, 0.7, 0.1, 0.8]
    return {g: levels[i % len(levels)] for i, g in enumerate(space.genes)}


def row_variant(ckpt: Path, dst: Path) -> Path:
    """A copy of checkpoint ``ckpt`` whose saved sparsity settings say ``row`` (predictor and joiner
    pruned too); state.json re-sealed with its new checksum."""
    dst = dst / ckpt.name
    shutil.copytree(ckpt, dst)
    state = json.loads((dst / "state.json").read_text())
    state["config"]["sparsity"].update(granularity="row", block=8, prune_pred_joiner=True)
    write_state(dst, state)
    return dst


def randomise_weights(ckpt: Path, seed: int = 0, blank_bias: float = 0.3) -> None:
    """In place: fresh random initial weights (``seed``) in ``ckpt``'s model.safetensors, the joiner's
    blank logit raised by ``blank_bias`` (a mix of blanks and tokens), checksum updated."""
    state = json.loads((ckpt / "state.json").read_text())
    torch.manual_seed(seed)
    model = Transducer.from_config(model_config_from_dict(state["model_config"]))
    with torch.no_grad():
        model.joiner.out.bias[model.blank_id] += blank_bias
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    state["sha256"]["model.safetensors"] = sha256(ckpt / "model.safetensors")
    write_state(ckpt, state)


@pytest.fixture(scope="session")
def row_export(tiny_supernet_run, tmp_path_factory) -> Path:
    """The trained tiny supernet, ``row`` granularity, non-uniform sub-network, fp32-sparse export."""
    root = tmp_path_factory.mktemp("deploy_row")
    ckpt = row_variant(resolve_checkpoint(tiny_supernet_run)[0], root / "ckpt")
    out = root / "export"
    export_subnet(ckpt, nonuniform(space_for(load_model(ckpt))), "fp32-sparse", out)
    return out


@pytest.fixture(scope="session")
def chatty_export(tiny_supernet_run, tmp_path_factory) -> Path:
    """A random-weight copy of the tiny supernet, ``row`` granularity, non-uniform sub-network
    (every gene pruned, some at 0.7), int8-sparse export (dequantised weights, exact zero rows)."""
    root = tmp_path_factory.mktemp("deploy_chatty")
    ckpt = row_variant(resolve_checkpoint(tiny_supernet_run)[0], root / "ckpt")
    randomise_weights(ckpt)
    space = space_for(load_model(ckpt))
    levels = [0.3, 0.5, 0.7, 0.2, 0.4, 0.5, 0.5, 0.3]
    out = root / "export"
    export_subnet(ckpt, {g: levels[i % len(levels)] for i, g in enumerate(space.genes)}, "int8-sparse", out)
    return out


def random_weight_copy(run: Path, tmp_path_factory, name: str) -> Path:
    """A copy of ``run``'s newest checkpoint with random weights (:func:`randomise_weights`)."""
    ckpt = resolve_checkpoint(run)[0]
    dst = tmp_path_factory.mktemp(name) / ckpt.name
    shutil.copytree(ckpt, dst)
    randomise_weights(dst)
    return dst


@pytest.fixture(scope="session")
def chatty_stateless(tiny_stateless_run, tmp_path_factory) -> Path:
    """A random-weight copy of the tiny stateless-predictor checkpoint (varied tokens)."""
    return random_weight_copy(tiny_stateless_run, tmp_path_factory, "chatty_stateless")


@pytest.fixture(scope="session")
def chatty_lstm(tiny_run, tmp_path_factory) -> Path:
    """A random-weight copy of the tiny LSTM-predictor checkpoint (varied tokens)."""
    return random_weight_copy(tiny_run, tmp_path_factory, "chatty_lstm")


@pytest.fixture(scope="session")
def dev_audio(tiny_corpus) -> list:
    """The first N_UTTS dev utterances as float32 sample arrays (16 kHz)."""
    cuts = load_manifest(CorpusLayout(tiny_corpus).cuts("dev")).subset(first=N_UTTS)
    return [c.load_audio()[0].astype("float32") for c in cuts]
