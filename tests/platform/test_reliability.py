"""Reliability with the real parts: failures, retries, bad input, SIGKILLed drivers, MLflow
outages and GPU placement over several Ray nodes (the session cluster of conftest.py)."""

from __future__ import annotations

import gc
import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from paretune.platform.artifacts import searcher_state_from_dir
from paretune.platform.config import ConfigError, config_from_dict
from paretune.platform.journal import JOURNAL_FILE, TrialJournal
from paretune.platform.launcher import SearchFailed, resume, run
from tests.platform.conftest import free_port
from tests.platform.faults import FAULT_MARKER, Faults

ROOT = Path(__file__).resolve().parents[2]


def tabular(nb201_path, tmp_path, mlflow_uri, **sections) -> dict:
    data = {
        "name": "reliability",
        "seed": 0,
        "evaluator": {"kind": "table", "path": str(nb201_path)},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "latency", "direction": "min"},
        ],
        "search": {"algorithm": "regularized_evolution", "num_samples": 20},
        "resources": {"cpu": 0.5},
        "storage": {"path": str(tmp_path / "runs")},
        "mlflow": {"tracking_uri": mlflow_uri},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def trial_runs(uri: str, exp_id: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs(
        [exp_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )


def searcher_state(experiment_dir: Path) -> dict:
    """The newest searcher snapshot Ray saved (one file per driver session)."""
    return searcher_state_from_dir(experiment_dir)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------------- failing trials
@pytest.mark.slow
def test_failing_trials_are_recorded_with_their_reason(
    ray_session, nb201_path, mlflow_uri, tmp_path
):
    data = tabular(
        nb201_path,
        tmp_path,
        mlflow_uri,
        search={"num_samples": 16},
        resources={"cpu": 0.5, "memory_mb": 900},
    )
    faults = Faults(raise_rate=0.2, nan_rate=0.2, memory_rate=0.2, seed=3)
    result = run(config_from_dict(data), verbose=0, evaluator_wrapper=faults)
    rows = result.report.rows
    assert len(rows) == 16
    failed = [r for r in rows if not r.ok]
    kinds = Counter(
        "raise"
        if "injected failure" in r.error
        else "nan"
        if "not finite" in r.error
        else "oom"
        if "OOM guard" in r.error
        else r.error
        for r in failed
    )
    assert set(kinds) == {"raise", "nan", "oom"}, kinds
    assert 0 < len(failed) < 16  # the search went on

    runs = trial_runs(mlflow_uri, result.mlflow_experiment_id, result.parent_run_id)
    assert len(runs) == 16
    mlflow_failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(mlflow_failed) == len(failed)
    assert all(r.data.tags["status"] == "failed" and r.data.tags["error"] for r in mlflow_failed)
    assert {r.data.tags["trial_id"] for r in mlflow_failed} == {r.trial_id for r in failed}

    # The searcher was told: its history holds each failure as a failure, never as a zero.
    history = searcher_state(result.experiment_dir)["engine"]["history"]
    assert sum(h["values"] is None for h in history) == len(failed)


@pytest.mark.slow
def test_retries_are_honoured(ray_session, nb201_path, mlflow_uri, tmp_path):
    data = tabular(
        nb201_path,
        tmp_path,
        mlflow_uri,
        search={"num_samples": 8},
        failure={"max_failures": 1},
    )
    faults = Faults(raise_rate=0.5, transient=True, seed=5)
    result = run(config_from_dict(data), verbose=0, evaluator_wrapper=faults)
    assert len(result.report.rows) == 8
    assert all(r.ok for r in result.report.rows)  # every transient failure succeeded on retry
    retried = glob.glob(str(result.experiment_dir / "trials" / "*" / FAULT_MARKER))
    assert len(retried) >= 2
    runs = trial_runs(mlflow_uri, result.mlflow_experiment_id, result.parent_run_id)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_search_where_every_trial_fails_ends_with_a_clear_message(
    ray_session, nb201_path, mlflow_uri, tmp_path
):
    data = tabular(nb201_path, tmp_path, mlflow_uri, search={"num_samples": 6})
    with pytest.raises(SearchFailed, match=r"all 6 trials failed \(6 x .*injected failure"):
        run(config_from_dict(data), verbose=0, evaluator_wrapper=Faults(raise_rate=1.0))
    client = MlflowClient(mlflow_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("reliability").experiment_id],
        "tags.`paretune.role` = 'experiment'",
    )
    assert parent.info.status == "FAILED"


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"resources": {"cpu": 64}},
            r"resources = \{cpu: 64.0, gpu: 0.0, memory_mb: None\}: no node of the cluster",
        ),
        ({"resources": {"cpu": 1, "gpu": 3}}, r"no node of the cluster can run one trial"),
        (
            {"objectives": [{"name": "accuracy", "direction": "max", "limit": 99}]},
            r"objectives\[0\]\.limit = 99.*best accuracy in the space: 91\.5",
        ),
        (
            {
                "objectives": [
                    {"name": "accuracy", "direction": "max", "limit": 91},
                    {"name": "latency", "direction": "min", "limit": 2},
                ]
            },
            r"no architecture meets all of them at once",
        ),
        (
            {"mlflow": {"tracking_uri": "http://127.0.0.1:9"}},
            r"mlflow.tracking_uri = 'http://127.0.0.1:9': the tracking server does not answer",
        ),
        (
            {"search": {"params": {"population": 5}}},
            r"search.params.population = 5: not a parameter of search.algorithm "
            r"'regularized_evolution' \(allowed: population_size, sample_size\)",
        ),
        ({"evaluator": {"kind": "table", "energy_device": "toaster"}}, r"toaster.*pi5_onnx"),
    ],
)
def test_bad_input_is_refused_before_any_trial(
    ray_session, nb201_path, mlflow_uri, tmp_path, sections, expected
):
    data = tabular(nb201_path, tmp_path, mlflow_uri, **sections)
    if "evaluator" in sections:
        data["evaluator"]["path"] = str(nb201_path)
    with pytest.raises(ConfigError, match=expected):
        run(config_from_dict(data), verbose=0)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unreachable_ray_address_is_refused_quickly(nb201_path, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tabular(nb201_path, tmp_path, "sqlite:///x.db")))
    proc = subprocess.run(
        [sys.executable, "-m", "paretune", "run", str(cfg), "ray.address=127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 2, proc.stderr
    # Refused by paretune's own reachability check, not after Ray's long connection attempts
    # (subprocess's timeout only guards against a hang).
    assert "ray.address = '127.0.0.1:9': nothing answers there" in proc.stderr


# ---------------------------------------------------------------------- resume
def _start_search(cfg_path: Path, cwd: Path, ray_address: str, delay_s: float) -> subprocess.Popen:
    """``paretune run`` in its own process, every trial taking at least ``delay_s``."""
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "platform" / "run_with_faults.py"
    return subprocess.Popen(
        [sys.executable, str(script), str(cfg_path), json.dumps({"delay_s": delay_s})],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _experiment_dir(tmp_path: Path) -> Path | None:
    dirs = glob.glob(str(tmp_path / "runs" / "*"))
    return Path(dirs[0]) if dirs else None


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "regularized_evolution", "pertnas", "tnd"])
def test_resume_after_the_driver_is_killed(
    ray_cluster, nb201_path, mlflow_uri, tmp_path, algorithm
):
    data = tabular(
        nb201_path,
        tmp_path,
        mlflow_uri,
        search={"algorithm": algorithm, "num_samples": 16, "max_concurrent": 2},
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = _start_search(cfg, tmp_path, ray_cluster.address, delay_s=0.4)

    def journal_size() -> int:
        d = _experiment_dir(tmp_path)
        return len(TrialJournal(d / JOURNAL_FILE).load()) if d else 0

    def snapshot_exists() -> bool:
        d = _experiment_dir(tmp_path)
        return bool(d and glob.glob(str(d / "searcher-state-*")))

    wait_for(
        lambda: journal_size() >= 6 and snapshot_exists(), 180, "6 finished trials and a snapshot"
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    experiment_dir = _experiment_dir(tmp_path)
    before = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    saved = searcher_state(experiment_dir)["engine"]
    assert len(before) < 16

    result = resume(experiment_dir, verbose=0)

    rows = {r.trial_id: r for r in result.report.rows}
    assert len(rows) == 16 and all(r.ok for r in rows.values())
    # Every trial finished before the kill is kept, not re-run: same values, same measurement.
    # That includes trials that finished after Ray's last snapshot (Ray forgets those).
    after = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    lines = (experiment_dir / JOURNAL_FILE).read_text().splitlines()
    assert len(lines) == len(after) == 16  # replayed trials add no second line
    assert set(before) <= set(rows)
    for trial_id in before:
        record = before[trial_id]
        assert rows[trial_id].values == {n: record["result"][n] for n in ("accuracy", "latency")}
        assert after[trial_id]["result"]["evaluated_at"] == record["result"]["evaluated_at"]
    # The searcher continued from its saved state.
    history = searcher_state(experiment_dir)["engine"]["history"]
    assert history[: len(saved["history"])] == saved["history"]
    # ... and was told every trial once: no architecture evaluated twice.
    assert len(history) == 16
    assert len({tuple(r["proposal"]["arch"]) for r in history}) == 16
    # MLflow: one run per trial (never two), all ended, the parent run reused.
    state = json.loads((experiment_dir / "paretune.json").read_text())
    assert result.parent_run_id == state["parent_run_id"]
    runs = trial_runs(mlflow_uri, result.mlflow_experiment_id, result.parent_run_id)
    run_trials = [r.data.tags["trial_id"] for r in runs]
    assert len(run_trials) == len(set(run_trials))
    assert set(rows) <= set(run_trials)
    # An interrupted trial keeps its run: no second run, none left KILLED.
    proposals = Counter(r.data.tags.get("proposal_id") for r in runs)
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}, [
        (r.data.tags["trial_id"], r.data.tags.get("proposal_id"), r.info.status)
        for r in runs
        if proposals[r.data.tags.get("proposal_id")] > 1 or r.info.status != "FINISHED"
    ]
    assert MlflowClient(mlflow_uri).get_run(result.parent_run_id).info.status == "FINISHED"


# ---------------------------------------------------------------------- segments
@pytest.mark.slow
def test_a_long_search_runs_in_segments(ray_session, nb201_path, mlflow_uri, tmp_path, monkeypatch):
    from ray.tune.experiment import Trial

    from paretune.platform import tuning
    from paretune.platform.experiment import segment_dirs
    from paretune.platform.launcher import report
    from paretune.platform.memory import TrimFinishedTrials
    from paretune.platform.sync import sync_mlflow

    # Each segment's trials are freed before the next segment starts. At scale Ray leaves
    # them in reference cycles, which only a full collection frees, and in a long search that
    # comes seldom. Here every finished trial is put in a cycle of its own and automatic
    # collection is off: none may be left, not even as garbage, when the next Tuner is built.
    trim = TrimFinishedTrials._trim

    def trim_and_cycle(self, trial, **kwargs):
        trim(self, trial, **kwargs)
        trial.__dict__["_test_cycle"] = trial

    monkeypatch.setattr(TrimFinishedTrials, "_trim", trim_and_cycle)
    live_at_start: list[set[str]] = []  # trial ids only: no reference that keeps one alive
    build_tuner = tuning.build_tuner

    def noting_build_tuner(*args, **kwargs):
        live_at_start.append({o.trial_id for o in gc.get_objects() if isinstance(o, Trial)})
        return build_tuner(*args, **kwargs)

    monkeypatch.setattr(tuning, "build_tuner", noting_build_tuner)
    data = tabular(nb201_path, tmp_path, mlflow_uri, search={"num_samples": 23, "segment_size": 10})
    gc.disable()
    try:
        result = run(config_from_dict(data), verbose=0)
    finally:
        gc.enable()
    ours = {r.trial_id for r in result.report.rows}
    assert len(live_at_start) == 3
    assert [ours & live for live in live_at_start] == [set(), set(), set()]
    experiment_dir = result.experiment_dir
    segments = segment_dirs(experiment_dir)
    assert [p.relative_to(experiment_dir).as_posix() for p in segments[1:]] == [
        "segments/segment-001",
        "segments/segment-002",
    ]
    rows = result.report.rows
    assert sorted(r.number for r in rows) == list(range(1, 24))  # numbered across segments
    assert len({r.arch for r in rows}) == 23  # one searcher throughout: no repeats
    history = searcher_state(segments[-1])["engine"]["history"]
    assert len(history) == 23
    again = report(experiment_dir)
    assert [(r.trial_id, r.number, r.values) for r in again.rows] == [
        (r.trial_id, r.number, r.values) for r in rows
    ]
    runs = trial_runs(mlflow_uri, result.mlflow_experiment_id, result.parent_run_id)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(r.trial_id for r in rows)
    # sync-mlflow rebuilds the whole search, every segment, in another store.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    summary = sync_mlflow(experiment_dir, tracking_uri=other)
    rebuilt = trial_runs(
        other,
        MlflowClient(other).get_run(summary.parent_run_id).info.experiment_id,
        summary.parent_run_id,
    )
    assert sorted(r.data.tags["trial_id"] for r in rebuilt) == sorted(r.trial_id for r in rows)
    # A trial only the journal knows (it finished after Ray's last snapshot of a driver that
    # died) is numbered after Ray's trials, never 0 nor twice.
    journal = TrialJournal(experiment_dir / JOURNAL_FILE)
    record = journal.load()[rows[0].trial_id]
    journal.append("0000beef", "ok", record["result"], None, record["config"])
    numbers = {r.trial_id: r.number for r in report(experiment_dir).rows}
    assert numbers.pop("0000beef") == 24
    assert numbers == {r.trial_id: r.number for r in rows}


@pytest.mark.slow
def test_resume_in_a_later_segment(ray_cluster, nb201_path, mlflow_uri, tmp_path):
    data = tabular(
        nb201_path,
        tmp_path,
        mlflow_uri,
        search={"num_samples": 16, "max_concurrent": 2, "segment_size": 6},
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = _start_search(cfg, tmp_path, ray_cluster.address, delay_s=0.4)

    def in_second_segment() -> bool:
        d = _experiment_dir(tmp_path)
        if not d or not (d / JOURNAL_FILE).is_file():
            return False
        snapshot = glob.glob(str(d / "segments" / "segment-001" / "searcher-state-*"))
        return len(TrialJournal(d / JOURNAL_FILE).load()) >= 8 and bool(snapshot)

    wait_for(in_second_segment, 180, "8 finished trials and a snapshot of segment 1")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    experiment_dir = _experiment_dir(tmp_path)
    before = TrialJournal(experiment_dir / JOURNAL_FILE).load()
    assert 6 < len(before) < 16

    result = resume(experiment_dir, verbose=0)

    rows = {r.trial_id: r for r in result.report.rows}
    assert len(rows) == 16 and all(r.ok for r in rows.values())
    assert set(before) <= set(rows)
    assert sorted(r.number for r in rows.values()) == list(range(1, 17))
    state = json.loads((experiment_dir / "paretune.json").read_text())
    assert state["segments"] == ["segments/segment-001", "segments/segment-002"]
    history = searcher_state(experiment_dir / state["segments"][-1])["engine"]["history"]
    assert len({tuple(r["proposal"]["arch"]) for r in history}) == len(history) == 16
    runs = trial_runs(mlflow_uri, result.mlflow_experiment_id, result.parent_run_id)
    run_trials = [r.data.tags["trial_id"] for r in runs]
    assert len(run_trials) == len(set(run_trials)) and set(rows) <= set(run_trials)


# ---------------------------------------------------------------------- MLflow outage
def _start_mlflow_server(db: Path, port: int, artifacts: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).parent / "mlflow"
    return subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(artifacts),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_outage_loses_nothing(ray_cluster, nb201_path, tmp_path):
    port = free_port()
    db, artifacts = tmp_path / "server.db", tmp_path / "artifacts"
    server = _start_mlflow_server(db, port, artifacts)
    try:
        wait_for(lambda: _healthy(port), 90, "the MLflow server")
        uri = f"http://127.0.0.1:{port}"
        data = tabular(
            nb201_path,
            tmp_path,
            uri,
            search={"algorithm": "random", "num_samples": 30, "max_concurrent": 2},
        )
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(data))
        proc = _start_search(cfg, tmp_path, ray_cluster.address, delay_s=0.5)

        def journal_size() -> int:
            d = _experiment_dir(tmp_path)
            return len(TrialJournal(d / JOURNAL_FILE).load()) if d else 0

        wait_for(lambda: journal_size() >= 4, 180, "4 finished trials")
        _stop(server)  # the outage
        assert not _healthy(port)
        at_stop = journal_size()
        wait_for(lambda: journal_size() >= at_stop + 8, 180, "8 more trials during the outage")
        server = _start_mlflow_server(db, port, artifacts)
        wait_for(lambda: _healthy(port), 90, "the MLflow server, again")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert "could not finish the MLflow parent run" not in err.decode(), err.decode()[-3000:]

        experiment_dir = _experiment_dir(tmp_path)
        state = json.loads((experiment_dir / "paretune.json").read_text())
        runs = trial_runs(uri, state["mlflow_experiment_id"], state["parent_run_id"])
        assert len(runs) == 30
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all("accuracy" in r.data.metrics for r in runs)
        assert MlflowClient(uri).get_run(state["parent_run_id"]).info.status == "FINISHED"
    finally:
        _stop(server)

    # The whole experiment can also be rebuilt from Ray's results into a new store.
    rebuilt = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    sync = subprocess.run(
        [
            sys.executable,
            "-m",
            "paretune",
            "sync-mlflow",
            str(experiment_dir),
            "--tracking-uri",
            rebuilt,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert sync.returncode == 0, sync.stderr[-2000:]
    assert "30 trial runs created" in sync.stdout
    client = MlflowClient(rebuilt)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("reliability").experiment_id],
        "tags.`paretune.role` = 'experiment'",
    )
    rebuilt_runs = trial_runs(rebuilt, parent.info.experiment_id, parent.info.run_id)
    assert len(rebuilt_runs) == 30 and {r.info.status for r in rebuilt_runs} == {"FINISHED"}


# ---------------------------------------------------------------------- GPU nodes
@pytest.mark.slow
def test_fractional_gpu_trials_spread_over_worker_nodes(
    ray_cluster, nb201_path, mlflow_uri, tmp_path
):
    from tests.platform.conftest import GPUS_PER_WORKER

    data = tabular(
        nb201_path,
        tmp_path,
        mlflow_uri,
        search={"algorithm": "random", "num_samples": 16},
        resources={"cpu": 0.25, "gpu": 0.5},
    )
    result = run(config_from_dict(data), verbose=0, evaluator_wrapper=Faults(delay_s=1.5))
    assert len(result.report.rows) == 16 and all(r.ok for r in result.report.rows)
    results = [
        json.loads(Path(p).read_text().splitlines()[-1])
        for p in glob.glob(str(result.experiment_dir / "*" / "result.json"))
    ]
    assert len(results) == 16
    nodes = Counter(r["node_id"] for r in results)
    assert set(nodes) == set(ray_cluster.worker_node_ids)  # both GPU nodes, never the head
    assert {r["gpu_ids"] for r in results} <= {"0", "1"}
    per_node_limit = GPUS_PER_WORKER / 0.5
    for node in nodes:
        spans = [(r["started_at"], r["evaluated_at"]) for r in results if r["node_id"] == node]
        overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
        assert 1 <= overlap <= per_node_limit
