"""PertNAS with real training on digits: weight inheritance on vs off, at equal training steps.

The ``pertnas`` engine proposes mostly one-edit perturbations of evaluated architectures. With
inheritance a child starts from its parent's trained weights (every tensor whose name and shape
match, except those of the perturbed edge, see :func:`paretune.objectives.train.inherit_weights`)
and fine-tunes for fewer epochs, PertNAS's recovery fine-tune. The question is whether that buys
a better front for the same training compute.

The search runs through the engine's ask/tell interface with :class:`TrainEvaluator` directly
(no Ray), one trial at a time, and passes ``meta["parent_checkpoint"]`` exactly as
:class:`paretune.platform.searcher.ParetoSearcher` does: the parent's saved weights
when the parent's result carried them. Three arms, each run with the same engine seeds:

* ``inherit``: a trial without a parent (the engine's seeds) trains ``--epochs`` epochs from
  scratch; a child inherits its parent's weights and fine-tunes ``--finetune`` epochs (when the
  parent left no weights the child trains ``--epochs`` from scratch).
* ``scratch-same``: the same schedule (seeds ``--epochs``, children ``--finetune`` epochs) with
  every network trained from scratch. Inheritance is the only difference, so this is the
  controlled "off" arm: the same number of trials for the same steps.
* ``scratch-full``: every trial trains ``--epochs`` from scratch, the usual search without
  inheritance: each trial is fully trained, so fewer trials fit in the same steps.

**Fairness.** Every arm stops at the first trial that brings its total training steps (epochs
actually trained x steps per epoch, read from each evaluation) to ``--budget-epochs`` epochs'
worth, so the three arms spend the same training compute, give or take one trial. Measurement
(parameters, FLOPs, latency) is not training and is not counted. An inherited child's accuracy
rests on its ancestors' training too; that is the point of inheritance, and it is paid for in
the budget (the ancestors' epochs were counted when they were trained).

**Objectives** (what the engine optimises and the hypervolume is computed on): validation
accuracy (max) and ``--objectives`` costs, all measured by the evaluator. The default costs
are parameters and FLOPs: both are measured on the built network and do not depend on the
weights, and on a shared, loaded CPU batch-1 latency is mostly noise (``--costs params,latency``
uses it). The hypervolume of an arm is that of all its trials within the budget, in objectives
normalised by the ideal and nadir of every trial of every arm and seed (reference point 1.1 on
each axis), once with the validation accuracy the search saw and once with the same trials'
test accuracy (held out from the search).

Usage::

    python benchmarks/pertnas_inheritance.py     # 2 CPUs: ~1.5 min idle, ~11 min loaded
    python benchmarks/pertnas_inheritance.py --seeds 0,1,2,3,4 --budget-epochs 90 --save r.json
    python benchmarks/pertnas_inheritance.py --load r.json          # the table again
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretune.objectives.base import ObjectiveSet  # noqa: E402
from paretune.search_algos.pareto import hypervolume  # noqa: E402

ARMS = ("inherit", "scratch-same", "scratch-full")
COSTS = ("params", "flops", "latency", "energy")


def objective_set(costs: list[str]) -> ObjectiveSet:
    return ObjectiveSet.of(("accuracy", "max"), *[(c, "min") for c in costs])


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One search (one arm, one seed) until the training budget is spent."""
    import torch

    from paretune.objectives.train import TrainEvaluator
    from paretune.search_algos import make_engine

    torch.set_num_threads(1)
    arm, seed = job["arm"], job["seed"]
    latency = "latency" in job["costs"]
    common = {
        "dataset": "digits",
        "channels": job["channels"],
        "cells_per_stage": 1,
        "batch_size": job["batch_size"],
        "lr": job["lr"],
        "device": "cpu",
        "threads": 1,
        "energy_meter": "estimate",
        # Latency is measured either way; fewer repeats when it is not an objective.
        "latency_warmup": 5 if latency else 1,
        "latency_repeats": 20 if latency else 3,
        "seed": seed,
    }
    full = TrainEvaluator(epochs=job["epochs"], finetune_epochs=job["finetune"], **common)
    short = TrainEvaluator(epochs=job["finetune"], **common)  # scratch-same children
    data = full.data()
    steps_per_epoch = math.ceil(len(data.train) / job["batch_size"])
    budget = job["budget_epochs"] * steps_per_epoch

    objectives = objective_set(job["costs"])
    engine = make_engine("pertnas", full.space, objectives, seed=seed)
    weights: dict[int, str] = {}  # proposal id -> its trained weights (as ParetoSearcher keeps)
    rows: list[dict[str, Any]] = []
    steps = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"pertnas-{arm}-{seed}-") as tmp:
        while steps < budget:
            proposal = engine.ask()
            if proposal is None:
                break
            meta = dict(proposal.meta)
            parent = meta.get("parent")
            if arm == "inherit" and parent is not None and int(parent) in weights:
                meta["parent_checkpoint"] = weights[int(parent)]
            evaluator = short if arm == "scratch-same" and parent is not None else full
            trial_dir = Path(tmp) / f"trial-{proposal.id}"
            try:
                ev = evaluator.evaluate(proposal.arch, meta=meta, trial_dir=trial_dir)
            except Exception as exc:  # noqa: BLE001 - a failed trial is told, not fatal
                engine.tell_failure(proposal, f"{type(exc).__name__}: {exc}")
                continue
            values = {n: ev.values[n] for n in objectives.names}
            if isinstance(ev.extras.get("weights_path"), str):
                weights[proposal.id] = ev.extras["weights_path"]
            engine.tell(proposal, values)
            steps += int(ev.extras["epochs"]) * steps_per_epoch
            rows.append(
                {
                    **values,
                    "test_accuracy": ev.values["test_accuracy"],
                    "epochs": int(ev.extras["epochs"]),
                    "inherited": bool(ev.extras.get("inherited")),
                    "child": parent is not None,
                    "arch": proposal.arch,
                }
            )
    return {
        "arm": arm,
        "seed": seed,
        "rows": rows,
        "steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "seconds": time.perf_counter() - started,
    }


def hv_of(rows: list[dict], objectives: ObjectiveSet, acc_key: str, lo, hi) -> float:
    pts = objectives.matrix([{**r, "accuracy": r[acc_key]} for r in rows])
    span = np.where(hi > lo, hi - lo, 1.0)
    return hypervolume((pts - lo) / span, np.full(len(objectives), 1.1))


def summarise(results: list[dict], objectives: ObjectiveSet) -> list[str]:
    """Per arm over seeds: hypervolumes, their ratio to the first arm, the gap to the seed's
    union front, and what the search did (trials, inherited trials, epochs, accuracies)."""
    every = [r for res in results for r in res["rows"]]
    keys = ("accuracy", "test_accuracy")
    bounds = {}
    for key in keys:
        pts = objectives.matrix([{**r, "accuracy": r[key]} for r in every])
        bounds[key] = (pts.min(axis=0), pts.max(axis=0))
    union = {  # per seed: every trial of every arm
        seed: [r for res in results if res["seed"] == seed for r in res["rows"]]
        for seed in {res["seed"] for res in results}
    }
    arms = [a for a in ARMS if any(res["arm"] == a for res in results)]
    by_arm: dict[str, dict[str, list[float]]] = {a: defaultdict(list) for a in arms}
    for res in results:
        rows, stats = res["rows"], by_arm[res["arm"]]
        for key in keys:
            hv = hv_of(rows, objectives, key, *bounds[key])
            stats[f"hv_{key}"].append(hv)
            best = hv_of(union[res["seed"]], objectives, key, *bounds[key])
            stats[f"gap_{key}"].append(max(0.0, 100.0 * (1.0 - hv / best)))
        stats["trials"].append(len(rows))
        stats["epochs"].append(res["steps"] / res["steps_per_epoch"])
        stats["inherited"].append(sum(r["inherited"] for r in rows))
        children = [r["accuracy"] for r in rows if r["child"]]
        stats["child_acc"].append(statistics.mean(children) if children else math.nan)
        stats["best_acc"].append(max(r["accuracy"] for r in rows))
        stats["seconds"].append(res["seconds"])

    def ms(vals: list[float], digits: int = 3) -> str:
        if len(vals) < 2:
            return f"{vals[0]:.{digits}f}"
        return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"

    def mean(arm: str, key: str) -> float:
        return statistics.mean(by_arm[arm][key])

    head = (
        f"{'arm':14s}{'HV valid':>16s}{'ratio':>7s}{'gap valid %':>14s}{'HV test':>16s}"
        f"{'ratio':>7s}{'gap test %':>14s}{'trials':>8s}{'inherited':>10s}{'epochs':>8s}"
        f"{'child acc %':>14s}{'best acc %':>12s}{'time s':>8s}"
    )
    lines = [head, "-" * len(head)]
    for arm in arms:
        s = by_arm[arm]
        lines.append(
            f"{arm:14s}{ms(s['hv_accuracy']):>16s}"
            f"{mean(arm, 'hv_accuracy') / mean(arms[0], 'hv_accuracy'):>7.3f}"
            f"{ms(s['gap_accuracy'], 2):>14s}{ms(s['hv_test_accuracy']):>16s}"
            f"{mean(arm, 'hv_test_accuracy') / mean(arms[0], 'hv_test_accuracy'):>7.3f}"
            f"{ms(s['gap_test_accuracy'], 2):>14s}"
            f"{mean(arm, 'trials'):>8.1f}{mean(arm, 'inherited'):>10.1f}{mean(arm, 'epochs'):>8.1f}"
            f"{ms(s['child_acc'], 1):>14s}{ms(s['best_acc'], 1):>12s}{mean(arm, 'seconds'):>8.0f}"
        )
    lines += ["", f"gap to the seed's union front (valid acc, %) per seed: {', '.join(arms)}"]
    for seed in sorted(union):
        gaps = [
            f"{by_arm[a]['gap_accuracy'][i]:6.2f}"
            for a in arms
            for i, res in enumerate(r for r in results if r["arm"] == a)
            if res["seed"] == seed
        ]
        lines.append(f"  seed {seed}: " + "  ".join(gaps))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="engine (and data split) seeds")
    p.add_argument("--arms", default=",".join(ARMS), help=f"of {list(ARMS)}")
    p.add_argument("--epochs", type=int, default=3, help="epochs from scratch")
    p.add_argument("--finetune", type=int, default=1, help="epochs of a child (fine-tune)")
    p.add_argument("--budget-epochs", type=int, default=45, help="training budget per search")
    p.add_argument("--costs", default="params,flops", help=f"cost objectives, of {list(COSTS)}")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--jobs", type=int, default=2, help="searches run at once (processes)")
    p.add_argument("--save", help="write the raw results (every trial) to this JSON file")
    p.add_argument("--load", help="summarise raw results saved by --save instead of running")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    costs = [c.strip() for c in args.costs.split(",") if c.strip()]
    if set(arms) - set(ARMS) or set(costs) - set(COSTS) or not costs:
        raise SystemExit(f"arms must be of {list(ARMS)}, costs of {list(COSTS)}")
    if not 1 <= args.finetune <= args.epochs:
        raise SystemExit("need 1 <= --finetune <= --epochs")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [
        {
            "arm": arm,
            "seed": seed,
            "costs": costs,
            "epochs": args.epochs,
            "finetune": args.finetune,
            "budget_epochs": args.budget_epochs,
            "channels": args.channels,
            "batch_size": args.batch_size,
            "lr": args.lr,
        }
        for seed in seeds
        for arm in arms
    ]
    start = time.perf_counter()
    if args.load:  # the saved run's settings describe its results
        saved = json.loads(Path(args.load).read_text())
        args = argparse.Namespace(**{**saved["args"], "load": args.load, "save": None})
        seeds, costs, results, jobs = saved["seeds"], saved["costs"], saved["results"], []
    elif args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.jobs) as pool:
            results = pool.map(run_arm, jobs, chunksize=1)
    else:
        results = [run_arm(job) for job in jobs]
    if args.save:
        saved = {"args": vars(args), "seeds": seeds, "costs": costs, "results": results}
        Path(args.save).write_text(json.dumps(saved))
    objectives = objective_set(costs)
    print(
        f"pertnas on digits (NB201 cell, C={args.channels}, N=1, batch {args.batch_size}, "
        f"lr {args.lr}), objectives {objectives.names}; seeds {seeds}; "
        f"budget {args.budget_epochs} epochs of training per search; scratch {args.epochs} "
        f"epochs, fine-tune {args.finetune}; HV of objectives normalised over all trials "
        f"(reference 1.1), ratio to {ARMS[0]}, gap = 1 - HV / HV(all arms' trials of the seed)"
    )
    print("\n".join(summarise(results, objectives)))
    if jobs:
        print(
            f"\n{len(jobs)} searches in {time.perf_counter() - start:.0f} s wall, {args.jobs} jobs"
        )


if __name__ == "__main__":
    main()
