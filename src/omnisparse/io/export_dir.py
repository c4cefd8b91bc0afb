"""The on-disk format of an exported sub-network directory, for its writer
(:func:`omnisparse.export.subnet.export_subnet`) and its reader (:func:`omnisparse.export.loading.load_export`)::

    model.safetensors   the sparse artefact of :mod:`omnisparse.export.format` (safetensors-compatible)
    tokenizer.model     the sentencepiece model
    global_stats.json   feature normalisation (mean / std per mel bin)
    meta.json           what the model is and where it came from; ``kind`` (:data:`EXPORT_KIND`),
                        ``export_version`` (:data:`EXPORT_VERSION`), ``files`` (sha256 of the other
                        three files, verified on load) and what ``export_subnet`` documents

A directory is an export when it holds ``meta.json`` and no ``state.json`` (a checkpoint's). Building
the model from ``meta.json`` is the reader's business, not this module's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from omnisparse.io.atomic import atomic_write_text, sha256, verify_digests
from omnisparse.io.checkpoint import CheckpointError

EXPORT_KIND = "omnisparse-subnet-export"  # meta.json "kind" of an exported sub-network
EXPORT_VERSION = 1  # layout version of the export directory / meta.json ("export_version")
EXPORT_META = "meta.json"
EXPORT_FILES = ("model.safetensors", "tokenizer.model", "global_stats.json")
REQUIRED_META_KEYS = ("model_config", "format", "config")  # what a reader needs of meta.json


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory with a ``meta.json`` (an exported sub-network, possibly
    incomplete or corrupt: :func:`read_export_meta` says what is wrong)."""
    p = Path(path)
    return p.is_dir() and (p / EXPORT_META).is_file() and not (p / "state.json").exists()


def file_digests(directory: str | Path) -> dict[str, str]:
    """``{name: sha256}`` of the :data:`EXPORT_FILES` of ``directory`` (``meta.json["files"]``)."""
    directory = Path(directory)
    return {name: sha256(directory / name) for name in EXPORT_FILES}


def write_export_meta(directory: str | Path, meta: Mapping[str, Any]) -> None:
    """Write ``directory/meta.json`` (indented, sorted keys, strict JSON: a NaN is a ValueError)
    atomically: temporary file, fsync, rename."""
    atomic_write_text(Path(directory) / EXPORT_META, json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _plain_name(name: Any) -> bool:
    """A file name of the directory itself: no separator, not ``.`` / ``..``."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


def read_export_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of export directory ``path``, checked for the fields loading needs, and every
    file it lists verified against its sha256. CheckpointError (one line) when anything is off."""
    path = Path(path)
    try:
        meta = json.loads((path / EXPORT_META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: {EXPORT_META} is unreadable or corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != EXPORT_KIND:
        raise CheckpointError(f"{path}: {EXPORT_META} does not describe an omnisparse export "
                              f"(expected \"kind\": \"{EXPORT_KIND}\")")
    version = meta.get("export_version", EXPORT_VERSION)  # exports before the field existed: version 1
    if version != EXPORT_VERSION:
        by = meta.get("omnisparse_version") or "an unknown release"
        raise CheckpointError(f"{path}: export layout version {version!r} (written by omnisparse {by}); this "
                              f"omnisparse reads version {EXPORT_VERSION} only")
    for key in REQUIRED_META_KEYS:
        if key not in meta:
            raise CheckpointError(f"{path}: {EXPORT_META} lacks {key!r}")
    for name in EXPORT_FILES:
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing (incomplete export)")
    files = meta.get("files") or {}
    if not isinstance(files, dict):
        raise CheckpointError(f"{path}: {EXPORT_META}: 'files' must map file name -> sha256")
    unsafe = sorted(str(name) for name in files if not _plain_name(name))
    if unsafe:  # a name like ../../x would have it hash a file outside the export
        raise CheckpointError(f"{path}: {EXPORT_META}: 'files' lists {unsafe[0][:60]!r}, not a file name inside "
                              "the export directory")
    verify_digests(path, files, CheckpointError, missing="is missing (incomplete export)")
    return meta
