"""Bring an exported model back as a training checkpoint (``omnisparse import-model``).

A released model (``models/small-int8``, or any ``omnisparse export`` directory) holds only what
decoding needs: no optimizer state, no training-only heads (the CTC head and the pruned loss's simple
joint) and, for an int8 artefact, weights rounded to int8 per output row. To fine-tune it, prune it
or train a supernet from it without its training run, :func:`import_model` writes an ordinary
checkpoint directory (``model.safetensors``, ``state.json``, ``tokenizer.model``,
``global_stats.json``; no optimizer, like an averaged checkpoint) that ``train.init_from``,
``sparsity.init_from``, ``eval`` and ``export`` read. Its weights are the artefact's, dequantized
(pruned weights of a sparse export are exact zeros); the training-only heads are at their seeded
initialisation. Fit them before the weights under them move, with a short run that trains only them::

    omnisparse import-model models/small-int8 --out exp/small/shipped-import
    omnisparse train --config small --train.init_from=exp/small/shipped-import \\
        --train.trainable='[ctc_head., simple_joint.]' --train.out_dir=exp/small/shipped ...
"""

from __future__ import annotations

from pathlib import Path

import torch

from omnisparse.export.format import EXCLUDED_PREFIXES
from omnisparse.export.loading import load_export
from omnisparse.io.atomic import sha256
from omnisparse.io.checkpoint import CheckpointError, write_checkpoint_dir
from omnisparse.io.export_dir import is_export_dir

IMPORTED_KIND = "imported"


def import_model(export_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint directory ``out`` (refused if it exists) from the export at ``export_dir``;
    ``seed`` seeds the training-only heads' initialisation. Returns ``out``."""
    export_dir, out = Path(export_dir), Path(out)
    if not is_export_dir(export_dir):
        raise FileNotFoundError(f"{export_dir}: not an `omnisparse export` directory (no meta.json)")
    if out.exists():
        raise CheckpointError(f"{out} already exists; choose another --out")
    torch.manual_seed(seed)
    loaded = load_export(export_dir)
    meta = loaded.export_meta or {}
    fresh = sorted({k.split(".")[0] for k in loaded.model.state_dict() if k.startswith(EXCLUDED_PREFIXES)})
    state = {"step": 0, "epoch": 0, "kind": IMPORTED_KIND, "trained_modes": list(loaded.trained_modes),
             "config": loaded.config.to_dict(), "model_config": loaded.config.model.__dict__,
             "imported_from": {"path": str(export_dir), "format": meta.get("format"),
                               "model_sha256": sha256(export_dir / "model.safetensors"),
                               "source": meta.get("source"), "fresh_heads": fresh, "seed": seed}}
    extra = {name: (export_dir / name).read_bytes() for name in ("tokenizer.model", "global_stats.json")}
    return write_checkpoint_dir(out, {"model.safetensors": loaded.model.state_dict()}, state, extra)
