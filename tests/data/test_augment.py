import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import load_manifest
from safetensors.torch import load_file

from omnisparse.config import AugmentConfig, ConfigError, load_config
from omnisparse.data import augment as A
from omnisparse.data.augment import Augmenter, active_power, cut_rng, load_or_make_rir_bank
from omnisparse.data.batching import AsrDataset, SpecAugmentConfig, make_loader, make_sampler
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.tokenizer import Tokenizer

SR = 16000
# every stage off, gain 0 dB: each test switches on what it checks
OFF = AugmentConfig(enabled=True, speed_prob=0.0, reverb_prob=0.0, noise_prob=0.0, gain_db=[0.0, 0.0])
SMALL_BANK = {"rir_bank_size": 3, "rt60": [0.3, 0.5], "room_min": [3.0, 3.0, 2.5], "room_max": [5.0, 4.0, 3.0]}


def bursts(freq: float = 440.0, amp: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """2 s of three 0.3 s tone bursts (frame-aligned) and the mask of their samples."""
    t = np.arange(2 * SR) / SR
    mask = np.zeros(len(t), dtype=bool)
    for start in (0.2, 0.8, 1.4):
        mask[int(start * SR): int((start + 0.3) * SR)] = True
    return (amp * np.sin(2 * np.pi * freq * t) * mask).astype(np.float32), mask


@dataclass
class FakeCut:
    id: str
    audio: np.ndarray

    def load_audio(self) -> np.ndarray:
        return self.audio[None]


def fake_pool(n: int = 10) -> list[FakeCut]:
    rng = np.random.default_rng(5)
    return [FakeCut(f"u{i}", (0.1 * rng.standard_normal(SR + 800 * i) * (rng.random(SR + 800 * i) > 0.3))
                    .astype(np.float32)) for i in range(n)]


def test_speed_changes_length_and_pitch_by_the_factor():
    x = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(2 * SR) / SR)).astype(np.float32)
    for factor in (0.9, 1.1):
        cfg = dataclasses.replace(OFF, speed_prob=1.0, speed_factors=[factor])
        info: dict = {}
        y = Augmenter(cfg)(x, np.random.default_rng(0), info=info)
        assert info["speed"] == factor
        assert abs(len(y) - len(x) / factor) <= 1
        spec = np.abs(np.fft.rfft(y))
        peak_hz = np.argmax(spec) * SR / len(y)
        assert peak_hz == pytest.approx(1000 * factor, abs=2)


@pytest.mark.parametrize("kind", ["coloured", "babble", "music"])
def test_noise_at_the_requested_snr(kind, tmp_path):
    music = tmp_path / "moh"
    music.mkdir()
    sf.write(music / "tune.wav", (0.2 * np.sin(2 * np.pi * 330 * np.arange(3 * 8000) / 8000)).astype(np.float32), 8000)
    weights = {k + "_weight": float(k == kind) for k in A.NOISE_KINDS}
    x, mask = bursts(amp=0.1)  # low enough that the clip guard never scales the mix
    p_speech = float(np.mean(x[mask].astype(np.float64) ** 2))
    for snr in (0.0, 7.5, 20.0):
        cfg = dataclasses.replace(OFF, noise_prob=1.0, snr_db=[snr, snr], music_dir=str(music), **weights)
        info: dict = {}
        y = Augmenter(cfg, babble_cuts=fake_pool())(x, np.random.default_rng(1), cut_id="u3", info=info)
        assert info["noise"] == kind and len(y) == len(x) and "clip_guard" not in info
        residual = (y - x).astype(np.float64)
        measured = 10 * np.log10(p_speech / np.mean(residual ** 2))
        assert measured == pytest.approx(snr, abs=1.0)
        if kind == "babble":
            assert 3 <= info["talkers"] <= 7


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    f = np.fft.rfftfreq(SR * 4, 1 / SR)
    lo, hi = (f > 100) & (f < 200), (f > 3200) & (f < 6400)  # 4 and 5 octaves apart
    for colour, alpha in A.COLOUR_SLOPES.items():
        psd = np.abs(np.fft.rfft(A.coloured_noise(SR * 4, colour, rng))) ** 2
        drop_db = 10 * np.log10(psd[lo].mean() / psd[hi].mean())
        assert drop_db == pytest.approx(10 * alpha * np.log10(np.mean(f[hi]) / np.mean(f[lo])), abs=1.5)


def test_babble_leaves_out_the_utterance_itself():
    pool = fake_pool(4)
    aug = Augmenter(dataclasses.replace(OFF, noise_prob=1.0, coloured_weight=0, music_weight=0,
                                        babble_talkers=[3, 3]), babble_cuts=pool)
    for seed in range(10):
        info: dict = {}
        aug(bursts()[0], np.random.default_rng(seed), cut_id="u0", info=info)
        assert info["talkers"] == 3  # all three others, never u0
    assert 0 not in aug.babble._cache


def test_missing_music_dir_warns_once_and_is_skipped(tmp_path, caplog):
    cfg = dataclasses.replace(OFF, noise_prob=1.0, music_dir=str(tmp_path / "none"))
    with caplog.at_level(logging.WARNING, logger="omnisparse.data.augment"):
        aug = Augmenter(cfg, babble_cuts=fake_pool())
    assert sum("music" in r.getMessage() for r in caplog.records) == 1
    assert aug.kinds == ["coloured", "babble"]
    kinds = set()
    for seed in range(20):
        info: dict = {}
        aug(bursts()[0], np.random.default_rng(seed), info=info)
        kinds.add(info["noise"])
    assert kinds == {"coloured", "babble"}


def test_reverb_keeps_alignment_and_level_and_adds_a_tail(tmp_path):
    bank = load_or_make_rir_bank(dataclasses.replace(OFF, **SMALL_BANK), tmp_path)
    x = np.zeros(SR, dtype=np.float32)
    x[3200:4000] = np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.3  # 50 ms burst at 0.2 s
    for i in range(len(bank)):
        y = A.reverberate(x, *bank.get(i))
        assert len(y) == len(x)
        assert np.mean(y.astype(np.float64) ** 2) == pytest.approx(np.mean(x.astype(np.float64) ** 2), rel=1e-4)
        after = slice(4000 + 800, 4000 + 3200)  # 50-200 ms after the burst: silence before, reverb tail after
        assert np.mean(x[after] ** 2) == 0 and np.mean(y[after] ** 2) > 1e-4 * np.mean(y ** 2)
        # an impulse stays where it was: the direct path arrives first, at the impulse's own sample
        h = A.reverberate(np.eye(1, SR, 3200, dtype=np.float32)[0], *bank.get(i))
        a = np.abs(h)
        assert int(np.argmax(a[3180:3221])) == 20 and a[3200] > 0.3 * a.max() and a[:3150].max() < 0.05 * a.max()


def test_gain_in_db_and_clip_guard():
    x, _ = bursts(amp=0.3)
    y = Augmenter(dataclasses.replace(OFF, gain_db=[-6.0, -6.0]))(x, np.random.default_rng(0))
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), rtol=1e-6)
    info: dict = {}
    y = Augmenter(dataclasses.replace(OFF, gain_db=[20.0, 20.0]))(x, np.random.default_rng(0), info=info)
    assert np.abs(y).max() == pytest.approx(0.99, rel=1e-5) and "clip_guard" in info
    np.testing.assert_allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-6)  # scaled, not clipped


def test_active_power_ignores_pauses():
    x, mask = bursts()
    assert active_power(x) == pytest.approx(float(np.mean(x[mask].astype(np.float64) ** 2)), rel=1e-3)
    assert active_power(np.zeros(SR, dtype=np.float32)) == 0.0


def test_rir_bank_is_cached_reused_and_reproducible(tmp_path, monkeypatch):
    cfg = dataclasses.replace(OFF, **SMALL_BANK)
    bank = load_or_make_rir_bank(cfg, tmp_path)
    path = A.rir_bank_path(tmp_path, cfg)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temporary left
    with np.load(path, allow_pickle=False) as z:
        assert z["rirs"].shape == (3, bank.rirs.shape[1]) and z["rirs"].dtype == np.float32
    assert np.all(bank.direct < bank.lengths) and np.all((bank.rt60 >= 0.3) & (bank.rt60 <= 0.5))

    def no_simulation(_cfg):
        raise AssertionError("the cached bank should have been read")

    monkeypatch.setattr(A, "simulate_rir_bank", no_simulation)
    again = load_or_make_rir_bank(cfg, tmp_path)
    monkeypatch.undo()
    for k, v in bank.arrays().items():
        assert np.array_equal(v, again.arrays()[k]), k
    path.unlink()
    fresh = load_or_make_rir_bank(cfg, tmp_path)
    for k, v in bank.arrays().items():
        assert np.array_equal(v, fresh.arrays()[k]), k
    assert A.rir_bank_path(tmp_path, dataclasses.replace(cfg, rir_seed=1)) != path
    path.write_bytes(b"truncated")  # an unreadable cache is simulated again, not fatal
    assert np.array_equal(load_or_make_rir_bank(cfg, tmp_path).rirs, bank.rirs)


@pytest.mark.parametrize("bad, match", [
    ("--augment.noise_prob=1.5", "noise_prob must be in"),
    ("--augment.speed_prob=-0.1", "speed_prob must be in"),
    ("--augment.snr_db=[20,5]", "snr_db must be an ordered pair"),
    ("--augment.gain_db=[1]", "gain_db must be an ordered pair"),
    ("--augment.speed_factors=[0.9,0]", "speed_factors must be"),
    ("--augment.rt60=[0,0.5]", "rt60 must be > 0"),
    ("--augment.room_max=[2,2,2]", "room_min / room_max"),
    ("--augment.colours=[blue]", "colours must be"),
    ("--augment.babble_talkers=[0,3]", "babble_talkers must be"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [bad])


def test_config_defaults_and_noise_weights():
    assert load_config("tiny").augment.enabled is False
    with pytest.raises(ConfigError, match="noise weights"):
        load_config("tiny", ["--augment.coloured_weight=0", "--augment.babble_weight=0", "--augment.music_weight=0"])
    load_config("tiny", ["--augment.coloured_weight=0", "--augment.babble_weight=0", "--augment.music_weight=0",
                         "--augment.noise_prob=0"])


def _dataset(corpus, bank_dir, seed=0):
    L = CorpusLayout(corpus)
    cuts = load_manifest(L.feature_cuts("train"))
    cfg = dataclasses.replace(AugmentConfig(enabled=True, reverb_prob=0.5, noise_prob=0.8), **SMALL_BANK)
    aug = Augmenter.from_config(cfg, bank_dir, babble_cuts=cuts, seed=seed)
    return AsrDataset(Tokenizer(L.bpe_model(64)), FeatureNormalizer.from_file(L.global_stats), seed=seed,
                      augmenter=aug), cuts


def test_augmented_features_are_keyed_by_seed_epoch_and_ids(tiny_corpus, tmp_path):
    ds, cuts = _dataset(tiny_corpus, tmp_path)
    batch = cuts.subset(first=6)
    a = ds[batch]
    b = _dataset(tiny_corpus, tmp_path)[0][batch]  # a fresh dataset, same seed and epoch
    assert torch.equal(a["feats"], b["feats"]) and torch.equal(a["feat_lens"], b["feat_lens"])
    plain = AsrDataset(ds.tokenizer, ds.normalizer)[batch]
    assert not torch.equal(plain["feats"][:, :10], a["feats"][:, :10])  # augmented, not the stored features
    ds.set_epoch(1)
    assert not torch.equal(ds[batch]["feats"][:, :10], a["feats"][:, :10])
    assert not torch.equal(_dataset(tiny_corpus, tmp_path, seed=1)[0][batch]["feats"][:, :10], a["feats"][:, :10])
    # a cut's augmentation does not depend on the batch it is in
    ds.set_epoch(0)
    single = ds[cuts.subset(first=1)]
    n = int(single["feat_lens"][0])
    assert torch.equal(single["feats"][0, :n], a["feats"][0, :n])
    assert cut_rng(0, 0, "x").random() == cut_rng(0, 0, "x").random() != cut_rng(0, 0, "y").random()

    # a DataLoader worker (a copy of the dataset made when the epoch's loader starts) agrees
    ds.set_epoch(1)
    sampler = make_sampler(batch, max_duration=1e9, shuffle=False)
    (via_worker,) = list(make_loader(ds, sampler, num_workers=1))
    assert torch.equal(via_worker["feats"], ds[batch]["feats"])


def test_augmentation_starts_at_its_epoch(tiny_corpus, tmp_path):
    ds, cuts = _dataset(tiny_corpus, tmp_path)
    batch = cuts.subset(first=4)
    plain = AsrDataset(ds.tokenizer, ds.normalizer)[batch]["feats"]
    ds.augment_start_epoch = 2
    for epoch in (0, 1):  # clean epochs: the stored features, exactly
        ds.set_epoch(epoch)
        assert torch.equal(ds[batch]["feats"], plain)
    ds.set_epoch(2)
    assert not torch.equal(ds[batch]["feats"][:, :10], plain[:, :10])
    with pytest.raises(ConfigError, match="start_epoch"):
        load_config("tiny", ["--augment.start_epoch=-1"])


def test_spec_augment_starts_at_its_epoch(tiny_corpus, tmp_path):
    ds, cuts = _dataset(tiny_corpus, tmp_path)
    batch = cuts.subset(first=4)
    plain = AsrDataset(ds.tokenizer, ds.normalizer)[batch]["feats"]
    masked = AsrDataset(ds.tokenizer, ds.normalizer, spec_augment=SpecAugmentConfig(2, 15, 2, 0.1),
                        spec_augment_start_epoch=1)
    masked.set_epoch(0)
    assert torch.equal(masked[batch]["feats"], plain)
    masked.set_epoch(1)
    assert not torch.equal(masked[batch]["feats"], plain)
    with pytest.raises(ConfigError, match="spec_augment_start_epoch"):
        load_config("tiny", ["--data.spec_augment_start_epoch=-1"])


def test_resumed_augmented_run_is_bitwise_identical(tiny_corpus, tmp_path, interrupt_at, monkeypatch):
    from omnisparse.train.registry import train
    from omnisparse.train.trainer import Trainer

    def cfg(out):
        return load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={out}",
                                    "--train.max_steps=4", "--train.ckpt_every=2", "--data.max_duration=10",
                                    "--data.dev_subset=2", "--augment.enabled=true", "--augment.reverb_prob=0.5",
                                    "--augment.noise_prob=0.8", f"--augment.rir_cache_dir={tmp_path / 'rir'}",
                                    *(f"--augment.{k}={v}" for k, v in SMALL_BANK.items())])

    calls = {"n": 0}
    orig = Augmenter.__call__

    def counting(self, *a, **kw):
        calls["n"] += 1
        return orig(self, *a, **kw)

    monkeypatch.setattr(Augmenter, "__call__", counting)
    t = Trainer(cfg(tmp_path / "v"))
    t.validate()
    assert calls["n"] == 0  # dev is never augmented
    next(t.batches())
    assert calls["n"] > 0
    monkeypatch.undo()

    straight = train(cfg(tmp_path / "a"))
    interrupt_at(Trainer, 2, train, cfg(tmp_path / "b"))
    resumed = train(cfg(tmp_path / "b"))
    assert straight["step"] == resumed["step"] == 4
    a = load_file(str(tmp_path / "a" / "ckpt-00000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
