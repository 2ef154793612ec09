"""Supernets of NB201 and DARTS: pruned options hold no weights, single-path and weighted
forwards, and extraction equal to the space's compact network (parameters and outputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretune.objectives.measure import count_params
from paretune.spaces.darts import DARTS_EDGES, DARTS_OPS, DartsSpace
from paretune.spaces.nb201 import NB201_OPS, NB201Space
from paretune.spaces.supernet import CellSupernet, build_supernet, recalibrate_bn

NB = dict(channels=4, cells_per_stage=1, input_size=8, in_channels=1, num_classes=10)
DA = dict(channels=4, layers=3, input_size=8, in_channels=1, num_classes=10)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _perturb_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters (fresh ones are identities)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("kind", ["nb201", "darts"])
def test_extract_equals_build_and_single_path(kind: str) -> None:
    space = NB201Space() if kind == "nb201" else DartsSpace()
    settings = NB if kind == "nb201" else DA
    torch.manual_seed(0)
    net = build_supernet(space, **settings)
    assert isinstance(net, CellSupernet)
    _perturb_bn(net)
    net.eval()
    x = torch.randn(3, 1, 8, 8)
    rng = np.random.default_rng(0)
    for _ in range(4):
        arch = space.sample(rng)
        compact = net.extract(arch)
        reference = (
            space.build(arch, **{k: v for k, v in settings.items() if k != "input_size"})
            if kind == "darts"
            else space.build(arch, **settings)
        )
        assert count_params(compact) == count_params(reference)
        assert type(compact) is type(reference)
        compact.eval()
        with torch.no_grad():
            a = net(x, path=net.path_of(arch))
            b = compact(x)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert net.extract_path(net.path_of(arch)) is not None
        assert net.arch_of(net.path_of(arch)) == arch


@pytest.mark.parametrize("kind", ["nb201", "darts"])
def test_pruned_options_hold_no_weights(kind: str) -> None:
    full = NB201Space() if kind == "nb201" else DartsSpace()
    settings = NB if kind == "nb201" else DA
    if kind == "nb201":
        small = full.restrict({"e0_1": ["nor_conv_3x3"], "e1_3": ["none", "skip_connect"]})
    else:
        small = full.restrict({"normal_2_op1": ["sep_conv_3x3"], "normal_3_in": ["0-1"]})
    big_net = build_supernet(full, **settings)
    small_net = build_supernet(small, **settings)
    assert count_params(small_net) < count_params(big_net)
    if kind == "nb201":
        assert small_net.edge_options[0] == [NB201_OPS.index("nor_conv_3x3")]
        assert set(small_net.cells[0].edges[0].ops) == {"nor_conv_3x3"}
        assert set(small_net.cells[0].edges[4].ops) == {"none", "skip_connect"}
    else:
        assert small_net.edge_options[0] == [DARTS_OPS.index("sep_conv_3x3")]
        # node 3 only takes inputs 0 and 1: edge 2->3 is never used, so it has no operation
        e23 = DARTS_EDGES.index((2, 3))
        assert small_net.edge_options[e23] == []
        assert len(small_net.cells[0].edges[e23].ops) == 0
    # a pruned option is refused by name
    path = small_net.sample_path(np.random.default_rng(1))
    bad = list(path)
    bad[0] = 1
    with pytest.raises(ValueError, match="not in the supernet"):
        small_net(torch.randn(2, 1, 8, 8), path=bad)
    # sampled paths are architectures of the restricted space
    rng = np.random.default_rng(2)
    for _ in range(20):
        assert small.contains(small_net.arch_of(small_net.sample_path(rng)))


def test_explicit_edge_options() -> None:
    space = NB201Space()
    opts = [[1, 3]] * 6
    net = build_supernet(space, edge_options=opts, **NB)
    assert net.edge_options == [[1, 3]] * 6
    assert all(set(edge.ops) == {"skip_connect", "nor_conv_3x3"} for edge in net.cells[0].edges)
    with pytest.raises(ValueError, match="edge_options has 2 entries"):
        build_supernet(space, edge_options=[[1]] * 2, **NB)
    with pytest.raises(ValueError, match="not a setting"):
        build_supernet(space, layers=3)


@pytest.mark.parametrize("kind", ["nb201", "darts"])
def test_weighted_mode_matches_one_hot_and_sum(kind: str) -> None:
    space = NB201Space() if kind == "nb201" else DartsSpace()
    settings = NB if kind == "nb201" else DA
    torch.manual_seed(1)
    net = build_supernet(space, **settings)
    _perturb_bn(net, 1)
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    arch = space.sample(np.random.default_rng(3))
    path = net.path_of(arch)
    n_ops = len(net.ops)
    one_hot = [
        None if k is None else torch.nn.functional.one_hot(torch.tensor(k), n_ops).float()
        for k in path
    ]
    with torch.no_grad():
        a = net(x, path=path)
        b = net(x, weights=[w if w is not None else torch.zeros(n_ops) for w in one_hot])
        c = net(x, path=path, weights=[None] * net.num_edges)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, c)
    # softmax weights: a gradient reaches the architecture parameters
    alpha = torch.zeros(net.num_edges, n_ops, requires_grad=True)
    net.train()
    out = net(x, weights=list(torch.softmax(alpha, dim=-1)))
    out.sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs path"):
        net(x)


def test_sample_path_from_logits_and_darts_structure() -> None:
    net = build_supernet(DartsSpace(), **DA)
    rng = np.random.default_rng(0)
    logits = np.full((net.num_edges, len(net.ops)), -30.0)
    logits[:, DARTS_OPS.index("sep_conv_3x3")] = 0.0
    for _ in range(5):
        path = net.sample_path(rng, logits)
        used = [k for k in path if k is not None]
        assert len(used) == 16  # 2 per node, 4 nodes, 2 cells
        assert set(used) == {DARTS_OPS.index("sep_conv_3x3")}
    nb = build_supernet(NB201Space(), **NB)
    counts = np.zeros(len(NB201_OPS))
    for _ in range(300):
        counts[nb.sample_path(rng)[0]] += 1
    assert (counts > 30).all()  # uniform over the 5 options
    with pytest.raises(ValueError, match="exactly 2"):
        net.arch_of([None] * net.num_edges)


def test_recalibrate_bn_uses_the_path_batches() -> None:
    space = NB201Space()
    torch.manual_seed(0)
    net = build_supernet(space, **NB)
    arch = (3, 3, 3, 3, 3, 3)
    path = net.path_of(arch)
    data = [torch.randn(16, 1, 8, 8) * 3 + 2 for _ in range(4)]
    recalibrate_bn(net, data, path, batches=4)
    assert not net.training
    stem_bn = net.stem[1]
    with torch.no_grad():
        feats = torch.cat([net.stem[0](x) for x in data])
    torch.testing.assert_close(
        stem_bn.running_mean, feats.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4
    )
    assert stem_bn.momentum == 0.1
    # the same on the compact network gives the same outputs as the supernet's path
    compact = net.extract(arch)
    compact.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(data[0], path=path), compact(data[0]), rtol=1e-5, atol=1e-6)
