"""Word error rate of a model on CutSets (jiwer), with per-utterance hypotheses. The ``omnisparse eval``
command (opening a model directory, writing ``wer.json``) is :func:`omnisparse.deploy.apps.evaluate_checkpoint`."""

from __future__ import annotations

import time
from typing import Any

import jiwer
import torch
from lhotse import CutSet
from tqdm.auto import tqdm

from omnisparse.config import DecodeConfig
from omnisparse.data.batching import AsrDataset
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.text import normalize_for_scoring
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.beam_search import modified_beam_search
from omnisparse.decoding.greedy import greedy_search
from omnisparse.models.lm import load_token_lm
from omnisparse.models.predictor import predictor_history


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


def fusion_lm(decode: DecodeConfig, tokenizer: Tokenizer):
    """The LM ``decode.lm`` names (None when empty), checked against the recogniser's ``tokenizer``;
    ValueError when fusion is asked of greedy search."""
    if not decode.lm:
        return None
    if decode.method != "beam":
        raise ValueError(f"decode.lm (shallow fusion) needs decode.method=beam, not {decode.method!r}")
    return load_token_lm(decode.lm, tokenizer)


def beam_token_bonus(decode: DecodeConfig, lm) -> float:
    """The reward per emitted token beam search uses: ``lm_token_bonus`` when an LM is fused (``lm``
    loaded and ``lm_scale`` > 0), else ``token_bonus``."""
    return decode.lm_token_bonus if lm is not None and decode.lm_scale > 0 else decode.token_bonus


@torch.no_grad()
def decode_batch(model, feats: torch.Tensor, feat_lens: torch.Tensor, mode: str, decode: DecodeConfig,
                 lm=None) -> list[list[int]]:
    """Token ids per utterance; ``lm``: a loaded LM fused with weight ``decode.lm_scale`` (beam only)."""
    enc, enc_lens = model.encode(feats, feat_lens, mode=mode)
    if decode.method == "greedy":
        return greedy_search(model, enc, enc_lens, decode.max_symbols_per_frame)
    if decode.method == "beam":
        return modified_beam_search(model, enc, enc_lens, decode.beam, lm, decode.lm_scale,
                                    beam_token_bonus(decode, lm))
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
    lm = fusion_lm(decode, tokenizer)
    with predictor_history(model.predictor, decode.pred_history):
        for group in tqdm(batches, desc="decode", disable=not progress, leave=False):
            batch = ds[CutSet.from_cuts(group)]
            if not batch["ids"]:
                continue
            hyps = decode_batch(model, batch["feats"].to(device), batch["feat_lens"].to(device), mode, decode, lm)
            for cid, ref, h in zip(batch["ids"], batch["texts"], hyps):
                rows.append({"id": cid, "ref": ref, "hyp": tokenizer.decode(h)})
    model.train(was_training)
    stats = word_error_rate([r["ref"] for r in rows], [r["hyp"] for r in rows])
    return {**stats, "utterances": len(rows), "skipped": dict(ds.skipped), "decode_s": time.time() - t0, "hyps": rows}
