import pytest

from omnisparse.sparsity.masks import MaskSpec
from omnisparse.sparsity.paths import check_ddp_split, rank_paths, step_cost, step_plan
from omnisparse.sparsity.space import SearchSpace

SPACE = SearchSpace(("enc.0.ffn", "enc.0.attn", "enc.1.ffn"), [0.0, 0.3, 0.5, 0.7], MaskSpec())


def _plan(schedule, step, **kw):
    return step_plan(SPACE, schedule, step, seed=0, n_random=2, s_max=0.7, **kw)


@pytest.mark.parametrize("schedule", ["sandwich-same-batch", "sandwich-split"])
def test_sandwich_plan_is_dense_sparsest_then_random(schedule):
    plan = _plan(schedule, 5)
    assert [p.role for p in plan] == ["dense", "sparsest", "random", "random"]
    assert set(plan[0].config.values()) == {0.0} and set(plan[1].config.values()) == {0.7}
    assert plan == _plan(schedule, 5)  # a function of (seed, step): every rank and a resume agree
    assert plan != _plan(schedule, 6)


def test_one_per_step_rotation_and_probabilities():
    roles = [_plan("one-per-step", t)[0].role for t in range(8)]
    assert roles == ["dense", "sparsest", "random", "random"] * 2
    per_rank = [[p.role for p in _plan("one-per-step", t, world_size=2, ddp_paths="per_rank")] for t in range(2)]
    assert per_rank == [["dense", "sparsest"], ["random", "random"]]
    drawn = [_plan("one-per-step", t, path_probs=[0.0, 1.0, 3.0])[0].role for t in range(200)]
    assert "dense" not in drawn and 0.15 < drawn.count("sparsest") / 200 < 0.35
    assert drawn == [_plan("one-per-step", t, path_probs=[0.0, 1.0, 3.0])[0].role for t in range(200)]


def test_rank_paths_deal_the_plan_out():
    plan = _plan("sandwich-split", 3)
    assert rank_paths(plan, 1, 2, "same") == plan
    assert [p.index for p in rank_paths(plan, 0, 2, "per_rank")] == [0, 2]
    assert [p.index for p in rank_paths(plan, 1, 2, "per_rank")] == [1, 3]
    check_ddp_split("sandwich-split", 2, 2, "per_rank")
    check_ddp_split("one-per-step", 1, 2, "per_rank")
    with pytest.raises(ValueError, match="divide evenly"):
        check_ddp_split("sandwich-split", 1, 2, "per_rank")


def test_step_cost_counts_passes_and_batches():
    assert step_cost("sandwich-same-batch", 2) == (4, 1)
    assert step_cost("sandwich-split", 2) == (4, 4)
    assert step_cost("sandwich-split", 2, world_size=2, ddp_paths="per_rank") == (2, 2)
    assert step_cost("one-per-step", 2) == (1, 1)
    assert step_cost("one-per-step", 2, world_size=2, ddp_paths="per_rank") == (1, 1)
