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
