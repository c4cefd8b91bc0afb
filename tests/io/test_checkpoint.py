import json

import pytest
import torch

from omnisparse.io import checkpoint as ck


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


def test_round_trip_with_optimizer(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    ck.save_checkpoint(tmp_path, 5, m, {"epoch": 1, "rng": ck.rng_state()}, opt, extra_files={"x.txt": b"hi"})
    path, state = ck.latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000005" and state["epoch"] == 1 and (path / "x.txt").read_bytes() == b"hi"
    m2 = _model()
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    ck.load_weights(m2, path)
    ck.load_optimizer(opt2, path, state)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for k in s1:
        for name in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))


def test_keep_last_and_no_temp_left(tmp_path):
    m = _model()
    for step in (1, 2, 3, 4):
        ck.save_checkpoint(tmp_path, step, m, {}, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-00000003", "ckpt-00000004"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
    m = _model()
    ck.save_checkpoint(tmp_path, 1, m, {})
    p2 = ck.save_checkpoint(tmp_path, 2, m, {})
    data = (p2 / "model.safetensors").read_bytes()
    (p2 / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    path, _ = ck.latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000001"
    assert "checksum" in caplog.text


def test_crash_while_writing_leaves_previous(tmp_path, monkeypatch):
    m = _model()
    ck.save_checkpoint(tmp_path, 1, m, {})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_checkpoint(tmp_path, 2, m, {})
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["ckpt-00000001"]
    assert ck.latest_checkpoint(tmp_path)[0].name == "ckpt-00000001"
    assert not list(tmp_path.glob(".*tmp*"))


def test_shape_mismatch_is_named(tmp_path):
    ck.save_checkpoint(tmp_path, 1, _model(), {})
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.LayerNorm(5))
    with pytest.raises(ck.CheckpointError, match="shape mismatch"):
        ck.load_weights(other, tmp_path / "ckpt-00000001")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "ckpt-00000001").mkdir()
    (tmp_path / "ckpt-00000001" / "state.json").write_text("{not json")
    assert ck.latest_checkpoint(tmp_path) is None
    with pytest.raises(ck.CheckpointError):
        ck.resolve_checkpoint(tmp_path)


def test_rng_state_round_trip():
    s = ck.rng_state()
    json.dumps(s)
    a = torch.rand(3)
    ck.set_rng_state(s)
    assert torch.equal(a, torch.rand(3))


def test_state_json_digit_flip_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    """A change that leaves state.json valid JSON (one digit of ``step``) fails its own checksum."""
    m = _model()
    ck.save_checkpoint(tmp_path, 1, m, {"epoch": 0})
    p2 = ck.save_checkpoint(tmp_path, 2, m, {"epoch": 0})
    text = (p2 / "state.json").read_text()
    assert '"step": 2,' in text
    (p2 / "state.json").write_text(text.replace('"step": 2,', '"step": 3,'))
    json.loads((p2 / "state.json").read_text())  # still valid JSON
    with pytest.raises(ck.CheckpointError, match="state.json fails its checksum"):
        ck.verify_checkpoint(p2)
    path, state = ck.latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000001" and state["step"] == 1
    assert "state.json fails its checksum" in caplog.text and "trying an older one" in caplog.text


def test_state_digest_is_not_part_of_the_returned_state_and_write_state_reseals(tmp_path):
    p = ck.save_checkpoint(tmp_path, 1, _model(), {"epoch": 0, "betas": (0.9, 0.98), "nan": float("nan")})
    assert ck.STATE_DIGEST in json.loads((p / "state.json").read_text())
    state = ck.verify_checkpoint(p)
    assert ck.STATE_DIGEST not in state and state["betas"] == [0.9, 0.98]
    state["epoch"] = 7  # an edited state, sealed again
    ck.write_state(p, state)
    assert ck.verify_checkpoint(p)["epoch"] == 7


def test_legacy_state_json_without_its_checksum_is_accepted_with_one_warning(tmp_path, caplog):
    """Checkpoints written before state.json carried its own checksum (the runs on disk) still resume."""
    p = ck.save_checkpoint(tmp_path, 3, _model(), {"epoch": 1})
    state = json.loads((p / "state.json").read_text())
    del state[ck.STATE_DIGEST]
    (p / "state.json").write_text(json.dumps(state, indent=1))  # exactly what older releases wrote
    path, got = ck.latest_checkpoint(tmp_path)
    assert path == p and got["step"] == 3 and got["epoch"] == 1
    ck.verify_checkpoint(p)
    assert caplog.text.count("carries no checksum of its own") == 1
    assert f"written by omnisparse {state['omnisparse_version']}" in caplog.text
