"""Dual-mode training (``train --dual-mode``): one weight set, gradients of the two paths, masks,
exact streaming of the s*-masked model, exact resume, export of both modes, config errors."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.deploy.apps import evaluate_checkpoint
from omnisparse.export.loading import load_model
from omnisparse.export.subnet import ExportError, export_subnet, resolve_mode, space_for
from omnisparse.io import checkpoint as ck
from omnisparse.sparsity.space import space_and_bank
from omnisparse.train.dual_mode import DualModeTrainer, check_dual_config
from omnisparse.train.registry import train

S_STAR = 0.7
# from scratch (no init_from, dense_steps 0): the setting dual mode adds over the supernet
ARGS = ["--train.max_steps=6", "--train.ckpt_every=3", "--train.valid_every=0", "--data.dev_subset=8",
        "--dual.ramp_steps=4", "--dual.extra_sparsities=1", "--dual.distill=true", f"--dual.sparsity={S_STAR}"]


def _cfg(corpus, out, *extra):
    return load_config("dual_tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", *ARGS, *extra])


def _first_batch(tr):
    return next(iter(tr.batches()))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _stream_helper():
    """``stream(enc, feats, piece)`` of tests/models/test_encoder.py (chunk-by-chunk ``Encoder.infer``)."""
    path = Path(__file__).resolve().parents[1] / "models" / "test_encoder.py"
    spec = importlib.util.spec_from_file_location("_encoder_test_helpers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.stream


@pytest.fixture(scope="module")
def dual_run(tiny_corpus, tmp_path_factory) -> Path:
    """6 dual-mode steps from scratch (1 extra sparsity, distillation), validated at the end."""
    out = tmp_path_factory.mktemp("runs") / "dual"
    train(_cfg(tiny_corpus, out), dual_mode=True)
    return out


# ---------------------------------------------------------------------- paths and gradients
def test_schedule_paths_and_dense_warmup(tiny_corpus, tmp_path):
    tr = DualModeTrainer(_cfg(tiny_corpus, tmp_path / "d", "--sparsity.dense_steps=2"))
    assert tr.sparse_start == 2
    for step in (0, 1, 2):  # warm-up and the ramp's first step: dense full + dense stream
        tr.step = step
        assert tr.current_sparsity() == 0.0
        assert [(p.name, p.mode) for p in tr.step_paths()] == [("full", "full"), ("stream", "stream")]
        assert all(set(p.config.values()) == {0.0} for p in tr.step_paths())
    tr.step = 4
    s = tr.current_sparsity()
    assert 0.0 < s < S_STAR
    paths = tr.step_paths()
    assert [(p.name, p.mode, p.dropout) for p in paths] == [("full", "full", True), ("stream", "stream", False),
                                                           ("extra_1", "stream", False)]
    assert set(paths[0].config.values()) == {0.0} and set(paths[1].config.values()) == {s}
    assert all(v <= s + 1e-9 and v in tr.space.grid for v in paths[2].config.values())
    assert paths == tr.step_paths()  # Random(seed, step): every DDP rank and a resumed run agree
    tr.step = 6
    assert tr.current_sparsity() == S_STAR
    assert tr.checkpoint_state()["trained_modes"] == ["full", "stream"]
    assert tr.checkpoint_state()["stream_sparsity"] == S_STAR


def test_modes_share_every_parameter_and_gradients_add_up(tiny_corpus, tmp_path):
    """One weight set: both paths put gradient into every parameter tensor (the same tensors), and a
    dual step's gradient is the weighted sum of the separately computed paths' gradients."""
    tr = DualModeTrainer(_cfg(tiny_corpus, tmp_path / "g", "--dual.full_weight=0.5", "--dual.stream_weight=2.0"))
    tr.step = 3
    batch = _first_batch(tr)
    paths = tr.step_paths()
    assert [p.name for p in paths] == ["full", "stream", "extra_1"]
    before = tr.bank.refresh_count
    tr.optimizer.zero_grad(set_to_none=True)
    metrics = tr.train_step(batch)
    assert tr.bank.refresh_count == before + 1  # one ranking for all paths of the step
    assert all(m.mask is None for _, _, m in tr.model.prunable_linears())  # dense again after the step
    together = _grads(tr.model)
    for key in ("loss_full", "loss_stream", "loss_extra_1", "distill", "stream_sparsity"):
        assert key in metrics, key

    trainable = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    tr.bank.refresh()
    expected, per_path, total, teacher = {}, [], 0.0, None
    for i, p in enumerate(paths):
        tr.optimizer.zero_grad(set_to_none=True)
        tr.bank.apply(p.config)
        kd = {"return_log_probs": True} if i == 0 else {"teacher_log_probs": teacher, "distill_weight": 1.0}
        out = tr.backward_path(batch, p.mode, **kd)
        teacher = out.log_probs if i == 0 else teacher
        total += p.weight * float(out.loss.detach())
        g = _grads(tr.model)
        per_path.append(g)
        for n, v in g.items():
            expected[n] = expected.get(n, 0) + p.weight * v
    tr.bank.clear()
    full, stream = per_path[0], per_path[1]
    assert set(full) == set(stream) == trainable == set(together)  # the same tensors, every one of them
    assert not any(torch.equal(full[n], stream[n]) for n in trainable if full[n].abs().sum() > 0)  # modes differ
    assert metrics["loss"] == pytest.approx(total, rel=1e-5)
    for n in together:
        torch.testing.assert_close(together[n], expected[n], rtol=1e-4, atol=1e-6)


def test_stream_path_gives_zero_gradient_to_pruned_weights(tiny_corpus, tmp_path):
    tr = DualModeTrainer(_cfg(tiny_corpus, tmp_path / "z"))
    batch = _first_batch(tr)
    tr.bank.refresh()
    tr.bank.apply(tr.space.uniform(S_STAR))
    tr.optimizer.zero_grad(set_to_none=True)
    tr.backward_path(batch, "stream")
    for gene, name, m in tr.model.prunable_linears():
        if gene not in tr.space.genes:  # predictor/joiner: not pruned by default
            assert m.mask is None, name
            continue
        pruned = m.mask.expand_as(m.weight) == 0
        assert pruned.any(), name
        assert torch.count_nonzero(m.weight.grad[pruned]) == 0, name
        assert torch.count_nonzero(m.weight.grad[~pruned]) > 0, name
    tr.bank.clear()


def test_masked_model_streams_exactly(dual_run):
    """Chunk-by-chunk ``infer`` of the checkpoint under its s* masks == the masked stream forward."""
    stream = _stream_helper()
    lm = load_model(dual_run)
    enc = lm.model.encoder
    _, bank = space_and_bank(lm.model, lm.config.sparsity, refresh=True)
    bank.apply({g: S_STAR for g in bank.genes})
    torch.manual_seed(0)
    feats = torch.randn(2, 83, 80)
    with torch.no_grad():
        ref, _ = enc(feats, mode="stream")
        for piece in (7, enc.frames_per_chunk, 1000):
            torch.testing.assert_close(stream(enc, feats, piece), ref, atol=1e-5, rtol=0)
        full, _ = enc(feats, mode="full")
        bank.clear()
        dense, _ = enc(feats, mode="stream")
    assert (full - ref).abs().max() > 1e-3 and (dense - ref).abs().max() > 1e-3  # not vacuous


# ---------------------------------------------------------------------- runs
def test_dual_run_metrics_checkpoint_and_cost(dual_run):
    header, *rows = (dual_run / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    for key in ("dev_wer", "dev_wer_full", "dev_wer_stream", "loss_full", "loss_stream", "loss_extra_1",
                "stream_sparsity", "distill"):
        assert key in cols, key
    last = dict(zip(cols, rows[-1].split(",")))
    assert float(last["dev_wer_stream"]) >= 0 and last["dev_wer"] == last["dev_wer_full"]
    path, state = ck.latest_checkpoint(dual_run)
    assert state["kind"] == "dual" and state["trained_modes"] == ["full", "stream"]
    assert state["stream_sparsity"] == state["config"]["dual"]["sparsity"] == S_STAR
    lm = load_model(dual_run)
    assert lm.trained_modes == ("full", "stream")
    lm.check_mode("full")
    lm.check_mode("stream")
    # one state dict for both modes: exactly the Transducer's entries (no per-mode copies)
    assert set(load_file(str(path / "model.safetensors"))) == set(lm.model.state_dict())
    cost = json.loads((dual_run / "cost.json").read_text())
    # step 0 (s = 0): full + stream; steps 1-5: full + stream + 1 extra
    assert cost["optimizer_steps"] == 6 and cost["fwd_bwd_passes"] == 2 + 5 * 3
    assert cost["audio_seconds"] < cost["path_audio_seconds"] < 3 * cost["audio_seconds"]


def test_dual_run_resumes_bitwise(dual_run, tiny_corpus, tmp_path, interrupt_at):
    interrupt_at(DualModeTrainer, 4, train, _cfg(tiny_corpus, tmp_path / "b"), dual_mode=True)
    assert train(_cfg(tiny_corpus, tmp_path / "b"), dual_mode=True)["step"] == 6
    a = load_file(str(dual_run / "ckpt-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = json.loads((dual_run / "cost.json").read_text())
    cb = json.loads((tmp_path / "b" / "cost.json").read_text())
    assert ca["fwd_bwd_passes"] == cb["fwd_bwd_passes"]


# ---------------------------------------------------------------------- export
def test_export_full_mode_is_the_dense_server_model(dual_run, tmp_path, capsys):
    out = tmp_path / "server"
    assert main(["export", str(dual_run), "--mode", "full", "--out", str(out)]) == 0
    capsys.readouterr()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["trained_modes"] == ["full"] and meta["mode"] == "full" and meta["format"] == "fp32-dense"
    assert set(meta["config"].values()) == {0.0} and meta["nonzero_params"] == meta["dense_params"]
    lm = load_model(out)
    assert lm.trained_modes == ("full",)
    res = evaluate_checkpoint(str(out), splits=["dev"], out_dir=str(tmp_path / "e1"))
    assert json.loads((tmp_path / "e1" / "wer.json").read_text())["mode"] == "full"  # full by default
    ref = evaluate_checkpoint(str(dual_run), splits=["dev"], mode="full", out_dir=str(tmp_path / "e0"))
    assert res["dev"]["wer"] == ref["dev"]["wer"]  # bit-identical dense weights
    assert (tmp_path / "e1" / "hyps_dev.txt").read_text() == (tmp_path / "e0" / "hyps_dev.txt").read_text()
    assert main(["eval", str(out), "--splits", "dev", "--mode", "stream"]) == 2  # not its mode
    assert "trained for mode" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["int8-sparse", "fp32-sparse"])
def test_export_stream_mode_is_the_sparse_device_model(dual_run, tmp_path, capsys, fmt):
    out = tmp_path / "device"
    assert main(["export", str(dual_run), "--mode", "stream", "--format", fmt, "--out", str(out)]) == 0
    capsys.readouterr()
    meta = json.loads((out / "meta.json").read_text())
    space = space_for(load_model(dual_run))
    assert meta["trained_modes"] == ["stream"] and meta["mode"] == "stream"
    assert set(meta["config"].values()) == {S_STAR}  # default: the checkpoint's dual.sparsity
    assert (out / "model.safetensors").stat().st_size == space.size_bytes(space.uniform(S_STAR), fmt)
    assert load_model(out).trained_modes == ("stream",)
    if fmt == "fp32-sparse":  # the same network as the s*-masked checkpoint in stream mode
        res = evaluate_checkpoint(str(out), splits=["dev"], out_dir=str(tmp_path / "e1"))
        ref = evaluate_checkpoint(str(dual_run), splits=["dev"], mode="stream", subnet=f"uniform:{S_STAR}",
                                  out_dir=str(tmp_path / "e0"))
        assert res["dev"]["wer"] == ref["dev"]["wer"]
        assert (tmp_path / "e1" / "hyps_dev.txt").read_text() == (tmp_path / "e0" / "hyps_dev.txt").read_text()
    out2 = tmp_path / "device05"  # --sparsity S == --config uniform:S
    assert main(["export", str(dual_run), "--mode", "stream", "--sparsity", "0.5", "--format", fmt,
                 "--out", str(out2)]) == 0
    assert set(json.loads((out2 / "meta.json").read_text())["config"].values()) == {0.5}
    assert (out2 / "model.safetensors").stat().st_size == space.size_bytes(space.uniform(0.5), fmt)


def test_export_mode_errors(dual_run, tmp_path, capsys):
    for argv, msg in [(["--mode", "full", "--sparsity", "0.5"], "dense server model"),
                      (["--mode", "full", "--config", "uniform:0.5"], "dense server model"),
                      ([], "give one of")]:
        assert main(["export", str(dual_run), *argv, "--out", str(tmp_path / "x")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and msg in err[0], (argv, err)
    with pytest.raises(SystemExit):  # argparse: --sparsity is one of the mutually exclusive choices
        main(["export", str(dual_run), "--sparsity", "0.5", "--config", "uniform:0.5", "--out", str(tmp_path / "x")])
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # without --mode, a sparse config of a dual-mode checkpoint is exported for streaming
    res = export_subnet(dual_run, "uniform:0.5", "fp32-sparse", tmp_path / "auto")
    assert res.meta["trained_modes"] == ["stream"] and res.meta["mode"] == "stream"
    lm = load_model(dual_run)
    _, state = ck.resolve_checkpoint(dual_run)
    with pytest.raises(ExportError, match="no streaming sparsity"):
        resolve_mode(lm, {k: v for k, v in state.items() if k != "stream_sparsity"}, space_for(lm), None, "stream")
    lm.trained_modes = ("stream",)  # as a plain streaming checkpoint
    with pytest.raises(ExportError, match="trained for mode"):
        resolve_mode(lm, state, space_for(lm), None, "full")


# ---------------------------------------------------------------------- config errors
def test_config_errors_are_clear(tiny_corpus, tmp_path, capsys):
    cfg = _cfg(tiny_corpus, tmp_path / "c")
    with pytest.raises(ValueError, match="mutually exclusive"):
        train(cfg, supernet=True, dual_mode=True)
    assert main(["train", "--config", "dual_tiny", "--supernet", "--dual-mode",
                 f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tmp_path / 'c'}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "mutually exclusive" in err[0]
    for extra, match in [(["--dual.sparsity=0.95"], r"dual.sparsity .* \(0, 0.9\]"),
                         (["--dual.sparsity=0"], "dual.sparsity"),
                         (["--sparsity.grid=[0.0,0.25,0.5]", "--dual.sparsity=0.7"], r"\(0, 0.5\]"),
                         (["--dual.full_weight=0"], "full_weight"),
                         (["--dual.extra_sparsities=-1"], "extra_sparsities")]:
        with pytest.raises(ValueError, match=match):
            check_dual_config(_cfg(tiny_corpus, tmp_path / "c", *extra))
        with pytest.raises(ValueError, match=match):  # refused before any data or model is set up
            DualModeTrainer(_cfg(tiny_corpus, tmp_path / "c2", *extra))
    assert not (tmp_path / "c2").exists()
    check_dual_config(_cfg(tiny_corpus, tmp_path / "c", "--sparsity.grid=[0.0,0.5,0.75]", "--dual.sparsity=0.75"))


@pytest.mark.slow
def test_dual_mode_ddp_two_gloo_processes(tiny_corpus, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29521",
           "-m", "omnisparse.cli", "train", "--dual-mode", "--config", "dual_tiny", f"--data.corpus_dir={tiny_corpus}",
           f"--train.out_dir={out}", "--train.max_steps=3", "--train.ckpt_every=3", "--train.threads=1",
           "--data.dev_subset=4", "--dual.ramp_steps=2", "--dual.extra_sparsities=1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["world_size"] == 2 and cost["ddp_replicas_identical"] is True
    assert cost["ddp_same_configs"] is True
    assert cost["fwd_bwd_passes"] == 2 + 2 * 3
