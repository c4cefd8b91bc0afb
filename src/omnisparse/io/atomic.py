"""Atomic, checksummed writes: what makes a file either wholly old or wholly new after a kill or a
full disk, and the sha256 digests that tell a complete file from a damaged one.

:func:`atomic_writer` writes into a temporary sibling ``.<name>.tmp<pid>``, flushes, fsyncs (unless
``fsync=False``) and renames it over ``path``; on any failure (a full disk, a kill's exception) the
temporary is removed and the old file stays as it was. ``sync_dir=True`` also fsyncs the parent
directory after the rename (best effort), making the rename itself durable.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping


@contextmanager
def atomic_writer(path: str | Path, *, fsync: bool = True, sync_dir: bool = False) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the ``with`` block ends without an
    exception (parent directories are created). See the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a kill: the old file stays, no temporary is left behind
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write via a temp file + fsync + rename so readers never see a half-written file."""
    with atomic_writer(path, fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """:func:`atomic_write_bytes` of ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode(), fsync=fsync)


def fsync_file(path: str | Path) -> None:
    """fsync a written file; an error (a full disk) is raised."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_path(path: str | Path) -> None:
    """fsync a directory (after a rename in it) or any path, best effort: errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_digests(directory: str | Path, digests: Mapping[str, str], error: type[Exception] = ValueError,
                   missing: str = "is missing") -> None:
    """Check every file ``directory/name`` of ``digests`` (``{name: sha256}``) against its digest;
    ``error`` (one line, naming the directory and the file) for the first that is not a file
    (``"<dir>: <name> <missing>"``) or fails its checksum."""
    directory = Path(directory)
    for name, digest in digests.items():
        p = directory / str(name)
        if not p.is_file():
            raise error(f"{directory}: {name} {missing}")
        if sha256(p) != digest:
            raise error(f"{directory}: {name} fails its checksum (truncated or corrupted)")
