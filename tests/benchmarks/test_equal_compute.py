"""The equal-compute benchmarks' shared helpers and their scripts' entry points."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import equal_compute as ec
from paretune.search_algos.random_search import RandomSearch
from paretune.spaces.nb201 import NB201Space

ROOT = Path(__file__).resolve().parents[2]


def test_hv_is_normalised_by_the_box():
    assert ec.hv([(50.0, 0.05)]) == pytest.approx(50.0 * 0.05 / ec.BOX)
    assert ec.hv([(50.0, 0.05), (40.0, 0.06)]) == pytest.approx(0.25)  # dominated point
    assert ec.hv([(100.0, 0.0)]) == pytest.approx(1.0)


def test_print_table_aligns_like_fixed_width_formats(capsys):
    columns = [("method", 10), ("HV", 7), ("ratio", 8)]
    ec.print_table(columns, [["a", f"{0.12345:.4f}", f"{2.5:.2f}x"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'method':10} {'HV':>7} {'ratio':>8}"
    assert lines[1] == "-" * len(lines[0])
    assert lines[2] == f"{'a':10} {0.12345:7.4f} {2.5:7.2f}x"


def test_standalone_counts_trials_and_sample_steps(capsys):
    ev = ec.evaluator(1, 0)
    engine = RandomSearch(NB201Space(), ec.objective_set(), seed=0)
    out = ec.trials(engine, ev, 2, 1)
    assert out["jobs"] == len(out["points"]) == 2
    assert out["train"] == 2 * len(ev.data().train)
    assert all(0 <= acc <= 100 and params > 0 for acc, params in out["points"])
    rows: dict = {}
    ec.record(rows, "random", 0, out, 1.5, ("train", "jobs"), " x")
    assert rows["random"]["jobs"] == [2] and rows["random"]["wall"] == [1.5]
    assert capsys.readouterr().out.endswith(f"train={out['train']} x\n")


@pytest.mark.parametrize("module", ["pertnas_search", "tnd_supernet"])
def test_standalone_methods_of_both_benchmarks(module):
    bench = importlib.import_module(f"benchmarks.{module}")
    for name in ("random", module.split("_")[0]):
        out = bench.standalone(name, 1, 1, 0)
        assert out["jobs"] == len(out["points"]) == 1
        assert out["train"] == ec.trial_steps(ec.evaluator(1, 0), 1)


@pytest.mark.parametrize("script", ["pertnas_search.py", "tnd_supernet.py"])
def test_scripts_run_from_any_folder(tmp_path, script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--epochs" in done.stdout
