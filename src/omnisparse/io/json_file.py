"""Reading a JSON file that must hold an object (a checkpoint's ``state.json``, a sub-network config):
every way it can fail is one line naming the file and what it should have been."""

from __future__ import annotations

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
