"""Transducer assembly, predictors, joiner and PrunableLinear masks (tiny random models)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from omnisparse.config import ModelConfig
from omnisparse.models.joiner import Joiner
from omnisparse.models.layers import PrunableLinear
from omnisparse.models.predictor import LstmPredictor, StatelessPredictor, predictor_history
from omnisparse.models.transducer import Transducer, TransducerOutput, add_blank_prefix

V = 17


def tiny_config(**kw) -> ModelConfig:
    cfg = ModelConfig(d_model=32, n_heads=2, ffn_dim=64, n_layers=2, conv_kernel=5, rel_pos_clip=8,
                      chunk_size=2, left_chunks=2, lookahead=1, vocab_size=V, pred_dim=24, joiner_dim=20)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(seed: int = 0, **kw) -> Transducer:
    torch.manual_seed(seed)
    return Transducer.from_config(tiny_config(**kw)).eval()


def batch(B: int = 2, T: int = 40, U: int = 5):
    feats = torch.randn(B, T, 80)
    feat_lens = torch.tensor([T] + [T - 7] * (B - 1))
    tokens = torch.randint(1, V, (B, U))
    token_lens = torch.tensor([U] + [U - 2] * (B - 1))
    return feats, feat_lens, tokens, token_lens


# ---------------------------------------------------------------------- assembly
@pytest.mark.parametrize("pred_type,ctc_weight,mode", [("lstm", 0.0, "stream"), ("stateless", 0.5, "full"),
                                                      ("lstm", 0.5, "full"), ("stateless", 0.0, "stream")])
def test_forward_shapes(pred_type, ctc_weight, mode):
    model = tiny_model(pred_type=pred_type, ctc_weight=ctc_weight)
    assert model.config.pred_type == pred_type
    feats, feat_lens, tokens, token_lens = batch()
    out = model(feats, feat_lens, tokens, token_lens, mode=mode)
    assert isinstance(out, TransducerOutput)
    assert out.enc.shape == (2, 10, 32) and out.enc_lens.tolist() == [10, 8]
    assert out.pred.shape == (2, 6, 24)
    assert (out.ctc_logits is None) == (ctc_weight == 0)
    if ctc_weight:
        assert out.ctc_logits.shape == (2, 10, V)
    logits = model.join(out.enc, out.pred)
    assert logits.shape == (2, 10, 6, V)
    assert model.num_params() == sum(p.numel() for p in model.parameters())


def test_add_blank_prefix_masks_padding():
    t = torch.tensor([[5, 6, 7], [8, 9, 3]])
    out = add_blank_prefix(t, torch.tensor([3, 1]), blank=0)
    assert out.tolist() == [[0, 5, 6, 7], [0, 8, 0, 0]]


@pytest.mark.parametrize("subsampling", [4, 8])
def test_stream_infer_matches_encode(subsampling):
    model = tiny_model(1, subsampling=subsampling)
    feats = torch.randn(1, 70, 80)
    with torch.no_grad():
        ref, _ = model.encode(feats, mode="stream")
        state = model.init_stream_state(1)
        outs = []
        for s in range(0, 70, 9):
            o, state = model.infer(feats[:, s:s + 9], state)
            outs.append(o)
        o, state = model.infer(feats[:, :0], state, final=True)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- predictor / joiner
@pytest.mark.parametrize("predictor", [LstmPredictor(V, 12, n_layers=2), StatelessPredictor(V, 12, context=3),
                                       StatelessPredictor(V, 12, context=1)])
def test_predictor_step_equals_forward(predictor):
    torch.manual_seed(2)
    predictor.eval()
    tokens = torch.randint(0, V, (3, 7))
    tokens[:, 0] = 0
    with torch.no_grad():
        ref = predictor(tokens)
        assert ref.shape == (3, 7, 12)
        state = predictor.init_state(3)
        steps = []
        for u in range(7):
            o, state = predictor.step(tokens[:, u], state)
            steps.append(o)
    torch.testing.assert_close(torch.stack(steps, 1), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("history", [1, 3, 5])
def test_lstm_history_window(history):
    """With a window of K tokens the output equals the full history's for the first K tokens fed and
    is the LSTM from zero state over the last K tokens after; forward (training) is unaffected and
    the setting is restored on leaving the block."""
    torch.manual_seed(4)
    p = LstmPredictor(V, 12, n_layers=2).eval()
    tokens = torch.randint(0, V, (3, 8))
    tokens[:, 0] = 0
    with torch.no_grad():
        ref = p(tokens)
        with predictor_history(p, history):
            torch.testing.assert_close(p(tokens), ref)
            state = p.init_state(3)
            assert state.shape == (3, history - 1) and state.dtype == torch.int64 and (state == -1).all()
            steps = []
            for u in range(8):
                o, state = p.step(tokens[:, u], state)
                steps.append(o)
        assert p.history == 0 and isinstance(p.init_state(1), list)
        got = torch.stack(steps, 1)
        torch.testing.assert_close(got[:, :history], ref[:, :history], atol=1e-5, rtol=0)
        for u in range(history, 8):
            torch.testing.assert_close(got[:, u], p(tokens[:, u - history + 1:u + 1])[:, -1], atol=1e-5, rtol=0)
        assert (got[:, history:] - ref[:, history:]).abs().max() > 1e-4  # a real truncation


def test_history_window_refusals():
    with pytest.raises(ValueError, match="LSTM predictor"):
        with predictor_history(StatelessPredictor(V, 12, context=2), 4):
            pass
    with pytest.raises(ValueError, match=">= 0"):
        with predictor_history(LstmPredictor(V, 12), -1):
            pass
    with predictor_history(StatelessPredictor(V, 12, context=2), 0):  # 0 = as trained: any predictor
        pass


def test_lstm_predictor_matches_torch_lstm():
    torch.manual_seed(3)
    p = LstmPredictor(V, 8, n_layers=1, dropout=0.0).eval()
    ref = nn.LSTM(8, 8, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(p.layers[0].x2g.weight)
        ref.weight_hh_l0.copy_(p.layers[0].h2g.weight)
        ref.bias_ih_l0.copy_(p.layers[0].x2g.bias)
        ref.bias_hh_l0.zero_()
        tokens = torch.randint(0, V, (2, 5))
        torch.testing.assert_close(p(tokens), ref(p.embed(tokens))[0], atol=1e-5, rtol=0)


def test_joiner_shapes_and_step():
    torch.manual_seed(4)
    j = Joiner(d_model=10, pred_dim=6, joiner_dim=5, vocab_size=V)
    enc, pred = torch.randn(2, 4, 10), torch.randn(2, 3, 6)
    logits = j(enc, pred)
    assert logits.shape == (2, 4, 3, V)
    ep, pp = j.project_enc(enc), j.project_pred(pred)
    assert ep.shape == (2, 4, 5) and pp.shape == (2, 3, 5)
    torch.testing.assert_close(j.join(ep, pp), logits)
    torch.testing.assert_close(j.step(ep[:, 2], pp[:, 1]), logits[:, 2, 1])
    # the pieces a fused loss would take
    manual = torch.tanh(ep[:, :, None] + pp[:, None]) @ j.out.effective_weight().t() + j.out.bias
    torch.testing.assert_close(manual, logits, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------- pruning interface
def test_prunable_linears_cover_the_encoder_blocks_and_nothing_else():
    model = tiny_model(5)
    entries = model.prunable_linears()
    names = [n for _, n, _ in entries]
    assert len(names) == len(set(names))
    genes = list(dict.fromkeys(g for g, _, _ in entries))
    assert genes == ["enc.0.attn", "enc.0.conv", "enc.0.ffn", "enc.1.attn", "enc.1.conv", "enc.1.ffn",
                     "pred", "joiner"]
    groups = model.prunable_groups()
    assert [n.rsplit(".", 1)[1] for n, _ in groups["enc.0.attn"]] == ["q", "k", "v", "out"]
    assert [n.rsplit(".", 1)[1] for n, _ in groups["enc.1.ffn"]] == ["w1", "w2"]
    assert [n.rsplit(".", 1)[1] for n, _ in groups["enc.1.conv"]] == ["pw1", "pw2"]
    assert len(groups["joiner"]) == 3
    named = dict(model.named_modules())
    for gene, name, m in entries:
        assert named[name] is m and isinstance(m, PrunableLinear)
    # every Linear inside the encoder blocks is prunable and listed
    listed = {id(m) for _, _, m in entries}
    block_linears = [m for m in model.encoder.layers.modules() if isinstance(m, nn.Linear)]
    assert block_linears and all(isinstance(m, PrunableLinear) and id(m) in listed for m in block_linears)
    # nothing from the subsampling, LayerNorms, embeddings or the CTC head
    assert not any(name.startswith("encoder.subsampling") for name in names)
    assert all(isinstance(named[n], PrunableLinear) for n in names)
    assert not any(isinstance(m, PrunableLinear) for m in model.encoder.subsampling.modules())
    # stable across builds; conv genes vanish without a conv module; stateless predictor has no gene
    assert [n for _, n, _ in tiny_model(6).prunable_linears()] == names
    genes_noconv = {g for g, _, _ in tiny_model(conv_kernel=0, pred_type="stateless").prunable_linears()}
    assert genes_noconv == {"enc.0.attn", "enc.0.ffn", "enc.1.attn", "enc.1.ffn", "joiner"}


def test_masks_change_outputs_gradients_and_stay_out_of_state_dict():
    model = tiny_model(7)
    feats, feat_lens, tokens, token_lens = batch()
    with torch.no_grad():
        dense = model(feats, feat_lens, tokens, token_lens)
    torch.manual_seed(8)
    masks = {}
    for _, name, m in model.prunable_linears():
        masks[name] = (torch.rand_like(m.weight) > 0.5).float()
        m.set_mask(masks[name].bool())  # any dtype; stored in the weight's dtype
        assert m.mask.dtype == m.weight.dtype and 0.3 < m.density() < 0.7
    out = model(feats, feat_lens, tokens, token_lens)
    assert (out.enc - dense.enc).abs().max() > 1e-3 and (out.pred - dense.pred).abs().max() > 1e-3
    # gradients reach only kept weights
    model.train()
    model.zero_grad()
    out = model(feats, feat_lens, tokens, token_lens)
    model.join(out.enc, out.pred).logsumexp(-1).sum().backward()
    for _, name, m in model.prunable_linears():
        g = m.weight.grad
        assert (g[masks[name] == 0] == 0).all(), name
        assert g[masks[name] == 1].abs().sum() > 0, name
    # masks are not part of the checkpoint; a fresh model loads it and is dense
    sd = model.state_dict()
    assert not any("mask" in k for k in sd)
    fresh = tiny_model(9)
    fresh.load_state_dict(sd)
    assert all(m.mask is None for _, _, m in fresh.prunable_linears())
    # masks follow dtype/device moves and deep copies; clearing them restores the dense model
    m = model.joiner.out
    model.double()
    assert m.mask.dtype == torch.float64
    copied = copy.deepcopy(model)
    assert copied.joiner.out.mask is not None
    model.float().eval()
    model.clear_masks()
    with torch.no_grad():
        again = model(feats, feat_lens, tokens, token_lens)
    torch.testing.assert_close(again.enc, dense.enc)


def test_row_mask_and_bad_mask():
    lin = PrunableLinear(4, 3)
    lin.set_mask(torch.tensor([[1.0], [0.0], [1.0]]))  # whole rows
    y = lin(torch.randn(5, 4))
    torch.testing.assert_close(y[:, 1], lin.bias[1].expand(5))
    assert lin.density() == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        lin.set_mask(torch.ones(4, 3))
    with pytest.raises(ValueError):
        lin.set_mask(torch.ones(2, 3, 4))


def test_autocast_runs_only_the_encoder_in_bf16():
    from omnisparse.losses.transducer import TransducerLoss

    m = tiny_model().train()
    seen = {}
    m.encoder.register_forward_hook(lambda mod, inp, out: seen.__setitem__("enc", out[0].dtype))
    feats, feat_lens, tokens, token_lens = batch()
    out = m(feats, feat_lens, tokens, token_lens, autocast=torch.bfloat16)
    assert seen["enc"] == torch.bfloat16 and out.enc.dtype == torch.float32  # cast back for the rest
    ref = TransducerLoss(m)(feats, feat_lens, tokens, token_lens)
    assert seen["enc"] == torch.float32
    low = TransducerLoss(m, autocast=torch.bfloat16)(feats, feat_lens, tokens, token_lens)
    assert seen["enc"] == torch.bfloat16
    low.loss.backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in m.parameters())  # the weights and their gradients stay fp32
    # bf16 has 8 bits of mantissa: the same loss to within a few per cent, not bitwise
    assert low.loss.item() == pytest.approx(ref.loss.item(), rel=0.05) and low.loss.item() != ref.loss.item()
