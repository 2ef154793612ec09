"""Shared parts of the equal-compute benchmarks (``tnd_supernet``, ``pertnas_search``): the digits
evaluator, the objectives and hypervolume, stand-alone trials of a search engine, the retraining
of a supernet search's finals, per-seed records and the result table.

Compute = training sample-steps (images through a forward+backward weight step). Hypervolume: of
every stand-alone-trained result of a method, minimisation rows ``(-accuracy, params)`` against
the fixed reference ``(0 %, 0.1 M)``, normalised by the box (100 x 0.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from paretune.objectives.base import Objective, ObjectiveSet
from paretune.objectives.train import TrainEvaluator
from paretune.search_algos.pareto import hypervolume
from paretune.search_algos.random_search import RandomSearch
from paretune.spaces.nb201 import NB201Space

OBJ = [("accuracy", "max"), ("params", "min")]
REFERENCE = np.array([0.0, 0.1])
BOX = 100.0 * 0.1


def evaluator(epochs: int, seed: int) -> TrainEvaluator:
    """The stand-alone ``train`` evaluator on digits (NB201 cell, C=8, one cell per stage)."""
    return TrainEvaluator(
        dataset="digits",
        epochs=epochs,
        batch_size=64,
        lr=0.05,
        channels=8,
        cells_per_stage=1,
        threads=1,
        energy_meter="estimate",
        latency_warmup=0,
        latency_repeats=1,
        save_weights=False,
        seed=seed,
    )


def objective_set() -> ObjectiveSet:
    return ObjectiveSet(tuple(Objective(n, d) for n, d in OBJ))


def hv(points: list[tuple[float, float]]) -> float:
    """Normalised hypervolume of ``(accuracy, params)`` points."""
    rows = np.array([[-a, p] for a, p in points], dtype=float).reshape(-1, 2)
    return hypervolume(rows, REFERENCE) / BOX


def trial_steps(ev: TrainEvaluator, epochs: int) -> int:
    """Training sample-steps of one stand-alone trial of ``epochs`` epochs."""
    return epochs * len(ev.data().train)


def retrain(ev: TrainEvaluator, archs: Iterable[Sequence[int]]) -> list[tuple[float, float]]:
    """``(accuracy, params)`` of every architecture trained stand-alone like a trial."""
    points = []
    for arch in archs:
        values = ev.evaluate(tuple(arch)).values
        points.append((values["accuracy"], values["params"]))
    return points


def trials(engine: Any, ev: TrainEvaluator, budget: int, epochs: int) -> dict:
    """Up to ``budget`` stand-alone trials proposed by ``engine`` (ask/tell): their points, the
    training sample-steps and the trial count."""
    points = []
    for _ in range(budget):
        prop = engine.ask()
        if prop is None:
            break
        values = ev.evaluate(prop.arch).values
        engine.tell(prop, values)
        points.append((values["accuracy"], values["params"]))
    train = len(points) * trial_steps(ev, epochs)
    return {"points": points, "train": train, "jobs": len(points)}


def standalone(
    engine_name: str,
    engine_cls: Any,
    budget: int,
    epochs: int,
    seed: int,
    engine_kw: dict[str, Any] | None = None,
) -> dict:
    """:func:`trials` of ``engine_cls(space, objectives, seed=seed, **engine_kw)`` on NB201
    (``engine_name`` ``"random"``: random search), each trained ``epochs`` epochs."""
    ev = evaluator(epochs, seed)
    if engine_name == "random":
        engine = RandomSearch(NB201Space(), objective_set(), seed=seed)
    else:
        engine = engine_cls(NB201Space(), objective_set(), seed=seed, **(engine_kw or {}))
    return trials(engine, ev, budget, epochs)


def record(
    rows: dict[str, dict[str, list]],
    name: str,
    seed: int,
    out: dict,
    wall: float,
    keys: Sequence[str],
    extra: str = "",
) -> None:
    """Append one seed's hypervolume, wall time and ``out[key]`` for ``keys`` to ``rows[name]``
    and print its progress line."""
    r = rows.setdefault(name, {})
    r.setdefault("hv", []).append(hv(out["points"]))
    r.setdefault("wall", []).append(wall)
    for key in keys:
        r.setdefault(key, []).append(out[key])
    print(f"  {name} seed {seed}: hv={r['hv'][-1]:.4f} train={out['train']}{extra}", flush=True)


def print_table(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[str]]) -> None:
    """A header, a rule and ``rows`` of formatted cells: the first column left-aligned to its
    width, the others right-aligned."""

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:{columns[0][1]}}"
        rest = [f"{c:>{w}}" for c, (_, w) in zip(cells[1:], columns[1:], strict=True)]
        return " ".join([first, *rest])

    head = line([title for title, _ in columns])
    print(head)
    print("-" * len(head))
    for cells in rows:
        print(line(cells))
