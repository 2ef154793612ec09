"""Tests of the progressive-shrinking (TND-NAS) engine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.search_algos import make_engine
from paretune.search_algos.base import Proposal, Record
from paretune.search_algos.shrinking import (
    ProgressiveShrinking,
    default_schedule,
    default_stage_fractions,
)
from paretune.spaces.base import Decision, SearchSpace
from paretune.spaces.nb201 import NB201Space

ACC = ObjectiveSet.of(("accuracy", "max"))
ACC_PARAMS = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))


def toy_space(decisions: int = 6, options: int = 4) -> SearchSpace:
    ops = tuple(f"op{i}" for i in range(options))
    return SearchSpace([Decision(f"d{k}", ops) for k in range(decisions)], name="toy")


def toy_values(arch) -> dict[str, float]:
    """Accuracy grows with the option index; params too (a real trade-off)."""
    return {"accuracy": 50.0 + 2.0 * sum(arch), "params": 1.0 + 0.5 * sum(arch)}


def run(engine: ProgressiveShrinking, n: int, values=toy_values) -> list[tuple[int, ...]]:
    archs = []
    for _ in range(n):
        p = engine.ask()
        assert p is not None
        engine.tell(p, values(p.arch))
        archs.append(p.arch)
    return archs


# ---------------------------------------------------------------------- REINFORCE
def test_reinforce_step_moves_probability_toward_rewarded_options():
    eng = ProgressiveShrinking(toy_space(2, 3), ACC, seed=0, reward="product", schedule=[3], lr=0.1)
    before = eng._probs().copy()
    good, bad = [2, 2], [0, 0]
    batch = [{"arch": good, "values": {"accuracy": 90.0}}] * 5
    batch += [{"arch": bad, "values": {"accuracy": 10.0}}] * 5
    eng._reinforce(batch)
    after = eng._probs()
    assert eng.generation == 1
    assert np.all(after[:, 2] > before[:, 2] + 0.01)
    assert np.all(after[:, 0] < before[:, 0] - 0.01)
    # Baseline starts at the first batch mean.
    assert eng.baseline == pytest.approx(50.0)


def test_reinforce_learns_toy_problem_through_ask_tell():
    eng = ProgressiveShrinking(toy_space(), ACC, seed=1, reward="product", schedule=[4], lr=0.1)
    run(eng, 200)
    p = eng._probs()
    assert eng.generation == 20
    assert np.all(np.argmax(p, axis=1) == 3)
    assert np.all(p[:, 3] > 0.5)
    probs = eng.probabilities()
    assert set(probs) == {f"d{k}" for k in range(6)}
    assert all(math.isclose(sum(v.values()), 1.0) for v in probs.values())


def test_pareto_reward_learns_away_from_dominated_options():
    # Option 0 is dominated (same params as option 1, less accuracy): it should lose mass.
    def values(arch):
        acc = sum({0: 0.0, 1: 3.0, 2: 4.0, 3: 5.0}[i] for i in arch)
        params = sum({0: 1.0, 1: 1.0, 2: 2.0, 3: 3.0}[i] for i in arch)
        return {"accuracy": acc, "params": params}

    eng = ProgressiveShrinking(toy_space(), ACC_PARAMS, seed=2, schedule=[4], lr=0.1)
    run(eng, 200, values)
    p = eng._probs()
    assert np.all(p[:, 0] < 0.2)


def test_gradient_clipping_and_adam_bias_correction():
    eng = ProgressiveShrinking(
        toy_space(2, 3), ACC, seed=0, reward="product", schedule=[3], lr=0.01, weight_decay=0.0
    )
    start = eng.logits.copy()
    batch = [
        {"arch": [2, 2], "values": {"accuracy": 1e6}},
        {"arch": [0, 0], "values": {"accuracy": 0.0}},
    ]
    eng._reinforce(batch)
    # Adam's first step moves every coordinate with a non-zero gradient by ~lr, whatever the scale.
    step = np.abs(eng.logits - start)
    assert np.all(step[:, [0, 2]] == pytest.approx(0.01, rel=1e-3))
    assert np.all(np.isfinite(eng.logits))


# ---------------------------------------------------------------------- shrinking
def test_shrink_drops_exactly_the_lowest_probability_options():
    space = NB201Space()
    eng = ProgressiveShrinking(space, ACC, seed=0, stage_lengths=[10, 10, 10], batch_size=1000)
    rng = np.random.default_rng(5)
    eng.logits = rng.normal(size=eng.logits.shape)
    expected_keep = [set(np.argsort(-eng.logits[k])[:3].tolist()) for k in range(6)]
    run(eng, 10)  # batch_size 1000: no REINFORCE step, logits unchanged
    assert eng.stage == 1
    assert [set(a) for a in eng.space.allowed] == expected_keep
    ops = space.decisions[0].options
    hist = eng.shrink_history[0]
    assert hist["stage"] == 0 and hist["results"] == 10
    for k, d in enumerate(space.decisions):
        dropped = {ops[i] for i in range(5) if i not in expected_keep[k]}
        assert set(hist["dropped"][d.name]) == dropped
        assert all(eng.probabilities()[d.name][o] == 0.0 for o in dropped)
    run(eng, 10)
    assert eng.stage == 2 and all(len(a) == 2 for a in eng.space.allowed)
    kept2 = [
        set(np.argsort(-eng.logits[k])[:5].tolist()) & set(a)
        for k, a in enumerate(eng.space.allowed)
    ]
    assert all(len(k) == 2 for k in kept2)


def test_inspection_tables_show_probabilities_per_stage_and_what_was_dropped():
    space = NB201Space()
    eng = ProgressiveShrinking(space, ACC, seed=0, stage_lengths=[10, 10, 10], batch_size=1000)
    eng.logits = np.random.default_rng(5).normal(size=eng.logits.shape)
    before = eng.probabilities()
    run(eng, 20)  # two shrinks: 5 -> 3 -> 2 options
    tables = {t.name: t for t in eng.inspection_tables()}
    probs = tables["stage_probabilities"]
    assert probs.heatmap == (("decision", "option"), ("stage_0", "stage_1", "stage_2"))
    assert len(probs.rows) == 6 * 5
    by_key = {(r["decision"], r["option"]): r for r in probs.rows}
    for d in space.decisions:
        for stage in ("stage_0", "stage_1", "stage_2"):
            assert sum(by_key[(d.name, o)][stage] for o in d.options) == pytest.approx(1.0)
        for o in d.options:  # stage 0 ended before any REINFORCE step: the initial policy
            assert by_key[(d.name, o)]["stage_0"] == pytest.approx(before[d.name][o])
        live = [o for o in d.options if by_key[(d.name, o)]["stage_2"] > 0]
        assert len(live) == 2
    shrinks = tables["shrink_history"].rows
    assert len(shrinks) == 2 * 6
    for row in shrinks:
        dropped = row["dropped"].split()
        assert len(dropped) == (2 if row["stage"] == 0 else 1)
        assert all(by_key[(row["decision"], o)]["stage_2"] == 0 for o in dropped)
    fresh = ProgressiveShrinking(space, ACC, seed=0)
    assert fresh.inspection_tables()[1].rows == []  # no shrink yet: an empty history


def test_shrink_ties_keep_the_lower_option_index():
    eng = ProgressiveShrinking(NB201Space(), ACC, seed=0, stage_lengths=[1, 1, 1], init_std=0.0)
    eng.logits[:] = 0.0
    eng._shrink()
    assert all(a == (0, 1, 2) for a in eng.space.allowed)


def test_default_schedule_and_budget_scaled_stage_lengths():
    assert default_schedule(5) == [5, 3, 2, 1]
    assert default_schedule(8) == [8, 4, 2, 1]
    assert default_stage_fractions(1000, 3) == [0.5, 0.05, 0.05]
    assert default_stage_fractions(300, 3)[0] == pytest.approx(0.15)
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, budget=1000)
    assert eng.schedule == [5, 3, 2, 1]
    assert len(eng.stage_lengths) == 3 and all(x % eng.batch_size == 0 for x in eng.stage_lengths)
    assert sum(eng.stage_lengths) < 1000
    small = ProgressiveShrinking(NB201Space(), ACC_PARAMS, budget=100)
    assert sum(small.stage_lengths) < sum(eng.stage_lengths)


def test_full_shrink_then_local_search_in_full_space():
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=3, stage_lengths=[20, 20, 10])

    def values(arch):
        return {
            "accuracy": 60.0 + 3.0 * arch.count(3) + arch.count(2),
            "params": 0.1 + sum(arch) / 10,
        }

    archs = run(eng, 150, values)
    assert eng.converged and eng.stage == 3
    assert len(set(archs)) == len(archs)  # no duplicate proposals
    phases = [r.proposal.meta["phase"] for r in eng.history]
    assert phases[-1] == "local"
    local = [r.proposal for r in eng.history if r.proposal.meta["phase"] == "local"]
    assert any(not eng.space.contains(p.arch) for p in local)
    # A local proposal is a one-edit neighbour of its parent.
    by_id = {r.proposal.id: r.proposal.arch for r in eng.history}
    for p in local:
        diff = sum(a != b for a, b in zip(p.arch, by_id[p.meta["parent"]], strict=True))
        assert diff == 1
    stop = ProgressiveShrinking(
        NB201Space(), ACC_PARAMS, seed=3, stage_lengths=[20, 20, 10], final="stop"
    )
    n = 0
    while (p := stop.ask()) is not None:
        stop.tell(p, values(p.arch))
        n += 1
    assert stop.converged and n < 150


# ---------------------------------------------------------------------- rewards
def test_product_reward_formula_and_zero_costs():
    objs = ObjectiveSet.of(("accuracy", "max"), ("params", "min"), ("latency", "min"))
    eng = ProgressiveShrinking(
        toy_space(),
        objs,
        reward="product",
        targets={"params": 2.0, "latency": 5.0},
        exponents={"params": -0.45, "latency": -0.2},
    )
    r = eng._product_reward({"accuracy": 90.0, "params": 1.0, "latency": 10.0})
    assert r == pytest.approx(90.0 * 0.5**-0.45 * 2.0**-0.2)
    zero = eng.rewards(
        [{"arch": [0] * 6, "values": {"accuracy": 90.0, "params": 0.0, "latency": 0.0}}]
    )
    assert np.all(np.isfinite(zero)) and zero[0] > r
    assert np.isfinite(eng._product_reward({"accuracy": 0.0, "params": 0.0, "latency": 0.0}))


@pytest.mark.parametrize("reward", ["product", "pareto"])
def test_rewards_finite_for_zero_objectives_and_failures(reward):
    eng = ProgressiveShrinking(toy_space(), ACC_PARAMS, seed=0, reward=reward, batch_size=4)
    values = [
        {"accuracy": 0.0, "params": 0.0},
        {"accuracy": 0.0, "params": 0.0},
        {"accuracy": 80.0, "params": 0.0},
    ]
    props = [eng.ask() for _ in range(4)]
    for p, v in zip(props, values, strict=False):
        eng.tell(p, v)
    eng.tell_failure(props[3], "out of memory")
    assert eng.generation == 1
    assert eng.baseline is not None and math.isfinite(eng.baseline)
    assert np.all(np.isfinite(eng.logits))
    batch = [{"arch": list(p.arch), "values": v} for p, v in zip(props, values, strict=False)]
    r = eng.rewards(batch + [{"arch": list(props[3].arch), "values": None}])
    assert np.all(np.isfinite(r))
    assert r[-1] == pytest.approx(min(r[:-1].min(), min(eng.recent_rewards)))
    # NaN values are failures too, never a crash.
    p = eng.ask()
    eng.tell(p, {"accuracy": float("nan"), "params": 1.0})
    assert eng.history[-1].failed


def test_first_batch_all_failed_is_finite():
    for reward in ("product", "pareto"):
        eng = ProgressiveShrinking(toy_space(), ACC_PARAMS, seed=0, reward=reward, batch_size=3)
        for _ in range(3):
            eng.tell_failure(eng.ask(), "boom")
        assert eng.generation == 1 and math.isfinite(eng.baseline)
        assert np.all(np.isfinite(eng._probs()))


def test_pareto_reward_is_the_exclusive_margin():
    eng = ProgressiveShrinking(toy_space(1, 4), ACC_PARAMS, seed=0, batch_size=100)
    pts = {0: (10.0, 1.0), 1: (20.0, 2.0), 2: (15.0, 3.0), 3: (30.0, 4.0)}  # (acc, params)
    props = [eng.ask() for _ in range(4)]
    for p in props:
        a, m = pts[p.arch[0]]
        eng.tell(p, {"accuracy": a, "params": m})
    r = eng.rewards([{"arch": [i], "values": {}} for i in range(4)])
    # Normalised: acc (min) -> (-acc+(30))/20 ... option 2 is dominated by option 1.
    assert r[2] < 0 < min(r[0], r[1], r[3])
    # Option 2 is 1/3 (params) away from escaping option 1's domination, 1/4 in accuracy.
    assert r[2] == pytest.approx(-0.25)


def test_infeasible_results_rank_below_feasible():
    objs = ObjectiveSet((Objective("accuracy", "max"), Objective("params", "min", limit=2.0)))
    eng = ProgressiveShrinking(toy_space(1, 4), objs, seed=0, batch_size=100)
    vals = {0: (10.0, 1.0), 1: (20.0, 1.5), 2: (99.0, 3.0), 3: (95.0, 5.0)}
    for p in [eng.ask() for _ in range(4)]:
        a, m = vals[p.arch[0]]
        eng.tell(p, {"accuracy": a, "params": m})
    r = eng.rewards([{"arch": [i], "values": {}} for i in range(4)])
    assert max(r[2], r[3]) < min(r[0], r[1])
    assert r[2] > r[3]  # less violation, better


@pytest.mark.parametrize("order", ["hv", "margin"])
def test_local_search_parent_order(order):
    eng = ProgressiveShrinking(toy_space(1, 8), ACC_PARAMS, seed=0, local_order=order)
    # A lone high-accuracy extreme, two close low-cost points, one dominated point.
    pts = [(50.0, 1.0), (51.0, 1.1), (90.0, 5.0), (49.0, 3.0)]
    for i, (a, m) in enumerate(pts):
        eng._add_point(Record(Proposal(i, (i,)), {"accuracy": a, "params": m}))
    scores = eng._local_scores()
    assert np.argmax(scores) == 2 and np.argmin(scores) == 3
    assert scores[3] < 0 <= min(scores[:3])


def test_local_search_spreads_pending_children_over_front_members():
    """With local children of the best parent in flight, the next local proposal perturbs
    another front member; with nothing in flight the best parent is taken again."""
    eng = ProgressiveShrinking(toy_space(2, 8), ACC_PARAMS, seed=0, schedule=[1])
    # A lone high-accuracy extreme (the largest contribution), two close low-cost points.
    pts = {(0, 0): (50.0, 1.0), (1, 0): (51.0, 1.1), (7, 7): (90.0, 5.0), (3, 3): (49.0, 3.0)}
    for arch, (a, m) in pts.items():
        p = eng.ask()
        eng.tell(Proposal(p.id, arch, p.meta), {"accuracy": a, "params": m})
    assert eng.converged
    best_id = next(r.proposal.id for r in eng.history if r.proposal.arch == (7, 7))
    first = eng.ask()
    assert first.meta["phase"] == "local" and first.meta["parent"] == best_id
    second = eng.ask()  # ``first`` is in flight: another front member
    assert second.meta["phase"] == "local" and second.meta["parent"] != best_id
    parents = {r.proposal.id: r.proposal.arch for r in eng.history}
    assert parents[second.meta["parent"]] in {(0, 0), (1, 0)}
    eng.tell(first, {"accuracy": 40.0, "params": 9.0})
    eng.tell(second, {"accuracy": 40.0, "params": 9.0})
    assert eng.ask().meta["parent"] == best_id  # nothing in flight: the plain order


@pytest.mark.parametrize(
    ("local_child", "reward"), [("model", "pareto"), ("model", "product"), ("random", "pareto")]
)
def test_model_children_improve_on_their_parent_where_random_ones_rarely_do(local_child, reward):
    """On an additive accuracy the model child of the best architecture is the one edit the
    results say pays most: every one of them improves on its parent; random edits do not."""

    def values(arch):
        return {"accuracy": float(sum((k + 1) * o for k, o in enumerate(arch)))}

    # 60 policy results at a tiny learning rate (nearly uniform), then the shrink to one arch.
    kw = {"schedule": [5, 1], "stage_lengths": [60], "lr": 1e-4, "local_child": local_child}
    kw["reward"] = reward
    eng = ProgressiveShrinking(toy_space(12, 5), ACC, seed=2, **kw)
    run(eng, 61, values)
    assert eng.converged
    gains, best_gains = [], []
    for _ in range(4):
        p = eng.ask()
        assert p.meta["phase"] == "local"
        parent = next(r.proposal.arch for r in eng.history if r.proposal.id == p.meta["parent"])
        base = values(parent)["accuracy"]
        unseen = [a for a in eng._full_space.neighbors(parent) if a not in eng._seen | {p.arch}]
        best_gains.append(max(values(a)["accuracy"] for a in unseen + [p.arch]) - base)
        eng.tell(p, values(p.arch))
        gains.append(values(p.arch)["accuracy"] - base)

    if local_child == "model":
        assert all(g > 0 for g in gains)
        assert gains[0] == best_gains[0]  # the edit that pays most
    else:
        assert sum(g > 0 for g in gains) < len(gains)


def test_model_children_in_flight_count_as_predicted_results():
    """A proposal in flight counts as a result at its predicted point (a constant liar): a
    child predicted where a proposal in flight is predicted stands out of nothing any more."""
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=5, stage_lengths=[10, 5, 5])

    def values(arch):
        acc = 60.0 + 3.0 * arch.count(3) + arch.count(2) + 0.5 * arch.count(1)
        return {"accuracy": acc, "params": 0.1 + arch.count(3) + 0.4 * arch.count(2)}

    run(eng, 25, values)
    assert eng.converged and not eng.pending
    parent = eng._points[int(np.argmax(eng._local_scores()))][0]
    children = [a for a in NB201Space().neighbors(parent) if a not in eng._seen]
    alone = eng._child_scores(children)
    top = int(np.argmax(alone))
    assert alone[top] > 0  # predicted to stand out of the front
    eng.pending[999] = Proposal(999, children[top], {"phase": "local"})
    beside = eng._child_scores(children)
    assert np.all(beside <= alone) and beside[top] < alone[top] / 2


def test_state_without_local_child_goes_on_with_random_children():
    """A search saved before model children resumes as it ran (random children)."""
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=1, stage_lengths=[20, 10, 10])
    run(eng, 50, lambda a: {"accuracy": 60.0 + a.count(3), "params": 0.1 + sum(a)})
    state = json.loads(json.dumps(eng.state_dict()))
    assert state["engine_state"]["local_child"] == "model"
    del state["engine_state"]["local_child"], state["engine_state"]["local_exploration"]
    twin = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=1, stage_lengths=[20, 10, 10])
    twin.load_state_dict(state)
    assert twin.local_child == "random" and twin.local_exploration == 0.0


# ---------------------------------------------------------------------- async, state, seeds
def test_many_in_flight_out_of_order():
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=4, stage_lengths=[40, 30, 20])
    rng = np.random.default_rng(0)
    inflight = [eng.ask() for _ in range(60)]
    assert len({p.arch for p in inflight}) == 60
    told = 0
    while told < 300:
        k = int(rng.integers(len(inflight)))
        p = inflight.pop(k)
        if rng.random() < 0.05:
            eng.tell_failure(p, "lost node")
        else:
            eng.tell(p, {"accuracy": 50.0 + 10 * p.arch.count(3), "params": 0.1 + sum(p.arch) / 10})
        told += 1
        inflight.append(eng.ask())
    assert eng.stage == 3 and len(eng.shrink_history) == 3
    assert [h["results"] for h in eng.shrink_history] == [40, 30, 20]
    # Stale results (proposed before a shrink, now outside the space) never enter the gradient.
    assert eng.generation >= 4
    assert all(eng.space.contains(b["arch"]) for b in eng.buffer)
    metas = [r.proposal.meta for r in eng.history]
    assert {"stage", "probability", "generation", "phase"} <= set(metas[0])
    assert all(0.0 <= m["probability"] <= 1.0 for m in metas)
    assert all(math.isfinite(x) for x in eng.logits.ravel())
    archs = [r.proposal.arch for r in eng.history] + [p.arch for p in inflight]
    assert len(set(archs)) == len(archs)


def test_same_seed_same_proposals_and_different_seed_differs():
    a = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=7, budget=120)
    b = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=7, budget=120)
    c = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=8, budget=120)

    def values(arch):
        return {"accuracy": 60.0 + 3.0 * arch.count(3), "params": 0.1 + sum(arch) / 10}

    ra, rb, rc = run(a, 120, values), run(b, 120, values), run(c, 120, values)
    assert ra == rb and ra != rc
    assert a.probabilities() == b.probabilities()


@pytest.mark.parametrize("reward", ["product", "pareto"])
def test_state_round_trip_mid_stage(reward):
    def values(arch):
        return {
            "accuracy": 60.0 + 3.0 * arch.count(3) + arch.count(2),
            "params": 0.1 + sum(arch) / 10,
        }

    kw = {"reward": reward, "stage_lengths": [40, 30, 20], "batch_size": 8}
    eng = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=11, **kw)
    run(eng, 53, values)  # stage 1, a partly filled buffer
    inflight = [eng.ask() for _ in range(3)]
    assert eng.stage == 1 and 0 < len(eng.buffer) < 8
    state = json.loads(json.dumps(eng.state_dict()))
    twin = ProgressiveShrinking(NB201Space(), ACC_PARAMS, seed=0, **kw)
    twin.load_state_dict(state)
    assert twin.probabilities() == eng.probabilities()
    assert twin.shrink_history == eng.shrink_history
    assert twin.space.allowed == eng.space.allowed and twin.generation == eng.generation
    for e in (eng, twin):
        for p in inflight:
            e.tell(p, values(p.arch))
    # Identical futures, across the remaining shrinks and into local search.
    assert run(eng, 80, values) == run(twin, 80, values)
    assert twin.converged and twin.state_dict() == eng.state_dict()


# ---------------------------------------------------------------------- config
def test_registered_and_validates_parameters():
    eng = make_engine("tnd", NB201Space(), ACC_PARAMS, seed=0, budget=300)
    assert isinstance(eng, ProgressiveShrinking)
    with pytest.raises(ValueError, match="unknown objectives"):
        ProgressiveShrinking(
            NB201Space(), ACC_PARAMS, targets={"energy": 1.0}, exponents={"energy": -1}
        )
    with pytest.raises(ValueError, match="same objectives"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, targets={"params": 1.0})
    with pytest.raises(ValueError, match="reward"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, reward="hv")
    with pytest.raises(ValueError, match="schedule"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, schedule=[2, 3])
    with pytest.raises(ValueError, match="stage_lengths"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, stage_lengths=[10])
    with pytest.raises(ValueError, match="accuracy objective"):
        ProgressiveShrinking(NB201Space(), ObjectiveSet.of(("params", "min")), reward="product")
    with pytest.raises(ValueError, match="local_child 'best' is not allowed"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, local_child="best")
    with pytest.raises(ValueError, match="local_exploration must be >= 0"):
        ProgressiveShrinking(NB201Space(), ACC_PARAMS, local_exploration=-1)


def test_schedule_is_derived_from_each_decisions_option_count():
    from paretune.search_algos.shrinking import decision_schedules

    assert decision_schedules([5] * 6, None) == [[5, 3, 2, 1]] * 6
    assert decision_schedules([9, 2, 3, 1], None) == [
        [9, 5, 3, 2, 1],
        [2, 2, 1, 1, 1],
        [3, 2, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ]
    assert decision_schedules([9, 2], [4, 1]) == [[4, 1], [2, 1]]  # given: capped counts
    sizes = [2, 9, 3, 5, 4, 7, 2, 6, 8]
    space = SearchSpace(
        [Decision(f"d{k}", tuple(f"o{i}" for i in range(n))) for k, n in enumerate(sizes)]
    )
    eng = ProgressiveShrinking(space, ACC_PARAMS, seed=0, stage_lengths=[10, 10, 10, 10])
    seen_sizes = []
    rng = np.random.default_rng(0)
    for _ in range(60):
        p = eng.ask()
        eng.tell(p, {"accuracy": float(rng.random()), "params": float(rng.random())})
        seen_sizes.append(tuple(len(a) for a in eng.space.allowed))
    stages = list(dict.fromkeys(seen_sizes))
    # every decision shrinks at every stage in proportion to its own options, down to 1
    assert stages[0] == tuple(sizes)
    assert stages[1] == (2, 5, 2, 3, 3, 4, 2, 4, 5)
    assert stages[2] == (1, 3, 1, 2, 2, 3, 1, 2, 3)
    assert stages[3] == (1, 2, 1, 2, 1, 2, 1, 2, 2)
    assert stages[-1] == (1,) * len(sizes)
    assert eng.converged
    state = eng.state_dict()
    assert state["engine_state"]["keep"][1] == [9, 5, 3, 2, 1]
    # a state saved before per-decision schedules (no "keep") loads with one count for all
    old = json.loads(json.dumps(state))
    del old["engine_state"]["keep"]
    twin = ProgressiveShrinking(space, ACC_PARAMS, seed=0, stage_lengths=[10, 10, 10, 10])
    twin.load_state_dict(old)
    assert twin.keep[0] == [2, 2, 2, 2, 1]
