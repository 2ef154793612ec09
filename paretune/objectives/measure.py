"""Measuring a torch model: parameters, FLOPs, latency, and an analytic energy estimate.

Conventions (shared with the NB201 table, see :mod:`paretune.objectives.base`):

- ``params``: trainable parameters, millions (BatchNorm affine weights included, buffers not).
- ``flops``: multiply-adds (MACs) of one forward pass, millions. ``torch.utils.flop_counter``
  counts 2 FLOPs per multiply-add of convolutions and matrix products, so its total is divided by
  2. Pooling, BatchNorm, activations, additions and biases are not counted. With this convention
  the NB201 network at C=16, N=5 matches the table's ``{dataset}_flops_m`` to its 6 significant
  digits.
- ``latency``: median wall time of one forward pass in eval mode under ``torch.no_grad``, ms.
- ``energy``: an analytic estimate in mJ (:func:`estimate_energy`), always tagged ``estimated``.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> float:
    """Trainable parameters of ``model``, in millions."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-adds of one forward pass on a zero input of ``input_shape``, in millions.

    ``FlopCounterMode`` reports 2 FLOPs per multiply-add; this returns ``total / 2 / 1e6``.
    The model runs in eval mode (so BatchNorm uses running statistics) and is put back in the
    mode it was in.

    Args:
        model: the network.
        input_shape: the full input shape including the batch, e.g. ``(1, 3, 32, 32)``.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), device=device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e6


def _synchronized_timer(device: torch.device):
    """A wall-clock timer that waits for queued CUDA work on ``device`` before reading."""

    def timer() -> float:
        torch.cuda.synchronize(device)
        return timeit.default_timer()

    return timer


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    repeats: int = 30,
    threads: int | None = None,
) -> float:
    """Median latency of ``model(example)`` in milliseconds.

    The model is moved to ``device``, put in eval mode and run under ``torch.no_grad``; the
    ``warmup`` calls are discarded and each of the ``repeats`` calls is timed on its own with
    ``torch.utils.benchmark.Timer`` (whose ``timeit`` adds 2 untimed calls of its own before
    each timed one, so a measurement runs about ``warmup + 3 * repeats`` calls). On CUDA the device is synchronised after the warm-up and
    around every timed call, so the time covers the kernels, not just their launch. The model is
    put back in the mode it was in (it stays on ``device``).

    Args:
        model: the network.
        example: one input batch (its batch size is the latency's batch size).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        warmup: untimed calls first (at least 0).
        repeats: timed calls (at least 1).
        threads: CPU threads for the timed calls; ``None`` keeps torch's current setting.
    """
    if warmup < 0:
        raise ValueError(f"measure_latency: warmup={warmup!r} must be >= 0")
    if repeats < 1:
        raise ValueError(f"measure_latency: repeats={repeats!r} must be >= 1")
    if threads is not None and threads < 1:
        raise ValueError(f"measure_latency: threads={threads!r} must be >= 1 or None")
    dev = torch.device(device)
    is_cuda = dev.type == "cuda"
    num_threads = threads if threads is not None else torch.get_num_threads()
    was_training = model.training
    model.to(dev).eval()
    x = example.to(dev)
    kwargs = {}
    if is_cuda:
        kwargs["timer"] = _synchronized_timer(dev)
    timer = benchmark.Timer(
        stmt="model(x)",
        globals={"model": model, "x": x},
        num_threads=num_threads,
        **kwargs,
    )
    try:
        with torch.no_grad():
            previous = torch.get_num_threads()
            torch.set_num_threads(num_threads)
            try:
                for _ in range(warmup):
                    model(x)
            finally:
                torch.set_num_threads(previous)
            if is_cuda:
                torch.cuda.synchronize(dev)
            times = [timer.timeit(1).median for _ in range(repeats)]
    finally:
        model.train(was_training)
    return statistics.median(times) * 1e3


@dataclass(frozen=True)
class EnergyCoefficients:
    """Coefficients of :func:`estimate_energy`.

    Defaults are rough orders of magnitude from the literature, not a calibration of any device:
    ``pj_per_mac`` 4.6 pJ is a 32-bit float multiply (3.7 pJ) plus add (0.9 pJ) at 45 nm, and
    ``pj_per_byte`` 160 pJ is a 32-bit DRAM read (640 pJ) per byte, both from M. Horowitz,
    "Computing's energy problem (and what we can do about it)", ISSCC 2014. ``static_w`` 1 W is
    the order of the extra (above idle) power of a small board such as a Raspberry Pi while it
    runs a network; multiplied by the measured latency it dominates for small networks on CPUs.

    Attributes:
        pj_per_mac: energy per multiply-add, picojoules.
        pj_per_byte: energy per byte of weights read from memory once per inference, picojoules.
        bytes_per_param: bytes per parameter (4 for float32, 1 for int8).
        static_w: power drawn for the duration of the inference, watts.
    """

    pj_per_mac: float = 4.6
    pj_per_byte: float = 160.0
    bytes_per_param: float = 4.0
    static_w: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pj_per_mac", "pj_per_byte", "bytes_per_param", "static_w"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"EnergyCoefficients.{name}={value!r} must be a number >= 0")


def estimate_energy(
    macs_m: float,
    params_m: float,
    latency_ms: float,
    coefficients: EnergyCoefficients | dict[str, float] | None = None,
) -> float:
    """Estimated energy of one inference, in millijoules (source: ``estimated``).

    ``E = macs * pj_per_mac + params * bytes_per_param * pj_per_byte + static_w * latency``.
    Units: 1 M MACs at 1 pJ each is 1e-6 J = 1e-3 mJ, and 1 W for 1 ms is 1 mJ.

    Args:
        macs_m: multiply-adds, millions.
        params_m: parameters, millions (each read once per inference).
        latency_ms: latency, milliseconds.
        coefficients: an :class:`EnergyCoefficients`, a dict of its fields, or ``None`` for the
            defaults.
    """
    if coefficients is None:
        c = EnergyCoefficients()
    elif isinstance(coefficients, EnergyCoefficients):
        c = coefficients
    else:
        unknown = set(coefficients) - set(EnergyCoefficients.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"energy coefficients: unknown fields {sorted(unknown)} "
                f"(allowed: {sorted(EnergyCoefficients.__dataclass_fields__)})"
            )
        c = EnergyCoefficients(**coefficients)
    dynamic_mj = macs_m * c.pj_per_mac * 1e-3 + params_m * c.bytes_per_param * c.pj_per_byte * 1e-3
    return dynamic_mj + c.static_w * latency_ms
