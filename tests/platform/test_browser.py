"""The MLflow UI of a finished search, as a user sees it: a real ``mlflow server`` on loopback
and Debian's headless Chromium.

A small tabular search (8 trials) runs once for the module (the server starts meanwhile); headless
Chromium (``--dump-dom`` after ``--virtual-time-budget``, plus a screenshot) then opens the
experiment's runs, its Pareto front (filter ``tags.pareto = 'front'``), the parent run's front
plot and a trial's cell picture, and the pages are checked against the server's REST API.

Needs ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it). Without it the
tests fail, saying so, unless ``PARETUNE_SKIP_BROWSER=1`` is set, which skips them.
``PARETUNE_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from paretune.platform.artifacts import log_cell_pictures, log_parent_summary, tag_pareto
from paretune.platform.config import config_from_dict
from paretune.platform.launcher import run
from paretune.platform.ui import experiment_url, front_url, start_ui, stop_ui, wait_until_up

pytestmark = pytest.mark.slow  # a real MLflow server and headless Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]
WINDOW = (1400, 900)
TRIAL_NAME = re.compile(r"trial-[0-9a-f]{8}")
MATCHING = re.compile(r"(\d+)</strong>\s*matching")


def chromium() -> str:
    """The Chromium binary; fails (or skips with PARETUNE_SKIP_BROWSER=1) when there is none."""
    found = os.environ.get("PARETUNE_CHROMIUM") or shutil.which("chromium")
    if found and Path(found).is_file():
        return found
    if os.environ.get("PARETUNE_SKIP_BROWSER") == "1":
        pytest.skip("PARETUNE_SKIP_BROWSER=1: browser tests skipped")
    pytest.fail(
        "the browser tests need Debian's headless Chromium: install it with "
        "`apt-get install -y chromium` (.ci/run does), point PARETUNE_CHROMIUM at a binary, "
        "or set PARETUNE_SKIP_BROWSER=1 to skip these tests"
    )


def render(binary: str, url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after the page settled, and optionally a screenshot of it."""
    cmd = [
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    cmd += ["--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rest_search(base: str, experiment_id: str, filter_string: str = "") -> list[dict]:
    """Runs of the experiment from the server's REST API."""
    body = json.dumps(
        {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}
    ).encode()
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read()).get("runs", [])


@pytest.fixture(scope="session")
def browser() -> str:
    """The Chromium binary, looked for before anything slow (Ray, the search) starts."""
    return chromium()


@pytest.fixture(scope="module")
def ui(browser, ray_cluster, nb201_path, tmp_path_factory):
    """A finished tabular search with a live MLflow server over its store."""
    binary = browser
    tmp = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("browser-test", artifact_location=str(tmp / "mlartifacts"))
    # The server starts while the search runs; both use the same SQLite file.
    process, url = start_ui(uri, "browser-test", wait=False, log_file=tmp / "server.log")
    try:
        cfg = config_from_dict(
            {
                "name": "browser-test",
                "evaluator": {"kind": "table", "path": str(nb201_path)},
                "objectives": [
                    {"name": "accuracy", "direction": "max"},
                    {"name": "latency", "direction": "min"},
                    {"name": "energy", "direction": "min"},
                ],
                "search": {"algorithm": "regularized_evolution", "num_samples": 8},
                "resources": {"cpu": 0.5},
                "storage": {"path": str(tmp / "runs")},
                "mlflow": {"tracking_uri": uri},
            }
        )
        result = run(cfg, verbose=0)
        rep = result.report
        parent = result.parent_run_id
        children = client.search_runs(
            [result.mlflow_experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
        )
        trial_runs = {r.data.tags["trial_id"]: r.info.run_id for r in children}
        # What the launcher does at the end of a search.
        report_files = {p.stem: p for p in (result.experiment_dir / "report").iterdir()}
        log_parent_summary(client, parent, rep, cfg, paths=report_files)
        tag_pareto(client, trial_runs, {r.trial_id for r in rep.front})
        log_cell_pictures(client, {trial_runs[r.trial_id]: r.arch for r in rep.rows})
        wait_until_up(url, process, timeout=180, log=tmp / "server.log")
        base = url.split("/#/")[0]
        yield SimpleNamespace(
            binary=binary,
            tmp=tmp,
            base=base,
            url=url,
            exp_id=result.mlflow_experiment_id,
            parent=parent,
            report=rep,
            trial_runs=trial_runs,
        )
    finally:
        stop_ui(process)


@pytest.fixture(scope="module")
def pages(ui):
    """The DOM of four UI pages, rendered by headless Chromium in parallel."""
    some_trial = ui.trial_runs[ui.report.front[0].trial_id]
    urls = {
        "runs": experiment_url(ui.base, ui.exp_id, order_by="attributes.run_name", ascending=True),
        "front": front_url(ui.base, ui.exp_id, ("accuracy", "max")),
        "front_plot": f"{ui.base}/#/experiments/{ui.exp_id}/runs/{ui.parent}"
        "/artifacts/report/pareto_front.png",
        "cell": f"{ui.base}/#/experiments/{ui.exp_id}/runs/{some_trial}/artifacts/cell.png",
    }
    shots = {"front": ui.tmp / "front.png"}

    def one(name: str) -> tuple[str, str]:
        return name, render(ui.binary, urls[name], ui.tmp / f"profile-{name}", shots.get(name))

    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        doms = dict(pool.map(one, urls))
    return SimpleNamespace(dom=doms, urls=urls, screenshot=shots["front"])


def test_runs_page_lists_every_trial(ui, pages):
    rest = rest_search(ui.base, ui.exp_id)
    names = {r["info"]["run_name"] for r in rest}
    assert len(rest) == 9  # the parent and 8 trials
    trials = {n for n in names if n.startswith("trial-")}
    assert trials == {f"trial-{t}" for t in ui.trial_runs}
    dom = pages.dom["runs"]
    assert set(TRIAL_NAME.findall(dom)) == trials
    assert any(n in dom for n in names - trials)  # the parent run's name
    assert MATCHING.search(dom) and int(MATCHING.search(dom).group(1)) == len(rest)


def test_front_filter_shows_exactly_the_pareto_front(ui, pages):
    front = {f"trial-{r.trial_id}" for r in ui.report.front}
    rest = {r["info"]["run_name"] for r in rest_search(ui.base, ui.exp_id, "tags.pareto = 'front'")}
    assert rest == front
    assert 1 <= len(front) < len(ui.trial_runs)
    dom = pages.dom["front"]
    assert "tags.pareto = 'front'" in dom  # the filter is in the search box
    assert set(TRIAL_NAME.findall(dom)) == front
    assert int(MATCHING.search(dom).group(1)) == len(front)
    image = imread(pages.screenshot)
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    assert pages.screenshot.stat().st_size > 20_000


def test_parent_run_shows_the_front_plot_and_report_files(pages):
    dom = pages.dom["front_plot"]
    assert re.search(r'<img alt="report/pareto_front\.png" src="blob:', dom)
    for name in ("hypervolume.png", "parallel_coordinates.png", "pareto_front.csv"):
        assert name in dom


def test_trial_run_shows_its_cell_picture(pages):
    assert re.search(r'<img alt="cell\.png" src="blob:', pages.dom["cell"])
