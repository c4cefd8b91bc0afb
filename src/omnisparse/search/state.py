"""The saved state of an evolutionary search (:class:`~omnisparse.search.evolution.EvolutionFinder`) in
its output directory: ``state.json`` after each generation, written atomically with the sha256 of its
content (``"sha256"``, :func:`omnisparse.io.json_file.content_digest` of the rest); the state it
replaces is kept as ``state.prev.json``. A truncated or corrupted ``state.json`` - also one still valid
JSON, a flipped digit - is moved aside (``state.json.corrupt``) with a warning and the search resumes
from the previous generation (:func:`load_saved_state`); a state written before the checksum existed
is accepted unchecked, with a warning. The RNG state goes into the JSON as lists
(:func:`_rng_to_json` / :func:`_rng_from_json`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.json_file import content_digest, damaged_digest_key

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
PREV_STATE_FILE = "state.prev.json"


def read_state_file(path: Path) -> dict[str, Any]:
    """A saved search state, its checksum verified (states written before checksums are accepted, with
    a warning); ValueError when it is truncated, corrupt or not a search state."""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is unreadable or corrupt ({e})") from None
    if not isinstance(state, dict) or "generation" not in state:
        raise ValueError(f"{path} is not a search state")
    digest = state.pop("sha256", None)
    if digest is None and damaged_digest_key(state, "sha256") is not None:
        raise ValueError(f"{path} fails its checksum (its key 'sha256' is damaged: "
                         f"{damaged_digest_key(state, 'sha256')!r})")
    if digest is None:
        log.warning("%s carries no checksum (written by an older omnisparse); accepted unchecked", path)
    elif digest != content_digest(state):
        raise ValueError(f"{path} fails its checksum (truncated or corrupted)")
    return state


def load_saved_state(out: Path) -> Optional[dict[str, Any]]:
    """The newest saved state of ``out`` that verifies: ``state.json``, else (warning; the bad file
    moved aside) ``state.prev.json``; None when there is none."""
    for name in (STATE_FILE, PREV_STATE_FILE):
        path = out / name
        if not path.exists():
            continue
        try:
            state = read_state_file(path)
        except ValueError as e:
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            log.warning("ignoring the search state: %s (moved to %s); trying the previous one", e, aside.name)
            continue
        if name != STATE_FILE:
            log.warning("resuming the search from %s", path)
        return state
    return None


def write_state_file(out: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` with its sha256 to ``out/state.json`` (atomically); the state it replaces
    becomes ``state.prev.json``, the fallback of :func:`load_saved_state`."""
    state_path = out / STATE_FILE
    if state_path.exists():  # the previous generation's state stays as a fallback
        os.replace(state_path, out / PREV_STATE_FILE)
    state = json.loads(json.dumps(state))  # the digest of what reads back (tuples as lists, keys as strings)
    atomic_write_text(state_path, json.dumps({**state, "sha256": content_digest(state)}))


def _rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(data: Sequence) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
