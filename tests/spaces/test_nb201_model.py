"""The NB201 torch network: shapes on every dataset size, cell semantics, and the table's counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from paretune.objectives.measure import count_flops, count_params
from paretune.spaces.nb201 import NB201_OPS, NB201Space
from paretune.spaces.nb201_model import NB201Cell, NB201Network

BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def table(nb201_path) -> pd.DataFrame:
    from paretune.objectives.nb201_table import load_table

    return load_table(nb201_path)


def _sample_indices(table: pd.DataFrame, k: int) -> list[int]:
    rng = np.random.default_rng(0)
    picked = rng.choice(table.index.to_numpy(), size=k, replace=False).tolist()
    # plus the extremes: all 3x3 convs (largest) and all none (smallest)
    space = NB201Space()
    for arch in ((3,) * 6, (0,) * 6, (4,) * 6):
        picked.append(int(table.index[table["arch"] == space.encode(arch)][0]))
    return picked


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a busy 2-core machine two threads contend and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Parameters and FLOPs in the table have 6 significant digits.
SIG6 = 5e-6


def test_params_and_flops_match_table_cifar10(table):
    space = NB201Space()
    for idx in _sample_indices(table, 6):
        row = table.loc[idx]
        model = space.build(space.decode(row["arch"]))
        # Parameters: conv weights, affine BN, linear weight + bias.
        assert count_params(model) == pytest.approx(row["cifar10_params_m"], rel=SIG6), row["arch"]
        # FLOPs: conv + linear multiply-adds (FlopCounterMode's FLOPs / 2).
        flops = count_flops(model, (1, 3, 32, 32))
        assert flops == pytest.approx(row["cifar10_flops_m"], rel=SIG6, abs=2e-4), row["arch"]


@pytest.mark.parametrize(
    ("dataset", "num_classes", "size"), [("cifar100", 100, 32), ("imagenet16", 120, 16)]
)
def test_params_match_table_other_datasets(table, dataset, num_classes, size):
    space = NB201Space()
    for k, idx in enumerate(_sample_indices(table, 12)):
        row = table.loc[idx]
        model = space.build(space.decode(row["arch"]), num_classes=num_classes, input_size=size)
        assert count_params(model) == pytest.approx(row[f"{dataset}_params_m"], rel=SIG6), row[
            "arch"
        ]
        if k < 2:
            flops = count_flops(model, (1, 3, size, size))
            assert flops == pytest.approx(row[f"{dataset}_flops_m"], rel=SIG6, abs=2e-4), row[
                "arch"
            ]


def test_best_cifar10_architecture_counts(table):
    row = table.loc[6111]
    assert row["arch"] == BEST_CIFAR10
    model = NB201Space().build(NB201Space().decode(BEST_CIFAR10))
    # 1.07347 M parameters and 153.273 M multiply-adds, as published for NB201 index 6111.
    assert count_params(model) == pytest.approx(1.07347, abs=5e-6)
    assert count_flops(model, (1, 3, 32, 32)) == pytest.approx(153.273, abs=5e-4)
    assert count_params(model) == pytest.approx(row["cifar10_params_m"], rel=SIG6)


@pytest.mark.parametrize(
    ("in_channels", "size"),
    [(1, 8), (1, 28), (3, 32), (3, 16)],
)
def test_forward_backward_on_every_input_size(in_channels, size):
    torch.manual_seed(0)
    ops = ["nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none", "nor_conv_3x3"]
    model = NB201Network(
        ops, channels=4, cells_per_stage=1, input_size=size, in_channels=in_channels
    )
    x = torch.randn(3, in_channels, size, size)
    out = model(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert model.stem[0].weight.grad is not None
    assert model.stem[0].weight.grad.abs().sum() > 0


def test_cell_sums_every_incoming_edge():
    # All skip: node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x.
    cell = NB201Cell(["skip_connect"] * 6, channels=2)
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(cell(x), 4 * x)
    # Only 0->3 is skip: the output is x whatever the other (zero) edges do.
    cell = NB201Cell(["none", "none", "none", "skip_connect", "none", "none"], channels=2)
    torch.testing.assert_close(cell(x), x)
    # All none: zeros.
    cell = NB201Cell(["none"] * 6, channels=2)
    assert torch.count_nonzero(cell(x)) == 0


def test_avg_pool_does_not_count_padding():
    cell = NB201Cell(["none", "none", "none", "avg_pool_3x3", "none", "none"], channels=1)
    x = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(cell(x), x)  # borders stay 1 (padding excluded from the mean)


def test_parameter_free_ops_add_no_parameters():
    space = NB201Space()
    base = count_params(space.build((0,) * 6))
    for arch in ((1,) * 6, (4,) * 6, (1, 4, 0, 1, 4, 0)):
        assert count_params(space.build(arch)) == base
    assert count_params(space.build((2,) * 6)) > base
    assert count_params(space.build((3,) * 6)) > count_params(space.build((2,) * 6))


def test_stage_channels_and_reductions():
    model = NB201Network(list(NB201_OPS[:1]) * 6, channels=8, cells_per_stage=2, input_size=8)
    assert len(model.cells) == 3 * 2 + 2
    assert model.classifier.in_features == 32
    assert model.stem[0].out_channels == 8


def test_invalid_arguments_name_the_field():
    with pytest.raises(ValueError, match="unknown operations"):
        NB201Network(["conv_5x5"] * 6)
    with pytest.raises(ValueError, match="expected 6"):
        NB201Network(["none"] * 5)
    with pytest.raises(ValueError, match="channels=0"):
        NB201Network(["none"] * 6, channels=0)
