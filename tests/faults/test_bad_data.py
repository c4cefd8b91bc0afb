"""A LibriSpeech directory with every kind of bad file, end to end through the command line:
``data librispeech`` -> ``data prepare`` -> ``train``. Each bad utterance is skipped or fixed and
counted by reason in a printed summary and a JSON file; nothing crashes, nothing is silent.

Covered elsewhere (not repeated): a missing / corrupt / wrong-rate / empty-transcript corpus through
``validate_cuts`` and ``prepare_features`` (``tests/data/test_validate.py``), a plain missing and a
corrupt FLAC in ``prepare_librispeech`` (``tests/data/test_librispeech.py``), features that fail to
load during training (``tests/data/test_batching.py``), bad files given to ``transcribe``
(``tests/test_cli.py``; random ones: ``test_fuzz.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lhotse import load_manifest

from omnisparse.cli import main
from omnisparse.config import load_config
from omnisparse.data.layout import CorpusLayout
from omnisparse.utils.faults import UTTERANCE_FAULTS, plant_utterance

SPK, TRAIN_CHAP, DEV_CHAP = "1089", "134686", "134691"
N_TRAIN, N_DEV = 40, 6
LONG_S = 20.0  # seconds: the too-long utterance (the training run drops cuts longer than 15 s)
FAULTS = dict(enumerate(UTTERANCE_FAULTS))  # utterance index in train-clean-100 -> the fault planted there


@pytest.fixture(scope="module")
def bad_librispeech(tiny_corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badls") / "LibriSpeech"
    L = CorpusLayout(tiny_corpus)
    for part, chap, split, n, faults in (("train-clean-100", TRAIN_CHAP, "train", N_TRAIN, FAULTS),
                                         ("dev-clean", DEV_CHAP, "dev", N_DEV, {})):
        d = root / part / SPK / chap
        d.mkdir(parents=True)
        lines = []
        for i, c in enumerate(load_manifest(L.cuts(split)).subset(first=n)):
            lines.append(plant_utterance(d / f"{SPK}-{chap}-{i:04d}.flac", c.recording.sources[0].source,
                                         c.supervisions[0].text, faults.get(i), long_s=LONG_S))
        (d / f"{SPK}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_bad_librispeech_is_counted_prepared_and_trains(bad_librispeech, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["data", "librispeech", str(bad_librispeech), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    parsed = json.loads((out / "librispeech.json").read_text())
    # parsing: two lines without usable text, a FLAC that is not audio and one of 0 samples, a line
    # without a FLAC
    assert parsed["train-clean-100"]["skipped"] == {"empty_text": 2, "unreadable": 2, "missing": 1}
    assert parsed["train-clean-100"]["fixed"] == {"non_ascii": 1}
    assert parsed["dev-clean"]["skipped"] == {} and parsed["dev-clean"]["fixed"] == {}
    assert "LibriSpeech train-clean-100: skipped 5 utterances" in printed and "fixed {'non_ascii': 1}" in printed

    assert main(["data", "prepare", "--corpus", str(out), "--vocab-size", "64", "--train-splits",
                 "train-clean-100", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((out / "fbank" / "validation_train-clean-100.json").read_text())
    # features: the truncated file (its header reads, its samples do not decode) skipped; fixed and
    # counted: the 8 kHz file, the stereo file
    assert rep["counts"] == {"unreadable": 1, "resampled": 1, "multichannel": 1}, rep
    assert rep["total"] == N_TRAIN - 5 and rep["kept"] == N_TRAIN - 6
    assert any("0003.flac" in e and "do not decode" in e for e in rep["examples"]["unreadable"])
    assert "train-clean-100: 35 utterances, kept 34, skipped 1" in printed
    assert "resampled (fixed): 1" in printed and "unreadable (skipped): 1" in printed
    stored = load_manifest(CorpusLayout(out).feature_cuts("train-clean-100"))
    assert len(stored) == N_TRAIN - 6 and all(c.sampling_rate == 16000 for c in stored)
    assert all(c.num_features > 0 and np.isfinite(c.load_features()).all() for c in stored)

    # training: the too-long utterance is dropped and counted; the run ends normally
    run = tmp_path / "run"
    cfg = load_config("tiny", [f"--data.corpus_dir={out}", "--data.train_splits=[train-clean-100]",
                               "--data.dev_split=dev-clean", f"--train.out_dir={run}", "--train.max_steps=3",
                               "--train.ckpt_every=3", "--data.max_cut_duration=15", "--data.max_duration=60"])
    from omnisparse.train.registry import train

    res = train(cfg)
    assert res["step"] == 3
    assert res["cost"]["skipped_utterances"] == {"too_long": 1}
    assert json.loads((run / "cost.json").read_text())["skipped_utterances"] == {"too_long": 1}


def test_every_utterance_bad_is_one_clear_error(tmp_path, capsys):
    """A part whose every file is broken: no manifest of nothing, one line naming the part."""
    d = tmp_path / "LibriSpeech" / "dev-clean" / SPK / DEV_CHAP
    d.mkdir(parents=True)
    (d / f"{SPK}-{DEV_CHAP}-0000.flac").write_bytes(b"not audio")
    (d / f"{SPK}-{DEV_CHAP}.trans.txt").write_text(f"{SPK}-{DEV_CHAP}-0000 HELLO\n{SPK}-{DEV_CHAP}-0001 GONE\n")
    assert main(["data", "librispeech", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # (also holds the progress bar)
    lines = [line for line in err.splitlines() if line.startswith("omnisparse: error")]
    assert "Traceback" not in err and len(lines) == 1 and "dev-clean has no usable utterances" in lines[0]
    assert not CorpusLayout(tmp_path / "out").cuts("dev-clean").exists()


def test_non_ascii_transcripts_in_a_corpus_are_counted_as_fixed(tiny_corpus):
    """Corpora prepared by other tools reach ``validate_cuts`` with raw transcripts."""
    from omnisparse.data.validate import validate_cuts

    cuts = load_manifest(CorpusLayout(tiny_corpus).cuts("dev")).subset(first=4).to_eager()
    texts = ["Ça va, naïve café", "東京", None, "plain ascii"]
    for c, t in zip(cuts, texts):
        if t is not None:
            c.supervisions[0].text = t
    good, rep = validate_cuts(cuts, check_audio=False, name="dev")
    assert rep.counts == {"non_ascii": 1, "empty_text": 1} and rep.kept == 3
    assert "Ça va" in rep.examples["non_ascii"][0] and "non_ascii (fixed): 1" in rep.summary()
