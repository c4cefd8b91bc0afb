"""Hostile configurations: YAML presets and ``--section.key=value`` overrides with wrong types, unknown
keys and sections, out-of-range or non-finite numbers, YAML that is not a mapping, not YAML, not text,
nested too deep, with Python tags: each one ``omnisparse: error:`` line (exit status 2) naming the file
or the key, nothing written, never a traceback. No corpus, no model: a run never starts."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from omnisparse.cli import main
from omnisparse.config import RANGES, Config, ConfigError, load_config
from omnisparse.utils.hostile_inputs import value_outside


def _one_line(capsys, rc: int) -> str:
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("omnisparse: error: "), (rc, lines)
    return lines[0]


def _train(tmp_path, *args) -> int:
    """``train`` that would write into ``tmp_path/out`` (which must stay absent)."""
    return main(["train", *args, f"--train.out_dir={tmp_path / 'out'}", f"--data.corpus_dir={tmp_path / 'none'}"])


PRESETS = {  # kind -> (file content, words of the error line besides the file name)
    "a list": ("- model\n- train\n", "top level must be a mapping"),
    "a string": ("just words\n", "top level must be a mapping"),
    "a number": ("42\n", "top level must be a mapping"),
    "invalid YAML": ("train: {lr: [1\n", "not valid YAML"),
    "a Python tag": ("train: {lr: !!python/object/apply:os.system [\"echo pwned\"]}\n", "could not determine a constructor"),
    "an unknown section": ("trian: {lr: 0.1}\n", "unknown key 'trian'"),
    "an unknown key": ("train: {learning_rate: 0.1}\n", "unknown key train.'learning_rate'"),
    "a section that is a scalar": ("model: 5\n", "model: expected a mapping"),
    "a wrong type": ("model: {d_model: wide}\n", "model.d_model: expected an integer"),
    "an out-of-range value": ("train: {lr: -0.001}\n", "train.lr: must be > 0"),
    "a NaN": ("train: {lr: .nan}\n", "train.lr: expected a finite number"),
    "an infinite integer": ("model: {n_layers: .inf}\n", "model.n_layers: expected an integer"),
    "a base that is a list": ("base: [tiny]\n", "`base:` must name a preset"),
    "a missing base": ("base: no-such-preset\n", "no preset 'no-such-preset'"),
    "nesting 5000 deep": ("model: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
    "integer keys": ("{1: 2}\n", "unknown key 1"),
}


@pytest.mark.parametrize("kind", list(PRESETS))
def test_hostile_preset_files(tmp_path, capsys, kind):
    text, words = PRESETS[kind]
    preset = tmp_path / "hostile.yaml"
    preset.write_text(text)
    line = _one_line(capsys, _train(tmp_path, "--config", str(preset)))
    assert words in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", range(4))
def test_binary_garbage_as_a_preset(tmp_path, capsys, seed):
    preset = tmp_path / "garbage.yaml"
    preset.write_bytes(os.urandom(64) + bytes(range(256)) * (seed + 1))
    assert str(preset) in _one_line(capsys, _train(tmp_path, "--config", str(preset)))


def test_a_directory_or_an_unreadable_file_as_a_preset(tmp_path, capsys):
    (tmp_path / "dir.yaml").mkdir()
    assert "cannot read" in _one_line(capsys, _train(tmp_path, "--config", str(tmp_path / "dir.yaml")))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text("train: {lr: 0.1}\n")
        locked.chmod(0)
        assert "cannot read" in _one_line(capsys, _train(tmp_path, "--config", str(locked)))


def test_a_circular_base_chain(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    assert "circular" in _one_line(capsys, _train(tmp_path, "--config", str(tmp_path / "a.yaml")))


OVERRIDES = ["--train.lr=[1", "--train.lr=!!python/object/apply:os.system [x]", "--train.lr=.nan",
             "--train.lr=1.0e999", "--model.d_model=.nan", "--model.d_model=1.0e400", "--model.d_model=2.5",
             "--model.d_model=true", "--train.betas=[0.9]", "--train.betas=[1,2]", "--data.train_splits=5",
             "--model.bogus=1", "--bogus.key=1", "--model=3", "--train.mode=strem", "--model.d_model=1000000",
             "--sparsity.grid=[0.5,1.5]", "--train.lr={a: 1}"]


@pytest.mark.parametrize("override", OVERRIDES)
def test_hostile_overrides(tmp_path, capsys, override):
    line = _one_line(capsys, _train(tmp_path, "--config", "tiny", override))
    key = override[2:].split("=")[0]
    assert key.split(".")[-1] in line or key in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("section, key", [(s, k) for s, rules in RANGES.items() for k in rules])
def test_every_range_is_checked_at_load(section, key):
    rule = RANGES[section][key]
    cfg = Config()
    value = value_outside(rule)
    field_type = {f.name: f.type for f in fields(getattr(cfg, section))}[key]
    if "int" in str(field_type):
        value = int(value) if float(value).is_integer() else int(value) + 1
    if "list" in str(field_type):
        value = [value]
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        load_config("tiny", [f"--{section}.{key}={value}"])


def test_the_defaults_and_every_preset_are_in_range():
    from omnisparse.config import CONF_DIR

    Config().validate()
    for p in sorted(Path(CONF_DIR).glob("*.yaml")):
        load_config(p.stem)


def test_eval_refuses_model_settings_the_weights_fix(tiny_run, tmp_path, capsys):
    for override, words in [("--model.d_model=48", "cannot change at decoding time"),
                            ("--model.nope=1", "unknown key"), ("--model.chunk_size=abc", "expected an integer"),
                            ("--decode.beam=0", "decode.beam")]:
        rc = main(["eval", str(tiny_run), "--splits", "dev", f"--out={tmp_path / 'ev'}", override])
        assert words in _one_line(capsys, rc)
    assert not (tmp_path / "ev").exists()
