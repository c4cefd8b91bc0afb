"""Load a trained model for inference: weights, config, tokenizer and feature statistics.

A checkpoint (or a run directory: its newest valid checkpoint) is self-contained: it carries its
model config (including the streaming settings it was trained with: ``chunk_size``, ``left_chunks``,
``lookahead``, the attention mode), its tokenizer and its feature statistics. Decoding with other
streaming settings is refused: the weights were not trained for them.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from omnisparse.config import Config, ModelConfig, config_from_dict, model_config_from_dict
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.models.transducer import Transducer
from omnisparse.train.checkpoint import CheckpointError, load_weights, resolve_checkpoint

STREAMING_KEYS = ("chunk_size", "left_chunks", "lookahead", "subsampling")


@dataclass
class LoadedModel:
    model: Transducer
    tokenizer: Tokenizer
    normalizer: FeatureNormalizer
    config: Config
    path: Path
    trained_modes: tuple[str, ...]

    def check_mode(self, mode: str) -> None:
        if mode not in self.trained_modes:
            raise CheckpointError(f"{self.path} was trained for mode(s) {list(self.trained_modes)}, not {mode!r}")


def check_streaming_settings(trained: ModelConfig, requested: dict) -> None:
    """Raise if ``requested`` changes a streaming setting the model was trained with."""
    bad = {k: (getattr(trained, k), v) for k, v in requested.items() if k in STREAMING_KEYS and getattr(trained, k) != v}
    if bad:
        desc = ", ".join(f"{k}={v[1]} (trained with {v[0]})" for k, v in bad.items())
        raise CheckpointError(f"refusing to decode with streaming settings the model was not trained for: {desc}")


def load_model(path: str | Path, device: str | torch.device = "cpu", model_overrides: dict | None = None) -> LoadedModel:
    ckpt, state = resolve_checkpoint(path)
    cfg = config_from_dict(state["config"])
    mcfg = model_config_from_dict(state["model_config"])
    if model_overrides:
        check_streaming_settings(mcfg, model_overrides)
    model = Transducer.from_config(mcfg)
    load_weights(model, ckpt)
    model.to(device).eval()
    tok_path = ckpt / "tokenizer.model"
    if not tok_path.exists():
        raise CheckpointError(f"{ckpt}: tokenizer.model missing")
    stats = json.loads((ckpt / "global_stats.json").read_text())
    tokenizer = Tokenizer(tok_path)
    if tokenizer.vocab_size != mcfg.vocab_size:
        raise CheckpointError(f"{ckpt}: tokenizer has {tokenizer.vocab_size} pieces but the model {mcfg.vocab_size}")
    modes = tuple(state.get("trained_modes") or [cfg.train.mode])
    return LoadedModel(model, tokenizer, FeatureNormalizer.from_dict(stats), cfg, ckpt, modes)
