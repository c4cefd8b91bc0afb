import errno
import os

import pytest

from omnisparse.io import atomic
from omnisparse.utils.faults import disk_full


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic.atomic_write_text(path, "old")
    atomic.atomic_write_bytes(path, b"new\n")
    assert path.read_bytes() == b"new\n" and [p.name for p in path.parent.iterdir()] == ["x.json"]


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_writer_fsyncs_only_when_asked(tmp_path, monkeypatch, fsync):
    calls = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(fd))
    with atomic.atomic_writer(tmp_path / "x.bin", fsync=fsync) as f:
        f.write(b"a")
        f.write(b"b")
    assert (tmp_path / "x.bin").read_bytes() == b"ab" and len(calls) == int(fsync)


def test_atomic_writer_syncs_the_directory_when_asked(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "fsync_path", synced.append)
    with atomic.atomic_writer(tmp_path / "x.bin", sync_dir=True) as f:
        f.write(b"a")
    assert synced == [tmp_path]


def test_a_failure_inside_the_writer_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="layout"):
        with atomic.atomic_writer(path) as f:
            f.write(b"half")
            raise RuntimeError("layout mismatch")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_fsync_file_raises_and_fsync_path_does_not(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setattr(atomic.os, "fsync", disk_full(os.fsync))
    with pytest.raises(OSError) as info:
        atomic.fsync_file(tmp_path / "f")
    assert info.value.errno == errno.ENOSPC
    atomic.fsync_path(tmp_path)  # best effort: ignored
    atomic.fsync_path(tmp_path / "missing")


def test_sha256_and_verify_digests(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    digest = atomic.sha256(tmp_path / "a")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    atomic.verify_digests(tmp_path, {"a": digest})
    with pytest.raises(ValueError, match=r": a fails its checksum \(truncated or corrupted\)$"):
        atomic.verify_digests(tmp_path, {"a": "0" * 64})
    with pytest.raises(KeyError, match="b is gone"):
        atomic.verify_digests(tmp_path, {"a": digest, "b": digest}, KeyError, missing="is gone")
    (tmp_path / "d").mkdir()  # a directory where a file is recorded: missing, not a crash
    with pytest.raises(ValueError, match="d is missing"):
        atomic.verify_digests(tmp_path, {"d": digest})
