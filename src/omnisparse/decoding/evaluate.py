"""Word error rate of a model on CutSets (jiwer), with per-utterance hypotheses."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jiwer
import torch
from lhotse import CutSet
from tqdm.auto import tqdm

from omnisparse.config import DecodeConfig, apply_overrides, parse_override
from omnisparse.data.batching import AsrDataset
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.text import normalize_for_scoring
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.beam_search import modified_beam_search
from omnisparse.decoding.greedy import greedy_search
from omnisparse.io.atomic import atomic_write_text


def word_error_rate(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level WER (errors / reference words) over normalised texts; empty refs are ignored."""
    pairs = [(normalize_for_scoring(r), normalize_for_scoring(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return {"wer": float("nan"), "words": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    words = sum(len(r.split()) for r, _ in pairs)
    return {"wer": out.wer, "words": words, "substitutions": out.substitutions, "deletions": out.deletions,
            "insertions": out.insertions}


@torch.no_grad()
def decode_batch(model, feats: torch.Tensor, feat_lens: torch.Tensor, mode: str, decode: DecodeConfig) -> list[list[int]]:
    enc, enc_lens = model.encode(feats, feat_lens, mode=mode)
    if decode.method == "greedy":
        return greedy_search(model, enc, enc_lens, decode.max_symbols_per_frame)
    if decode.method == "beam":
        return modified_beam_search(model, enc, enc_lens, decode.beam)
    raise ValueError(f"unknown decoding method {decode.method!r} (greedy | beam)")


@torch.no_grad()
def evaluate_cuts(model, cuts: CutSet, tokenizer: Tokenizer, normalizer: FeatureNormalizer, mode: str = "stream",
                  decode: DecodeConfig | None = None, device: torch.device | str = "cpu", on_the_fly: bool = False,
                  progress: bool = False) -> dict[str, Any]:
    """Decode every cut; returns ``{wer, utterances, words, ..., hyps: [{id, ref, hyp}], decode_s}``."""
    decode = decode or DecodeConfig()
    was_training = model.training
    model.eval()
    ds = AsrDataset(tokenizer, normalizer, on_the_fly=on_the_fly, spec_augment=None)
    cut_list = sorted(cuts, key=lambda c: c.duration)
    rows = []
    t0 = time.time()
    batches = [cut_list[i:i + decode.batch_size] for i in range(0, len(cut_list), decode.batch_size)]
    for group in tqdm(batches, desc="decode", disable=not progress, leave=False):
        batch = ds[CutSet.from_cuts(group)]
        if not batch["ids"]:
            continue
        hyps = decode_batch(model, batch["feats"].to(device), batch["feat_lens"].to(device), mode, decode)
        for cid, ref, h in zip(batch["ids"], batch["texts"], hyps):
            rows.append({"id": cid, "ref": ref, "hyp": tokenizer.decode(h)})
    model.train(was_training)
    stats = word_error_rate([r["ref"] for r in rows], [r["hyp"] for r in rows])
    return {**stats, "utterances": len(rows), "skipped": dict(ds.skipped), "decode_s": time.time() - t0, "hyps": rows}


def evaluate_checkpoint(model_path: str, splits: list[str] | None = None, method: str | None = None,
                        mode: str | None = None, out_dir: str | None = None, overrides: list[str] | None = None,
                        subnet: str | dict | None = None) -> dict:
    """``omnisparse eval``: WER per split, written to ``OUT/wer.json`` and ``OUT/hyps_<split>.txt``.

    ``subnet``: a sub-network to decode instead of the dense one (``"uniform:S"``, a JSON file or a
    dict ``{gene: sparsity}``); masks come from the checkpoint's weights and its ``sparsity`` settings.
    ``model_path`` may also be an exported sub-network directory (then ``subnet`` must be None)."""
    from omnisparse.decoding.loading import load_model

    overrides = overrides or []
    model_overrides = {}
    for ov in overrides:
        parts, value = parse_override(ov)
        if parts[0] == "model":
            model_overrides[".".join(parts[1:])] = value
    lm = load_model(model_path, model_overrides=model_overrides)
    cfg = apply_overrides(lm.config, [ov for ov in overrides if not parse_override(ov)[0][0] == "model"]).validate()
    if method:
        cfg.decode.method = method
    mode = mode or lm.trained_modes[0]
    lm.check_mode(mode)
    splits = splits or [cfg.data.dev_split, *cfg.data.test_splits]
    subnet_config = None
    if subnet is not None and lm.export_meta is not None:
        from omnisparse.io.checkpoint import CheckpointError

        raise CheckpointError(f"{lm.path} is an exported sub-network (config fixed at export); "
                              "--subnet applies to supernet checkpoints")
    if subnet is not None:
        from omnisparse.sparsity.space import parse_subnet, space_and_bank

        space, bank = space_and_bank(lm.model, cfg.sparsity, refresh=True)
        subnet_config = parse_subnet(subnet, space)
        bank.apply(subnet_config)
    # default: RUN_DIR/eval for a checkpoint, EXPORT_DIR/eval for an exported sub-network
    out = Path(out_dir) if out_dir else ((lm.path if lm.export_meta is not None else lm.path.parent) / "eval")
    results = {}
    for split in splits:
        manifest_skips: dict[str, int] = {}
        cuts = load_split_cuts(cfg, [split], report=manifest_skips)
        r = evaluate_cuts(lm.model, cuts, lm.tokenizer, lm.normalizer, mode=mode, decode=cfg.decode,
                          on_the_fly=cfg.data.on_the_fly_features, progress=True)
        for k, v in manifest_skips.items():  # cuts the manifest held but that could not be used
            r["skipped"][k] = r["skipped"].get(k, 0) + v
        lines = [f"{h['id']}\tref: {h['ref']}\n{h['id']}\thyp: {h['hyp']}" for h in r.pop("hyps")]
        atomic_write_text(out / f"hyps_{split}.txt", "\n".join(lines) + "\n")
        results[split] = r
    atomic_write_text(out / "wer.json", json.dumps({"model": str(lm.path), "mode": mode, "method": cfg.decode.method,
                                                    "subnet": subnet_config, "results": results}, indent=2))
    return results
