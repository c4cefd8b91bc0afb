"""Load a trained model for inference: weights, config, tokenizer and feature statistics.

``load_model`` accepts three kinds of paths:

* a checkpoint directory (``RUN/ckpt-<step>``) or a run directory (its newest valid checkpoint), which
  is self-contained: it carries its model config (including the streaming settings it was trained
  with: ``chunk_size``, ``left_chunks``, ``lookahead``, the attention mode), its tokenizer and its
  feature statistics;
* an exported sub-network (``omnisparse.export.subnet.export_subnet``): a directory holding
  ``meta.json``, ``model.safetensors`` (the sparse artefact of :mod:`omnisparse.export.format`),
  ``tokenizer.model`` and ``global_stats.json`` (the on-disk format: :mod:`omnisparse.io.export_dir`,
  which also verifies ``meta.json`` and the checksums). It is read with :func:`read_artefact` into a plain
  dense :class:`Transducer` (pruned weights are exact zeros, no masks are set, no supernet code runs).
  Its ``meta.json`` ``trained_modes`` (first = default decoding mode; an optional ``mode`` comes
  first) say which attention modes it decodes in: an export of a dual-mode checkpoint is for one mode.

Decoding with other streaming settings is refused: the weights were not trained for them.

It lives in ``export`` (above ``decoding`` and ``train``) because it reads the artefact of
:mod:`omnisparse.export.reader`; its users are the commands (:mod:`omnisparse.deploy.apps`), the export
itself, deploy, search and report; training (which reads its checkpoints with
:mod:`omnisparse.io.checkpoint`) and the decoding it validates with need none of it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from omnisparse.config import (Config, ConfigError, ModelConfig, config_from_dict, model_config_from_dict,
                               update_dataclass)
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.export.format import EXCLUDED_PREFIXES  # the training-only heads, never exported
from omnisparse.export.reader import artefact_version, read_artefact
from omnisparse.io.checkpoint import CheckpointError, load_weights, resolve_checkpoint
from omnisparse.io.export_dir import EXPORT_META, is_export_dir, read_export_meta
from omnisparse.models.transducer import Transducer

STREAMING_KEYS = ("chunk_size", "left_chunks", "lookahead", "subsampling")


@dataclass
class LoadedModel:
    """A model ready to decode. ``path``: the checkpoint or export directory it came from;
    ``export_meta``: the export's ``meta.json`` (None for a checkpoint)."""

    model: Transducer
    tokenizer: Tokenizer
    normalizer: FeatureNormalizer
    config: Config
    path: Path
    trained_modes: tuple[str, ...]
    export_meta: Optional[dict[str, Any]] = None

    def check_mode(self, mode: str) -> None:
        if mode not in self.trained_modes:
            raise CheckpointError(f"{self.path} was trained for mode(s) {list(self.trained_modes)}, not {mode!r}")


def check_streaming_settings(trained: ModelConfig, requested: dict) -> None:
    """Raise if ``requested`` (``{model key: value}``, e.g. ``eval``'s ``--model.*`` overrides) names no
    model setting or holds a wrong type (ConfigError), or changes a setting the model was trained with
    (CheckpointError): the weights fix every one of them, the streaming ones included."""
    probe = copy.deepcopy(trained)
    update_dataclass(probe, dict(requested), "model.")  # unknown keys, wrong types: ConfigError
    requested = {k: getattr(probe, k) for k in requested}
    fixed = {k: (getattr(trained, k), v) for k, v in requested.items() if k not in STREAMING_KEYS and getattr(trained, k) != v}
    if fixed:
        desc = ", ".join(f"model.{k}={v[1]} (the weights are {v[0]})" for k, v in fixed.items())
        raise CheckpointError(f"a model setting cannot change at decoding time: {desc}")
    bad = {k: (getattr(trained, k), v) for k, v in requested.items() if k in STREAMING_KEYS and getattr(trained, k) != v}
    if bad:
        desc = ", ".join(f"{k}={v[1]} (trained with {v[0]})" for k, v in bad.items())
        raise CheckpointError(f"refusing to decode with streaming settings the model was not trained for: {desc}")


def load_export(path: str | Path, device: str | torch.device = "cpu",
                model_overrides: dict | None = None) -> LoadedModel:
    """Load an exported sub-network directory (see the module docstring) as a plain :class:`Transducer`.

    Only the CTC head may be missing from ``model.safetensors`` (it is never exported; it stays at its
    random init and is unused by decoding); any other missing or unexpected tensor, a shape mismatch,
    a corrupt file or a missing file is a one-line CheckpointError."""
    path = Path(path)
    meta = read_export_meta(path)
    try:
        mcfg = model_config_from_dict(meta["model_config"])
    except (ConfigError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: {EXPORT_META}: bad model_config ({e})") from None
    if model_overrides:
        check_streaming_settings(mcfg, model_overrides)
    try:
        art_model_config, art_config, fmt, spec, state = read_artefact(path / "model.safetensors")
        art_version = artefact_version(path / "model.safetensors")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: model.safetensors: {e}") from None
    if art_model_config != meta["model_config"]:
        a, m = dict(art_model_config or {}), dict(meta["model_config"])
        diff = {k: (a.get(k), m.get(k)) for k in sorted(set(a) | set(m)) if a.get(k) != m.get(k)}
        raise CheckpointError(f"{path}: the model config of model.safetensors differs from {EXPORT_META}'s; "
                              f"differing keys (model.safetensors, {EXPORT_META}): {diff}")
    if fmt != meta["format"]:
        raise CheckpointError(f"{path}: model.safetensors is {fmt!r}, {EXPORT_META} says {meta['format']!r}")
    _check_meta_matches_artefact(path, meta, art_config, spec, art_version)
    model = Transducer.from_config(mcfg)
    own = model.state_dict()
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if wrong:
        desc = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:4])
        raise CheckpointError(f"{path}: weights do not match the model config: shape mismatch {desc}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(EXCLUDED_PREFIXES)]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}")
        if result.unexpected_keys:
            u = list(result.unexpected_keys)
            parts.append(f"unexpected {u[:4]}{'...' if len(u) > 4 else ''}")
        raise CheckpointError(f"{path}: weights do not match the model config: " + "; ".join(parts))
    model.to(device).eval()
    tokenizer, normalizer = _tokenizer_and_stats(path, mcfg)
    try:
        cfg = config_from_dict(meta["run_config"]) if meta.get("run_config") else Config()
    except (ConfigError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: {EXPORT_META}: bad run_config ({e})") from None
    cfg.model = mcfg
    modes = meta.get("trained_modes") or [cfg.train.mode]
    if not isinstance(modes, list) or not all(m in ("stream", "full") for m in modes):
        raise CheckpointError(f"{path}: {EXPORT_META}: bad trained_modes {modes!r}")
    mode = meta.get("mode")  # exported for one mode (dual-mode checkpoints): decode in it by default
    if mode is not None:
        if mode not in modes:
            raise CheckpointError(f"{path}: {EXPORT_META}: mode {mode!r} is not among trained_modes {modes!r}")
        modes = [mode] + [m for m in modes if m != mode]
    return LoadedModel(model, tokenizer, normalizer, cfg, path, tuple(modes), export_meta=meta)


def _check_meta_matches_artefact(path: Path, meta: dict, config: dict, spec, version: str) -> None:
    """CheckpointError when what ``meta.json`` says of the sub-network (its ``config``, granularity,
    block, artefact format version, streaming summary) is not what ``model.safetensors`` holds: an
    edited or mixed-up export (``meta.json`` itself carries no checksum)."""
    where = f"{path}: {EXPORT_META} disagrees with model.safetensors"
    if meta["config"] != config:
        other = meta["config"] if isinstance(meta["config"], dict) else {}
        diff = sorted(g for g in set(config) | set(other) if config.get(g) != other.get(g))
        example = f"{diff[0]}: {other.get(diff[0])!r} vs {config.get(diff[0])!r}" if diff and other else \
            f"{str(meta['config'])[:60]!r}"
        raise CheckpointError(f"{where} on the sub-network config ({len(diff) or 'all'} gene(s) differ, e.g. {example})")
    for key, value in (("granularity", spec.granularity), ("block", spec.block),
                       ("artefact_format_version", version)):
        if key in meta and meta[key] != value:
            raise CheckpointError(f"{where} on {key}: {meta[key]!r} vs {value!r}")
    streaming = meta.get("streaming")
    if streaming is not None:
        mc = meta["model_config"]
        bad = {k: (streaming.get(k), mc.get(k)) for k in STREAMING_KEYS} if isinstance(streaming, dict) else {}
        bad = {k: v for k, v in bad.items() if v[0] != v[1]}
        if bad or not isinstance(streaming, dict):
            raise CheckpointError(f"{path}: {EXPORT_META}: its streaming summary disagrees with its model_config: "
                                  f"{bad or repr(streaming)[:60]} (streaming, model_config)")


def _tokenizer_and_stats(directory: Path, mcfg: ModelConfig) -> tuple[Tokenizer, FeatureNormalizer]:
    """``tokenizer.model`` and ``global_stats.json`` of a checkpoint or export directory."""
    tok_path = directory / "tokenizer.model"
    if not tok_path.exists():
        raise CheckpointError(f"{directory}: tokenizer.model missing")
    stats_path = directory / "global_stats.json"
    if not stats_path.exists():
        raise CheckpointError(f"{directory}: global_stats.json missing")
    try:
        normalizer = FeatureNormalizer.from_dict(json.loads(stats_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{directory}: global_stats.json is corrupt ({e})") from None
    try:
        tokenizer = Tokenizer(tok_path)
    except (OSError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else repr(e)
        raise CheckpointError(f"{directory}: tokenizer.model is unreadable ({reason})") from None
    if tokenizer.vocab_size != mcfg.vocab_size:
        raise CheckpointError(f"{directory}: tokenizer has {tokenizer.vocab_size} pieces "
                              f"but the model {mcfg.vocab_size}")
    return tokenizer, normalizer


def load_model(path: str | Path, device: str | torch.device = "cpu", model_overrides: dict | None = None) -> LoadedModel:
    """A checkpoint, a run directory (its newest valid checkpoint) or an exported sub-network
    (:func:`load_export`), ready to decode on ``device``. ``model_overrides``: model settings the
    caller asks for; changing a streaming setting is refused (CheckpointError)."""
    if is_export_dir(path):
        return load_export(path, device, model_overrides)
    p = Path(path)
    if (p / "encoder.onnx").is_file() and not (p / "state.json").exists():
        raise CheckpointError(f"{p} is an ONNX export (`omnisparse export-onnx`): this command reads checkpoints, "
                              "run directories and `omnisparse export` directories; check it with `omnisparse "
                              "check-onnx`, or give the model it was exported from")
    if (p / "model.safetensors").is_file() and not (p / "state.json").exists():
        raise CheckpointError(f"{p}: holds model.safetensors but neither {EXPORT_META} (an exported "
                              "sub-network) nor state.json (a checkpoint)")
    ckpt, state = resolve_checkpoint(path)
    cfg = config_from_dict(state["config"])
    mcfg = model_config_from_dict(state["model_config"])
    if model_overrides:
        check_streaming_settings(mcfg, model_overrides)
    model = Transducer.from_config(mcfg)
    load_weights(model, ckpt)
    model.to(device).eval()
    tokenizer, normalizer = _tokenizer_and_stats(ckpt, mcfg)
    modes = tuple(state.get("trained_modes") or [cfg.train.mode])
    return LoadedModel(model, tokenizer, normalizer, cfg, ckpt, modes)
