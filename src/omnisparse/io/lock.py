"""One writer per directory: the lock a command holds on the directory it writes (a run, a search's
output, a corpus) for as long as it runs.

:func:`exclusive_dir` creates ``DIR/.omnisparse.lock`` with ``O_CREAT | O_EXCL`` (JSON: ``pid``,
``host``, ``command``, ``started``) and removes it when the ``with`` block ends: normally, by an
exception, by Ctrl-C (KeyboardInterrupt) or by SIGTERM (turned into ``SystemExit(143)`` while the lock
is held, so that the same clean-up runs). A second command on the same directory is refused with
:class:`~omnisparse.errors.DirectoryInUseError`, one line naming the holder. A lock left by a process
that no longer runs on this host (SIGKILL, a power cut) is taken over with a warning naming it; a lock
of another host is never taken over (the message says which file to delete once that process is gone).
Where ``/proc`` exists the lock also records the holder's boot id and start time (``process``), so
that a pid reused since (after a reboot, or a restarted container whose command gets the same pid)
is not taken for the holder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from omnisparse.errors import DirectoryInUseError

log = logging.getLogger(__name__)

LOCK_FILE = ".omnisparse.lock"
_ATTEMPTS = 5  # create / take over a stale lock, racing other processes doing the same


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_identity(pid: int) -> str | None:
    """``"<boot id>:<start time>"`` of process ``pid`` from ``/proc`` (None where that is not
    readable): what tells the process a lock names from a later one given the same pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{boot}:{stat[stat.rindex(')') + 2:].split()[19]}"  # field 22, after "pid (comm)"
    except (OSError, ValueError, IndexError):
        return None


def read_lock(directory: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``directory``'s lock (``pid``, ``host``, ``command``, ``started``), or
    None when the directory is not locked."""
    found = _read(Path(directory) / LOCK_FILE)
    return found[1] if found else None


def _read(lock: Path) -> tuple[str, dict[str, Any] | None] | None:
    """``(text, holder)`` of a lock file, holder None when it is not a valid lock (empty: being
    written); None when there is no lock file."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return "", None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    ok = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and holder["pid"] > 0
    return text, holder if ok else None


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder['pid']} on host {holder.get('host', '?')} ({holder.get('command', '?')}, "
            f"since {holder.get('started', '?')})")


def _in_use(directory: Path, lock: Path, holder: dict[str, Any] | None) -> DirectoryInUseError:
    if holder is None:
        return DirectoryInUseError(f"{directory} is in use: its lock {lock} is unreadable (being written, or "
                                   "damaged); if no omnisparse command is writing there, delete that file")
    msg = f"{directory} is in use by {_describe(holder)}; wait for it or stop it"
    if holder.get("host") != socket.gethostname():
        msg += f" (a lock of another host is never taken over: once that process is gone, delete {lock})"
    return DirectoryInUseError(msg)


def _live(holder: dict[str, Any] | None) -> bool:
    """Whether a lock's holder may still be at work: always for an unreadable lock or one of another
    host, else while its pid runs (and, where both are known, is the same process)."""
    if holder is None or holder.get("host") != socket.gethostname():
        return True
    if not pid_alive(holder["pid"]):
        return False
    recorded, now = holder.get("process"), process_identity(holder["pid"])
    return recorded is None or now is None or recorded == now


def ensure_not_held(directory: str | Path) -> None:
    """:class:`DirectoryInUseError` when a live process holds ``directory`` (what a command that would
    replace the directory as a whole checks first); a stale lock is no obstacle."""
    directory = Path(directory)
    lock = directory / LOCK_FILE
    found = _read(lock)
    if found is not None and _live(found[1]):
        raise _in_use(directory, lock, found[1])


def _take_over(lock: Path, text: str) -> None:
    """Remove the stale lock whose content is ``text``, unless another process replaced it meanwhile."""
    aside = lock.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:  # another process took it over first
        return
    try:
        if aside.read_text() != text:  # a live lock, created since we read the stale one: put it back
            try:
                os.link(aside, lock)
            except OSError:
                pass
    finally:
        aside.unlink(missing_ok=True)


def _acquire(directory: Path, lock: Path, command: str) -> str:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    identity = process_identity(os.getpid())
    mine = json.dumps({**me, "process": identity} if identity else me) + "\n"
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = _read(lock)
            if found is None:  # released meanwhile
                continue
            text, holder = found
            if _live(holder):
                raise _in_use(directory, lock, holder) from None
            log.warning("%s: taking over the lock of %s, which no longer runs", directory, _describe(holder))
            _take_over(lock, text)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(mine)
        except BaseException:  # a full disk, Ctrl-C: no empty lock left behind
            lock.unlink(missing_ok=True)
            raise
        return mine
    raise DirectoryInUseError(f"{directory}: could not take its lock {lock} (other processes keep taking it)")


def _release(directory: Path, lock: Path, mine: str) -> None:
    found = _read(lock)
    if found is None or found[0] != mine:
        log.warning("%s: its lock %s is no longer this process's; left as it is", directory, lock)
        return
    lock.unlink(missing_ok=True)


def _exit_on_sigterm(owner: int) -> Callable[[], None]:
    """While the lock is held, SIGTERM raises SystemExit(143) in the process ``owner`` (the ``finally``
    blocks run: temporaries removed, the lock released); forked children (data loader workers,
    synthesis processes) keep dying of it. Nothing changes outside the main thread or when SIGTERM
    already has a handler. Returns the function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None

    def on_sigterm(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        log.warning("terminated (SIGTERM): stopping")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return restore


@contextmanager
def exclusive_dir(directory: str | Path, command: str) -> Iterator[Path]:
    """Hold ``directory`` (created if missing) for the ``with`` block, as ``command`` (e.g.
    ``"omnisparse train"``): :class:`DirectoryInUseError` when another live process holds it. See the
    module docstring. Directories it created and that are still empty at the end (the command failed
    before writing anything, e.g. on a model it could not load) are removed again."""
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    owner = os.getpid()
    mine = _acquire(directory, lock, command)
    restore = _exit_on_sigterm(owner)
    try:
        yield directory
    finally:
        restore()
        if os.getpid() == owner:
            _release(directory, lock, mine)
            for made in created:
                try:
                    made.rmdir()  # only when empty
                except OSError:
                    break
