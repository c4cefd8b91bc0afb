"""Reading a JSON file that must hold an object (a checkpoint's ``state.json``, a sub-network config):
every way it can fail is one line naming the file and what it should have been; and the digest of a
JSON object's own content (:func:`content_digest`), which the state files carry to catch a change that
leaves them valid JSON (a flipped digit)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def read_json_object(path: str | Path, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The JSON object (a dict) in file ``path``. ``what`` names what the file should hold (e.g.
    ``"checkpoint state"``); ``error`` (ValueError by default, its message one line
    ``"<path>: <what> ..."``) when the file is missing, unreadable, not valid JSON, or valid JSON
    that is not an object."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: no {what} (file not found)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: {what} is unreadable ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} is not a JSON object (got {type(data).__name__})")
    return data


def content_digest(data: Any) -> str:
    """Hex sha256 of JSON-able ``data`` in a canonical form (``json.dumps`` with sorted keys): equal for
    an object and for the same object read back from any JSON text of it (as long as its keys are
    strings: pass what ``json.loads`` returns)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def damaged_digest_key(data: dict[str, Any], key: str) -> str | None:
    """A key of ``data`` one character away from ``key`` (the digest's, which ``data`` lacks): the
    digest key itself damaged (``"sha256"`` -> ``"sha356"``), which must not pass for a file written
    before digests existed (accepted unchecked). None when there is none."""
    return next((k for k in data if isinstance(k, str) and len(k) == len(key)
                 and sum(a != b for a, b in zip(k, key)) == 1), None)
