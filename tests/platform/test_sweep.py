"""`paretune sweep`: the sweep file, validation, the report's grouping, and the merging of reports."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.platform import cli, launcher
from paretune.platform.config import ConfigError
from paretune.platform.report import (
    SearchReport,
    TrialRow,
    build_report,
    merge_reports,
    plot_origins,
    summarize_origins,
)
from paretune.platform.sweep import read_spec
from paretune.platform.sweep import read_state as read_sweep_state
from paretune.platform.sweep_report import MemberRow, group_rows, hv_curve, mean_std

ROOT = Path(__file__).resolve().parents[2]
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
OBJECTIVES = ObjectiveSet.of(("acc", "max"), ("lat", "min"), ("energy", "min"))


def brute_force_front(rows: list[TrialRow], objectives: ObjectiveSet) -> set[tuple[str, str]]:
    """(origin, trial id) of every successful row that no other successful row dominates."""
    ok = [r for r in rows if r.ok]
    vec = [[r.values[o.name] * o.sign for o in objectives] for r in ok]
    front = set()
    for i, a in enumerate(vec):
        dominated = any(
            all(x <= y for x, y in zip(b, a, strict=True))
            and any(x < y for x, y in zip(b, a, strict=True))
            for j, b in enumerate(vec)
            if j != i
        )
        if not dominated:
            front.add((ok[i].origin, ok[i].trial_id))
    return front


def random_report(seed: int, n: int, ids: str, failed: int = 0) -> SearchReport:
    rng = np.random.default_rng(seed)
    rows = [
        TrialRow(
            f"{ids}_{i:05d}",
            i,
            ARCH,
            {"acc": float(a), "lat": float(b), "energy": float(c)},
            ok=True,
            extras={"test_accuracy": float(a) - 1},
        )
        for i, (a, b, c) in enumerate(rng.random((n, 3)) * [100, 30, 20])
    ]
    rows += [
        TrialRow(f"{ids}_f{i}", n + i, ARCH, {}, ok=False, error="boom") for i in range(failed)
    ]
    return build_report(rows, OBJECTIVES)


# ---------------------------------------------------------------------- merge_reports (no Ray)
def test_merged_front_is_the_non_dominated_set_of_the_union(tmp_path):
    reports = [random_report(0, 40, "aaaaa", failed=2), random_report(1, 30, "bbbbb")]
    merged = merge_reports(reports, ["x", "y"])

    assert len(merged.rows) == 72 and merged.num_failed == 2
    assert [r.origin for r in merged.rows] == ["x"] * 42 + ["y"] * 30
    assert all(r.extras["origin"] == r.origin for r in merged.rows)
    # ids kept (no clash), values and extras carried over, the inputs left alone
    assert [r.trial_id for r in merged.rows] == [r.trial_id for rep in reports for r in rep.rows]
    assert all("test_accuracy" in r.extras for r in merged.rows if r.ok)
    assert all(r.origin is None and "origin" not in r.extras for rep in reports for r in rep.rows)
    union = list(merged.rows)
    assert {(r.origin, r.trial_id) for r in merged.front} == brute_force_front(union, OBJECTIVES)
    # both searches contribute here, and the merged front is never worse than either
    assert {r.origin for r in merged.front} == {"x", "y"}
    assert merged.hv_history == sorted(merged.hv_history) and len(merged.hv_history) == 72

    summary = summarize_origins(merged)
    assert [s.origin for s in summary] == ["x", "y"]
    assert [(s.trials, s.failed) for s in summary] == [(42, 2), (30, 0)]
    assert [s.front for s in summary] == [len(rep.front) for rep in reports]
    assert sum(s.on_merged_front for s in summary) == len(merged.front)
    assert all(0 < s.hypervolume <= merged.hypervolume for s in summary)
    # a search's hypervolume uses the merged reference: the first one's is the history's value
    # after its last row
    assert summary[0].hypervolume == pytest.approx(merged.hv_history[41])

    paths = merged.write(tmp_path)
    with open(paths["front"]) as f:
        front_rows = list(csv.DictReader(f))
    assert {(r["origin"], r["trial_id"]) for r in front_rows} == brute_force_front(
        union, OBJECTIVES
    )
    plot_origins(merged, tmp_path / "sweep_front.png")
    assert (tmp_path / "sweep_front.png").read_bytes()[:4] == b"\x89PNG"


def test_merge_prefixes_clashing_ids_and_respects_limits():
    limited = ObjectiveSet.of(
        ("acc", "max"), Objective("lat", "min", limit=10.0), ("energy", "min")
    )
    a = build_report(random_report(2, 20, "same").rows, limited)
    b = build_report(random_report(3, 20, "same").rows, limited)
    merged = merge_reports([a, b])  # default labels "0", "1"
    assert [r.trial_id for r in merged.rows[:2]] == ["0/same_00000", "0/same_00001"]
    assert merged.rows[20].trial_id == "1/same_00000" and merged.rows[20].origin == "1"
    assert len({r.trial_id for r in merged.rows}) == 40
    feasible = [r for r in merged.rows if r.values["lat"] <= 10.0]
    assert feasible  # the front is the feasible non-dominated set
    assert {(r.origin, r.trial_id) for r in merged.front} == brute_force_front(feasible, limited)


def test_merge_refuses_what_cannot_be_merged():
    a = random_report(0, 5, "a")
    other = build_report(a.rows, ObjectiveSet.of(("acc", "max"), ("lat", "min")))
    with pytest.raises(ValueError, match="no reports"):
        merge_reports([])
    with pytest.raises(ValueError, match="2 labels for 1 reports"):
        merge_reports([a], ["x", "y"])
    with pytest.raises(ValueError, match="labels repeat"):
        merge_reports([a, a], ["x", "x"])
    with pytest.raises(ValueError, match="report 'y' has objectives"):
        merge_reports([a, other], ["x", "y"])


# ---------------------------------------------------------------------- the sweep file (no Ray)
def write_sweep(tmp_path: Path, body: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"base": str(ROOT / "conf" / "nb201_tabular.yaml"), **body}))
    return path


def test_spec_expands_the_grid_times_the_list(tmp_path):
    path = write_sweep(
        tmp_path,
        {
            "name": "t",
            "overrides": {"search.num_samples": 7},
            "grid": {"search.algorithm": ["random", "nsga2"], "seed": [0, 1]},
            "members": [{"name": "a"}, {"name": "b", "objectives.1.limit": 5.0}],
        },
    )
    spec = read_spec(path, ["search.max_concurrent=3"])
    assert len(spec.members) == 8 and spec.max_concurrent_searches == 2
    assert spec.members[0].name == "a_algorithm-random_seed-0"
    assert spec.members[-1].overrides == {
        "search.algorithm": "nsga2",
        "seed": 1,
        "objectives.1.limit": 5.0,
    }
    assert spec.overrides == {"search.num_samples": 7, "search.max_concurrent": 3}
    groups = {m.group for m in spec.members}  # the seed is left out of the group
    assert len(groups) == 4 and "search.algorithm=nsga2, objectives.1.limit=5.0" in groups
    # a cluster address given as an override is the sweep's cluster (members are handed it)
    assert read_spec(path, ["ray.address=10.0.0.1:6379"]).ray == {"address": "10.0.0.1:6379"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"grid": {"seed": []}}, "grid.seed = []: expected a non-empty list"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"max_concurrent_searches": 0}, "max_concurrent_searches = 0"),
        ({"members": [{"name": "a"}, {"name": "a", "seed": 2}]}, "member names repeat"),
        ({"ray": {"adress": "x"}}, "ray = {'adress': 'x'}"),
    ],
)
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, body, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_spec(write_sweep(tmp_path, body))


def test_every_bad_member_is_named_before_anything_runs(nb201_path, tmp_path, capsys):
    path = write_sweep(
        tmp_path,
        {
            "overrides": {"storage.path": str(tmp_path / "runs")},
            "grid": {"search.algorithm": ["random", "simulated_annealing_x"], "seed": [0, -1]},
        },
    )
    assert cli.main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("3 of 4 members are invalid, nothing ran")
    assert len(err) == 4
    assert err[1].startswith("member algorithm-random_seed--1: ") and "seed" in err[1]
    assert all("search.algorithm" in line for line in err[2:])
    assert not (tmp_path / "runs").exists()  # no sweep folder, no Ray, no MLflow


# ---------------------------------------------------------------------- report math (no Ray)
def test_group_mean_and_spread_over_seeds():
    rows = [
        MemberRow("a0", "alg=a", "finished", hypervolume=1.0, gap=0.2),
        MemberRow("a1", "alg=a", "finished", hypervolume=3.0, gap=0.4),
        MemberRow("b0", "alg=b", "finished", hypervolume=5.0),
        MemberRow("b1", "alg=b", "failed", hypervolume=100.0),  # a failed member does not count
    ]
    a, b = group_rows(rows)
    assert (a.group, a.members, a.hv_mean) == ("alg=a", 2, 2.0)
    assert a.hv_std == pytest.approx(math.sqrt(2.0))  # sample std of 1 and 3
    assert (a.gap_mean, a.gap_std) == pytest.approx((0.3, math.sqrt(0.02)))
    assert (b.members, b.hv_mean, b.hv_std) == (1, 5.0, 0.0)
    assert math.isnan(b.gap_mean)
    assert all(math.isnan(x) for x in mean_std([]))


def test_hypervolume_curve_per_member_ends_at_its_hypervolume():
    merged = merge_reports(
        [random_report(0, 30, "aa", failed=1), random_report(1, 20, "bb")], ["x", "y"]
    )
    summary = {s.origin: s for s in summarize_origins(merged)}
    for origin, n in (("x", 31), ("y", 20)):
        curve = hv_curve(merged, origin, merged.reference, points=7)
        assert len(curve) == n
        assert curve == sorted(curve)
        assert curve[-1] == pytest.approx(summary[origin].hypervolume)
    # with every point sampled, the curve is the hypervolume of each prefix
    full = hv_curve(merged, "y", merged.reference, points=1000)
    ys = [r for r in merged.rows if r.origin == "y"]
    pts = merged.objectives.matrix(r.values for r in ys[:5])
    from paretune.search_algos.pareto import hypervolume

    assert full[4] == pytest.approx(hypervolume(pts, merged.reference))


# ---------------------------------------------------------------------- end to end
def paretune(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    return subprocess.run(
        [sys.executable, "-m", "paretune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def small_sweep(tmp_path: Path, samples: int, concurrent: int) -> Path:
    return write_sweep(
        tmp_path,
        {
            "name": "small",
            "overrides": {
                "search.num_samples": samples,
                "search.max_concurrent": 1,
                "storage.path": str(tmp_path / "runs"),
                "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            },
            "grid": {"search.algorithm": ["random", "nsga2"], "seed": [0]},
            "members": [{}],
            "max_concurrent_searches": concurrent,
            "ray": {"num_cpus": 2},
        },
    )


def check_recorded_once(sweep_dir: Path, samples: int) -> dict:
    """Every member: ``samples`` distinct trials in its journal and one MLflow run each."""
    state = read_sweep_state(sweep_dir)
    client = MlflowClient(state["mlflow"]["tracking_uri"])
    parents = {}
    for name, ms in state["members"].items():
        assert ms["status"] == "finished", name
        exp = Path(ms["experiment_dir"])
        assert exp.parent == sweep_dir / "members" / name / "runs"
        rows = launcher.report(exp).rows
        assert len(rows) == samples and len({r.trial_id for r in rows}) == samples
        parent = json.loads((exp / "paretune.json").read_text())["parent_run_id"]
        runs = client.search_runs(
            [state["mlflow"]["experiment_id"]], f"tags.mlflow.parentRunId = '{parent}'"
        )
        assert sorted(r.data.tags.get("trial_id", r.info.run_name) for r in runs) == sorted(
            {r.data.tags.get("trial_id", r.info.run_name) for r in runs}
        )
        assert len(runs) == samples, name
        run = client.get_run(parent)
        assert run.data.tags["paretune.sweep"] == state["mlflow"]["run_id"]
        assert run.data.tags["mlflow.parentRunId"] == state["mlflow"]["run_id"]
        parents[name] = parent
    sweep_run = client.get_run(state["mlflow"]["run_id"])
    assert sweep_run.info.status == "FINISHED"
    return parents


@pytest.mark.slow
def test_sweep_through_the_entry_point(nb201_path, tmp_path):
    out = tmp_path / "sweep"
    r = paretune("sweep", str(small_sweep(tmp_path, 4, 2)), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Members" in r.stdout and "algorithm-nsga2_seed-0" in r.stdout
    assert "Merged front" in r.stdout
    check_recorded_once(out, 4)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [m["trials"] for m in summary["members"]] == [4, 4]
    assert all(0 <= m["gap"] <= 1 for m in summary["members"])  # the table's true front
    assert (out / "report" / "hypervolume_by_group.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "report" / "pareto_front.csv") as f:
        assert {row["origin"] for row in csv.DictReader(f)} <= {
            "algorithm-random_seed-0",
            "algorithm-nsga2_seed-0",
        }
    # `paretune report` works on a member's experiment folder as on any other
    exp = read_sweep_state(out)["members"]["algorithm-random_seed-0"]["experiment_dir"]
    assert paretune("report", exp, cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_records_every_trial_once(nb201_path, tmp_path):
    samples = 40
    out = tmp_path / "sweep"
    env = {**os.environ, "RAY_ADDRESS": "local"}
    spec = small_sweep(tmp_path, samples, 1)  # one member at a time: one runs, one waits
    proc = subprocess.Popen(
        [sys.executable, "-m", "paretune", "sweep", str(spec), "--out", str(out), "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = None
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:  # wait for a few trials
        found = (
            list((out / "members").glob("*/runs/*/paretune-trials.jsonl")) if out.exists() else []
        )
        if found and len(found[0].read_text().splitlines()) >= 8:
            journal = found[0]
            break
        time.sleep(0.5)
    assert journal is not None and proc.poll() is None, "the sweep ended before it was killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = read_sweep_state(out)
    assert [m["status"] for m in state["members"].values()] == ["running", "pending"]

    r = paretune("resume", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    check_recorded_once(out, samples)


@pytest.mark.slow
def test_a_failing_member_does_not_stop_the_others(nb201_path, tmp_path):
    """A member no node can run (found only once the cluster is up) fails; the other finishes."""
    spec = write_sweep(
        tmp_path,
        {
            "overrides": {
                "search.num_samples": 3,
                "search.max_concurrent": 1,
                "storage.path": str(tmp_path / "runs"),
                "mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            },
            "members": [{"name": "greedy", "resources.cpu": 64}, {"name": "fine"}],
            "max_concurrent_searches": 2,
            "ray": {"num_cpus": 2},
        },
    )
    out = tmp_path / "sweep"
    r = paretune("sweep", str(spec), "--out", str(out), "-q", cwd=tmp_path)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("paretune: sweep failed: 1 of 2 members failed: greedy (exit 2: ")
    assert "resources" in last
    state = read_sweep_state(out)
    assert state["members"]["fine"]["status"] == "finished"
    assert state["members"]["greedy"]["status"] == "failed"
    assert "fine" in r.stdout  # the report of what finished is printed
