"""Errors that stop a run on purpose, leaving its last checkpoint usable.

The command line prints them as one line and exits with status 1 (no traceback): they are expected
outcomes of a fault (a full disk, a diverging loss, memory that is too small), not bugs. Kept free of
heavy imports so that ``omnisparse.cli`` can import it at start-up.
"""

from __future__ import annotations


class FatalRunError(Exception):
    """A run stopped cleanly: the message says why and where the last good checkpoint is."""


class CheckpointWriteError(FatalRunError, OSError):
    """A checkpoint could not be written (disk full, read-only file system ...); the previous one is
    intact. An ``OSError`` too, with the ``errno`` of the underlying failure."""


class NonFiniteLossError(FatalRunError, RuntimeError):
    """Too many consecutive batches with a NaN / infinite loss or gradient."""


class OutOfMemoryStop(FatalRunError, RuntimeError):
    """Too many consecutive batches that ran out of memory even when split in half."""


class DirectoryInUseError(FatalRunError):
    """Another process holds the directory a command would write into (its ``.omnisparse.lock``,
    :mod:`omnisparse.io.lock`): refused before anything is written, the message naming that process."""


class RankMismatchError(FatalRunError):
    """A rank of a multi-process run sees another config, corpus or omnisparse code than rank 0:
    refused at start on every rank, before anything is trained or written."""
