"""Numerical faults: a NaN / infinite loss or gradient skips its batch with a warning and a counter,
leaves weights and optimizer untouched, and too many in a row stop the run with one clear line and a
last checkpoint that resumes to exactly the uninterrupted result.

Covered elsewhere (not repeated): a NaN loss returned by ``forward_backward`` skipped, then
``train.max_bad_steps`` NaNs stopping the run (``tests/train/test_trainer.py``); non-finite features
dropped per utterance (``tests/data/test_batching.py``); out-of-memory batches (``test_resources.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.errors import NonFiniteLossError
from omnisparse.io import checkpoint as ck
from omnisparse.train.registry import train
from omnisparse.train.trainer import Trainer
from omnisparse.utils.faults import weights_equal


def _args(corpus, out, *extra):
    return [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=6", "--train.ckpt_every=2",
            "--train.keep_last=0", *extra]


def _poison_feats(batch):
    batch = dict(batch)
    feats = batch["feats"].clone()
    feats[0, : feats.shape[1] // 2] = float("nan")
    batch["feats"] = feats
    return batch


def _poison_grad(trainer, value):
    p = next(p for p in trainer.model.parameters() if p.grad is not None)
    p.grad.view(-1)[0] = value


@pytest.mark.parametrize("fault", ["nan_input", "inf_grad", "nan_grad"])
def test_one_bad_batch_is_skipped_counted_and_summarised(tiny_corpus, tmp_path, monkeypatch, caplog, fault):
    """The 3rd batch goes bad (NaN features -> NaN loss; or a finite loss with an inf / NaN gradient):
    skipped, counted in cost.json and the end-of-run summary, and the run still reaches max_steps."""
    orig = Trainer.train_step
    calls = {"n": 0}

    def faulty(self, batch):
        calls["n"] += 1
        if calls["n"] == 3 and fault == "nan_input":
            return orig(self, _poison_feats(batch))
        metrics = orig(self, batch)
        if calls["n"] == 3:
            assert math.isfinite(metrics["loss"])  # only the gradient is bad
            _poison_grad(self, float("inf") if fault == "inf_grad" else float("nan"))
        return metrics

    monkeypatch.setattr(Trainer, "train_step", faulty)
    out = train(load_config("tiny", _args(tiny_corpus, tmp_path / "r")))
    assert out["step"] == 6 and calls["n"] == 7
    assert out["cost"]["skipped_by_reason"] == {"non_finite": 1} and out["cost"]["skipped_batches"] == 1
    assert "non-finite loss or gradient at step 2: batch skipped (1 in a row, 1 in all)" in caplog.text
    assert "run summary: 1 batches skipped (non_finite 1)" in caplog.text
    final = ck.latest_checkpoint(tmp_path / "r")[0] / "model.safetensors"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(final)).values())


def test_a_bad_sandwich_path_drops_the_whole_supernet_step(tiny_corpus, tiny_run, tmp_path, monkeypatch):
    """The dense path's gradient is already accumulated when the sparsest path's loss is NaN: the whole
    step is dropped, no partial update reaches the weights or the optimizer."""
    from omnisparse.train.supernet import SupernetTrainer

    cfg = load_config("supernet_tiny", _args(tiny_corpus, tmp_path / "s", f"--sparsity.init_from={tiny_run}",
                                             "--sparsity.ramp_steps=2"))
    tr = SupernetTrainer(cfg)
    tr.step = tr.sparse_start  # sandwich steps from here
    batch = next(b for b in tr.batches() if len(b["ids"]) >= 2)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    orig, paths = SupernetTrainer.backward_path, []

    def sparsest_is_nan(self, batch, mode, **kw):
        paths.append(mode)
        return None if len(paths) == 2 else orig(self, batch, mode, **kw)

    monkeypatch.setattr(SupernetTrainer, "backward_path", sparsest_is_nan)
    metrics = tr.guarded_step(batch)
    assert len(paths) == 2 and any(p.grad is not None for p in tr.model.parameters())  # dense path ran
    assert not tr._apply_step(metrics)
    assert all(p.grad is None for p in tr.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert tr.optimizer.state_dict()["state"] == {} and tr.cost["skipped_by_reason"] == {"non_finite": 1}


def test_too_many_bad_batches_stop_in_one_line_and_the_checkpoint_resumes_bitwise(tiny_corpus, tmp_path,
                                                                                   monkeypatch, capsys):
    """From step 3 on every loss is NaN: after max_bad_steps=3 the command stops with exit 1 and one line
    naming the last good checkpoint (step 2). Once the cause is gone, resuming from it ends with bitwise
    the weights of a run that never saw a NaN."""
    train(load_config("tiny", _args(tiny_corpus, tmp_path / "ref")))
    orig = Trainer.forward_backward

    def diverged(self, batch, mode):
        return (float("nan"), {}) if self.step >= 3 else orig(self, batch, mode)

    monkeypatch.setattr(Trainer, "forward_backward", diverged)
    run = tmp_path / "r"
    capsys.readouterr()
    assert main(["train", "--config", "tiny", *_args(tiny_corpus, run, "--train.max_bad_steps=3")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("omnisparse: error")]
    assert len(lines) == 1 and "3 non-finite batches in a row at step 3" in lines[0], lines
    assert "last good checkpoint" in lines[0] and "ckpt-00000002" in lines[0]
    assert [c.name for c in ck.list_checkpoints(run)] == ["ckpt-00000002"]
    with pytest.raises(NonFiniteLossError):  # the fault persists: it stops again, same checkpoint
        train(load_config("tiny", _args(tiny_corpus, run, "--train.max_bad_steps=3")))
    monkeypatch.undo()
    assert train(load_config("tiny", _args(tiny_corpus, run)))["step"] == 6
    assert weights_equal(tmp_path / "ref" / "ckpt-00000006" / "model.safetensors", run / "ckpt-00000006" / "model.safetensors")
