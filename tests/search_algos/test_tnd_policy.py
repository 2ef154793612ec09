"""TND's edge policy: REINFORCE bookkeeping, Adam as torch's, shrinking, top paths, rewards."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from paretune.search_algos.shrinking.policy import (
    EdgePolicy,
    pareto_rewards,
    product_reward,
    stage_value,
)

OPTS = [[0, 1, 2], [1, 3], [0, 1, 2, 3], []]


def _policy(**kw) -> EdgePolicy:
    p = EdgePolicy(OPTS, 4, seed=3, **kw)
    p.logits = np.where(p.mask, np.random.default_rng(1).normal(0, 1, p.logits.shape), 0.0)
    return p


def test_probabilities_are_a_softmax_over_allowed_options_only():
    p = _policy()
    probs = p.probabilities()
    for e, opts in enumerate(OPTS):
        assert probs[e].sum() == pytest.approx(1.0 if opts else 0.0)
        assert all(probs[e, k] == 0 for k in range(4) if k not in opts)


def test_gradient_of_minus_log_prob_matches_finite_differences():
    p = _policy()
    path = [2, 3, 0, None]
    g = p.grad_neg_log_prob(path)
    base = p.logits.copy()
    for e, k in [(0, 0), (0, 2), (1, 3), (2, 1), (2, 0)]:
        h = 1e-6
        p.logits = base.copy()
        p.logits[e, k] += h
        up = -p.log_prob(path)
        p.logits = base.copy()
        p.logits[e, k] -= h
        down = -p.log_prob(path)
        assert g[e, k] == pytest.approx((up - down) / (2 * h), abs=1e-6)
    p.logits = base
    with pytest.raises(ValueError, match="not allowed"):
        p.grad_neg_log_prob([3, 1, 0, None])


def test_reinforce_step_is_the_authors_update_with_torch_adam():
    """baseline = first mean, then b += 0.95 (mean - b); grad = mean (R - b) grad(-log pi);
    clipped to norm 5; one torch Adam step (lr 6e-3, betas (0.5, 0.999), wd 1e-3)."""
    p = _policy(clip_norm=0.05)
    alpha = torch.tensor(p.logits, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=6e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    rng = np.random.default_rng(0)
    baseline = None
    for _ in range(3):
        paths = [p.sample(rng) for _ in range(4)]
        rewards = list(rng.uniform(0, 1, 4))
        mean = float(np.mean(rewards))
        baseline = mean if baseline is None else baseline + 0.95 * (mean - baseline)
        grad = sum(
            (r - baseline) * p.grad_neg_log_prob(q) for q, r in zip(paths, rewards, strict=True)
        )
        grad = torch.tensor(grad / 4)
        norm = float(grad.norm())
        if norm > 0.05:
            grad = grad * 0.05 / (norm + 1e-6)
        alpha.grad = grad.clone()
        opt.step()
        stats = p.step(paths, rewards)
        assert stats["baseline"] == pytest.approx(baseline)
        assert stats["grad_norm"] == pytest.approx(norm)
        np.testing.assert_allclose(p.logits[p.mask], alpha.detach().numpy()[p.mask], atol=1e-9)


def test_the_policy_learns_a_bandit():
    p = EdgePolicy([[0, 1, 2]] * 2, 3, seed=0, lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(150):
        paths = [p.sample(rng) for _ in range(10)]
        p.step(paths, [float(q[0] == 2) + 0.5 * float(q[1] == 1) for q in paths])
    probs = p.probabilities()
    assert probs[0, 2] > 0.8 and probs[1, 1] > 0.6


def test_shrink_keeps_the_most_probable_and_drops_none_first():
    p = EdgePolicy([[0, 1, 2, 3]], 4)
    p.logits[0] = [5.0, 1.0, 1.0, -1.0]
    assert p.shrink(2) == [[0, 1]]  # ties: the lower index
    assert p.shrink(2, drop_first=0) == [[1, 2]]
    assert p.shrink(1, drop_first=0) == [[1]]
    assert p.shrink(9) == [[0, 1, 2, 3]]


def test_top_paths_follow_brute_force_probability_order():
    p = _policy()
    probs = p.probabilities()
    paths = [list(c) + [None] for c in itertools.product(*OPTS[:3])]
    paths.sort(key=lambda q: -math.prod(probs[e, k] for e, k in enumerate(q) if k is not None))
    got = p.top_paths(7)
    want = [math.prod(probs[e, k] for e, k in enumerate(q) if k is not None) for q in paths[:7]]
    have = [math.prod(probs[e, k] for e, k in enumerate(q) if k is not None) for q in got]
    np.testing.assert_allclose(have, want)
    assert got[0] == paths[0]
    assert all(q[0] != 0 for q in p.top_paths(5, skip=0))


def test_state_round_trips_through_json():
    p = _policy()
    rng = np.random.default_rng(2)
    paths = [p.sample(rng) for _ in range(3)]
    p.step(paths, [0.1, 0.5, 0.9])
    q = EdgePolicy.from_state(json.loads(json.dumps(p.state_dict())))
    np.testing.assert_array_equal(q.logits, p.logits)
    paths = [p.sample(rng) for _ in range(3)]
    p.step(paths, [0.3, 0.2, 0.4])
    q.step(paths, [0.3, 0.2, 0.4])
    np.testing.assert_allclose(q.logits, p.logits)
    assert q.baseline == p.baseline


def test_product_reward_is_the_mnasnet_form():
    r = product_reward({"acc": 90.0, "params": 2.0}, "acc", {"params": 4.0}, {"params": -0.5})
    assert r == pytest.approx(0.9 * 0.5**-0.5)
    assert product_reward({"acc": -1.0, "params": 2.0}, "acc", {}, {}) == 0.0
    assert stage_value([1, 2], 5) == 2 and stage_value(3, 0) == 3.0


def test_pareto_reward_is_positive_exactly_on_the_front():
    batch = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    ref = np.array([[0.2, 0.9]])
    r = pareto_rewards(batch, ref)
    assert r[0] > 0 and r[1] > 0 and r[3] > 0
    assert r[2] < 0
