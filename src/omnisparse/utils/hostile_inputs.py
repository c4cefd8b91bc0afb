"""Hostile inputs for the reliability tests (``tests/faults``) and ``bench/faults.py``: cut manifest
lines that are damaged or malicious (:func:`hostile_cuts`, :func:`plant_hostile_cuts`, with
:func:`read_manifest_rows` / :func:`write_manifest_rows`), config values just outside their range
(:func:`value_outside`), and export directories whose metadata lies (:data:`EXPORT_META_EDITS`,
:data:`ONNX_META_EDITS`, :func:`set_onnx_metadata`). Nothing here is used by training or inference.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Callable, Optional

__all__ = ["read_manifest_rows", "write_manifest_rows", "value_outside", "hostile_cuts", "plant_hostile_cuts",
           "EXPORT_META_EDITS", "ONNX_META_EDITS", "set_onnx_metadata"]


def read_manifest_rows(path: str | os.PathLike) -> list[dict]:
    """The JSON rows of a gzipped lhotse manifest (``*.jsonl.gz``), as plain dicts."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def write_manifest_rows(path: str | os.PathLike, rows: list) -> None:
    """Write ``rows`` (dicts, or raw strings written as they are: a hostile line) as a gzipped manifest."""
    with gzip.open(path, "wt") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def value_outside(rule: str):
    """A value just outside a rule of ``omnisparse.config.RANGES`` (``a|b`` choices, ``[lo, hi]`` /
    ``(lo, hi)`` intervals, ``>= x`` / ``> x`` bounds)."""
    if "|" in rule:
        return 3
    if rule[0] in "[(":
        lo, hi = (float(v) for v in rule[1:-1].split(","))
        return hi + 1 if rule[-1] == "]" else hi
    op, bound = rule.split()
    return float(bound) - 1 if op == ">=" else float(bound)


def _edited(row: dict, path: tuple, value) -> dict:
    row = json.loads(json.dumps(row))
    node = row
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return row


def hostile_cuts(good: dict, marker: str | os.PathLike) -> dict[str, tuple[str, object]]:
    """Damaged or malicious variants of the manifest line ``good`` (a cut as a dict): ``{name: (reason
    omnisparse.data.manifest counts it under, line: a dict, or a string that is no JSON object)}``.
    ``marker``: the file a ``command`` audio source would create if it ran. The variants keep ``good``'s
    id (make them unique before planting them beside it; ``"a duplicate id"`` must keep it)."""
    src = ("recording", "sources", 0)
    feats = {"features ../../etc/passwd": ("unsafe_path", _edited(good, ("features", "storage_path"), "../../etc/passwd")),
             "features via kaldiio": ("unsafe_source", _edited(good, ("features", "storage_type"), "kaldiio"))} \
        if "features" in good else {}
    return {
        **feats,
        "negative duration": ("zero_length", _edited(good, ("duration",), -3.0)),
        "NaN duration": ("bad_duration", _edited(good, ("duration",), float("nan"))),
        "1e9 s": ("bad_duration", _edited(good, ("duration",), 1e9)),
        "duration a string": ("bad_duration", _edited(good, ("duration",), "long")),
        "no duration": ("bad_entry", _edited(good, ("duration",), KeyError)),
        "no id": ("bad_entry", _edited(good, ("id",), KeyError)),
        "no type": ("unsupported_cut", _edited(good, ("type",), KeyError)),
        "a MixedCut": ("unsupported_cut", _edited(good, ("type",), "MixedCut")),
        "text a number": ("bad_entry", _edited(good, ("supervisions", 0, "text"), 5)),
        "not JSON": ("bad_entry", "{not json"),
        "a list": ("bad_entry", "[1, 2]"),
        "audio ../../etc/passwd": ("unsafe_path", _edited(good, (*src, "source"), "../../../etc/passwd")),
        "audio from a command": ("unsafe_source", _edited(_edited(good, (*src, "type"), "command"), (*src, "source"),
                                                          f"touch {marker}; cat /dev/null")),
        "audio from a URL": ("unsafe_source", _edited(good, (*src, "type"), "url")),
        "a duplicate id": ("duplicate_id", good),
    }


def plant_hostile_cuts(rows: list[dict], marker: str | os.PathLike, copies: int = 1) -> tuple[list, dict[str, int]]:
    """``rows`` (a manifest's lines) with ``copies`` of every :func:`hostile_cuts` variant of its first
    line interleaved, ids made unique -> ``(lines, {reason: count})``."""
    out, want = list(rows), {}
    n = 0
    for copy in range(copies):
        for name, (reason, row) in hostile_cuts(rows[copy % len(rows)], marker).items():
            if isinstance(row, dict) and name != "a duplicate id" and "id" in row:
                row = {**row, "id": f"hostile-{n}"}
            out.insert(min(2 * n + 1, len(out)), row)
            want[reason] = want.get(reason, 0) + 1
            n += 1
    return out, want


def _meta_edit(key_path: tuple, value) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        node = meta
        for k in key_path[:-1]:
            node = node[k]
        node[key_path[-1]] = value
    return edit


# an export's meta.json edited -> (the edit, words of the one error line that loading it must give)
EXPORT_META_EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "model d_model": (_meta_edit(("model_config", "d_model"), 48), "model config of model.safetensors differs"),
    "model n_layers": (_meta_edit(("model_config", "n_layers"), 3), "model config of model.safetensors differs"),
    "model config mistyped": (_meta_edit(("model_config", "d_model"), "wide"), "bad model_config"),
    "model config a list": (_meta_edit(("model_config",), [1]), "bad model_config"),
    "sub-network config": (_meta_edit(("config", "enc.0.ffn"), 0.9), "disagrees with model.safetensors on the sub-network"),
    "sub-network config null": (_meta_edit(("config",), None), "disagrees with model.safetensors on the sub-network"),
    "granularity": (_meta_edit(("granularity",), "row"), "on granularity"),
    "block": (_meta_edit(("block",), 4), "on block"),
    "format": (_meta_edit(("format",), "fp32-dense"), "meta.json says 'fp32-dense'"),
    "artefact version": (_meta_edit(("artefact_format_version",), "9"), "on artefact_format_version"),
    "export version": (_meta_edit(("export_version",), 7), "export layout version 7"),
    "streaming summary": (_meta_edit(("streaming", "chunk_size"), 99), "streaming summary disagrees"),
    "trained modes": (_meta_edit(("trained_modes",), "stream"), "bad trained_modes"),
    "run config out of range": (_meta_edit(("run_config", "decode", "beam"), 0), "decode.beam"),
    "files outside": (_meta_edit(("files", "../../../../etc/passwd"), "0" * 64), "not a file name inside"),
    "not a mapping": (lambda m: m.clear() or m.update({"kind": 5}), "does not describe an omnisparse export"),
}

# encoder.onnx metadata_props changed (None: removed) -> (changes, words of check-onnx's one error line)
ONNX_META_EDITS: dict[str, tuple[dict[str, Optional[str]], str]] = {
    "no omnisparse metadata": ({"omnisparse_onnx_version": None}, "carries no omnisparse metadata"),
    "another version": ({"omnisparse_onnx_version": "9"}, "layout version 9"),
    "no chunk_size": ({"chunk_size": None}, "bad omnisparse metadata"),
    "chunk_size not a number": ({"chunk_size": "abc"}, "expected an integer"),
    "chunk_size wrong": ({"chunk_size": "7"}, "do not match their metadata"),
    "d_model wrong": ({"d_model": "48"}, "do not match their metadata"),
    "blank_id out of range": ({"blank_id": "999"}, "blank_id 999 outside"),
    "encoder_state not a list of states": ({"encoder_state": "[1, 2]"}, "bad omnisparse metadata"),
}


def set_onnx_metadata(path: str | os.PathLike, changes: dict[str, Optional[str]]) -> None:
    """Change (None: remove) entries of an ``.onnx`` file's ``metadata_props`` in place."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    for k, v in props.items():
        if v is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
    onnx.save(model, str(path))
