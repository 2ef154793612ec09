"""Every shipped config runs through the ``paretune`` entry point (a subprocess in a fresh local
Ray, with overrides that shrink it to seconds), and what MLflow shows for each space.

The DARTS and MobileNet configs also run with a latency predictor trained on networks of
their own space measured here, screening candidates against a limit on the predicted latency.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# Configs whose ``paretune run`` another test covers (file: test).
RUN_ELSEWHERE = {
    "custom_space": "tests/platform/test_spaces_e2e.py::test_custom_space_runs_end_to_end",
    "nb201_tabular": "tests/platform/test_data_cli.py (paretune run from another folder)",
    "oneshot_digits": "tests/platform/test_supernet_e2e.py::test_oneshot_config_runs_end_to_end",
    "prune_nb201": "tests/platform/test_pruning_stage.py::test_prune_config_runs_end_to_end",
    "tnd_supernet_digits": "tests/platform/test_tnd_supernet.py::test_config_runs_end_to_end",
    "nas_lid_digits": "tests/platform/test_nas_lid.py::test_paretune_run_nas_lid_digits",
    "pertnas_supernet_digits": (
        "tests/platform/test_pertnas_supernet.py::test_runs_end_to_end_and_resumes_a_failed_job"
    ),
    "pertnas_supernet_darts_digits": (
        "tests/platform/test_pertnas_supernet.py::test_darts_config_runs_to_its_topology_stage"
    ),
}
TRAIN = ["search.num_samples=2", "evaluator.epochs=1"]
# Per config: the overrides that make it small, and the trials it then runs.
SMALL_RUNS: dict[str, tuple[list[str], int]] = {
    "quickstart": (TRAIN, 2),
    "darts_digits": (TRAIN, 2),
    "mobilenet_digits": (TRAIN, 2),
    "pertnas_digits": ([*TRAIN, "evaluator.finetune_epochs=1"], 2),
    "tnd_digits": ([*TRAIN, "search.params.batch_size=2"], 2),
    "pertnas_nb201": (["search.num_samples=10"], 10),
    "tnd_nb201": (["search.num_samples=10"], 10),
    "macro_tabular": (["search.num_samples=10"], 10),
}
# NAS-Bench-Macro's table: the variable (.ci/run sets it), else shared/ beside the repository.
MACRO_TABLE = os.environ.get("PARETUNE_NASBENCH_MACRO") or str(
    ROOT.parent / "shared" / "benchmarks" / "nasbench_macro"
)


def paretune_command() -> list[str]:
    """The installed ``paretune`` script beside this Python (else ``python -m paretune``)."""
    script = Path(sys.executable).parent / "paretune"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "paretune"]


def run_conf(name: str, tmp_path: Path, overrides: list[str]) -> tuple[str, Path]:
    """``paretune run conf/<name>.yaml`` from the repository root; returns stdout and the DB."""
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "RAY_ADDRESS": "local"}  # not the test session's cluster
    proc = subprocess.run(
        [
            *paretune_command(),
            "run",
            f"conf/{name}.yaml",
            *overrides,
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
    return proc.stdout, db


def mlflow_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


def sweep_files() -> list[Path]:
    """The ``paretune sweep`` files of conf/ (a ``base:`` config and members), not run configs."""
    import yaml

    return [p for p in sorted(CONF.glob("*.yaml")) if "base" in (yaml.safe_load(p.read_text()))]


def test_every_shipped_config_is_run_by_a_test():
    shipped = {p.stem for p in CONF.glob("*.yaml")} - {p.stem for p in sweep_files()}
    covered = set(SMALL_RUNS) | set(RUN_ELSEWHERE)
    assert shipped - covered == set(), "configs no test runs: add them to SMALL_RUNS"
    assert covered - shipped == set(), "configs tested here that conf/ no longer ships"


@pytest.mark.slow
def test_every_shipped_sweep_reads_and_its_members_validate(nb201_path, tmp_path):
    """Sweep files are run by ``paretune sweep`` (test_sweep.py runs one of its own); the shipped
    ones are read and every member built (config, data, searcher) as a sweep does first."""
    from paretune.platform.sweep import read_spec, validate

    for path in sweep_files():
        spec = read_spec(path)
        assert spec.members, path.name
        assert validate(spec, tmp_path / path.stem) == [], path.name


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in SMALL_RUNS if n not in ("darts_digits", "mobilenet_digits")]
)
def test_shipped_config_runs(name, tmp_path):
    if "nb201" in name and not os.environ.get("PARETUNE_NB201"):
        pytest.skip("needs PARETUNE_NB201 (.ci/run sets it)")
    overrides, trials = SMALL_RUNS[name]
    if name == "macro_tabular":
        if not Path(MACRO_TABLE).exists():
            pytest.skip("needs PARETUNE_NASBENCH_MACRO (.ci/run sets it)")
        overrides = [*overrides, f"evaluator.path={MACRO_TABLE}"]
    out, db = run_conf(name, tmp_path, overrides)
    assert f"{trials} trials, 0 failed" in out
    finished = mlflow_rows(db, "select count(*) from runs where status = 'FINISHED'")[0][0]
    assert finished >= trials + 1  # the trial runs and their parent


# ---------------------------------------------------------------------- DARTS and MobileNet
DIGITS = {"in_channels": 1, "num_classes": 10}
# The network each config trains on 8x8 digits, as its evaluator builds it.
BUILDS = {
    "darts_digits": ("darts", {"channels": 8, "layers": 3, **DIGITS}),
    "mobilenet_digits": (
        "mobilenet",
        {"width_mult": 0.25, "stem_stride": 1, "dropout": 0.0, **DIGITS},
    ),
}


def measured_predictor(name: str, folder: Path) -> tuple[Path, float]:
    """A predictor trained on 16 networks of the config's space measured here; returns its
    folder and the median measured latency (ms)."""
    from paretune.objectives.predictor import LatencyPredictor, measured_pairs
    from paretune.spaces import make_space

    kind, build = BUILDS[name]
    space = make_space(kind)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(16)]
    pairs = measured_pairs(space, archs, (1, 1, 8, 8), build=build, warmup=2, repeats=3)
    settings = {"hidden": 32, "layers": 3, "epochs": 30, "ensemble": 1}
    predictor = LatencyPredictor(settings, space=space).fit(pairs.archs, pairs.latencies)
    return predictor.save(folder), float(np.median(pairs.latencies["cpu"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "decision", "cell_space"),
    [("darts_digits", "normal_2_op1", True), ("mobilenet_digits", "s1_depth", False)],
)
def test_darts_and_mobilenet_configs_run_with_a_predictor_and_screening(
    name, decision, cell_space, tmp_path
):
    folder, median = measured_predictor(name, tmp_path / "predictor")
    limited = f"{{name: predicted_latency, direction: min, limit: {median:.4f}}}"
    overrides = [
        *SMALL_RUNS[name][0],
        f"objectives.2={limited}",  # replaces the config's third objective
        f"predictor.path={folder}",
        "screening.enabled=true",
    ]
    out, db = run_conf(name, tmp_path, overrides)
    assert "2 trials, 0 failed" in out
    params = {k for (k,) in mlflow_rows(db, "select distinct key from params")}
    assert decision in params  # decision -> option as params
    predicted = mlflow_rows(db, "select value from metrics where key = 'predicted_latency'")
    assert predicted and all(v > 0 for (v,) in predicted)
    archs = [v for (v,) in mlflow_rows(db, "select value from tags where key = 'arch'")]
    assert len(archs) >= 2
    if cell_space:  # the genotype text as the tag, read back by the space
        from paretune.spaces import DartsSpace

        assert all(a.startswith("Genotype(normal=[") for a in archs)
        DartsSpace().decode(archs[0])
    pictures = list((tmp_path / "mlartifacts").rglob("cell.png"))
    assert len(pictures) >= 2  # a cell picture (DARTS) or a decision table (MobileNet) per trial


@pytest.mark.slow
def test_the_custom_model_example_runs_from_python(tmp_path):
    """``paretune.run("conf/custom_space.yaml", overrides)`` in a user's script (the YAML run
    is test_spaces_e2e's): the user's own CNN trains in every trial."""
    script = (
        "import sys, paretune\n"
        "result = paretune.run('conf/custom_space.yaml', sys.argv[1:], verbose=0)\n"
        "rows = result.report.rows\n"
        "print('ROWS', len(rows), sum(r.ok for r in rows), sorted(rows[0].values))\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "search.num_samples=2",
            "evaluator.args.epochs=1",
            f"storage.path={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": "local"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ROWS 2 2 ['accuracy', 'latency', 'params']" in proc.stdout
