"""The latency predictor off NB201: DARTS cell graphs, one-hot encodings of the other spaces,
files, measured training pairs, and the predictor and screening in configs of any space."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from paretune.objectives.predictor import (
    LatencyPredictor,
    PredictorFunction,
    make_encoding,
    measured_pairs,
    trials_csv_pairs,
)
from paretune.spaces import ChoicesSpace, DartsSpace, MobileNetSpace, NB201Space, make_space
from paretune.spaces.base import Decision, SearchSpace
from paretune.spaces.darts import DARTS_V2

SMALL = {"hidden": 32, "layers": 3, "epochs": 60, "ensemble": 1, "batch_size": 32}
DARTS = DartsSpace()
MOBILENET = MobileNetSpace()
# A made-up but structured cost per DARTS operation (ms): what the predictor must learn.
OP_COST = {
    "none": 0.0,
    "max_pool_3x3": 0.5,
    "avg_pool_3x3": 0.6,
    "skip_connect": 0.1,
    "sep_conv_3x3": 2.0,
    "sep_conv_5x5": 3.0,
    "dil_conv_3x3": 1.2,
    "dil_conv_5x5": 1.8,
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def darts_cost(arch) -> float:
    cells = DARTS.cell_graphs(arch)
    normal = sum(OP_COST[op] for _, _, op in cells["normal"])
    reduce = sum(OP_COST[op] for _, _, op in cells["reduce"])
    return 1.0 + 3 * normal + 0.5 * reduce  # three normal cells per reduction cell


def test_darts_cells_become_one_graph():
    enc = make_encoding(DARTS)
    assert enc.kind == "cell-graph" and enc.cells == ["normal", "reduce"]
    arch = DARTS.decode(DARTS_V2)
    adj, feats = enc.graph(arch)
    # per cell: 6 states, 8 operation nodes, a cell output; then the network's output
    assert adj.shape == (31, 31) and feats.shape == (31, enc.num_features)
    types = [enc.node_types[i] for i in feats[:, : len(enc.node_types)].argmax(axis=1)]
    assert types[:6] == ["input", "input", "state", "state", "state", "state"]
    assert types[-1] == "output" and types.count("cell_out") == 2
    assert types.count("sep_conv_3x3") == 5 and types.count("max_pool_3x3") == 5
    # DARTS V2's normal node 2 takes sep_conv_3x3 on states 0 and 1: 0 -> op -> 2
    first_op = 6
    assert adj[0, first_op] == 1 and adj[first_op, 2] == 1
    assert adj[2:6, 14].tolist() == [1, 1, 1, 1]  # states 2..5 concatenated into the cell output
    assert adj[14, 30] == 1 and adj[29, 30] == 1  # both cells reach the network's output
    assert feats[:, -2:].min() == 1  # every node on a path from an input to the output

    # A normal cell whose node 2 takes `none` twice: its arcs go, the node keeps its type
    params = DARTS.to_params(arch)
    params.update({"normal_2_op1": "none", "normal_2_op2": "none"})
    cut = DARTS.from_params(params)
    adj2, feats2 = enc.graph(cut)
    assert adj2[0, first_op] == 0 and adj2[first_op, 2] == 0
    assert feats2[first_op, enc.node_types.index("none")] == 1
    assert feats2[first_op, -2] == 0 and feats2[first_op, -1] == 0  # off every path


def test_the_graph_network_learns_darts_costs_and_beats_one_hot():
    rng = np.random.default_rng(0)
    archs = [DARTS.sample(rng) for _ in range(350)]
    y = np.array([darts_cost(a) for a in archs])
    train, test = slice(0, 200), slice(200, 350)
    settings = {**SMALL, "epochs": 40}
    graph = LatencyPredictor(settings, space=DARTS).fit(archs[train], y[train])
    flat = LatencyPredictor(settings, space=DARTS, encoding="one-hot").fit(archs[train], y[train])
    rho_graph = spearmanr(graph.predict(archs[test]), y[test]).statistic
    rho_flat = spearmanr(flat.predict(archs[test]), y[test]).statistic
    assert graph.encoding.kind == "cell-graph" and flat.encoding.kind == "one-hot"
    assert rho_graph > 0.9, rho_graph
    assert rho_graph > rho_flat + 0.05  # the graph sees which operation sits where (0.96 vs 0.79)


def test_one_hot_encoding_of_spaces_without_cells():
    enc = make_encoding(MOBILENET)
    assert enc.kind == "one-hot" and not enc.is_graph
    assert enc.num_features == sum(len(d.options) for d in MOBILENET.decisions)
    base = MOBILENET.mobilenet_v2()
    twin = list(base)
    # s1 has depth 2 in MobileNetV2: its third and fourth block slots are unused
    twin[MOBILENET.decision_names().index("s1_b3_kernel")] = 2
    assert MOBILENET.canonical(twin) == MOBILENET.canonical(base)
    (x,) = enc.tensors([base, tuple(twin)])
    assert torch.equal(x[0], x[1]) and x[0].sum() == MOBILENET.num_decisions
    for kind in ("macro", "choices"):
        space = (
            make_space(kind) if kind != "choices" else ChoicesSpace({"w": [8, 16], "d": [1, 2, 3]})
        )
        assert make_encoding(space).kind == "one-hot"
    assert make_encoding(NB201Space()).kind == "nb201"
    with pytest.raises(ValueError, match=r"encoding 'graph' is unknown \(allowed: \['auto'"):
        make_encoding(DARTS, "graph")
    with pytest.raises(ValueError, match="space 'mobilenet' has no cells"):
        make_encoding(MOBILENET, "cell-graph")


def test_files_round_trip_and_refuse_another_space(tmp_path):
    rng = np.random.default_rng(1)
    for space in (DARTS, MOBILENET, ChoicesSpace({"w": [8, 16, 32], "k": [3, 5]})):
        archs = [space.sample(rng) for _ in range(30)]
        y = rng.uniform(1.0, 5.0, len(archs))
        pred = LatencyPredictor({**SMALL, "epochs": 5}, space=space).fit(archs, y, devices=["cpu"])
        folder = pred.save(tmp_path / space.name)
        meta = json.loads((folder / "predictor.json").read_text())
        assert meta["format"] == "paretune-latency-predictor/2"
        assert meta["encoding"]["space"] == space.name
        loaded = LatencyPredictor.load(folder)  # built in by name, or one-hot from the file
        np.testing.assert_allclose(loaded.predict(archs), pred.predict(archs), rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"trained on space 'darts' with 22 decisions .* not space"
    ):
        LatencyPredictor.load(tmp_path / "darts", space=MOBILENET)
    with pytest.raises(ValueError, match="not an architecture of space 'darts'"):
        LatencyPredictor.load(tmp_path / "darts").predict([(0, 1, 2)])


class _Cells(SearchSpace):
    """A user's cell space (not built in): one cell, a chain of two chosen operations."""

    def __init__(self) -> None:
        ops = ("conv", "pool", "none")
        super().__init__([Decision("e01", ops), Decision("e12", ops)], name="two_edges")

    def cell_graphs(self, arch):
        first, second = (d.options[i] for d, i in zip(self.decisions, arch, strict=True))
        return {"cell": [(0, 1, first), (1, 2, second)]}


def test_a_users_cell_space_needs_its_space_to_load(tmp_path):
    space = _Cells()
    archs = list(space)
    y = [1.0 + 2 * a[0] + a[1] for a in archs]
    pred = LatencyPredictor({**SMALL, "epochs": 5}, space=space).fit(archs, y)
    assert pred.encoding.kind == "cell-graph"
    folder = pred.save(tmp_path / "p")
    loaded = LatencyPredictor.load(folder)  # nets load; the encoding waits for the space
    with pytest.raises(ValueError, match="space 'two_edges', which is not built in: hand it"):
        loaded.predict(archs)
    np.testing.assert_allclose(loaded.use_space(space).predict(archs), pred.predict(archs))
    fn = PredictorFunction(folder, space=space)
    assert fn(archs[0]) == pytest.approx(float(pred.predict(archs[:1])[0]))
    assert pickle.loads(pickle.dumps(fn))(archs[0]) == pytest.approx(fn(archs[0]))


def test_a_first_format_nb201_predictor_still_loads(tmp_path):
    space = NB201Space()
    archs = list(space)[:40]
    y = np.linspace(1.0, 3.0, len(archs))
    pred = LatencyPredictor({**SMALL, "epochs": 5}).fit(archs, y)
    folder = pred.save(tmp_path / "v1")
    meta = json.loads((folder / "predictor.json").read_text())
    old = {k: v for k, v in meta.items() if k != "encoding"}
    old.update(format="paretune-latency-predictor/1", node_types=meta["encoding"]["node_types"])
    (folder / "predictor.json").write_text(json.dumps(old))
    np.testing.assert_allclose(LatencyPredictor.load(folder).predict(archs), pred.predict(archs))


def test_measured_pairs_time_real_networks():
    space = MOBILENET
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(3)]
    build = {"width_mult": 0.25, "stem_stride": 1, "num_classes": 10, "in_channels": 1}
    seen = []
    pairs = measured_pairs(
        space, archs, (1, 1, 8, 8), build=build, warmup=1, repeats=2, rounds=2,
        progress=lambda i, n: seen.append((i, n)),
    )  # fmt: skip
    assert pairs.devices == ["cpu"] and sorted(pairs.archs) == sorted(archs)
    assert (pairs.latencies["cpu"] > 0).all() and np.isfinite(pairs.latencies["cpu"]).all()
    assert seen[-1] == (6, 6) and pairs.origin.startswith("measured:mobilenet:cpu")
    with pytest.raises(ValueError, match="space 'choices' has no network builder"):
        measured_pairs(ChoicesSpace({"w": [1, 2]}), [(0,)], (1, 1))
    with pytest.raises(ValueError, match="rounds=0 must be >= 1"):
        measured_pairs(space, archs, (1, 1, 8, 8), build=build, rounds=0)
    # the thread's CPU time: what the network costs the processor, busy machine or not
    cpu = measured_pairs(space, archs, (1, 1, 8, 8), build=build, repeats=2, clock="cpu")
    assert (cpu.latencies["cpu"] > 0).all() and ":cpu:cpu:" in cpu.origin
    with pytest.raises(ValueError, match=r"clock='cpu' times one CPU thread .* threads=1\)"):
        measured_pairs(space, archs, (1, 1, 8, 8), build=build, threads=2, clock="cpu")


def test_trials_csv_of_a_darts_experiment(tmp_path):
    from paretune.objectives.base import ObjectiveSet
    from paretune.platform.report import TrialRow, build_report

    rng = np.random.default_rng(3)
    archs = [DARTS.sample(rng) for _ in range(3)]
    rows = [
        TrialRow(f"t{i}", i, DARTS.encode(a), {"accuracy": 50.0 + i, "latency": 2.0 + i}, True,
                 extras={"source/latency": "measured"})
        for i, a in enumerate(archs)
    ]  # fmt: skip
    build_report(rows, ObjectiveSet.of(("accuracy", "max"), ("latency", "min"))).write(
        tmp_path / "report"
    )
    got = trials_csv_pairs(tmp_path, space=DARTS)
    assert sorted(got.archs) == sorted(archs) and sorted(got.latencies["latency"]) == [2, 3, 4]
    nb201 = trials_csv_pairs(tmp_path)  # the default space reads none of them
    assert len(nb201) == 0 and nb201.skipped == {"not an architecture of nb201": 3}


# ---------------------------------------------------------------------- configs
def _predictor_for(space, tmp_path, build=None):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(24)]
    y = rng.uniform(1.0, 4.0, len(archs))
    pred = LatencyPredictor({**SMALL, "epochs": 5}, space=space).fit(archs, y, devices=["cpu"])
    return pred.save(tmp_path / f"pred-{space.name}")


@pytest.mark.parametrize("kind", ["darts", "mobilenet"])
def test_configs_with_predictor_and_screening_on_other_spaces(kind, tmp_path):
    from paretune.platform.config import ConfigError, config_from_dict
    from paretune.platform.prepare import make_searcher, prepare
    from paretune.search_algos.screening import ScreenedEngine

    space = make_space(kind)
    folder = _predictor_for(space, tmp_path)
    data = {
        "name": "p",
        "space": {"kind": kind},
        "evaluator": {"kind": "train", "dataset": "digits"},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "predicted_latency", "direction": "min", "limit": 2.5},
        ],
        "predictor": {"path": str(folder)},
        "screening": {"enabled": True},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"},
    }
    prepared = prepare(config_from_dict(data))
    assert "predicted_latency" in prepared.evaluator.metrics()
    arch = space.sample(np.random.default_rng(5))
    engine = make_searcher(prepared).engine
    while not isinstance(engine, ScreenedEngine):
        engine = engine.inner
    assert engine.predict(arch) == pytest.approx(prepared.evaluator.predict(arch))
    other = "mobilenet" if kind == "darts" else "darts"
    wrong = _predictor_for(make_space(other), tmp_path)
    with pytest.raises(ConfigError, match=rf"trained on space '{other}' .* not space '{kind}'"):
        prepare(config_from_dict({**data, "predictor": {"path": str(wrong)}}))


@pytest.mark.parametrize("sizes", [[2, 9, 3, 5, 4, 7, 2, 6, 8], [3, 2, 4] * 8])
def test_a_saved_predictor_screens_spaces_of_uneven_and_many_decisions(sizes, tmp_path):
    """Decisions of 2 to 9 options, and 24 decisions: one-hot, saved, loaded from its file
    alone (the space is not built in), screening a search against a latency limit."""
    from paretune.objectives.base import Objective, ObjectiveSet
    from paretune.search_algos import make_engine
    from paretune.search_algos.screening import ScreenedEngine

    decisions = [Decision(f"d{k}", tuple(f"o{i}" for i in range(n))) for k, n in enumerate(sizes)]
    space = SearchSpace(decisions, name="synthetic")
    weights = np.linspace(0.5, 1.5, len(sizes))

    def latency(arch) -> float:
        level = [i / (n - 1) for i, n in zip(arch, sizes, strict=True)]
        return 1.0 + float(np.dot(weights, level))

    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(200)]
    y = np.array([latency(a) for a in archs])
    pred = LatencyPredictor(SMALL, space=space).fit(archs[:150], y[:150], devices=["cpu"])
    assert spearmanr(pred.predict(archs[150:]), y[150:]).statistic > 0.9
    fn = PredictorFunction(pred.save(tmp_path / "p"), "cpu")  # reloaded from the file
    limit = float(np.median(y))
    objectives = ObjectiveSet((Objective("accuracy", "max"), Objective("lat", "min", limit=limit)))
    engine = ScreenedEngine(make_engine("random", space, objectives, seed=0), fn, margin=0.05)
    handed = [engine.ask() for _ in range(10)]
    assert engine.num_screened > 0
    assert np.mean([latency(p.arch) <= limit * 1.2 for p in handed]) >= 0.8
