"""PertNAS supernet mode's plan and selections (pure numpy, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from paretune.search_algos.perturbation_supernet import (
    PertNASPlan,
    coarse_select,
    importance,
    lineage_weights,
    matrix_csv,
    scales,
    topology_select,
)

OBJ = [("accuracy", "max"), ("params", "min")]


def oracle(job):
    """Accuracy: removing op 3 hurts most, then op 2; params: op k costs k."""
    k = job["option"]
    if k is None:  # topology: removing edge e hurts by e
        return {"delta": {"accuracy": -float(job["edge"]), "params": -1.0}}
    acc = {1: -0.5, 2: -2.0, 3: -4.0, 4: -1.0}[k]
    return {"delta": {"accuracy": acc, "params": -float(k)}}


def run(plan):
    results, log = {}, []
    while True:
        jobs = plan.frontier(results)
        if not jobs:
            break
        for j in jobs:
            log.append(j)
            results[j["key"]] = oracle(j) if j["kind"] == "value" else {"accuracy": 50.0}
    return results, log


def test_coarse_keeps_most_negative_accuracy_deltas():
    v = {"accuracy": np.array([[np.nan, -0.5, -2.0, -4.0, -1.0]])}
    s = importance(v, {"accuracy": 1.0}, dict(OBJ), {"accuracy": 1.0})
    assert coarse_select(s, [[1, 2, 3, 4]], 2) == [[2, 3]]


def test_cost_weight_prefers_cheap_options():
    v = {"accuracy": np.array([[0.0, -1.0, -1.1]]), "params": np.array([[0.0, -0.1, -5.0]])}
    sc = scales(v)
    acc_only = importance(v, {"accuracy": 1.0, "params": 0.0}, dict(OBJ), sc)
    cheap = importance(v, {"accuracy": 0.2, "params": 0.8}, dict(OBJ), sc)
    assert coarse_select(acc_only, [[1, 2]], 1) == [[2]]
    assert coarse_select(cheap, [[1, 2]], 1) == [[1]]


def test_topology_keeps_two_most_important_inputs():
    assert topology_select({9: 0.1, 10: 3.0, 11: -1.0, 12: 2.0, 13: 0.0}, 5) == [10, 12]
    assert topology_select({2: 1.0, 3: 2.0, 4: 0.5}, 3) == [2, 3]


def test_lineage_weights_start_with_the_paper():
    w = lineage_weights(OBJ, 3, "accuracy")
    assert w[0] == {"accuracy": 1.0, "params": 0.0}
    assert w[2]["params"] == pytest.approx(0.8) and w[1]["params"] == pytest.approx(0.4)


def test_nb201_plan_runs_to_one_option_per_edge():
    opts = [[1, 2, 3, 4]] * 6
    plan = PertNASPlan(opts, 5, OBJ, lineage_weights(OBJ, 2, "accuracy"), population=2)
    results, log = run(plan)
    finals = plan.finals(results)
    assert finals is not None and len(finals) == 2
    assert finals[0] == [[3]] * 6  # accuracy alone: the op whose removal hurts most
    assert all(len(o) == 1 for f in finals for o in f)
    assert finals[1] != finals[0]  # the cost-weighted lineage picks cheaper ops
    m = plan.matrix(results)["accuracy"]
    assert m[0, 3] == -4.0 and np.isnan(m[0, 0])
    trains = [j for j in log if j["kind"] == "train"]
    assert len(trains) == 2 * 6 + 2 * (1 + 6)
    # expansion: one edge expanded, the others compact
    j = next(j for j in log if j["key"] == "expand-m1-e2")
    assert [len(o) for o in j["options"]] == [1, 1, 4, 1, 1, 1]
    # fine stage follows the edge order (last edge first on NB201) with the paper's F
    fine = [j for j in log if j["kind"] == "value" and j["stage"] == "fine" and j["lineage"] == 0]
    assert [j["edge"] for j in fine][:2] == [5, 5] and fine[0]["steps"] == 130


def test_darts_plan_topology_two_inputs_per_node_and_resume():
    opts = [[1, 2, 3, 4]] * 14
    plan = PertNASPlan(opts, 8, OBJ, [{"accuracy": 1.0}], population=1, topology=True)
    results, log = run(plan)
    (final,) = plan.finals(results)
    for node, (a, b) in {2: (0, 2), 3: (2, 5), 4: (5, 9), 5: (9, 14)}.items():
        used = [e for e in range(a, b) if final[e]]
        assert len(used) == 2, (node, used)
        assert used == list(range(b - 2, b))  # oracle: later edges matter more
    fine = [j["edge"] for j in log if j["stage"] == "fine" and j["kind"] == "value"]
    assert fine[::2] == [13, 12, 8, 11, 7, 4, 9, 10, 5, 6, 2, 3, 0, 1]
    # the frontier is a function of the results: any prefix gives the same next jobs again
    partial = {k: results[k] for k in list(results)[:40]}
    assert plan.frontier(partial) == PertNASPlan(
        opts, 8, OBJ, [{"accuracy": 1.0}], population=1, topology=True
    ).frontier(partial)


def test_matrix_csv():
    text = matrix_csv({"accuracy": np.array([[np.nan, -1.0]])}, ["0->1"], ["none", "skip"])
    assert text.splitlines() == ["objective,edge,none,skip", "accuracy,0->1,,-1"]


def _expand_result(acc):
    return {"delta": {"accuracy": acc, "params": -1.0}}


def test_n_iter_one_is_todays_plan_and_more_iterations_add_fresh_populations():
    opts = [[1, 2, 3, 4]] * 6
    lin = lineage_weights(OBJ, 2, "accuracy")
    one = PertNASPlan(opts, 5, OBJ, lin, population=2, seed=3)
    two = PertNASPlan(opts, 5, OBJ, lin, population=2, n_iter=2, seed=3)
    assert one.n_iter == 1 and len(one.iterations) == 1
    assert two.iterations[0] == one.members  # iteration 0 is the single iteration's population
    first = [j["key"] for j in two.frontier({})]
    assert first[:12] == [j["key"] for j in one.frontier({})]  # same keys for iteration 0
    assert first[12:] == [f"expand-i1-m{m}-e{e}" for m in range(2) for e in range(6)]
    assert all(j["iteration"] == 1 for j in two.frontier({})[12:])
    results, log = run(two)
    assert len([j for j in log if j["stage"] == "expand"]) == 2 * 2 * 6 * 5
    assert two.finals(results) == run_finals(one)
    assert two.total_jobs_upper_bound() - one.total_jobs_upper_bound() == 2 * 6 * 5
    with pytest.raises(ValueError, match="n_iter = 0: must be an integer >= 1"):
        PertNASPlan(opts, 5, OBJ, lin, n_iter=0)


def run_finals(plan):
    results, _ = run(plan)
    return plan.finals(results)


def test_matrix_is_the_running_mean_over_iterations():
    plan = PertNASPlan([[1, 2]], 3, OBJ, [{"accuracy": 1.0}], population=2, n_iter=3)
    # iteration 0: members -1, -3 (mean -2); iteration 1: -5, -5; iteration 2: k=1 missing
    values = {0: (-1.0, -3.0), 1: (-5.0, -5.0), 2: (-8.0, -8.0)}
    results = {}
    for it, accs in values.items():
        for m, acc in enumerate(accs):
            results[plan.expand_key(it, m, 0)] = {"accuracy": 50.0}
            for k in (1, 2):
                if it == 2 and k == 1:
                    continue
                results[f"{plan.expand_key(it, m, 0)}-k{k}"] = _expand_result(acc * k)
    m = plan.matrix(results)["accuracy"]
    assert m[0, 1] == pytest.approx((-2.0 - 5.0) / 2)  # iterations 0 and 1 only
    assert m[0, 2] == pytest.approx((-4.0 - 10.0 - 16.0) / 3)
    assert np.isnan(m[0, 0])
    assert plan.iteration_matrix(results, 1)["accuracy"][0, 2] == -10.0
    # the expansion is open while an iteration's valuation is missing: no lineage job yet
    assert plan.frontier_expansion_open(results)
    assert [j["key"] for j in plan.frontier(results)] == [
        "expand-i2-m0-e0-k1",
        "expand-i2-m1-e0-k1",
    ]


def test_n_iter_resume_skips_finished_jobs_of_every_iteration():
    opts = [[1, 2, 3, 4]] * 6
    plan = PertNASPlan(opts, 5, OBJ, [{"accuracy": 1.0}], population=1, n_iter=2)
    results, log = run(plan)
    keys = [j["key"] for j in log]
    assert len(keys) == len(set(keys))  # no job planned twice
    for cut in (5, 40, 70):
        partial = {k: results[k] for k in keys[:cut]}
        nxt = {j["key"] for j in plan.frontier(partial)}
        assert nxt and not nxt & set(partial)  # finished jobs are never planned again
