import json

import pytest

from omnisparse.io.checkpoint import CheckpointError
from omnisparse.io.export_dir import (
    EXPORT_FILES,
    EXPORT_KIND,
    EXPORT_META,
    EXPORT_VERSION,
    file_digests,
    is_export_dir,
    read_export_meta,
    write_export_meta,
)


def _export(d):
    d.mkdir()
    for name in EXPORT_FILES:
        (d / name).write_bytes(name.encode())
    meta = {"kind": EXPORT_KIND, "export_version": EXPORT_VERSION, "model_config": {}, "format": "fp32-dense",
            "config": {}, "files": file_digests(d)}
    write_export_meta(d, meta)
    return meta


def test_write_then_read(tmp_path):
    d = tmp_path / "e"
    meta = _export(d)
    assert is_export_dir(d) and not is_export_dir(tmp_path)
    assert (d / EXPORT_META).read_text() == json.dumps(meta, indent=2, sort_keys=True) + "\n"
    assert read_export_meta(d) == meta
    assert sorted(p.name for p in d.iterdir()) == sorted([*EXPORT_FILES, EXPORT_META])
    (d / "state.json").write_text("{}")
    assert not is_export_dir(d)  # a checkpoint's


def test_meta_must_be_strict_json(tmp_path):
    with pytest.raises(ValueError):
        write_export_meta(tmp_path, {"x": float("nan")})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage, words", [
    (lambda d, m: (d / "tokenizer.model").write_bytes(b"other"), "tokenizer.model fails its checksum"),
    (lambda d, m: (d / "global_stats.json").unlink(), "global_stats.json is missing (incomplete export)"),
    (lambda d, m: m["files"].update({"extra.bin": "0"}), "extra.bin is missing (incomplete export)"),
    (lambda d, m: m.update(files=["x"]), "'files' must map file name -> sha256"),
    (lambda d, m: m.pop("format"), "lacks 'format'"),
    (lambda d, m: m.update(export_version=2, omnisparse_version="9.9"), "export layout version 2 (written by omnisparse 9.9)"),
    (lambda d, m: m.update(kind="x"), "does not describe an omnisparse export"),
])
def test_damage_is_one_checkpoint_error(tmp_path, damage, words):
    d = tmp_path / "e"
    meta = _export(d)
    damage(d, meta)
    write_export_meta(d, meta)
    with pytest.raises(CheckpointError) as info:
        read_export_meta(d)
    assert words in str(info.value) and str(d) in str(info.value) and "\n" not in str(info.value)
