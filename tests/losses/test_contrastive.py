import math

import pytest
import torch

from omnisparse.losses.contrastive import (
    compute_mask_spans,
    contrastive_logits,
    contrastive_loss,
    sample_negatives,
)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of the runs of True in a 1-D bool tensor."""
    out, start = [], None
    for t, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = t
        elif not v and start is not None:
            out.append((start, t - start))
            start = None
    return out


# ------------------------------------------------------------------------------------------ loss
def test_logits_and_loss_by_hand():
    targets = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    pred = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    neg = torch.tensor([[1, 2], [0, 2], [0, 1]])
    logits = contrastive_logits(pred, targets, neg, logit_temp=0.1)
    r = 1 / math.sqrt(2)
    expect = torch.tensor([[1.0, 0.0, -1.0],  # cos(pred0, t0), cos(pred0, t1), cos(pred0, t2)
                           [r, r, -r],         # cos(pred1, t1), cos(pred1, t0), cos(pred1, t2)
                           [0.0, 0.0, -1.0]]) / 0.1  # cos(pred2, t2), t0, t1
    torch.testing.assert_close(logits, expect)
    manual = sum(-(row[0] - torch.logsumexp(row, 0)) for row in expect) / 3
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)


def test_distractor_equal_to_positive_is_ignored():
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # frames 0 and 1 have the same code
    logits = contrastive_logits(torch.tensor([[1.0, 1.0]] * 3), targets, torch.tensor([[1, 2], [0, 2], [0, 1]]))
    assert logits[0, 1] == float("-inf") and logits[1, 1] == float("-inf")
    assert torch.isfinite(logits[0, 2]) and torch.isfinite(logits[2]).all()


def test_contrastive_loss_equals_manual_computation_on_a_masked_batch():
    torch.manual_seed(0)
    B, T, D, K = 2, 6, 3, 4
    pred, targets = torch.randn(B, T, D), torch.randn(B, T, D)
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    out = contrastive_loss(pred, targets, mask, num_negatives=K, logit_temp=0.1, generator=_g(7))
    neg, has_neg = sample_negatives(mask, K, _g(7))  # the same draws
    frames = mask.nonzero().tolist()  # (b, t) of masked frame i
    losses = []
    for i, (b, t) in enumerate(frames):
        cands = [targets[b, t]] + [targets[frames[j][0], frames[j][1]] for j in neg[i].tolist()]
        z = torch.stack([torch.nn.functional.cosine_similarity(pred[b, t], c, dim=0) for c in cands]) / 0.1
        losses.append(torch.logsumexp(z, 0) - z[0])
    assert out.num_masked == 6 and has_neg.all()
    assert out.loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    correct = [float(out.logits[i, 0] > out.logits[i, 1:].max()) for i in range(6)]
    assert out.accuracy == pytest.approx(sum(correct) / 6)


def test_negatives_never_the_positive_and_from_the_same_utterance():
    lengths = torch.tensor([50, 23, 9, 37])
    mask = compute_mask_spans(lengths, 50, 0.65, 4, _g(1), same_count=False)
    frames = mask.nonzero()
    neg, has_neg = sample_negatives(mask, 100, _g(2))
    assert neg.shape == (len(frames), 100) and has_neg.all()
    utt = frames[:, 0]
    for i in range(len(frames)):
        assert (neg[i] != i).all()
        assert (utt[neg[i]] == utt[i]).all()
    # every other masked frame of the utterance can be drawn (uniform over m - 1 candidates)
    i = int((utt == 0).nonzero()[0])
    many, _ = sample_negatives(mask, 5000, _g(3))
    others = set((utt == 0).nonzero().flatten().tolist()) - {i}
    assert set(many[i].tolist()) == others


def test_single_masked_frame_has_no_distractors_and_zero_loss():
    mask = torch.tensor([[False, True, False], [True, True, False]])
    neg, has_neg = sample_negatives(mask, 3, _g())
    assert has_neg.tolist() == [False, True, True]
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 4, requires_grad=True)
    out = contrastive_loss(pred, torch.randn(2, 3, 4), mask, 3, 0.1, _g())
    assert torch.isfinite(out.loss)
    assert (out.logits[0, 1:] == float("-inf")).all()
    out.loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_no_masked_frames_gives_a_zero_loss_with_a_graph():
    pred = torch.randn(2, 3, 4, requires_grad=True)
    out = contrastive_loss(pred, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool), 5)
    assert out.loss.item() == 0.0 and out.num_masked == 0
    out.loss.backward()


# ------------------------------------------------------------------------------------------ masks
def test_one_utterance_mask_is_a_union_of_full_spans():
    for seed in range(20):
        mask = compute_mask_spans(torch.tensor([100]), 100, 0.65, 10, _g(seed))[0]
        runs = _runs(mask)
        # int(0.65 * 100 / 10 + u) = 6 or 7 spans of 10 frames starting in [0, 90): runs of >= 10 frames
        assert 1 <= len(runs) <= 7
        assert all(n >= 10 for _, n in runs) and all(s + n <= 100 for s, n in runs)
        assert 10 <= int(mask.sum()) <= 70


def test_masked_fraction_matches_fairseq():
    # 6.5 % of the frames start a span of 10: 1 - (1 - 0.065) ** 10 ~ 49 % masked (long utterances)
    frac = torch.stack([compute_mask_spans(torch.tensor([2000]), 2000, 0.65, 10, _g(s)).float().mean()
                        for s in range(10)]).mean()
    assert 0.45 < float(frac) < 0.53


def test_batch_masks_same_count_inside_lengths_and_deterministic():
    lengths = torch.tensor([100, 60, 31, 80])
    mask = compute_mask_spans(lengths, 100, 0.65, 10, _g(5))
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] > 0
    pos = torch.arange(100)[None, :]
    assert not (mask & (pos >= lengths[:, None])).any()
    assert torch.equal(mask, compute_mask_spans(lengths, 100, 0.65, 10, _g(5)))
    assert not torch.equal(mask, compute_mask_spans(lengths, 100, 0.65, 10, _g(6)))
    free = compute_mask_spans(lengths, 100, 0.65, 10, _g(5), same_count=False)
    assert free.sum(1).min() == counts[0]  # the shortest keeps all its frames; the others are thinned to it


def test_short_utterances():
    m = compute_mask_spans(torch.tensor([0, 1]), 4, 0.65, 10, _g())
    assert not m.any()
    m = compute_mask_spans(torch.tensor([5]), 5, 0.65, 10, _g())  # min_masks = 2 spans, range shrinks
    assert 1 <= int(m.sum()) <= 5
    with pytest.raises(ValueError):
        compute_mask_spans(torch.tensor([5]), 5, 0.65, 0, _g())


def test_frames_whose_distractors_all_share_the_positive_code_are_counted_trivial():
    from omnisparse.losses.contrastive import contrastive_loss

    torch.manual_seed(0)
    mask = torch.ones(1, 6, dtype=torch.bool)
    pred = torch.randn(1, 6, 4)
    same = torch.ones(1, 6, 4)  # a collapsed codebook: every frame quantized alike
    out = contrastive_loss(pred, same, mask, num_negatives=3)
    assert out.trivial == 1.0 and out.accuracy == 1.0 and out.hard_accuracy == 0.0  # "right" without learning
    distinct = torch.randn(1, 6, 4)
    out = contrastive_loss(distinct, distinct, mask, num_negatives=3)  # the context predicts its own targets
    assert out.trivial == 0.0 and out.hard_accuracy == out.accuracy == 1.0
