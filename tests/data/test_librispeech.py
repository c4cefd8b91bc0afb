"""LibriSpeech preparation through lhotse's recipe, on a fake tree in LibriSpeech layout."""

import shutil

from lhotse import load_manifest

from omnisparse.data.layout import CorpusLayout
from omnisparse.data.librispeech import prepare_librispeech


def _fake_librispeech(tiny_corpus, root):
    cuts = list(load_manifest(CorpusLayout(tiny_corpus).cuts("dev")).subset(first=6))
    for part, group in (("dev-clean", cuts[:3]), ("test-other", cuts[3:])):
        spk, chap = "1089", "134686" if part == "dev-clean" else "134691"
        d = root / "LibriSpeech" / part / spk / chap
        d.mkdir(parents=True)
        lines = []
        for i, c in enumerate(group):
            uid = f"{spk}-{chap}-{i:04d}"
            shutil.copy(c.recording.sources[0].source, d / f"{uid}.flac")
            lines.append(f"{uid} {c.supervisions[0].text.upper()}")
        if part == "test-other":
            (d / f"{spk}-{chap}-0001.flac").write_bytes(b"corrupt")  # unreadable
            lines.append(f"{spk}-{chap}-0099 THIS FILE IS MISSING")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return [c.supervisions[0].text for c in cuts]


def test_prepare_fake_tree(tiny_corpus, tmp_path):
    texts = _fake_librispeech(tiny_corpus, tmp_path / "src")
    summary = prepare_librispeech(tmp_path / "src", tmp_path / "out")
    assert set(summary) == {"dev-clean", "test-other"}
    assert summary["dev-clean"]["utterances"] == 3
    assert summary["test-other"]["utterances"] == 2
    assert summary["test-other"]["skipped"] == {"unreadable": 1, "missing": 1}
    L = CorpusLayout(tmp_path / "out")
    assert L.splits() == ["dev-clean", "test-other"]
    cuts = load_manifest(L.cuts("dev-clean"))
    assert [c.supervisions[0].text for c in cuts] == texts[:3]  # lower-cased by the normaliser
    assert cuts[0].supervisions[0].speaker == "1089"
    assert cuts[0].load_audio().shape[0] == 1
    # idempotent: a second call skips prepared parts
    assert prepare_librispeech(tmp_path / "src", tmp_path / "out") == {}


def test_missing_dir_is_clear(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="no LibriSpeech parts"):
        prepare_librispeech(tmp_path, tmp_path / "out")
