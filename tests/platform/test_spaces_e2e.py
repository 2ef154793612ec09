"""Spaces and evaluators from YAML: space.kind and its settings, the shipped configs of other
spaces through validation and prepare, and one end-to-end run of a user's own model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from paretune.objectives.python_evaluator import space_from_spec
from paretune.platform.config import ConfigError, config_from_dict, load_config
from paretune.platform.prepare import make_searcher, prepare

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
OBJECTIVES = [{"name": "accuracy", "direction": "max"}, {"name": "params", "direction": "min"}]


def cfg(space: dict, evaluator: dict | None = None, **more) -> dict:
    return {
        "name": "t",
        "space": space,
        "evaluator": evaluator or {"kind": "train"},
        "objectives": OBJECTIVES,
        **more,
    }


def test_name_is_an_alias_of_kind_and_dumps_stay_plain():
    old = config_from_dict(cfg({"name": "nb201"}))
    assert old.space.kind == "nb201" and old.space.name == "nb201"
    assert old.model_dump()["space"] == {"kind": "nb201", "restrict": None}
    assert "build" not in old.model_dump()["evaluator"]
    again = config_from_dict(old.model_dump(mode="json"))  # a saved config reads back
    assert again.space == old.space


@pytest.mark.parametrize(
    ("space", "evaluator", "expected"),
    [
        ({"kind": "cnn"}, None, r"space.kind = 'cnn': unknown space kind \(allowed: nb201, darts"),
        ({"kind": "darts", "factory": "m:f"}, None, r"space.factory = 'm:f': not a setting of"),
        ({"kind": "choices"}, None, r"space.decisions is required"),
        ({"kind": "choices", "decisions": {"w": [1, 1]}}, None, r"decisions.w = \[1, 1\]"),
        ({"kind": "python"}, None, r"space.factory is required"),
        ({"kind": "nb201"}, {"kind": "python", "function": "x"}, r"evaluator.function = 'x'"),
        (
            {"kind": "macro"},
            {"kind": "table", "columns": {"accuracy": "a"}, "dataset": "cifar100"},
            r"evaluator.dataset = 'cifar100': a NAS-Bench-201 setting",
        ),
    ],
)
def test_bad_space_or_evaluator_is_one_line(space, evaluator, expected):
    space = dict(space)
    more = {"predictor": {"path": space.pop("predictor")}} if "predictor" in space else {}
    with pytest.raises(ConfigError, match=expected) as info:
        config_from_dict(cfg(space, evaluator, **more))
    assert "\n" not in str(info.value)


def test_prepare_refuses_what_only_building_finds():
    with pytest.raises(ConfigError, match=r"space.restrict = .*conv_9x9"):
        prepare(config_from_dict(cfg({"kind": "darts", "restrict": {"n2_0": ["conv_9x9"]}})))
    bad_build = cfg({"kind": "darts"}, {"kind": "train", "build": {"depth": 2}})
    with pytest.raises(ConfigError, match=r"evaluator.build.depth = 2: not a parameter"):
        prepare(config_from_dict(bad_build))
    with pytest.raises(ConfigError, match=r"space 'choices' has no network builder"):
        prepare(config_from_dict(cfg({"kind": "choices", "decisions": {"w": [1, 2]}})))
    no_factory = cfg({"kind": "python", "factory": "no_such_module_xyz:make"})
    with pytest.raises(ConfigError, match=r"module 'no_such_module_xyz' not found"):
        prepare(config_from_dict(no_factory))


@pytest.mark.parametrize("name", ["darts_digits", "mobilenet_digits", "custom_space"])
def test_shipped_configs_prepare(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name paths relative to the repository
    prepared = prepare(load_config(CONF / f"{name}.yaml"))
    kind = prepared.config.space.kind
    assert prepared.space.name == kind and prepared.space_spec["kind"] == kind
    assert prepared.evaluator_settings["space"]["kind"] == kind
    arch = prepared.space.sample(__import__("numpy").random.default_rng(0))
    assert space_from_spec(prepared.space_spec).encode(arch) == prepared.space.encode(arch)
    make_searcher(prepared)
    if name == "custom_space":
        assert prepared.evaluator_settings["sources"] == [str(ROOT / "examples")]
        assert prepared.evaluator_settings["metrics"] == {
            "accuracy": "max",
            "params": "min",
            "latency": "min",
        }


# Read before any test changes the environment (.ci/run sets it; else shared/ beside the repo).
MACRO_TABLE = os.environ.get("PARETUNE_NASBENCH_MACRO") or str(
    Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "nasbench_macro"
)


def test_macro_config_finds_its_table_through_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PARETUNE_DATA", str(tmp_path))  # an empty cache
    monkeypatch.delenv("PARETUNE_NASBENCH_MACRO", raising=False)
    with pytest.raises(ConfigError, match=r"PARETUNE_NASBENCH_MACRO is not set"):
        prepare(load_config(CONF / "macro_tabular.yaml"))
    table = MACRO_TABLE
    if not Path(table).exists():
        pytest.skip("the NAS-Bench-Macro table is not here: set PARETUNE_NASBENCH_MACRO")
    monkeypatch.setenv("PARETUNE_NASBENCH_MACRO", table)
    prepared = prepare(load_config(CONF / "macro_tabular.yaml"))
    assert Path(prepared.evaluator_settings["path"]).is_file()
    assert "benchmark" not in prepared.evaluator_settings
    best = prepared.space.decode("2-2-2-1-2-2-2-0")
    assert prepared.evaluator.evaluate(best).values["params"] == pytest.approx(1.985514)


def test_python_space_travels_as_its_spec(tmp_path, monkeypatch):
    (tmp_path / "my_space_mod_h.py").write_text(
        "from paretune.spaces import ChoicesSpace\n"
        "def make(n=3):\n    return ChoicesSpace({'w': list(range(1, n + 1))})\n"
    )
    monkeypatch.chdir(tmp_path)
    space = {"kind": "python", "factory": "my_space_mod_h:make", "args": {"n": 4}, "sources": "."}
    evaluator = {"kind": "python", "function": "my_space_mod_h:make"}
    prepared = prepare(config_from_dict(cfg(space, evaluator)))
    assert prepared.space.size == 4
    assert prepared.space_spec["sources"] == str(tmp_path)  # absolute: trials run elsewhere
    assert space_from_spec(prepared.space_spec).size == 4


@pytest.mark.slow
def test_custom_space_runs_end_to_end(tmp_path):
    """``paretune run conf/custom_space.yaml`` as typed, in a fresh local Ray."""
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "RAY_ADDRESS": "local"}  # not the test session's cluster
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "paretune",
            "run",
            "conf/custom_space.yaml",
            "search.num_samples=3",
            f"storage.path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{db}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 trials, 0 failed" in proc.stdout
    assert "width=" in proc.stdout and "no cell picture" not in proc.stdout + proc.stderr
    with sqlite3.connect(db) as con:
        params = {k for (k,) in con.execute("select distinct key from params")}
        epochs = con.execute("select count(*) from metrics where key = 'accuracy'").fetchone()[0]
    assert {"width", "depth", "kernel"} <= params  # decision -> option as params
    assert epochs >= 3


def test_spaces_with_twin_networks_measure_each_network_once():
    from paretune.search_algos.dedup import DeduplicatedEngine

    twins = prepare(config_from_dict(cfg({"kind": "mobilenet"}, search={"algorithm": "random"})))
    engine = make_searcher(twins).engine
    assert isinstance(engine, DeduplicatedEngine)
    plain = prepare(config_from_dict(cfg({"kind": "darts"}, search={"algorithm": "random"})))
    assert not isinstance(make_searcher(plain).engine, DeduplicatedEngine)


def test_pictures_of_cells_and_of_decision_tables():
    import numpy as np

    from paretune.platform.artifacts import arch_decisions, cell_png
    from paretune.spaces import make_space

    for kind in ("darts", "mobilenet", "macro"):
        space = make_space(kind)
        png = cell_png(space.encode(space.sample(np.random.default_rng(0))))
        assert png.startswith(b"\x89PNG"), kind
    assert arch_decisions("width=16,depth=2") == [("width", "16"), ("depth", "2")]
    assert arch_decisions("2-1-0-0-0-0-0-0")[:2] == [
        ("layer1", "ir_5x5_t6"),
        ("layer2", "ir_3x3_t3"),
    ]
    with pytest.raises(ValueError, match="not a 'decision=option,...' string"):
        cell_png("no decisions here")


def test_sources_are_kept_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = {"kind": "python", "factory": "m:f", "sources": "src"}
    config = config_from_dict(cfg(space, {"kind": "python", "function": "m:f", "sources": ["a"]}))
    assert config.space.sources == str(tmp_path / "src")
    assert config.evaluator.sources == [str(tmp_path / "a")]
    assert config_from_dict(config.model_dump(mode="json")).space == config.space
