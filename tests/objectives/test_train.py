"""TrainEvaluator: real training on digits, per-epoch reports, measurement, determinism."""

from __future__ import annotations

import pytest
import torch

from paretune.objectives.base import Evaluator
from paretune.objectives.measure import count_flops, count_params
from paretune.objectives.train import TrainEvaluator
from paretune.spaces.nb201 import NB201Space

SPACE = NB201Space()
# a small mixed cell: learns fast and uses every kind of operation
ARCH = SPACE.decode(
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
)
FAST = {"epochs": 2, "channels": 4, "threads": 1, "latency_warmup": 1, "latency_repeats": 3}


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_trains_reports_every_epoch_and_measures():
    ev = TrainEvaluator(**FAST)
    assert isinstance(ev, Evaluator)
    reports = []
    result = ev.evaluate(ARCH, report=reports.append, parent_checkpoint=None, generation=3)
    assert [r["epoch"] for r in reports] == [1, 2]
    # Every epoch carries the costs too, so a trial stopped early still has every objective.
    expected_keys = {"accuracy", "params", "flops", "latency", "energy", "epoch", "train_loss"}
    assert all(set(r) == expected_keys for r in reports)
    assert reports[-1]["accuracy"] == result.values["accuracy"]
    assert all(r["params"] == result.values["params"] for r in reports)
    assert reports[1]["train_loss"] < reports[0]["train_loss"]
    v = result.values
    assert set(v) == {"accuracy", "test_accuracy", "params", "flops", "latency", "energy"}
    assert v["accuracy"] > 50 and v["test_accuracy"] > 50  # chance is 10%
    assert result.sources == {
        "accuracy": "measured",
        "test_accuracy": "measured",
        "params": "measured",
        "flops": "measured",
        "latency": "measured",
        "energy": "estimated",
    }
    model = ev.build(ARCH)
    assert v["params"] == count_params(model)
    assert v["flops"] == count_flops(model, (1, 1, 8, 8))
    assert v["latency"] > 0 and v["energy"] > 0
    assert result.extras["epochs"] == 2 and result.extras["train_time_s"] > 0
    assert result.extras["device"] == "cpu" and torch.get_num_threads() == 1


def test_same_seed_same_result_other_seed_differs():
    a = TrainEvaluator(**FAST, seed=3).evaluate(ARCH)
    b = TrainEvaluator(**FAST, seed=3).evaluate(ARCH)
    c = TrainEvaluator(**FAST, seed=4).evaluate(ARCH)
    assert a.values["accuracy"] == b.values["accuracy"]
    assert a.extras["train_loss"] == b.extras["train_loss"]
    assert a.extras["train_loss"] != c.extras["train_loss"]


def test_default_settings_learn_digits():
    # The quickstart's trial: digits at C=8, N=1, 3 epochs (one thread, as a 1-CPU Ray trial).
    result = TrainEvaluator(threads=1).evaluate(ARCH)
    assert result.values["accuracy"] > 85
    assert result.values["test_accuracy"] > 85
    assert result.values["params"] == pytest.approx(0.032258, abs=1e-9)


def test_device_resolution_and_settings_are_checked():
    assert TrainEvaluator(device="auto").device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
            TrainEvaluator(device="cuda")
    with pytest.raises(ValueError, match="device='tpu9'"):
        TrainEvaluator(device="tpu9")
    with pytest.raises(
        ValueError, match=r"unknown dataset 'svhn' \(available: \['digits', 'mnist', 'cifar10'\]\)"
    ):
        TrainEvaluator(dataset="svhn")
    with pytest.raises(ValueError, match="epochs=0 must be an integer >= 1"):
        TrainEvaluator(epochs=0)
    with pytest.raises(ValueError, match="lr=-0.1"):
        TrainEvaluator(lr=-0.1)
    with pytest.raises(ValueError, match=r"unknown fields \['joules'\]"):
        TrainEvaluator(energy_coefficients={"joules": 1.0})
    with pytest.raises(ValueError, match="option index 7 not allowed"):
        TrainEvaluator().evaluate((7, 0, 0, 0, 0, 0))


def test_energy_coefficients_change_the_estimate_only():
    base = TrainEvaluator(
        **FAST, energy_coefficients={"static_w": 0.0, "pj_per_byte": 0.0}
    ).evaluate(ARCH)
    # with only the per-MAC term left, energy is flops x pJ/MAC (mJ = M x pJ x 1e-3)
    assert base.values["energy"] == pytest.approx(base.values["flops"] * 4.6e-3)
