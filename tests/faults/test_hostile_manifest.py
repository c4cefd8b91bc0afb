"""Hostile cut manifests (a corpus's ``*.jsonl.gz``): absurd durations, lines that are no cut, missing
fields, audio from a shell command or a URL, paths climbing out of the corpus with ``..``. ``eval``,
``data prepare`` and training skip each bad cut and count it by reason (``omnisparse.data.manifest``);
nothing is run, nothing read through a ``..`` path, nothing written outside the output directory; a
manifest that is not one at all, or holds no usable cut, is one error line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from omnisparse.cli import main
from omnisparse.data.manifest import MAX_CUT_S, cut_problem, read_cuts
from omnisparse.utils.faults import tree_digest
from omnisparse.utils.hostile_inputs import plant_hostile_cuts, read_manifest_rows, write_manifest_rows


def _copy_corpus(tiny_corpus: Path, dest: Path) -> Path:
    """The corpus's manifests, stats and tokenizer (audio and features stay where the manifests point)."""
    shutil.copytree(tiny_corpus, dest, ignore=shutil.ignore_patterns("audio", "feats_*", "*.lca", ".omnisparse.lock"))
    return dest


def _with(row: dict, path: tuple, value) -> dict:
    row = json.loads(json.dumps(row))
    node = row
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return row


def test_eval_skips_and_counts_every_hostile_cut(tiny_corpus, tiny_run, tmp_path, capsys):
    corpus = _copy_corpus(tiny_corpus, tmp_path / "corpus")
    marker = tmp_path / "PWNED"
    good = read_manifest_rows(corpus / "fbank" / "cuts_dev.jsonl.gz")
    rows, want = plant_hostile_cuts(good, marker)
    write_manifest_rows(corpus / "fbank" / "cuts_dev.jsonl.gz", rows)
    before = tree_digest(tmp_path)
    out = tmp_path / "eval"
    assert main(["eval", str(tiny_run), "--splits", "dev", f"--data.corpus_dir={corpus}", f"--out={out}"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    res = json.loads((out / "wer.json").read_text())["results"]["dev"]
    assert res["utterances"] == len(good) and res["skipped"] == want
    assert not marker.exists()
    after = tree_digest(tmp_path, exclude=("eval",))
    assert after == before  # nothing written outside the output directory


def test_audio_cuts_on_the_fly_never_run_a_command(tiny_corpus, tiny_run, tmp_path, capsys):
    corpus = _copy_corpus(tiny_corpus, tmp_path / "corpus")
    marker = tmp_path / "PWNED"
    good = read_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz")[:6]
    src = ("recording", "sources", 0)
    rows = good + [
        {**_with(_with(good[0], (*src, "type"), "command"), (*src, "source"), f"touch {marker}"), "id": "cmd"},
        {**_with(good[1], (*src, "source"), "../../../../etc/passwd"), "id": "escape"},
        {**_with(good[2], ("duration",), float("inf")), "id": "inf"},
    ]
    write_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz", rows)
    out = tmp_path / "eval"
    assert main(["eval", str(tiny_run), "--splits", "dev", f"--data.corpus_dir={corpus}", f"--out={out}",
                 "--data.on_the_fly_features=true"]) == 0
    res = json.loads((out / "wer.json").read_text())["results"]["dev"]
    assert res["utterances"] == 6 and res["skipped"] == {"unsafe_source": 1, "unsafe_path": 1, "bad_duration": 1}
    assert not marker.exists()


def test_data_prepare_counts_hostile_cuts_and_runs_nothing(tiny_corpus, tmp_path, capsys):
    from omnisparse.data.features import prepare_features

    corpus = _copy_corpus(tiny_corpus, tmp_path / "corpus")
    shutil.rmtree(corpus / "fbank")
    marker = tmp_path / "PWNED"
    good = read_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz")[:8]
    rows, want = plant_hostile_cuts(good, marker)
    write_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz", rows)
    report = prepare_features(corpus, ["dev"], num_jobs=1)["dev"]
    skipped = dict(report.counts)
    assert report.kept == len(good) and skipped == want
    saved = json.loads((corpus / "fbank" / "validation_dev.json").read_text())
    assert saved["counts"] == skipped and not marker.exists()


def test_training_counts_hostile_train_cuts(tiny_corpus, tmp_path):
    from omnisparse.config import load_config
    from omnisparse.train.registry import train

    corpus = _copy_corpus(tiny_corpus, tmp_path / "corpus")
    rows, want = plant_hostile_cuts(read_manifest_rows(corpus / "fbank" / "cuts_train.jsonl.gz"), tmp_path / "PWNED")
    write_manifest_rows(corpus / "fbank" / "cuts_train.jsonl.gz", rows)
    out = train(load_config("tiny", [f"--data.corpus_dir={corpus}", f"--train.out_dir={tmp_path / 'run'}",
                                     "--train.max_steps=2", "--train.ckpt_every=2"]))
    skipped = out["cost"]["skipped_utterances"]
    assert {k: skipped.get(k) for k in want} == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "run"]


def test_not_a_manifest_and_no_usable_cut_are_one_line(tiny_corpus, tiny_run, tmp_path, capsys):
    corpus = _copy_corpus(tiny_corpus, tmp_path / "corpus")
    manifest = corpus / "fbank" / "cuts_dev.jsonl.gz"
    for content, words in [(b"\x00garbage" * 100, "not a readable JSON-lines cut manifest"),
                           (gzip.compress(b"[1]\n{}\n"), "no usable utterances")]:
        manifest.write_bytes(content)
        rc = main(["eval", str(tiny_run), "--splits", "dev", f"--data.corpus_dir={corpus}", f"--out={tmp_path / 'e'}"])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnisparse: error")]
        assert rc == 2 and len(err) == 1 and words in err[0]


@pytest.mark.parametrize("duration, ok", [(1.0, True), (MAX_CUT_S, True), (MAX_CUT_S + 1, False), (0.0, False),
                                          (-1.0, False), (float("nan"), False), (float("inf"), False)])
def test_cut_problem_durations(tiny_corpus, duration, ok):
    from lhotse import MonoCut

    first = read_manifest_rows(tiny_corpus / "fbank" / "cuts_dev.jsonl.gz")[0]
    assert (cut_problem(MonoCut.from_dict({**first, "duration": duration})) is None) == ok


def test_an_absolute_path_is_read_as_given(tiny_corpus, tmp_path):
    """Absolute paths name what the manifest's author chose (a prepared LibriSpeech corpus keeps its
    audio in the source directory): allowed; only a relative path climbing with ``..`` is refused."""
    rows = read_manifest_rows(tiny_corpus / "manifests" / "cuts_dev.jsonl.gz")[:2]
    rows[1] = _with(rows[1], ("recording", "sources", 0, "source"), "audio/../../x.flac")
    write_manifest_rows(tmp_path / "cuts.jsonl.gz", rows)
    cuts, problems = read_cuts(tmp_path / "cuts.jsonl.gz")
    assert [c.id for c in cuts] == [rows[0]["id"]] and [p[0] for p in problems] == ["unsafe_path"]
