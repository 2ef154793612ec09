"""TableEvaluator over the real NB201 table, and the HW-NAS-Bench pickle loader."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from paretune.objectives.base import Evaluator
from paretune.objectives.nb201_table import load_table
from paretune.objectives.table import TableEvaluator, load_hw_nas_bench_pickle
from paretune.spaces.nb201 import NB201Space

BEST_INDEX = 6111  # best cifar10_test_200 (94.3733), from the table's README


@pytest.fixture(scope="module")
def table(nb201_path) -> pd.DataFrame:
    return load_table(nb201_path)


@pytest.fixture(scope="module")
def evaluator(nb201_path) -> TableEvaluator:
    return TableEvaluator(nb201_path)


def test_metrics_name_units_directions_and_sources(evaluator):
    assert isinstance(evaluator, Evaluator)
    m = evaluator.metrics()
    for name, unit, direction in [
        ("accuracy", "%", "max"),
        ("test_accuracy", "%", "max"),
        ("params", "M", "min"),
        ("flops", "M", "min"),
        ("latency", "ms", "min"),
        ("energy", "mJ", "min"),
        ("latency_ms_raspi4", "ms", "min"),
        ("energy_mj_pi5_litert", "mJ", "min"),
        ("cifar100_valid_12", "%", "max"),
    ]:
        assert (m[name].unit, m[name].direction, m[name].source) == (unit, direction, "table"), name
    assert "arch" not in m


def test_evaluate_returns_the_row(evaluator, table):
    row = table.loc[BEST_INDEX]
    arch = NB201Space().decode(row["arch"])
    ev = evaluator.evaluate(
        arch, report=lambda r: pytest.fail("no intermediate reports"), trial="x"
    )
    assert ev.values == {
        "accuracy": row["cifar10_valid_200"],
        "test_accuracy": 94.3733,
        "params": row["cifar10_params_m"],
        "flops": row["cifar10_flops_m"],
        "latency": row["latency_ms_pixel3"],
        "energy": row["energy_mj_pi5_onnx"],
    }
    assert set(ev.sources.values()) == {"table"} and set(ev.sources) == set(ev.values)
    assert ev.extras == {"nb201_index": BEST_INDEX}
    # a list works as well as a tuple, and returned dicts are not shared
    again = evaluator.evaluate(list(arch))
    assert again.values == ev.values and again.values is not ev.values


def test_every_architecture_maps_to_its_own_row(evaluator, table):
    space = NB201Space()
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        ev = evaluator.evaluate(arch)
        row = table.loc[ev.extras["nb201_index"]]
        assert row["arch"] == space.encode(arch)
        assert ev.values["test_accuracy"] == row["cifar10_test_200"]


def test_dataset_fidelity_devices_and_extra_columns(nb201_path, table):
    ev = TableEvaluator(
        nb201_path,
        dataset="imagenet16",
        fidelity=12,
        latency_device="raspi4",
        energy_device="pi5_litert",
        extra=["latency_ms_1080ti_1", "cifar10_test_200"],
    )
    row = table.loc[BEST_INDEX]
    values = ev.evaluate(NB201Space().decode(row["arch"])).values
    assert values["accuracy"] == row["imagenet16_valid_12"]
    assert values["test_accuracy"] == row["imagenet16_test_12"]
    assert values["flops"] == row["imagenet16_flops_m"]
    assert values["latency"] == row["latency_ms_raspi4"]
    assert values["energy"] == row["energy_mj_pi5_litert"]
    assert values["latency_ms_1080ti_1"] == row["latency_ms_1080ti_1"]
    assert values["cifar10_test_200"] == 94.3733
    assert len(values) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dataset": "svhn"},
            r"dataset 'svhn'.*available: \['cifar10', 'cifar100', 'imagenet16'\]",
        ),
        ({"fidelity": 50}, r"fidelity 50.*available: \[12, 200\]"),
        ({"latency_device": "iphone"}, r"latency_device 'iphone'.*'pixel3'.*'raspi4'"),
        (
            {"energy_device": "pixel3"},
            r"energy_device 'pixel3'.*'pi5_litert', 'pi5_onnx', 'pi5_torchmobile'",
        ),
        ({"extra": ["latency_ms_iphone"]}, r"\['latency_ms_iphone'\] are not table columns"),
    ],
)
def test_unknown_settings_list_what_is_available(nb201_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TableEvaluator(nb201_path, **kwargs)


def test_bad_architecture(evaluator):
    with pytest.raises(ValueError, match="not an NB201 architecture"):
        evaluator.evaluate((0, 1, 2))
    with pytest.raises(ValueError, match="not an NB201 architecture"):
        evaluator.evaluate((0, 1, 2, 3, 4, 5))


def test_evaluate_is_the_row_of_the_matrix(evaluator):
    # A lookup in rows prepared once (no DataFrame work per call); its speed is measured by
    # benchmarks/overhead.py, not here.
    names = list(evaluator.evaluate((0, 0, 0, 0, 0, 0)).values)
    values, archs = evaluator.matrix(names)
    for i in range(0, len(archs), 7):
        got = evaluator.evaluate(archs[i]).values
        assert [got[n] for n in names] == pytest.approx(list(values[i]), nan_ok=True)


def test_matrix_covers_the_space_in_order(evaluator, table):
    values, archs = evaluator.matrix(["accuracy", "test_accuracy", "latency_ms_raspi4"])
    assert values.shape == (15625, 3)
    assert archs == list(NB201Space())
    for k in (0, 777, 15624):
        ev = evaluator.evaluate(archs[k])
        assert values[k, 0] == ev.values["accuracy"]
        row = table.loc[ev.extras["nb201_index"]]
        assert values[k, 2] == row["latency_ms_raspi4"]
    assert values[:, 1].max() == 94.3733
    # a restricted space gives its own architectures only
    small = NB201Space().restrict({"e0_1": ["nor_conv_3x3"], "e1_2": ["skip_connect", "none"]})
    sub, sub_archs = evaluator.matrix(["test_accuracy"], space=small)
    assert sub.shape == (small.size, 1) and sub_archs == list(small)
    assert sub[3, 0] == evaluator.evaluate(sub_archs[3]).values["test_accuracy"]
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        evaluator.matrix(["speed"])


def _write_hw_pickle(path, n: int = 5) -> None:
    metrics = [
        "edgegpu_latency",
        "edgegpu_energy",
        "raspi4_latency",
        "edgetpu_latency",
        "pixel3_latency",
        "eyeriss_latency",
        "eyeriss_energy",
        "eyeriss_arithmetic_intensity",
        "fpga_latency",
        "fpga_energy",
    ]
    per_dataset = {}
    for k, dataset in enumerate(["cifar10", "cifar100", "ImageNet16-120"]):
        entry = {m: [float(100 * k + 10 * j + i) for i in range(n)] for j, m in enumerate(metrics)}
        entry["config"] = [
            {"name": "infer.tiny", "C": 16, "N": 5, "arch_str": "..."} for _ in range(n)
        ]
        per_dataset[dataset] = entry
    with open(path, "wb") as f:
        pickle.dump({"nasbench201": per_dataset, "fbnet": {}}, f)


def test_hw_nas_bench_pickle(tmp_path):
    path = tmp_path / "HW-NAS-Bench-v1_0.pickle"
    _write_hw_pickle(path)
    df = load_hw_nas_bench_pickle(path, "cifar100")
    assert df.index.name == "index" and df.index.tolist() == [0, 1, 2, 3, 4]
    assert "config" not in df.columns and len(df.columns) == 10
    assert df.loc[3, "edgegpu_latency"] == 103.0
    assert df.loc[2, "fpga_energy"] == 100 + 90 + 2
    with pytest.raises(
        ValueError, match=r"dataset 'imagenet'.*\['ImageNet16-120', 'cifar10', 'cifar100'\]"
    ):
        load_hw_nas_bench_pickle(path, "imagenet")
    with pytest.raises(FileNotFoundError, match="missing.pickle"):
        load_hw_nas_bench_pickle(tmp_path / "missing.pickle", "cifar10")


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_hw_nas_bench_pickle_is_read_as_data_never_unpickled(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "crafted.pickle"
    path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": {"x": _Payload(str(marker))}}}))
    with pytest.raises(
        ValueError, match=r"crafted.pickle': not an HW-NAS-Bench pickle \(holds a .*open object"
    ):
        load_hw_nas_bench_pickle(path, "cifar10")
    assert not marker.exists()
    # numpy values (as the real file may hold) are data and are read.
    import numpy as np

    values = {"lat": [np.float64(1.5), np.float32(2.5)], "arr": np.arange(2.0)}
    path.write_bytes(pickle.dumps({"nasbench201": {"cifar10": values}}))
    df = load_hw_nas_bench_pickle(path, "cifar10")
    assert df["lat"].tolist() == [1.5, 2.5] and df["arr"].tolist() == [0.0, 1.0]
