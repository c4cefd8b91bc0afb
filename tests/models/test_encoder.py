"""Subsampling, chunk masks and exact streaming of the chunked-attention encoder (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from omnisparse.models.encoder import Encoder, chunk_mask
from omnisparse.models.subsampling import ConvSubsampling

D, H, FFN, LAYERS, FEAT = 32, 2, 64, 2, 80


def make_encoder(seed: int = 0, **kw) -> Encoder:
    torch.manual_seed(seed)
    args = dict(feat_dim=FEAT, d_model=D, n_heads=H, ffn_dim=FFN, n_layers=LAYERS, conv_kernel=5,
                dropout=0.1, rel_pos_clip=6, subsampling=4, chunk_size=3, left_chunks=2, lookahead=1,
                sub_channels=8)
    args.update(kw)
    enc = Encoder(**args).eval()
    with torch.no_grad():  # the bias is zero-initialised: make it matter in the tests
        for layer in enc.layers:
            layer.attn.rel_bias.normal_(0.0, 1.0)
    return enc


def stream(enc: Encoder, feats: torch.Tensor, piece: int, **chunking) -> torch.Tensor:
    state = enc.init_state(feats.size(0), **chunking)
    outs = []
    for s in range(0, feats.size(1), piece):
        out, state = enc.infer(feats[:, s:s + piece], state)
        outs.append(out)
    out, state = enc.infer(feats[:, :0], state, final=True)
    outs.append(out)
    return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------- subsampling
@pytest.mark.parametrize("factor", [4, 8])
def test_subsampling_lengths_and_streaming(factor):
    torch.manual_seed(1)
    sub = ConvSubsampling(FEAT, D, factor, channels=8).eval()
    for T in [0, 1, factor - 1, factor, factor + 1, 37, 64]:
        x = torch.randn(2, T, FEAT)
        with torch.no_grad():
            y, lens = sub(x, torch.tensor([T, max(T - 3, 0)]))
            assert y.shape == (2, T // factor, D)
            assert lens.tolist() == [T // factor, max(T - 3, 0) // factor]
            for piece in [1, 3, 5, 100]:
                state, outs = sub.init_state(2), []
                for s in range(0, T, piece):
                    o, state = sub.infer(x[:, s:s + piece], state)
                    outs.append(o)
                assert sum(o.size(1) for o in outs) == T // factor
                if T // factor:
                    torch.testing.assert_close(torch.cat(outs, 1), y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [4, 8])
def test_subsampling_is_causal(factor):
    torch.manual_seed(2)
    sub = ConvSubsampling(FEAT, D, factor, channels=8).eval()
    x = torch.randn(1, 12 * factor, FEAT)
    with torch.no_grad():
        y, _ = sub(x)
        for j in [0, factor - 1, 3 * factor, 3 * factor + 1, 5 * factor - 1]:
            x2 = x.clone()
            x2[:, j] += 5.0
            y2, _ = sub(x2)
            changed = (y2 - y).abs().amax(dim=(0, 2)) > 1e-6
            first = j // factor  # output t may depend on inputs <= (t + 1) * factor - 1
            assert not changed[:first].any(), (j, changed)
            assert changed[first], (j, changed)
        # the output is normalised: no "std ~ 7" swamping
        assert 0.5 < y.std().item() < 2.0


# ---------------------------------------------------------------------- masks
def test_chunk_mask_small_example():
    m = chunk_mask(7, chunk_size=2, left_chunks=1, lookahead=1)
    # frame 2 is in chunk 1: attends chunks 0..1 (frames 0..3) and one look-ahead frame (4)
    assert m[2].tolist() == [True, True, True, True, True, False, False]
    # frame 5 is in chunk 2: chunk 1..2 (frames 2..5) + frame 6
    assert m[5].tolist() == [False, False, True, True, True, True, True]
    m0 = chunk_mask(7, chunk_size=2, left_chunks=0, lookahead=0)
    assert m0[3].tolist() == [False, False, True, True, False, False, False]
    unbounded = chunk_mask(7, chunk_size=2, left_chunks=-1, lookahead=0)
    assert unbounded[6].all()


def test_stream_mode_past_outputs_ignore_the_future_beyond_lookahead():
    C, R = 3, 1
    enc = make_encoder(3, chunk_size=C, lookahead=R)
    x = torch.randn(1, 24, D)
    lens = torch.tensor([24])
    with torch.no_grad():
        ref = enc.forward_frames(x, lens, "stream")
        full = enc.forward_frames(x, lens, "full")
        # frame 9 opens chunk 3, so it is the look-ahead of chunk 2 (frames 6..8) only
        x2 = x.clone()
        x2[:, 9] += torch.randn(D)  # (not a constant: LayerNorm would remove it)
        s2 = enc.forward_frames(x2, lens, "stream")
        f2 = enc.forward_frames(x2, lens, "full")
        changed = (s2 - ref).abs().amax(dim=(0, 2)) > 1e-6
        assert not changed[:6].any()  # chunks 0, 1: beyond their look-ahead
        assert changed[6:9].all()  # chunk 2: sees frame 9 through the first block's look-ahead
        assert ((f2 - full).abs().amax(dim=(0, 2)) > 1e-6)[:9].all()  # full mode sees everything
        # frame 10 is beyond every earlier chunk's look-ahead; deeper blocks must not widen it
        x3 = x.clone()
        x3[:, 10] += torch.randn(D)
        s3 = enc.forward_frames(x3, lens, "stream")
        changed = (s3 - ref).abs().amax(dim=(0, 2)) > 1e-6
        assert not changed[:9].any() and changed[9:].any()
        # bounded left context (left_chunks=2, conv kernel 5): frame 0 reaches frame 8 through
        # block 0's attention (chunk 2 sees chunks 0..2), 12 through its conv, 20 through block 1's
        # attention, 24 through its conv, and nothing after that
        x4 = torch.cat([x, torch.randn(1, 12, D)], dim=1)
        ref4 = enc.forward_frames(x4, torch.tensor([36]), "stream")
        x4[:, 0] += torch.randn(D)
        s4 = enc.forward_frames(x4, torch.tensor([36]), "stream")
        changed = (s4 - ref4).abs().amax(dim=(0, 2)) > 1e-6
        assert changed[:25].all() and not changed[25:].any()


@pytest.mark.parametrize("mode", ["stream", "full"])
def test_padding_invariance(mode):
    enc = make_encoder(4, lookahead=2)
    lens = [67, 40, 13]
    feats = [torch.randn(1, n, FEAT) for n in lens]
    batch = torch.zeros(3, max(lens), FEAT)
    for i, f in enumerate(feats):
        batch[i, : f.size(1)] = f[0] + 0.0
        batch[i, f.size(1):] = 7.0  # garbage padding must not matter
    with torch.no_grad():
        out, out_lens = enc(batch, torch.tensor(lens), mode=mode)
        assert out_lens.tolist() == [n // 4 for n in lens]
        assert out.shape == (3, max(lens) // 4, D)
        for i, f in enumerate(feats):
            alone, _ = enc(f, torch.tensor([lens[i]]), mode=mode)
            n = lens[i] // 4
            torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=0)
            assert (out[i, n:] == 0).all()
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------------- streaming == masked forward
@pytest.mark.parametrize("subsampling", [4, 8])
@pytest.mark.parametrize("lookahead", [0, 2])
@pytest.mark.parametrize("conv_kernel", [0, 5])
def test_streaming_equals_masked_forward(subsampling, lookahead, conv_kernel):
    enc = make_encoder(5, subsampling=subsampling, lookahead=lookahead, conv_kernel=conv_kernel)
    fpc = enc.frames_per_chunk
    assert fpc == 3 * subsampling
    for T in [0, 5, 2 * fpc + subsampling - 1, 83]:
        feats = torch.randn(2, T, FEAT)
        with torch.no_grad():
            ref, lens = enc(feats, mode="stream")
            for piece in ([1, 7, fpc, fpc + 3, 1000] if T == 83 else [7, 1000]):
                out = stream(enc, feats, piece)
                assert out.shape == ref.shape, (T, piece)
                torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunking", [dict(chunk_size=1, left_chunks=0, lookahead=0),
                                      dict(chunk_size=4, left_chunks=-1, lookahead=1),
                                      dict(chunk_size=2, left_chunks=3, lookahead=3),
                                      dict(chunk_size=5, left_chunks=1, lookahead=7)])
def test_streaming_other_chunkings(chunking):
    enc = make_encoder(6)
    feats = torch.randn(1, 101, FEAT)
    with torch.no_grad():
        ref, _ = enc(feats, mode="stream", **chunking)
        for piece in [3, 16]:
            torch.testing.assert_close(stream(enc, feats, piece, **chunking), ref, atol=1e-5, rtol=0)
        # the stream really differs from full context (the test is not vacuous)
        full, _ = enc(feats, mode="full")
        assert (full - ref).abs().max() > 1e-3


def test_infer_emission_schedule_and_state_is_not_mutated():
    enc = make_encoder(7, chunk_size=3, lookahead=2, subsampling=4)
    fpc = enc.frames_per_chunk  # 12 fbank frames per chunk
    state = enc.init_state(1)
    with torch.no_grad():
        out, s1 = enc.infer(torch.randn(1, fpc, FEAT), state)
        assert out.size(1) == 0  # chunk 0 complete, its 2 look-ahead frames are not
        out, s2 = enc.infer(torch.randn(1, 2 * 4 - 1, FEAT), s1)
        assert out.size(1) == 0  # one fbank frame short of the second look-ahead frame
        out, s3 = enc.infer(torch.randn(1, 1, FEAT), s2)
        assert out.size(1) == 3 and s3.emitted == 3
        out, s4 = enc.infer(torch.randn(1, 0, FEAT), s3)
        assert out.size(1) == 0 and s4.emitted == 3
        out, s5 = enc.infer(torch.randn(1, 0, FEAT), s3, final=True)
        assert out.size(1) == 2 and s5.emitted == 5  # flush: the 2 pending frames
        # inputs states untouched (infer returns new states)
        assert state.emitted == 0 and state.pending.size(1) == 0 and state.keys[0].size(2) == 0
        assert s3.pending.size(1) == 2
        # K/V caches are bounded by left_chunks * chunk_size
        s = enc.init_state(1)
        _, s = enc.infer(torch.randn(1, 40 * fpc, FEAT), s)
        assert all(k.size(2) == 2 * 3 for k in s.keys)
        assert all(c.shape == (1, D, 4) for c in s.conv)


def test_training_forward_backward_reaches_every_parameter():
    enc = make_encoder(8).train()
    feats = torch.randn(2, 50, FEAT)
    out, lens = enc(feats, torch.tensor([50, 33]), mode="stream")
    out.square().sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(layer.attn.rel_bias.grad.abs().sum() > 0 for layer in enc.layers)
