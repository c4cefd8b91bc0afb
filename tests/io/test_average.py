import shutil
from pathlib import Path

import pytest
import torch

from omnisparse.io import checkpoint as ck
from omnisparse.io.average import average_checkpoints, default_average_dir, last_checkpoints, named_checkpoints


def _model(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))  # BatchNorm: an int64 counter


def _run(tmp_path, seeds=(0, 1, 2), extra=b"tok", config=None):
    models = []
    for step, seed in enumerate(seeds, start=1):
        m = _model(seed)
        ck.save_checkpoint(tmp_path, step * 100, m, {"model_config": config or {"d": 3}},
                           extra_files={"tokenizer.model": extra})
        models.append(m)
    return models


def test_mean_of_the_last_n(tmp_path):
    models = _run(tmp_path)
    ckpts = last_checkpoints(tmp_path, 2)
    assert [p.name for p, _ in ckpts] == ["ckpt-00000200", "ckpt-00000300"]
    out = average_checkpoints(ckpts, default_average_dir([p for p, _ in ckpts]))
    assert out.name == "avg-00000200-00000300"
    assert [p.name for p in ck.list_checkpoints(tmp_path)][-1] == "ckpt-00000300"  # never resumed from
    state = ck.verify_checkpoint(out)
    assert [a["step"] for a in state["averaged_from"]] == [200, 300] and "optimizer" not in state
    assert (out / "tokenizer.model").read_bytes() == b"tok"
    m = _model(9)
    ck.load_weights(m, out)
    for k, v in m.state_dict().items():
        want = (models[1].state_dict()[k].double() + models[2].state_dict()[k].double()) / 2
        assert torch.allclose(v.double(), want.to(v.dtype).double()), k


def test_each_file_is_hashed_once(tmp_path, monkeypatch):
    """Choosing the sources verifies them; averaging them does not hash their files again."""
    from omnisparse.io import atomic

    _run(tmp_path)
    hashed = []
    real = atomic.sha256
    monkeypatch.setattr(atomic, "sha256", lambda path: hashed.append((Path(path).parent.name, Path(path).name)) or real(path))
    average_checkpoints(last_checkpoints(tmp_path, 2), tmp_path / "avg")
    sources = sorted(h for h in hashed if h[0].startswith("ckpt-"))
    assert sources == [(c, f) for c in ("ckpt-00000200", "ckpt-00000300") for f in ("model.safetensors", "tokenizer.model")]


def test_corrupt_checkpoint_is_skipped_and_too_few_refused(tmp_path):
    _run(tmp_path)
    (tmp_path / "ckpt-00000300" / "model.safetensors").write_bytes(b"junk")
    assert [p.name for p, _ in last_checkpoints(tmp_path, 2)] == ["ckpt-00000100", "ckpt-00000200"]
    with pytest.raises(ck.CheckpointError, match="2 valid checkpoint.*3 asked"):
        last_checkpoints(tmp_path, 3)


@pytest.mark.parametrize("what", ["tokenizer", "config", "shape"])
def test_checkpoints_of_other_runs_are_refused(tmp_path, what):
    _run(tmp_path / "a", seeds=(0,))
    other = tmp_path / "b"
    if what == "shape":
        ck.save_checkpoint(other, 200, torch.nn.Linear(4, 2), {"model_config": {"d": 3}},
                           extra_files={"tokenizer.model": b"tok"})
    else:
        _run(other, seeds=(1,), extra=b"other" if what == "tokenizer" else b"tok",
             config={"d": 4} if what == "config" else None)
    srcs = [*ck.list_checkpoints(tmp_path / "a"), *ck.list_checkpoints(other)]
    with pytest.raises(ck.CheckpointError, match="cannot average"):
        average_checkpoints(named_checkpoints(srcs), tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_unequal_integer_tensors_are_refused(tmp_path):
    models = _run(tmp_path, seeds=(0,))
    m = models[0]
    m[1].num_batches_tracked += 5
    ck.save_checkpoint(tmp_path, 200, m, {"model_config": {"d": 3}}, extra_files={"tokenizer.model": b"tok"})
    with pytest.raises(ck.CheckpointError, match="integer tensor 1.num_batches_tracked"):
        average_checkpoints(named_checkpoints(ck.list_checkpoints(tmp_path)), tmp_path / "avg")


def test_cli_average_then_eval(tiny_run, tmp_path, capsys):
    from omnisparse.cli import main

    run = tmp_path / "run"
    src = ck.list_checkpoints(tiny_run)[-1]
    for name in ("ckpt-00000029", "ckpt-00000030"):  # two copies: their mean is the model itself
        shutil.copytree(src, run / name)
    assert main(["average", str(run), "--last", "2"]) == 0
    out = run / "avg-00000029-00000030"
    assert main(["eval", str(out), "--splits", "dev", "--out", str(tmp_path / "e1")]) == 0
    assert main(["eval", str(src), "--splits", "dev", "--out", str(tmp_path / "e2")]) == 0
    assert (tmp_path / "e1" / "hyps_dev.txt").read_text() == (tmp_path / "e2" / "hyps_dev.txt").read_text()
    assert main(["average", str(src), str(src)]) == 2  # named checkpoints need --out
    assert "needs --out" in capsys.readouterr().err
