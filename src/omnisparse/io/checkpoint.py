"""Checkpoints: safetensors for tensors, JSON for everything else; atomic, checksummed, never pickled.

A checkpoint is a directory ``RUN/ckpt-<step:08d>/``::

    model.safetensors       model weights (no masks, no optimizer)
    optimizer.safetensors   optimizer tensors, keyed ``<param index>.<name>`` (absent for exports)
    state.json              step, epoch, position in the epoch, RNG states, optimizer scalars, config,
                            sha256 of every other file, format version, and ``state_sha256``: the
                            sha256 of its own content (everything else, canonical JSON)
    tokenizer.model         the sentencepiece model the run trains with
    global_stats.json       feature normalisation (mean / std per mel bin)

It is written into ``.ckpt-<step>.tmp`` (every file fsync'ed) and renamed into place, so a kill or a
full disk leaves either the whole new checkpoint or none of it: the previous one stays intact (a
failed write raises :class:`CheckpointWriteError`, naming the cause and the intact checkpoint).
``latest_checkpoint`` verifies checksums - of the files and of ``state.json`` itself, so that a change
that leaves it valid JSON (a flipped digit of ``step``) is caught too - and falls back to an older
checkpoint with a warning. A checkpoint written before ``state_sha256`` existed is accepted unchecked,
with a warning (:func:`verify_checkpoint`). A
checkpoint of another format version is not corrupt: it is refused (:class:`CheckpointVersionError`,
naming both versions and the omnisparse release that wrote it), never skipped or set aside.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omnisparse import __version__ as OMNISPARSE_VERSION
from omnisparse.errors import CheckpointWriteError
from omnisparse.io.atomic import fsync_file as _fsync_file  # module-level names: the fault tests patch them
from omnisparse.io.atomic import fsync_path as _fsync_dir
from omnisparse.io.atomic import atomic_write_text, sha256, verify_digests
from omnisparse.io.json_file import content_digest, damaged_digest_key, read_json_object

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CKPT_PREFIX = "ckpt-"
STATE_DIGEST = "state_sha256"  # the key of state.json holding the digest of the rest of it
_warned_unchecked: set[str] = set()  # checkpoints without STATE_DIGEST already warned about


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match what it is loaded into."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint written in another format version (by another omnisparse release): intact, but
    not readable by this one. Refused rather than treated as corrupt."""


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else (x.item() if isinstance(x, np.generic) else x)
                  for x in np.random.get_state()],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into safetensors-able tensors and JSON-able scalars."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, st in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, extra_files: dict[str, bytes] | None = None,
                    keep_last: int = 0) -> Path:
    """Write ``RUN/ckpt-<step>`` atomically; prune to the newest ``keep_last`` (0 = keep all)."""
    run_dir = Path(run_dir)
    state = dict(state)
    tensors: dict[str, dict[str, torch.Tensor]] = {"model.safetensors": model.state_dict()}
    if optimizer is not None:
        tensors["optimizer.safetensors"], state["optimizer"] = optimizer_tensors(optimizer)
    state["step"] = step
    final = write_checkpoint_dir(run_dir / f"{CKPT_PREFIX}{step:08d}", tensors, state, extra_files)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def write_checkpoint_dir(final: str | Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any],
                         extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the checkpoint directory ``final`` atomically: each ``tensors`` entry as a safetensors file
    of that name, the ``extra_files``, and ``state`` sealed with the format version and every file's
    sha256. Built in ``.<name>.tmp`` beside it and renamed into place (an OSError is a one-line
    :class:`CheckpointWriteError` naming the checkpoint that stays intact)."""
    final = Path(final)
    parent = final.parent
    tmp = parent / f".{final.name}.tmp"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        files = []
        for name, group in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp / name))
            files.append(name)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
            files.append(name)
        state = dict(state)
        state["format_version"] = FORMAT_VERSION
        state["omnisparse_version"] = OMNISPARSE_VERSION
        state["sha256"] = {f: sha256(tmp / f) for f in files}
        write_state(tmp, state, fsync=False)  # fsync'ed below with the other files
        for f in [*files, "state.json"]:
            _fsync_file(tmp / f)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
            prev = list_checkpoints(parent)
            intact = f"the previous checkpoint {prev[-1]} is intact" if prev else "no earlier checkpoint exists"
            raise CheckpointWriteError(e.errno, f"cannot write checkpoint {final.name} in {parent}: "
                                                f"{e.strerror or e}; {intact}") from e
        raise
    return final


def write_state(ckpt: str | Path, state: dict[str, Any], *, fsync: bool = True) -> None:
    """Write ``ckpt/state.json`` atomically: ``state`` as it reads back from JSON, with its
    :data:`STATE_DIGEST` computed afresh. What also re-seals a checkpoint whose state was edited."""
    state = json.loads(json.dumps(state))  # as it reads back: tuples as lists, keys as strings
    state.pop(STATE_DIGEST, None)
    text = json.dumps({**state, STATE_DIGEST: content_digest(state)}, indent=1)
    atomic_write_text(Path(ckpt) / "state.json", text, fsync=fsync)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.glob(f"{CKPT_PREFIX}*") if p.is_dir() and p.name[len(CKPT_PREFIX):].isdigit())


def verify_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    """Return its state.json (without its :data:`STATE_DIGEST`) after checking it and every file against
    their recorded sha256. CheckpointError (one line) when state.json is missing, not valid JSON or not
    an object, of another format version (:class:`CheckpointVersionError`), or when it or a file fails
    its checksum. A state.json without a digest (written before omnisparse recorded one) is accepted
    unchecked, with a warning (once per checkpoint and process): the runs on disk stay resumable. The
    checksum is verified before the version, so that damage to ``format_version`` is damage."""
    ckpt = Path(ckpt)
    state = read_json_object(ckpt / "state.json", "omnisparse checkpoint state", CheckpointError)
    digest = state.pop(STATE_DIGEST, None)
    if digest is not None and digest != content_digest(state):  # before the version: a flipped digit of
        # format_version is damage (the previous checkpoint is used), not another release's checkpoint
        raise CheckpointError(f"{ckpt}: state.json fails its checksum (changed after it was written)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            by = state.get("omnisparse_version") or "an unknown release"
            raise CheckpointVersionError(
                f"{ckpt}: checkpoint format version {version} (written by omnisparse {by}); this omnisparse "
                f"({OMNISPARSE_VERSION}) reads format version {FORMAT_VERSION} only")
        raise CheckpointError(f"{ckpt}: state.json has no valid format_version ({version!r}): not an omnisparse "
                              "checkpoint, or corrupt")
    if digest is None and damaged_digest_key(state, STATE_DIGEST) is not None:
        raise CheckpointError(f"{ckpt}: state.json fails its checksum (its key {STATE_DIGEST!r} is damaged: "
                              f"{damaged_digest_key(state, STATE_DIGEST)!r})")
    if digest is None:
        if str(ckpt) not in _warned_unchecked:
            _warned_unchecked.add(str(ckpt))
            by = state.get("omnisparse_version")
            log.warning("%s: state.json carries no checksum of its own (written by %s); accepted unchecked", ckpt,
                        f"omnisparse {by}" if by else "an older omnisparse")
    verify_digests(ckpt, state.get("sha256", {}), CheckpointError)
    return state


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning. One of
    another format version raises :class:`CheckpointVersionError` (the run is not ours to resume)."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return ckpt, verify_checkpoint(ckpt)
        except CheckpointVersionError:
            raise
        except CheckpointError as e:
            log.warning("ignoring checkpoint: %s; trying an older one", e)
    return None


def resolve_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint directory, or a run directory (its newest valid checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model: {path}")
    if (path / "state.json").exists():
        return path, verify_checkpoint(path)
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: no valid checkpoint found")
    return found


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors; anything else (a pickle, garbage, a truncated file whose
    checksum was updated) is a one-line :class:`CheckpointError`, never unpickled."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError / ValueError)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None


def load_weights(model: torch.nn.Module, ckpt: str | Path) -> None:
    """Load model.safetensors strictly; a shape or key mismatch names the offending tensors."""
    weights = read_tensors(Path(ckpt) / "model.safetensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:4]))
        raise CheckpointError(f"{ckpt}: weights do not match this model config: " + "; ".join(parts))
    model.load_state_dict(weights)


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt: str | Path, state: dict[str, Any]) -> None:
    tensors = read_tensors(Path(ckpt) / "optimizer.safetensors")
    load_optimizer_tensors(optimizer, tensors, state["optimizer"])
