"""One writer per directory (``omnisparse.io.lock``): taken, refused, released, stale locks taken over.
In-process; the tests with a second process are in tests/faults/test_concurrent.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from omnisparse.errors import DirectoryInUseError
from omnisparse.io.lock import LOCK_FILE, ensure_not_held, exclusive_dir, process_identity, read_lock


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(directory, **holder):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_FILE).write_text(json.dumps(holder))


def test_taken_for_the_block_and_released(tmp_path):
    run = tmp_path / "exp" / "x"
    with exclusive_dir(run, "omnisparse train") as held:
        assert held == run and run.is_dir()  # created
        holder = read_lock(run)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "omnisparse train" and holder["started"].endswith("Z")
    assert not (run / LOCK_FILE).exists() and read_lock(run) is None
    with exclusive_dir(run, "omnisparse train"):  # free again
        pass


def test_directories_it_created_are_removed_when_left_empty(tmp_path):
    run = tmp_path / "exp" / "search"
    with pytest.raises(ValueError):
        with exclusive_dir(run, "omnisparse search"):
            raise ValueError("cannot load the supernet")  # failed before writing anything
    assert not (tmp_path / "exp").exists()  # both levels it made are gone again
    with exclusive_dir(run, "omnisparse search"):
        (run / "pareto.json").write_text("{}")
    assert (run / "pareto.json").is_file()  # what a command wrote stays
    (tmp_path / "kept").mkdir()
    with exclusive_dir(tmp_path / "kept", "omnisparse train"):
        pass
    assert (tmp_path / "kept").is_dir()  # a directory that was there before stays


def test_second_holder_refused_with_one_line_naming_the_first(tmp_path):
    with exclusive_dir(tmp_path, "omnisparse search"):
        before = (tmp_path / LOCK_FILE).read_text()
        with pytest.raises(DirectoryInUseError) as e:
            with exclusive_dir(tmp_path, "omnisparse search"):
                pytest.fail("a second holder got in")
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path} is in use by pid {os.getpid()} on host {socket.gethostname()} "
                              "(omnisparse search, since ")
        assert msg.endswith("; wait for it or stop it") and "\n" not in msg
        assert (tmp_path / LOCK_FILE).read_text() == before  # the refusal leaves the holder's lock alone
    assert not (tmp_path / LOCK_FILE).exists()


def test_released_on_exception_and_ctrl_c(tmp_path):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with exclusive_dir(tmp_path, "omnisparse train"):
                raise exc
        assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = _dead_pid()
    _plant(tmp_path, pid=dead, host=socket.gethostname(), command="omnisparse train", started="2026-01-01T00:00:00Z")
    with exclusive_dir(tmp_path, "omnisparse train"):
        assert read_lock(tmp_path)["pid"] == os.getpid()
    assert f"taking over the lock of pid {dead} on host {socket.gethostname()} (omnisparse train" in caplog.text
    assert not list(tmp_path.glob(LOCK_FILE + "*"))  # nothing left behind, the stale copy included


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    _plant(tmp_path, pid=_dead_pid(), host="elsewhere.example", command="omnisparse train", started="2026-01-01T00:00:00Z")
    before = (tmp_path / LOCK_FILE).read_text()
    with pytest.raises(DirectoryInUseError, match=r"in use by pid \d+ on host elsewhere\.example .*never taken over"
                                                  r".*delete .*\.omnisparse\.lock\)$"):
        with exclusive_dir(tmp_path, "omnisparse train"):
            pass
    assert (tmp_path / LOCK_FILE).read_text() == before


@pytest.mark.parametrize("content", ["", "{not json", '{"pid": "12"}'])
def test_unreadable_lock_is_refused_with_how_to_remove_it(tmp_path, content):
    (tmp_path / LOCK_FILE).write_text(content)
    with pytest.raises(DirectoryInUseError, match="unreadable .*delete that file"):
        with exclusive_dir(tmp_path, "omnisparse train"):
            pass
    assert (tmp_path / LOCK_FILE).read_text() == content


def test_a_lock_no_longer_ours_is_left_in_place(tmp_path, caplog):
    with exclusive_dir(tmp_path, "omnisparse train"):
        _plant(tmp_path, pid=1, host="elsewhere.example", command="omnisparse train", started="x")  # deleted and retaken
    assert read_lock(tmp_path)["host"] == "elsewhere.example"
    assert "no longer this process's" in caplog.text


def test_ensure_not_held(tmp_path):
    ensure_not_held(tmp_path)  # no lock
    _plant(tmp_path, pid=_dead_pid(), host=socket.gethostname(), command="omnisparse train", started="x")
    ensure_not_held(tmp_path)  # a stale lock is no obstacle
    with exclusive_dir(tmp_path / "held", "omnisparse search"):
        with pytest.raises(DirectoryInUseError, match="omnisparse search"):
            ensure_not_held(tmp_path / "held")


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path, caplog):
    """A lock naming a pid that now belongs to another process (after a reboot, or a restarted
    container whose command gets the same pid - here: this very process) is stale."""
    me = process_identity(os.getpid())
    if me is None:
        pytest.skip("no /proc here: only the pid is checked")
    _plant(tmp_path, pid=os.getpid(), host=socket.gethostname(), command="omnisparse train",
           started="2026-01-01T00:00:00Z", process="another-boot:42")
    with exclusive_dir(tmp_path, "omnisparse train"):
        assert read_lock(tmp_path)["process"] == me
    assert f"taking over the lock of pid {os.getpid()} " in caplog.text
