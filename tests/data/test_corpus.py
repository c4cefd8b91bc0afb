"""The offline default corpus: determinism, disjoint splits and sentence sources, held-out speakers and
engines, resume, lhotse I/O."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omnisparse.data import corpus as corpus_mod
from omnisparse.data.corpus import (
    CORPUS_PRESETS,
    SPLITS,
    UNSEEN_SPLIT,
    CorpusPreset,
    build_corpus,
    held_out_speakers,
    plan_corpus,
    speakers_in,
)
from omnisparse.data.corpus_plan import engine_speakers
from omnisparse.data.engines import ENGINES, split_speaker
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.text import DEFAULT_FORTUNES_DIR

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None or not Path(DEFAULT_FORTUNES_DIR).is_dir(),
    reason="espeak-ng, sox and fortunes are needed (scripts/setup.sh)",
)

MICRO = CorpusPreset("micro", train_utts=12, dev_utts=4, test_clean_utts=4, test_other_utts=4)


def audio_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "audio").rglob("*.flac"))}


def manifest_lines(root: Path, kind: str, split: str) -> list[dict]:
    """A manifest's records with the corpus root replaced, so two builds in two places compare."""
    path = getattr(CorpusLayout(root), kind)(split)
    with gzip.open(path, "rt") as f:
        text = f.read().replace(str(root.resolve()), "ROOT")
    return [json.loads(line) for line in text.splitlines()]


def load_cuts(root: Path, split: str):
    from lhotse import load_manifest

    return load_manifest(CorpusLayout(root).cuts(split))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_a")
    summary = build_corpus(root, preset="tiny", seed=0, num_jobs=2, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def tiny_again(tmp_path_factory):
    """The same corpus built again elsewhere, with another number of processes."""
    root = tmp_path_factory.mktemp("tiny_b")
    summary = build_corpus(root, preset="tiny", seed=0, num_jobs=3, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro_s0")
    build_corpus(root, preset=MICRO, seed=0, num_jobs=2, progress=False)
    return root


# ----------------------------------------------------------------------------------------------
# plan (cheap, no audio)
# ----------------------------------------------------------------------------------------------

def test_presets():
    tiny = CORPUS_PRESETS["tiny"]
    assert sum(tiny.counts().values()) == 320
    small = CORPUS_PRESETS["small"]
    assert small.counts() == {"train": 24000, "dev": 500, "test-clean": 1000, "test-other": 1000, UNSEEN_SPLIT: 600}
    assert CORPUS_PRESETS["medium"].train_utts * 2.5 / 3600 >= 80
    for preset in CORPUS_PRESETS.values():
        assert preset.unseen_engine not in dict(preset.engines)
    with pytest.raises(ValueError, match="unknown corpus preset"):
        plan_corpus("huge")
    with pytest.raises(ValueError, match="also a train engine"):
        CorpusPreset("bad", 1, 1, 1, 1, 1, engines=(("pico", 1.0),), unseen_engine="pico")
    with pytest.raises(ValueError, match="unknown engine"):
        CorpusPreset("bad", 1, 1, 1, 1, 1, engines=(("nope", 1.0),))


@pytest.mark.parametrize("engine", list(ENGINES))
def test_held_out_speakers(engine):
    seen, held = engine_speakers(engine)
    assert set(held).isdisjoint(seen) and set(held) | set(seen) == set(ENGINES[engine].speakers())
    variants = {split_speaker(s)[2] for s in ENGINES[engine].speakers()}
    if held:
        # only the combination is new: every voice and every variant is heard in train
        assert {split_speaker(s)[1] for s in seen} == {split_speaker(s)[1] for s in ENGINES[engine].speakers()}
        assert {split_speaker(s)[2] for s in seen} == variants
    if engine == "espeak":  # 8 accents x 10 variants, 16 held out: the split of the first corpus
        assert len(held) == 16 and "espeak:en-us+m1" in held and "espeak:en-us+m3" in seen


def test_plan_repeats_train_sentences_only_inside_train():
    sentences = [f"sentence number {i} of the pool" for i in range(40)]
    preset = CorpusPreset("rep", train_utts=75, dev_utts=5, test_clean_utts=5, test_other_utts=5)
    plans = plan_corpus(preset, seed=3, sentences=sentences)
    texts = {split: [p["text"] for p in plans[split]] for split in SPLITS}
    assert len(set(texts["train"])) == 25  # the whole pool, used three times
    for split in ("dev", "test-clean", "test-other"):
        assert len(set(texts[split])) == 5
        assert set(texts[split]).isdisjoint(texts["train"])
    assert plan_corpus(preset, seed=3, sentences=sentences) == plans
    assert plan_corpus(preset, seed=4, sentences=sentences) != plans
    with pytest.raises(ValueError, match="needs"):
        plan_corpus(CorpusPreset("big", 10, 20, 20, 20), sentences=sentences)


# ----------------------------------------------------------------------------------------------
# the tiny corpus
# ----------------------------------------------------------------------------------------------

def test_summary_and_corpus_json(tiny):
    root, summary = tiny
    on_disk = json.loads((root / "corpus.json").read_text())
    assert on_disk["splits"] == summary["splits"]
    assert on_disk["seed"] == 0 and on_disk["preset"]["name"] == "tiny"
    assert on_disk["held_out_speakers"] == held_out_speakers(on_disk["engines"]["train"])
    for split, n in CORPUS_PRESETS["tiny"].counts().items():
        if split not in summary["splits"]:  # its engine is not installed here
            assert split == UNSEEN_SPLIT and on_disk["engines"]["unseen"] is None
            continue
        s = summary["splits"][split]
        assert s["utterances"] == n and s["failed"] == 0 and s["synthesised"] == n
        assert 0.8 < s["hours"] * 3600 / n < 8  # seconds per utterance
        assert sum(e["utterances"] for e in s["engines"].values()) == n
        assert sum(s["sources"].values()) == n
    assert CorpusLayout(root).splits() == sorted(summary["splits"])


def test_same_seed_same_corpus(tiny, tiny_again):
    (a, _), (b, summary_b) = tiny, tiny_again
    ha, hb = audio_hashes(a), audio_hashes(b)
    assert len(ha) == sum(s["utterances"] for s in summary_b["splits"].values())
    assert ha == hb  # byte-identical FLAC with 2 processes and with 3
    for split in summary_b["splits"]:
        for kind in ("recordings", "supervisions", "cuts"):
            assert manifest_lines(a, kind, split) == manifest_lines(b, kind, split)


def test_splits_have_disjoint_sentences_with_their_sources(tiny):
    root, summary = tiny
    splits = list(summary["splits"])
    sups = {split: [c.supervisions[0] for c in load_cuts(root, split)] for split in splits}
    texts = {split: [s.text for s in sups[split]] for split in splits}
    for i, s1 in enumerate(splits):
        for s2 in splits[i + 1:]:
            assert set(texts[s1]).isdisjoint(texts[s2]), (s1, s2)
    for split in splits:
        if split != "train":
            assert len(set(texts[split])) == len(texts[split])
    sources = {s.custom["source"] for split in splits for s in sups[split]}
    assert len(sources) >= 2 and "fortunes" in sources  # more than one text source, each recorded


def test_test_other_speakers_are_held_out(tiny):
    root, summary = tiny
    spk = {split: speakers_in(load_cuts(root, split)) for split in summary["splits"]}
    train_engines = summary["engines"]["train"]
    held = set(held_out_speakers(train_engines))
    seen = {s for e in train_engines for s in engine_speakers(e)[0]}
    assert spk["test-other"] <= held
    for split in ("train", "dev", "test-clean"):
        assert spk[split] <= seen
        assert spk[split].isdisjoint(spk["test-other"])
    assert len(spk["train"]) >= 30
    assert {split_speaker(s)[0] for s in spk["train"]} == set(train_engines)  # every engine speaks in train


def test_unseen_engine_split_holds_no_train_engine(tiny):
    root, summary = tiny
    if UNSEEN_SPLIT not in summary["splits"]:
        pytest.skip(f"the unseen engine is not installed: {summary['missing_engines']}")
    unseen = summary["engines"]["unseen"]
    engines = {split: {split_speaker(s)[0] for s in speakers_in(load_cuts(root, split))} for split in summary["splits"]}
    assert engines[UNSEEN_SPLIT] == {unseen}
    for split, names in engines.items():
        if split != UNSEEN_SPLIT:
            assert unseen not in names, split
    assert list(summary["splits"][UNSEEN_SPLIT]["engines"]) == [unseen]


def test_audio_format_and_noise_floor(tiny):
    root, _ = tiny
    files = sorted((root / "audio").rglob("*.flac"))
    for p in files:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16"), p
    for p in files[::25]:
        x, _ = sf.read(str(p), dtype="int16")
        assert np.mean(x == 0) < 0.05, p  # no stretches of digital silence
        assert 1000 < np.abs(x).max() < 32767, p  # audible, not clipped


def test_lhotse_reads_cuts(tiny):
    root, _ = tiny
    for split in SPLITS:
        if not CorpusLayout(root).cuts(split).exists():
            continue
        cuts = load_cuts(root, split)
        for cut in list(cuts)[:3]:
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples)
            assert cut.sampling_rate == 16000
            sup = cut.supervisions[0]
            assert sup.language == "English" and sup.text and "+" in sup.speaker and ":" in sup.speaker
            assert sup.custom["engine"] == split_speaker(sup.speaker)[0] and sup.custom["source"]
            assert sup.duration == pytest.approx(cut.duration)
        assert all(c.id.startswith(split + "-") for c in cuts)


def test_resume_repairs_missing_and_corrupt_files(tiny, tmp_path):
    src, first = tiny
    root = tmp_path / "resumed"
    shutil.copytree(src, root)
    audio = CorpusLayout(root).audio_dir("train")
    (audio / "train-000005.flac").unlink()
    (CorpusLayout(root).audio_dir("test-other") / "test-other-000002.flac").write_bytes(b"0123456789")
    stale = audio / ".train-000007.tmp99999.flac"
    stale.write_bytes(b"half a file")  # left by a killed build
    CorpusLayout(root).cuts("dev").unlink()

    summary = build_corpus(root, preset="tiny", seed=0, num_jobs=2, progress=False)
    assert summary["splits"]["train"]["synthesised"] == 1
    assert summary["splits"]["test-other"]["synthesised"] == 1
    total = sum(s["utterances"] for s in first["splits"].values())
    assert sum(s["reused"] for s in summary["splits"].values()) == total - 2
    assert not stale.exists()
    assert audio_hashes(root) == audio_hashes(src)
    for split in summary["splits"]:
        assert manifest_lines(root, "cuts", split) == manifest_lines(src, "cuts", split)


# ----------------------------------------------------------------------------------------------
# small custom builds
# ----------------------------------------------------------------------------------------------

def test_different_seed_different_corpus(micro, tmp_path):
    b = build_corpus(tmp_path / "s1", preset=MICRO, seed=1, num_jobs=2, progress=False)
    assert b["splits"]["train"]["utterances"] == 12
    ta = [c.supervisions[0].text for c in load_cuts(micro, "train")]
    tb = [c.supervisions[0].text for c in load_cuts(tmp_path / "s1", "train")]
    assert ta != tb
    ha, hb = audio_hashes(micro), audio_hashes(tmp_path / "s1")
    assert ha.keys() == hb.keys()
    assert all(ha[k] != hb[k] for k in ha)


def test_failed_synthesis_is_counted_not_fatal(micro, tmp_path, monkeypatch):
    real_render = corpus_mod.render
    calls = {"n": 0}

    def flaky(plan, **kw):
        if plan["utt_id"] == "dev-000001":
            calls["n"] += 1
            raise RuntimeError("engine failed (1): simulated")
        return real_render(plan, **kw)

    monkeypatch.setattr(corpus_mod, "render", flaky)
    summary = build_corpus(tmp_path / "c", preset=MICRO, seed=0, num_jobs=1, progress=False)
    assert calls["n"] == 2  # tried, retried once, then reported
    assert summary["splits"]["dev"]["failed"] == 1
    assert summary["splits"]["dev"]["utterances"] == MICRO.dev_utts - 1
    assert summary["failed_utterances"] == ["dev-000001"]
    assert "dev-000001" not in {c.recording_id for c in load_cuts(tmp_path / "c", "dev")}
    assert not (CorpusLayout(tmp_path / "c").audio_dir("dev") / "dev-000001.flac").exists()
    # everything else is byte-identical to the same seed built with 2 processes
    expected = {k: v for k, v in audio_hashes(micro).items() if "dev-000001" not in k}
    assert audio_hashes(tmp_path / "c") == expected


def test_missing_tools_error(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="scripts/setup.sh"):
        build_corpus(tmp_path / "none", preset=MICRO, progress=False)


def test_refuses_a_directory_planned_differently(micro, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(micro, root)
    before = audio_hashes(root)
    with pytest.raises(ValueError, match="another plan"):
        build_corpus(root, preset=MICRO, seed=1, progress=False)  # would mix two corpora
    (root / corpus_mod.PLAN_MARKER).unlink()
    with pytest.raises(ValueError, match="unknown corpus"):
        build_corpus(root, preset=MICRO, seed=0, progress=False)
    assert audio_hashes(root) == before
