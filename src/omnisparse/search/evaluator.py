"""Fitness of a sub-network for the search: greedy WER, or the RNN-T loss per token, on a fixed dev
subset, masks switched in place.

:class:`SubnetEvaluator` loads and normalises the dev features once, keeps them as padded batches in
memory (on the model's device), and per candidate only sets the masks (:meth:`MaskBank.apply`, from
rankings computed once) and decodes. Batching, ordering and scoring are those of
:func:`omnisparse.decoding.evaluate.evaluate_cuts`, so the WER is the same number ``omnisparse eval
--subnet`` reports on the same cuts. The loss fitness (``fitness="loss"``) is the full RNN-T loss of
the references (nats per token, summed over utterances and divided by their tokens): a smooth number
where the WER of a hundred utterances moves in steps of a word, and cheaper than decoding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import torch
from lhotse import CutSet
from torch import nn

from omnisparse.config import DecodeConfig
from omnisparse.data.batching import AsrDataset
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.evaluate import decode_batch, word_error_rate
from omnisparse.losses.rnnt import rnnt_loss_from_joiner
from omnisparse.sparsity.masks import MaskBank
from omnisparse.sparsity.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    feats: torch.Tensor  # (B, T, 80) normalised, zero-padded, on the model's device
    feat_lens: torch.Tensor  # (B,) frames
    ids: list[str]
    texts: list[str]
    tokens: torch.Tensor  # (B, U) token ids, padded
    token_lens: torch.Tensor  # (B,)


FITNESS = ("wer", "loss")


class SubnetEvaluator:
    """Callable ``config -> fitness`` (lower is better) of the sub-network ``config`` (``{gene:
    sparsity}``) of ``model`` on ``cuts``: the WER (a fraction of reference words) for ``fitness="wer"``,
    the RNN-T loss per reference token (nats) for ``fitness="loss"``; :attr:`score_key` names it
    (``wer`` | ``loss_per_token``).

    ``space_or_genes``: a :class:`SearchSpace` (cache key = ``space.encode(config)``, configs must lie
    on its grid) or the genes in key order (key = sparsities in that order, missing genes 0.0).
    ``mask_bank``: the bank of ``model``'s genes; its rankings are computed once here from the current
    (final) weights. ``mode``: attention mode (``stream`` | ``full``); ``decode``: batch size and
    ``max_symbols_per_frame`` (the method must be ``greedy``). Counters: ``evaluations`` (decodes run),
    ``cache_hits``, ``decode_s`` (seconds spent decoding), ``prepare_s`` (loading the features).
    """

    def __init__(self, model: nn.Module, space_or_genes: Union[SearchSpace, Sequence[str]], mask_bank: MaskBank,
                 cuts: CutSet, tokenizer: Tokenizer, normalizer: FeatureNormalizer, mode: str,
                 decode: DecodeConfig, on_the_fly: bool = False, fitness: str = "wer"):
        if fitness not in FITNESS:
            raise ValueError(f"unknown search fitness {fitness!r} ({' | '.join(FITNESS)})")
        self.fitness = fitness
        self.score_key = "wer" if fitness == "wer" else "loss_per_token"
        if decode.method != "greedy":
            raise ValueError(f"the search decodes greedily; got decode.method={decode.method!r}")
        self.model = model
        self.space = space_or_genes if isinstance(space_or_genes, SearchSpace) else None
        self.genes: tuple[str, ...] = tuple(self.space.genes if self.space is not None else space_or_genes)
        unknown = [g for g in self.genes if g not in mask_bank.groups]
        if unknown:
            raise ValueError(f"gene(s) {unknown} are not in the mask bank (its genes: {mask_bank.genes})")
        self.bank = mask_bank
        self.tokenizer = tokenizer
        self.mode = mode
        self.decode = decode
        self.cache: dict[tuple[float, ...], dict[str, Any]] = {}
        self.evaluations = 0
        self.cache_hits = 0
        self.decode_s = 0.0
        self.bank.refresh()
        t0 = time.perf_counter()
        self.batches, self.skipped = self._prepare(cuts, normalizer, on_the_fly)
        self.prepare_s = time.perf_counter() - t0
        self.utterances = sum(len(b.ids) for b in self.batches)
        log.info("search dev subset: %d utterances in %d batches (features loaded in %.1f s)", self.utterances,
                 len(self.batches), self.prepare_s)

    def _prepare(self, cuts: CutSet, normalizer: FeatureNormalizer, on_the_fly: bool) -> tuple[list[_Batch], dict]:
        """Padded batches exactly as ``evaluate_cuts`` makes them (sorted by duration, ``batch_size`` cuts)."""
        device = next(self.model.parameters()).device
        ds = AsrDataset(self.tokenizer, normalizer, on_the_fly=on_the_fly, spec_augment=None)
        cut_list = sorted(cuts, key=lambda c: c.duration)
        bs = self.decode.batch_size
        out = []
        for i in range(0, len(cut_list), bs):
            batch = ds[CutSet.from_cuts(cut_list[i:i + bs])]
            if not batch["ids"]:
                continue
            out.append(_Batch(batch["feats"].to(device), batch["feat_lens"].to(device), batch["ids"], batch["texts"],
                              batch["tokens"].to(device), batch["token_lens"].to(device)))
        return out, dict(ds.skipped)

    def key(self, config: Mapping[str, float]) -> tuple[float, ...]:
        """Cache key of ``config``: its sparsities in gene order (grid-snapped with a space)."""
        if self.space is not None:
            return tuple(self.space.encode(config))
        config = self.bank.check_config(config)
        return tuple(config.get(g, 0.0) for g in self.genes)

    def evaluate(self, config: Mapping[str, float], hyps: bool = False) -> dict[str, Any]:
        """The fitness of ``config`` and how it was made: ``{wer, words, substitutions, deletions,
        insertions, utterances, decode_s}`` for the WER (plus ``hyps: [{id, ref, hyp}]`` with
        ``hyps=True``, which decodes whatever the fitness and bypasses the cache), ``{loss_per_token,
        tokens, utterances, decode_s}`` for the loss."""
        key = self.key(config)
        if not hyps and key in self.cache:
            self.cache_hits += 1
            return dict(self.cache[key])
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        try:
            self.bank.apply(dict(zip(self.genes, key)))
            with torch.inference_mode():
                stats = self._decode() if hyps or self.fitness == "wer" else self._loss()
        finally:
            self.bank.clear()
            self.model.train(was_training)
        dt = time.perf_counter() - t0
        self.decode_s += dt
        self.evaluations += 1
        stats["decode_s"] = dt
        if self.score_key in stats:
            self.cache[key] = {k: v for k, v in stats.items() if k != "hyps"}
        return stats if hyps else dict(self.cache[key])

    def _decode(self) -> dict[str, Any]:
        rows = []
        for b in self.batches:
            out = decode_batch(self.model, b.feats, b.feat_lens, self.mode, self.decode)
            rows.extend({"id": i, "ref": r, "hyp": self.tokenizer.decode(h)} for i, r, h in zip(b.ids, b.texts, out))
        return {**word_error_rate([r["ref"] for r in rows], [r["hyp"] for r in rows]), "utterances": len(rows),
                "hyps": rows}

    def _loss(self) -> dict[str, Any]:
        m = self.model
        total, tokens, utts = 0.0, 0, 0
        for b in self.batches:
            out = m(b.feats, b.feat_lens, b.tokens, b.token_lens, mode=self.mode)
            j = m.joiner
            loss = rnnt_loss_from_joiner(j.project_enc(out.enc), j.project_pred(out.pred), j.out.effective_weight(),
                                         j.out.bias, b.tokens, out.enc_lens, b.token_lens, blank=m.config.blank_id,
                                         reduction="sum")
            total += float(loss)
            tokens += int(b.token_lens.sum())
            utts += len(b.ids)
        return {"loss_per_token": total / max(1, tokens), "tokens": tokens, "utterances": utts}

    def __call__(self, config: Mapping[str, float]) -> float:
        """The fitness of ``config`` (:attr:`score_key`); cached by :meth:`key`."""
        return float(self.evaluate(config)[self.score_key])

    def stats(self) -> dict[str, Any]:
        """Cost counters: evaluations, cache hits, decode seconds, feature-loading seconds, subset size."""
        return {"evaluations": self.evaluations, "cache_hits": self.cache_hits, "decode_s": self.decode_s,
                "prepare_s": self.prepare_s, "utterances": self.utterances, "skipped": self.skipped}
