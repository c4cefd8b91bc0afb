"""Magnitude masks: unit scores, nested rankings, exact kept counts, MaskBank caching and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from omnisparse.models.layers import PrunableLinear
from omnisparse.sparsity.masks import (
    GRANULARITIES,
    MaskBank,
    MaskSpec,
    MatrixRanking,
    kept_count,
    kept_weights,
    magnitude_pruned,
    magnitude_pruned_copy,
    n_units,
    unit_scores,
)
from omnisparse.testing.dummies import random_batch as batch, tiny_model

GRID = [round(0.1 * i, 1) for i in range(10)]


# ---------------------------------------------------------------------- spec and scores
def test_mask_spec_validation():
    assert MaskSpec() == MaskSpec("unstructured", 8)
    for g in GRANULARITIES:
        MaskSpec(g, 3)
    with pytest.raises(ValueError, match="granularity"):
        MaskSpec("column")
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="block"):
            MaskSpec("block", bad)


def test_unit_scores_shapes_and_values():
    w = torch.arange(-30, 35, dtype=torch.float32).reshape(5, 13)[:, :13] / 7  # (5, 13)
    torch.testing.assert_close(unit_scores(w, MaskSpec("unstructured")), w.abs())
    torch.testing.assert_close(unit_scores(w, MaskSpec("row")), w.norm(dim=1))
    s = unit_scores(w, MaskSpec("block", 4))
    assert s.shape == (2, 4)  # ceil(5/4), ceil(13/4)
    for r in range(2):
        for c in range(4):
            tile = w[4 * r:4 * r + 4, 4 * c:4 * c + 4]  # edge tiles are smaller
            torch.testing.assert_close(s[r, c], tile.norm())
    with pytest.raises(ValueError):
        unit_scores(torch.ones(3), MaskSpec())


def test_kept_count_formula():
    assert kept_count(10, 0.0) == 10 and kept_count(10, 0.7) == 3 and kept_count(10, 0.9) == 1
    assert kept_count(128, 0.5) == 64 and kept_count(5, 0.5) == round(2.5) == 2
    for bad in (1.0, -0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError):
            kept_count(10, bad)
    assert kept_weights((16, 8), MaskSpec("block", 4), 0.5) == 64
    assert kept_weights((16, 8), MaskSpec("row"), 0.25) == 12 * 8


# ---------------------------------------------------------------------- rankings
SHAPES = [(16, 8), (13, 10), (7, 30)]
SPECS = [MaskSpec("unstructured"), MaskSpec("block", 4), MaskSpec("block", 3), MaskSpec("row")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.granularity}{s.block}")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_exact_kept_count_nesting_and_shape(spec, shape):
    torch.manual_seed(sum(shape))
    w = torch.randn(*shape)
    r = MatrixRanking(w, spec)
    assert r.n_units == n_units(shape, spec)
    assert sorted(r.rank.flatten().tolist()) == list(range(r.n_units))
    prev = None
    for s in GRID + [0.33, 0.95]:
        k = round((1 - s) * r.n_units)
        assert r.kept_units(s) == k
        units = r.unit_mask(s)
        assert int(units.sum()) == k
        m = r.mask(s)
        assert m.dtype == w.dtype
        if spec.granularity == "row":
            assert m.shape == (shape[0], 1)
        else:
            assert m.shape == shape
        dense_m = m.expand(shape)
        if spec.granularity == "block":  # tiles expanded: constant inside every tile, edges cropped
            b = spec.block
            for (i, j) in [(0, 0), (shape[0] - 1, shape[1] - 1), (shape[0] // 2, shape[1] - 1)]:
                assert dense_m[i, j] == units[i // b, j // b]
            expected = sum(min(b, shape[0] - i * b) * min(b, shape[1] - j * b) for i, j in units.nonzero().tolist())
            assert int(dense_m.sum()) == expected
        else:
            assert int(dense_m.sum()) == k * (1 if spec.granularity == "unstructured" else shape[1])
        # the kept units are the top-k scores
        scores = unit_scores(w, spec).flatten()
        if 0 < k < r.n_units:
            assert scores[units.flatten()].min() >= scores[~units.flatten()].max()
        # nested: everything kept at a higher sparsity is kept at every lower one
        if prev is not None and s > prev[0]:
            assert bool((dense_m <= prev[1]).all())
        prev = (s, dense_m)
    assert bool((r.mask(0.0) == 1).all())


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_nesting_over_all_pairs(granularity):
    torch.manual_seed(3)
    w = torch.randn(11, 9)
    r = MatrixRanking(w, MaskSpec(granularity, 4))
    masks = {s: r.mask(s).expand(11, 9) for s in GRID}
    for s1 in GRID:
        for s2 in GRID:
            if s2 > s1:
                assert bool((masks[s2] <= masks[s1]).all()), (s1, s2)


def test_ties_are_broken_by_index_and_dtype_follows_weight():
    w = torch.ones(4, 5, dtype=torch.float64)
    r = MatrixRanking(w, MaskSpec("unstructured"))
    assert r.rank.flatten().tolist() == list(range(20))
    m = r.mask(0.5)
    assert m.dtype == torch.float64
    assert m.flatten().tolist() == [1.0] * 10 + [0.0] * 10
    rows = MatrixRanking(w, MaskSpec("row")).mask(0.5)
    assert rows.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    # NaN weights rank last
    w2 = torch.randn(3, 3)
    w2[0, 0] = float("nan")
    assert MatrixRanking(w2, MaskSpec("unstructured")).rank[0, 0] == 8


# ---------------------------------------------------------------------- MaskBank
def test_bank_genes_validation_and_refresh_required():
    model = tiny_model()
    bank = MaskBank(model, MaskSpec())
    assert bank.genes == list(model.prunable_groups())
    with pytest.raises(ValueError, match="unknown gene"):
        MaskBank(model, MaskSpec(), genes=["enc.0.attn", "enc.9.ffn"])
    with pytest.raises(RuntimeError, match="refresh"):
        bank.apply({"enc.0.attn": 0.5})
    bank = MaskBank(model, MaskSpec(), genes=["enc.0.attn", "enc.1.ffn"])
    bank.refresh()
    with pytest.raises(ValueError, match="does not prune"):
        bank.apply({"joiner": 0.5})
    with pytest.raises(ValueError):
        bank.apply({"enc.0.attn": 1.0})


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_apply_sets_exact_masks_and_missing_genes_are_dense(granularity):
    model = tiny_model(1)
    spec = MaskSpec(granularity, 8)
    bank = MaskBank(model, spec, genes=["enc.0.attn", "enc.0.ffn", "enc.1.conv", "joiner"])
    bank.refresh()
    config = {"enc.0.attn": 0.5, "enc.0.ffn": 0.0, "enc.1.conv": 0.9}
    bank.apply(config)
    groups = model.prunable_groups()
    for gene, members in groups.items():
        for name, m in members:
            s = config.get(gene, 0.0) if gene in bank.genes else None
            if not s:
                assert m.mask is None, name
                continue
            r = MatrixRanking(m.weight, spec)
            torch.testing.assert_close(m.mask, r.mask(s))
            kept = int(r.unit_mask(s).sum())
            assert kept == round((1 - s) * r.n_units)
    dens = bank.densities()
    assert set(dens) == set(bank.modules)
    assert dens["encoder.layers.0.ffn.w1"] == 1.0
    assert dens["encoder.layers.0.attn.q"] < 0.75
    # another config: genes left out become dense again
    bank.apply({"enc.0.ffn": 0.3})
    assert model.encoder.layers[0].attn.q.mask is None and model.encoder.layers[0].ffn.w1.mask is not None
    bank.clear()
    assert all(m.mask is None for m in bank.modules.values())


def test_apply_caches_until_refresh():
    model = tiny_model(2)
    bank = MaskBank(model, MaskSpec("block", 8))
    bank.refresh()
    assert bank.refresh_count == 1
    q = model.encoder.layers[0].attn.q
    bank.apply({"enc.0.attn": 0.5})
    ptr = q.mask.data_ptr()
    bank.apply({"enc.0.attn": 0.3})
    bank.apply({"enc.0.attn": 0.5})
    assert q.mask.data_ptr() == ptr  # the cached tensor, not a recomputation
    assert len(bank._cache) == 2 * 4  # two sparsities x four attention matrices
    with torch.no_grad():  # weights change: the cache is kept until the next refresh
        q.weight.mul_(-2.0).add_(torch.randn_like(q.weight))
    bank.apply({"enc.0.attn": 0.5})
    assert q.mask.data_ptr() == ptr
    bank.refresh()
    assert bank.refresh_count == 2 and not bank._cache
    bank.apply({"enc.0.attn": 0.5})
    assert q.mask.data_ptr() != ptr
    torch.testing.assert_close(q.mask, MatrixRanking(q.weight, bank.spec).mask(0.5))


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_gradients_are_zero_on_pruned_weights(granularity):
    model = tiny_model(3).train()
    bank = MaskBank(model, MaskSpec(granularity, 8))
    bank.refresh()
    config = {g: 0.6 for g in bank.genes}
    bank.apply(config)
    feats, feat_lens, tokens, token_lens = batch()
    out = model(feats, feat_lens, tokens, token_lens)
    model.join(out.enc, out.pred).logsumexp(-1).sum().backward()
    for name, m in bank.modules.items():
        pruned = m.mask.expand_as(m.weight) == 0
        assert pruned.any(), name
        assert bool((m.weight.grad[pruned] == 0).all()), name
        assert m.weight.grad[~pruned].abs().sum() > 0, name


def test_masked_forward_equals_zeroed_weights():
    model = tiny_model(4)
    bank = MaskBank(model, MaskSpec("row"))
    bank.refresh()
    bank.apply({g: 0.5 for g in bank.genes})
    feats, feat_lens, tokens, token_lens = batch()
    with torch.no_grad():
        masked = model(feats, feat_lens, tokens, token_lens).enc
        for m in bank.modules.values():
            m.weight.mul_(m.mask)
        bank.clear()
        zeroed = model(feats, feat_lens, tokens, token_lens).enc
    torch.testing.assert_close(masked, zeroed)


def test_magnitude_pruned_copy_equals_masks_of_the_bank_and_leaves_model_alone():
    model = tiny_model(4)
    spec = MaskSpec("unstructured")
    bank = MaskBank(model, spec)
    bank.refresh()
    config = {bank.genes[0]: 0.5, bank.genes[-1]: 0.3}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = magnitude_pruned_copy(model, config, spec)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    bank.apply(config)
    masked = dict(model.named_modules())
    for name, m in pruned.named_modules():
        if isinstance(m, PrunableLinear):
            ref = masked[name].weight * (masked[name].mask if masked[name].mask is not None else 1.0)
            torch.testing.assert_close(m.weight, ref.detach())


def test_magnitude_pruned_prunes_in_place_as_the_copy_and_restores():
    model = tiny_model(4)
    spec = MaskSpec("row")
    genes = list(model.prunable_groups())
    config = {genes[0]: 0.5, genes[-1]: 0.75}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = magnitude_pruned_copy(model, config, spec).state_dict()
    with magnitude_pruned(model, config, spec) as pruned:
        assert pruned is model
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, copied[k], rtol=0, atol=0)
        assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_ranking_on_weight_device_and_dtype():
    lin = PrunableLinear(6, 4).double()
    r = MatrixRanking(lin.weight, MaskSpec("block", 2))
    assert r.rank.device == lin.weight.device and r.mask(0.5).dtype == torch.float64
    assert r.rank.shape == (2, 3) and math.prod(r.rank.shape) == r.n_units
