"""ONNX Runtime latency: the exported model computes what torch computes, threads are pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretune.objectives.onnx_latency import export_onnx, measure_onnx_latency, onnx_session
from paretune.spaces.nb201 import NB201Space


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    arch = NB201Space().decode(
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    )
    return NB201Space().build(arch, channels=4, cells_per_stage=1, input_size=8, in_channels=1)


def test_exported_model_matches_torch_for_any_batch(model):
    x = torch.randn(1, 1, 8, 8)
    session, provider = onnx_session(export_onnx(model.eval(), x), threads=1)
    assert provider == "CPUExecutionProvider"
    assert session.get_session_options().intra_op_num_threads == 1
    batch = torch.randn(5, 1, 8, 8)  # the batch dimension is dynamic
    (out,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(batch).numpy(), rtol=1e-4, atol=1e-5)


def test_measure_onnx_latency(model):
    model.train()
    ms, provider = measure_onnx_latency(
        model, torch.zeros(1, 1, 8, 8), threads=1, warmup=1, repeats=3
    )
    assert ms > 0 and provider == "CPUExecutionProvider"
    assert model.training  # the model itself is untouched (a copy is exported)
    with pytest.raises(ValueError, match="repeats=0"):
        measure_onnx_latency(model, torch.zeros(1, 1, 8, 8), repeats=0)
    with pytest.raises(ValueError, match="threads=0"):
        measure_onnx_latency(model, torch.zeros(1, 1, 8, 8), threads=0)
