"""Parameter, FLOP and latency measurement and the analytic energy model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paretune.objectives.measure import (
    EnergyCoefficients,
    EnergyCounts,
    count_energy_inputs,
    count_flops,
    count_params,
    count_weights,
    estimate_energy,
    estimate_model_energy,
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
    c = EnergyCoefficients(
        pj_per_mac=2.0, pj_per_weight_byte=100.0, pj_per_activation_byte=1.0, bytes_per_value=4.0
    )
    # 10 M MACs x 2 pJ = 0.02 mJ; 1 M weights x 4 B x 100 pJ = 0.4 mJ; 3 M activations x 4 B x
    # 1 pJ = 0.012 mJ.
    assert estimate_energy(10.0, 1.0, 3.0, c) == pytest.approx(0.02 + 0.4 + 0.012)
    assert estimate_energy(
        10.0, 1.0, 3.0, {"pj_per_mac": 2.0, "pj_per_weight_byte": 100.0}
    ) == pytest.approx(0.02 + 0.4 + 3.0 * 4 * 1.25e-3)
    default = estimate_energy(10.0, 1.0, 3.0)
    # Horowitz (ISSCC 2014), 45 nm: 3.7 + 0.9 pJ per float32 MAC, 640 pJ per 32-bit DRAM word,
    # 5 pJ per 32-bit word of an 8 KB SRAM
    assert default == pytest.approx(10 * 4.6e-3 + 1.0 * 640e-3 + 3.0 * 5e-3)
    assert estimate_energy(20.0, 1.0, 3.0) > default
    assert estimate_energy(10.0, 2.0, 3.0) > default
    assert estimate_energy(10.0, 1.0, 6.0) > default


def test_energy_coefficients_are_checked():
    with pytest.raises(ValueError, match="unknown fields \\['pj_per_flop'\\]"):
        estimate_energy(1.0, 1.0, 1.0, {"pj_per_flop": 1.0})
    with pytest.raises(ValueError, match="unknown fields \\['static_w'\\]"):
        estimate_energy(1.0, 1.0, 1.0, {"static_w": 1.0})  # the model has no time term
    with pytest.raises(ValueError, match="pj_per_mac=-1 must be a number >= 0"):
        EnergyCoefficients(pj_per_mac=-1)


def test_energy_inputs_of_a_tiny_model_by_hand():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Identity())
    counts = count_energy_inputs(model, (1, 3))
    # Linear: 3 x 2 = 6 MACs, 6 + 2 weights, moves its input (3) and output (2); ReLU moves
    # 2 in and 2 out; Identity moves nothing.
    assert counts == EnergyCounts(macs_m=6e-6, weights_m=8e-6, activations_m=9e-6)
    # 6 x 4.6 pJ + 8 x 4 B x 160 pJ + 9 x 4 B x 1.25 pJ = 5192.6 pJ = 5.1926e-6 mJ
    assert estimate_model_energy(model, (1, 3)) == pytest.approx(5.1926e-6)
    # BatchNorm's running statistics are read as weights (floating buffers), not the counter
    bn = nn.BatchNorm1d(4)
    assert count_weights(bn) == pytest.approx(16e-6) and count_params(bn) == pytest.approx(8e-6)


def test_energy_estimate_grows_with_macs():
    small = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.ReLU())
    big = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU())
    a, b = count_energy_inputs(small, (1, 4, 8, 8)), count_energy_inputs(big, (1, 4, 8, 8))
    assert a.activations_m == b.activations_m and b.macs_m == 9 * a.macs_m
    assert estimate_model_energy(big, (1, 4, 8, 8)) > estimate_model_energy(small, (1, 4, 8, 8))
    # count_energy_inputs leaves no hook behind and its MACs are count_flops's
    assert not any(m._forward_hooks for m in big.modules())
    assert b.macs_m == count_flops(big, (1, 4, 8, 8))
