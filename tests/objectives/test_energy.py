"""Energy meters: NVML against a fake NVML (it says so), RAPL against a fake powercap tree.

The hardware is faked, and each fake says it is one, so that these tests give the same result
on machines with and without a GPU or readable RAPL: no test reads the host's real GPUs (the
fake NVML is never given a UUID torch reports), and the host's real RAPL decides only the test
that says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from paretune.objectives.energy import (
    SOURCE_ESTIMATED,
    SOURCE_NVML,
    SOURCE_RAPL,
    EnergyCoefficients,
    EnergyUnavailable,
    NVMLMeter,
    RAPLMeter,
    energy_above_idle,
    estimate_training_energy,
    make_energy_meter,
    measure_idle,
    rapl_zones,
    trial_gpu_ids,
)


class FakeNVMLError(Exception):
    """The fake NVML's error type (the real one is ``pynvml.NVMLError``)."""


class FakeNVML:
    """FAKE NVML module for tests: NOT the NVIDIA library, no GPU is read.

    Mimics the functions of ``pynvml`` that :class:`NVMLMeter` calls. Each fake GPU draws a
    power (W) that a test may change (:meth:`set_watts`); its energy counter (mJ) integrates
    that power over wall time. GPUs listed in ``no_counter`` raise on
    ``nvmlDeviceGetTotalEnergyConsumption`` (pre-Volta), so the meter must fall back to polling
    ``nvmlDeviceGetPowerUsage`` (mW). With ``tick_s`` the counter moves in steps, as the
    driver's does: it reads the energy at the last multiple of ``tick_s`` (power kept constant).
    """

    FAKE = True
    NVMLError = FakeNVMLError

    def __init__(
        self,
        watts: dict[int, float],
        uuids: dict[str, int] | None = None,
        no_counter: frozenset[int] = frozenset(),
        tick_s: float | None = None,
    ):
        self.tick_s = tick_s
        self.watts = dict(watts)
        self.uuids = uuids or {}
        self.no_counter = no_counter
        self.t0 = time.perf_counter()
        self.energy_mj = {h: 1_000_000.0 for h in self.watts}
        self.last = {h: self.t0 for h in self.watts}
        self.initialised = False
        self.counter_reads = 0
        self.power_reads = 0

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index not in self.watts:
            raise FakeNVMLError(f"fake NVML: no GPU {index}")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid not in self.uuids:
            raise FakeNVMLError(f"fake NVML: no GPU {uuid}")
        return self.uuids[uuid]

    def _advance(self, handle: int) -> None:
        now = time.perf_counter()
        self.energy_mj[handle] += self.watts[handle] * (now - self.last[handle]) * 1e3
        self.last[handle] = now

    def set_watts(self, handle: int, watts: float) -> None:
        self._advance(handle)
        self.watts[handle] = watts

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if handle in self.no_counter:
            raise FakeNVMLError("fake NVML: Not Supported")
        self.counter_reads += 1
        self._advance(handle)
        if self.tick_s:  # constant power: the energy at the last whole step
            steps = (self.last[handle] - self.t0) // self.tick_s
            return int(1_000_000 + self.watts[handle] * steps * self.tick_s * 1e3)
        return int(self.energy_mj[handle])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self.power_reads += 1
        return int(self.watts[handle] * 1e3)


def test_fake_nvml_says_it_is_fake():
    assert FakeNVML.FAKE is True and "FAKE" in FakeNVML.__doc__


def test_nvml_energy_counter_difference_over_the_window():
    fake = FakeNVML({0: 10.0, 1: 200.0})
    meter = NVMLMeter(["1"], nvml=fake)
    assert fake.initialised and meter.counter and meter.source == SOURCE_NVML
    assert meter.poll_interval_s is None  # the counter needs no thread
    window = meter.start()
    time.sleep(0.2)
    reading = window.stop()
    assert reading.method == "nvml-energy-counter" and reading.source == "measured-nvml"
    # GPU 1 draws 200 W, not GPU 0's 10 W: about 40 J over 0.2 s (sleep overshoots a little)
    assert reading.seconds >= 0.2
    assert reading.joules == pytest.approx(200.0 * reading.seconds, rel=0.1)
    assert window.stop() is reading  # stopping twice keeps the first reading


def test_nvml_windows_align_to_counter_updates():
    fake = FakeNVML({0: 100.0}, tick_s=0.05)  # a FAKE counter that moves every 50 ms (5 J)
    meter = NVMLMeter([0], nvml=fake)
    for _ in range(2):
        window = meter.start()
        time.sleep(0.22)
        reading = window.stop()
        # read at arbitrary times the counter would say 20 or 25 J for 0.22 s (22 J); aligned,
        # the window spans whole steps: 0.25 s and 25 J
        assert reading.seconds >= 0.22
        assert reading.joules == pytest.approx(100.0 * reading.seconds, rel=0.05)
    with pytest.raises(ValueError, match="align_s=-1"):
        NVMLMeter([0], nvml=fake, align_s=-1)


def test_nvml_sums_several_gpus_and_opens_uuids():
    fake = FakeNVML({0: 50.0, 1: 150.0}, uuids={"GPU-aaaa": 0, "GPU-bbbb": 1})
    meter = NVMLMeter(["GPU-aaaa", "GPU-bbbb"], nvml=fake)
    with meter.start() as window:
        time.sleep(0.1)
    assert window.reading.joules == pytest.approx(200.0 * window.reading.seconds, rel=0.15)


def test_nvml_falls_back_to_power_polling_without_the_counter():
    fake = FakeNVML({0: 80.0}, no_counter=frozenset({0}))
    meter = NVMLMeter([0], nvml=fake, power_poll_s=0.01)
    assert not meter.counter and meter.method == "nvml-power-polling"
    window = meter.start()
    time.sleep(0.25)
    partial = window.read()
    reading = window.stop()
    assert reading.method == "nvml-power-polling"
    assert reading.samples > 5 and fake.power_reads > 5  # polled by the thread
    assert 0 < partial.joules <= reading.joules
    assert reading.joules == pytest.approx(80.0 * reading.seconds, rel=0.05)


def test_nvml_unavailable_reasons():
    with pytest.raises(EnergyUnavailable, match="cannot open GPU '3'"):
        NVMLMeter(["3"], nvml=FakeNVML({0: 1.0}))

    class NoPower(FakeNVML):
        """FAKE NVML whose GPU reports neither energy nor power."""

        def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
            raise FakeNVMLError("fake NVML: Not Supported")

    with pytest.raises(EnergyUnavailable, match="neither the energy counter nor power"):
        NVMLMeter([0], nvml=NoPower({0: 1.0}, no_counter=frozenset({0})))


def test_trial_gpu_ids_resolve_the_physical_gpu():
    # Ray gave the trial physical GPUs 2 and 3: torch's cuda:1 is physical GPU 3.
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert trial_gpu_ids(0, environ=env) == ["2"]
    assert trial_gpu_ids(1, environ=env) == ["3"]
    assert trial_gpu_ids(None, environ=env) == ["2", "3"]
    # UUIDs pass through; torch's UUID beats the environment
    assert trial_gpu_ids(0, environ={"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == ["GPU-abc"]
    assert trial_gpu_ids(0, environ=env, uuid_of=lambda i: "1234-5678") == ["GPU-1234-5678"]
    # no CUDA_VISIBLE_DEVICES: ray.get_gpu_ids(), else the index itself
    assert trial_gpu_ids(0, environ={}, gpu_ids=[5]) == ["5"]
    assert trial_gpu_ids(1, environ={}) == ["1"]
    with pytest.raises(EnergyUnavailable, match="cuda:2 is not among the 2 visible GPUs"):
        trial_gpu_ids(2, environ=env)


# ---------------------------------------------------------------------- RAPL (fake sysfs tree)
def fake_powercap(root: Path, zones: dict[str, tuple[str, int, int]]) -> Path:
    """A FAKE /sys/class/powercap tree: {folder: (name, energy_uj, max_energy_range_uj)}."""
    for folder, (name, energy, max_range) in zones.items():
        d = root / folder
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def set_energy(root: Path, folder: str, value: int) -> None:
    (root / folder / "energy_uj").write_text(f"{value}\n")


def test_rapl_zones_packages_and_dram_not_psys_or_cores(tmp_path):
    root = fake_powercap(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 100, 1000),
            "intel-rapl:0:0": ("core", 50, 1000),
            "intel-rapl:0:1": ("dram", 10, 500),
            "intel-rapl:1": ("psys", 5, 1000),
        },
    )
    (root / "intel-rapl").mkdir()  # the control-type folder without counters
    zones = rapl_zones(root)
    assert [(z.path.name, z.name, z.max_range_uj) for z in zones] == [
        ("intel-rapl:0", "package-0", 1000),
        ("intel-rapl:0:1", "dram", 500),
    ]
    assert [z.name for z in rapl_zones(root, include_dram=False)] == ["package-0"]


def test_rapl_counts_wrap_around(tmp_path):
    root = fake_powercap(
        tmp_path,
        {"intel-rapl:0": ("package-0", 900_000, 1_000_000), "intel-rapl:0:2": ("dram", 0, 10**9)},
    )
    meter = RAPLMeter(root, poll_interval_s=3600)  # no thread sample during the test
    window = meter.start()
    set_energy(root, "intel-rapl:0", 950_000)
    first = window.read()
    assert first.joules == pytest.approx(0.05)  # 50,000 µJ
    set_energy(root, "intel-rapl:0", 200_000)  # wrapped: 950,000 -> 1,000,000 -> 200,000
    set_energy(root, "intel-rapl:0:2", 300_000)
    reading = window.stop()
    assert reading.source == SOURCE_RAPL and reading.method == "rapl-counter"
    assert reading.joules == pytest.approx(0.05 + 0.25 + 0.3)


def test_rapl_unavailable_here_and_when_unreadable(tmp_path):
    with pytest.raises(EnergyUnavailable, match="does not exist"):
        RAPLMeter(tmp_path / "missing")
    root = fake_powercap(tmp_path / "pc", {"intel-rapl:0": ("package-0", 1, 10)})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file, like a root-only one
    with pytest.raises(EnergyUnavailable, match="nothing readable"):
        RAPLMeter(root)


def test_make_energy_meter_on_this_machine(tmp_path):
    meter, why = make_energy_meter("auto", "cpu")
    try:
        rapl_zones()
    except EnergyUnavailable:
        assert meter is None and "RAPL" in why  # this machine: no readable RAPL
    else:
        assert isinstance(meter, RAPLMeter) and why == ""  # a machine with readable RAPL
    meter, why = make_energy_meter("rapl", "cpu", rapl_root=tmp_path / "nothing")
    assert meter is None and "does not exist" in why
    meter, why = make_energy_meter("estimate", "cpu")
    assert meter is None and why == "energy_meter = 'estimate'"
    with pytest.raises(ValueError, match=r"energy meter 'joules' is unknown \(allowed:"):
        make_energy_meter("joules")


def test_make_energy_meter_nvml_ignores_the_hosts_real_gpus():
    # A cpu trial with "nvml" measures the first visible GPU, and never asks torch for a UUID
    # (on a GPU machine the real GPU's UUID is not in the fake): only the environment decides.
    fake = FakeNVML({0: 1.0, 1: 2.0}, uuids={"GPU-aaaa": 0, "GPU-bbbb": 1})
    meter, why = make_energy_meter("nvml", "cpu", nvml=fake, environ={})
    assert isinstance(meter, NVMLMeter) and meter.device_ids == ["0"] and why == ""
    meter, _ = make_energy_meter(
        "nvml", "cpu", nvml=fake, environ={"CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-aaaa"}
    )
    assert meter.device_ids == ["GPU-bbbb"]
    # a CUDA trial: the UUID of its device comes first (here a fake lookup, not torch)
    uuids = {0: "bbbb", 1: "aaaa"}
    meter, _ = make_energy_meter(
        "auto", "cuda:1", nvml=fake, environ={}, uuid_of=lambda i: uuids[i]
    )
    assert isinstance(meter, NVMLMeter) and meter.device_ids == ["GPU-aaaa"]
    meter, why = make_energy_meter("auto", "cuda", nvml=fake, environ={}, uuid_of=lambda i: "cc")
    assert meter is None and "cannot open GPU 'GPU-cc'" in why


def test_idle_baseline_and_energy_above_idle():
    fake = FakeNVML({0: 60.0})  # a FAKE GPU idling at 60 W
    meter = NVMLMeter([0], nvml=fake)
    idle = measure_idle(meter, 0.1)
    assert idle.seconds >= 0.1 and idle.watts == pytest.approx(60.0, rel=0.05)
    fake.set_watts(0, 100.0)  # work starts: 40 W above idle
    window = meter.start()
    time.sleep(0.2)
    total = window.stop()
    joules, method = energy_above_idle(total, idle)
    assert total.joules == pytest.approx(100.0 * total.seconds, rel=0.05)
    assert joules == pytest.approx(40.0 * total.seconds, rel=0.15)
    assert method == "nvml-energy-counter minus idle power x window time"
    # the same work with no power above idle reads about 0, whatever the static power
    fake.set_watts(0, 60.0)
    flat = meter.start()
    time.sleep(0.1)
    near_zero, _ = energy_above_idle(flat.stop(), idle)
    assert abs(near_zero) < 0.1 * 60.0 * 0.1
    with pytest.raises(ValueError, match="seconds=0 must be > 0"):
        measure_idle(meter, 0)


def test_estimate_training_energy_formula():
    c = EnergyCoefficients(
        pj_per_mac=2.0, pj_per_weight_byte=100.0, pj_per_activation_byte=1.0, bytes_per_value=4.0
    )
    # per sample 3 x (10 M MACs x 2 pJ + 5 M activations x 4 B x 1 pJ) = 120 uJ, x 1000 = 0.12 J;
    # per step 3 x 1 M weights x 4 B x 100 pJ = 1.2 mJ, x 20 steps = 0.024 J. No time term.
    assert estimate_training_energy(10.0, 1.0, 5.0, 1000, 20, c) == pytest.approx(0.144)
    assert estimate_training_energy(10.0, 1.0, 5.0, 2000, 20, c) > 0.144
    assert estimate_training_energy(20.0, 1.0, 5.0, 1000, 20, c) > 0.144
    assert SOURCE_ESTIMATED == "estimated"
