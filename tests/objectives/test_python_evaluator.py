"""PythonEvaluator: a user's function on a dict architecture; ColumnTableEvaluator; any space's
network through TrainEvaluator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from paretune.objectives import make_evaluator
from paretune.objectives.base import Evaluator
from paretune.objectives.python_evaluator import PythonEvaluator, space_from_spec

CHOICES = {"kind": "choices", "decisions": {"width": [8, 16], "depth": [1, 2], "act": ["relu"]}}
USER = """
def evaluate(arch, report, scale=1.0):
    for epoch in (1, 2):
        report(epoch=epoch, accuracy=10.0 * epoch)
    return {"accuracy": (arch["width"] * scale, "measured"), "params": arch["depth"] / 10,
            "note": "kept"}

def wrong(arch, report):
    return {"accuracy": 1.0}

def boom(arch, report):
    raise RuntimeError("the user's model failed")

def text(arch, report):
    return {"accuracy": "high", "params": 1}

def with_dir(arch, report, trial_dir):
    return {"accuracy": 1.0, "params": float(len(trial_dir))}

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    name = f"user_eval_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (folder / f"{name}.py").write_text(USER)
    return folder / name


def make(user_module: Path, fn: str = "evaluate", **kw) -> PythonEvaluator:
    return PythonEvaluator(
        f"{user_module.name}:{fn}",
        metrics={"accuracy": "max", "params": "min"},
        space=CHOICES,
        sources=[str(user_module.parent)],
        **kw,
    )


def test_calls_the_function_with_a_dict_and_forwards_reports(user_module):
    ev = make(user_module, args={"scale": 2.0})
    assert isinstance(ev, Evaluator)
    assert ev.metrics()["accuracy"].direction == "max"
    space = ev.space
    arch = space.from_dict({"width": 16, "depth": 2, "act": "relu"})
    reports: list[dict] = []
    result = ev.evaluate(arch, reports.append)
    assert reports == [{"epoch": 1, "accuracy": 10.0}, {"epoch": 2, "accuracy": 20.0}]
    assert result.values == {"accuracy": 32.0, "params": 0.2}
    assert result.sources == {"accuracy": "measured", "params": "measured"}
    assert result.extras == {"note": "kept"}


def test_made_through_the_registry(user_module):
    ev = make_evaluator(
        "python",
        function=f"{user_module.name}:evaluate",
        metrics=["accuracy"],
        space=CHOICES,
        sources=[str(user_module.parent)],
    )
    assert isinstance(ev, PythonEvaluator)


def test_missing_metric_bad_value_and_exceptions_fail(user_module):
    arch = (0, 0, 0)
    with pytest.raises(ValueError, match=r"returned no \['params'\]"):
        make(user_module, "wrong").evaluate(arch)
    with pytest.raises(ValueError, match=r"accuracy = 'high' is not a number"):
        make(user_module, "text").evaluate(arch)
    with pytest.raises(RuntimeError, match="the user's model failed"):
        make(user_module, "boom").evaluate(arch)


def test_trial_dir_is_passed_when_the_function_takes_it(user_module):
    result = make(user_module, "with_dir").evaluate((0, 0, 0), trial_dir="/abc")
    assert result.values["params"] == 4.0


@pytest.mark.parametrize(
    ("fn", "sources", "expected"),
    [
        ("nope:evaluate", None, r"evaluator.function = 'nope:evaluate': module 'nope' not found"),
        ("{mod}:missing", "ok", r"has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "ok", r"int is not callable"),
        ("{mod}:evaluate", "/no/such/folder", r"evaluator.sources: '/no/such/folder' is not"),
    ],
)
def test_bad_function_is_one_line(user_module, fn, sources, expected):
    folder = str(user_module.parent) if sources == "ok" else sources
    with pytest.raises(ValueError, match=expected) as info:
        PythonEvaluator(
            fn.format(mod=user_module.name),
            metrics=["accuracy"],
            space=CHOICES,
            sources=None if folder is None else [folder],
        )
    assert "\n" not in str(info.value)


def test_space_from_spec_builds_each_kind_once():
    assert space_from_spec(None).name == "nb201"
    darts = space_from_spec({"kind": "darts"})
    assert darts is space_from_spec({"kind": "darts"})
    restricted = space_from_spec({"kind": "nb201", "restrict": {"e0_1": ["none", "skip_connect"]}})
    assert restricted.size == 2 * 5**5


@pytest.mark.parametrize(
    ("kind", "build", "expected_params"),
    [("darts", {}, None), ("mobilenet", {"width_mult": 0.25, "stem_stride": 1}, None)],
)
def test_train_builds_other_spaces(kind, build, expected_params):
    ev = make_evaluator(
        "train",
        space={"kind": kind},
        build=build,
        epochs=1,
        channels=4,
        threads=1,
        latency_warmup=0,
        latency_repeats=1,
        energy_meter="estimate",
        energy_batches=1,
        energy_min_window_s=0.0,
        energy_idle_s=0.01,
        save_weights=False,
    )
    data = ev.data()
    arch = ev.space.sample(np.random.default_rng(0))
    model = ev.build(arch, data)
    out = model(data.test.x[:2])
    assert tuple(out.shape) == (2, data.num_classes)
    kwargs = ev.build_kwargs(data)
    assert kwargs["in_channels"] == 1 and kwargs["num_classes"] == 10
    if kind == "darts":
        assert kwargs["layers"] == 3 and kwargs["channels"] == 4


def test_train_refuses_unknown_build_option_and_spaces_without_builder():
    with pytest.raises(ValueError, match=r"evaluator.build.depth = 3: not a parameter.*allowed"):
        make_evaluator("train", space={"kind": "darts"}, build={"depth": 3})
    with pytest.raises(ValueError, match=r"space 'choices' has no network builder"):
        make_evaluator("train", space=CHOICES)


# .ci/run sets it; else shared/ beside the repository, when there.
_SHARED_MACRO = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "nasbench_macro"
MACRO = os.environ.get("PARETUNE_NASBENCH_MACRO") or (
    str(_SHARED_MACRO) if _SHARED_MACRO.is_dir() else None
)


@pytest.mark.skipif(not MACRO, reason="set PARETUNE_NASBENCH_MACRO to the NAS-Bench-Macro folder")
def test_column_table_on_nasbench_macro(monkeypatch):
    monkeypatch.setenv("PARETUNE_NASBENCH_MACRO", MACRO)
    ev = make_evaluator(
        "table",
        benchmark="nasbench_macro",
        columns={"accuracy": "cifar10_test_acc_seed0", "params": "params_m"},
        space={"kind": "macro"},
    )
    best = ev.space.decode("2-2-2-1-2-2-2-0")
    result = ev.evaluate(best)
    assert result.values["params"] == pytest.approx(1.985514)
    assert result.values["cifar10_test_acc"] == pytest.approx(93.1267, abs=1e-3)
    assert result.sources["accuracy"] == "table"
    assert ev.metrics()["flops_m"].direction == "min"


def test_column_table_names_missing_columns_and_foreign_archs(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("arch,acc\n0-0-0-0-0-0-0-0,50\n")
    with pytest.raises(ValueError, match=r"\['latency'\] not in t.csv"):
        make_evaluator(
            "table", path=str(table), columns={"acc": "latency"}, space={"kind": "macro"}
        )
    ev = make_evaluator(
        "table", path=str(table), columns={"accuracy": "acc"}, space={"kind": "macro"}
    )
    assert ev.evaluate((0,) * 8).values == {"accuracy": 50.0}
    with pytest.raises(ValueError, match="is not in t.csv"):
        ev.evaluate((1,) * 8)
    with pytest.raises(ValueError, match=r"is not an architecture of space 'nb201'"):
        make_evaluator("table", path=str(table), columns={"accuracy": "acc"}, space=None)
    with pytest.raises(FileNotFoundError, match="PARETUNE_NOPE_BENCH"):
        make_evaluator("table", benchmark="nope_bench", columns={"accuracy": "acc"})
