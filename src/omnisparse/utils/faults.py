"""Fault injection for the reliability tests (``tests/faults``) and ``bench/faults.py``.

* :func:`run_killed` starts an ``omnisparse`` command in its own process group and SIGKILLs the
  whole group when a condition becomes true (a checkpoint appears, a delay passes), as ``kill -9``
  or a lost machine would, or only one worker of a ``torchrun`` job (:func:`ddp_workers`);
  :func:`soak_killed` does it again and again to one run (each launch after :func:`new_checkpoint`);
* :func:`disk_full` makes a function raise ``OSError(ENOSPC)`` after it has been called ``n`` times;
* comparisons: :func:`weights_equal` (bitwise, every tensor of two ``.safetensors`` files) and
  :func:`tree_digest` (sha256 of every file under a directory);
* bad input: :func:`damage_file` (truncate, flip bits, zero the header, replace by garbage),
  :func:`plant_utterance` (one LibriSpeech utterance with one of :data:`UTTERANCE_FAULTS`),
  :func:`flip_digit` (a JSON file still valid, one number or string changed) and :func:`sparse_wav`
  (a WAV header claiming hours of audio, the file sparse: no disk, no time); hostile manifests,
  configs and exports are in :mod:`omnisparse.utils.hostile_inputs`;
* another writer: :func:`held_dir` (a child process holding a directory's lock) and :func:`dead_pid`.

Nothing here is used by training or inference.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from omnisparse.utils.proc_memory import process_tree

__all__ = ["KillResult", "omnisparse_cmd", "run_killed", "ddp_workers", "checkpoint_exists", "disk_full", "weights_equal",
           "tree_digest", "child_env", "damage_file", "plant_utterance", "UTTERANCE_FAULTS", "DAMAGES", "flip_digit",
           "sparse_wav", "held_dir", "soak_killed", "new_checkpoint", "dead_pid"]


@dataclass
class KillResult:
    killed: bool  # True when the SIGKILL was sent before the command ended by itself
    returncode: int
    seconds: float
    output: str  # the command's stdout + stderr (last 4000 characters)


def omnisparse_cmd(*args: str) -> list[str]:
    """``python -m omnisparse.cli ARGS`` with this interpreter (the venv's, in tests)."""
    return [sys.executable, "-m", "omnisparse.cli", *args]


def child_env(threads: int = 1) -> dict[str, str]:
    """The environment for a child run: one intra-op thread, no progress-bar noise."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (started with ``start_new_session``), its process group and every descendant, and
    reap it: ``torchrun`` starts each worker in a session of its own, which a SIGKILL of the launcher's
    group alone would leave running (holding its port and its run directory)."""
    tree = process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def run_killed(cmd: Sequence[str], kill_when: Optional[Callable[[], bool]] = None, delay_s: float = 0.0,
               timeout_s: float = 600.0, poll_s: float = 0.005, env: Optional[dict] = None,
               cwd: Optional[str | os.PathLike] = None, rank: Optional[int] = None) -> KillResult:
    """Run ``cmd``; SIGKILL its process group ``delay_s`` seconds after ``kill_when()`` first returns
    True (``kill_when=None``: ``delay_s`` after the start). The command may finish first
    (``killed=False``). A command still running after ``timeout_s`` is killed and raises TimeoutError.

    ``rank``: ``cmd`` is a ``torchrun`` launch; SIGKILL only that worker (``LOCAL_RANK``), as a lost
    process of a DDP job, and wait for the launcher to end by itself: ``timeout_s`` then catches a
    job that hangs instead of stopping."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"omnisparse-fault-{os.getpid()}-{time.monotonic_ns()}.log"
    t0 = time.monotonic()
    with open(log, "w+b") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env if env is not None else child_env(), cwd=cwd)
        fire_at = t0 + delay_s if kill_when is None else None
        killed = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if fire_at is None and kill_when is not None and kill_when():
                    fire_at = now + delay_s
                if not killed and fire_at is not None and now >= fire_at:
                    if rank is None:
                        kill_tree(proc)
                        killed = True
                        break
                    worker = ddp_workers(proc.pid).get(rank)
                    if worker is not None:  # (not started yet: try again at the next poll)
                        os.kill(worker, signal.SIGKILL)
                        killed = True
                if now - t0 > timeout_s:
                    kill_tree(proc)
                    raise TimeoutError(f"{' '.join(cmd)} still running after {timeout_s} s")
                time.sleep(poll_s)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                kill_tree(proc)
        out.seek(0)
        text = out.read().decode(errors="replace")
    log.unlink(missing_ok=True)
    if rank is None:  # a SIGKILL that raced with a normal exit counts as not killed
        killed = killed and rc == -signal.SIGKILL
    return KillResult(killed, rc, time.monotonic() - t0, text[-4000:])


def soak_killed(cmd: Sequence[str], delays_s: Sequence[float],
                ready: Optional[Callable[[], Callable[[], bool]]] = None, timeout_s: float = 3600.0,
                env: Optional[dict] = None, cwd: Optional[str | os.PathLike] = None) -> tuple[list[KillResult], KillResult]:
    """Run ``cmd`` again and again, SIGKILLed ``delays_s[i]`` seconds into launch ``i`` (after the
    condition ``ready()`` builds for that launch first holds, e.g. :func:`new_checkpoint`, so that
    every launch makes progress), then once more to its end. Returns the killed launches (a launch
    that ended before its kill is returned as the final one, and the remaining delays are unused)
    and the final launch. ``timeout_s`` bounds each launch."""
    kills = []
    for delay in delays_s:
        res = run_killed(cmd, kill_when=ready() if ready else None, delay_s=delay, timeout_s=timeout_s, env=env, cwd=cwd)
        if not res.killed:
            return kills, res
        kills.append(res)
    return kills, run_killed(cmd, kill_when=lambda: False, timeout_s=timeout_s, env=env, cwd=cwd)


def run_ranks(args_per_rank: Sequence[Sequence[str]], port: int, env_per_rank: Optional[Sequence[dict]] = None,
              timeout_s: float = 300.0) -> list[tuple[int, list[str]]]:
    """Start ``omnisparse ARGS`` once per rank as one gloo process group on this host, the ranks set by
    hand as a multi-node launcher would (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` / ``PORT``), each
    with its own arguments and environment (extra variables), so that they can disagree. Returns each
    rank's ``(exit status, "omnisparse: error" lines of its stderr)``; TimeoutError past ``timeout_s``."""
    world = len(args_per_rank)
    procs = []
    for rank, args in enumerate(args_per_rank):
        env = {**child_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               **(env_per_rank[rank] if env_per_rank else {})}
        procs.append(subprocess.Popen(omnisparse_cmd(*args), env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout_s)
            out.append((p.returncode, [ln for ln in err.splitlines() if ln.startswith("omnisparse: error")]))
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"the ranks did not end within {timeout_s:.0f} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def new_checkpoint(run_dir: str | os.PathLike) -> Callable[[], bool]:
    """A ``kill_when`` condition: a checkpoint that was not in ``RUN`` when this was called exists."""
    run = Path(run_dir)
    before = {p.name for p in run.glob("ckpt-*")} if run.is_dir() else set()
    return lambda: any(p.name not in before for p in run.glob("ckpt-*") if p.is_dir())


def ddp_workers(launcher_pid: int) -> dict[int, int]:
    """``{LOCAL_RANK: pid}`` of the worker processes under a ``torchrun`` launcher (Linux ``/proc``)."""
    found = {}
    for pid in process_tree(launcher_pid)[1:]:  # breadth first: the workers before their own children (data loaders)
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        for kv in env:
            if kv.startswith(b"LOCAL_RANK="):
                found.setdefault(int(kv[len(b"LOCAL_RANK="):]), pid)
    return found


def checkpoint_exists(run_dir: str | os.PathLike, step: int) -> Callable[[], bool]:
    """A ``kill_when`` condition: ``RUN/ckpt-<step>`` has been renamed into place."""
    path = Path(run_dir) / f"ckpt-{step:08d}"
    return path.is_dir


class disk_full:
    """A stand-in for ``fn`` that behaves like it for ``after`` calls, then raises ENOSPC (every call).

    >>> monkeypatch.setattr(checkpoint, "save_file", disk_full(checkpoint.save_file, after=3))
    """

    def __init__(self, fn: Callable, after: int = 0):
        self.fn = fn
        self.after = after
        self.calls = 0
        self.raised = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            self.raised += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fn(*args, **kwargs)


def weights_equal(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two safetensors files hold the same tensor names with bitwise identical values."""
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]) for k in ta)


def tree_digest(root: str | os.PathLike, pattern: str = "*", exclude: Sequence[str] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` matching ``pattern`` (names starting
    with one of ``exclude`` left out)."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob(pattern)):
        rel = str(p.relative_to(root))
        if p.is_file() and not any(rel.startswith(e) for e in exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


DAMAGES = ("truncate", "flip", "zero_header", "garbage")


def damage_file(path: str | os.PathLike, kind: str, seed: int = 0) -> None:
    """Damage ``path`` in place: ``truncate`` (cut at a random byte), ``flip`` (8 random bit flips),
    ``zero_header`` (its first 1..64 bytes zeroed), ``garbage`` (random bytes, same length)."""
    import numpy as np

    path = Path(path)
    blob = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    if kind == "truncate":
        blob = blob[: int(rng.integers(0, max(1, len(blob))))]
    elif kind == "flip":
        for i in rng.integers(0, max(1, len(blob)), 8):
            if blob:
                blob[int(i)] ^= 1 << int(rng.integers(0, 8))
    elif kind == "zero_header":
        n = int(rng.integers(1, 65))
        blob[:n] = b"\x00" * n
    elif kind == "garbage":
        blob = bytearray(rng.integers(0, 256, len(blob), dtype=np.uint8).tobytes())
    else:
        raise ValueError(f"unknown damage {kind!r}; one of {DAMAGES}")
    path.write_bytes(bytes(blob))


# fault -> what omnisparse must do with it: "skip" (left out, counted) or "fix" (kept, counted)
UTTERANCE_FAULTS = {
    "missing": "skip",  # listed in the transcript, no audio file
    "garbage": "skip",  # not audio at all
    "zero_length": "skip",  # a valid FLAC header, 0 samples
    "truncated": "skip",  # a valid FLAC header, the samples cut off halfway (decoding fails)
    "rate_8k": "fix",  # an 8 kHz file (LibriSpeech is 16 kHz): resampled
    "stereo": "fix",  # two channels: the first one used
    "empty_text": "skip",  # no transcript
    "non_ascii": "fix",  # accents and another script: normalised
    "only_non_ascii": "skip",  # nothing left after normalisation
    "too_long": "skip",  # longer than the allowed duration (``long_s`` seconds)
}


def plant_utterance(flac: str | os.PathLike, src: str | os.PathLike, text: str, fault: Optional[str] = None,
                    long_s: float = 20.0) -> str:
    """Write utterance ``flac`` (LibriSpeech naming: ``<spk>-<chapter>-<n>.flac``) from the audio of
    ``src`` with ``fault`` (a key of :data:`UTTERANCE_FAULTS`, or None for a good one); returns its
    line for the chapter's ``.trans.txt``."""
    import shutil

    import numpy as np
    import soundfile as sf

    flac = Path(flac)
    uid = flac.stem
    x, sr = sf.read(str(src), dtype="float32")
    if fault == "garbage":
        flac.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    elif fault == "zero_length":
        sf.write(flac, np.zeros(0, dtype=np.float32), sr)
    elif fault == "truncated":
        sf.write(flac, np.concatenate([x] * 4), sr)
        blob = flac.read_bytes()
        flac.write_bytes(blob[: len(blob) // 2])
    elif fault == "rate_8k":
        sf.write(flac, x[::2], 8000)
    elif fault == "stereo":
        sf.write(flac, np.stack([x, 0.5 * x], axis=1), sr)
    elif fault == "too_long":
        sf.write(flac, np.tile(x, int(long_s * sr / len(x)) + 1), sr)
    elif fault != "missing":
        if fault is not None and fault not in UTTERANCE_FAULTS:
            raise ValueError(f"unknown utterance fault {fault!r}; one of {list(UTTERANCE_FAULTS)}")
        shutil.copy(src, flac)
    if fault == "empty_text":
        return f"{uid} "
    if fault == "non_ascii":
        return f"{uid} {text.upper()} CAF\u00c9 NA\u00cfVE \u6771\u4eac"
    if fault == "only_non_ascii":
        return f"{uid} \u6771\u4eac \u3002"
    return f"{uid} {text.upper()}"


def flip_digit(text: str, seed: int = 0) -> str:
    """``text`` (a JSON document) with one digit, drawn by ``seed``, replaced by another, such that it is
    still valid JSON and holds another value: the damage only a checksum of the content notices."""
    rng = random.Random(seed)
    positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    original = json.loads(text)
    for _ in range(100):
        i = rng.choice(positions)
        out = text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1:]
        try:
            if json.loads(out) != original:
                return out
        except json.JSONDecodeError:  # a leading zero: "10" -> "00"
            continue
    raise ValueError("no digit of this text can change and keep it valid JSON")


def sparse_wav(path: str | os.PathLike, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    """A 16-bit PCM WAV whose header claims ``seconds`` of audio (at most the 4 GiB a WAV header can
    say), its samples a hole of the file system: silence that takes neither disk nor time to write."""
    n = min(int(seconds * rate) * channels * 2, 2**32 - 64)
    header = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE" + b"fmt "
              + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
              + b"data" + struct.pack("<I", n))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)


_HOLD = """
import sys, time
from omnisparse.io.lock import exclusive_dir
with exclusive_dir(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def held_dir(directory: str | os.PathLike, command: str = "omnisparse train") -> Iterator[subprocess.Popen]:
    """A child process holding ``directory``'s lock (:func:`omnisparse.io.lock.exclusive_dir`) as
    ``command`` for the ``with`` block (killed at its end)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory), command], stdout=subprocess.PIPE,
                            text=True, env=child_env())
    try:
        if proc.stdout.readline().strip() != "held":
            raise RuntimeError(f"the holder of {directory} did not start (exit status {proc.poll()})")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def dead_pid() -> int:
    """The pid of a process that has ended (started and reaped here): what a SIGKILLed holder leaves."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
