"""Shared fixtures: the tiny default corpus (built once per session) and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and on 2 shared cores a second thread makes them
# ~20x slower under contention (measured); DDP tests start their own processes.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The `tiny` corpus with features, global stats and a 64-piece BPE (built once, ~30 s)."""
    from omnisparse.data.corpus import build_corpus
    from omnisparse.data.prepare import prepare_training_data

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    build_corpus(out, preset="tiny", seed=0, progress=False)
    prepare_training_data(out, ["train"], vocab_size=64)
    return out


@pytest.fixture
def tiny_config(tiny_corpus, tmp_path):
    """A fresh `tiny` Config pointing at the session corpus and a per-test run directory."""
    from omnisparse.config import load_config

    return load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tmp_path / 'run'}"])


def _train_tiny(corpus: Path, out: Path, *overrides: str) -> Path:
    """The `tiny` preset trained for 30 steps into ``out`` (with extra ``--section.key=value`` overrides)."""
    from omnisparse.config import load_config
    from omnisparse.train.registry import train

    cfg = load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=30",
                               "--train.ckpt_every=30", *overrides])
    train(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny dense model trained for 30 steps (a real checkpoint to decode/transcribe with)."""
    return _train_tiny(tiny_corpus, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="session")
def tiny_stateless_run(tiny_corpus, tmp_path_factory) -> Path:
    """``tiny_run`` with a stateless predictor (the one sherpa-onnx's transducers take)."""
    return _train_tiny(tiny_corpus, tmp_path_factory.mktemp("runs") / "tiny_stateless", "--model.pred_type=stateless")


@pytest.fixture(scope="session")
def tiny_supernet_run(tiny_corpus, tiny_run, tmp_path_factory) -> Path:
    """A tiny supernet trained 10 sandwich steps from ``tiny_run`` (for search/export/report tests)."""
    from omnisparse.config import load_config
    from omnisparse.train.registry import train

    out = tmp_path_factory.mktemp("runs") / "tiny_supernet"
    cfg = load_config("supernet_tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={out}",
                                        f"--sparsity.init_from={tiny_run}", "--train.max_steps=10",
                                        "--train.ckpt_every=10"])
    train(cfg, supernet=True)
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one intra-op thread, whatever the previous test (e.g. a Trainer with
    ``train.threads``) left behind."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(trainer_cls, step, run, *args, **kw)``: call ``run(*args, **kw)`` with
    ``trainer_cls.train_step`` raising KeyboardInterrupt when the trainer is at ``step`` (the
    interruption is asserted), then put ``train_step`` back so the run can be resumed."""

    def interrupted(trainer_cls, step: int, run, *args, **kw) -> None:
        orig = trainer_cls.train_step

        def flaky(self, batch):
            if self.step == step:
                raise KeyboardInterrupt
            return orig(self, batch)

        monkeypatch.setattr(trainer_cls, "train_step", flaky)
        try:
            with pytest.raises(KeyboardInterrupt):
                run(*args, **kw)
        finally:
            monkeypatch.setattr(trainer_cls, "train_step", orig)

    return interrupted
