from collections import Counter

import pytest

from omnisparse.config import load_config
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.subset import labelled_subset


@pytest.fixture(scope="module")
def splits(tiny_corpus):
    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}"])
    return {s: load_split_cuts(cfg, [s]) for s in ("train", "dev", "test-clean", "test-other")}


def _text(c):
    return c.supervisions[0].text


def test_labelled_subset_is_deterministic_balanced_and_disjoint(splits):
    train = splits["train"]
    total_h = sum(c.duration for c in train) / 3600
    hours = total_h / 4
    a, b = labelled_subset(train, hours, seed=0), labelled_subset(train, hours, seed=0)
    assert [c.id for c in a] == [c.id for c in b]
    assert [c.id for c in labelled_subset(train, hours, seed=1)] != [c.id for c in a]
    assert hours <= sum(c.duration for c in a) / 3600  # stops at the first utterance past the budget
    assert {c.id for c in a} <= {c.id for c in train}
    avail = Counter(c.supervisions[0].speaker for c in train)
    got = Counter(c.supervisions[0].speaker for c in a)
    k = min(got[s] for s in avail if got[s] < avail[s])  # the round the draw stopped in
    assert all(got[s] in (min(avail[s], k), k + 1) for s in avail)  # round-robin: balanced speakers
    held_out = {_text(c) for s in ("dev", "test-clean", "test-other") for c in splits[s]}
    assert not {_text(c) for c in a} & held_out
    assert len(labelled_subset(train, 10 * total_h)) == len(train)  # more than there is: all of it
    with pytest.raises(ValueError):
        labelled_subset(train, 0)


def test_trainer_trains_on_the_subset_and_records_its_hours(tiny_corpus, tmp_path):
    from omnisparse.train.trainer import Trainer

    cfg = load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tmp_path / 'r'}",
                               "--data.train_hours=0.02"])
    tr = Trainer(cfg)
    assert 0.02 <= tr.cost["labelled_hours"] < 0.03
    assert sum(c.duration for c in tr.train_cuts) / 3600 == pytest.approx(tr.cost["labelled_hours"], abs=1e-4)
