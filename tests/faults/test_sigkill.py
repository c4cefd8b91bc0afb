"""kill -9 at awkward moments: a resumed run ends exactly where an uninterrupted one does.

Each case runs the real command line in a child process (its own process group), SIGKILLs it once
a checkpoint (or a search generation, or some corpus files) exists, plus a random delay, resumes in
this process and compares with an uninterrupted run of the same seed: weights bitwise, the search's
Pareto table, the corpus's audio and manifests byte for byte. More kill points: ``bench/faults.py``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from omnisparse.config import load_config
from omnisparse.io import checkpoint as ck
from omnisparse.utils.faults import (checkpoint_exists, new_checkpoint, omnisparse_cmd, run_killed, soak_killed, tree_digest,
                                    weights_equal)

RNG = random.Random(8)  # kill delays: random, but the same in every CI run


def _overrides(corpus, out, *extra):
    return [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.threads=1", "--train.keep_last=2", *extra]


def _final(run: Path, step: int) -> Path:
    return run / f"ckpt-{step:08d}" / "model.safetensors"


def test_dense_train_killed_after_a_checkpoint_resumes_bitwise(tiny_corpus, tmp_path):
    from omnisparse.train.registry import train

    args = ["--train.max_steps=10", "--train.ckpt_every=2"]
    train(load_config("tiny", _overrides(tiny_corpus, tmp_path / "ref", *args)))
    run = tmp_path / "killed"
    res = run_killed(omnisparse_cmd("train", "--config", "tiny", *_overrides(tiny_corpus, run, *args)),
                     kill_when=checkpoint_exists(run, 4), delay_s=RNG.uniform(0.0, 0.2))
    assert res.killed, res.output
    assert not _final(run, 10).exists()
    out = train(load_config("tiny", _overrides(tiny_corpus, run, *args)))  # resume
    assert out["step"] == 10
    assert weights_equal(_final(tmp_path / "ref", 10), _final(run, 10))
    assert not list(run.glob(".ckpt-*.tmp"))


def test_dense_train_killed_while_writing_a_checkpoint(tiny_corpus, tmp_path):
    """The kill lands while ``.ckpt-N.tmp`` is being written: the half-written checkpoint is never
    used, the previous one is, and the result is the same."""
    from omnisparse.train.registry import train

    args = ["--train.max_steps=8", "--train.ckpt_every=2"]
    train(load_config("tiny", _overrides(tiny_corpus, tmp_path / "ref", *args)))
    run = tmp_path / "killed"
    tmp = run / ".ckpt-00000004.tmp"
    res = run_killed(omnisparse_cmd("train", "--config", "tiny", *_overrides(tiny_corpus, run, *args)),
                     kill_when=tmp.exists, poll_s=0.001)
    assert res.killed, res.output
    found = ck.latest_checkpoint(run)
    assert found is not None and found[1]["step"] in (2, 4)  # the tmp was either dropped or fully renamed
    train(load_config("tiny", _overrides(tiny_corpus, run, *args)))
    assert weights_equal(_final(tmp_path / "ref", 8), _final(run, 8))
    assert not list(run.glob(".ckpt-*.tmp"))


def test_supernet_killed_twice_resumes_bitwise(tiny_corpus, tiny_run, tmp_path):
    from omnisparse.train.registry import train

    args = ["--train.max_steps=6", "--train.ckpt_every=2", f"--sparsity.init_from={tiny_run}",
            "--sparsity.ramp_steps=4"]
    train(load_config("supernet_tiny", _overrides(tiny_corpus, tmp_path / "ref", *args)), supernet=True)
    run = tmp_path / "killed"
    cmd = omnisparse_cmd("train", "--supernet", "--config", "supernet_tiny", *_overrides(tiny_corpus, run, *args))
    # killed just after each launch's first new checkpoint, twice, then run to its end: the soak's loop
    kills, final = soak_killed(cmd, [RNG.uniform(0.0, 0.3) for _ in range(2)], ready=lambda: new_checkpoint(run),
                               timeout_s=300)
    assert len(kills) == 2 and final.returncode == 0, final.output
    assert weights_equal(_final(tmp_path / "ref", 6), _final(run, 6))


def test_prune_baseline_killed_resumes_bitwise(tiny_corpus, tiny_run, tmp_path):
    from omnisparse.train.prune import prune

    args = ["--train.max_steps=8", "--train.ckpt_every=2", f"--sparsity.init_from={tiny_run}",
            "--sparsity.prune_steps=4", "--sparsity.prune_every=2"]
    prune(load_config("prune_tiny", _overrides(tiny_corpus, tmp_path / "ref", *args)))
    run = tmp_path / "killed"
    res = run_killed(omnisparse_cmd("prune", "--config", "prune_tiny", *_overrides(tiny_corpus, run, *args)),
                     kill_when=checkpoint_exists(run, 4), delay_s=RNG.uniform(0.0, 0.2))
    assert res.killed, res.output
    prune(load_config("prune_tiny", _overrides(tiny_corpus, run, *args)))
    assert weights_equal(_final(tmp_path / "ref", 8), _final(run, 8))


def test_search_killed_resumes_to_the_same_pareto_table(tiny_corpus, tiny_supernet_run, tmp_path):
    from omnisparse.search.run import run_search

    def overrides(out):
        return [f"--data.corpus_dir={tiny_corpus}", f"--search.supernet={tiny_supernet_run}", f"--search.out_dir={out}",
                "--search.generations=4", "--search.dev_subset=4", "--train.threads=1"]

    ref = run_search(load_config("search_tiny", overrides(tmp_path / "ref")), progress=False, tensorboard=False)
    out = tmp_path / "killed"
    state = out / "state.json"
    res = run_killed(omnisparse_cmd("search", "--config", "search_tiny", *overrides(out)), kill_when=state.exists,
                     delay_s=RNG.uniform(0.0, 0.3))
    assert res.killed, res.output
    got = run_search(load_config("search_tiny", overrides(out)), progress=False, tensorboard=False)
    assert got["table"] == ref["table"] and got["pareto"] == ref["pareto"]
    assert json.loads((out / "history.json").read_text()) == json.loads((tmp_path / "ref" / "history.json").read_text())


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
def test_corpus_build_killed_resumes_byte_identical(tmp_path):
    from omnisparse.data.corpus import build_corpus

    code = ("import sys; from omnisparse.data.corpus import CorpusPreset, build_corpus; "
            "build_corpus(sys.argv[1], CorpusPreset('micro', 10, 3, 3, 3), seed=3, num_jobs=2, progress=False)")
    ref = tmp_path / "ref"
    run = tmp_path / "killed"
    micro = __import__("omnisparse.data.corpus", fromlist=["CorpusPreset"]).CorpusPreset("micro", 10, 3, 3, 3)
    build_corpus(ref, micro, seed=3, num_jobs=1, progress=False)
    import sys

    res = run_killed([sys.executable, "-c", code, str(run)],
                     kill_when=lambda: len(list((run / "audio").rglob("*.flac"))) >= 6, delay_s=RNG.uniform(0, 0.2))
    assert res.killed, res.output
    build_corpus(run, micro, seed=3, num_jobs=1, progress=False)
    assert tree_digest(run / "audio") == tree_digest(ref / "audio")
    for split in ("train", "dev", "test-clean", "test-other"):
        a = (ref / "manifests" / f"cuts_{split}.jsonl.gz")
        b = (run / "manifests" / f"cuts_{split}.jsonl.gz")
        assert _manifest(a, ref) == _manifest(b, run)


def _manifest(path: Path, root: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt") as f:
        return f.read().replace(str(root.resolve()), "ROOT").splitlines()


def _torchrun(port: int, *args: str, restarts: int = 0) -> list[str]:
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
            f"--max-restarts={restarts}", "-m", "omnisparse.cli", *args]


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1])
def test_ddp_rank_killed_stops_the_job_and_it_resumes(tiny_corpus, tmp_path, rank):
    """One worker of a 2-process DDP run is SIGKILLed after a checkpoint: torchrun stops the other
    (no hang), the run directory holds no half checkpoint and no live lock, and a second launch
    resumes to the last step with both ranks' replicas identical. Rank 0 and the bitwise comparison
    with an uninterrupted DDP run: ``bench/faults.py`` (``sigkill_ddp``)."""
    from omnisparse.io.lock import read_lock

    run = tmp_path / "ddp"
    args = ["train", "--config", "tiny", *_overrides(tiny_corpus, run, "--train.max_steps=6", "--train.ckpt_every=2")]
    res = run_killed(_torchrun(29531, *args), kill_when=checkpoint_exists(run, 2), delay_s=RNG.uniform(0.0, 0.2),
                     timeout_s=240, rank=rank)
    assert res.killed and res.returncode != 0, res.output
    assert not list(run.glob(".ckpt-*.tmp"))
    assert read_lock(run) is None  # rank 0 was stopped by torchrun (SIGTERM) and released its lock
    done = run_killed(_torchrun(29532, *args), kill_when=lambda: False, timeout_s=240)  # runs to its end
    assert done.returncode == 0, done.output
    cost = json.loads((run / "cost.json").read_text())
    assert cost["optimizer_steps"] == 6 and cost["world_size"] == 2 and cost["ddp_replicas_identical"] is True
    assert ck.latest_checkpoint(run)[0].name == "ckpt-00000006"


@pytest.mark.slow
def test_elastic_torchrun_restarts_a_killed_rank_and_the_run_resumes(tiny_corpus, tmp_path):
    """Under ``torchrun --max-restarts=1`` a SIGKILLed worker makes torchrun restart both: they resume
    from the last checkpoint (rank 0 takes over its own stale lock) and the one launch ends the run.
    Bitwise against an uninterrupted run, for dense, supernet and dual mode: ``bench/faults.py``
    (``sigkill_ddp_elastic``)."""
    run = tmp_path / "elastic"
    args = ["train", "--config", "tiny", *_overrides(tiny_corpus, run, "--train.max_steps=4", "--train.ckpt_every=2")]
    res = run_killed(_torchrun(29533, *args, restarts=1), kill_when=checkpoint_exists(run, 2), delay_s=0.0,
                     timeout_s=240, rank=0)
    assert res.killed and res.returncode == 0, res.output
    cost = json.loads((run / "cost.json").read_text())
    assert cost["optimizer_steps"] == 4 and cost["ddp_replicas_identical"] is True
    assert ck.latest_checkpoint(run)[0].name == "ckpt-00000004"
