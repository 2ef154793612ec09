"""Tests of the PertNAS-style perturbation engine (``pertnas``) on a toy space with a known answer.

The conformance tests every registered engine passes (valid proposals, invalid values, JSON and
pickle round trips on NB201, same seed same proposals, all-failure runs) are in
``test_engines.py``; these are what is specific to this engine: the motif table, finding the
optimum, failures in the motif table, asynchrony, narrowing and round trips mid-phase.

Toy space: 6 decisions with 4 options each (4,096 architectures). In ``agree`` one option per
decision (a different index on every decision, so no single-operation design cell is the
optimum) is best on both objectives; in ``trade`` every decision has two Pareto options
(``A``: much accuracy for many parameters, ``B``: a little accuracy for few) and two dominated
ones, so the true front is known exactly.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos import make_engine
from paretune.search_algos.pareto import hypervolume
from paretune.search_algos.perturbation import PerturbationEvolution
from paretune.spaces.base import Decision, SearchSpace
from tests.search_algos.test_engines import drive, signature

D, K = 6, 4
SPACE = SearchSpace(
    [Decision(f"d{k}", tuple(f"op{i}" for i in range(K))) for k in range(D)], name="toy"
)
BEST = tuple((k + 1) % K for k in range(D))  # the best option index of every decision
AGREE = ObjectiveSet.of(("accuracy", "max"), ("loss", "min"))
TRADE = ObjectiveSet.of(("accuracy", "max"), ("params", "min"))

# Trade-off roles: option o of decision k plays role ROLE[k][o]; (accuracy gain, params).
ROLE = [[(o + k) % K for o in range(K)] for k in range(D)]
A, B = 0, 1  # the two Pareto roles; 2 and 3 are dominated (by B, and by A and B)
ROLE_VALUES = {A: (3.0, 1.0), B: (1.0, 0.2), 2: (0.0, 1.0), 3: (0.5, 1.5)}


def agree(arch) -> dict[str, float]:
    """Both objectives rank architectures alike; BEST is the unique optimum."""
    gain = sum(3.0 if o == BEST[k] else 0.4 * ((o + k) % 3) for k, o in enumerate(arch))
    gain += 0.05 * (sum((i + 1) * o for i, o in enumerate(arch)) % 5)  # small interaction
    return {"accuracy": 50.0 + gain, "loss": 10.0 - 0.5 * gain}


def trade(arch) -> dict[str, float]:
    """Accuracy costs parameters; per decision only roles A and B are Pareto optimal."""
    acc = sum(ROLE_VALUES[ROLE[k][o]][0] for k, o in enumerate(arch))
    params = sum(ROLE_VALUES[ROLE[k][o]][1] for k, o in enumerate(arch))
    return {"accuracy": 60.0 + acc, "params": params}


def role(row: dict) -> int:
    return ROLE[int(row["decision"][1:])][int(row["option"][2:])]


def best_option(row: dict) -> bool:
    return int(row["option"][2:]) == BEST[int(row["decision"][1:])]


def pertnas(objectives: ObjectiveSet, seed: int = 0, **params) -> PerturbationEvolution:
    engine = make_engine("pertnas", SPACE, objectives, seed=seed, **params)
    assert isinstance(engine, PerturbationEvolution)
    return engine


def run(engine: PerturbationEvolution, n: int, values, in_flight: int = 1) -> list:
    return drive(engine, n, in_flight=in_flight, result=lambda p: values(p.arch))


def by_decision(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r["decision"]].append(r)
    return out


def table_json(engine: PerturbationEvolution) -> str:
    """The motif table as text (NaN-safe comparison)."""
    return json.dumps(engine.motif_table(), sort_keys=True)


# ====================================================================== motif table
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motif_table_marks_the_best_option_of_every_decision(seed: int) -> None:
    engine = pertnas(AGREE, seed)
    run(engine, 80, agree, in_flight=2)
    rows = engine.motif_table()
    assert len(rows) == D * K
    for decision, opts in by_decision(rows).items():
        best = next(r for r in opts if best_option(r))
        assert [r["option"] for r in opts if r["motif"]] == [best["option"]], decision
        others = [r for r in opts if r is not best]
        assert all(r["count"] > 0 for r in opts)  # every option was perturbed to or from
        assert best["score"] > max(r["score"] for r in others)
        # Minimisation units: negative helps, on both objectives, most for the best option.
        for name in ("effect_accuracy", "effect_loss"):
            assert best[name] < 0
            assert best[name] < min(r[name] for r in others)
        assert all(r["failures"] == 0 and r["kept"] for r in opts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motif_table_with_a_trade_off_keeps_both_pareto_options(seed: int) -> None:
    engine = pertnas(TRADE, seed)
    run(engine, 80, trade, in_flight=2)
    for decision, opts in by_decision(engine.motif_table()).items():
        motifs = {role(r) for r in opts if r["motif"]}
        assert motifs == {A, B}, decision
        score = {role(r): r["score"] for r in opts}
        assert min(score[A], score[B]) > max(score[2], score[3])
        effect = {role(r): (r["effect_accuracy"], r["effect_params"]) for r in opts}
        # A buys accuracy (more negative minimisation effect) with parameters, B the reverse.
        assert effect[A][0] < effect[B][0] and effect[A][1] > effect[B][1]


def test_inspection_tables_are_the_motif_table() -> None:
    engine = pertnas(TRADE, 3)
    assert all(r["count"] == 0 and not r["motif"] for r in engine.motif_table())
    assert all(np.isnan(r["score"]) for r in engine.motif_table())  # never observed: unknown
    run(engine, 30, trade)
    (table,) = engine.inspection_tables()
    assert table.name == "motif_table"
    assert json.dumps(table.rows, sort_keys=True) == table_json(engine)
    assert table.heatmap == (("decision", "option"), ("effect_accuracy", "effect_params", "score"))
    assert list(table.rows[0]) == [
        "decision",
        "option",
        "count",
        "failures",
        "effect_accuracy",
        "effect_params",
        "score",
        "motif",
        "kept",
    ]
    assert [(r["decision"], r["option"]) for r in table.rows] == [
        (d.name, o) for d in SPACE.decisions for o in d.options
    ]


# ====================================================================== search quality
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_search_finds_the_optimum_quickly(seed: int) -> None:
    engine = pertnas(AGREE, seed)
    told = run(engine, 40, agree)
    archs = [p.arch for p in told]
    assert BEST not in archs[:4]  # not one of the single-operation design cells
    assert BEST in archs  # random search needs ~2,000 of the 4,096 on average
    best = max(engine.successes(), key=lambda r: r.values["accuracy"])
    assert best.proposal.arch == BEST
    assert [r.proposal.arch for r in engine.archive()] == [BEST]


@pytest.mark.parametrize("seed", [0, 1])
def test_search_finds_the_whole_trade_off_front(seed: int) -> None:
    every = TRADE.matrix(trade(a) for a in SPACE)
    ref = every.max(axis=0) + 1.0
    # The true front: n decisions on A, the others on B, for n = 0..D.
    front = {(-(60.0 + 3.0 * n + (D - n)), round(n + 0.2 * (D - n), 9)) for n in range(D + 1)}
    engine = pertnas(TRADE, seed)
    run(engine, 120, trade, in_flight=3)
    archive = engine.archive()
    assert {(p[0], round(p[1], 9)) for p in TRADE.matrix(r.values for r in archive)} == front
    found = TRADE.matrix(r.values for r in archive)
    assert hypervolume(found, ref) == pytest.approx(hypervolume(every, ref), rel=1e-12)
    for r in archive:  # archive members use only Pareto roles
        assert {ROLE[k][o] for k, o in enumerate(r.proposal.arch)} <= {A, B}


# ====================================================================== reproducibility, state
def flaky_trade(p) -> dict[str, float] | None:
    """Trade-off values, with one option that always fails and an occasional failure."""
    if p.arch[0] == 0 or p.id % 11 == 5:
        return None
    return trade(p.arch)


def test_same_seed_same_search_with_failures_and_results_out_of_order() -> None:
    runs = []
    for seed in (5, 5, 6):
        engine = pertnas(TRADE, seed)
        told = drive(engine, 70, in_flight=4, result=flaky_trade)
        runs.append((signature(told), table_json(engine), engine.space.allowed))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    assert runs[0][1] != runs[2][1]


def test_state_round_trips_mid_phase_and_after_narrowing() -> None:
    """Snapshots in every lineage phase and after pruning continue exactly like the original."""
    engine = pertnas(TRADE, 7, prune_min_count=4)
    phases: set[str] = set()
    pruned_snapshot = False
    for step in range(8):
        drive(engine, 9, in_flight=3, result=flaky_trade)
        in_flight = [engine.ask(), engine.ask()]  # snapshot with proposals in flight
        phases |= {ln.phase for ln in engine.lineages}
        pruned_snapshot |= engine.space.is_restricted
        state = json.loads(json.dumps(engine.state_dict()))
        restored = pertnas(TRADE, 999, prune_min_count=4)
        restored.load_state_dict(state)
        assert restored.space.allowed == engine.space.allowed
        assert table_json(restored) == table_json(engine)
        assert [ln.to_dict() for ln in restored.lineages] == [
            ln.to_dict() for ln in engine.lineages
        ]
        assert restored.observations == engine.observations
        assert json.loads(json.dumps(restored.state_dict())) == state
        for eng in (engine, restored):
            for p in in_flight:
                if p is not None:
                    eng.tell(eng.pending[p.id], trade(p.arch))
        # The copy continues like the original; the original is then continued (step + 1).
        copy_run = drive(restored, 12, in_flight=2, result=flaky_trade)
        original = json.loads(json.dumps(engine.state_dict()))
        assert signature(copy_run) == signature(drive(engine, 12, in_flight=2, result=flaky_trade))
        assert table_json(restored) == table_json(engine)
        engine.load_state_dict(original)  # undo the comparison run
        if step >= 3 and pruned_snapshot and {"expand", "coarse"} <= phases:
            break
    assert {"expand", "coarse"} <= phases
    assert pruned_snapshot


# ====================================================================== failures
def test_failures_are_counted_as_failures_never_as_zero_effect() -> None:
    engine = pertnas(TRADE, 8)
    told = drive(engine, 80, in_flight=2, result=flaky_trade)
    by_id = {p.id: p for p in told}
    failed = {r.proposal.id for r in engine.history if r.failed}
    # Expected failures per (decision, new option): failed perturbations of a successful parent.
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for p in told:
        parent = p.meta["parent"]
        if parent is not None and p.id in failed and parent not in failed and parent in by_id:
            expected[(p.meta["decision"], p.meta["new_option"])] += 1
    rows = engine.motif_table()
    got = {(r["decision"], r["option"]): r["failures"] for r in rows if r["failures"]}
    assert got == dict(expected) and sum(got.values()) >= 3
    always_failing = next(r for r in rows if (r["decision"], r["option"]) == ("d0", "op0"))
    assert always_failing["failures"] > 0
    assert always_failing["count"] == 0  # no successful observation of it ...
    assert not always_failing["motif"]  # ... so no fitted effect, and the worst score
    assert all(np.isnan(v) for k, v in always_failing.items() if k.startswith("effect_"))
    assert always_failing["score"] == -1.0
    assert always_failing["score"] < min(r["score"] for r in rows if r["count"] > 0)
    assert not any(np.isnan(r["score"]) for r in rows if r["count"] > 0)

    # The fitted effects come from successful perturbations only: dropping the failure
    # observations leaves them unchanged, and only the scores move (by the failure rate) ...
    state = json.loads(json.dumps(engine.state_dict()))
    obs = state["engine_state"]["observations"]
    assert any(o[3] is None for o in obs)
    effects = [k for k in rows[0] if k.startswith("effect_")]

    def table_with(observations: list) -> list[dict]:
        s = json.loads(json.dumps(state))
        s["engine_state"]["observations"] = observations
        eng = pertnas(TRADE, 0)
        eng.load_state_dict(s)
        return eng.motif_table()

    without = table_with([o for o in obs if o[3] is not None])
    for r, w in zip(rows, without, strict=True):
        for k in effects:
            assert r[k] == pytest.approx(w[k], nan_ok=True)
        if r["failures"] and r["count"]:
            rate = r["failures"] / (r["failures"] + r["count"])
            assert r["score"] == pytest.approx(w["score"] - rate)
    # ... whereas reading a failure as "no change" would move them.
    as_zero = table_with([o if o[3] is not None else [*o[:3], [0.0, 0.0]] for o in obs])
    assert any(
        not np.isclose(r[k], z[k], equal_nan=True)
        for r, z in zip(rows, as_zero, strict=True)
        for k in effects
    )


def test_an_option_that_always_fails_is_avoided() -> None:
    engine = pertnas(TRADE, 9)
    told = drive(engine, 80, result=flaky_trade)
    tries = sum(1 for p in told if p.arch[0] == 0)
    assert 1 <= tries <= 6  # uniform sampling would try it about 20 times


def test_children_of_a_failed_parent_record_nothing() -> None:
    engine = pertnas(TRADE, 10)
    asked = {p.id: p for p in (engine.ask() for _ in range(14))}  # seeds, then expansions
    child, other = [p for p in asked.values() if p.meta["parent"] is not None][:2]
    assert child.meta["parent"] != other.meta["parent"]
    engine.tell(child, trade(child.arch))
    engine.tell_failure(asked[child.meta["parent"]], "out of memory")
    assert engine.observations == []  # nothing to compare with: neither an effect nor a failure
    assert all(r["count"] == 0 and r["failures"] == 0 for r in engine.motif_table())
    # Control: the child of a successful parent records its effect.
    engine.tell(other, trade(other.arch))
    engine.tell(asked[other.meta["parent"]], trade(asked[other.meta["parent"]].arch))
    assert len(engine.observations) == 1
    assert sum(r["count"] for r in engine.motif_table()) == 2


# ====================================================================== asynchrony
def test_many_proposals_in_flight_and_results_told_out_of_order() -> None:
    engine = pertnas(TRADE, 11)
    asked = [engine.ask() for _ in range(20)]  # no generation barrier: no result needed yet
    assert all(p is not None for p in asked)
    assert len({p.arch for p in asked}) == 20
    children = [p for p in asked if p.meta["parent"] is not None]
    assert len(children) >= 8 and {p.meta["phase"] for p in children} == {"expand"}
    assert len(engine.pending) == 20
    # Children first (newest first), then the parents: each effect is recorded once both are in.
    order = sorted(asked, key=lambda p: (p.meta["parent"] is None, -p.id))
    for p in order:
        engine.tell(p, trade(p.arch))
    assert len(engine.observations) == len(children)
    values = {p.id: TRADE.vector(trade(p.arch)) for p in asked}
    expected = sorted(
        (
            p.meta["decision_index"],
            p.meta["old_index"],
            p.meta["new_index"],
            list(values[p.id] - values[p.meta["parent"]]),
        )
        for p in children
    )
    got = sorted((d, a, b, list(e)) for d, a, b, e in engine.observations)
    assert got == expected


def test_a_straggler_does_not_block_the_search() -> None:
    engine = pertnas(AGREE, 12)
    straggler = engine.ask()
    told = run(engine, 60, agree)
    assert straggler.id in engine.pending and straggler not in told
    assert BEST in {p.arch for p in told}
    engine.tell(straggler, agree(straggler.arch))  # late results are still taken
    assert not engine.pending
    assert engine.history[-1].proposal.id == straggler.id


def test_extreme_turns_perturb_the_best_member_of_each_objective_in_turn() -> None:
    """With 8 in flight, each extreme proposal is a child of its objective's best result."""
    engine = pertnas(TRADE, 4, extreme_share=0.5)
    order = np.random.default_rng(0)
    told: list = []
    turns = []
    while len(told) < 120:
        batch = [engine.ask() for _ in range(8)]
        for p in batch:
            if p.meta.get("source") == "extreme":
                points = np.array([TRADE.vector(trade(q.arch)) for q in told])
                parent = next(q for q in told if q.id == p.meta["parent"])
                best = points.min(axis=0)
                turns.append(tuple(TRADE.vector(trade(parent.arch)) == best))
        for p in order.permutation(len(batch)):
            engine.tell(batch[p], trade(batch[p].arch))
            told.append(batch[p])
    # the objectives take turns: accuracy's best, then the fewest params, ...
    assert len(turns) >= 10
    assert all(t[i % 2] for i, t in enumerate(turns))
    off = pertnas(TRADE, 4, extreme_share=0.0)
    assert "extreme" not in {p.meta.get("source") for p in run(off, 120, trade, in_flight=8)}


# ====================================================================== proposals, narrowing
def test_perturbations_are_one_edit_children_with_consistent_metadata() -> None:
    engine = pertnas(TRADE, 13, prune_min_count=4)
    told = drive(engine, 100, in_flight=3, result=flaky_trade)
    archs = {p.id: p.arch for p in told} | {p.id: p.arch for p in engine.pending.values()}
    phases = set()
    for p in told:
        phases.add(p.meta["phase"])
        if p.meta["parent"] is None:
            assert p.meta["phase"] in ("seed", "model") and p.meta["generation"] == 0
            assert p.meta["source"] in {"design", "balanced", "motifs", "random", "model"}
            assert (p.meta["phase"] == "model") == (p.meta["source"] == "model")
            continue
        parent = archs[p.meta["parent"]]
        k, a, b = p.meta["decision_index"], p.meta["old_index"], p.meta["new_index"]
        assert [i for i in range(D) if parent[i] != p.arch[i]] == [k]
        assert (parent[k], p.arch[k]) == (a, b)
        assert p.meta["decision"] == f"d{k}"
        assert (p.meta["old_option"], p.meta["new_option"]) == (f"op{a}", f"op{b}")
        assert p.meta["parent_arch"] == SPACE.encode(parent)
        parent_meta = next(q.meta for q in told if q.id == p.meta["parent"])
        assert p.meta["generation"] == parent_meta["generation"] + 1
    assert {"seed", "expand", "coarse", "local", "model"} <= phases
    assert len({p.arch for p in told}) == len(told)  # never proposes an architecture twice


def test_dominated_options_are_pruned_and_never_proposed_again() -> None:
    engine = pertnas(TRADE, 14, prune_min_count=4)
    told = []
    pruned_at = None
    while (p := engine.ask()) is not None:
        if pruned_at is None and engine.space.is_restricted:
            pruned_at = len(told)
        assert engine.space.contains(p.arch)
        engine.tell(p, trade(p.arch))
        told.append(p)
        assert len(told) < 300
    assert pruned_at is not None and pruned_at < 100
    # Exactly the dominated roles went; the engine stopped once the narrowed space was used up.
    kept = [{ROLE[k][o] for o in allowed} for k, allowed in enumerate(engine.space.allowed)]
    assert kept == [{A, B}] * D
    assert not engine.pending and set(engine.space) <= {p.arch for p in told}
    for r in engine.motif_table():
        assert r["kept"] == (role(r) in (A, B))
    # The pertnas default (prune_min_count=30) has not narrowed anything by then.
    patient = pertnas(TRADE, 14)
    run(patient, len(told), trade)
    assert not patient.space.is_restricted


# ====================================================================== parameters
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"coarse_keep": 2, "fine_keep": 3}, r"fine_keep \(3\) must not exceed coarse_keep \(2\)"),
        ({"population_size": 0}, "population_size must be a positive integer"),
        ({"population_size": 2.5}, "population_size must be a positive integer"),
        ({"coarse_keep": True}, "coarse_keep must be a positive integer"),
        ({"perturbations_per_parent": 0}, "perturbations_per_parent must be None or an integer"),
        ({"coarse_steps": -1}, "coarse_steps must be None or an integer >= 0"),
        ({"local_fraction": 1.5}, "local_fraction must be between 0 and 1"),
        ({"extreme_share": -0.1}, "extreme_share must be between 0 and 1"),
        ({"exploration": -0.1}, "exploration must be >= 0"),
        ({"parent_discount": float("nan")}, "parent_discount must be >= 0"),
        ({"effect_clip": 0.0}, "effect_clip must be > 0"),
        ({"prune_min_count": 0}, "prune_min_count must be a positive integer"),
        ({"prune_margin": -1.0}, "prune_margin must be >= 0"),
        ({"initial_design": "grid"}, "initial_design must be one of"),
    ],
)
def test_parameters_are_validated(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pertnas(TRADE, **params)


def test_parameters_shape_the_search() -> None:
    engine = pertnas(TRADE, 15, population_size=2, perturbations_per_parent=2, local_fraction=0.0)
    told = run(engine, 30, trade)
    assert len(engine.lineages) == 2
    assert {p.meta["lineage"] for p in told if p.meta["phase"] not in ("seed", "model")} <= {0, 1}
    assert "local" not in {p.meta["phase"] for p in told}
    first_round = [p for p in told if p.meta["phase"] == "expand" and p.meta["round"] == 0]
    assert len(first_round) == 2 * 2  # two per lineage
    random_design = pertnas(TRADE, 15, initial_design="random")
    assert random_design.ask().meta["source"] != "design"


def test_initial_design_generalises_the_single_operation_cells():
    from paretune.search_algos.perturbation import design_cells
    from paretune.spaces import NB201Space, make_space
    from paretune.spaces.darts import DARTS_OPS

    nb201 = NB201Space()
    assert design_cells(nb201) == [(i,) * 6 for i in range(5)]
    darts = make_space("darts")
    cells = design_cells(darts)
    assert len(cells) == 8
    for op, arch in zip(DARTS_OPS, cells, strict=True):
        g = darts.genotype(arch)
        assert {o for o, _ in g.normal + g.reduce} == {op}
    mobilenet = make_space("mobilenet")
    small, middle, large = (mobilenet.to_params(a) for a in design_cells(mobilenet))
    assert {small[d.name] for d in mobilenet.decisions if d.name.endswith("depth")} == {"2"}
    assert {small[n] for n in small if n.endswith("kernel")} == {"3"}
    assert {small[n] for n in small if n.endswith("expand")} == {"3"}
    assert {large[n] for n in large if n.endswith("kernel")} == {"7"}
    assert {large[n] for n in large if n.endswith("expand") or n.endswith("depth")} == {"6", "4"}
    assert {middle[n] for n in middle if n.endswith("kernel")} == {"5"}
    choices = make_space("choices", decisions={"depth": [2, 3, 4], "width": [8, 16]})
    assert [choices.encode(a) for a in design_cells(choices)] == [
        "depth=2,width=8",
        "depth=3,width=16",
        "depth=4,width=16",
    ]
    # restricted: only the options every edge still allows
    narrow = nb201.restrict({"e0_1": ["none", "nor_conv_3x3"]})
    assert design_cells(narrow) == [(0,) * 6, (3,) * 6]


def test_pertnas_starts_from_the_design_on_darts():
    from paretune.search_algos.perturbation import design_cells
    from paretune.spaces import make_space

    darts = make_space("darts")
    eng = PerturbationEvolution(darts, TRADE, seed=0)
    first = [eng.ask() for _ in range(8)]
    assert {p.arch for p in first} == set(design_cells(darts))
    assert all(p.meta["source"] == "design" for p in first)


def test_motif_model_and_narrowing_on_decisions_of_different_sizes():
    """2 to 9 options: the motif table covers every option, and narrowing removes an option
    that is worse on both objectives than another of its decision, and only such options."""
    sizes = [2, 9, 3, 5, 4, 7, 2, 6, 8]
    space = SearchSpace(
        [Decision(f"d{k}", tuple(f"o{i}" for i in range(n))) for k, n in enumerate(sizes)],
        name="mixed",
    )

    # option i of decision k: accuracy rises and cost falls with i for even i; odd i are
    # dominated by the option below them (less accuracy and more cost).
    def evaluate(arch):
        acc = sum(i if i % 2 == 0 else i - 1.5 for i in arch)
        cost = sum(-i if i % 2 == 0 else -(i - 1) + 1.0 for i in arch)
        return {"accuracy": float(acc), "params": float(cost)}

    engine = PerturbationEvolution(space, TRADE, seed=0, prune_min_count=8)
    for _ in range(500):
        p = engine.ask()
        if p is None:
            break
        engine.tell(p, evaluate(p.arch))
    rows = engine.motif_table()
    assert len(rows) == sum(sizes)
    assert [r["option"] for r in rows if r["decision"] == "d1"] == [f"o{i}" for i in range(9)]
    removed = [
        (k, o) for k, n in enumerate(sizes) for o in range(n) if o not in engine.space.allowed[k]
    ]
    assert removed  # something was narrowed
    # every option but the largest even one is dominated; that one is never removed
    for k, n in enumerate(sizes):
        best = n - 1 if (n - 1) % 2 == 0 else n - 2
        assert best in engine.space.allowed[k], (k, engine.space.allowed[k])
    assert engine.space.is_restricted and all(len(a) >= 1 for a in engine.space.allowed)
