"""``paretune ui``: a real ``mlflow server`` over an experiment directory, found from its files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from paretune.platform.config import config_from_dict
from paretune.platform.ui import (
    UIError,
    experiment_url,
    front_url,
    resolve_target,
    start_ui,
)

URL = re.compile(r"MLflow UI:\s+(http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)/runs)\s*$")


def make_experiment_dir(root: Path) -> tuple[Path, str]:
    """What ``paretune run`` leaves where it ran: ``mlflow.db`` and ``runs/<name>-<date>/``.

    The config keeps the relative defaults (``sqlite:///mlflow.db``, ``storage.path: runs``).
    """
    work = root / "work"
    exp_dir = work / "runs" / "ui-test-20260101-000000"
    exp_dir.mkdir(parents=True)
    cfg = config_from_dict(
        {
            "name": "ui-test",
            "objectives": [
                {"name": "latency", "direction": "min"},
                {"name": "accuracy", "direction": "max"},
            ],
        }
    )
    assert cfg.mlflow.tracking_uri == "sqlite:///mlflow.db" and cfg.storage.path == "runs"
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp_id = client.create_experiment("ui-test", artifact_location=str(work / "mlartifacts"))
    parent = client.create_run(exp_id, run_name="ui-test-20260101-000000").info.run_id
    for name, pareto in (("trial-aaaa0001", "front"), ("trial-aaaa0002", "dominated")):
        child = client.create_run(
            exp_id, run_name=name, tags={"mlflow.parentRunId": parent, "pareto": pareto}
        )
        client.set_terminated(child.info.run_id)
    client.set_terminated(parent)
    (exp_dir / "config.yaml").write_text(cfg.to_yaml())
    state = {"mlflow_experiment_id": exp_id, "parent_run_id": parent}
    (exp_dir / "paretune.json").write_text(json.dumps(state))
    return exp_dir, exp_id


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, str]:
    """One experiment directory and store for the module (creating a store takes seconds)."""
    return make_experiment_dir(tmp_path_factory.mktemp("ui-template"))


@pytest.fixture
def experiment(template, tmp_path) -> tuple[Path, str]:
    """A copy of the template's ``work/`` tree in this test's directory: (experiment dir, id)."""
    exp_dir, exp_id = template
    work = exp_dir.parent.parent
    shutil.copytree(work, tmp_path / "work")
    return tmp_path / "work" / exp_dir.relative_to(work), exp_id


def get_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


class Output:
    """The lines a process prints, read by a thread (no blocking reads in the test)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def line_with(self, pattern: str, timeout: float) -> str:
        """The first line containing ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if pattern in line:
                    return line
            if self.proc.poll() is not None and not any(pattern in ln for ln in self.lines):
                time.sleep(0.5)  # let the reader drain what is left
                if not any(pattern in ln for ln in self.lines):
                    break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} from `paretune ui` in {timeout} s: {self.lines}")


def test_paretune_ui_errors_end_in_one_line(tmp_path):
    done = subprocess.run(
        [str(PARETUNE), "ui", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "not a paretune experiment directory" in done.stderr


def test_start_ui_leaves_no_temporary_log(experiment, tmp_path, monkeypatch):
    """Without a log file the server's output goes to a temporary file removed at once."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exp_dir, _ = experiment
    uri = f"sqlite:///{exp_dir.parent.parent / 'mlflow.db'}"
    process, url = start_ui(uri, "ui-test")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert [p for p in tmp_path.iterdir() if p.name.startswith("paretune-ui-")] == []
    finally:
        from paretune.platform.ui import stop_ui

        stop_ui(process)


def test_resolve_target_finds_the_store_from_anywhere(experiment, tmp_path, monkeypatch):
    exp_dir, exp_id = experiment
    monkeypatch.chdir(tmp_path)  # not the directory the search ran in
    target = resolve_target(exp_dir)
    assert target.tracking_uri == f"sqlite:///{(tmp_path / 'work' / 'mlflow.db').resolve()}"
    assert (target.experiment_name, target.experiment_id) == ("ui-test", exp_id)
    assert target.first_objective == ("latency", "min")
    with pytest.raises(ValueError, match="not a paretune experiment directory"):
        resolve_target(tmp_path)


def test_urls_of_the_runs_and_of_the_front():
    assert experiment_url("http://h:1/", "7") == "http://h:1/#/experiments/7/runs"
    url = front_url("http://h:1", "7", ("accuracy", "max"))
    page, _, query = url.partition("?")
    assert page == "http://h:1/#/experiments/7/runs"
    assert urllib.parse.parse_qs(query) == {
        "searchFilter": ["tags.pareto = 'front'"],
        "orderByKey": ["metrics.`accuracy`"],
        "orderByAsc": ["false"],
    }
    assert "orderByAsc=true" in front_url("http://h:1", "7", ("latency", "min"))


def test_start_ui_refuses_a_missing_store_and_a_taken_port(experiment, tmp_path):
    with pytest.raises(UIError, match="no such database file"):
        start_ui(f"sqlite:///{tmp_path / 'nothing.db'}", "x")
    exp_dir, _ = experiment
    uri = f"sqlite:///{exp_dir.parent.parent / 'mlflow.db'}"
    with pytest.raises(UIError, match="no MLflow experiment named 'other'"):
        start_ui(uri, "other")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UIError, match=f"port {port} .* already in use"):
            start_ui(uri, "ui-test", port=port)


PARETUNE = Path(sys.executable).with_name("paretune")  # the entry point a user types


def test_paretune_ui_serves_the_experiment_until_interrupted(experiment, tmp_path):
    exp_dir, exp_id = experiment
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        [str(PARETUNE), "ui", str(exp_dir)],
        cwd=tmp_path,  # not the directory the search ran in
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir)},
    )
    out = Output(proc)
    try:
        match = URL.search(out.line_with("MLflow UI:", timeout=180))
        assert match, "the printed URL is not the experiment's runs page"
        url, port, shown_id = match.group(1), int(match.group(2)), match.group(3)
        assert shown_id == exp_id
        front = out.line_with("Pareto front:", timeout=10)
        assert "searchFilter=tags.pareto%20%3D%20%27front%27" in front
        base = url.split("/#/")[0]
        with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
            assert resp.status == 200
        exp = get_json(f"{base}/api/2.0/mlflow/experiments/get?experiment_id={exp_id}")
        assert exp["experiment"]["name"] == "ui-test"
        runs = get_json(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [exp_id], "filter": "tags.pareto = 'front'"},
        )["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["trial-aaaa0001"]

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the server outlived `paretune ui`"
        # The server's log is in the experiment folder, nothing is left in the temp folder.
        assert (exp_dir / "mlflow-ui.log").is_file()
        assert list(tmpdir.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
