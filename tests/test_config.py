from pathlib import Path

import pytest

import omnisparse
from omnisparse.config import CONF_DIR, ConfigError, load_config, resolve_preset


def test_presets_load():
    for name in ("tiny", "small", "emformer_base_like"):
        cfg = load_config(name)
        assert cfg.model.d_model > 0 and cfg.data.vocab_size > 0


def test_every_preset_loads_and_ships_inside_the_package():
    # inside the package, so a non-editable install has them (pyproject's package-data lists conf/*.yaml)
    assert CONF_DIR.parent == Path(omnisparse.__file__).parent
    names = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    assert {"tiny", "small", "supernet_small", "search_small", "dual_small"} <= set(names)
    for name in names:
        load_config(name)  # every key names a field, every section validates
    assert (CONF_DIR.parent / "py.typed").exists()


def test_fine_tuning_presets_augment_from_their_first_step():
    """A run started from a trained model (sparsity.init_from) counts its epochs from 0 and is shorter
    than one epoch: with `small`'s clean first epochs it would never see augmented audio."""
    for name in ("prune_small", "supernet_small", "dual_small"):
        cfg = load_config(name)
        assert cfg.sparsity.init_from and cfg.augment.enabled and cfg.data.spec_augment, name
        assert cfg.augment.start_epoch == 0 and cfg.data.spec_augment_start_epoch == 0, name


def test_emformer_like_dimensions():
    m = load_config("emformer_base_like").model
    assert (m.n_layers, m.d_model, m.n_heads, m.ffn_dim) == (20, 512, 8, 2048)
    assert m.chunk_size * m.subsampling * 10 == 160  # ms per chunk
    assert m.lookahead * m.subsampling * 10 == 40


def test_overrides_typed():
    cfg = load_config("tiny", ["--train.lr=3e-3", "--model.n_layers=3", "--data.train_splits=[a,b]",
                               "--data.spec_augment=true"])
    assert cfg.train.lr == pytest.approx(3e-3)
    assert cfg.model.n_layers == 3
    assert cfg.data.train_splits == ["a", "b"]
    assert cfg.data.spec_augment is True


@pytest.mark.parametrize("bad", ["--train.nope=1", "--model.n_layers=2.5", "--train.lr=abc", "--lr=1", "train.lr"])
def test_bad_overrides_are_errors(bad):
    with pytest.raises(ConfigError):
        load_config("tiny", [bad])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="known presets"):
        resolve_preset("no-such-preset")


def test_yaml_with_unknown_key(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model:\n  d_modle: 3\n")
    with pytest.raises(ConfigError, match="d_modle"):
        load_config(p)


@pytest.mark.parametrize("bad, match", [
    ("--train.decay=cosin", r"train.decay: must be one of 'cosine' \| 'noam' \| 'constant', got 'cosin'"),
    ("--model.pred_type=gru", "model.pred_type: must be one of"),
    ("--model.loss=k2", "model.loss: must be one of"),
    ("--train.device=tpu", "train.device: must be one of"),
    ("--decode.method=sample", "decode.method: must be one of"),
    ("--sparsity.granularity=channel", "sparsity.granularity: must be one of"),
    ("--search.format=fp16", "search.format: must be one of"),
    ("--search.cost=watts", "search.cost: must be one of"),
])
def test_choice_fields_fail_at_load(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [bad])


def test_choice_fields_accept_every_choice():
    cfg = load_config("tiny", ["--train.decay=noam", "--model.pred_type=stateless", "--search.front=latency",
                               "--search.front=", "--pretrain.audio_stats=corpus", "--search.latency_dtype=int8"])
    assert (cfg.train.decay, cfg.model.pred_type, cfg.search.front) == ("noam", "stateless", "")


@pytest.mark.parametrize("bad, match", [
    (["--model.chunk_size=0"], "chunk_size must be >= 1"),
    (["--model.d_model=30", "--model.n_heads=4"], "divisible by model.n_heads"),
    (["--model.loss=pruned", "--model.prune_range=0"], "prune_range must be >= 1"),
    (["--model.pred_type=stateless", "--decode.pred_history=4"], "pred_history applies to the LSTM predictor"),
    (["--decode.pred_history=-1"], "pred_history"),
])
def test_cross_field_rules_fail_at_load(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", bad)
