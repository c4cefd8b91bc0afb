"""wav2vec 2.0 masking and contrastive loss (fairseq ``compute_mask_indices`` and ``Wav2Vec2Model``).

Span masking (:func:`compute_mask_spans`), per utterance of ``n`` valid frames (fairseq's "static"
masks, ``no_overlap=False``, ``min_masks=2`` as its ``apply_mask``, ``require_same_masks=True``):

* ``num = max(min_masks, int(mask_prob * n / mask_length + u))``, ``u ~ U[0, 1)``: span starts; with
  fairseq's ``mask_prob = 0.65`` and ``mask_length = 10`` that is 6.5 % of the frames as starts (the
  wav2vec 2.0 paper's ``p = 0.065``) and, spans overlapping, about 49 % of the frames masked;
* ``num`` distinct starts drawn uniformly from ``[0, n - mask_length)`` (the range grows to
  ``num + 1`` starts for short utterances), each masking ``mask_length`` frames (cut at ``n``);
* then every utterance of the batch keeps a random subset of its masked frames of the size of the
  smallest count in the batch: all utterances have the same number of masked frames.

Everything random comes from an explicit ``torch.Generator`` (deterministic, resumable).

Contrastive loss (:func:`contrastive_loss`), for each masked frame ``t`` with context output ``c_t``
and quantized target ``q_t``: ``K`` distractors are drawn uniformly, with replacement, from the
OTHER masked frames of the same utterance (never ``t`` itself; fairseq's ``sample_negatives``:
draw in ``[0, m - 1)`` and shift indices ``>= t`` up by one), and::

    logits = [cos(c_t, q_t), cos(c_t, q_d1), ..., cos(c_t, q_dK)] / logit_temp
    loss_t = -log_softmax(logits)[0]

A distractor whose target equals the positive's (same code in every group) gets logit ``-inf``
(fairseq's ``neg_is_pos``); an utterance with a single masked frame has no distractors (its loss is
0). The loss is the mean over masked frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_mask_spans(lengths: Tensor, max_len: int, mask_prob: float = 0.65, mask_length: int = 10,
                       generator: torch.Generator | None = None, min_masks: int = 2,
                       same_count: bool = True) -> Tensor:
    """Span mask ``(B, max_len)`` bool (True = masked) for utterances of ``lengths (B,)`` valid frames.

    See the module docstring. Masked frames are always ``< lengths[b]``; with ``same_count`` every row
    has the same number of True (the batch minimum). Utterances of 0 or 1 frame get no mask."""
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    lens = [min(int(n), max_len) for n in lengths.tolist()]
    chosen: list[Tensor] = []
    for n in lens:
        u = float(torch.rand((), generator=generator))
        num = max(min_masks, int(mask_prob * n / mask_length + u))
        num = min(num, max(n - 1, 0))  # fewer starts than frames (fairseq: sz - num - 1 >= 0)
        if num == 0:
            chosen.append(torch.zeros(0, dtype=torch.long))
            continue
        span = mask_length if n - mask_length > num else n - num - 1
        starts = torch.randperm(n - span, generator=generator)[:num]  # distinct starts
        idx = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
        chosen.append(torch.unique(idx[idx < n]))
    mask = torch.zeros(len(lens), max_len, dtype=torch.bool)
    keep = min((len(c) for c in chosen), default=0)
    for b, idx in enumerate(chosen):
        if same_count and len(idx) > keep:
            idx = idx[torch.randperm(len(idx), generator=generator)[:keep]]
        mask[b, idx] = True
    return mask


def sample_negatives(mask: Tensor, num_negatives: int, generator: torch.Generator | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Distractor indices for every masked frame of ``mask (B, T)``.

    Masked frames are numbered ``0 .. N-1`` in ``mask.nonzero()`` order (utterance, then time).
    Returns ``(neg (N, K) int64, has_neg (N,) bool)``: ``neg[i]`` are ``K`` indices (with
    replacement) of masked frames of the same utterance as ``i``, never ``i`` itself; ``has_neg`` is
    False where the utterance has a single masked frame (then ``neg[i]`` is meaningless)."""
    counts = mask.sum(1).cpu()  # (B,)
    N = int(counts.sum())
    utt = torch.repeat_interleave(torch.arange(mask.size(0)), counts)  # (N,)
    offsets = torch.cumsum(counts, 0) - counts  # first masked frame of each utterance
    own = torch.arange(N) - offsets[utt]  # position inside its utterance
    m = counts[utt]  # masked frames of its utterance
    r = (torch.rand(N, num_negatives, generator=generator) * (m - 1).clamp(min=0)[:, None]).long()
    r = torch.minimum(r, (m - 2).clamp(min=0)[:, None])  # guard against rand() * (m-1) rounding up
    r = r + (r >= own[:, None]).long()  # skip the positive
    neg = offsets[utt][:, None] + r
    has_neg = m >= 2
    return neg.masked_fill(~has_neg[:, None], 0).to(mask.device), has_neg.to(mask.device)


def contrastive_logits(pred: Tensor, targets: Tensor, neg: Tensor, logit_temp: float = 0.1,
                       has_neg: Tensor | None = None) -> Tensor:
    """``pred (N, D)`` context outputs, ``targets (N, D)`` quantized targets of the same frames,
    ``neg (N, K)`` distractor rows of ``targets`` -> logits ``(N, 1 + K)`` (column 0 = positive):
    cosine similarity / ``logit_temp``; distractors equal to the positive, and all distractors of
    rows with ``has_neg`` False, are ``-inf``."""
    negs = targets[neg]  # (N, K, D)
    cand = torch.cat([targets[:, None, :], negs], dim=1)  # (N, 1 + K, D)
    logits = F.cosine_similarity(pred[:, None, :].float(), cand.float(), dim=-1) / logit_temp
    drop = (negs == targets[:, None, :]).all(-1)  # (N, K)
    if has_neg is not None:
        drop = drop | ~has_neg[:, None]
    return torch.cat([logits[:, :1], logits[:, 1:].masked_fill(drop, float("-inf"))], dim=1)


@dataclass
class ContrastiveOutput:
    """``loss`` mean over masked frames (scalar); ``logits (N, 1 + K)``; ``accuracy``: fraction of
    masked frames whose positive scores strictly above every distractor; ``num_masked`` = N;
    ``trivial``: fraction of masked frames none of whose distractors survives (every one quantized to
    the positive's code): they count as correct whatever the context network says, so a collapsing
    codebook raises ``accuracy`` without any learning; ``hard_accuracy``: the accuracy of the others."""

    loss: Tensor
    logits: Tensor
    accuracy: float
    num_masked: int
    trivial: float = 0.0
    hard_accuracy: float = 0.0


def contrastive_loss(pred: Tensor, targets: Tensor, mask: Tensor, num_negatives: int = 100,
                     logit_temp: float = 0.1, generator: torch.Generator | None = None) -> ContrastiveOutput:
    """InfoNCE over the masked frames: ``pred (B, T, D)`` context network outputs (projected),
    ``targets (B, T, D)`` quantized targets, ``mask (B, T)`` bool masked frames."""
    p, q = pred[mask], targets[mask]  # (N, D)
    if p.size(0) == 0:
        zero = pred.sum() * 0.0 + targets.sum() * 0.0
        return ContrastiveOutput(zero, pred.new_zeros(0, num_negatives + 1), 0.0, 0, 0.0, 0.0)
    neg, has_neg = sample_negatives(mask, num_negatives, generator)
    logits = contrastive_logits(p, q, neg, logit_temp, has_neg)
    loss = F.cross_entropy(logits, torch.zeros(logits.size(0), dtype=torch.long, device=logits.device))
    with torch.no_grad():
        best_neg = logits[:, 1:].max(1).values if num_negatives > 0 else logits[:, 0] - 1
        right = logits[:, 0] > best_neg
        trivial = torch.isinf(best_neg) if num_negatives > 0 else torch.zeros_like(right)
        hard = ~trivial
        acc = float(right.float().mean())
        hard_acc = float(right[hard].float().mean()) if bool(hard.any()) else 0.0
    return ContrastiveOutput(loss, logits, acc, int(p.size(0)), float(trivial.float().mean()), hard_acc)
