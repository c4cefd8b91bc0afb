"""Two commands writing one directory: the second is refused with one line naming the first (another
process, holding ``.omnisparse.lock``); the lock goes with the holder on SIGTERM, and a SIGKILLed
holder's lock is taken over with a warning. Tiny child processes that only hold the lock; no training."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from omnisparse.cli import main
from omnisparse.errors import DirectoryInUseError
from omnisparse.io.lock import LOCK_FILE, exclusive_dir, read_lock
from omnisparse.utils.faults import child_env

HOLD = """
import sys, time
from omnisparse.io.lock import exclusive_dir
with exclusive_dir(sys.argv[1], "omnisparse train"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A child process holding ``tmp_path / "run"``: ``(process, run directory)``."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, run
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_another_process_holding_the_directory_makes_the_second_refuse(holder):
    proc, run = holder
    with pytest.raises(DirectoryInUseError) as e:
        with exclusive_dir(run, "omnisparse train"):
            pytest.fail("two holders")
    assert str(e.value).startswith(f"{run} is in use by pid {proc.pid} on host {socket.gethostname()} "
                                   "(omnisparse train, since ")
    assert read_lock(run)["pid"] == proc.pid  # untouched


def test_the_cli_prints_one_line_and_writes_nothing(holder, capsys):
    proc, run = holder
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", "--config", "tiny", f"--train.out_dir={run}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"omnisparse: error: {run} is in use by pid {proc.pid} on host ") and "\n" not in err
    assert err.endswith("wait for it or stop it")
    assert sorted(p.name for p in run.iterdir()) == before == [LOCK_FILE]


def test_sigterm_releases_the_lock(holder):
    proc, run = holder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (run / LOCK_FILE).exists()


def test_lock_of_a_sigkilled_holder_is_taken_over_with_a_warning(holder, caplog):
    proc, run = holder
    proc.kill()
    proc.wait()
    assert read_lock(run)["pid"] == proc.pid  # left behind
    with exclusive_dir(run, "omnisparse train"):
        assert read_lock(run)["pid"] == os.getpid()
    assert f"taking over the lock of pid {proc.pid} " in caplog.text


@pytest.mark.parametrize("rank", ["0", "1"])
def test_training_holds_the_run_directory_on_the_main_rank_only(tmp_path, monkeypatch, rank):
    """Held while the trainer is built and while it runs (not per checkpoint); the other ranks of a
    torchrun launch take no lock."""
    from omnisparse.config import load_config
    from omnisparse.train.trainer import train_in_run_dir

    seen = []

    class FakeTrainer:
        def __init__(self, cfg, resume):
            seen.append(read_lock(cfg.train.out_dir))

        def run(self):
            seen.append(read_lock(run))
            return {"step": 0}

    run = tmp_path / "run"
    monkeypatch.setenv("RANK", rank)
    cfg = load_config("tiny", [f"--train.out_dir={run}"])
    assert train_in_run_dir(FakeTrainer, cfg, True, "omnisparse prune") == {"step": 0}
    if rank == "0":
        assert [h["command"] for h in seen] == ["omnisparse prune"] * 2 and seen[0] == seen[1]
    else:
        assert seen == [None, None]
    assert read_lock(run) is None


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox are needed (scripts/setup.sh)")
def test_corpus_build_into_a_held_directory_is_refused_before_writing(holder):
    from omnisparse.data.corpus import CorpusPreset, build_corpus

    proc, run = holder
    with pytest.raises(DirectoryInUseError, match=f"in use by pid {proc.pid} "):
        build_corpus(run, CorpusPreset("micro", 4, 2, 2, 2), seed=0, num_jobs=1, progress=False)
    assert [p.name for p in Path(run).iterdir()] == [LOCK_FILE]


def test_export_never_replaces_a_held_directory(holder, tmp_path):
    from omnisparse.export.subnet import export_subnet

    proc, run = holder
    with pytest.raises(DirectoryInUseError, match=f"in use by pid {proc.pid} "):
        export_subnet(tmp_path / "no-such-supernet", "uniform:0", "fp32-dense", run, overwrite=True)
    assert [p.name for p in run.iterdir()] == [LOCK_FILE]


@pytest.mark.parametrize("command", [
    ["search", "--config", "search_tiny", "--search.supernet=no-such-supernet", "--search.out_dir={run}"],
    pytest.param(["data", "build", "--preset", "tiny", "--out", "{run}", "--jobs", "1"],
                 marks=pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                          reason="espeak-ng and sox are needed (scripts/setup.sh)")),
    ["prune", "--config", "prune_tiny", "--train.out_dir={run}"],
    ["pretrain", "--config", "pretrain_tiny", "--train.out_dir={run}"],
    ["train", "--config", "tiny", "--supernet", "--train.out_dir={run}"],
])
def test_every_writing_command_refuses_a_held_directory(holder, capsys, command):
    """One line naming the holder, exit status 1, the directory untouched; the lock is taken before
    anything slow (the search's supernet is not even looked at, the corpus is not planned)."""
    proc, run = holder
    assert main([part.format(run=run) for part in command]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnisparse: error")]
    assert len(err) == 1 and f"in use by pid {proc.pid} on host " in err[0]
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE] and read_lock(run)["pid"] == proc.pid


@pytest.mark.parametrize("holder_kind", ["dead pid", "reused pid"])
def test_the_cli_takes_over_a_stale_lock_with_a_warning(tmp_path, capsys, caplog, holder_kind):
    """A lock left by a SIGKILLed command (its pid gone, or reused by an unrelated process since) is
    taken over with a warning naming it; the command then goes on (here: to a one-line error about
    the corpus, which does not exist) and releases the lock."""
    import json

    from omnisparse.utils.faults import dead_pid

    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid() if holder_kind == "dead pid" else os.getppid()
    lock = {"pid": pid, "host": socket.gethostname(), "command": "omnisparse train", "started": "2026-01-01T00:00:00Z",
            "process": "another-boot:1"}
    (run / LOCK_FILE).write_text(json.dumps(lock))
    rc = main(["train", "--config", "tiny", f"--train.out_dir={run}", f"--data.corpus_dir={tmp_path / 'none'}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"taking over the lock of pid {pid} " in caplog.text and "Traceback" not in err
    assert not (run / LOCK_FILE).exists()


def test_a_lock_of_another_host_or_unreadable_is_never_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for content, words in [('{"pid": 1, "host": "elsewhere", "command": "omnisparse train"}', "never taken over"),
                           ("\x00\x01garbage", "unreadable")]:
        (run / LOCK_FILE).write_text(content)
        assert main(["train", "--config", "tiny", f"--train.out_dir={run}"]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnisparse: error")]
        assert len(err) == 1 and words in err[0] and str(run / LOCK_FILE) in err[0]
        assert (run / LOCK_FILE).read_text() == content


@pytest.mark.parametrize("command", [
    ["data", "prepare", "--corpus", "{run}", "--vocab-size", "64", "--jobs", "1"],
    ["train", "--config", "tiny", "--data.corpus_dir={run}", "--train.out_dir={out}"],
    ["data", "librispeech", "{src}", "--out", "{run}"],
])
def test_corpus_writers_refuse_a_corpus_being_built(holder, tiny_corpus, tmp_path, capsys, command):
    """Preparing features / tokenizer, or LibriSpeech manifests, into a corpus another process holds:
    one line naming it, the corpus untouched, the training's run directory not left behind."""
    from omnisparse.data.layout import CorpusLayout

    proc, run = holder
    shutil.copytree(CorpusLayout(tiny_corpus).manifests, CorpusLayout(run).manifests)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    src = tmp_path / "src"
    (src / "LibriSpeech" / "dev-clean" / "1089").mkdir(parents=True)
    out = tmp_path / "out"
    assert main([part.format(run=run, src=src, out=out) for part in command]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnisparse: error")]
    assert len(err) == 1 and f"in use by pid {proc.pid} on host " in err[0]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before and not out.exists()


def test_a_prepared_corpus_is_read_without_its_lock(holder, tiny_corpus):
    """Training on a corpus whose features, stats and tokenizer exist writes nothing into it, so the
    preparation step goes on while another process holds it."""
    from omnisparse.data.prepare import prepare_training_data

    proc, run = holder
    shutil.copytree(tiny_corpus, run, dirs_exist_ok=True)
    info = prepare_training_data(run, ["train"], vocab_size=64)
    assert info["validation"] == {} and read_lock(run)["pid"] == proc.pid
