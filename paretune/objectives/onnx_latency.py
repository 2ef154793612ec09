"""Deployment-side latency: the model exported to ONNX and timed in ONNX Runtime.

:func:`measure_onnx_latency` exports a torch model with ``torch.onnx.export`` (the TorchScript
exporter, which needs no extra package; the ``torch.export``-based one when the former is gone),
opens an ``onnxruntime.InferenceSession`` with ``intra_op_num_threads`` pinned to the trial's
threads (and ``inter_op_num_threads`` 1, sequential execution), runs ``warmup`` untimed calls and
returns the median of ``repeats`` timed ``InferenceSession.run`` calls, in ms. The provider is
CUDA's where the model runs on a GPU and ONNX Runtime has it, else the CPU's; the caller logs
which (``latency_onnx`` is its own metric, not a replacement for torch's ``latency``).

Needs the ``onnx`` and ``onnxruntime`` packages (imported on use).
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from typing import Any

import torch
from torch import nn


def onnxruntime_available() -> tuple[bool, str]:
    """Whether ``onnx`` and ``onnxruntime`` import here, and if not, why."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return False, f"{exc} (pip install onnx onnxruntime)"
    return True, ""


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` (in eval mode, on the CPU) exported to an ONNX model, as bytes.

    The batch dimension is dynamic, so one export serves every batch size.
    """
    model = copy.deepcopy(model).cpu().eval()
    x = example.detach().cpu()
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {
        "input_names": ["x"],
        "output_names": ["y"],
        "dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, **kwargs)
        except (TypeError, ValueError, RuntimeError, ImportError) as legacy_error:
            buf = io.BytesIO()
            try:
                torch.onnx.export(model, (x,), buf, dynamo=True, input_names=["x"])
            except Exception as exc:  # noqa: BLE001 - report both exporters' reasons
                raise RuntimeError(
                    f"ONNX export failed (TorchScript exporter: {legacy_error}; "
                    f"torch.export exporter: {exc})"
                ) from exc
    return buf.getvalue()


def onnx_session(
    onnx_model: bytes, threads: int | None = None, device: str | torch.device = "cpu"
) -> tuple[Any, str]:
    """An ``InferenceSession`` for the model and the name of its execution provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in (
        ort.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(onnx_model, options, providers=providers)
    return session, session.get_providers()[0]


def measure_onnx_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 30,
) -> tuple[float, str]:
    """Median latency of ONNX Runtime's ``InferenceSession.run`` on ``example``, in ms.

    Args:
        model: the network (not changed: a copy is exported).
        example: one input batch (its batch size is the latency's batch size).
        device: the trial's device (CUDA's provider is used on a GPU when available).
        threads: ``intra_op_num_threads``; ``None``: torch's current thread count.
        warmup: untimed runs first (at least 0).
        repeats: timed runs (at least 1).

    Returns:
        ``(latency_ms, provider)``.
    """
    if warmup < 0:
        raise ValueError(f"measure_onnx_latency: warmup={warmup!r} must be >= 0")
    if repeats < 1:
        raise ValueError(f"measure_onnx_latency: repeats={repeats!r} must be >= 1")
    if threads is not None and threads < 1:
        raise ValueError(f"measure_onnx_latency: threads={threads!r} must be >= 1 or None")
    ok, why = onnxruntime_available()
    if not ok:
        raise RuntimeError(f"measure_onnx_latency: ONNX Runtime is not available: {why}")
    session, provider = onnx_session(
        export_onnx(model, example),
        threads if threads is not None else torch.get_num_threads(),
        device,
    )
    feed = {session.get_inputs()[0].name: example.detach().cpu().numpy()}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, provider
