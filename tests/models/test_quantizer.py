import pytest
import torch

from omnisparse.models.quantizer import GumbelQuantizer, perplexity


def _quantizer(G=2, V=4, D=6, C=3, **kw):
    torch.manual_seed(0)
    return GumbelQuantizer(C, groups=G, entries=V, codevector_dim=D, **kw)


def _force_codes(q: GumbelQuantizer, codes_per_frame: torch.Tensor, scale: float = 50.0) -> torch.Tensor:
    """Input frames (1, T, C = T) one-hot, with a projection that makes frame t pick
    ``codes_per_frame[t, g]`` in group g (logit ``scale`` there, 0 elsewhere)."""
    T = codes_per_frame.size(0)
    G, V = q.groups, q.entries
    with torch.no_grad():
        q.weight_proj = torch.nn.Linear(T, G * V)
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.zero_()
        for t in range(T):
            for g in range(G):
                q.weight_proj.weight[g * V + int(codes_per_frame[t, g]), t] = scale
    return torch.eye(T)[None]


def test_temperature_anneals_from_max_to_min():
    q = _quantizer()  # fairseq defaults 2.0 -> 0.5, x0.999995 per update
    assert q.temperature == 2.0
    q.set_num_updates(1000)
    assert q.temperature == pytest.approx(2.0 * 0.999995 ** 1000)
    q.set_num_updates(10 ** 7)
    assert q.temperature == 0.5
    fast = _quantizer(max_temp=2.0, min_temp=0.1, temp_decay=0.5)
    assert [fast.temperature_at(n) for n in range(6)] == [2.0, 1.0, 0.5, 0.25, 0.125, 0.1]


def test_diversity_loss_zero_at_uniform_usage_and_maximal_on_one_code():
    G, V = 2, 4
    q = _quantizer(G, V).eval()
    with torch.no_grad():
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.zero_()  # every softmax uniform
    out = q(torch.randn(2, 5, 3))
    assert out.prob_perplexity.item() == pytest.approx(G * V, rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx(0.0, abs=1e-5)

    with torch.no_grad():
        q.weight_proj.bias.view(G, V)[:, 1] = 100.0  # all the mass on entry 1 of each group
    out = q(torch.randn(2, 5, 3))
    assert out.prob_perplexity.item() == pytest.approx(G, rel=1e-5)
    assert out.code_perplexity.item() == pytest.approx(G, rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx((G * V - G) / (G * V), rel=1e-5)
    assert (out.codes == 1).all()


def test_code_perplexity_counts_hard_choices_over_selected_frames():
    G, V = 2, 4
    q = _quantizer(G, V).eval()
    codes = torch.tensor([[0, 3], [1, 2], [2, 1], [3, 0]])  # every entry of each group used once
    x = _force_codes(q, codes)
    out = q(x)
    assert torch.equal(out.codes[0], codes)
    assert out.code_perplexity.item() == pytest.approx(G * V, rel=1e-5)
    # only frames 0 and 1: two codes per group, used equally -> perplexity 2 per group
    out = q(x, frame_mask=torch.tensor([[True, True, False, False]]))
    assert out.code_perplexity.item() == pytest.approx(2 * G, rel=1e-5)
    assert perplexity(torch.tensor([[0.5, 0.5, 0.0, 0.0]])).item() == pytest.approx(2.0, rel=1e-5)


def test_eval_quantizes_to_the_argmax_codevectors():
    G, V, D = 2, 4, 6
    q = _quantizer(G, V, D).eval()
    codes = torch.tensor([[2, 0], [1, 3], [3, 3]])
    out = q(_force_codes(q, codes))
    cv = q.codevectors.detach()  # (G * V, D / G)
    for t in range(3):
        expect = torch.cat([cv[g * V + int(codes[t, g])] for g in range(G)])
        torch.testing.assert_close(out.quantized[0, t], expect)


def test_training_is_straight_through_hard_gumbel():
    G, V, D = 2, 4, 6
    q = _quantizer(G, V, D).train()
    x = torch.randn(2, 7, 3, requires_grad=True)
    out = q(x)
    cv = q.codevectors.detach().view(G, V, D // G)
    # forward: each group's slice is exactly one codevector of that group
    for b in range(2):
        for t in range(7):
            for g in range(G):
                part = out.quantized[b, t, g * (D // G):(g + 1) * (D // G)].detach()
                assert min(float((part - cv[g, v]).abs().max()) for v in range(V)) < 1e-6
    # backward reaches the projection (soft Gumbel gradient) and the input
    out.quantized.sum().backward()
    assert q.weight_proj.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    assert out.temperature == 2.0


def test_codevector_dim_must_split_into_groups():
    with pytest.raises(ValueError, match="divisible"):
        GumbelQuantizer(8, groups=3, entries=4, codevector_dim=8)
    assert _quantizer().num_codes == 8
