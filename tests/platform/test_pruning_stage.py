"""The ``prune:`` section and proxy objectives, from a config to a pruned, searched space."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from paretune.platform.config import ConfigError, config_from_dict, load_config
from paretune.platform.prepare import prepare
from paretune.platform.pruning_stage import apply_pruning
from paretune.spaces import make_space

ROOT = Path(__file__).resolve().parents[2]
TINY = {"channels": 4, "cells_per_stage": 1}


def config(**changes) -> dict:
    data = {
        "name": "t",
        "evaluator": {"kind": "table"},
        "objectives": [
            {"name": "accuracy", "direction": "max"},
            {"name": "params", "direction": "min"},
        ],
        "prune": {"proxy": "synflow", "ratio": 0.5, "samples": 12, "build": TINY},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("prune", "expected"),
    [
        ({"proxy": "synflw"}, "prune.proxy = 'synflw': 'synflw' is not a proxy (allowed: synflow"),
        ({"ratio": 1}, "prune.ratio = 1"),
        ({"rule": "best"}, "prune.rule = 'best'"),
        ({"samples": 1}, "prune.samples = 1"),
        ({"cost": "latency"}, "prune.cost = 'latency'"),
        ({"ratios": 0.5}, "prune.ratios: unknown key"),
    ],
)
def test_bad_prune_fields_are_named_in_one_line(prune, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(config(prune=prune))
    assert expected in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_prune_needs_a_space_that_builds_networks():
    cfg = config_from_dict(config(space={"kind": "choices", "decisions": {"width": [1, 2]}}))
    with pytest.raises(ConfigError, match="prune: proxies: space 'choices' cannot build"):
        apply_pruning(cfg, make_space("choices", decisions={"width": [1, 2]}))


def test_pruning_restricts_records_and_resumes_without_scoring(monkeypatch):
    cfg = config_from_dict(config())
    space = make_space("nb201")
    pruned = apply_pruning(cfg, space)
    assert pruned.size == 3**6  # floor(0.5 * 5) = 2 of 5 options removed per edge
    assert cfg.prune.removed is not None and len(cfg.prune.removed) == 6
    assert all(len(v) == 2 for v in cfg.prune.removed.values())
    assert set(cfg.prune.fitness["e0_1"]) <= set(space.decisions[0].options)
    params = cfg.flat_params()
    assert params["prune.removed.e0_1"] == str(cfg.prune.removed["e0_1"])
    # The same seed prunes the same way.
    assert apply_pruning(config_from_dict(config()), space).allowed == pruned.allowed
    # A resume reads the saved config: the same space, and nothing scored again.
    saved = load_config_text(cfg.to_yaml())
    import paretune.objectives.proxies as proxies

    monkeypatch.setattr(proxies, "ProxyScorer", None)  # scoring again would raise
    again = apply_pruning(saved, make_space("nb201"))
    assert again.allowed == pruned.allowed


def load_config_text(text: str):
    import yaml

    return config_from_dict(yaml.safe_load(text))


def test_front_rule_removes_no_more_than_the_plain_rule():
    plain = config_from_dict(config())
    front = config_from_dict(config(prune={**config()["prune"], "rule": "front"}))
    space = make_space("nb201")
    a, b = apply_pruning(plain, space), apply_pruning(front, space)
    assert b.size >= a.size
    for kept_plain, kept_front in zip(a.allowed, b.allowed, strict=True):
        assert len(kept_front) >= len(kept_plain)


def test_removed_that_empties_a_decision_is_refused():
    cfg = config_from_dict(
        config(prune={"removed": {"e0_1": list(make_space("nb201").decisions[0].options)}})
    )
    with pytest.raises(ConfigError, match="prune.removed.e0_1 = .*removes every option"):
        apply_pruning(cfg, make_space("nb201"))
    cfg = config_from_dict(config(prune={"removed": {"edge": ["none"]}}))
    with pytest.raises(ConfigError, match="prune.removed.edge: not a decision of space 'nb201'"):
        apply_pruning(cfg, make_space("nb201"))


def test_a_proxy_objective_is_computed_beside_the_table(nb201_path):
    cfg = config_from_dict(
        config(
            prune=None,
            objectives=[
                {"name": "accuracy", "direction": "max"},
                {"name": "synflow", "direction": "max", "source": "proxy"},
            ],
        )
    )
    prepared = prepare(cfg)
    assert prepared.evaluator.metrics()["synflow"].source == "proxy"
    from paretune.objectives import make_evaluator

    trial_evaluator = make_evaluator("table", **prepared.evaluator_settings)
    out = trial_evaluator.evaluate((3,) * 6)
    assert out.values["synflow"] > 0 and out.sources["synflow"] == "proxy"
    assert out.values["accuracy"] > 50
    bad = config(
        prune=None,
        objectives=[
            {"name": "accuracy", "direction": "max"},
            {"name": "latency", "direction": "min", "source": "proxy"},
        ],
    )
    with pytest.raises(ConfigError, match=r"objectives\[1\].name = 'latency': not a proxy"):
        prepare(config_from_dict(bad))


@pytest.mark.slow
def test_prune_config_runs_end_to_end(nb201_path, tmp_path):
    db = tmp_path / "mlflow.db"
    script = Path(sys.executable).parent / "paretune"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "paretune"]
    proc = subprocess.run(
        [
            *cmd,
            "run",
            "conf/prune_nb201.yaml",
            "search.num_samples=10",
            "prune.samples=10",
            f"storage.path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{db}",
        ],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": "local", "PARETUNE_NB201": str(nb201_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "10 trials, 0 failed" in proc.stdout
    saved = load_config(next((tmp_path / "runs").glob("prune-nb201-*/config.yaml")))
    # rule: front keeps the options the sample's (synflow, params) front uses: some edges may
    # lose fewer than 2 options, but something is removed and the record names each edge once.
    assert saved.prune.removed and 1 <= len(saved.prune.removed) <= 6
    with sqlite3.connect(db) as con:
        params = dict(con.execute("select key, value from params where key like 'prune.removed.%'"))
        archs = [r[0] for r in con.execute("select value from tags where key = 'arch'")]
    assert params == {f"prune.removed.{d}": str(v) for d, v in saved.prune.removed.items()}
    space = make_space("nb201").restrict(
        {
            d: [o for o in opts if o not in saved.prune.removed.get(d, [])]
            for d, opts in ((d.name, d.options) for d in make_space("nb201").decisions)
        }
    )
    decoded = [space.decode(a) for a in archs if a.startswith("|")]
    assert decoded and all(space.contains(a) for a in decoded)
