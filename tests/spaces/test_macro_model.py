"""The NAS-Bench-Macro network: parameters and multiply-adds equal the benchmark's."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pytest
import torch

from paretune.objectives.measure import count_flops, count_params
from paretune.spaces import MacroSpace

HINT = (
    "needs the NAS-Bench-Macro table: set PARETUNE_NASBENCH_MACRO to its folder, "
    "e.g. ../shared/benchmarks/nasbench_macro"
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    value = os.environ.get("PARETUNE_NASBENCH_MACRO")
    folder = (
        Path(value)
        if value
        else Path(__file__).resolve().parents[3] / "shared/benchmarks/nasbench_macro"
    )
    path = folder / "nasbench_macro.csv.gz" if folder.is_dir() else folder
    if not path.is_file():
        pytest.skip(HINT)
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_best_network_matches_the_paper() -> None:
    """README and paper: 2-2-2-1-2-2-2-0 has 1,985,514 parameters and 85.16M multiply-adds."""
    space = MacroSpace()
    net = space.build(space.decode("2-2-2-1-2-2-2-0"))
    assert count_params(net) == pytest.approx(1.985514, abs=1e-6)
    assert count_flops(net, (1, 3, 32, 32)) == pytest.approx(85.164544, abs=1e-6)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert space.build(space.decode("0-0-0-0-0-0-0-0"), in_channels=1)(
        torch.randn(1, 1, 28, 28)
    ).shape == (1, 10)


def test_parameters_and_macs_equal_the_table(rows) -> None:
    space = MacroSpace()
    assert len(rows) == 6561
    for i, row in enumerate(rows[::13]):
        net = space.build(space.decode(row["arch"]))
        assert count_params(net) == pytest.approx(float(row["params_m"]), abs=1e-6), row["arch"]
        if i % 10 == 0:
            macs = count_flops(net, (1, 3, 32, 32))
            assert macs == pytest.approx(float(row["flops_m"]), abs=1e-6), row["arch"]
        assert space.encode(space.canonical(space.decode(row["arch"]))) == row["trained_arch"]
