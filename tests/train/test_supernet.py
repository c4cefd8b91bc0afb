import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from omnisparse.config import load_config
from omnisparse.train.prune import PruneTrainer, prune
from omnisparse.train.sparse_base import dropout_disabled
from omnisparse.train.supernet import SupernetTrainer
from omnisparse.train.registry import train


def _cfg(corpus, out, init, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=6",
                                "--train.ckpt_every=3", f"--sparsity.init_from={init}", "--sparsity.ramp_steps=4",
                                "--sparsity.max_sparsity=0.8", *extra])


def _first_batch(tr):
    return next(iter(tr.batches()))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_step_configs_sandwich_and_ramp(tiny_corpus, tiny_run, tmp_path):
    tr = SupernetTrainer(_cfg(tiny_corpus, tmp_path / "s", tiny_run))
    assert tr.current_max_sparsity() == 0.0
    tr.step = 2
    configs = tr.step_configs()
    assert len(configs) == 2 + tr.cfg.sparsity.n_random
    s_max = tr.current_max_sparsity()
    assert 0.0 < s_max < 0.8
    assert set(configs[0].values()) == {0.0} and set(configs[1].values()) == {s_max}
    assert all(v <= s_max + 1e-9 for c in configs[2:] for v in c.values())
    assert configs == tr.step_configs()  # deterministic from (seed, step): every DDP rank agrees
    tr.step = 4
    assert tr.current_max_sparsity() == 0.8
    tr.step = 100
    assert tr.current_max_sparsity() == 0.8


def test_sandwich_gradient_is_sum_of_paths_and_rankings_once_per_step(tiny_corpus, tiny_run, tmp_path):
    tr = SupernetTrainer(_cfg(tiny_corpus, tmp_path / "s", tiny_run))
    tr.step = 3
    batch = _first_batch(tr)
    configs = tr.step_configs()
    before = tr.bank.refresh_count
    tr.optimizer.zero_grad(set_to_none=True)
    metrics = tr.train_step(batch)
    assert tr.bank.refresh_count == before + 1  # one ranking for the 4 sub-networks of the step
    together = _grads(tr.model)
    assert all(m.mask is None for _, _, m in tr.model.prunable_linears())  # dense again after the step

    expected, total = {}, 0.0
    tr.bank.refresh()
    for cfg in configs:
        tr.optimizer.zero_grad(set_to_none=True)
        tr.bank.apply(cfg)
        out = tr.backward_path(batch, tr.cfg.train.mode)
        total += float(out.loss.detach())
        for n, g in _grads(tr.model).items():
            expected[n] = expected.get(n, 0) + g
    tr.bank.clear()
    assert metrics["loss"] == pytest.approx(total, rel=1e-5)
    assert together.keys() == expected.keys()
    for n in together:
        torch.testing.assert_close(together[n], expected[n], rtol=1e-4, atol=1e-6)


def test_sandwich_split_gradient_is_sum_of_per_batch_gradients(tiny_corpus, tiny_run, tmp_path):
    tr = SupernetTrainer(_cfg(tiny_corpus, tmp_path / "s", tiny_run, "--sparsity.schedule=sandwich-split"))
    tr.step = 3
    assert tr.batches_per_step() == 4
    it = tr.batches()
    batches = [next(it) for _ in range(4)]
    configs = tr.step_configs()
    tr.optimizer.zero_grad(set_to_none=True)
    metrics = tr.train_step(batches)
    together = _grads(tr.model)

    expected, total = {}, 0.0
    tr.bank.refresh()
    for cfg, b in zip(configs, batches):
        tr.optimizer.zero_grad(set_to_none=True)
        tr.bank.apply(cfg)
        total += float(tr.backward_path(b, tr.cfg.train.mode).loss.detach())
        for n, g in _grads(tr.model).items():
            expected[n] = expected.get(n, 0) + g
    tr.bank.clear()
    assert metrics["loss"] == pytest.approx(total, rel=1e-5)
    for n in together:
        torch.testing.assert_close(together[n], expected[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("schedule,passes_per_step", [("sandwich-split", 4), ("one-per-step", 1)])
def test_schedules_count_passes_and_audio(tiny_corpus, tiny_run, tmp_path, schedule, passes_per_step):
    train(_cfg(tiny_corpus, tmp_path / "c", tiny_run, "--train.max_steps=2", f"--sparsity.schedule={schedule}"),
          supernet=True)
    cost = json.loads((tmp_path / "c" / "cost.json").read_text())
    assert cost["optimizer_steps"] == 2 and cost["fwd_bwd_passes"] == 2 * passes_per_step
    # every pass on its own batch: the audio drawn is the audio through the passes
    assert cost["audio_seconds"] == pytest.approx(cost["path_audio_seconds"]) and cost["audio_seconds"] > 0


def test_one_per_step_with_distillation_resumes_bitwise(tiny_corpus, tiny_run, tmp_path, interrupt_at):
    extra = ("--sparsity.schedule=one-per-step", "--sparsity.distill=true")
    train(_cfg(tiny_corpus, tmp_path / "a", tiny_run, *extra), supernet=True)
    cost = json.loads((tmp_path / "a" / "cost.json").read_text())
    assert cost["fwd_bwd_passes"] == 6
    assert cost["teacher_forwards"] == 4  # rotation dense, sparsest, random, random, dense, sparsest
    interrupt_at(SupernetTrainer, 4, train, _cfg(tiny_corpus, tmp_path / "b", tiny_run, *extra), supernet=True)
    train(_cfg(tiny_corpus, tmp_path / "b", tiny_run, *extra), supernet=True)
    a = load_file(str(tmp_path / "a" / "ckpt-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000006" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sparse_path_gives_zero_gradient_to_pruned_weights(tiny_corpus, tiny_run, tmp_path):
    tr = SupernetTrainer(_cfg(tiny_corpus, tmp_path / "s", tiny_run))
    batch = _first_batch(tr)
    tr.bank.refresh()
    tr.bank.apply(tr.space.uniform(0.7))
    tr.optimizer.zero_grad(set_to_none=True)
    tr.backward_path(batch, "stream")
    for gene, name, m in tr.model.prunable_linears():
        if gene not in tr.space.genes:  # predictor/joiner: not pruned by default
            assert m.mask is None, name
            continue
        assert m.mask is not None, name
        pruned = (m.mask.expand_as(m.weight) == 0)
        assert pruned.any()
        assert torch.count_nonzero(m.weight.grad[pruned]) == 0, name
    tr.bank.clear()


def test_dropout_disabled_restores():
    from omnisparse.models.transducer import Transducer

    cfg = load_config("tiny", ["--model.dropout=0.3"]).model
    m = Transducer.from_config(cfg)
    with dropout_disabled(m):
        assert all(d.p == 0.0 for d in m.modules() if isinstance(d, torch.nn.Dropout))
        assert all(layer.attn.dropout == 0.0 for layer in m.encoder.layers)
    assert all(d.p == 0.3 for d in m.modules() if isinstance(d, torch.nn.Dropout))
    assert all(layer.attn.dropout == 0.3 for layer in m.encoder.layers)


def test_supernet_run_resumes_bitwise(tiny_corpus, tiny_run, tmp_path, interrupt_at):
    straight = train(_cfg(tiny_corpus, tmp_path / "a", tiny_run), supernet=True)
    assert straight["step"] == 6
    cost = json.loads((tmp_path / "a" / "cost.json").read_text())
    assert cost["fwd_bwd_passes"] == 6 * 4 and cost["optimizer_steps"] == 6
    assert cost["path_audio_seconds"] == pytest.approx(4 * cost["audio_seconds"])
    assert cost["init_from"].endswith("ckpt-00000030")

    interrupt_at(SupernetTrainer, 4, train, _cfg(tiny_corpus, tmp_path / "b", tiny_run), supernet=True)
    assert train(_cfg(tiny_corpus, tmp_path / "b", tiny_run), supernet=True)["step"] == 6
    a = load_file(str(tmp_path / "a" / "ckpt-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000006" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_supernet_validation_ladder_and_distillation(tiny_corpus, tiny_run, tmp_path):
    cfg = _cfg(tiny_corpus, tmp_path / "v", tiny_run, "--train.max_steps=2", "--train.valid_every=2",
               "--sparsity.distill=true", "--sparsity.valid_ladder=[0.5]", "--data.dev_subset=8")
    out = train(cfg, supernet=True)
    header, *rows = (tmp_path / "v" / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    for key in ("dev_wer", "dev_wer_u0.5", "dev_wer_u0.8", "distill_1", "loss_sparsest"):
        assert key in cols, key
    last = dict(zip(cols, rows[-1].split(",")))
    assert float(last["dev_wer_u0.8"]) >= 0
    assert out["step"] == 2


def test_sparse_training_needs_dense_weights(tiny_corpus, tmp_path):
    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tmp_path / 'x'}"])
    with pytest.raises(ValueError, match="init_from"):
        SupernetTrainer(cfg)


def test_init_from_other_model_config_is_refused(tiny_corpus, tiny_run, tmp_path):
    from omnisparse.io.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="ffn_dim"):
        SupernetTrainer(_cfg(tiny_corpus, tmp_path / "y", tiny_run, "--model.ffn_dim=48"))


def test_prune_baseline_reaches_exact_uniform_sparsity_and_resumes(tiny_corpus, tiny_run, tmp_path):
    extra = ["--sparsity.target=0.5", "--sparsity.prune_steps=4", "--sparsity.prune_every=3", "--train.max_steps=7"]
    out = prune(_cfg(tiny_corpus, tmp_path / "p", tiny_run, *extra))
    assert out["step"] == 7
    w = load_file(str(tmp_path / "p" / "ckpt-00000007" / "model.safetensors"))
    tr = PruneTrainer(_cfg(tiny_corpus, tmp_path / "p", tiny_run, *extra))  # resumes: rebuilds masks from zeros
    assert tr.current_sparsity == pytest.approx(0.5)
    for gene, name, m in tr.model.prunable_linears():
        if gene not in tr.space.genes:
            continue
        n = m.weight.numel()
        zeros = int((w[f"{name}.weight"] == 0).sum())
        assert zeros == n - round(0.5 * n), name  # the checkpoint IS the pruned model
        assert torch.equal(m.mask.expand_as(m.weight) == 0, w[f"{name}.weight"] == 0)
    assert tr.is_update_step(0) and tr.is_update_step(3) and tr.is_update_step(4) and not tr.is_update_step(5)
    assert tr.last_update_step(2) == 0 and tr.last_update_step(6) == 4


def test_eval_subnet_of_a_checkpoint(tiny_run, tmp_path):
    from omnisparse.deploy.apps import evaluate_checkpoint

    res = evaluate_checkpoint(str(tiny_run), splits=["dev"], out_dir=str(tmp_path / "e"), subnet="uniform:0.5")
    assert 0.0 <= res["dev"]["wer"]
    saved = json.loads((tmp_path / "e" / "wer.json").read_text())
    assert set(saved["subnet"].values()) == {0.5}
    with pytest.raises(ValueError):
        evaluate_checkpoint(str(tiny_run), splits=["dev"], out_dir=str(tmp_path / "e"), subnet="uniform:1.5")


@pytest.mark.slow
@pytest.mark.parametrize("schedule,ddp_paths,passes", [("sandwich-same-batch", "same", 4), ("sandwich-split", "per_rank", 2)])
def test_supernet_ddp_two_gloo_processes_sample_the_same_configs(tiny_corpus, tiny_run, tmp_path, schedule,
                                                                  ddp_paths, passes):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           "-m", "omnisparse.cli", "train", "--supernet", "--config", "tiny", f"--data.corpus_dir={tiny_corpus}",
           f"--train.out_dir={out}", "--train.max_steps=3", "--train.ckpt_every=3", "--train.threads=1",
           f"--sparsity.init_from={tiny_run}", "--sparsity.ramp_steps=2", f"--sparsity.schedule={schedule}",
           f"--sparsity.ddp_paths={ddp_paths}"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["world_size"] == 2 and cost["ddp_replicas_identical"] is True
    assert cost["ddp_same_configs"] is True
    assert cost["fwd_bwd_passes"] == 3 * passes  # this rank's passes: per_rank deals the 4 paths out
