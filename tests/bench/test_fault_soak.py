from __future__ import annotations

import random


def test_soak_kills_a_training_repeatedly_and_compares_bitwise(load_bench, tiny_corpus, tmp_path):
    mod = load_bench("fault_soak")

    class Host(mod.SoakFaults):  # the part of bench/faults.py's Bench the soak uses
        def __init__(self):
            self.work, self.rng, self.outcomes = tmp_path, random.Random(0), []

        def dir(self, name):
            return tmp_path / name

        def record_outcome(self, cls, case, outcome, detail, seconds, hang=False):
            self.outcomes.append((cls, outcome, detail))

    host = Host()
    host.soak(tiny_corpus, "tiny", steps=6, kills=1, delay_s=(0.0, 0.2), ckpt_every=2)
    summary = host.soak_summary
    assert summary is not None, host.outcomes
    assert summary["identical"] and summary["kills"] == 1 and summary["launches"] == 2, (summary, host.outcomes)
    assert [o[:2] for o in host.outcomes] == [("soak_kills", "recovered_identical")]
    assert summary["reference_peak_rss_mb"] > 50
    # the reference ends first (one launch, not two), and its own wall is recorded, not the soak's
    assert 0 < summary["reference_wall_s"] < summary["soaked_wall_s"], summary
