"""TrainEvaluator: real training on digits, per-epoch reports, measurement, determinism."""

from __future__ import annotations

import pytest
import torch

from paretune.objectives.base import Evaluator
from paretune.objectives.energy import EnergyMeter, EnergyReading
from paretune.objectives.measure import count_energy_inputs, count_flops, count_params
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
    ev = TrainEvaluator(**FAST, energy_meter="estimate")  # the same on every host
    assert isinstance(ev, Evaluator)
    reports = []
    result = ev.evaluate(ARCH, report=reports.append, parent_checkpoint=None, generation=3)
    assert [r["epoch"] for r in reports] == [1, 2]
    # Every epoch carries the costs too, so a trial stopped early still has every objective.
    expected_keys = {
        "accuracy",
        "params",
        "flops",
        "latency",
        "latency_batch",
        "energy",
        "energy_dynamic",
        "energy_train",
        "epoch",
        "train_loss",
    }
    assert all(set(r) == expected_keys for r in reports)
    assert reports[-1]["accuracy"] == result.values["accuracy"]
    assert all(r["params"] == result.values["params"] for r in reports)
    assert reports[1]["train_loss"] < reports[0]["train_loss"]
    # energy of the training so far grows with the epochs
    assert 0 < reports[0]["energy_train"] < reports[1]["energy_train"]
    v = result.values
    assert (
        set(v)
        == set(ev.metrics())
        == {
            "accuracy",
            "test_accuracy",
            "params",
            "flops",
            "latency",
            "latency_batch",
            "energy",
            "energy_dynamic",
            "energy_train",
        }
    )
    assert v["accuracy"] > 50 and v["test_accuracy"] > 50  # chance is 10%
    assert result.sources == {
        "accuracy": "measured",
        "test_accuracy": "measured",
        "params": "measured",
        "flops": "measured",
        "latency": "measured",
        "latency_batch": "measured",
        "energy": "estimated",
        "energy_dynamic": "estimated",
        "energy_train": "estimated",
    }
    assert v["energy_dynamic"] == v["energy"]  # the analytic model has no idle part
    model = ev.build(ARCH)
    assert v["params"] == count_params(model)
    assert v["flops"] == count_flops(model, (1, 1, 8, 8))
    assert v["latency"] > 0 and v["energy"] > 0 and v["energy_train"] > 0
    assert v["latency_batch"] == v["latency"]  # latency_batch_size 1: the same measurement
    assert result.extras["epochs"] == 2 and result.extras["train_time_s"] > 0
    assert result.extras["device"] == "cpu" and torch.get_num_threads() == 1
    assert result.extras["inherited"] is False and result.extras["inherited_tensors"] == 0
    assert "inherit_error" not in result.extras  # no parent named, nothing attempted


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
        **FAST,
        energy_meter="estimate",
        energy_coefficients={"pj_per_weight_byte": 0.0, "pj_per_activation_byte": 0.0},
    ).evaluate(ARCH)
    # with only the per-MAC term left, energy is flops x pJ/MAC (mJ = M x pJ x 1e-3)
    assert base.values["energy"] == pytest.approx(base.values["flops"] * 4.6e-3)


# ---------------------------------------------------------------------- latency and energy
def test_batch_latency_is_measured_separately():
    ev = TrainEvaluator(**FAST, latency_batch_size=16, energy_meter="estimate")
    result = ev.evaluate(ARCH)
    v = result.values
    assert v["latency_batch"] > v["latency"] > 0  # 16 images take longer than 1
    assert result.extras["latency_batch_size"] == 16
    assert result.extras["energy_meter_error"] == "energy_meter = 'estimate'"
    # the estimate is per image of the energy window's batches (32): weights read once per
    # batch, MACs and activations once per image; no latency in it
    c = count_energy_inputs(ev.build(ARCH), (1, 1, 8, 8))
    expected = c.macs_m * 4.6e-3 + c.weights_m / 32 * 4 * 160e-3 + c.activations_m * 4 * 1.25e-3
    assert v["energy"] == pytest.approx(expected) and c.macs_m == v["flops"]
    assert result.extras["energy_dynamic_method"] == "analytic model (no idle part)"


def test_estimate_is_not_latency_times_a_constant(monkeypatch):
    import paretune.objectives.train as train

    # Every network "measures" 1 ms: the estimate must still tell them apart by their work.
    monkeypatch.setattr(train, "measure_latency", lambda *a, **k: 1.0)
    ev = TrainEvaluator(**{**FAST, "epochs": 1}, energy_meter="estimate")
    light = SPACE.decode("|none~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|")
    heavy = SPACE.decode(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "nor_conv_3x3~2|"
    )
    a, b = ev.evaluate(light).values, ev.evaluate(heavy).values
    assert a["latency"] == b["latency"] == 1.0
    assert b["flops"] > a["flops"] and b["energy"] > 1.5 * a["energy"] > 0
    assert a["energy_dynamic"] == a["energy"] and b["energy_dynamic"] == b["energy"]


def test_energy_on_this_machine_never_zero():
    from paretune.objectives.energy import EnergyUnavailable, rapl_zones

    ev = TrainEvaluator(**{**FAST, "epochs": 1})  # energy_meter="auto", device cpu
    try:
        rapl_zones()
    except EnergyUnavailable:
        expected = "estimated"  # this machine: no readable RAPL
    else:
        expected = "measured-rapl"  # a machine with readable RAPL (the counter may still fail)
    assert ev.metrics()["energy"].source == ev.metrics()["energy_dynamic"].source == expected
    result = ev.evaluate(ARCH)
    assert result.sources["energy"] in (expected, "estimated")
    assert result.values["energy"] > 0 and result.values["energy_train"] > 0
    assert result.values["energy_dynamic"] >= 0
    if expected == "estimated":
        assert "RAPL" in result.extras["energy_meter_error"]  # why no meter was used


def test_nvml_meter_measures_inference_window_and_training():
    from paretune.objectives.energy import NVMLMeter
    from tests.objectives.test_energy import FakeNVML

    fake = FakeNVML({0: 100.0})  # a FAKE GPU drawing 100 W, busy or idle
    ev = TrainEvaluator(
        **{**FAST, "epochs": 1},
        energy_meter=NVMLMeter([0], nvml=fake),
        energy_batch_size=8,
        energy_batches=3,
        energy_min_window_s=0.05,
        energy_idle_s=0.05,
    )
    assert ev.metrics()["energy"].source == "measured-nvml"
    assert ev.metrics()["energy_dynamic"] == ev.metrics()["energy"]
    result = ev.evaluate(ARCH)
    v, x = result.values, result.extras
    assert result.sources["energy"] == result.sources["energy_train"] == "measured-nvml"
    assert result.sources["energy_dynamic"] == "measured-nvml"
    assert x["energy_method"] == "nvml-energy-counter" and x["energy_window_s"] >= 0.05
    assert x["energy_window_images"] >= 3 * 8 and x["energy_window_images"] % 8 == 0
    assert v["energy"] == pytest.approx(x["energy_window_j"] * 1e3 / x["energy_window_images"])
    assert x["energy_window_j"] == pytest.approx(100.0 * x["energy_window_s"], rel=0.2)
    # static power only (what the H200 showed): the total is large, the energy above idle ~0
    assert x["energy_idle_w"] == pytest.approx(100.0, rel=0.1) and x["energy_idle_s"] >= 0.05
    assert abs(x["energy_dynamic_raw_mj"]) < 0.1 * v["energy"]
    assert v["energy_dynamic"] == max(x["energy_dynamic_raw_mj"], 0.0)
    assert x["energy_dynamic_method"] == "nvml-energy-counter minus idle power x window time"
    # the training window covers the epochs (and their validation): 100 W x about train_time_s
    assert v["energy_train"] == pytest.approx(100.0 * x["train_time_s"], rel=0.3)
    assert "energy_meter_error" not in x


class ScriptedMeter(EnergyMeter):
    """FAKE meter for tests, no hardware: window k draws ``watts[k]`` W (the last one after)."""

    source = "measured-nvml"
    method = "fake-scripted"

    def __init__(self, watts: list[float]) -> None:
        self.watts = watts
        self.windows = 0

    def _begin(self) -> dict:
        k = min(self.windows, len(self.watts) - 1)
        self.windows += 1
        return {"w": self.watts[k]}

    def _sample(self, state: dict) -> None:
        pass

    def _reading(self, state: dict, seconds: float) -> EnergyReading:
        return EnergyReading(state["w"] * seconds, seconds, self.source, self.method)


def test_energy_dynamic_subtracts_the_idle_power():
    # window 1: the idle reading (10 W), window 2: inference (30 W), then training
    ev = TrainEvaluator(
        **{**FAST, "epochs": 1},
        energy_meter=ScriptedMeter([10.0, 30.0, 30.0]),
        energy_batches=2,
        energy_min_window_s=0.0,
        energy_idle_s=0.02,
    )
    result = ev.evaluate(ARCH)
    v, x = result.values, result.extras
    images, seconds = x["energy_window_images"], x["energy_window_s"]
    assert v["energy"] == pytest.approx(30.0 * seconds * 1e3 / images)
    assert v["energy_dynamic"] == pytest.approx(20.0 * seconds * 1e3 / images)
    assert x["energy_idle_w"] == pytest.approx(10.0)
    assert result.sources["energy_dynamic"] == "measured-nvml"
    # an idle reading that fails: the total stays measured, energy above idle is estimated
    broken = TrainEvaluator(
        **{**FAST, "epochs": 1}, energy_meter=ScriptedMeter([float("nan"), 30.0])
    ).evaluate(ARCH)
    assert broken.sources["energy"] == "measured-nvml"
    assert broken.sources["energy_dynamic"] == "estimated"
    assert "idle power of nan W" in broken.extras["energy_dynamic_error"]


def test_a_meter_reading_zero_falls_back_to_the_estimate(tmp_path):
    from tests.objectives.test_energy import fake_powercap

    # A FAKE powercap tree whose counter never moves: 0 J is "unsupported", not a measurement.
    root = fake_powercap(tmp_path, {"intel-rapl:0": ("package-0", 1000, 10**9)})
    ev = TrainEvaluator(
        **{**FAST, "epochs": 1}, energy_meter="rapl", rapl_root=root, energy_min_window_s=0.0
    )
    assert ev.metrics()["energy"].source == "measured-rapl"
    result = ev.evaluate(ARCH)
    assert result.sources["energy"] == result.sources["energy_train"] == "estimated"
    assert result.values["energy"] > 0 and result.values["energy_train"] > 0
    assert "read 0.0 J" in result.extras["energy_meter_error"]


def test_onnx_latency_is_its_own_metric():
    ev = TrainEvaluator(**{**FAST, "epochs": 1}, onnx_latency=True, energy_meter="estimate")
    assert ev.metrics()["latency_onnx"].source == "measured"
    assert "latency_onnx" not in TrainEvaluator().metrics()  # only when asked for
    result = ev.evaluate(ARCH)
    assert result.values["latency_onnx"] > 0 and result.sources["latency_onnx"] == "measured"
    assert result.extras["latency_onnx_provider"] == "CPUExecutionProvider"


def test_new_settings_are_checked():
    with pytest.raises(ValueError, match=r"energy_meter='joules' is unknown \(allowed: \['auto'"):
        TrainEvaluator(energy_meter="joules")
    with pytest.raises(ValueError, match="finetune_epochs=0 must be an integer >= 1 or None"):
        TrainEvaluator(finetune_epochs=0)
    with pytest.raises(ValueError, match="energy_batches=0 must be an integer >= 1"):
        TrainEvaluator(energy_batches=0)
    with pytest.raises(ValueError, match="energy_idle_s=0 must be a finite number > 0"):
        TrainEvaluator(energy_idle_s=0)


# ---------------------------------------------------------------------- weights and inheritance
# The parent's last edge (2->3) is nor_conv_3x3; the child's is nor_conv_1x1: a one-edit
# perturbation whose conv weights differ in shape but whose BatchNorm has the same shape.
CHILD = SPACE.decode(
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
)
ONE_EPOCH = {**FAST, "epochs": 1, "latency_repeats": 1, "energy_meter": "estimate"}


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory):
    trial_dir = tmp_path_factory.mktemp("parent_trial")
    result = TrainEvaluator(**ONE_EPOCH).evaluate(ARCH, trial_dir=str(trial_dir))
    assert result.extras["weights_path"] == str(trial_dir / "weights.pt")
    return trial_dir


def test_weights_are_saved_with_arch_and_settings(parent_dir):
    import json

    state = torch.load(parent_dir / "weights.pt", weights_only=True)
    model = TrainEvaluator(**ONE_EPOCH).build(ARCH)
    assert set(state) == set(model.state_dict())
    meta = json.loads((parent_dir / "weights.json").read_text())
    assert meta["arch"] == SPACE.encode(ARCH) and meta["arch_indices"] == list(ARCH)
    assert (meta["channels"], meta["cells_per_stage"], meta["input_size"]) == (4, 1, 8)
    assert meta["num_classes"] == 10 and meta["dataset"] == "digits"


def test_inherit_copies_matching_tensors_but_not_the_perturbed_edge(parent_dir):
    from paretune.objectives.train import inherit_weights

    parent = torch.load(parent_dir / "weights.pt", weights_only=True)
    child = TrainEvaluator(**ONE_EPOCH).build(CHILD)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    n, why = inherit_weights(child, parent_dir / "weights.pt", CHILD)
    own = child.state_dict()
    perturbed = [k for k in own if ".ops.5." in k]  # one cell per stage: 3 cells x 6 tensors
    assert why is None and len(perturbed) == 18 and n == len(own) - len(perturbed)
    torch.testing.assert_close(own["stem.0.weight"], parent["stem.0.weight"])
    torch.testing.assert_close(own["cells.0.ops.0.1.weight"], parent["cells.0.ops.0.1.weight"])
    # the perturbed edge starts fresh, BatchNorm included although its shape matches
    torch.testing.assert_close(own["cells.0.ops.5.2.weight"], fresh["cells.0.ops.5.2.weight"])
    assert not torch.equal(parent["cells.0.ops.5.2.weight"], fresh["cells.0.ops.5.2.weight"])
    # without weights.json only name and shape decide: the BatchNorm tensors come along
    bare = parent_dir.parent / "bare"
    bare.mkdir(exist_ok=True)
    (bare / "weights.pt").write_bytes((parent_dir / "weights.pt").read_bytes())
    other = TrainEvaluator(**ONE_EPOCH).build(CHILD)
    n_bare, _ = inherit_weights(other, bare, CHILD)  # a folder works too
    assert n_bare == len(own) - 3  # only the 3 conv weights of edge 5 differ in shape


def test_child_trial_inherits_and_finetunes(parent_dir, tmp_path):
    ev = TrainEvaluator(**{**ONE_EPOCH, "epochs": 3}, finetune_epochs=1)
    reports = []
    result = ev.evaluate(
        CHILD,
        reports.append,
        meta={"parent_checkpoint": str(parent_dir / "weights.pt")},
        trial_dir=str(tmp_path),
    )
    x = result.extras
    assert x["inherited"] is True and x["inherited_tensors"] > 0 and "inherit_error" not in x
    assert x["epochs"] == 1 and len(reports) == 1  # finetune_epochs, not epochs
    assert (tmp_path / "weights.pt").is_file()  # the child's weights, for its own children
    import json

    meta = json.loads((tmp_path / "weights.json").read_text())
    assert meta["parent_checkpoint"] == str(parent_dir / "weights.pt")


def test_unreadable_or_missing_parent_trains_from_scratch(tmp_path):
    from paretune.objectives.train import inherit_weights

    model = TrainEvaluator(**ONE_EPOCH).build(CHILD)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n, why = inherit_weights(model, tmp_path / "nope" / "weights.pt", CHILD)
    assert n == 0 and "does not exist" in why
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"not a torch file")
    n, why = inherit_weights(model, garbage, CHILD)
    assert n == 0 and "unreadable" in why
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    n, why = inherit_weights(model, tmp_path / "other.pt", CHILD)
    assert n == 0 and "no tensor" in why
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # untouched
    # through the evaluator: the trial still runs, for the normal number of epochs
    ev = TrainEvaluator(**{**ONE_EPOCH, "epochs": 2}, finetune_epochs=1)
    result = ev.evaluate(CHILD, meta={"parent_checkpoint": str(garbage)})
    assert result.extras["inherited"] is False and result.extras["inherited_tensors"] == 0
    assert "unreadable" in result.extras["inherit_error"] and result.extras["epochs"] == 2
    assert result.values["accuracy"] > 10


def test_energy_dynamic_is_an_objective_wherever_energy_is(tmp_path):
    from paretune.objectives import make_evaluator
    from paretune.objectives.base import ObjectiveSet, check_objectives
    from paretune.platform.config import load_config

    conf = tmp_path / "dyn.yaml"
    conf.write_text(
        "name: dyn\n"
        "evaluator: {kind: train, energy_idle_s: 0.2}\n"
        "objectives:\n"
        "  - {name: accuracy, direction: max}\n"
        "  - {name: energy_dynamic, direction: min}\n"
    )
    cfg = load_config(conf)
    ev = make_evaluator("train", **cfg.evaluator.model_dump(exclude={"kind"}))
    assert ev.energy_idle_s == 0.2
    info = ev.metrics()["energy_dynamic"]
    assert (info.unit, info.direction) == ("mJ", "min")
    objectives = ObjectiveSet.of(*((o.name, o.direction) for o in cfg.objectives))
    check_objectives(objectives, ev.metrics())  # raises when a name is not a metric
