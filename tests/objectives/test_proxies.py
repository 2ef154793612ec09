"""Zero-cost proxies: checked against hand computations on tiny networks, seeded and cached."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from paretune.objectives.base import Evaluation, MetricInfo
from paretune.objectives.proxies import (
    ProxyFunction,
    ProxyMetrics,
    ProxyScorer,
    attach_proxies,
    check_proxy_names,
    compute_proxies,
    jacov,
    loss_proxies,
    naswot,
    synflow,
)
from paretune.spaces import make_space

TINY = {"channels": 4, "cells_per_stage": 1}


def mlp(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(6, 5, bias=False)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.ReLU(), nn.Linear(5, 3, bias=False)]
    return nn.Sequential(*layers)


def test_synflow_of_a_bias_free_mlp_is_depth_times_the_path_sum():
    # With |W| and an all-ones input every ReLU passes, R = 1^T |W2| |W1| 1 is homogeneous of
    # degree 1 in each layer's weights, so sum(theta * dR/dtheta) = R per layer.
    net = mlp()
    w1, w2 = net[1].weight.detach().abs(), net[3].weight.detach().abs()
    r = float((w2 @ w1 @ torch.ones(6, dtype=torch.float64).float()).sum())
    assert synflow(net, (1, 6)) == pytest.approx(2 * r, rel=1e-6)


def test_synflow_ignores_batch_norm_and_weight_signs_and_leaves_the_model_alone():
    net = mlp()
    before = [p.clone() for p in net.parameters()]
    value = synflow(net, (1, 6))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert synflow(mlp(bn=True), (1, 6)) == pytest.approx(value, rel=1e-9)
    flipped = mlp()
    with torch.no_grad():
        flipped[1].weight.neg_()
    assert synflow(flipped, (1, 6)) == pytest.approx(value, rel=1e-9)


def test_naswot_is_the_log_determinant_of_the_binary_code_kernel():
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    x = torch.tensor([[1.0, -1.0, 2.0], [1.0, 1.0, -2.0], [-1.0, -1.0, 2.0]])
    c = (x > 0).double()
    kernel = c @ c.T + (1 - c) @ (1 - c).T  # agreements between images: [[3,1,2],[1,3,0],...]
    assert naswot(net, x) == pytest.approx(math.log(float(torch.linalg.det(kernel))), rel=1e-9)
    # Two identical images: a singular kernel, the worst score.
    assert naswot(net, torch.stack([x[0], x[0]])) == -math.inf


def test_loss_proxies_match_the_gradients_of_the_cross_entropy():
    net = mlp()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    out = loss_proxies(net, x, y)
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    grads = [net[1].weight.grad, net[3].weight.grad]
    weights = [net[1].weight, net[3].weight]
    assert out["grad_norm"] == pytest.approx(sum(float(g.norm()) for g in grads), rel=1e-5)
    snip = sum(float((w.detach() * g).abs().sum()) for w, g in zip(weights, grads, strict=True))
    assert out["snip"] == pytest.approx(snip, rel=1e-5)
    assert out["fisher"] > 0
    assert math.isfinite(jacov(net, x))


def test_unknown_proxy_is_named_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"proxy = 'synflw': unknown proxy \(allowed: synflow"):
        check_proxy_names(["synflw"])
    with pytest.raises(ValueError, match="need a batch"):
        compute_proxies(mlp, ["naswot"], None, None, input_shape=(1, 6))


@pytest.fixture(scope="module")
def nb201():
    return make_space("nb201")


def test_scorer_is_seeded_cached_and_leaves_the_callers_rng_alone(nb201):
    names = ["synflow", "naswot", "fisher", "params"]
    arch = nb201.decode(
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    )
    first = ProxyScorer(nb201, names, batch_size=8, build=TINY)
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    values = first.scores(arch)
    assert torch.equal(torch.rand(1), expected_draw)  # fork_rng: the caller's stream unchanged
    assert values == ProxyScorer(nb201, names, batch_size=8, build=TINY).scores(arch)
    assert all(math.isfinite(v) for v in values.values())
    timed = len(first.timings["synflow"])
    assert first.scores(arch) == values and len(first.timings["synflow"]) == timed  # cached
    other_seed = ProxyScorer(nb201, names, batch_size=8, build=TINY, seed=1).scores(arch)
    assert other_seed["synflow"] != values["synflow"]
    assert other_seed["params"] == values["params"]


def test_synflow_ranks_a_wider_cell_above_an_empty_one(nb201):
    scorer = ProxyScorer(nb201, ["synflow", "params"], build=TINY)
    convs = scorer.scores((3,) * 6)
    skips = scorer.scores((1,) * 6)
    assert convs["synflow"] > skips["synflow"]
    assert convs["params"] > skips["params"]
    assert ProxyFunction(scorer, "synflow")((3,) * 6) == convs["synflow"]


@pytest.mark.slow  # torch's flop counter takes ~10 s to start on a loaded machine
def test_flops_grow_with_the_convolutions(nb201):
    scorer = ProxyScorer(nb201, ["flops"], build=TINY)
    assert scorer.scores((3,) * 6)["flops"] > scorer.scores((2,) * 6)["flops"] > 0


def test_scorer_builds_every_trainable_space_and_refuses_others():
    for kind, build in [("darts", {"channels": 4, "layers": 3}), ("macro", {})]:
        space = make_space(kind)
        arch = space.sample(np.random.default_rng(0))
        values = ProxyScorer(space, ["synflow", "params"], build=build).scores(arch)
        assert values["synflow"] > 0 and values["params"] > 0
    choices = make_space("choices", decisions={"width": [1, 2]})
    with pytest.raises(ValueError, match="cannot build networks"):
        ProxyScorer(choices, ["synflow"])
    with pytest.raises(ValueError, match=r"proxies.build: unknown settings \['widht'\]"):
        ProxyScorer(make_space("nb201"), ["synflow"], build={"widht": 3})


class _Inner:
    def metrics(self):
        return {"accuracy": MetricInfo("%", "max", "table")}

    def evaluate(self, arch, report=None, **context):
        return Evaluation({"accuracy": 90.0}, {"accuracy": "table"})


def test_proxy_metrics_add_proxies_with_their_source():
    evaluator = attach_proxies(
        _Inner(), {"names": ["synflow"], "space": {"kind": "nb201"}, "build": TINY}
    )
    assert isinstance(evaluator, ProxyMetrics)
    assert evaluator.metrics()["synflow"] == MetricInfo("", "max", "proxy")
    out = evaluator.evaluate((3,) * 6)
    assert out.values["accuracy"] == 90.0 and out.values["synflow"] > 0
    assert out.sources["synflow"] == "proxy"
    with pytest.raises(ValueError, match=r"proxies: unknown settings \['batch'\]"):
        attach_proxies(_Inner(), {"names": ["synflow"], "space": {"kind": "nb201"}, "batch": 3})


def test_a_proxy_screens_candidates_of_an_engine(nb201):
    from paretune.objectives.base import Objective, ObjectiveSet
    from paretune.search_algos import make_engine
    from paretune.search_algos.screening import ScreenedEngine

    scorer = ProxyScorer(nb201, ["params"], build=TINY)
    limit = scorer.scores((1,) * 6)["params"] + 1e-9  # only cells as small as all-skip pass
    objectives = ObjectiveSet(
        (Objective("accuracy", "max"), Objective("params", "min", limit=limit))
    )
    engine = ScreenedEngine(
        make_engine("random", nb201, objectives, seed=0),
        ProxyFunction(scorer, "params"),
        margin=0.0,
        max_screens=50,
    )
    proposal = engine.ask()
    assert engine.num_screened > 0
    assert scorer.scores(proposal.arch)["params"] <= limit or engine.num_forced == 1
