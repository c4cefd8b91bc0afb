"""Checkpoint averaging: the element-wise mean of the weights of a run's last N checkpoints.

The mean of the final checkpoints of a run (icefall's ``--avg N``) is a cheap smoother of the last
steps' noise. The averaged checkpoint is a directory like any other (``model.safetensors``,
``state.json``, tokenizer and feature statistics) that ``eval``, ``transcribe``, ``export``,
``search`` and ``export-onnx`` read; it has no optimizer state, so training does not resume from it.
Its ``state.json`` is the newest source's, with ``averaged_from`` (the source names and steps).

Checkpoints of different runs cannot be averaged: the model config, the tokenizer and the feature
statistics must be identical, and so must every tensor's name, shape and dtype. Floating-point
tensors are averaged (in float64, stored in their own dtype); integer and bool tensors (counters,
buffers) must be equal in all sources, and are copied.
"""

from __future__ import annotations

from pathlib import Path

import torch

from omnisparse.io.checkpoint import (
    CKPT_PREFIX,
    CheckpointError,
    list_checkpoints,
    read_tensors,
    resolve_checkpoint,
    verify_checkpoint,
    write_checkpoint_dir,
)

AVG_PREFIX = "avg-"
_TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")  # what is averaged, and what is dropped


def _shared_files(state: dict) -> dict[str, str]:
    """The checkpoint's other files (tokenizer, statistics, ...) and their sha256: byte-identical in
    every source of an average."""
    return {k: v for k, v in state.get("sha256", {}).items() if k not in _TENSOR_FILES}


def last_checkpoints(run_dir: str | Path, n: int) -> list[tuple[Path, dict]]:
    """The newest ``n`` checkpoints of a run directory that verify, oldest first, as ``(directory,
    state.json)`` pairs (CheckpointError when fewer than ``n`` do: averaging fewer than asked is not
    what the caller measured)."""
    if n < 1:
        raise CheckpointError(f"cannot average {n} checkpoints: give --last >= 1")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such run directory: {run_dir}")
    valid = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            valid.append((ckpt, verify_checkpoint(ckpt)))
        except CheckpointError:
            continue
        if len(valid) == n:
            return valid[::-1]
    raise CheckpointError(f"{run_dir}: {len(valid)} valid checkpoint(s), {n} asked for averaging "
                          "(raise train.keep_last to keep more)")


def named_checkpoints(paths: list[str | Path]) -> list[tuple[Path, dict]]:
    """``(directory, state.json)`` of each checkpoint (or newest valid one of each run directory) named,
    verified: a source that fails its checksums is a one-line CheckpointError."""
    return [resolve_checkpoint(p) for p in paths]


def default_average_dir(ckpts: list[Path]) -> Path:
    """``RUN/avg-<first step>-<last step>``: beside the sources, not named ``ckpt-*`` (so never resumed
    from or pruned by ``keep_last``)."""
    first, last = (p.name[len(CKPT_PREFIX):] for p in (ckpts[0], ckpts[-1]))
    return ckpts[-1].parent / f"{AVG_PREFIX}{first}-{last}"


def average_checkpoints(ckpts: list[tuple[Path, dict]], out: str | Path) -> Path:
    """Write the mean of the weights of ``ckpts`` (verified ``(directory, state.json)`` pairs, from
    :func:`last_checkpoints` or :func:`named_checkpoints`: each checksum is computed once) to the
    checkpoint directory ``out`` (atomically) and return it. A source that does not match the first
    (config, tokenizer, statistics, tensor names, shapes, dtypes, unequal integer tensors) is a
    one-line CheckpointError."""
    if not ckpts:
        raise CheckpointError("no checkpoints to average")
    paths, states = [p for p, _ in ckpts], [st for _, st in ckpts]
    ref_path, ref_state = paths[0], states[0]
    for p, st in zip(paths[1:], states[1:]):
        if st.get("model_config") != ref_state.get("model_config"):
            raise CheckpointError(f"cannot average {p} with {ref_path}: their model configs differ (other runs)")
        ours, theirs = _shared_files(ref_state), _shared_files(st)
        for name in sorted(set(ours) | set(theirs)):
            if ours.get(name) != theirs.get(name):
                raise CheckpointError(f"cannot average {p} with {ref_path}: their {name} differ (other runs)")
    total: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    for i, p in enumerate(paths):
        weights = read_tensors(p / "model.safetensors")
        if i == 0:
            first = weights
            total = {k: v.double() for k, v in weights.items() if v.is_floating_point()}
            continue
        if set(weights) != set(first):
            diff = sorted(set(weights) ^ set(first))
            raise CheckpointError(f"cannot average {p} with {ref_path}: tensors differ ({', '.join(diff[:4])})")
        for k, v in weights.items():
            if v.shape != first[k].shape or v.dtype != first[k].dtype:
                raise CheckpointError(f"cannot average {p} with {ref_path}: {k} is {v.dtype} {tuple(v.shape)} "
                                      f"vs {first[k].dtype} {tuple(first[k].shape)}")
            if k in total:
                total[k] += v.double()
            elif not torch.equal(v, first[k]):
                raise CheckpointError(f"cannot average {p} with {ref_path}: their integer tensor {k} differs")
    mean = {k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in first.items()}
    newest_path, newest = paths[-1], dict(states[-1])
    for key in ("sha256", "optimizer"):
        newest.pop(key, None)
    newest["averaged_from"] = [{"checkpoint": p.name, "step": st.get("step")} for p, st in zip(paths, states)]
    extra = {name: (newest_path / name).read_bytes() for name in _shared_files(states[-1])}
    return write_checkpoint_dir(Path(out), {"model.safetensors": mean}, newest, extra)
