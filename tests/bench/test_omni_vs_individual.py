import pytest


@pytest.mark.parametrize("schedule,steps,passes,batches", [("sandwich-same-batch", 300, 1200, 300),
                                                           ("sandwich-split", 300, 1200, 1200),
                                                           ("one-per-step", 1200, 1200, 1200)])
def test_supernet_gets_one_pruned_models_passes_and_audio(load_bench, schedule, steps, passes, batches):
    bench = load_bench("omni_vs_individual")
    args, budget = bench.supernet_overrides("supernet_small", 1200, [f"--sparsity.schedule={schedule}"], nproc=1)
    assert budget["supernet_steps"] == steps and budget["supernet_passes"] == passes
    assert budget["supernet_batches"] == batches
    assert f"--train.max_steps={steps}" in args
    assert f"--sparsity.ramp_steps={steps // 2}" in args  # the preset ramps over half of its steps


def test_budget_scales_the_pruned_models(load_bench):
    bench = load_bench("omni_vs_individual")
    args = bench.prune_overrides("prune_small", 4, [])
    assert "--train.max_steps=4800" in args and "--sparsity.prune_steps=2400" in args
    _, budget = bench.supernet_overrides("supernet_small", 4800, [], nproc=1)
    assert budget["supernet_steps"] == 1200
