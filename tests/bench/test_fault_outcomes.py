from __future__ import annotations

import pytest


def test_verdict_separates_lost_data_from_a_crash(load_bench):
    v = load_bench("fault_outcomes").verdict
    assert v("failed_cleanly", behaved=True, kept=True) == "failed_cleanly"
    assert v("recovered_identical", behaved=False, kept=True) == "crashed"
    # damaged data outranks the behaviour: a clean error that also broke a file lost it
    assert v("failed_cleanly", behaved=True, kept=False) == "lost"
    assert v("recovered_as_designed", behaved=False, kept=False) == "lost"
    with pytest.raises(ValueError, match="not a good outcome"):
        v("lost")


def test_every_outcome_is_described(load_bench):
    mod = load_bench("fault_outcomes")
    assert list(mod.DESCRIPTIONS) == list(mod.OUTCOMES)
