"""NVML meter of NVIDIA GPUs and the NVML identifiers of a trial's GPUs."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paretune.objectives.energy_meter import (
    SOURCE_NVML,
    EnergyMeter,
    EnergyReading,
    EnergyUnavailable,
)


# ---------------------------------------------------------------------- NVML
def trial_gpu_ids(
    cuda_index: int | None = 0,
    *,
    environ: Mapping[str, str] | None = None,
    gpu_ids: Sequence[int | str] | None = None,
    uuid_of: Callable[[int], str | None] | None = None,
) -> list[str]:
    """NVML identifiers of the GPUs a trial uses: a ``GPU-<uuid>`` or a physical index.

    NVML numbers every GPU of the machine, whatever ``CUDA_VISIBLE_DEVICES`` says, while CUDA
    (and torch) number only the visible ones. In order of reliability:

    1. ``uuid_of(cuda_index)``: the UUID torch reports for ``cuda:<cuda_index>`` (exact).
    2. Entry ``cuda_index`` of ``CUDA_VISIBLE_DEVICES`` (Ray sets it to the GPUs it gave the
       trial): a ``GPU-``/``MIG-`` UUID as is, or an integer, which is the NVML index when
       ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or the GPUs are all the same model.
    3. ``gpu_ids`` (``ray.get_gpu_ids()``), read the same way.
    4. ``cuda_index`` itself (nothing hides GPUs).

    Args:
        cuda_index: the CUDA device the trial runs on; ``None``: every visible GPU.
        environ: the environment (default ``os.environ``).
        gpu_ids: the GPU ids Ray assigned, when known.
        uuid_of: maps a CUDA index to its UUID (without or with the ``GPU-`` prefix).
    """
    env = os.environ if environ is None else environ
    if uuid_of is not None and cuda_index is not None:
        uuid = uuid_of(cuda_index)
        if uuid:
            uuid = str(uuid)
            return [uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"]
    entries: list[str] | None = None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "NoDevFiles"):
        entries = [e.strip() for e in visible.split(",") if e.strip()]
    elif gpu_ids:
        entries = [str(g) for g in gpu_ids]
    if entries is None:
        return [] if cuda_index is None else [str(cuda_index)]
    if cuda_index is None:
        return entries
    if not 0 <= cuda_index < len(entries):
        raise EnergyUnavailable(
            f"cuda:{cuda_index} is not among the {len(entries)} visible GPUs ({entries})"
        )
    return [entries[cuda_index]]


def torch_gpu_uuid(cuda_index: int) -> str | None:
    """The UUID torch reports for ``cuda:<cuda_index>``, or ``None`` (no CUDA, old torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    try:
        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
    except (RuntimeError, AssertionError):
        return None
    return str(uuid) if uuid else None


class NVMLMeter(EnergyMeter):
    """Energy of NVIDIA GPUs from NVML.

    Args:
        devices: NVML identifiers (physical indices or ``GPU-<uuid>``); default: the trial's GPU
            from :func:`trial_gpu_ids`. Several GPUs are summed.
        nvml: the NVML module (default: ``import pynvml`` from ``nvidia-ml-py``); tests pass a
            fake here.
        power_poll_s: power sampling interval where the energy counter is unsupported.
        force_polling: integrate polled power even where the counter works.
        align_s: the driver updates the energy counter in steps (tens of ms apart), so a window
            read at arbitrary times is off by up to a step at each end. With ``align_s > 0`` a
            window starts and ends on an update: ``start`` and ``stop`` poll the counter
            (every ``align_poll_s``) until it changes, waiting ``align_s`` at most. Window and
            counter then cover the same time, whatever the step; the total includes up to one
            step of the time after the work. ``0``: read at once.
        align_poll_s: polling interval while aligning.

    Raises:
        EnergyUnavailable: NVML cannot be loaded or initialised, a GPU cannot be opened, or a
            GPU supports neither the energy counter nor power readings.
    """

    source = SOURCE_NVML

    def __init__(
        self,
        devices: Sequence[int | str] | None = None,
        *,
        nvml: Any = None,
        power_poll_s: float = 0.02,
        force_polling: bool = False,
        align_s: float = 0.25,
        align_poll_s: float = 0.0005,
    ) -> None:
        if not (align_s >= 0 and align_poll_s > 0):
            raise ValueError(
                f"NVMLMeter: align_s={align_s!r} must be >= 0 and align_poll_s={align_poll_s!r} > 0"
            )
        self.align_s = float(align_s)
        self.align_poll_s = float(align_poll_s)
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                raise EnergyUnavailable(
                    f"NVML: the nvidia-ml-py package is not installed ({exc})"
                ) from None
        self.nvml = nvml
        error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except error as exc:
            raise EnergyUnavailable(f"NVML: cannot initialise ({exc})") from None
        ids = [str(d) for d in devices] if devices is not None else None
        if ids is None:
            ids = trial_gpu_ids(0, uuid_of=torch_gpu_uuid)
        if not ids:
            raise EnergyUnavailable("NVML: no GPU to measure")
        self.device_ids = ids
        self.handles = []
        for ident in ids:
            try:
                if ident.startswith(("GPU-", "MIG-")):
                    handle = nvml.nvmlDeviceGetHandleByUUID(ident)
                else:
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(ident))
            except (error, ValueError) as exc:
                raise EnergyUnavailable(f"NVML: cannot open GPU {ident!r} ({exc})") from None
            self.handles.append(handle)
        self.counter = not force_polling
        if self.counter:
            try:
                for h in self.handles:
                    nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            except error:
                self.counter = False
        if not self.counter:
            try:
                for h in self.handles:
                    nvml.nvmlDeviceGetPowerUsage(h)
            except error as exc:
                raise EnergyUnavailable(
                    f"NVML: GPU {ids} supports neither the energy counter nor power readings ({exc})"
                ) from None
            if not power_poll_s > 0:
                raise ValueError(f"NVMLMeter: power_poll_s={power_poll_s!r} must be > 0")
            self.poll_interval_s = float(power_poll_s)
        self.method = "nvml-energy-counter" if self.counter else "nvml-power-polling"

    def describe(self) -> str:
        return f"NVML {self.method} on GPU {', '.join(self.device_ids)}"

    def _counter_mj(self) -> list[float]:
        return [float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def _power_w(self) -> float:
        return sum(float(self.nvml.nvmlDeviceGetPowerUsage(h)) for h in self.handles) / 1e3

    def _next_update(self) -> list[float]:
        """The counters at their next update (or after ``align_s``, or at once when 0)."""
        before = self._counter_mj()
        if self.align_s <= 0:
            return before
        deadline = time.perf_counter() + self.align_s
        while True:
            time.sleep(self.align_poll_s)
            now = self._counter_mj()
            if now != before or time.perf_counter() >= deadline:
                return now

    def _begin(self) -> dict[str, Any]:
        if self.counter:
            start = self._next_update()
            return {"start": start, "last": list(start), "samples": 1}
        return {"t": time.perf_counter(), "p": self._power_w(), "joules": 0.0, "samples": 1}

    def _sample(self, state: dict[str, Any]) -> None:
        state["samples"] += 1
        if self.counter:
            state["last"] = self._counter_mj()
            return
        now, power = time.perf_counter(), self._power_w()
        state["joules"] += 0.5 * (power + state["p"]) * (now - state["t"])
        state["t"], state["p"] = now, power

    def _finish(self, state: dict[str, Any]) -> None:
        if self.counter:
            state["samples"] += 1
            state["last"] = self._next_update()
        else:
            self._sample(state)

    def _reading(self, state: dict[str, Any], seconds: float) -> EnergyReading:
        if self.counter:
            mj = sum(b - a for a, b in zip(state["start"], state["last"], strict=True))
            joules = mj / 1e3
        else:
            joules = state["joules"]
        return EnergyReading(joules, seconds, self.source, self.method, state["samples"])
