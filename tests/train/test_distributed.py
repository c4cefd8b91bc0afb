"""Ranks that disagree: a rank of a multi-process training that sees another config, corpus or code
than rank 0 is refused at start, on every rank, with one line naming it; nothing is trained or left."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omnisparse.config import load_config
from omnisparse.data.layout import CorpusLayout
from omnisparse.train.distributed import Dist, check_ranks_agree, files_digest, rank_facts
from omnisparse.utils.faults import run_ranks
from omnisparse.utils.hostile_inputs import read_manifest_rows, write_manifest_rows

SRC = Path(__file__).resolve().parents[2] / "src"


def test_facts_follow_config_corpus_and_a_single_process_checks_nothing(tiny_corpus, tmp_path):
    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}"])
    facts = rank_facts(cfg)
    assert set(facts) == {"config", "corpus", "code"} and facts == rank_facts(cfg)
    assert rank_facts(load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", "--train.lr=0.002"]))["config"] != facts["config"]
    moved = tmp_path / "mounted-elsewhere"
    shutil.copytree(tiny_corpus / "manifests", moved / "manifests")
    assert rank_facts(load_config("tiny", [f"--data.corpus_dir={moved}"])) == facts  # same corpus, other path
    (tmp_path / "a").write_bytes(b"x")
    assert files_digest([tmp_path / "a"]) != files_digest([tmp_path / "b"])  # a missing file is not an empty one
    check_ranks_agree(Dist(), lambda: pytest.fail("facts computed"))  # one process: nothing to compare with


@pytest.mark.slow
def test_ranks_seeing_another_config_corpus_or_code_are_refused_at_start(tiny_corpus, tmp_path):
    """Three ranks launched by hand: rank 1 with another learning rate, rank 2 on a copy of the corpus
    missing one training utterance and with a copy of the package changed by one comment."""
    corpus = tmp_path / "corpus"
    shutil.copytree(CorpusLayout(tiny_corpus).manifests, CorpusLayout(corpus).manifests)
    cuts = CorpusLayout(corpus).cuts("train")
    write_manifest_rows(cuts, read_manifest_rows(cuts)[:-1])
    code = tmp_path / "code"
    shutil.copytree(SRC / "omnisparse", code / "omnisparse", ignore=shutil.ignore_patterns("__pycache__"))
    with open(code / "omnisparse" / "train" / "trainer.py", "a") as f:
        f.write("# another version\n")
    run = tmp_path / "run"
    base = ["train", "--config", "tiny", f"--train.out_dir={run}", "--train.threads=1", "--train.max_steps=2"]
    got = run_ranks([[*base, f"--data.corpus_dir={tiny_corpus}"],
                     [*base, f"--data.corpus_dir={tiny_corpus}", "--train.lr=0.002"],
                     [*base, f"--data.corpus_dir={corpus}"]],
                    port=29547, env_per_rank=[{}, {}, {"PYTHONPATH": str(code)}])
    for rc, err in got:
        assert rc == 1 and len(err) == 1, got
        assert "rank 1: config; rank 2: code, corpus differ" in err[0], err
    assert not run.exists()  # refused before the run directory was written (its lock went with it)
