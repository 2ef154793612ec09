"""PertNAS's supernet mode on Ray: settings checked up front, every training and valuation a
Tune trial with checkpoints in the experiment's storage, the valuation records in MLflow, the
lineages' genotypes retrained as ordinary trials, a failed phase resumed without redoing jobs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from paretune.platform.config import ConfigError, config_from_dict
from paretune.platform.pertnas_supernet import make_phase
from tests.platform.cli import ROOT, run_paretune, tail

FAULTS = str(Path(__file__).with_name("phase_faults.py"))
CONF = ROOT / "conf" / "pertnas_supernet_digits.yaml"


def _config(params=None, **over):
    base = {
        "name": "t",
        "search": {"algorithm": "pertnas", "mode": "supernet", "params": params or {}},
        "evaluator": {"kind": "train"},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "params", "direction": "min"},
        ],
    }
    base.update(over)
    return config_from_dict(base)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (lambda: _config({"f_expand": -3}), "search.params.f_expand = -3: must be an integer"),
        (lambda: _config({"popsize": 3}), "search.params.popsize = 3: unknown"),
        (lambda: _config({"n_iter": 0}), "search.params.n_iter = 0: must be an integer >= 1"),
        (lambda: _config({"lineages": 0}), "search.params.lineages = 0: must be an integer >= 1"),
        (
            lambda: _config(evaluator={"kind": "table"}),
            "evaluator.kind = 'table': pertnas's supernet mode",
        ),
        (
            lambda: _config(space={"name": "mobilenet"}),
            "space.kind = 'mobilenet': pertnas's supernet mode has search networks for nb201",
        ),
        (
            lambda: _config(objectives=[{"name": "params", "direction": "min"}]),
            "values options by the network's 'accuracy'",
        ),
    ],
)
def test_bad_settings_are_one_clear_line(config, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_phase(config())
    assert "\n" not in str(info.value)


def test_placeholder_searcher_and_options_of_a_restricted_space():
    from paretune.platform.prepare import make_searcher, prepare

    cfg = _config(space={"name": "nb201", "restrict": {"e0_1": ["none", "nor_conv_3x3"]}})
    prepared = prepare(cfg)
    assert make_searcher(prepared).engine.archs == []
    opts = make_phase(cfg).edge_options(prepared)
    assert opts[0] == [3] and opts[1] == [1, 2, 3, 4]


def _small_conf(tmp_path):
    """The shipped config on a space where 2 edges have 2 options, two expansion iterations
    (26 jobs)."""
    conf = yaml.safe_load(CONF.read_text())
    conf["space"]["restrict"] = {
        "e0_1": ["nor_conv_1x1", "nor_conv_3x3"],
        "e0_2": ["nor_conv_3x3"],
        "e1_2": ["nor_conv_3x3"],
        "e0_3": ["skip_connect"],
        "e1_3": ["nor_conv_3x3"],
        "e2_3": ["skip_connect", "nor_conv_3x3"],
    }
    conf["search"]["num_samples"] = 2
    conf["search"]["params"].update(population=1, n_iter=2, epochs=1, lineages=2, batch_size=256)
    conf["evaluator"].update(epochs=1, channels=4)
    conf["storage"] = {"path": str(tmp_path / "runs")}
    conf["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.mark.slow
def test_runs_end_to_end_and_resumes_a_failed_job(tmp_path):
    conf = _small_conf(tmp_path)
    # tests/platform/phase_faults.py: the job L0-coarse fails once
    failed = run_paretune(
        "run",
        str(conf),
        "failure.max_failures=0",
        cwd=tmp_path,
        timeout=1800,
        driver=[FAULTS, "pertnas-job", "L0-coarse"],
    )
    assert failed.returncode != 0
    assert "failed 1 times" in failed.stderr, tail(failed)
    (exp,) = (tmp_path / "runs").iterdir()
    root = exp / "phases" / "pertnas_supernet"
    before = {p.name: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")}
    assert "expand-m0-e0-k2.json" in before and "L0-coarse.json" not in before
    assert "expand-i1-m0-e5-k3.json" in before  # the second iteration's valuations
    done = run_paretune("resume", str(exp), cwd=tmp_path, timeout=1800)
    assert done.returncode == 0, tail(done)
    after = {p.name: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")}
    assert all(after[k] == v for k, v in before.items())  # finished jobs were not redone
    # 2 iterations x 6 expansion jobs, per lineage: coarse + 2 edges x (2 valuations + retrain)
    assert len(after) == 2 * 6 + 2 * 7
    v = json.loads((root / "results" / "expand-m0-e5-k3.json").read_text())
    assert v["steps"] == 10 and set(v["delta"]) == {"accuracy", "params"}
    assert v["delta"]["params"] < 0  # removing nor_conv_3x3 removes weights
    hand = json.loads((root / "handover.json").read_text())
    assert hand["n_iter"] == 2
    assert 1 <= len(hand["archs"]) <= 2
    assert all(a[1:5] == [3, 3, 1, 3] for a in hand["archs"])  # the restricted edges
    with sqlite3.connect(tmp_path / "m.db") as db:
        params = dict(
            db.execute(
                "select p.key, p.value from params p join runs r on p.run_uuid = r.run_uuid "
                "where r.name = 'pertnas_supernet:expand-m0-e5-k3'"
            ).fetchall()
        )
        keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert params["edge"] == "2->3" and params["masked_option"] == "nor_conv_3x3"
    assert params["F"] == "10"
    assert {"delta_accuracy", "delta_params", "accuracy"} <= keys
    assert f"{len(hand['archs'])} trials, 0 failed" in done.stdout, done.stdout[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    (parent,) = [
        r
        for r in client.search_runs(
            [client.get_experiment_by_name(exp.name.rsplit("-", 2)[0]).experiment_id]
        )
        if "mlflow.parentRunId" not in r.data.tags
    ]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "pertnas_supernet")}
    assert "pertnas_supernet/valuation_expand.csv" in names
    assert "pertnas_supernet/valuation_expand_accuracy.png" in names
    assert "pertnas_supernet/valuation_lineage0_fine.csv" in names
    assert "pertnas_supernet/valuation_expand_iter1.csv" in names  # each iteration's matrix
    assert parent.data.params["pertnas_supernet.n_iter"] == "2"


@pytest.mark.slow
def test_darts_config_runs_to_its_topology_stage(tmp_path):
    """conf/pertnas_supernet_darts_digits.yaml through the entry point, with two parameter-free
    operations per edge and one lineage so that its jobs stay quick: expansion, coarse, fine and
    topology stages run and the genotype is retrained as a trial."""
    conf = yaml.safe_load((ROOT / "conf" / "pertnas_supernet_darts_digits.yaml").read_text())
    conf["space"]["restrict"] = {
        k: ["skip_connect", "max_pool_3x3"] for k in conf["space"]["restrict"]
    }
    conf["search"]["num_samples"] = 1
    conf["search"]["params"].update(lineages=1, f_expand=2, f_fine=2, f_topology=2)
    conf["evaluator"]["epochs"] = 1
    conf["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "darts.yaml"
    path.write_text(yaml.safe_dump(conf))
    done = run_paretune("run", str(path), cwd=tmp_path, timeout=1800)
    assert done.returncode == 0, tail(done)
    assert "1 trials, 0 failed" in done.stdout, done.stdout[-2000:]
    (exp,) = (tmp_path / "runs").iterdir()
    root = exp / "phases" / "pertnas_supernet"
    names = {p.stem for p in (root / "results").glob("*.json")}
    assert sum("-top" in n for n in names) >= 9, sorted(names)  # nodes 3, 4, 5: 3+4+5 edges valued
    (arch,) = json.loads((root / "handover.json").read_text())["archs"]
    assert len(arch) == 22  # a whole DARTS genotype: 2 inputs and 2 operations per node
