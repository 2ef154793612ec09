"""TND's supernet mode on Ray: settings checked up front, stages as Tune trials, the final
genotypes retrained as ordinary trials, a stage resumed from its checkpoint in storage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from paretune.platform.config import ConfigError, config_from_dict
from paretune.platform.tnd_supernet import make_phase
from tests.platform.cli import ROOT, run_paretune, tail

FAULTS = str(Path(__file__).with_name("phase_faults.py"))
CONF = ROOT / "conf" / "tnd_supernet_digits.yaml"
SMALL = [
    "search.params.epochs=2",
    "search.params.warmup=1",
    "search.params.samples=3",
    "search.params.batch_size=256",
    "search.num_samples=2",
    "evaluator.epochs=1",
    "evaluator.channels=4",
]


def _config(params=None, **over):
    base = {
        "name": "t",
        "search": {"algorithm": "tnd", "mode": "supernet", "params": params or {}},
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
        (lambda: _config({"epoch": 3}), "search.params.epoch = 3: unknown"),
        (lambda: _config({"samples": 0}), "search.params.samples = 0: must be an integer >= 1"),
        (
            lambda: _config(evaluator={"kind": "table"}),
            "evaluator.kind = 'table': tnd's supernet mode",
        ),
        (
            lambda: _config(space={"name": "mobilenet"}),
            "space.kind = 'mobilenet': tnd's supernet mode has supernets for nb201, darts",
        ),
    ],
)
def test_bad_settings_are_one_clear_line(config, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_phase(config())
    assert "\n" not in str(info.value)


def test_the_placeholder_searcher_loads_the_final_searchers_state():
    from paretune.platform.prepare import make_searcher, prepare

    cfg = _config({"final": 2})
    prepared = prepare(cfg)
    searcher = make_searcher(prepared)  # the phase's placeholder: no engine parameters needed
    phase = make_phase(cfg)
    from paretune.platform.searcher import ParetoSearcher
    from paretune.search_algos.shrinking.final import FinalGenotypes

    real = ParetoSearcher(
        FinalGenotypes(prepared.space, prepared.objectives, archs=[[1] * 6, [3] * 6]),
        max_trials=2,
    )
    assert real.suggest("a")["arch"] and real.suggest("b")["arch"]
    assert real.suggest("c") == real.FINISHED
    searcher.set_state(json.loads(json.dumps(real.get_state())))
    assert searcher.engine.position == 2 and phase.num_stages == 3


def _common(tmp_path):
    return [f"storage.path={tmp_path / 'runs'}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"]


@pytest.mark.slow
def test_config_runs_end_to_end(tmp_path):
    proc = run_paretune("run", str(CONF), *SMALL, *_common(tmp_path), cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, tail(proc)
    (exp,) = (tmp_path / "runs").iterdir()
    stages = json.loads((exp / "phases" / "tnd_supernet" / "stages.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == [0, 1, 2]
    assert [max(len(o) for o in s["edge_options"]) for s in stages] == [3, 2, 1]
    finals = stages[-1]["final"]
    assert 1 <= len(finals) <= 2 and all(0 not in a for a in finals)
    assert "2 trials, 0 failed" in proc.stdout or f"{len(finals)} trials, 0 failed" in proc.stdout
    with sqlite3.connect(tmp_path / "m.db") as db:
        keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert {"tnd_stage0_train_loss", "tnd_stage2_mean_reward", "accuracy"} <= keys


@pytest.mark.slow
def test_a_stage_resumes_from_its_checkpoint(tmp_path):
    args = [*SMALL, "search.params.epochs=3", "failure.max_failures=0", *_common(tmp_path)]
    # tests/platform/phase_faults.py: the stage trial fails once after its epoch 1
    failed = run_paretune(
        "run", str(CONF), *args, cwd=tmp_path, timeout=1200, driver=[FAULTS, "tnd-epoch", "1"]
    )
    assert failed.returncode == 1, tail(failed)
    assert "TND stage 0 stopped at epoch 1" in failed.stderr
    (exp,) = (tmp_path / "runs").iterdir()
    (ckpt,) = (exp / "phases" / "tnd_supernet" / "stage0").glob("*/checkpoint_*/stage.json")
    before = json.loads(ckpt.read_text())
    assert before["epoch"] == 1
    done = run_paretune("resume", str(exp), cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, tail(done)
    stages = json.loads((exp / "phases" / "tnd_supernet" / "stages.json").read_text())["stages"]
    assert [h["epoch"] for h in stages[0]["history"]] == [1, 2, 3]
    # Epoch 1 was not trained again: the record is the checkpoint's, to the microsecond.
    assert stages[0]["history"][0] == before["history"][0]
    assert len(stages) == 3
