"""One TND stage on a real (tiny) NB201 supernet on digits: settings, loop, shrink, resume."""

from __future__ import annotations

import numpy as np
import pytest

from paretune.objectives.tnd_stage import TNDStage, check_params, default_keep
from paretune.objectives.train import TrainEvaluator

OBJ = [("accuracy", "max"), ("params", "min")]
OBJ4 = [("accuracy", "max"), ("params", "min"), ("latency", "min"), ("energy", "min")]


def _ev() -> TrainEvaluator:
    return TrainEvaluator(
        channels=2,
        cells_per_stage=1,
        energy_meter="estimate",
        latency_repeats=2,
        latency_warmup=0,
        threads=1,
    )


def _params(**kw):
    base = {"epochs": 2, "warmup": 1, "samples": 3, "batch_size": 256, "val_batch_size": 32}
    return check_params({**base, **kw}, OBJ, 5, 3)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"epoch": 3}, "search.params.epoch = 3: unknown"),
        ({"warmup": 6}, "search.params.warmup = 6: must be an integer in 0..5"),
        ({"keep": [5, 6, 1]}, "search.params.keep = \\[5, 6, 1\\]: must be a non-increasing"),
        ({"add_cells": [1]}, "search.params.add_cells = \\[1\\]: must be 3 integers"),
        ({"weight_step": "dart"}, "search.params.weight_step = 'dart': allowed: weighted, path"),
        ({"targets": {"latency": 1.0}, "exponents": {"latency": -1}}, "not a cost objective"),
        ({"targets": {"params": 0.0}, "exponents": {"params": -1}}, "targets must be > 0"),
        ({"targets": {"params": 1.0}}, "search.params.exponents = {}: must name the same"),
        ({"reward": "sum"}, "search.params.reward = 'sum': allowed: product, pareto"),
    ],
)
def test_bad_settings_name_the_field_and_the_value(params, match):
    with pytest.raises(ValueError, match=match) as info:
        check_params(params, OBJ, 5, 4)
    assert "\n" not in str(info.value)


def test_defaults_follow_the_paper():
    p = check_params({}, OBJ, 5, 4)
    assert p["keep"] == [5, 3, 2, 1] and default_keep(8) == [8, 5, 3, 1]
    assert p["samples"] == 10 and p["arch_lr"] == 6e-3 and p["arch_betas"] == [0.5, 0.999]
    assert p["arch_weight_decay"] == 1e-3 and p["arch_clip"] == 5.0
    assert p["baseline_decay"] == 0.95 and p["reward"] == "pareto" and p["final"] == 4
    assert (
        check_params({"targets": {"params": 1}, "exponents": {"params": -1}}, OBJ, 5, 4)["reward"]
        == "product"
    )


def test_a_stage_trains_scores_and_shrinks():
    p = _params(targets={"params": [0.01, 0.01, 0.01]}, exponents={"params": -0.5})
    stage = TNDStage(_ev(), 0, None, p, OBJ, seed=0)
    result = stage.train()
    assert [h["epoch"] for h in stage.history] == [1, 2]
    assert "mean_reward" not in stage.history[0] and "mean_reward" in stage.history[1]
    steps_per_epoch = stage.history[0]["train_samples"] // 256 + 1
    assert stage.policy.steps == steps_per_epoch  # one policy step per weight step after warm-up
    assert result["eval_samples"] == stage.policy.steps * 3 * 32
    assert all(len(o) == 3 for o in result["edge_options"])
    probs = stage.policy.probabilities()
    for e, kept in enumerate(result["edge_options"]):
        dropped = [k for k in range(5) if k not in kept]
        assert min(probs[e, kept]) >= max(probs[e, dropped])
    assert 0 < len(stage.cost_cache) <= stage.policy.steps * 3
    # The next stage: a fresh supernet holding only the kept options, fresh logits.
    nxt = TNDStage(_ev(), 1, result["edge_options"], p, OBJ, seed=0)
    assert nxt.net.edge_options == result["edge_options"]
    assert nxt.policy.steps == 0 and np.abs(nxt.policy.logits).max() < 0.01


def test_the_last_stage_lists_final_genotypes_without_none():
    p = _params(keep=[2, 1], add_cells=[1], weight_step="path")
    stage = TNDStage(_ev(), 0, [[0, 3]] * 6, p, OBJ4, seed=1)
    assert stage.net_settings["cells_per_stage"] == 2  # deeper supernet
    result = stage.train()
    assert result["edge_options"] == [[3]] * 6  # the last shrink drops none first
    assert result["final"][0] == [3] * 6 and len(result["final"]) == 1  # only one without none
    assert set(next(iter(stage.cost_cache.values()))) == {"params", "latency", "energy"}


def test_a_stage_resumes_from_its_checkpoint_exactly(tmp_path):
    p = _params(epochs=3, warmup=1)
    whole = TNDStage(_ev(), 0, None, p, OBJ, seed=4)
    whole.train()
    first = TNDStage(_ev(), 0, None, p, OBJ, seed=4)
    first.train_epoch()
    first.train_epoch()
    first.save(tmp_path)
    again = TNDStage(_ev(), 0, None, p, OBJ, seed=4)
    again.load(tmp_path)
    assert again.epoch == 2 and again.policy.steps == first.policy.steps
    again.train()
    np.testing.assert_allclose(again.policy.logits, whole.policy.logits, atol=1e-12)
    assert again.result["edge_options"] == whole.result["edge_options"]
    assert again.train_samples == whole.train_samples
    other = TNDStage(_ev(), 1, [[0, 1]] * 6, p, OBJ, seed=4)
    with pytest.raises(ValueError, match="stage 0"):
        other.load(tmp_path)
