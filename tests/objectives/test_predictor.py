"""The GCN latency predictor: graph encoding, training, files, MLflow artifacts, the objective."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from paretune.objectives.base import Evaluation, MetricInfo, ObjectiveSet, check_objectives
from paretune.objectives.predictor import (
    LatencyPredictor,
    PredictedLatency,
    PredictorFunction,
    PredictorSettings,
    attach_predictor,
    load_predictor,
    log_predictor,
    mlflow_pairs,
    nb201_graph,
    table_pairs,
    trials_csv_pairs,
)
from paretune.objectives.table import TableEvaluator
from paretune.spaces.nb201 import NB201Space

SPACE = NB201Space()
SMALL = {"hidden": 32, "layers": 3, "epochs": 40, "ensemble": 1, "batch_size": 32}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_graph_of_a_cell():
    # 0->1 conv3x3, 0->2 none, 1->2 skip, 0->3 none, 1->3 none, 2->3 avg_pool
    arch = SPACE.decode("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|")
    adj, feats = nb201_graph(arch)
    # nodes: 0 input, 1..6 the edges in standard order, 7 output
    arcs = {(int(u), int(v)) for u, v in zip(*np.nonzero(adj), strict=True)}
    assert arcs == {(0, 1), (1, 3), (3, 6), (6, 7)}  # input->conv->skip->pool->output
    types = feats[:, :7].argmax(axis=1).tolist()
    assert types == [0, 5, 2, 3, 2, 2, 6, 1]  # input, conv3x3, none, skip, none, none, pool, output
    assert feats[:, 7].tolist() == [1, 1, 0, 1, 0, 0, 1, 1]  # reachable from the input
    assert feats[:, 8].tolist() == [1, 1, 0, 1, 0, 0, 1, 1]  # reaches the output
    # a disconnected cell: the output is reachable from nothing
    _, cut = nb201_graph(SPACE.decode("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    assert cut[7, 7] == 0 and cut[0, 8] == 0
    # none keeps its arcs when not pruned
    full, _ = nb201_graph(arch, prune_none=False)
    assert full[0, 2] == 1 and full.sum() > adj.sum()
    with pytest.raises(ValueError, match="not an NB201 architecture"):
        nb201_graph((0, 1, 2))


@pytest.fixture(scope="module")
def pairs(nb201_path):
    return table_pairs(nb201_path, devices=["fpga", "pixel3"])


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    train, test = pairs.subset(order[:150]), pairs.subset(order[150:650])
    predictor = LatencyPredictor(SMALL).fit(train.archs, train.latencies, source="table")
    folder = predictor.save(tmp_path_factory.mktemp("predictor") / "p")
    torch.set_num_threads(before)
    return predictor, test, folder


def test_table_pairs(pairs, nb201_path):
    assert len(pairs) == 15625 and pairs.devices == ["fpga", "pixel3"]
    table = TableEvaluator(nb201_path)
    arch = pairs.archs[123]
    assert (
        pairs.latencies["fpga"][123]
        == table.evaluate(arch).values["latency"] * 0
        + (TableEvaluator(nb201_path, latency_device="fpga").evaluate(arch).values["latency"])
    )
    some = table_pairs(nb201_path, ["raspi4"], archs=[arch, pairs.archs[7]])
    assert some.archs == [arch, pairs.archs[7]] and some.latencies["raspi4"].shape == (2,)
    with pytest.raises(ValueError, match=r"unknown devices \['tpu'\] \(available: \["):
        table_pairs(nb201_path, ["tpu"])


def test_predictor_learns_latency_from_150_archs(trained):
    predictor, test, _ = trained
    pred = predictor.predict_all(test.archs)
    assert pred.shape == (500, 2) and predictor.devices == ["fpga", "pixel3"]
    fpga = test.latencies["fpga"]
    rho = spearmanr(pred[:, 0], fpga).statistic
    medape = np.median(np.abs(pred[:, 0] - fpga) / fpga)
    assert rho > 0.85 and medape < 0.15
    assert predictor.info["num_pairs"] == 150 and predictor.info["source"] == "table"
    assert predictor.predict_one(test.archs[0], "pixel3") == pytest.approx(pred[0, 1])
    with pytest.raises(ValueError, match=r"name a device, this predictor has \['fpga', 'pixel3'\]"):
        predictor.predict(test.archs)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        predictor.predict(test.archs, "tpu")


def test_fit_checks_its_inputs():
    with pytest.raises(ValueError, match="latencies must be > 0"):
        LatencyPredictor(SMALL).fit([(0,) * 6, (1,) * 6], [1.0, 0.0])
    with pytest.raises(ValueError, match="2 architectures but 3 latencies"):
        LatencyPredictor(SMALL).fit([(0,) * 6, (1,) * 6], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        LatencyPredictor({"depth": 3})
    with pytest.raises(ValueError, match=r"loss='l1' is unknown \(allowed: \['huber', 'mse'\]\)"):
        PredictorSettings(loss="l1")
    with pytest.raises(RuntimeError, match="not fitted"):
        LatencyPredictor().predict([(0,) * 6], "x")


def test_save_and_load_give_the_same_predictions(trained, tmp_path):
    predictor, test, folder = trained
    assert {p.name for p in folder.iterdir()} == {"predictor.pt", "predictor.json"}
    loaded = LatencyPredictor.load(folder)
    np.testing.assert_allclose(loaded.predict_all(test.archs), predictor.predict_all(test.archs))
    assert loaded.settings == predictor.settings and loaded.info == predictor.info
    assert load_predictor(f"file://{folder}").devices == ["fpga", "pixel3"]
    with pytest.raises(FileNotFoundError, match="no latency predictor in"):
        LatencyPredictor.load(tmp_path)
    (tmp_path / "predictor.json").write_text('{"format": "other"}')
    (tmp_path / "predictor.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="format 'other' is not 'paretune-latency-predictor/2'"):
        LatencyPredictor.load(tmp_path)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One real SQLite MLflow store for this module (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_mlflow_artifact_round_trip(trained, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    predictor, test, _ = trained
    uri = mlflow_uri
    client = MlflowClient(uri)
    exp = client.create_experiment("predictors", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    artifact = log_predictor(predictor, run.info.run_id, uri)
    client.set_terminated(run.info.run_id)
    assert artifact == f"runs:/{run.info.run_id}/latency_predictor"
    listed = {f.path for f in client.list_artifacts(run.info.run_id, "latency_predictor")}
    assert listed == {"latency_predictor/predictor.json", "latency_predictor/predictor.pt"}
    assert client.get_run(run.info.run_id).data.tags["latency_predictor.devices"] == "fpga,pixel3"
    loaded = load_predictor(artifact, tracking_uri=uri)
    np.testing.assert_allclose(loaded.predict_all(test.archs), predictor.predict_all(test.archs))
    with pytest.raises(FileNotFoundError, match="cannot download from MLflow"):
        load_predictor("runs:/0123456789abcdef/latency_predictor", tracking_uri=uri)


def test_pairs_from_mlflow_trial_runs(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    client = MlflowClient(uri)
    exp = client.create_experiment("search", artifact_location=str(tmp_path / "a"))
    parent = client.create_run(exp, tags={"paretune.role": "experiment"}).info.run_id
    archs = [SPACE.decode(SPACE.encode(a)) for a in list(SPACE)[100:106]]

    def trial(arch, latency, source="measured", status="FINISHED", tag_arch=True):
        tags = {"mlflow.parentRunId": parent, "source/latency": source}
        if tag_arch:
            tags["arch"] = SPACE.encode(arch)
        rid = client.create_run(exp, tags=tags).info.run_id
        client.log_metric(rid, "latency", latency)
        client.set_terminated(rid, status=status)

    trial(archs[0], 2.0)
    trial(archs[0], 4.0)  # measured twice: the median is kept
    trial(archs[1], 3.0)
    trial(archs[2], 5.0, source="predicted")  # left out: a prediction
    trial(archs[3], 6.0, status="FAILED")  # left out: not finished
    trial(archs[4], 7.0, tag_arch=False)  # left out: no architecture
    trial(archs[5], float("nan"))  # left out: no usable value
    got = mlflow_pairs(uri, "search", parent_run_id=parent)
    assert dict(zip(got.archs, got.latencies["latency"], strict=True)) == {
        archs[0]: 3.0,
        archs[1]: 3.0,
    }
    assert got.skipped == {"source predicted": 1, "no arch tag": 1, "no usable value": 1}
    assert got.origin.startswith("mlflow:")
    same = mlflow_pairs(uri, parent_run_id=parent)  # the experiment from the parent run
    assert same.archs == got.archs
    with pytest.raises(ValueError, match="no MLflow experiment 'nope'"):
        mlflow_pairs(uri, "nope")


def test_pairs_from_an_experiments_trials_csv(tmp_path):
    from paretune.platform.report import TrialRow, build_report

    objectives = ObjectiveSet.of(("accuracy", "max"), ("latency", "min"))
    archs = list(SPACE)[200:204]
    rows = [
        TrialRow("t0", 0, SPACE.encode(archs[0]), {"accuracy": 80, "latency": 1.5}, True,
                 extras={"source/latency": "measured"}),
        TrialRow("t1", 1, SPACE.encode(archs[1]), {"accuracy": 70, "latency": 2.5}, True,
                 extras={"source/latency": "measured"}),
        TrialRow("t2", 2, SPACE.encode(archs[2]), {}, False, error="boom"),
        TrialRow("t3", 3, SPACE.encode(archs[3]), {"accuracy": 75, "latency": 9.0}, True,
                 extras={"source/latency": "estimated"}),
    ]  # fmt: skip
    experiment = tmp_path / "exp"
    build_report(rows, objectives).write(experiment / "report")
    got = trials_csv_pairs(experiment, metric="latency", device="cpu")
    assert got.archs == sorted(archs[:2]) and got.devices == ["cpu"]
    assert sorted(got.latencies["cpu"].tolist()) == [1.5, 2.5]
    assert got.skipped == {"failed trial": 1, "source estimated": 1}
    with pytest.raises(ValueError, match="has no column 'energy'"):
        trials_csv_pairs(experiment / "report" / "trials.csv", metric="energy")
    with pytest.raises(FileNotFoundError, match="no trials.csv"):
        trials_csv_pairs(tmp_path / "missing")


class _EpochEvaluator:
    """A minimal real evaluator that reports twice (to see the wrapper's reports)."""

    def metrics(self):
        return {"accuracy": MetricInfo("%", "max", "measured")}

    def evaluate(self, arch, report=None, **context):
        for epoch in (1, 2):
            if report is not None:
                report({"accuracy": 10.0 * epoch, "epoch": epoch})
        return Evaluation({"accuracy": 20.0}, {"accuracy": "measured"}, {"seen": context})


def test_predicted_latency_is_an_objective(trained, nb201_path):
    predictor, test, folder = trained
    ev = PredictedLatency(TableEvaluator(nb201_path), folder, device="pixel3")
    info = ev.metrics()["predicted_latency"]
    assert (info.unit, info.direction, info.source) == ("ms", "min", "predicted")
    check_objectives(
        ObjectiveSet.of(("accuracy", "max"), ("predicted_latency", "min")), ev.metrics()
    )
    arch = test.archs[3]
    result = ev.evaluate(arch)
    assert result.values["predicted_latency"] == pytest.approx(
        predictor.predict_one(arch, "pixel3")
    )
    assert (
        result.sources["predicted_latency"] == "predicted" and result.sources["latency"] == "table"
    )
    # every intermediate report carries it; the context reaches the inner evaluator
    reports = []
    wrapped = PredictedLatency(_EpochEvaluator(), predictor, device="fpga", metric="lat_hat")
    out = wrapped.evaluate(arch, reports.append, meta={"phase": "x"})
    assert [r["lat_hat"] for r in reports] == [out.values["lat_hat"]] * 2
    assert out.extras["seen"] == {"meta": {"phase": "x"}}
    with pytest.raises(ValueError, match="already has a metric of that name"):
        PredictedLatency(TableEvaluator(nb201_path), folder, device="fpga", metric="latency")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        PredictedLatency(TableEvaluator(nb201_path), folder, device="gpu")


def test_attach_predictor_and_the_screening_function(trained, nb201_path):
    predictor, test, folder = trained
    table = TableEvaluator(nb201_path)
    assert attach_predictor(table, None) is table
    assert attach_predictor(table, {"path": None, "device": None}) is table
    ev = attach_predictor(table, {"path": str(folder), "device": "fpga", "metric": "p_lat"})
    assert isinstance(ev, PredictedLatency) and "p_lat" in ev.metrics()
    with pytest.raises(ValueError, match=r"unknown settings \['devcie'\]"):
        attach_predictor(table, {"path": str(folder), "devcie": "fpga"})
    fn = PredictorFunction(folder, "fpga")
    arch = test.archs[0]
    value = fn(arch)
    assert value == pytest.approx(predictor.predict_one(arch, "fpga"))
    blob = pickle.dumps(fn)
    assert len(blob) < 1000  # the location, not the networks
    again = pickle.loads(blob)
    assert again(arch) == pytest.approx(value)


def test_resolve_predictor_settings_for_trials_in_other_directories(tmp_path, monkeypatch):
    from paretune.objectives.predictor import resolve_predictor_settings

    monkeypatch.chdir(tmp_path)
    assert resolve_predictor_settings(None) is None
    assert resolve_predictor_settings({"path": None, "device": "x"}) is None
    local = resolve_predictor_settings({"path": "preds/p", "device": "fpga"}, "sqlite:///mlflow.db")
    assert local == {
        "path": str(tmp_path / "preds" / "p"),
        "device": "fpga",
        "metric": "predicted_latency",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    remote = resolve_predictor_settings(
        {"path": "runs:/abc/latency_predictor", "tracking_uri": "http://127.0.0.1:5000"}
    )
    assert remote["path"] == "runs:/abc/latency_predictor"
    assert remote["tracking_uri"] == "http://127.0.0.1:5000"
    with pytest.raises(ValueError, match=r"unknown settings \['size'\]"):
        resolve_predictor_settings({"path": "p", "size": 3})
