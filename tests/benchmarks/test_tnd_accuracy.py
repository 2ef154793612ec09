"""The single-objective (accuracy only) benchmark runs end to end on the NB201 table."""

from __future__ import annotations

import re

from benchmarks import tnd_accuracy


def test_accuracy_only_benchmark_prints_one_row_per_engine(nb201_path, capsys):
    tnd_accuracy.main(
        ["--engines", "tnd,random", "--seeds", "2", "--budgets", "20,40", "--jobs", "1"]
        + ["--table", str(nb201_path)]
    )
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line for line in out.splitlines() if line.startswith(("tnd", "random"))
    }
    assert set(rows) == {"tnd", "random"}
    for line in rows.values():
        accs = [float(x) for x in re.findall(r"(\d+\.\d+) ±", line)]
        assert len(accs) == 2 and all(80.0 < a < 95.0 for a in accs)
    assert "6 runs" in out  # tnd runs once per budget (2 seeds x 2), random once per seed (2)
