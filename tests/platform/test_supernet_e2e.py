"""``paretune run conf/oneshot_digits.yaml`` through the entry point (a subprocess, local Ray):
the supernet trains once as a phase, then every trial is scored one-shot."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def paretune_command() -> list[str]:
    script = Path(sys.executable).parent / "paretune"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "paretune"]


@pytest.mark.slow
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_oneshot_config_runs_end_to_end(space, tmp_path):
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            *paretune_command(),
            "run",
            "conf/oneshot_digits.yaml",
            f"space.kind={space}",
            "evaluator.epochs=2",
            "search.num_samples=3",
            f"storage.path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{db}",
        ],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": "local"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 trials, 0 failed" in proc.stdout
    (experiment,) = (tmp_path / "runs").iterdir()
    handover = json.loads(
        (experiment / "phases" / "supernet_training" / "handover.json").read_text()
    )
    assert handover["epochs"] == 2 and Path(handover["checkpoint"], "supernet.json").is_file()
    with sqlite3.connect(db) as con:
        roles = con.execute(
            "select value, count(*) from tags where key = 'paretune.role' group by value"
        ).fetchall()
        sources = con.execute(
            "select distinct value from tags where key = 'source/accuracy'"
        ).fetchall()
    assert dict(roles) == {"experiment": 1, "phase": 1}
    assert sources == [("estimated",)]  # the one-shot accuracy is marked an estimate
