"""Parameter, FLOP and latency measurement and the analytic energy model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paretune.objectives.measure import (
    EnergyCoefficients,
    count_flops,
    count_params,
    estimate_energy,
    measure_latency,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_count_params_counts_trainable_only():
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5), nn.Linear(5, 2, bias=False))
    assert count_params(model) == pytest.approx((10 * 5 + 5 + 2 * 5 + 2 * 5) / 1e6)
    model[2].weight.requires_grad_(False)
    assert count_params(model) == pytest.approx((10 * 5 + 5 + 2 * 5) / 1e6)


def test_count_flops_is_multiply_adds():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2))
    # 8 output channels x 8x8 positions x (3 x 3x3) weights each; ReLU and pooling not counted.
    assert count_flops(conv, (1, 3, 8, 8)) == pytest.approx(8 * 8 * 8 * 3 * 9 / 1e6)
    # Batch 2 doubles it; a linear layer is in x out.
    assert count_flops(conv, (2, 3, 8, 8)) == pytest.approx(2 * 8 * 8 * 8 * 3 * 9 / 1e6)
    assert count_flops(nn.Linear(10, 5), (1, 10)) == pytest.approx(50 / 1e6)


def test_count_flops_restores_training_mode_and_keeps_bn_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    model.train()
    before = model[1].running_mean.clone()
    count_flops(model, (4, 1, 5, 5))
    assert model.training
    torch.testing.assert_close(model[1].running_mean, before)  # ran in eval mode


def test_measure_latency_orders_models_and_restores_state():
    small = nn.Linear(4, 4)
    big = nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)])
    big.train()
    threads = torch.get_num_threads()
    t_small = measure_latency(small, torch.zeros(1, 4), device="cpu", warmup=1, repeats=5)
    t_big = measure_latency(
        big, torch.zeros(1, 32, 32, 32), device="cpu", warmup=1, repeats=5, threads=1
    )
    assert 0 < t_small < t_big
    assert big.training  # mode restored
    assert torch.get_num_threads() == threads  # thread setting restored


def test_measure_latency_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeats=0"):
        measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), repeats=0)
    with pytest.raises(ValueError, match="warmup=-1"):
        measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), warmup=-1)
    with pytest.raises(ValueError, match="threads=0"):
        measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), threads=0)


def test_estimate_energy_is_the_documented_formula():
    c = EnergyCoefficients(pj_per_mac=2.0, pj_per_byte=100.0, bytes_per_param=4.0, static_w=0.5)
    # 10 M MACs x 2 pJ = 0.02 mJ; 1 M params x 4 B x 100 pJ = 0.4 mJ; 0.5 W x 3 ms = 1.5 mJ.
    assert estimate_energy(10.0, 1.0, 3.0, c) == pytest.approx(0.02 + 0.4 + 1.5)
    assert estimate_energy(
        10.0, 1.0, 3.0, {"pj_per_mac": 2.0, "pj_per_byte": 100.0, "static_w": 0.5}
    ) == (pytest.approx(1.92))
    default = estimate_energy(10.0, 1.0, 3.0)
    assert default == pytest.approx(10 * 4.6e-3 + 4 * 160e-3 + 3.0)
    assert estimate_energy(20.0, 1.0, 3.0) > default
    assert estimate_energy(10.0, 2.0, 3.0) > default
    assert estimate_energy(10.0, 1.0, 6.0) > default


def test_energy_coefficients_are_checked():
    with pytest.raises(ValueError, match="unknown fields \\['pj_per_flop'\\]"):
        estimate_energy(1.0, 1.0, 1.0, {"pj_per_flop": 1.0})
    with pytest.raises(ValueError, match="static_w=-1"):
        EnergyCoefficients(static_w=-1)
