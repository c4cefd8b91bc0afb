import pytest
import torch

from omnisparse.config import ModelConfig, PretrainConfig
from omnisparse.losses.contrastive import compute_mask_spans
from omnisparse.models.encoder import Encoder, apply_frame_mask
from omnisparse.models.transducer import Transducer
from omnisparse.models.wav2vec import Wav2VecPretrainModel


def _cfg() -> ModelConfig:
    return ModelConfig(d_model=32, n_heads=2, ffn_dim=64, n_layers=2, conv_kernel=5, dropout=0.0, rel_pos_clip=16,
                       chunk_size=4, left_chunks=2, lookahead=1, pred_dim=32, joiner_dim=32, vocab_size=16)


def _pcfg(**kw) -> PretrainConfig:
    return PretrainConfig(codebook_entries=8, codevector_dim=16, num_negatives=5, **kw)


def _batch(B=2, T=160):
    torch.manual_seed(1)
    return torch.randn(B, T, 80), torch.tensor([T, T - 50])


@pytest.mark.parametrize("mode", ["stream", "full"])
def test_encoder_without_mask_is_unchanged(mode):
    torch.manual_seed(0)
    enc = Encoder.from_config(_cfg()).eval()
    feats, lens = _batch()
    ref_x, _ = enc.subsampling(feats)
    ref = enc.forward_frames(ref_x, enc.output_lengths(lens), mode)  # the pre-hook forward, by hand
    out, out_lens = enc(feats, lens, mode)
    assert torch.equal(out, ref) and torch.equal(out_lens, lens // 4)
    none_masked = torch.zeros(2, out.size(1), dtype=torch.bool)
    out2, _ = enc(feats, lens, mode, input_mask=none_masked, mask_emb=torch.ones(32))
    assert torch.equal(out2, out)


def test_encoder_input_mask_replaces_subsampled_frames():
    torch.manual_seed(0)
    enc = Encoder.from_config(_cfg()).eval()
    feats, lens = _batch()
    x, _ = enc.subsampling(feats)
    mask = torch.zeros(2, x.size(1), dtype=torch.bool)
    mask[0, 3:9] = True
    mask[1, 0:2] = True
    emb = torch.randn(32)
    manual = x.clone()
    manual[mask] = emb
    out, _ = enc(feats, lens, "full", input_mask=mask, mask_emb=emb)
    torch.testing.assert_close(out, enc.forward_frames(manual, enc.output_lengths(lens), "full"))
    assert torch.equal(apply_frame_mask(x, None, None), x)
    with pytest.raises(ValueError, match="mask_emb"):
        apply_frame_mask(x, mask, None)


def test_pretrain_model_shares_the_rnnt_encoder_layout():
    torch.manual_seed(0)
    m = Wav2VecPretrainModel.from_config(_cfg(), _pcfg())
    t = Transducer.from_config(_cfg())
    enc_keys = {k for k in m.state_dict() if k.startswith("encoder.")}
    assert enc_keys == {k for k in t.state_dict() if k.startswith("encoder.")}
    assert set(m.state_dict()) - enc_keys == {"mask_emb", "quantizer.codevectors", "quantizer.weight_proj.weight",
                                              "quantizer.weight_proj.bias", "project_q.weight", "project_q.bias",
                                              "final_proj.weight", "final_proj.bias"}
    rnnt_genes = {g: [n for n, _ in members] for g, members in t.prunable_groups().items() if g.startswith("enc.")}
    assert {g: [n for n, _ in members] for g, members in m.prunable_groups().items()} == rnnt_genes


def test_pretrain_forward_backward_and_quantizer_sees_unmasked_features():
    torch.manual_seed(0)
    m = Wav2VecPretrainModel.from_config(_cfg(), _pcfg())
    feats, lens = _batch()
    T = feats.size(1) // 4
    mask = compute_mask_spans(m.encoder_frames(lens), T, 0.65, 4, torch.Generator().manual_seed(0))
    seen = {}
    m.quantizer.register_forward_hook(lambda mod, inp, out: seen.update(z=inp[0].detach().clone()))
    out = m(feats, lens, mask, mode="stream", generator=torch.Generator().manual_seed(0))
    z, _ = m.encoder.subsampling(feats)
    torch.testing.assert_close(seen["z"], z.detach())  # the unmasked subsampled frames
    assert torch.isfinite(out.loss) and out.num_masked == int(mask.sum()) > 0
    assert out.loss.item() == pytest.approx(out.contrastive + 0.1 * out.diversity + 10.0 * out.feature_penalty, rel=1e-5)
    out.loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
