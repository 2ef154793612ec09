"""Sweeps of TND reward settings (examples/tnd_sweep.py) and the merging of their reports."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.platform.config import ConfigError
from paretune.platform.report import (
    SearchReport,
    TrialRow,
    build_report,
    merge_reports,
    plot_origins,
    summarize_origins,
)

ROOT = Path(__file__).resolve().parents[2]
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
OBJECTIVES = ObjectiveSet.of(("acc", "max"), ("lat", "min"), ("energy", "min"))


def load_sweep_module():
    """examples/tnd_sweep.py as a module (examples/ is not a package)."""
    if "tnd_sweep" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "tnd_sweep", ROOT / "examples" / "tnd_sweep.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["tnd_sweep"] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
    return sys.modules["tnd_sweep"]


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


def test_settings_parse_and_become_product_reward_configs():
    sweep = load_sweep_module()
    s = sweep.parse_setting("fast:latency=10^-0.05, energy=7^-0.01")
    assert (s.name, s.targets, s.exponents) == (
        "fast",
        {"latency": 10.0, "energy": 7.0},
        {"latency": -0.05, "energy": -0.01},
    )
    assert sweep.parse_setting("latency=2^-1", 3).name == "s3"
    assert sweep.parse_setting("acc:").describe() == "accuracy only"
    for bad, msg in [
        ("x:latency=10", "not OBJ=T"),
        ("x:latency=a^b", "must be numbers"),
        ("bad name:latency=1^-1", "must match"),
        ("x:latency=1^-1,latency=2^-1", "twice"),
    ]:
        with pytest.raises(ValueError, match=msg):
            sweep.parse_setting(bad)

    base = {
        "name": "tnd-x",
        "objectives": [{"name": "accuracy", "direction": "max"}],
        "search": {"algorithm": "tnd", "params": {"batch_size": 5, "targets": {"params": 1}}},
    }
    cfg = sweep.setting_config(base, s, "base.yaml", seed_offset=2)
    assert cfg.name == "tnd-x-fast" and cfg.mlflow.experiment == "tnd-x" and cfg.seed == 2
    assert cfg.search.params == {
        "batch_size": 5,
        "reward": "product",
        "targets": {"latency": 10.0, "energy": 7.0},
        "exponents": {"latency": -0.05, "energy": -0.01},
    }
    assert base["name"] == "tnd-x" and "reward" not in base["search"]["params"]
    with pytest.raises(ConfigError, match="needs 'tnd'"):
        sweep.setting_config({**base, "search": {"algorithm": "nsga2"}}, s, "base.yaml")


def test_a_bad_setting_is_refused_before_any_search(nb201_path, tmp_path):
    sweep = load_sweep_module()
    settings = [sweep.parse_setting("ok:latency=10^-0.05"), sweep.parse_setting("x:params=1^-1")]
    with pytest.raises(ConfigError, match="setting .x.: .*unknown objectives"):
        sweep.sweep(
            ROOT / "conf" / "tnd_nb201.yaml",
            settings,
            [f"evaluator.path={nb201_path}", f"storage.path={tmp_path}"],
        )
    assert not any(tmp_path.iterdir())  # nothing ran
    with pytest.raises(ConfigError, match="names repeat"):
        sweep.sweep(ROOT / "conf" / "tnd_nb201.yaml", [settings[0], settings[0]])


# ---------------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_sweep_runs_one_experiment_per_setting_and_merges_them(
    ray_session, nb201_path, mlflow_uri, tmp_path, capsys
):
    from paretune.platform.launcher import report

    sweep = load_sweep_module()
    out = tmp_path / "sweep"
    code = sweep.main(
        [
            "--config",
            str(ROOT / "conf" / "tnd_nb201.yaml"),
            "--setting",
            "fast:latency=10^-0.05",
            "--setting",
            "accurate:latency=10^-0.005,energy=7^-0.005",
            "--out",
            str(out),
            "-q",
            f"evaluator.path={nb201_path}",
            f"storage.path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri={mlflow_uri}",
            "search.num_samples=12",
            "resources.cpu=1",
            "search.max_concurrent=1",  # one worker process each: table trials take ms
            "mlflow.cell_pictures=none",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0

    for name in (
        "trials.csv",
        "pareto_front.csv",
        "pareto_front.png",
        "sweep_front.png",
        "hypervolume.png",
        "parallel_coordinates.png",
        "sweep.json",
    ):
        assert (out / name).stat().st_size > 0, name
    info = json.loads((out / "sweep.json").read_text())
    assert [s["name"] for s in info["settings"]] == ["fast", "accurate"]
    assert info["settings"][0]["exponents"] == {"latency": -0.05}
    assert [s["seed"] for s in info["settings"]] == [0, 1]  # independent runs

    # Each setting is its own experiment; rebuild each from its directory and merge by hand.
    own = {s["name"]: report(s["experiment_dir"]) for s in info["settings"]}
    assert [len(r.rows) for r in own.values()] == [12, 12]
    union = []
    for name, rep in own.items():
        assert all(r.ok for r in rep.rows)
        union += [
            TrialRow(r.trial_id, r.number, r.arch, r.values, r.ok, origin=name) for r in rep.rows
        ]
    archs = [{r.arch for r in rep.rows} for rep in own.values()]
    assert archs[0] != archs[1]  # different seeds: not the same first batch twice
    objectives = next(iter(own.values())).objectives
    expected = brute_force_front(union, objectives)
    # derived reference, in raw units: beyond the worst trial of the union on every objective
    assert info["reference"]["accuracy"] < min(r.values["accuracy"] for r in union)
    assert info["reference"]["latency"] > max(r.values["latency"] for r in union)
    with open(out / "pareto_front.csv") as f:
        front = {(r["origin"], r["trial_id"]) for r in csv.DictReader(f)}
    assert front == expected
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["origin"], r["trial_id"]) for r in rows} == {(r.origin, r.trial_id) for r in union}
    assert {r["trial_id"] for r in rows if r["pareto"] == "front"} == {t for _, t in expected}

    # The printed table: one line per setting and the merged line.
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    merged_line = lines["merged"]
    assert merged_line[:3] == ["merged", "24", "0"] and int(merged_line[3]) == len(expected)
    on_front = {name: sum(o == name for o, _ in expected) for name in own}
    assert int(lines["fast"][-1]) == on_front["fast"]
    assert int(lines["accurate"][-1]) == on_front["accurate"]
    hv = float(merged_line[4])
    assert hv > 0 and all(0 < float(lines[n][-2]) <= hv * (1 + 1e-6) for n in own)
    assert math.isclose(info["merged"]["hypervolume"], hv, rel_tol=1e-5)

    # One MLflow experiment (the base name), one parent run per setting, tagged with it.
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("tnd-nb201")
    parents = client.search_runs([exp.experiment_id], "tags.`paretune.role` = 'experiment'")
    assert sorted(r.data.tags["sweep.setting"] for r in parents) == ["accurate", "fast"]
    assert {r.info.run_id for r in parents} == {s["mlflow_parent_run"] for s in info["settings"]}
    assert {r.data.params["search.params.reward"] for r in parents} == {"product"}
    assert len({r.data.tags["sweep"] for r in parents}) == 1
