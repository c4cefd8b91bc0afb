"""Digit flips that keep a state file valid JSON (a step, an RNG word, a learning rate, a checksum, the
format version, the checksum's own key - which must not make the file pass for one written before
checksums existed): anywhere in a checkpoint's ``state.json`` or a search's ``state.json``, each is caught
by the file's checksum of its own content and the previous good state is used; ``eval`` of the damaged
checkpoint itself is one error line. A change of whitespace only is not damage.

The full resume after such a flip (bitwise the uninterrupted result) is ``test_corruption.py``."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.io import checkpoint as ck
from omnisparse.search.state import load_saved_state, write_state_file
from omnisparse.utils.faults import flip_digit


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    from omnisparse.train.registry import train

    out = tmp_path_factory.mktemp("bitflip") / "run"
    train(load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={out}", "--train.max_steps=4",
                               "--train.ckpt_every=2", "--train.keep_last=0"]))
    return out


def test_digit_flips_anywhere_in_checkpoint_state_fall_back(run, tmp_path, caplog):
    d = shutil.copytree(run, tmp_path / "run")
    state = d / "ckpt-00000004" / "state.json"
    text = state.read_text()
    keys = {"step": '"step": 4', "format_version": '"format_version": 1', "lr": '"lr": '}
    targeted = [text.replace(v, v.replace("4", "5").replace("1", "2"), 1) if k != "lr" else
                text.replace('"lr": 0.', '"lr": 1.', 1) for k, v in keys.items()]
    targeted.append(text.replace('"state_sha256"', '"state_sha257"'))  # the digest's key: not a pre-digest file
    for damaged in [*targeted, *(flip_digit(text, seed) for seed in range(40))]:
        json.loads(damaged)  # still valid JSON
        assert damaged != text
        state.write_text(damaged)
        with pytest.raises(ck.CheckpointError, match="state.json fails its checksum"):
            ck.verify_checkpoint(state.parent)
        found = ck.latest_checkpoint(d)
        assert found is not None and found[0].name == "ckpt-00000002"
    assert "trying an older one" in caplog.text
    state.write_text(text.replace("\n", "\n "))  # whitespace only: the same content
    assert ck.latest_checkpoint(d)[0].name == "ckpt-00000004"


def test_eval_of_a_flipped_checkpoint_is_one_line(run, tmp_path, capsys):
    ckpt = shutil.copytree(run / "ckpt-00000004", tmp_path / "ckpt-00000004")
    (ckpt / "state.json").write_text(flip_digit((ckpt / "state.json").read_text(), 7))
    assert main(["eval", str(ckpt), "--splits", "dev", f"--out={tmp_path / 'ev'}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnisparse: error")]
    assert len(err) == 1 and "fails its checksum" in err[0] and not (tmp_path / "ev").exists()


def test_digit_flips_in_search_state_fall_back_to_the_previous_generation(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    history = [{"config": {"enc.0.ffn": 0.5}, "wer": 0.25 + i / 100, "size_bytes": 1000 + i} for i in range(6)]
    prev = {"version": 1, "generation": 2, "history": history[:4], "rng": [3, list(range(20)), None]}
    for seed in range(30):
        out = tmp_path / f"s{seed}"
        out.mkdir()
        write_state_file(out, prev)
        write_state_file(out, {**prev, "generation": 3, "history": history})
        text = (out / "state.json").read_text()
        damaged = text.replace('"sha256"', '"sha257"') if seed == 0 else flip_digit(text, seed)  # 0: the digest's key
        (out / "state.json").write_text(damaged)
        assert load_saved_state(out)["generation"] == 2
        assert (out / "state.json.corrupt").exists()
    assert "fails its checksum" in caplog.text
