"""bench/anchor.py: pocketsphinx WER / RTF on 3 tiny-corpus utterances, missing splits skipped, the CLI and its cache."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("pocketsphinx")

SPLIT_KEYS = {"wer", "utterances", "words", "substitutions", "insertions", "deletions", "audio_s", "decode_wall_s",
              "decode_cpu_s", "rtf", "rtf_cpu"}


@pytest.fixture(scope="module")
def anchor(load_bench):
    return load_bench("anchor")


@pytest.fixture(scope="module")
def three(anchor, tiny_corpus):
    """pocketsphinx on the first 3 test-clean utterances (and a split the corpus does not have)."""
    return anchor.pocketsphinx_eval(tiny_corpus, ["test-clean", "no-such-split"], max_utts=3, progress=False,
                                    keep_hyps=True)


def test_eval_three_utterances(three):
    assert {"engine", "version", "model", "threads", "skipped_splits"} <= set(three)
    assert three["engine"] == "pocketsphinx" and three["model"] == "en-us (bundled)" and three["threads"] == 1
    r = three["test-clean"]
    assert SPLIT_KEYS <= set(r)
    assert isinstance(r["wer"], float) and 0.0 <= r["wer"] < math.inf
    assert r["utterances"] == 3 and len(r["hyps"]) == 3 and r["words"] > 0
    assert r["audio_s"] > 0 and r["rtf"] > 0 and r["rtf_cpu"] > 0
    assert r["wer"] == pytest.approx((r["substitutions"] + r["insertions"] + r["deletions"]) / r["words"])
    assert three["skipped_splits"] == ["no-such-split"] and "no-such-split" not in three


def test_missing_split_message(anchor, tiny_corpus, capsys):
    res = anchor.pocketsphinx_eval(tiny_corpus, ["no-such-split"], progress=False)
    assert res["skipped_splits"] == ["no-such-split"]
    assert "skipping split 'no-such-split'" in capsys.readouterr().err


def test_ids_and_cache(anchor, three, tiny_corpus, tmp_path, monkeypatch):
    """Chosen ids, in any order, decode as before (no state carried between utterances); a cached split
    is not decoded again."""
    hyps = {h["id"]: h["hyp"] for h in three["test-clean"]["hyps"]}
    last = list(hyps)[-1]
    cache = tmp_path / "eval_anchor.json"
    res = anchor.cached_pocketsphinx_eval(cache, tiny_corpus, {"test-clean": [last], "no-such-split": []},
                                          progress=False)
    assert res["test-clean"]["utterances"] == 1 and res["skipped_splits"] == ["no-such-split"]
    assert json.loads(cache.read_text())["test-clean"]["result"] == res["test-clean"]
    first = list(hyps)[0]
    back = anchor.pocketsphinx_eval(tiny_corpus, ["test-clean"], progress=False, ids={"test-clean": [last, first]},
                                    keep_hyps=True)  # the last one now first, the first one after it
    assert [h["hyp"] for h in back["test-clean"]["hyps"]] == [hyps[last], hyps[first]]

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(anchor, "pocketsphinx_eval", boom)
    again = anchor.cached_pocketsphinx_eval(cache, tiny_corpus, {"test-clean": [last]}, progress=False)
    assert again["test-clean"] == res["test-clean"]


def test_cli(anchor, tiny_corpus, tmp_path):
    out = tmp_path / "res" / "anchor.json"
    assert anchor.main(["--corpus", str(tiny_corpus), "--splits", "test-clean", "no-such-split", "--max-utts", "1",
                        "--out", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert {"command", "commit", "machine", "date", "engine", "version", "test-clean"} <= set(res)
    assert res["test-clean"]["utterances"] == 1 and res["skipped_splits"] == ["no-such-split"]
