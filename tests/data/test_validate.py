"""Bad input in a corpus: counted, named and skipped (or fixed), never a crash, never silent."""

import shutil

import numpy as np
import soundfile as sf
from lhotse import CutSet, load_manifest

from omnisparse.data.features import prepare_features
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.validate import validate_cuts


def _broken_corpus(tiny_corpus, tmp_path):
    """A copy of 6 dev utterances: one missing, one corrupt, one at the wrong rate, one with an empty
    transcript, one resampled-on-purpose (manifest says 8 kHz and the file is 8 kHz), one fine."""
    src = load_manifest(CorpusLayout(tiny_corpus).cuts("dev")).subset(first=6).to_eager()
    audio = tmp_path / "audio"
    audio.mkdir()
    from lhotse import Recording

    cuts = []
    for i, c in enumerate(src):
        dst = audio / f"u{i}.flac"
        shutil.copy(c.recording.sources[0].source, dst)
        if i == 4:  # a real 8 kHz file, declared as such: resampled on load
            x, _ = sf.read(dst)
            sf.write(dst, x[::2], 8000)
        rec = Recording.from_file(dst, recording_id=c.recording_id)
        cut = c.with_recording_path_prefix("")  # keep ids/supervisions
        cut.recording = rec
        cut.supervisions[0].duration = rec.duration
        cut.duration = rec.duration
        cuts.append(cut)
    (audio / "u0.flac").unlink()  # missing
    (audio / "u1.flac").write_bytes(b"\x00" * 64)  # corrupt
    x, _ = sf.read(audio / "u2.flac")  # wrong rate: file rewritten at 22.05 kHz, manifest still says 16k
    sf.write(audio / "u2.flac", np.asarray(x, dtype=np.float32), 22050)
    cuts[3].supervisions[0].text = "   "  # empty transcript
    return CutSet.from_cuts(cuts)


def test_validate_counts_and_names(tiny_corpus, tmp_path):
    cuts = _broken_corpus(tiny_corpus, tmp_path)
    good, rep = validate_cuts(cuts, name="dev")
    assert rep.total == 6 and rep.kept == 2
    assert rep.counts == {"missing": 1, "unreadable": 1, "sample_rate": 1, "empty_text": 1, "resampled": 1}
    assert any("u0.flac" in e for e in rep.examples["missing"])
    assert any("u1.flac" in e for e in rep.examples["unreadable"])
    assert all(c.sampling_rate == 16000 for c in good)
    text = rep.summary("dev")
    assert "missing" in text and "skipped 4" in text


def test_prepare_features_survives_bad_corpus(tiny_corpus, tmp_path, capsys):
    cuts = _broken_corpus(tiny_corpus, tmp_path)
    L = CorpusLayout(tmp_path / "corpus")
    L.manifests.mkdir(parents=True)
    cuts.to_file(L.cuts("dev"))
    reports = prepare_features(L.root, ["dev"], num_jobs=1)
    assert reports["dev"].kept == 2
    stored = load_manifest(L.feature_cuts("dev"))
    assert len(stored) == 2 and all(c.has_features for c in stored)
    assert stored[0].load_features().shape[1] == 80
    assert "skipped 4" in capsys.readouterr().out
