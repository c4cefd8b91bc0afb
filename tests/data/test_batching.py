from collections import Counter
from types import SimpleNamespace

import torch
from lhotse import load_manifest

from omnisparse.data.batching import AsrDataset, SpecAugmentConfig, load_checked, make_sampler
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.tokenizer import Tokenizer


def _parts(corpus):
    L = CorpusLayout(corpus)
    return L, Tokenizer(L.bpe_model(64)), FeatureNormalizer.from_file(L.global_stats)


def test_duration_budget_respected(tiny_corpus):
    L, _, _ = _parts(tiny_corpus)
    cuts = load_manifest(L.feature_cuts("train"))
    sampler = make_sampler(cuts, max_duration=12.0, shuffle=True, num_buckets=2, seed=1)
    seen = 0
    totals = []
    for batch in sampler:
        durs = [c.duration for c in batch]
        # lhotse's budget check runs before a cut is added: a batch may overshoot by under one cut
        assert sum(durs) - max(durs) <= 12.0
        totals.append(sum(durs))
        seen += len(batch)
    assert seen == len(cuts)
    assert sum(totals) / len(totals) > 6.0  # batches are filled, not one cut each


def test_dataset_shapes_and_normalisation(tiny_corpus):
    L, tok, norm = _parts(tiny_corpus)
    cuts = load_manifest(L.feature_cuts("dev")).subset(first=5)
    b = AsrDataset(tok, norm)[cuts]
    assert b["feats"].shape[0] == 5 and b["feats"].shape[2] == 80
    assert int(b["feat_lens"].max()) == b["feats"].shape[1]
    for i, text in enumerate(b["texts"]):
        assert tok.decode(b["tokens"][i, : b["token_lens"][i]].tolist()) == text
    valid = torch.cat([b["feats"][i, : b["feat_lens"][i]] for i in range(5)])
    assert abs(float(valid.mean())) < 0.5 and 0.5 < float(valid.std()) < 1.5


def test_on_the_fly_matches_stored(tiny_corpus):
    L, tok, norm = _parts(tiny_corpus)
    cuts = load_manifest(L.feature_cuts("dev")).subset(first=2)
    stored = AsrDataset(tok, norm)[cuts]
    fly = AsrDataset(tok, norm, on_the_fly=True)[cuts]
    assert stored["feats"].shape == fly["feats"].shape
    # stored features are lilcom-compressed: equal within its precision
    assert torch.allclose(stored["feats"], fly["feats"], atol=0.05)


def test_spec_augment_deterministic_and_masks(tiny_corpus):
    L, tok, norm = _parts(tiny_corpus)
    cuts = load_manifest(L.feature_cuts("dev")).subset(first=3)
    spec = SpecAugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_fraction=0.2)
    a = AsrDataset(tok, norm, spec_augment=spec, seed=3)[cuts]
    b = AsrDataset(tok, norm, spec_augment=spec, seed=3)[cuts]
    plain = AsrDataset(tok, norm)[cuts]
    assert torch.equal(a["feats"], b["feats"])
    assert not torch.equal(a["feats"], plain["feats"])
    assert int((a["feats"] == 0).sum()) > int((plain["feats"] == 0).sum())


def test_unloadable_cut_is_skipped_and_counted(tiny_corpus, tmp_path):
    L, tok, norm = _parts(tiny_corpus)
    cuts = load_manifest(L.cuts("dev")).subset(first=3).to_eager()
    import shutil

    from lhotse import CutSet, Recording

    bad = list(cuts)
    src = tmp_path / "broken.flac"
    shutil.copy(bad[1].recording.sources[0].source, src)
    bad[1].recording = Recording.from_file(src, recording_id=bad[1].recording_id)
    src.write_bytes(b"not audio at all")  # corrupted after the manifest was written

    ds = AsrDataset(tok, norm, on_the_fly=True)
    out = ds[CutSet.from_cuts(bad)]
    assert len(out["ids"]) == 2 and ds.skipped["unloadable"] == 1


def test_load_checked_skips_and_counts_what_cannot_train():
    skipped: Counter = Counter()
    cut = SimpleNamespace(id="c")
    good = torch.randn(5, 80)
    assert load_checked(lambda c: good, cut, skipped) is good and not skipped

    def broken(c):
        raise OSError("gone")

    assert load_checked(broken, cut, skipped) is None
    assert load_checked(lambda c: torch.zeros(0, 80), cut, skipped) is None
    assert load_checked(lambda c: torch.full((3, 80), float("nan")), cut, skipped) is None
    assert skipped == Counter(unloadable=1, bad_features=2)
