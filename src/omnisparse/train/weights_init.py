"""Start a run from another run's weights, at step 0 with a fresh optimizer.

* :func:`init_model_from` (``train.init_from``, ``sparsity.init_from``): every tensor of a checkpoint of
  the same model (a run directory's newest checkpoint, an averaged checkpoint, or a released model
  brought back with ``omnisparse import-model``). The model config must match except ``dropout``, and
  the tokenizer must be the run's.
* :func:`init_encoder_from` (``train.init_encoder_from``): the encoder of a wav2vec 2.0 pre-training
  run (``omnisparse pretrain``), or of any RNN-T run.

Only ``encoder.*`` tensors are loaded by the second (subsampling, blocks, final LayerNorm); the predictor, joiner
and CTC head keep their fresh initialisation, and the pre-training heads (quantizer, projections,
mask embedding) are ignored. The encoder's shape-defining ModelConfig keys must match; chunking
(``chunk_size``, ``left_chunks``, ``lookahead``) and ``dropout`` may differ (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnisparse.data.tokenizer import Tokenizer
from omnisparse.io import checkpoint as ck

log = logging.getLogger(__name__)

PREFIX = "encoder."
# ModelConfig keys a whole-model start may change (behaviour, not tensors)
MODEL_SOFT_KEYS = {"dropout"}
# ModelConfig keys that define the encoder's tensors
ENCODER_KEYS = ("feat_dim", "subsampling", "d_model", "n_heads", "ffn_dim", "n_layers", "conv_kernel", "rel_pos_clip")
# ModelConfig keys of the encoder that may differ (behaviour, not tensors)
ENCODER_SOFT_KEYS = ("chunk_size", "left_chunks", "lookahead", "dropout")


def init_encoder_from(model: nn.Module, path: str | Path, model_cfg) -> dict[str, Any]:
    """Copy the ``encoder.*`` weights of the checkpoint (or run directory's newest checkpoint) at
    ``path`` into ``model`` (anything with an ``encoder`` submodule); ``model_cfg`` is this run's
    ModelConfig. Raises :class:`CheckpointError` when the encoder configs or tensors differ.
    Returns what was loaded: ``{"path", "kind", "step", "tensors", "params", "not_loaded"}``."""
    ckpt, state = ck.resolve_checkpoint(path)
    saved = state.get("model_config") or {}
    own = model_cfg.__dict__
    diff = {k: (saved[k], own.get(k)) for k in ENCODER_KEYS if k in saved and saved[k] != own.get(k)}
    if diff:
        raise ck.CheckpointError(
            f"train.init_encoder_from={ckpt}: its encoder config differs from this run's "
            f"(key: (checkpoint, this run)): {diff}; use a --model config whose encoder matches")
    soft = {k: (saved[k], own.get(k)) for k in ENCODER_SOFT_KEYS if k in saved and saved[k] != own.get(k)}
    if soft:
        log.info("init_encoder_from: encoder settings that differ and are allowed to: %s", soft)
    weights = {k: v for k, v in ck.read_tensors(ckpt / "model.safetensors").items() if k.startswith(PREFIX)}
    if not weights:
        raise ck.CheckpointError(f"{ckpt}: no {PREFIX}* weights in model.safetensors")
    own_sd = model.state_dict()
    own_enc = {k for k in own_sd if k.startswith(PREFIX)}
    missing, unexpected = sorted(own_enc - set(weights)), sorted(set(weights) - own_enc)
    wrong = sorted(k for k in own_enc & set(weights) if own_sd[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        raise ck.CheckpointError(
            f"{ckpt}: encoder weights do not match this model: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}, shape mismatch {[(k, tuple(weights[k].shape), tuple(own_sd[k].shape)) for k in wrong[:4]]}")
    with torch.no_grad():
        for k, v in weights.items():
            own_sd[k].copy_(v)
    info = {"path": str(ckpt), "kind": state.get("kind", "dense"), "step": state.get("step"),
            "tensors": len(weights), "params": int(sum(v.numel() for v in weights.values())),
            "not_loaded": sorted({k.split(".")[0] for k in own_sd if not k.startswith(PREFIX)})}
    log.info("initialised the encoder from %s (%s, step %s): %d tensors, %d parameters; kept fresh: %s",
             ckpt, info["kind"], info["step"], info["tensors"], info["params"], ", ".join(info["not_loaded"]) or "-")
    return info


def init_model_from(model: nn.Module, path: str | Path, model_cfg, tokenizer: Tokenizer | None = None,
                    what: str = "init_from") -> dict[str, Any]:
    """Load every tensor of the checkpoint (or run directory's newest checkpoint) at ``path`` into
    ``model`` (strict: a missing, unexpected or differently shaped tensor names itself). ``model_cfg``
    is this run's ModelConfig, ``tokenizer`` its tokenizer (the checkpoint's must have the same
    :meth:`Tokenizer.fingerprint` when both exist); ``what`` names the setting in errors. Raises :class:`CheckpointError`.
    Returns ``{"path", "kind", "step", "cost"}`` of the source."""
    ckpt, state = ck.resolve_checkpoint(path)
    saved = state.get("model_config", {})
    own = model_cfg.__dict__
    diff = {k: (v, own.get(k)) for k, v in saved.items() if k not in MODEL_SOFT_KEYS and own.get(k) != v}
    if diff:
        raise ck.CheckpointError(f"{what}={ckpt} was trained with another model config; differing keys "
                                 f"(checkpoint, this run): {diff}")
    tok = ckpt / "tokenizer.model"
    if tokenizer is not None and tok.exists() and Tokenizer(tok).fingerprint() != tokenizer.fingerprint():
        raise ck.CheckpointError(f"{what}={ckpt} was trained with another tokenizer than this run's corpus")
    ck.load_weights(model, ckpt)
    log.info("initialised from %s (%s, step %s)", ckpt, state.get("kind", "dense"), state.get("step"))
    return {"path": str(ckpt), "kind": state.get("kind", "dense"), "step": state.get("step"),
            "cost": state.get("cost", {})}
