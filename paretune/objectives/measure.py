"""Measuring a torch model: parameters, FLOPs, latency, and the inputs of the energy model.

Conventions (shared with the NB201 table, see :mod:`paretune.objectives.base`):

- ``params``: trainable parameters, millions (BatchNorm affine weights included, buffers not).
- ``flops``: multiply-adds (MACs) of one forward pass, millions. ``torch.utils.flop_counter``
  counts 2 FLOPs per multiply-add of convolutions and matrix products, so its total is divided by
  2. Pooling, BatchNorm, activations, additions and biases are not counted. With this convention
  the NB201 network at C=16, N=5 matches the table's ``{dataset}_flops_m`` to its 6 significant
  digits.
- ``latency``: median wall time of one forward pass in eval mode under ``torch.no_grad``, ms.
- ``energy``: measured by the meters of :mod:`paretune.objectives.energy` where the hardware
  allows, else the analytic model: :func:`count_energy_inputs` counts MACs, weights and
  activations moved, and :func:`estimate_model_energy` prices them with
  :class:`~paretune.objectives.energy.EnergyCoefficients` (mJ, tagged ``estimated``).
- ``latency_onnx``: :func:`paretune.objectives.onnx_latency.measure_onnx_latency`.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from paretune.objectives.energy import EnergyCoefficients, estimate_energy

__all__ = [
    "EnergyCoefficients",
    "EnergyCounts",
    "count_energy_inputs",
    "count_flops",
    "count_params",
    "count_weights",
    "estimate_energy",
    "estimate_model_energy",
    "measure_latency",
]


def count_params(model: nn.Module) -> float:
    """Trainable parameters of ``model``, in millions."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def count_weights(model: nn.Module) -> float:
    """Values an inference reads as weights, in millions: every parameter (trainable or not)
    and every floating-point buffer (e.g. BatchNorm's running statistics)."""
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return (params + buffers) / 1e6


@dataclass(frozen=True)
class EnergyCounts:
    """What the analytic energy model prices, for one forward pass (millions of each).

    Attributes:
        macs_m: multiply-adds (torch's FLOP counter / 2, as :func:`count_flops`).
        weights_m: weight values read (:func:`count_weights`).
        activations_m: activation values moved: the input and output tensors of every call of a
            leaf module (``nn.Identity`` moves nothing); element-wise work outside modules (the
            sums of a cell's edges) is not counted.
    """

    macs_m: float
    weights_m: float
    activations_m: float


def _tensor_values(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, list | tuple):
        return sum(_tensor_values(o) for o in obj)
    if isinstance(obj, Mapping):
        return sum(_tensor_values(o) for o in obj.values())
    return 0


def count_energy_inputs(model: nn.Module, input_shape: Sequence[int]) -> EnergyCounts:
    """MACs, weights and activations moved by one forward pass on a zero input of
    ``input_shape`` (eval mode, no grad; the model's mode is restored).

    Activations are counted by forward hooks on the leaf modules (those without children):
    each call adds the sizes of its input and output tensors.
    """
    moved = [0]

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not isinstance(module, nn.Identity):
            moved[0] += _tensor_values(args) + _tensor_values(output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        macs = _count_macs(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    return EnergyCounts(macs / 1e6, count_weights(model), moved[0] / 1e6)


def estimate_model_energy(
    model: nn.Module,
    input_shape: Sequence[int],
    coefficients: EnergyCoefficients | Mapping[str, float] | None = None,
) -> float:
    """Analytic energy of one forward pass on ``input_shape``, in millijoules (``estimated``):
    :func:`~paretune.objectives.energy.estimate_energy` of :func:`count_energy_inputs`."""
    c = count_energy_inputs(model, input_shape)
    return estimate_energy(c.macs_m, c.weights_m, c.activations_m, coefficients)


def _count_macs(model: nn.Module, input_shape: Sequence[int]) -> float:
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
    return counter.get_total_flops() / 2


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-adds of one forward pass on a zero input of ``input_shape``, in millions.

    ``FlopCounterMode`` reports 2 FLOPs per multiply-add; this returns ``total / 2 / 1e6``.
    The model runs in eval mode (so BatchNorm uses running statistics) and is put back in the
    mode it was in.

    Args:
        model: the network.
        input_shape: the full input shape including the batch, e.g. ``(1, 3, 32, 32)``.
    """
    return _count_macs(model, input_shape) / 1e6


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
