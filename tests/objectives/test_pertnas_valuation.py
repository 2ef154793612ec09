"""PertNAS supernet mode's torch side: expanded networks, checkpoints, valuations."""

from __future__ import annotations

import json

import pytest
import torch

from paretune.objectives import make_evaluator
from paretune.objectives.pertnas_valuation import (
    arch_of_options,
    build_network,
    check_params,
    edge_weights,
    load_checkpoint,
    run_plan,
    train_job,
    value_job,
)
from paretune.search_algos.perturbation_supernet import PertNASPlan
from paretune.spaces.darts import DartsSpace
from paretune.spaces.nb201 import NB201Space

OBJ = [("accuracy", "max"), ("params", "min"), ("flops", "min")]


def _ev(kind: str = "nb201"):
    return make_evaluator(
        "train",
        space={"kind": kind},
        dataset="digits",
        channels=4,
        cells_per_stage=1,
        energy_meter="estimate",
        latency_repeats=2,
        latency_warmup=1,
    )


def test_check_params_names_the_bad_value():
    with pytest.raises(ValueError, match=r"search.params.f_fine = -1: must be an integer >= 0"):
        check_params({"f_fine": -1}, OBJ, "nb201", 2)
    with pytest.raises(ValueError, match=r"search.params.bogus = 1: unknown"):
        check_params({"bogus": 1}, OBJ, "nb201", 2)
    with pytest.raises(ValueError, match=r"topology = True: .* only on darts"):
        check_params({"topology": True}, OBJ, "nb201", 2)
    with pytest.raises(ValueError, match=r"'zz' has no valuation"):
        check_params({}, [("accuracy", "max"), ("zz", "min")], "nb201", 2)
    with pytest.raises(ValueError, match=r"lineages\[0\].params = -1"):
        check_params({"lineages": [{"params": -1}]}, OBJ, "nb201", 2)
    with pytest.raises(ValueError, match=r"search.params.n_iter = 0: must be an integer >= 1"):
        check_params({"n_iter": 0}, OBJ, "nb201", 2)
    assert check_params({}, OBJ, "nb201", 2)["n_iter"] == 1
    p = check_params({}, OBJ, "darts", 3)
    assert p["topology"] is True and len(p["lineages"]) == 3 and p["f_expand"] == 70


def test_plan_from_checked_params_passes_every_knob():
    params = {"population": 2, "n_iter": 2, "epochs": 3, "f_expand": 4, "f_fine": 6}
    p = check_params({**params, "f_topology": 7, "coarse_keep": 3}, OBJ, "darts", 2)
    plan = PertNASPlan.from_params([[1, 2, 3, 4]] * 14, 8, OBJ, p, 5)
    explicit = PertNASPlan(
        [[1, 2, 3, 4]] * 14,
        8,
        OBJ,
        p["lineages"],
        **params,
        f_topology=7,
        coarse_keep=3,
        topology=True,
        seed=5,
    )
    assert vars(plan) == vars(explicit)
    assert plan.frontier({}) == explicit.frontier({})
    assert (plan.f, plan.coarse_keep, plan.topology) == (
        {"expand": 4, "fine": 6, "topology": 7},
        3,
        True,
    )


def test_darts_mask_hits_the_shared_cell_in_both_cells():
    ev = _ev("darts")
    net = build_network(ev, [[3, 4]] + [[4]] * 13, 0)
    w = edge_weights(net, 0, 4)
    assert w[0].tolist()[3:5] == [1.0, 0.0] and w[14].tolist()[3:5] == [1.0, 0.0]
    assert w[1][4] == 1.0 and w[15][4] == 1.0
    w = edge_weights(net, 1, None)
    assert float(w[1].sum()) == 0.0 and float(w[15].sum()) == 0.0


@pytest.mark.slow
def test_train_then_value_restores_weights_and_optimizer(tmp_path):
    ev = _ev()
    p = check_params({"batch_size": 128, "lr": 0.1}, OBJ, "nb201", 1)
    options = [[3], [1, 2, 3, 4], [3], [1], [3], [2]]
    job = {"key": "t", "options": options, "epochs": 1, "lr_factor": 1.0}
    meta = train_job(ev, job, p, ["accuracy", "params", "flops"], 0, tmp_path)
    saved = torch.load(tmp_path / "net.pt", weights_only=True)
    net, opt, meta2 = load_checkpoint(ev, tmp_path, p)
    assert meta2["accuracy"] == meta["accuracy"]
    for name, value in net.state_dict().items():
        assert torch.equal(value, saved["model"][name])
    momenta = [opt.state[q]["momentum_buffer"] for q in net.parameters() if q in opt.state]
    assert momenta and any(float(m.abs().sum()) > 0 for m in momenta)  # restored, not fresh
    # F = 0: the masked network as trained; masking nor_conv_3x3 removes exactly its weights
    val = {**job, "key": "v", "edge": 1, "option": 3, "steps": 0}
    r = value_job(ev, val, p, ["accuracy", "params", "flops"], 0, tmp_path)
    conv = sum(
        q.numel()
        for c in net.cells
        if hasattr(c, "edges")
        for q in c.edges[1].ops["nor_conv_3x3"].parameters()
    )
    assert r["delta"]["params"] == pytest.approx(-conv / 1e6)
    assert r["delta"]["flops"] < 0
    assert r["accuracy_with"] == meta["accuracy"]
    # F steps fine-tune a copy: the checkpoint is left as it was, and F=0 with no mask is 0
    r5 = value_job(ev, {**val, "steps": 5}, p, ["accuracy", "params", "flops"], 0, tmp_path)
    assert r5["train_samples"] == 5 * 128
    after = torch.load(tmp_path / "net.pt", weights_only=True)
    assert all(torch.equal(after["model"][k], v) for k, v in saved["model"].items())
    assert json.loads((tmp_path / "meta.json").read_text())["key"] == "t"


def test_arch_of_final_options():
    nb = NB201Space()
    assert arch_of_options(nb, [[1], [2], [3], [4], [1], [2]]) == (1, 2, 3, 4, 1, 2)
    darts = DartsSpace()
    final = [[4], [5], [], [4], [3], [], [], [6], [7], [], [], [], [4], [4]]
    arch = arch_of_options(darts, final)
    g = darts.genotype(arch)
    assert g.normal == g.reduce
    assert ("sep_conv_3x3", 0) in g.normal and ("dil_conv_5x5", 3) in g.normal
    with pytest.raises(ValueError, match="exactly 2"):
        arch_of_options(darts, [[4]] * 14)


@pytest.mark.slow
def test_run_plan_with_two_iterations_and_a_rerun_that_skips_finished_jobs(tmp_path):
    """The plan run in-process (no Ray): two expansion iterations on a space where 2 edges
    have 2 options; a second run over the same folder reads every result back, runs nothing."""
    from paretune.search_algos.perturbation_supernet import PertNASPlan

    ev = _ev()
    obj = OBJ[:2]
    p = check_params(
        {
            "population": 1,
            "n_iter": 2,
            "epochs": 1,
            "batch_size": 512,
            "f_expand": 1,
            "f_fine": 1,
            "lineages": 1,
            "eval_batches": 1,
        },
        obj,
        "nb201",
        1,
    )
    options = [[1, 3], [3], [3], [1], [3], [1, 3]]

    def plan():
        return PertNASPlan(
            options,
            5,
            obj,
            p["lineages"],
            population=1,
            n_iter=2,
            epochs=1,
            f_expand=1,
            f_fine=1,
            seed=0,
        )

    results = run_plan(plan(), ev, p, ["accuracy", "params"], 0, tmp_path)
    # 2 iterations x 2 edges x (train + 2 valuations); coarse + 2 edges x (2 values + retrain)
    assert len(results) == 12 + 7
    assert {"expand-m0-e0-k1", "expand-i1-m0-e5-k3"} <= set(results)
    assert results["expand-i1-m0-e0"]["job"]["iteration"] == 1
    stamps = {q.name: q.stat().st_mtime_ns for q in (tmp_path / "results").glob("*.json")}
    again = run_plan(plan(), ev, p, ["accuracy", "params"], 0, tmp_path)
    assert again == results
    assert {q.name: q.stat().st_mtime_ns for q in (tmp_path / "results").glob("*.json")} == stamps
    (final,) = plan().finals(again)
    assert [len(o) for o in final] == [1] * 6
