"""Export one sub-network of a (supernet) checkpoint as a standalone, shippable model directory.

:func:`export_subnet` writes ``OUT_DIR/``::

    model.safetensors   the sparse artefact of :mod:`omnisparse.export.format` (safetensors-compatible);
                        its size in bytes is exactly ``SearchSpace.size_bytes(config, fmt)``, the size
                        the search priced the sub-network at
    tokenizer.model     copied from the checkpoint
    global_stats.json   copied from the checkpoint (feature normalisation)
    meta.json           what the model is and where it came from (see :func:`export_subnet`)

The on-disk format of the directory (file names, ``meta.json`` kind, version and checksums) is
:mod:`omnisparse.io.export_dir`, shared with the reader: ``omnisparse.export.loading.load_model(OUT_DIR)``
loads it as a plain dense :class:`Transducer` (pruned weights exact zeros, no masks, no supernet
code), so ``omnisparse transcribe OUT_DIR ...`` and ``omnisparse eval OUT_DIR`` work on it like on a
checkpoint.

The masks come from the checkpoint's weights (magnitude rankings, :class:`MaskBank`) and its saved
``sparsity`` settings (granularity, block, grid, prune_pred_joiner): the exported network is exactly
the sub-network that ``eval --subnet`` decodes inside the supernet (bit-identical weights for the
fp32 formats; int8-sparse adds per-row quantisation).

Dual-mode checkpoints (``train --dual-mode``) hold two deployable models: ``mode="full"`` exports the
dense server model (the all-zero config; ``meta.json`` ``trained_modes: ["full"]``, so it decodes in
full-context mode by default) and ``mode="stream"`` the sparse on-device model (by default every gene at
the checkpoint's ``stream_sparsity`` s*; ``trained_modes: ["stream"]``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from omnisparse.export.format import FORMAT_VERSION, ArtefactPricing, check_format
from omnisparse.export.loading import LoadedModel, load_model
from omnisparse.export.writer import write_artefact
from omnisparse.io.atomic import fsync_path
from omnisparse.io.checkpoint import resolve_checkpoint
from omnisparse.io.export_dir import EXPORT_KIND, EXPORT_VERSION, file_digests, is_export_dir, write_export_meta
from omnisparse.io.lock import ensure_not_held
from omnisparse.sparsity.space import SearchSpace, parse_subnet

__all__ = ["ExportError", "ExportResult", "export_subnet", "space_for", "resolve_mode", "check_out_dir"]


class ExportError(ValueError):
    """An export that cannot be done as asked (occupied output directory, export as source, ...)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_subnet` wrote.

    ``path``: the export directory; ``fmt``: storage format; ``config``: ``{gene: sparsity}`` as
    validated and stored; ``size_bytes``: bytes of ``model.safetensors`` (= ``space.size_bytes(config,
    fmt)``); ``nonzero_params``: parameters kept by the masks (CTC head excluded; see
    :meth:`SearchSpace.nonzero_params`); ``meta``: the content of ``meta.json``."""

    path: Path
    fmt: str
    config: dict[str, float]
    size_bytes: int
    nonzero_params: int
    meta: dict[str, Any] = field(repr=False)


def space_for(lm: LoadedModel) -> SearchSpace:
    """The search space of a loaded checkpoint, from its saved ``sparsity`` settings (the space
    ``eval --subnet``, the search and the report use)."""
    return SearchSpace.from_sparsity_config(lm.model, lm.config.sparsity, pricing=ArtefactPricing.of(lm.model))


def _occupied(p: Path) -> bool:
    return p.exists() and (not p.is_dir() or any(p.iterdir()))


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> None:
    """The rule for the output directory of ``export`` and ``export-onnx``: a file there, or a non-empty
    directory without ``overwrite``, is an ExportError; a directory a live command holds (a run, a
    search, a corpus: :mod:`omnisparse.io.lock`) is never replaced, ``overwrite`` or not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; choose another output directory")
    if _occupied(out) and not overwrite:
        raise ExportError(f"{out} already exists and is not empty; refusing to overwrite it "
                          "(--overwrite, or overwrite=True, replaces it)")
    if _occupied(out):
        ensure_not_held(out)  # a run, search or corpus at work there is never replaced


def _streaming_summary(mc: Mapping[str, Any]) -> dict[str, Any]:
    """The streaming settings of a model config, in frames and in milliseconds."""
    frame_ms = 10 * int(mc["subsampling"])  # fbank hop 10 ms x subsampling
    return {
        "subsampling": mc["subsampling"], "chunk_size": mc["chunk_size"], "left_chunks": mc["left_chunks"],
        "lookahead": mc["lookahead"], "encoder_frame_ms": frame_ms, "chunk_ms": mc["chunk_size"] * frame_ms,
        "lookahead_ms": mc["lookahead"] * frame_ms, "left_context_ms": mc["left_chunks"] * mc["chunk_size"] * frame_ms,
    }


def _finite_json(x: Any) -> Any:
    """``x`` with NaN / infinite floats replaced by None, so that meta.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_json(v) for v in x]
    return x


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` directory to ``out`` (replacing an existing one when ``overwrite``).

    Readers see either the old complete directory, briefly no directory (overwrite only), or the new
    complete one; never a partial export."""
    check_out_dir(out, overwrite)
    old: Optional[Path] = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    fsync_path(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolve_mode(lm: LoadedModel, state: Mapping[str, Any], space: SearchSpace,
                 config: Optional[str | Mapping[str, float]], mode: Optional[str]
                 ) -> tuple[dict[str, float], tuple[str, ...], Optional[str]]:
    """The sub-network, ``trained_modes`` and ``mode`` of an export (see :func:`export_subnet`).

    ``mode`` None: ``config`` is required; the checkpoint's trained modes, except for a dual-mode
    checkpoint (both modes), where a sparse config means ``stream`` and the dense one ``full``.
    ``mode`` given: it must be one the checkpoint was trained for; ``config`` None means the dense
    network for ``full`` and uniform ``state["stream_sparsity"]`` (s*) for ``stream``; ``full``
    refuses a sparse config (only the dense weights were trained in full-context mode)."""
    if mode is not None and mode not in ("full", "stream"):
        raise ExportError(f"mode must be 'full' or 'stream', got {mode!r}")
    if mode is not None and mode not in lm.trained_modes:
        raise ExportError(f"{lm.path} was trained for mode(s) {list(lm.trained_modes)}, not {mode!r}")
    if config is None:
        if mode == "full":
            config = space.sample_max()  # every gene at 0.0
        elif mode == "stream":
            s = state.get("stream_sparsity")
            if s is None:
                raise ExportError(f"{lm.path} records no streaming sparsity (not a dual-mode checkpoint): "
                                  "give the sub-network (a config, or --sparsity S)")
            config = space.uniform(float(s))
        else:
            raise ExportError("give the sub-network to export (a config) or a mode")
    config = parse_subnet(config, space)
    sparse = any(v > 0 for v in config.values())
    if mode == "full" and sparse:
        raise ExportError("mode 'full' exports the dense server model: only the dense weights were trained in "
                          "full-context mode (give no sub-network, or export the sparse one with mode 'stream')")
    if mode is None and set(lm.trained_modes) == {"full", "stream"}:
        mode = "stream" if sparse else "full"
    return config, ((mode,) if mode is not None else tuple(lm.trained_modes)), mode


def export_subnet(source: str | os.PathLike, config: Optional[str | Mapping[str, float]], fmt: str,
                  out_dir: str | os.PathLike, extra_meta: Optional[Mapping[str, Any]] = None, *,
                  overwrite: bool = False, mode: Optional[str] = None) -> ExportResult:
    """Export sub-network ``config`` of checkpoint ``source`` in storage format ``fmt`` to ``out_dir``.

    ``source``: a checkpoint directory or a run directory (its newest valid checkpoint); usually a
    supernet, but any checkpoint works (dense runs use the default ``sparsity`` settings). An export
    directory is refused (export from its supernet instead). ``config``: ``{gene: sparsity}``, a
    ``"uniform:S"`` string or a JSON file, validated by :func:`parse_subnet` against the checkpoint's
    space (:func:`space_for`: known genes, sparsities in [0, 1); missing genes are dense). ``fmt``: one
    of ``fp32-dense | fp32-sparse | int8-sparse``. ``extra_meta``: JSON-serialisable mapping stored as
    ``meta.json["extra"]`` (e.g. the search's dev WER; NaN / infinite floats are stored as null).
    ``mode`` (``full`` | ``stream`` | None): the attention mode the export is for, stored as
    ``meta.json["mode"]`` and ``trained_modes: [mode]`` (its default decoding mode); ``config`` may
    then be None (``full``: the dense network; ``stream``: uniform s* of a dual-mode checkpoint). See
    :func:`resolve_mode` for the rules, also for ``mode=None`` on a dual-mode checkpoint.

    ``meta.json`` holds: ``kind``, ``export_version``, ``omnisparse_version``,
    ``artefact_format_version``, ``format``, ``granularity``, ``block``, ``config``, ``nonzero_params``,
    ``dense_params`` (same count at sparsity 0), ``size_bytes`` (of model.safetensors), ``model_config``
    (the full ModelConfig), ``streaming`` (chunk_size / left_chunks / lookahead / subsampling in frames
    and ms), ``trained_modes`` (+ ``mode`` when exported for one), ``run_config`` (the source's full
    Config: decoding and data settings for ``eval``), ``source`` (``checkpoint`` absolute path,
    ``step``), ``files`` (sha256 of the other three files, verified on load), ``created`` (UTC ISO
    date) and ``extra``.

    Atomic: everything is written (and fsync'ed) into a temporary sibling directory that is renamed
    to ``out_dir`` at the end; a failure leaves no partial export. An existing non-empty ``out_dir`` is
    an ExportError unless ``overwrite=True`` (then it is replaced as a whole).
    """
    import omnisparse

    fmt = check_format(fmt)
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    if is_export_dir(source):
        raise ExportError(f"{source} is already an exported sub-network; export from its supernet "
                          "checkpoint instead")
    try:
        extra = _finite_json(json.loads(json.dumps(dict(extra_meta or {}))))
    except (TypeError, ValueError) as e:
        raise ExportError(f"extra_meta must be JSON-serialisable ({e})") from None
    ckpt, state = resolve_checkpoint(source)
    lm = load_model(ckpt)
    space = space_for(lm)
    config, trained_modes, mode = resolve_mode(lm, state, space, config, mode)
    expected = space.size_bytes(config, fmt)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        written = write_artefact(tmp / "model.safetensors", lm.model, config, fmt, space.spec)
        on_disk = os.path.getsize(tmp / "model.safetensors")
        if not written == on_disk == expected:
            raise RuntimeError(f"artefact size mismatch: wrote {written} bytes ({on_disk} on disk), "
                               f"the search space prices it at {expected}")
        for name in ("tokenizer.model", "global_stats.json"):
            shutil.copyfile(ckpt / name, tmp / name)
            fsync_path(tmp / name)
        mc = json.loads(json.dumps(dataclasses.asdict(lm.model.config)))  # what the model was built from
        meta = {
            "kind": EXPORT_KIND,
            "export_version": EXPORT_VERSION,
            "omnisparse_version": omnisparse.__version__,
            "artefact_format_version": FORMAT_VERSION,
            "format": fmt,
            "granularity": space.spec.granularity,
            "block": space.spec.block,
            "config": dict(config),
            "nonzero_params": space.nonzero_params(config),
            "dense_params": space.nonzero_params({}),
            "size_bytes": written,
            "model_config": mc,
            "streaming": _streaming_summary(mc),
            "trained_modes": list(trained_modes),
            **({"mode": mode} if mode is not None else {}),
            "run_config": lm.config.to_dict(),
            "source": {"checkpoint": str(Path(ckpt).resolve()), "step": state.get("step")},
            "files": file_digests(tmp),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "extra": extra,
        }
        write_export_meta(tmp, meta)
        fsync_path(tmp)
        _install(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, fmt, dict(config), written, meta["nonzero_params"], meta)
