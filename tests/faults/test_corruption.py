"""Truncated or corrupted checkpoints and search states (also a state.json still valid JSON, one digit
changed): detected by checksum, the previous one used with a warning, and the resumed run ends exactly
where an uninterrupted one does. States written before they carried a checksum are still accepted."""

from __future__ import annotations

import json
import shutil
import zlib

import pytest

from omnisparse.config import load_config
from omnisparse.export.format import ArtefactPricing
from omnisparse.io import checkpoint as ck
from omnisparse.models.transducer import Transducer
from omnisparse.search.evolution import EvolutionFinder, EvolutionSettings
from omnisparse.search.state import read_state_file, write_state_file
from omnisparse.sparsity.space import SearchSpace
from omnisparse.utils.faults import weights_equal


def _cfg(corpus, out):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=8",
                                "--train.ckpt_every=2", "--train.keep_last=0"])


@pytest.fixture(scope="module")
def reference_run(tiny_corpus, tmp_path_factory):
    from omnisparse.train.registry import train

    out = tmp_path_factory.mktemp("corrupt") / "ref"
    train(_cfg(tiny_corpus, out))
    return out


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])


def _flip(p):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated weights": lambda c: _truncate(c / "model.safetensors"),
    "bit flip in the optimizer": lambda c: _flip(c / "optimizer.safetensors"),
    "state.json garbage": lambda c: (c / "state.json").write_text('{"step": 6, "trunc'),
    "state.json digit flip": lambda c: (c / "state.json").write_text(
        (c / "state.json").read_text().replace('"step": 6,', '"step": 5,')),  # valid JSON: only its checksum notices
    "missing tokenizer": lambda c: (c / "tokenizer.model").unlink(),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_newest_checkpoint_resumes_from_the_previous(tiny_corpus, reference_run, tmp_path, caplog, kind):
    from omnisparse.train.registry import train

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    shutil.rmtree(run / "ckpt-00000008")  # the run was interrupted after step 6's checkpoint ...
    CORRUPTIONS[kind](run / "ckpt-00000006")  # ... which was then damaged
    out = train(_cfg(tiny_corpus, run))
    assert out["step"] == 8
    assert "trying an older one" in caplog.text and "moved the corrupt checkpoint" in caplog.text
    assert (run / "ckpt-00000006.corrupt").is_dir()  # kept for inspection, never loaded again
    assert ck.verify_checkpoint(run / "ckpt-00000006")["step"] == 6  # rewritten by the resumed run
    for step in (6, 8):
        assert weights_equal(reference_run / f"ckpt-{step:08d}" / "model.safetensors",
                             run / f"ckpt-{step:08d}" / "model.safetensors")


def test_every_checkpoint_corrupt_starts_afresh_and_keep_last_keeps_the_new_ones(tiny_corpus, reference_run,
                                                                                 tmp_path, caplog):
    from omnisparse.train.registry import train

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    for c in ck.list_checkpoints(run):
        _truncate(c / "model.safetensors")
    cfg = _cfg(tiny_corpus, run)
    cfg.train.keep_last = 1
    assert train(cfg)["step"] == 8
    assert "starting from step 0" in caplog.text
    assert [c.name for c in ck.list_checkpoints(run)] == ["ckpt-00000008"]
    assert weights_equal(reference_run / "ckpt-00000008" / "model.safetensors", run / "ckpt-00000008" / "model.safetensors")


# ---------------------------------------------------------------------------------------------- search

@pytest.fixture(scope="module")
def space():
    cfg = load_config("tiny").model
    cfg.vocab_size = 17
    model = Transducer.from_config(cfg)
    return SearchSpace.from_model(model, pricing=ArtefactPricing.of(model))


def _finder(space, generations, crash_at=0):
    calls = {"n": 0}

    def wer(config):
        calls["n"] += 1
        if crash_at and calls["n"] == crash_at:
            raise KeyboardInterrupt
        key = space.encode(config)
        return 0.1 + sum((i + 1) * 0.02 * s * s for i, s in enumerate(key)) + (zlib.crc32(repr(key).encode()) % 1000) / 1e5

    fmt = "int8-sparse"
    settings = EvolutionSettings(size_min=space.size_bytes(space.sample_min(1.0), fmt),
                                 size_max=space.size_bytes(space.sample_max(), fmt), bucket_bytes=4000, population=8,
                                 generations=generations, mutations=6, crossovers=6, mutate_prob=0.3, max_tries=50, seed=0)
    return EvolutionFinder(space, wer, lambda c: space.size_bytes(c, fmt), settings, nonzero_params=space.nonzero_params,
                           progress=False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_search_state_falls_back_to_the_previous_generation(space, tmp_path, caplog, damage):
    full = _finder(space, 4).run(tmp_path / "full")
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):  # killed in generation 3: states of generations 1 and 2 on disk
        _finder(space, 4, crash_at=len([h for h in full["history"] if h["generation"] < 2]) + 2).run(out)
    state = out / "state.json"
    assert json.loads(state.read_text())["generation"] == 2 and (out / "state.prev.json").exists()
    if damage == "truncate":
        _truncate(state)
    elif damage == "flip":  # still valid JSON: only the checksum notices
        text = state.read_text()
        state.write_text(text.replace('"generation": 2', '"generation": 3'))
    else:  # killed between rotating state.json to state.prev.json and writing the new one
        state.unlink()
    resumed = _finder(space, 4).run(out)
    assert resumed["history"] == full["history"] and resumed["front"] == full["front"]
    if damage != "delete":
        assert "ignoring the search state" in caplog.text and (out / "state.json.corrupt").exists()
    assert "resuming the search from" in caplog.text


def test_search_state_without_a_checksum_is_accepted_with_a_warning(tmp_path, caplog):
    """States written before the checksum existed."""
    write_state_file(tmp_path, {"version": 1, "generation": 2, "history": [{"wer": 0.5}]})
    state = json.loads((tmp_path / "state.json").read_text())
    assert read_state_file(tmp_path / "state.json") == {k: v for k, v in state.items() if k != "sha256"}
    del state["sha256"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert read_state_file(tmp_path / "state.json") == state
    assert "carries no checksum" in caplog.text
