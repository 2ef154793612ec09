"""The evaluator registry and the light import of paretune.objectives."""

from __future__ import annotations

import subprocess
import sys

import pytest

import paretune.objectives as objectives


def test_import_does_not_load_torch():
    code = (
        "import sys, paretune.objectives as o; "
        "assert o.EVALUATOR_KINDS == ('table', 'train', 'python', 'supernet'); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "o.make_evaluator; o.TableEvaluator; "
        "assert 'torch' not in sys.modules, 'torch imported by the table evaluator'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_registry_and_make_evaluator(nb201_path):
    from paretune.objectives.oneshot import SupernetEvaluator
    from paretune.objectives.python_evaluator import PythonEvaluator
    from paretune.objectives.table import TableEvaluator
    from paretune.objectives.train import TrainEvaluator

    assert objectives.EVALUATORS == {
        "table": TableEvaluator,
        "train": TrainEvaluator,
        "python": PythonEvaluator,
        "supernet": SupernetEvaluator,
    }
    ev = objectives.make_evaluator("table", path=nb201_path, latency_device="raspi4")
    assert isinstance(ev, TableEvaluator) and ev.latency_device == "raspi4"
    ev = objectives.make_evaluator("train", epochs=1, channels=4)
    assert isinstance(ev, TrainEvaluator) and ev.epochs == 1


def test_unknown_kind_or_setting():
    with pytest.raises(
        ValueError,
        match=r"unknown evaluator kind 'zero_cost' \(available: \['table', 'train', 'python', 'supernet'\]\)",
    ):
        objectives.make_evaluator("zero_cost")
    with pytest.raises(
        ValueError, match=r"evaluator 'train': unknown settings \['epoch'\].*'epochs'"
    ):
        objectives.make_evaluator("train", epoch=3)
    with pytest.raises(AttributeError):
        objectives.NoSuchThing  # noqa: B018
