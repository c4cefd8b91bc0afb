"""Resource limits: a batch that runs out of memory is retried in halves or skipped; a full disk while
writing a checkpoint (or any state file) leaves the previous one intact and says so in one line."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.errors import CheckpointWriteError, OutOfMemoryStop
from omnisparse.io import checkpoint as ck
from omnisparse.train.registry import train
from omnisparse.train.recovery import is_out_of_memory, split_batch
from omnisparse.train.trainer import Trainer
from omnisparse.utils.faults import disk_full, weights_equal


def _cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=6",
                                "--train.ckpt_every=2", "--train.keep_last=0", *extra])


def _error_lines(capsys) -> list[str]:
    """The command's error lines (stderr also holds the progress bar and log lines)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("omnisparse: error")]


def _oom(msg="CUDA out of memory. Tried to allocate 2.00 GiB"):
    return torch.OutOfMemoryError(msg)


# ---------------------------------------------------------------------------------------------- OOM

def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(_oom())
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator error types


def test_split_batch_halves_and_trims_padding():
    feats = torch.zeros(5, 9, 80)
    batch = {"feats": feats, "feat_lens": torch.tensor([9, 3, 4, 7, 2]), "tokens": torch.ones(5, 6, dtype=torch.long),
             "token_lens": torch.tensor([2, 6, 1, 3, 3]), "texts": list("abcde"), "ids": list("abcde")}
    a, b = split_batch(batch)
    assert a["ids"] == ["a", "b", "c"] and b["ids"] == ["d", "e"]
    assert a["feats"].shape == (3, 9, 80) and b["feats"].shape == (2, 7, 80)
    assert a["tokens"].shape == (3, 6) and b["tokens"].shape == (2, 3)


def test_half_batches_give_the_whole_batch_gradient(tiny_corpus, tmp_path):
    tr = Trainer(_cfg(tiny_corpus, tmp_path / "r"))
    batch = next(b for b in tr.batches() if len(b["ids"]) >= 3)
    tr.train_step(batch)
    whole = [p.grad.clone() for p in tr.model.parameters()]
    tr.optimizer.zero_grad(set_to_none=True)
    tr._step_in_halves(batch)
    for g, p in zip(whole, tr.model.parameters()):
        # equal up to float summation order: relative to the tensor's norm
        assert float((p.grad - g).norm()) <= 1e-4 * float(g.norm()) + 1e-7


def test_oom_batch_retried_in_halves_then_skipped(tiny_corpus, tmp_path, monkeypatch, caplog):
    """Batches of more than 3 utterances "run out of memory": they are split; halves still bigger
    than 3 are skipped. The run reaches max_steps and counts both."""
    orig = Trainer.train_step

    def small_memory(self, batch):
        if len(batch["ids"]) > 3:
            raise _oom()
        return orig(self, batch)

    monkeypatch.setattr(Trainer, "train_step", small_memory)
    out = train(_cfg(tiny_corpus, tmp_path / "r", "--data.max_duration=20", "--train.max_bad_steps=50"))
    cost = out["cost"]
    assert out["step"] == 6
    assert cost["oom_batches"] >= 1
    assert cost["oom_split_batches"] + cost.get("skipped_by_reason", {}).get("out_of_memory", 0) == cost["oom_batches"]
    assert "retrying it as two halves" in caplog.text
    assert json.loads((tmp_path / "r" / "cost.json").read_text())["oom_batches"] == cost["oom_batches"]


def test_persistent_oom_stops_cleanly_with_a_usable_checkpoint(tiny_corpus, tmp_path, monkeypatch, capsys):
    orig = Trainer.train_step

    def oom_after_3(self, batch):
        if self.step >= 3:
            raise _oom()
        return orig(self, batch)

    monkeypatch.setattr(Trainer, "train_step", oom_after_3)
    run = tmp_path / "r"
    args = ["train", "--config", "tiny", f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={run}",
            "--train.max_steps=6", "--train.ckpt_every=2", "--train.max_bad_steps=3"]
    assert main(args) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "ran out of memory" in err[0] and "ckpt-00000002" in err[0]
    with pytest.raises(OutOfMemoryStop):
        train(_cfg(tiny_corpus, run, "--train.max_bad_steps=3"))
    monkeypatch.setattr(Trainer, "train_step", orig)
    assert train(_cfg(tiny_corpus, run))["step"] == 6  # the checkpoint it left resumes


def test_other_runtime_errors_are_not_swallowed(tiny_corpus, tmp_path, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="mat1"):
        train(_cfg(tiny_corpus, tmp_path / "r"))


# ---------------------------------------------------------------------------------------------- disk full

@pytest.mark.parametrize("target", ["save_file", "_fsync_file"])
def test_disk_full_while_writing_a_checkpoint_keeps_the_previous(tmp_path, monkeypatch, target):
    model = torch.nn.Linear(3, 2)
    ck.save_checkpoint(tmp_path, 1, model, {"a": 1})
    monkeypatch.setattr(ck, target, disk_full(getattr(ck, target)))
    with pytest.raises(CheckpointWriteError) as info:
        ck.save_checkpoint(tmp_path, 2, model, {"a": 2})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "No space left" in str(info.value) and "ckpt-00000001 is intact" in str(info.value)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-00000001"]
    assert ck.latest_checkpoint(tmp_path)[1]["a"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_disk_full_during_training_then_resume_is_bitwise(tiny_corpus, tmp_path, monkeypatch, capsys):
    train(_cfg(tiny_corpus, tmp_path / "ref"))
    run = tmp_path / "r"
    # save_file runs twice per checkpoint (model, optimizer): the disk fills up during checkpoint 4
    monkeypatch.setattr(ck, "save_file", disk_full(ck.save_file, after=3))
    args = ["train", "--config", "tiny", f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={run}",
            "--train.max_steps=6", "--train.ckpt_every=2", "--train.keep_last=0"]
    assert main(args) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "No space left" in err[0] and "ckpt-00000002 is intact" in err[0]
    assert [p.name for p in ck.list_checkpoints(run)] == ["ckpt-00000002"]
    monkeypatch.undo()  # space freed
    train(_cfg(tiny_corpus, run))
    assert weights_equal(tmp_path / "ref" / "ckpt-00000006" / "model.safetensors", run / "ckpt-00000006" / "model.safetensors")


def test_disk_full_in_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    from omnisparse.io import atomic

    path = tmp_path / "x.json"
    atomic.atomic_write_text(path, "old")
    monkeypatch.setattr(atomic.os, "fsync", disk_full(atomic.os.fsync))
    with pytest.raises(OSError) as info:
        atomic.atomic_write_text(path, "new")
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
