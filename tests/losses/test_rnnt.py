"""RNN-T loss: brute force over alignments, warprnnt-numba, fused joiner path, edge cases."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnisparse.losses.lattice import joint_logprobs
from omnisparse.losses.recursion import rnnt_loss_from_logprobs
from omnisparse.losses.rnnt import fused_chunk_bytes, joint_bytes, rnnt_loss, rnnt_loss_from_joiner

F64 = torch.float64
RECURSIONS = ["alphabeta", "time", "diagonal"]


# ------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------
def brute_force_nll(logits: torch.Tensor, targets: torch.Tensor, T: int, U: int, blank: int = 0) -> torch.Tensor:
    """-log sum over every alignment of one utterance; logits (T_max, U_max+1, V)."""
    logp = logits.log_softmax(-1)
    scores = []
    # an alignment = positions of the U label emissions among the first T+U-1 steps; last step = blank
    for label_steps in itertools.combinations(range(T + U - 1), U):
        label_steps = set(label_steps)
        t = u = 0
        s = logits.new_zeros(())
        for k in range(T + U - 1):
            if k in label_steps:
                s = s + logp[t, u, targets[u]]
                u += 1
            else:
                s = s + logp[t, u, blank]
                t += 1
        scores.append(s + logp[T - 1, U, blank])
    return -torch.logsumexp(torch.stack(scores), 0)


def brute_force_batch(logits, targets, logit_lengths, target_lengths, blank=0):
    return torch.stack([brute_force_nll(logits[b], targets[b], int(logit_lengths[b]), int(target_lengths[b]), blank)
                        for b in range(logits.shape[0])])


def random_batch(B, T, U, V, dtype=torch.float32, seed=0, blank=0, full=True, tl=None, ul=None):
    """Random logits/targets with variable lengths (or the given ones); with ``full`` the maxima
    equal T and U. Targets are padded with junk past each length."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=dtype) * 2
    labels = [v for v in range(V) if v != blank]
    targets = torch.tensor(labels)[torch.randint(0, len(labels), (B, U), generator=g)]
    tl_r = torch.randint(1, T + 1, (B,), generator=g)
    ul_r = torch.randint(0, U + 1, (B,), generator=g)
    if full:
        tl_r[0], ul_r[-1] = T, U
    tl = tl_r if tl is None else torch.as_tensor(tl)
    ul = ul_r if ul is None else torch.as_tensor(ul)
    return logits, repad(targets, ul), tl, ul


def repad(targets, target_lengths, value=-7):
    """Junk past each target length: it must never be read."""
    targets = targets.clone()
    for b in range(targets.shape[0]):
        targets[b, int(target_lengths[b]):] = value
    return targets


# ------------------------------------------------------------------------------------------
# brute force
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recursion", RECURSIONS)
@pytest.mark.parametrize("blank", [0, 3])
def test_brute_force_loss_and_grad_float64(recursion, blank):
    B, T, U, V = 2, 4, 3, 4
    logits, targets, tl, ul = random_batch(B, T, U, V, dtype=F64, seed=1, blank=blank, tl=[4, 3], ul=[2, 3])
    logits.requires_grad_(True)
    loss = rnnt_loss(logits, targets, tl, ul, blank=blank, reduction="none", dtype=F64, recursion=recursion)
    ref = brute_force_batch(logits, targets, tl, ul, blank)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)
    g, = torch.autograd.grad(loss.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("recursion", RECURSIONS)
def test_gradcheck_plain(recursion):
    logits, targets, tl, ul = random_batch(2, 3, 2, 4, dtype=F64, seed=2)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="none", dtype=F64, recursion=recursion), (logits,))


def test_recursions_agree_float32():
    logits, targets, tl, ul = random_batch(5, 17, 6, 9, seed=3)
    out = {}
    for rec in RECURSIONS:
        x = logits.clone().requires_grad_(True)
        loss = rnnt_loss(x, targets, tl, ul, reduction="none", recursion=rec)
        loss.sum().backward()
        out[rec] = (loss.detach(), x.grad)
    for rec in RECURSIONS[1:]:
        torch.testing.assert_close(out[rec][0], out["alphabeta"][0], atol=1e-4, rtol=1e-6)
        torch.testing.assert_close(out[rec][1], out["alphabeta"][1], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# warprnnt-numba
# ------------------------------------------------------------------------------------------
def _warp_loss(logits, targets, tl, ul, blank, reduction):
    """warprnnt-numba 0.4.1 CPU: takes LOGITS (applies log_softmax itself on CPU), int32 labels and
    lengths, needs T == max(tl) and U+1 == max(ul)+1, 'mean' = sum / B."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from warprnnt_numba.rnnt_loss.rnnt_pytorch import RNNTLossNumba
    fn = RNNTLossNumba(blank=blank, reduction=reduction, fastemit_lambda=0.0, clamp=-1)
    tgt = torch.where(torch.arange(targets.shape[1])[None] < ul[:, None], targets, 0)
    return fn(logits, tgt.to(torch.int32).contiguous(), tl.to(torch.int32), ul.to(torch.int32))


@pytest.mark.parametrize("blank", [0, 5])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_against_warprnnt_numba(blank, reduction):
    B, T, U, V = 3, 9, 4, 6
    logits, targets, tl, ul = random_batch(B, T, U, V, seed=4 + blank, blank=blank)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    ours = rnnt_loss(x1, targets, tl, ul, blank=blank, reduction=reduction)
    ref = _warp_loss(x2, targets, tl, ul, blank, reduction)
    torch.testing.assert_close(ours.reshape(-1), ref.reshape(-1), atol=1e-4, rtol=1e-5)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------
# fused joiner path
# ------------------------------------------------------------------------------------------
def _joiner_inputs(B, T, U, V, J, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, J, generator=g, dtype=dtype).requires_grad_(True)
    pred = torch.randn(B, U + 1, J, generator=g, dtype=dtype).requires_grad_(True)
    w = (torch.randn(V, J, generator=g, dtype=dtype) / J ** 0.5 * 3).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_(True) if bias else None
    return enc, pred, w, b


def _plain_joiner_loss(enc, pred, w, b, *args, **kw):
    z = torch.tanh(enc[:, :, None, :] + pred[:, None, :, :]) @ w.t()
    if b is not None:
        z = z + b
    return rnnt_loss(z, *args, **kw)


@pytest.mark.parametrize("dtype,rtol", [(F64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("chunk_frames", [1, 3, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_matches_plain(dtype, rtol, chunk_frames, bias):
    """Loss and all four gradients to 1e-5 absolute (float32: plus 1e-4 relative, for the
    summation order of the chunked weight-gradient matmuls)."""
    B, T, U, V, J = 3, 7, 4, 11, 5
    _, targets, tl, ul = random_batch(B, T, U, V, seed=5)
    enc, pred, w, b = _joiner_inputs(B, T, U, V, J, dtype, seed=6, bias=bias)
    params = [p for p in (enc, pred, w, b) if p is not None]
    kw = dict(reduction="sum", dtype=dtype)
    l1 = rnnt_loss_from_joiner(enc, pred, w, b, targets, tl, ul, chunk_frames=chunk_frames, **kw)
    g1 = torch.autograd.grad(l1, params)
    l2 = _plain_joiner_loss(enc, pred, w, b, targets, tl, ul, **kw)
    g2 = torch.autograd.grad(l2, params)
    atol = 1e-10 if dtype == F64 else 1e-5
    torch.testing.assert_close(l1, l2, atol=atol, rtol=rtol)
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, atol=atol, rtol=rtol)


def test_fused_gradcheck_float64():
    B, T, U, V, J = 2, 4, 2, 5, 3
    _, targets, tl, ul = random_batch(B, T, U, V, seed=7)
    enc, pred, w, b = _joiner_inputs(B, T, U, V, J, F64, seed=8)
    assert torch.autograd.gradcheck(
        lambda e, p, ww, bb: rnnt_loss_from_joiner(e, p, ww, bb, targets, tl, ul, reduction="none",
                                                   dtype=F64, chunk_frames=3),
        (enc, pred, w, b))


def test_fused_masked_weight_gradients_flow():
    B, T, U, V, J = 2, 5, 3, 7, 6
    _, targets, tl, ul = random_batch(B, T, U, V, seed=9)
    enc, pred, w, b = _joiner_inputs(B, T, U, V, J, F64, seed=10)
    mask = (torch.rand(V, J, generator=torch.Generator().manual_seed(0)) > 0.5).to(F64)
    l1 = rnnt_loss_from_joiner(enc, pred, w * mask, b, targets, tl, ul, dtype=F64)
    g1, = torch.autograd.grad(l1, w)
    l2 = _plain_joiner_loss(enc, pred, w * mask, b, targets, tl, ul, dtype=F64)
    g2, = torch.autograd.grad(l2, w)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-10)
    assert torch.all(g1[mask == 0] == 0)


# ------------------------------------------------------------------------------------------
# reductions, dtypes, edge cases
# ------------------------------------------------------------------------------------------
def test_reductions():
    logits, targets, tl, ul = random_batch(4, 6, 3, 5, seed=11)
    none = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert none.shape == (4,)
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul, reduction="sum"), none.sum())
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul, reduction="mean"), none.mean())
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul), none.mean())  # default = batch mean
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, ul, reduction="avg")


@pytest.mark.parametrize("recursion", RECURSIONS)
def test_float64_recursion_close_to_float32(recursion):
    logits, targets, tl, ul = random_batch(3, 30, 8, 12, seed=12)
    l32 = rnnt_loss(logits, targets, tl, ul, reduction="none", recursion=recursion)
    l64 = rnnt_loss(logits, targets, tl, ul, reduction="none", dtype=F64, recursion=recursion)
    assert l32.dtype == torch.float32 and l64.dtype == F64
    ref = rnnt_loss(logits.double(), targets, tl, ul, reduction="none", dtype=F64, recursion="diagonal")
    torch.testing.assert_close(l64, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(l32.double(), ref, atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("recursion", RECURSIONS)
def test_empty_targets_and_single_frame(recursion):
    logits, _, _, _ = random_batch(2, 5, 0, 4, dtype=F64, seed=13)
    targets = torch.zeros(2, 0, dtype=torch.long)
    tl, ul = torch.tensor([5, 1]), torch.tensor([0, 0])
    loss = rnnt_loss(logits, targets, tl, ul, reduction="none", dtype=F64, recursion=recursion)
    logp = logits.log_softmax(-1)[..., 0, 0]  # only path: T_b blanks at u=0
    torch.testing.assert_close(loss, torch.stack([-logp[0, :5].sum(), -logp[1, :1].sum()]))
    # T = 1: every label must be emitted in the single frame
    logits, targets, tl, ul = random_batch(2, 1, 3, 5, dtype=F64, seed=14, tl=[1, 1], ul=[3, 1])
    loss = rnnt_loss(logits, targets, tl, ul, reduction="none", dtype=F64, recursion=recursion)
    torch.testing.assert_close(loss, brute_force_batch(logits, targets, tl, ul))


def test_padding_values_are_ignored():
    logits, targets, tl, ul = random_batch(3, 6, 4, 7, seed=15, ul=[1, 4, 2])
    a = repad(targets, ul, -1)
    b = repad(targets, ul, 10 ** 6)
    torch.testing.assert_close(rnnt_loss(logits, a, tl, ul, reduction="none"),
                               rnnt_loss(logits, b, tl, ul, reduction="none"))


def test_padded_frames_get_no_gradient():
    logits, targets, tl, ul = random_batch(2, 6, 3, 5, seed=16, tl=[6, 3], ul=[3, 1])
    x = logits.requires_grad_(True)
    rnnt_loss(x, targets, tl, ul).backward()
    assert torch.all(x.grad[1, 3:] == 0) and torch.all(x.grad[1, :, 2:] == 0)
    # each row of the logits' gradient sums to zero (softmax)
    torch.testing.assert_close(x.grad.sum(-1), torch.zeros_like(x.grad.sum(-1)), atol=1e-6, rtol=0)


def test_invalid_inputs():
    logits, targets, tl, ul = random_batch(2, 4, 2, 5, seed=17)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, torch.tensor([5, 4]), ul)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, torch.tensor([0, 4]), ul)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, torch.tensor([3, 0]))
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, ul, blank=5)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, ul, recursion="nope")


def test_joint_logprobs_and_memory_formulae():
    logits, targets, _, _ = random_batch(2, 3, 2, 5, seed=18)
    targets = targets.clamp(min=0)
    blank_lp, label_lp = joint_logprobs(logits, targets, blank=0)
    logp = logits.log_softmax(-1)
    torch.testing.assert_close(blank_lp, logp[..., 0])
    torch.testing.assert_close(label_lp[1, 2, 1], logp[1, 2, 1, targets[1, 1]])
    assert joint_bytes(8, 100, 20, 256) == 8 * 100 * 21 * 256 * 4
    assert joint_bytes(1, 1, 0, 3, torch.float64) == 24
    assert fused_chunk_bytes(8, 4, 20, 256, 128) == 8 * 4 * 21 * (256 + 256) * 4


def test_from_logprobs_matches():
    logits, targets, tl, ul = random_batch(2, 5, 3, 6, seed=19)
    tgt = torch.where(targets < 0, 0, targets)
    bl, la = joint_logprobs(logits, tgt)
    torch.testing.assert_close(rnnt_loss_from_logprobs(bl, la, tl, ul), rnnt_loss(logits, targets, tl, ul))


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), T=st.integers(1, 4), U=st.integers(0, 3), V=st.integers(2, 4),
       seed=st.integers(0, 2 ** 16), scale=st.sampled_from([0.1, 1.0, 5.0]),
       recursion=st.sampled_from(RECURSIONS))
def test_property_nonnegative_finite_and_brute_force(B, T, U, V, seed, scale, recursion):
    logits, targets, tl, ul = random_batch(B, T, U, V, dtype=F64, seed=seed, full=False)
    logits = logits * scale
    loss = rnnt_loss(logits, targets, tl, ul, reduction="none", dtype=F64, recursion=recursion)
    assert torch.isfinite(loss).all()
    assert (loss >= -1e-5).all()
    torch.testing.assert_close(loss, brute_force_batch(logits, targets, tl, ul), atol=1e-6, rtol=1e-9)
    l32 = rnnt_loss(logits.float(), targets, tl, ul, reduction="none", recursion=recursion)
    assert torch.isfinite(l32).all() and (l32 >= -1e-5).all()
