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


def test_result_is_judged_only_when_the_process_behaved(load_bench):
    v = load_bench("fault_outcomes").verdict

    def never():
        raise AssertionError("a failed process has no result to compare")

    assert v("recovered_identical", behaved=False, result=never) == "crashed"
    assert v("recovered_identical", behaved=True, kept=False, result=never) == "lost"
    assert v("recovered_identical", behaved=True, result=lambda: False) == "lost"
    assert v("recovered_as_designed", behaved=True, result=lambda: True) == "recovered_as_designed"
