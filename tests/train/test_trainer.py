import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from omnisparse.config import load_config
from omnisparse.io.checkpoint import CheckpointError
from omnisparse.train.registry import train
from omnisparse.train.trainer import Trainer, lr_factor


def _cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=12",
                                "--train.ckpt_every=6", "--model.dropout=0.1", "--data.spec_augment=true",
                                "--data.max_duration=15", *extra])


def test_lr_schedule_shape():
    tc = load_config("tiny", ["--train.max_steps=100", "--train.warmup_steps=10", "--train.min_lr_ratio=0.1"]).train
    f = [lr_factor(s, tc) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.1, abs=0.01)


def test_resume_is_bitwise_identical(tiny_corpus, tmp_path, interrupt_at):
    straight = train(_cfg(tiny_corpus, tmp_path / "a"))
    assert straight["step"] == 12

    # interrupted after step 6's checkpoint: the 7th step raises
    interrupt_at(Trainer, 6, train, _cfg(tiny_corpus, tmp_path / "b"))
    resumed = train(_cfg(tiny_corpus, tmp_path / "b"))
    assert resumed["step"] == 12
    a = load_file(str(tmp_path / "a" / "ckpt-00000012" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000012" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # cost accounting survives the resume
    cost = json.loads((tmp_path / "b" / "cost.json").read_text())
    assert cost["optimizer_steps"] == 12 and cost["fwd_bwd_passes"] == 12 and cost["audio_seconds"] > 0
    # metrics.csv has one row per logged step, no duplicates from the lost work
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows if r.split(",")[2]]
    assert len(steps) == len(set(steps))


def test_bf16_autocast_trains_and_resumes_bitwise(tiny_corpus, tmp_path, interrupt_at):
    """``train.autocast=bf16``: the encoder in bf16, weights and optimizer state in fp32, and a resumed
    run still ends on the uninterrupted run's weights."""
    bf16 = ("--train.autocast=bf16", "--train.max_steps=6", "--train.ckpt_every=3")
    train(_cfg(tiny_corpus, tmp_path / "a", *bf16))
    interrupt_at(Trainer, 3, train, _cfg(tiny_corpus, tmp_path / "b", *bf16))
    train(_cfg(tiny_corpus, tmp_path / "b", *bf16))
    a = load_file(str(tmp_path / "a" / "ckpt-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000006" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) and a[k].dtype != torch.bfloat16 for k in a)
    train(_cfg(tiny_corpus, tmp_path / "c", "--train.max_steps=6", "--train.ckpt_every=3"))
    fp32 = load_file(str(tmp_path / "c" / "ckpt-00000006" / "model.safetensors"))
    assert any(not torch.equal(a[k], fp32[k]) for k in a)  # the setting really changed the arithmetic
    with pytest.raises(ValueError, match="autocast"):
        _cfg(tiny_corpus, tmp_path / "d", "--train.autocast=fp16")


def test_resume_with_other_model_config_is_refused(tiny_corpus, tmp_path):
    train(_cfg(tiny_corpus, tmp_path / "r", "--train.max_steps=2", "--train.ckpt_every=2"))
    with pytest.raises(CheckpointError, match="d_model"):
        Trainer(_cfg(tiny_corpus, tmp_path / "r", "--model.d_model=48"))


def test_non_finite_loss_skipped_then_stops(tiny_corpus, tmp_path, monkeypatch):
    cfg = _cfg(tiny_corpus, tmp_path / "n", "--train.max_steps=6", "--train.max_bad_steps=3")
    orig = Trainer.forward_backward
    state = {"i": 0}

    def sometimes_nan(self, batch, mode):
        state["i"] += 1
        if state["i"] == 2:
            return float("nan"), {}
        return orig(self, batch, mode)

    monkeypatch.setattr(Trainer, "forward_backward", sometimes_nan)
    out = train(cfg)
    assert out["step"] == 6 and out["cost"]["skipped_batches"] == 1

    from omnisparse.errors import NonFiniteLossError

    monkeypatch.setattr(Trainer, "forward_backward", lambda self, b, m: (float("nan"), {}))
    with pytest.raises(NonFiniteLossError, match="3 non-finite"):
        train(_cfg(tiny_corpus, tmp_path / "n2", "--train.max_bad_steps=3"))


@pytest.mark.slow
def test_ddp_two_gloo_processes(tiny_corpus, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "omnisparse.cli", "train", "--config", "tiny", f"--data.corpus_dir={tiny_corpus}",
           f"--train.out_dir={out}", "--train.max_steps=4", "--train.ckpt_every=4", "--train.threads=1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["world_size"] == 2 and cost["ddp_replicas_identical"] is True
    assert cost["optimizer_steps"] == 4
    assert (out / "ckpt-00000004" / "model.safetensors").exists()


def test_overfits_a_handful_of_utterances(tiny_corpus, tmp_path):
    """The model really learns: 4 utterances are memorised to WER 0."""
    from lhotse import load_manifest

    from omnisparse.data.layout import CorpusLayout

    L = CorpusLayout(tiny_corpus)
    load_manifest(L.feature_cuts("train")).subset(first=4).to_file(L.feature_cuts("few4"))
    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tmp_path / 'o'}",
                               "--data.train_splits=[few4]", "--data.dev_split=few4", "--train.max_steps=400", "--train.mode=full", "--model.ctc_weight=1.0",
                               "--train.decay=constant", "--train.lr=5e-3", "--train.warmup_steps=10",
                               "--train.valid_every=100", "--train.ckpt_every=1000", "--decode.max_symbols_per_frame=10", "--model.d_model=64",
                               "--model.ffn_dim=128", "--model.pred_dim=64", "--model.joiner_dim=64"])
    out = train(cfg)
    assert out["best_wer"] == 0.0, out
