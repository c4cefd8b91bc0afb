"""Pruned RNN-T loss: simple joint vs brute force, band guarantees, pruned == full on a covering band,
banded recursion vs the full recursion on a masked lattice, TransducerLoss wiring, a tiny model trains."""

from __future__ import annotations

import itertools

import pytest
import torch

from omnisparse.losses.pruned import (
    _BandAlphaBeta,
    band_joiner_logits,
    band_logprobs,
    prune_ranges,
    pruned_loss_scales,
    pruned_transducer_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    simple_logprobs,
)
from omnisparse.losses.lattice import _prepare_targets
from omnisparse.losses.recursion import rnnt_loss_from_logprobs
from omnisparse.losses.rnnt import rnnt_loss, rnnt_loss_from_joiner

from .test_rnnt import brute_force_batch, repad

F64 = torch.float64


def _simple_inputs(B, T, U, V, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    am = (torch.randn(B, T, V, generator=g, dtype=dtype) * 2).requires_grad_(True)
    lm = (torch.randn(B, U + 1, V, generator=g, dtype=dtype) * 2).requires_grad_(True)
    targets = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(1, T + 1, (B,), generator=g)
    ul = torch.randint(0, U + 1, (B,), generator=g)
    tl[0], ul[-1] = T, U
    return am, lm, repad(targets, ul), tl, ul


def _joiner_inputs(B, T, U, V, J, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, J, generator=g, dtype=dtype).requires_grad_(True)
    pred = torch.randn(B, U + 1, J, generator=g, dtype=dtype).requires_grad_(True)
    w = (torch.randn(V, J, generator=g, dtype=dtype) / J ** 0.5 * 3).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_(True)
    targets = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(1, T + 1, (B,), generator=g)
    ul = torch.randint(0, U + 1, (B,), generator=g)
    tl[0], ul[-1] = T, U
    return enc, pred, w, b, repad(targets, ul), tl, ul


def _brute_force_weights(blank_lp, label_lp, T, U):
    """-log sum over alignments of one utterance with arbitrary lattice log-weights (T_max, U_max+1)."""
    scores = []
    for label_steps in itertools.combinations(range(T + U - 1), U):
        label_steps = set(label_steps)
        t = u = 0
        s = blank_lp.new_zeros(())
        for k in range(T + U - 1):
            if k in label_steps:
                s = s + label_lp[t, u]
                u += 1
            else:
                s = s + blank_lp[t, u]
                t += 1
        scores.append(s + blank_lp[T - 1, U])
    return -torch.logsumexp(torch.stack(scores), 0)


# ------------------------------------------------------------------------------------------
# simple loss
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("blank", [0, 3])
def test_simple_loss_equals_brute_force(blank):
    am, lm, targets, tl, ul = _simple_inputs(3, 4, 3, 5, seed=1)
    targets = torch.where(targets == blank, (blank + 1) % 5, targets)
    loss, (occ_b, occ_l) = rnnt_loss_simple(am, lm, targets, tl, ul, blank=blank, reduction="none", dtype=F64)
    logits = am[:, :, None] + lm[:, None]
    ref = brute_force_batch(logits, targets, tl, ul, blank)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    g = torch.autograd.grad(loss.sum(), [am, lm])
    g_ref = torch.autograd.grad(ref.sum(), [am, lm])
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-10)
    # occupancies: one blank per frame on every path (valid frames), U_b labels in all
    for b in range(3):
        T, U = int(tl[b]), int(ul[b])
        torch.testing.assert_close(occ_b[b, :T].sum(-1), torch.ones(T, dtype=F64))
        torch.testing.assert_close(occ_l[b].sum(), torch.tensor(float(U), dtype=F64))


@pytest.mark.parametrize("lm_scale,am_scale", [(0.25, 0.0), (0.1, 0.2)])
def test_simple_smoothed_equals_brute_force(lm_scale, am_scale):
    """The smoothed lattice is the interpolation of three log-softmaxes; the loss sums it over alignments."""
    am, lm, targets, tl, ul = _simple_inputs(2, 3, 3, 6, seed=2)
    loss, _ = rnnt_loss_simple(am, lm, targets, tl, ul, lm_scale=lm_scale, am_scale=am_scale,
                               reduction="none", dtype=F64)
    tgt = _prepare_targets(targets, ul, 3, 0)
    full = (am[:, :, None] + lm[:, None]).log_softmax(-1)                    # (B,T,U+1,V)
    lm_only = lm.log_softmax(-1)[:, None].expand_as(full)
    valid = torch.arange(4)[None, :] <= ul[:, None]
    uni = lm.softmax(-1)[valid].mean(0)
    am_only = (am.softmax(-1) * uni).log()
    am_only = (am_only - am_only.logsumexp(-1, keepdim=True))[:, :, None].expand_as(full)
    mix = (1 - lm_scale - am_scale) * full + lm_scale * lm_only + am_scale * am_only
    for b in range(2):
        idx = tgt[b][None, :, None].expand(3, 3, 1)
        ref = _brute_force_weights(mix[b, ..., 0], mix[b, :, :3].gather(-1, idx)[..., 0], int(tl[b]), int(ul[b]))
        torch.testing.assert_close(loss[b], ref, rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    assert torch.isfinite(am.grad).all() and torch.isfinite(lm.grad).all()


def test_simple_logprobs_no_smoothing_is_log_softmax():
    am, lm, targets, tl, ul = _simple_inputs(2, 5, 4, 7, seed=3)
    tgt = _prepare_targets(targets, ul, 4, 0)
    blank_lp, label_lp = simple_logprobs(am, lm, tgt, ul)
    logp = (am[:, :, None] + lm[:, None]).log_softmax(-1)
    torch.testing.assert_close(blank_lp, logp[..., 0])
    torch.testing.assert_close(label_lp, logp[:, :, :4].gather(-1, tgt[:, None, :, None].expand(2, 5, 4, 1))[..., 0])


# ------------------------------------------------------------------------------------------
# band
# ------------------------------------------------------------------------------------------
def _check_band(s_begin, tl, ul, S, U):
    S = min(S, U + 1)
    assert s_begin.dtype == torch.long
    for b in range(s_begin.shape[0]):
        T, Ub = int(tl[b]), int(ul[b])
        s = s_begin[b, :T]
        assert int(s[0]) == 0
        d = s[1:] - s[:-1]
        assert (d >= 0).all() and (d <= S - 1).all(), s
        assert (s >= 0).all() and (s <= max(0, Ub + 1 - S)).all(), s
        assert int(s_begin[b].max()) + S - 1 <= U
        if Ub <= (S - 1) * (T - 1) + S - 1:  # a path through bands exists
            assert int(s[-1]) + S - 1 >= Ub, (s, Ub)


@pytest.mark.parametrize("S", [1, 2, 3, 5, 50])
@pytest.mark.parametrize("seed", range(4))
def test_band_monotone_in_range_and_reaches_the_end(S, seed):
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(5, 9, 12, 8, 6, seed=seed)
    am, lm = enc @ w.T + b, pred @ w.T
    _, (occ_b, occ_l) = rnnt_loss_simple(am, lm, targets, tl, ul, dtype=F64)
    s_begin = prune_ranges(occ_b, occ_l, tl, ul, S)
    _check_band(s_begin, tl, ul, S, 12)
    # arbitrary occupancies (the guarantees do not depend on them)
    g = torch.Generator().manual_seed(seed)
    s_rand = prune_ranges(torch.rand(occ_b.shape, generator=g), torch.rand(occ_l.shape, generator=g), tl, ul, S)
    _check_band(s_rand, tl, ul, S, 12)


def test_band_follows_a_sharp_alignment():
    """Occupancy of one path: the band holds it wherever it can."""
    T, U, S = 6, 8, 3
    path_u = [0, 2, 3, 5, 7, 8]  # labels reached by frame t (last blank at (5, 8))
    occ_b = torch.zeros(1, T, U + 1)
    occ_l = torch.zeros(1, T, U)
    prev = 0
    for t, u in enumerate(path_u):
        occ_l[0, t, prev:u] = 1.0
        occ_b[0, t, u] = 1.0
        prev = u
    s_begin = prune_ranges(occ_b, occ_l, torch.tensor([T]), torch.tensor([U]), S)
    for t, u in enumerate(path_u):
        lo = path_u[t - 1] if t else 0
        assert int(s_begin[0, t]) <= lo and u <= int(s_begin[0, t]) + S - 1, (t, s_begin)


# ------------------------------------------------------------------------------------------
# pruned loss
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-10), (torch.float32, 1e-4)])
def test_pruned_equals_full_when_the_band_covers_the_lattice(dtype, tol):
    U = 6
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(4, 10, U, 9, 7, seed=5, dtype=dtype)
    full = rnnt_loss_from_joiner(enc, pred, w, b, targets, tl, ul, reduction="none", dtype=dtype)
    for S in (U + 1, U + 4):
        out = pruned_transducer_loss(enc, pred, w, b, targets, tl, ul, prune_range=S, reduction="none", dtype=dtype)
        assert (out.s_begin == 0).all()
        torch.testing.assert_close(out.pruned, full, rtol=tol, atol=tol)
        g_full = torch.autograd.grad(full.sum(), [enc, pred, w, b], retain_graph=True)
        g_pr = torch.autograd.grad(out.pruned.sum(), [enc, pred, w, b])
        for a, r in zip(g_pr, g_full):
            torch.testing.assert_close(a, r, rtol=tol, atol=tol)


def _embed_band(blank_band, label_band, s_begin, U):
    """Banded log-probs -> full lattice ``(B,T,U+1)`` / ``(B,T,U)``, -1e4 (never used) outside the band."""
    B, T, S = blank_band.shape
    blank = blank_band.new_full((B, T, U + 1), -1e4)
    label = label_band.new_full((B, T, U), -1e4)
    for b in range(B):
        for t in range(T):
            s = int(s_begin[b, t])
            blank[b, t, s:s + S] = blank_band[b, t]
            label[b, t, s:s + S - 1] = label_band[b, t]
    return blank, label


@pytest.mark.parametrize("S", [2, 3, 4])
def test_band_recursion_equals_full_recursion_on_the_masked_lattice(S):
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(5, 8, 7, 6, 5, seed=7)
    am, lm = enc @ w.T + b, pred @ w.T
    _, (occ_b, occ_l) = rnnt_loss_simple(am, lm, targets, tl, ul, dtype=F64)
    s_begin = prune_ranges(occ_b, occ_l, tl, ul, S)
    g = torch.Generator().manual_seed(S)
    blank_band = (torch.randn(5, 8, S, generator=g, dtype=F64) - 1).requires_grad_(True)
    label_band = (torch.randn(5, 8, S - 1, generator=g, dtype=F64) - 1).requires_grad_(True)
    loss = rnnt_loss_pruned(blank_band, label_band, s_begin, tl, ul, reduction="none", dtype=F64)
    blank_f, label_f = _embed_band(blank_band, label_band, s_begin, 7)
    ref = rnnt_loss_from_logprobs(blank_f, label_f, tl, ul, reduction="none", dtype=F64, recursion="diagonal")
    finite = torch.isfinite(loss)
    assert finite.any()
    torch.testing.assert_close(loss[finite], ref[finite], rtol=1e-10, atol=1e-10)
    assert (ref[~finite] > 1e3).all()  # the end node is outside the band: no in-band path
    gl = torch.autograd.grad(loss[finite].sum(), [blank_band, label_band])
    gr = torch.autograd.grad(ref[finite].sum(), [blank_band, label_band])
    for a, r in zip(gl, gr):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)


def test_band_recursion_gradcheck():
    g = torch.Generator().manual_seed(0)
    B, T, S = 3, 6, 3
    blank = torch.randn(B, T, S, generator=g, dtype=F64, requires_grad=True)
    label = torch.randn(B, T, S - 1, generator=g, dtype=F64, requires_grad=True)
    s_begin = torch.tensor([[0, 0, 1, 2, 2, 3], [0, 2, 2, 2, 3, 3], [0, 0, 0, 0, 0, 0]])
    tl, ul = torch.tensor([6, 5, 4]), torch.tensor([5, 4, 1])
    assert torch.autograd.gradcheck(lambda a, c: _BandAlphaBeta.apply(a, c, s_begin, tl, ul), (blank, label))


def test_pruned_is_an_upper_bound_and_tightens_with_S():
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(4, 12, 10, 8, 6, seed=9)
    full = rnnt_loss_from_joiner(enc, pred, w, b, targets, tl, ul, reduction="none", dtype=F64)
    prev = None
    for S in (2, 4, 6, 11):
        out = pruned_transducer_loss(enc, pred, w, b, targets, tl, ul, prune_range=S, reduction="none", dtype=F64)
        assert (out.pruned >= full - 1e-9).all()
        prev = out.pruned
    torch.testing.assert_close(prev, full)


def test_band_logits_are_the_full_joiner_at_the_band():
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(2, 5, 6, 7, 4, seed=11)
    s_begin = torch.tensor([[0, 1, 1, 2, 4], [0, 0, 1, 3, 3]])
    band = band_joiner_logits(enc, pred, w, b, s_begin, 3)
    full = torch.tanh(enc[:, :, None] + pred[:, None]) @ w.T + b
    for bi in range(2):
        for t in range(5):
            s = int(s_begin[bi, t])
            torch.testing.assert_close(band[bi, t], full[bi, t, s:s + 3])
    tgt = _prepare_targets(targets, ul, 6, 0)
    blank_lp, label_lp = band_logprobs(band, tgt, s_begin)
    logp = full.log_softmax(-1)
    s = int(s_begin[1, 3])
    torch.testing.assert_close(blank_lp[1, 3], logp[1, 3, s:s + 3, 0])
    torch.testing.assert_close(label_lp[1, 3], logp[1, 3, s:s + 2].gather(-1, tgt[1, s:s + 2, None])[:, 0])


def test_empty_targets_and_single_frame():
    enc, pred, w, b, targets, _, _ = _joiner_inputs(3, 4, 0, 5, 4, seed=13)
    tl, ul = torch.tensor([4, 1, 2]), torch.tensor([0, 0, 0])
    out = pruned_transducer_loss(enc, pred, w, b, targets, tl, ul, reduction="none", dtype=F64)
    full = rnnt_loss_from_joiner(enc, pred, w, b, targets, tl, ul, reduction="none", dtype=F64)
    torch.testing.assert_close(out.pruned, full)


def test_warmup_scales():
    assert pruned_loss_scales(0, 0, 0.5) == (0.5, 1.0)
    assert pruned_loss_scales(0, 100, 0.5) == (1.0, 0.1)
    s, p = pruned_loss_scales(50, 100, 0.5)
    assert s == pytest.approx(0.75) and p == pytest.approx(0.55)
    assert pruned_loss_scales(100, 100, 0.5) == (0.5, 1.0)
    assert pruned_loss_scales(10 ** 6, 100, 0.3) == (0.3, 1.0)


def test_float32_matches_float64():
    enc, pred, w, b, targets, tl, ul = _joiner_inputs(4, 20, 12, 16, 8, seed=15)
    o64 = pruned_transducer_loss(enc, pred, w, b, targets, tl, ul, prune_range=4, reduction="none", dtype=F64)
    args = [x.detach().float() for x in (enc, pred, w, b)]
    o32 = pruned_transducer_loss(*args, targets, tl, ul, prune_range=4, reduction="none")
    same = (o32.s_begin == o64.s_begin).all(1)  # near-ties of the window masses may round either way
    assert same.sum() >= 2
    torch.testing.assert_close(o32.pruned.double()[same], o64.pruned[same], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(o32.simple.double(), o64.simple, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------
# TransducerLoss wiring and a training run
# ------------------------------------------------------------------------------------------
def _tiny_batches(cfg, n):
    from omnisparse.data.batching import AsrDataset, make_loader, make_sampler
    from omnisparse.data.features import FeatureNormalizer
    from omnisparse.data.layout import CorpusLayout
    from omnisparse.data.splits import load_split_cuts
    from omnisparse.data.tokenizer import Tokenizer

    layout = CorpusLayout(cfg.data.corpus_dir)
    tok = Tokenizer(layout.bpe_model(cfg.data.vocab_size))
    ds = AsrDataset(tok, FeatureNormalizer.from_file(layout.global_stats), seed=0)
    cuts = load_split_cuts(cfg, cfg.data.train_splits, cfg.data.max_cut_duration)
    sampler = make_sampler(cuts, 10.0, shuffle=True, num_buckets=2, seed=0)
    batches = []
    for batch in make_loader(ds, sampler):
        batches.append(batch)
        if len(batches) == n:
            break
    return batches, tok


@pytest.mark.parametrize("simple_proj", [False, True])
def test_transducer_loss_pruned_trains(tiny_config, simple_proj):
    from omnisparse.losses.transducer import TransducerLoss
    from omnisparse.models.transducer import Transducer

    cfg = tiny_config
    batches, tok = _tiny_batches(cfg, 3)
    cfg.model.vocab_size, cfg.model.blank_id = tok.vocab_size, tok.blank_id
    cfg.model.loss = "pruned"
    cfg.model.prune_range = 4
    cfg.model.simple_proj = simple_proj
    torch.manual_seed(0)
    model = Transducer.from_config(cfg.model)
    lf = TransducerLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        bt = batches[step % len(batches)]
        lf.step = step
        out = lf(bt["feats"], bt["feat_lens"], bt["tokens"], bt["token_lens"])
        assert torch.isfinite(out.loss) and out.simple > 0 and out.rnnt > 0
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.rnnt)
    n = len(batches)
    for i in range(n):  # each batch's last visit against its first (batches differ a lot in loss)
        assert losses[-n + i] < 0.7 * losses[i], losses
    # the pruned value bounds the full RNN-T loss of the same network from above
    model.eval()
    with torch.no_grad():
        bt = batches[0]
        out = lf(bt["feats"], bt["feat_lens"], bt["tokens"], bt["token_lens"])
        cfg.model.loss = "full"
        ref = lf(bt["feats"], bt["feat_lens"], bt["tokens"], bt["token_lens"])
    assert out.rnnt >= ref.rnnt - 1e-4 and ref.simple == 0.0


def test_simple_proj_heads_carry_the_simple_loss(tiny_config):
    """``model.simple_proj``: the simple loss is the linear joint of the model's own heads on the raw
    encoder / predictor outputs; its gradient reaches those heads and never the joiner's output layer."""
    from omnisparse.losses.transducer import TransducerLoss
    from omnisparse.models.transducer import Transducer

    cfg = tiny_config
    cfg.model.vocab_size = 11
    cfg.model.simple_proj = True
    assert Transducer.from_config(cfg.model).simple_joint is None  # loss=full: no heads
    cfg.model.loss = "pruned"
    torch.manual_seed(0)
    model = Transducer.from_config(cfg.model)
    assert model.simple_joint is not None
    lf = TransducerLoss(model)
    feats, feat_lens = torch.randn(2, 40, cfg.model.feat_dim), torch.tensor([40, 31])
    tokens, token_lens = torch.randint(1, 11, (2, 3)), torch.tensor([3, 2])
    out = lf(feats, feat_lens, tokens, token_lens)
    with torch.no_grad():
        o = model(feats, feat_lens, tokens, token_lens)
        am, lm = model.simple_joint(o.enc, o.pred)
        ref, _ = rnnt_loss_simple(am, lm, tokens, o.enc_lens, token_lens, lm_scale=cfg.model.simple_lm_scale)
    assert out.simple == pytest.approx(float(ref), rel=1e-5)
    o = model(feats, feat_lens, tokens, token_lens)
    j = model.joiner
    am, lm = model.simple_joint(o.enc, o.pred)
    res = pruned_transducer_loss(j.project_enc(o.enc), j.project_pred(o.pred), j.out.effective_weight(), j.out.bias,
                                 tokens, o.enc_lens, token_lens, am=am, lm=lm)
    heads = [model.simple_joint.am_proj.weight, model.simple_joint.lm_proj.weight]
    grads = torch.autograd.grad(res.simple, [*heads, j.out.weight], allow_unused=True)
    assert all(float(g.abs().sum()) > 0 for g in grads[:2])
    assert grads[2] is None or float(grads[2].abs().sum()) == 0.0


def test_transducer_loss_default_is_full_and_warmup_counts_forwards(tiny_config):
    from omnisparse.losses.transducer import TransducerLoss
    from omnisparse.models.transducer import Transducer

    cfg = tiny_config
    assert cfg.model.loss == "full"
    cfg.model.vocab_size = 11
    cfg.model.loss = "pruned"
    cfg.model.prune_warmup_steps = 4
    torch.manual_seed(0)
    model = Transducer.from_config(cfg.model)
    lf = TransducerLoss(model)
    feats = torch.randn(2, 40, cfg.model.feat_dim)
    feat_lens = torch.tensor([40, 31])
    tokens = torch.randint(1, 11, (2, 3))
    token_lens = torch.tensor([3, 2])
    seen = []
    for _ in range(6):
        out = lf(feats, feat_lens, tokens, token_lens)
        seen.append(float(out.loss.detach()) - 0.5 * out.simple - out.rnnt)  # 0 once warmed up
    assert abs(seen[0]) > 1e-3 and abs(seen[-1]) < 1e-4
    with pytest.raises(ValueError, match="full or pruned"):
        cfg.model.loss = "fast"
        lf(feats, feat_lens, tokens, token_lens)


def test_rnnt_loss_of_simple_logits_matches_rnnt_loss():
    """The simple joint is an ordinary RNN-T joint ``am[t] + lm[u]`` (float32 path, larger sizes)."""
    am, lm, targets, tl, ul = _simple_inputs(3, 15, 8, 20, seed=17, dtype=torch.float32)
    loss, _ = rnnt_loss_simple(am, lm, targets, tl, ul)
    ref = rnnt_loss(am[:, :, None] + lm[:, None], targets, tl, ul)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
