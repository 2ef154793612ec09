"""LID estimator on data of known dimension, profiles by hooks, cosine, supernet option similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from paretune.objectives.lid import (
    cosine_similarity,
    edge_similarity,
    layer_outputs,
    leaf_checkpoint,
    leaf_index,
    lid_mle,
    lid_profile,
)


def _embed(points: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``points`` isometrically embedded in ``dim`` dimensions (random orthonormal basis)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, points.shape[1])))
    return points @ q.T + rng.standard_normal(dim)


@pytest.mark.parametrize("d", [2, 5, 8])
def test_lid_within_10_percent_on_a_linear_subspace(d: int) -> None:
    rng = np.random.default_rng(d)
    # Gaussian on the subspace: a uniform cube's faces bias the MLE low (7.1 for d = 8)
    x = _embed(rng.standard_normal((2000, d)), 64, rng)
    est = lid_mle(x, k=20)
    assert abs(est - d) <= 0.1 * d, est


@pytest.mark.parametrize("d", [2, 4, 6])
def test_lid_within_10_percent_on_a_sphere(d: int) -> None:
    rng = np.random.default_rng(10 + d)
    g = rng.standard_normal((2000, d + 1))
    sphere = g / np.linalg.norm(g, axis=1, keepdims=True)  # the d-sphere in R^(d+1)
    est = lid_mle(_embed(sphere, 40, rng), k=20)
    assert abs(est - d) <= 0.1 * d, est


def test_lid_authors_form_is_k_over_k_minus_1_times_levina_bickel() -> None:
    x = np.random.default_rng(0).standard_normal((300, 6))
    assert lid_mle(x, 20, unbiased=False) == pytest.approx(lid_mle(x, 20) * 20 / 19, rel=1e-9)


def test_lid_rejects_too_few_points_and_bad_k() -> None:
    with pytest.raises(ValueError, match="at least k"):
        lid_mle(np.zeros((10, 3)), k=20)
    with pytest.raises(ValueError, match="k=1"):
        lid_mle(np.zeros((10, 3)), k=1)


def test_profiles_by_hooks_and_cosine() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(64, 8)
    outs = layer_outputs(net, [net[0], net[2]], x)
    assert [tuple(o.shape) for o in outs] == [(64, 16), (64, 4)]
    prof = lid_profile(net, [net[0], net[1], net[2]], x, k=10)
    assert prof.shape == (3,) and np.all(prof > 0)
    s = cosine_similarity(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    assert s[0, 1] == pytest.approx(1.0, abs=1e-6) and s[0, 2] == pytest.approx(0.0)
    assert np.allclose(s, s.T)


def test_edge_similarity_on_an_nb201_supernet_leaves_weights_and_bn_unchanged() -> None:
    from paretune.spaces import make_space
    from paretune.spaces.supernet import build_supernet

    torch.manual_seed(0)
    net = build_supernet(
        make_space("nb201"),
        channels=4,
        cells_per_stage=1,
        input_size=8,
        in_channels=1,
        num_classes=3,
    )
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(32, 1, 8, 8) for _ in range(2)]
    options, sim, profiles = edge_similarity(net, 0, batches, np.random.default_rng(0), k=10)
    assert options == [0, 1, 2, 3, 4]
    assert sim.shape == (5, 5) and profiles.shape == (2, 5, len(net.cells))
    assert np.allclose(np.diag(sim), 1.0, atol=1e-3)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_leaf_of_a_path() -> None:
    leaves = [[[0, 1], [0, 1, 2]], [[2], [0, 1, 2]]]
    assert leaf_index(leaves, [1, 2]) == 0
    assert leaf_index(leaves, [2, None]) == 1
    assert (
        leaf_checkpoint(
            [
                {"checkpoint": "a", "edge_options": leaves[0]},
                {"checkpoint": "b", "edge_options": leaves[1]},
            ],
            [2, 0],
        )
        == "b"
    )
    with pytest.raises(ValueError, match="none of the 2"):
        leaf_index(leaves, [3, 0])
