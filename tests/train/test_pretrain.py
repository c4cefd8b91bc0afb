import csv
import json
import statistics

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import load_manifest
from safetensors.torch import load_file

from omnisparse.config import load_config
from omnisparse.data.layout import CorpusLayout
from omnisparse.io.checkpoint import CheckpointError
from omnisparse.train.pretrain import PretrainTrainer, pretrain
from omnisparse.train.trainer import Trainer

SMALL_HEADS = ["--pretrain.codebook_entries=16", "--pretrain.codevector_dim=16", "--pretrain.num_negatives=10"]


def _cfg(corpus, out, *extra):
    return load_config("pretrain_tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=6",
                                         "--train.ckpt_every=3", "--train.log_every=1", "--data.max_duration=15",
                                         "--pretrain.valid_batches=1", *SMALL_HEADS, *extra])


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_pretrain_runs_and_logs_both_paths(tiny_corpus, tmp_path):
    out = pretrain(_cfg(tiny_corpus, tmp_path / "p", "--pretrain.sparsity_ramp_steps=0"))
    assert out["step"] == 6
    cost = json.loads((tmp_path / "p" / "cost.json").read_text())
    assert cost["optimizer_steps"] == 6 and cost["fwd_bwd_passes"] == 12  # dense + sparse per step
    rows = [r for r in _rows(tmp_path / "p") if r.get("dense_contrastive")]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        for k in ("loss", "temperature", "dense_contrastive", "sparse_contrastive", "dense_diversity", "sparse_accuracy",
                  "dense_code_ppl", "sparse_code_ppl", "dense_feat_pen"):
            assert np.isfinite(float(r[k])), k
        assert float(r["sparsity"]) == 0.7
    assert float(rows[-1]["temperature"]) == pytest.approx(2.0 * 0.98 ** 5)
    dev = [r for r in _rows(tmp_path / "p") if r.get("dev_dense_contrastive")]
    assert dev and all(np.isfinite(float(dev[-1][k])) for k in ("dev_dense_contrastive", "dev_sparse_accuracy"))
    # validation runs each path under its own masks: the 0.7-sparse encoder gives another output ...
    assert dev[-1]["dev_dense_contrastive"] != dev[-1]["dev_sparse_contrastive"]
    # ... while the code targets come from the (never pruned) front end: one codebook usage for both
    assert dev[-1]["dev_dense_code_ppl"] == dev[-1]["dev_sparse_code_ppl"]
    ckpt = tmp_path / "p" / "ckpt-00000006"
    w = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("encoder.layers.") for k in w) and "quantizer.codevectors" in w and "mask_emb" in w
    state = json.loads((ckpt / "state.json").read_text())
    assert state["kind"] == "pretrain" and (ckpt / "global_stats.json").exists()


def test_sparse_path_runs_masked_at_s_star_in_stream_mode(tiny_corpus, tmp_path):
    tr = PretrainTrainer(_cfg(tiny_corpus, tmp_path / "s", "--pretrain.sparsity=0.6", "--pretrain.sparsity_ramp_steps=0"))
    seen = []
    orig = tr.model.forward

    def spy(*a, **kw):
        dens = [m.density() for m in tr.bank.modules.values()]
        seen.append((kw["mode"], min(dens), max(dens)))
        return orig(*a, **kw)

    tr.model.forward = spy
    batch = next(iter(tr.batches()))
    metrics = tr.train_step(batch)
    assert seen[0] == ("full", 1.0, 1.0)
    assert seen[1][0] == "stream" and seen[1][1] == pytest.approx(0.4, abs=0.01) and seen[1][2] == pytest.approx(0.4, abs=0.01)
    assert all(m.mask is None for m in tr.bank.modules.values())  # dense again after the step
    assert metrics["loss"] == pytest.approx(metrics["dense_loss"] + metrics["sparse_loss"])
    # without the supernet: one dense pass in train.mode
    tr.cfg.pretrain.supernet = False
    assert tr.paths() == [("dense", tr.cfg.train.mode, 0.0)]


def test_pretrain_overfits_a_handful_of_utterances(tiny_corpus, tmp_path):
    """Contrastive loss falls from chance (log(1 + K)) and masked-frame accuracy rises on 4 utterances."""
    L = CorpusLayout(tiny_corpus)
    load_manifest(L.feature_cuts("train")).subset(first=4).to_file(L.feature_cuts("pt_few4"))
    cfg = _cfg(tiny_corpus, tmp_path / "o", "--data.train_splits=[pt_few4]", "--data.max_duration=30",  # one batch
               "--train.max_steps=80",
               "--train.ckpt_every=1000", "--train.decay=constant", "--train.warmup_steps=5", "--train.lr=1e-3",
               "--pretrain.valid_batches=0", "--pretrain.codebook_entries=32", "--pretrain.codevector_dim=32",
               "--pretrain.num_negatives=20", "--pretrain.temp_decay=0.999995", "--pretrain.sparsity_ramp_steps=0")
    pretrain(cfg)
    rows = _rows(tmp_path / "o")
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    for path in ("dense", "sparse"):
        c = [float(r[f"{path}_contrastive"]) for r in rows]
        acc = [float(r[f"{path}_accuracy"]) for r in rows]
        assert statistics.mean(c[:5]) > 2.9  # ~ log(21) = 3.04 at chance
        assert statistics.mean(c[-10:]) < statistics.mean(c[:5]) - 0.3, (path, c[:5], c[-10:])
        assert statistics.mean(acc[-10:]) > statistics.mean(acc[:5]) + 0.1
    assert float(rows[-1]["dense_code_ppl"]) > 10  # the codebook did not collapse (2 groups x 32 entries)


def test_pretrain_resume_is_bitwise_identical(tiny_corpus, tmp_path, interrupt_at):
    straight = pretrain(_cfg(tiny_corpus, tmp_path / "a"))
    assert straight["step"] == 6
    interrupt_at(PretrainTrainer, 3, pretrain, _cfg(tiny_corpus, tmp_path / "b"))
    assert pretrain(_cfg(tiny_corpus, tmp_path / "b"))["step"] == 6
    a = load_file(str(tmp_path / "a" / "ckpt-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cost = json.loads((tmp_path / "b" / "cost.json").read_text())
    assert cost["optimizer_steps"] == 6 and cost["fwd_bwd_passes"] == 12


def _tiny_train_cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={out}", "--train.max_steps=3",
                                "--train.ckpt_every=3", "--data.max_duration=15", *extra])


def test_init_encoder_from_loads_encoder_only_then_fine_tunes(tiny_corpus, tmp_path):
    pre = tmp_path / "pre"
    pretrain(_cfg(tiny_corpus, pre, "--train.max_steps=3"))
    pre_w = load_file(str(pre / "ckpt-00000003" / "model.safetensors"))

    fresh = Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "fresh"))
    tuned = Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "ft", f"--train.init_encoder_from={pre}"))
    own, ref = tuned.model.state_dict(), fresh.model.state_dict()
    for k, v in own.items():
        if k.startswith("encoder."):
            assert torch.equal(v, pre_w[k]), k
        else:  # predictor, joiner: the fresh initialisation of the same seed
            assert torch.equal(v, ref[k]), k
    info = tuned.cost["init_encoder_from"]
    assert info["kind"] == "pretrain" and info["step"] == 3 and info["tensors"] == sum(k.startswith("encoder.") for k in own)
    assert "predictor" in info["not_loaded"] and "joiner" in info["not_loaded"]

    out = tuned.run()  # fine-tuning (RNN-T) from the pre-trained encoder
    assert out["step"] == 3
    assert json.loads((tmp_path / "ft" / "cost.json").read_text())["init_encoder_from"]["path"].endswith("ckpt-00000003")

    # a resumed run keeps its own weights (no re-initialisation from the pre-trained encoder)
    again = Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "ft", f"--train.init_encoder_from={pre}", "--train.max_steps=4"))
    assert again.step == 3
    ft_w = load_file(str(tmp_path / "ft" / "ckpt-00000003" / "model.safetensors"))
    for k, v in again.model.state_dict().items():
        assert torch.equal(v, ft_w[k]), k


def test_init_encoder_from_refuses_another_encoder(tiny_corpus, tmp_path):
    pre = tmp_path / "pre"
    pretrain(_cfg(tiny_corpus, pre, "--train.max_steps=1", "--train.ckpt_every=1"))
    with pytest.raises(CheckpointError, match="d_model"):
        Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "x", f"--train.init_encoder_from={pre}", "--model.d_model=48"))
    with pytest.raises(CheckpointError, match="n_layers"):
        Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "y", f"--train.init_encoder_from={pre}", "--model.n_layers=3"))
    # chunking and dropout may differ; so may the predictor
    Trainer(_tiny_train_cfg(tiny_corpus, tmp_path / "z", f"--train.init_encoder_from={pre}", "--model.chunk_size=2",
                            "--model.pred_type=stateless"))


def test_pretrain_on_an_audio_dir(tiny_corpus, tmp_path):
    src = sorted((tiny_corpus / "audio" / "train").glob("*.flac"))[:4]
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    for i, p in enumerate(src[:3]):
        (audio / ("sub" if i == 0 else "") / p.name).write_bytes(p.read_bytes())
    x, sr = sf.read(str(src[3]))
    sf.write(str(audio / "eight_khz.wav"), x[::2], sr // 2)  # resampled to 16 kHz on the fly
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    (audio / "notes.txt").write_text("ignored")
    cfg = _cfg(tiny_corpus, tmp_path / "ad", f"--pretrain.audio_dir={audio}", "--pretrain.audio_stats=audio",
               "--train.max_steps=2", "--train.ckpt_every=2")
    tr = PretrainTrainer(cfg)
    assert len(tr.train_cuts) == 4 and tr.audio_skipped == {"unreadable": 1}
    stats = json.loads((tmp_path / "ad" / "global_stats.json").read_text())
    assert stats["source"].startswith("audio_dir") and stats["cuts"] == 4
    out = tr.run()
    assert out["step"] == 2 and tr.dataset.skipped == {}
    # auto: the corpus's statistics when it has them
    cfg = _cfg(tiny_corpus, tmp_path / "ad2", f"--pretrain.audio_dir={audio}", "--train.max_steps=1")
    PretrainTrainer(cfg)
    assert json.loads((tmp_path / "ad2" / "global_stats.json").read_text())["source"].endswith("global_stats.json")


def test_cli_pretrain(tiny_corpus, tmp_path):
    from omnisparse.cli import main

    rc = main(["pretrain", "--config", "pretrain_tiny", f"--data.corpus_dir={tiny_corpus}",
               f"--train.out_dir={tmp_path / 'c'}", "--train.max_steps=2", "--train.ckpt_every=2", *SMALL_HEADS])
    assert rc == 0 and (tmp_path / "c" / "ckpt-00000002").exists()
    assert main(["pretrain", "--config", "pretrain_tiny", "--pretrain.sparsity=1.5",
                 f"--train.out_dir={tmp_path / 'd'}"]) == 2


@pytest.mark.slow
def test_pretrain_ddp_two_gloo_processes(tiny_corpus, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "omnisparse.cli", "pretrain", "--config", "pretrain_tiny", f"--data.corpus_dir={tiny_corpus}",
           f"--train.out_dir={out}", "--train.max_steps=3", "--train.ckpt_every=3", "--train.threads=1", *SMALL_HEADS]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["world_size"] == 2 and cost["ddp_replicas_identical"] is True and cost["fwd_bwd_passes"] == 6


def test_unlabelled_audio_is_augmented_from_its_start_epoch(tiny_corpus):
    from omnisparse.config import AugmentConfig
    from omnisparse.data.augment import Augmenter
    from omnisparse.data.features import FeatureNormalizer
    from omnisparse.data.unlabelled import UnlabelledDataset

    cuts = load_manifest(CorpusLayout(tiny_corpus).cuts("train")).subset(first=3)
    norm = FeatureNormalizer.from_file(CorpusLayout(tiny_corpus).global_stats)
    cfg = AugmentConfig(enabled=True, reverb_prob=0.0, noise_prob=1.0, babble_weight=0.0, music_weight=0.0)
    aug = Augmenter.from_config(cfg, "/nonexistent", None, 0)
    ds = UnlabelledDataset(norm, on_the_fly=True, augmenter=aug, seed=0, augment_start_epoch=1)
    clean = ds[cuts]["feats"]
    ds.set_epoch(1)
    noisy, again = ds[cuts]["feats"], ds[cuts]["feats"]
    assert torch.equal(noisy, again)  # keyed by (seed, epoch, cut): the same batch after a resume
    assert noisy.shape[0] == clean.shape[0] and not torch.equal(noisy[:, : clean.shape[1]], clean[:, : noisy.shape[1]])
    assert torch.equal(UnlabelledDataset(norm, on_the_fly=True)[cuts]["feats"], clean)  # epoch 0: as without
