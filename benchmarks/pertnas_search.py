"""PertNAS as published (``search.mode: supernet``) vs stand-alone PertNAS vs random search.

Measured side by side in one process (no Ray; one torch thread), on scikit-learn's digits with
the NAS-Bench-201 cell network and the small settings of ``conf/pertnas_supernet_digits.yaml``
(C=8, one cell per stage, stand-alone training 4 epochs; the search's ``search.params``: a
population of 2, 2 epochs per network, F = 10 / 15, 3 lineages): objectives validation accuracy
(max) and parameters (min). The structure and the evaluator, hypervolume and reference are
those of ``benchmarks/tnd_supernet.py`` (imported).

* ``supernet-pertnas``: the plan of :mod:`paretune.search_algos.perturbation_supernet` run to
  its end job by job (:func:`paretune.objectives.pertnas_valuation.run_plan`: expansions,
  valuations' fine-tunes, partial supernets, fine retrains), then the lineages' genotypes
  retrained stand-alone like a trial (``--epochs``).
* ``standalone-pertnas`` (``mode: standalone``, today's engine, default settings) and
  ``random``: stand-alone trials of ``--epochs`` epochs (the ``train`` evaluator), as many as
  the supernet search's training compute of the same seed buys (rounded up).

Compute = training sample-steps: images through a forward+backward weight step, of every
training pass (the supernet search's networks and fine-tunes, and every stand-alone training).
Hypervolume: of every stand-alone-trained result of a method (its trials, or the retrained
genotypes), as in ``benchmarks/tnd_supernet.py``; mean and standard deviation over ``--seeds``.

    nice -n 5 .venv/bin/python -m benchmarks.pertnas_search           # about 20 min, 2 cores
    .venv/bin/python -m benchmarks.pertnas_search --seeds 1 --n-iter 1,2
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.tnd_supernet import OBJ, evaluator, hv
from paretune.objectives.base import Objective, ObjectiveSet
from paretune.objectives.pertnas_valuation import arch_of_options, check_params, run_plan
from paretune.search_algos.perturbation import PerturbationEvolution
from paretune.search_algos.perturbation_supernet import PertNASPlan
from paretune.search_algos.random_search import RandomSearch
from paretune.spaces.nb201 import NB201Space

CONF = Path(__file__).resolve().parents[1] / "conf" / "pertnas_supernet_digits.yaml"


def search_params(n_iter: int) -> dict:
    """The shipped digits config's ``search.params`` (and its lineage count), with ``n_iter``."""
    conf = yaml.safe_load(CONF.read_text())
    params = {**conf["search"]["params"], "n_iter": n_iter}
    return check_params(params, OBJ, "nb201", conf["search"]["num_samples"])


def supernet(n_iter: int, epochs: int, seed: int) -> dict:
    ev = evaluator(epochs, seed)
    n_train = len(ev.data().train)
    p = search_params(n_iter)
    plan = PertNASPlan(
        [[1, 2, 3, 4]] * 6,
        5,
        OBJ,
        p["lineages"],
        population=p["population"],
        n_iter=p["n_iter"],
        epochs=p["epochs"],
        f_expand=p["f_expand"],
        f_fine=p["f_fine"],
        f_topology=p["f_topology"],
        coarse_keep=p["coarse_keep"],
        seed=seed,
    )
    names = [n for n, _ in OBJ]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_plan(plan, ev, p, names, seed, tmp)
    train = sum(int(r.get("train_samples", 0)) for r in results.values())
    archs = []
    for options in plan.finals(results):
        arch = tuple(arch_of_options(ev.space, options))
        if arch not in archs:
            archs.append(arch)
    points = []
    for arch in archs:
        values = ev.evaluate(arch).values
        points.append((values["accuracy"], values["params"]))
    train += len(points) * epochs * n_train
    return {"points": points, "train": train, "jobs": len(results), "final": archs}


def standalone(engine_name: str, budget: int, epochs: int, seed: int) -> dict:
    ev = evaluator(epochs, seed)
    n_train = len(ev.data().train)
    objs = ObjectiveSet(tuple(Objective(n, d) for n, d in OBJ))
    if engine_name == "random":
        engine = RandomSearch(NB201Space(), objs, seed=seed)
    else:
        engine = PerturbationEvolution(NB201Space(), objs, seed=seed)
    points = []
    for _ in range(budget):
        prop = engine.ask()
        if prop is None:
            break
        values = ev.evaluate(prop.arch).values
        engine.tell(prop, values)
        points.append((values["accuracy"], values["params"]))
    return {"points": points, "train": len(points) * epochs * n_train, "jobs": len(points)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of a stand-alone training")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--n-iter", default="1", help="supernet iterations to run, comma-separated (e.g. 1,2)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    iters = [int(i) for i in args.n_iter.split(",")]
    n_train = len(evaluator(args.epochs, 0).data().train)
    trial = args.epochs * n_train
    rows: dict[str, dict[str, list]] = {}
    budgets = []

    def record(name: str, seed: int, out: dict, wall: float) -> None:
        r = rows.setdefault(name, {"hv": [], "train": [], "jobs": [], "wall": []})
        r["hv"].append(hv(out["points"]))
        r["train"].append(out["train"])
        r["jobs"].append(out["jobs"])
        r["wall"].append(wall)
        extra = f" finals={[list(a) for a in out['final']]}" if "final" in out else ""
        print(
            f"  {name} seed {seed}: hv={r['hv'][-1]:.4f} train={out['train']} "
            f"jobs/trials={out['jobs']}{extra}",
            flush=True,
        )

    for seed in range(args.seeds):
        budget = None
        for n in iters:
            t0 = time.perf_counter()
            out = supernet(n, args.epochs, seed)
            record(f"supernet-pertnas n_iter={n}", seed, out, time.perf_counter() - t0)
            if budget is None:  # the stand-alone methods get the first variant's compute
                budget = math.ceil(out["train"] / trial)
        budgets.append(budget)
        for name in ("standalone-pertnas", "random"):
            t0 = time.perf_counter()
            out = standalone(name.split("-")[0], budget, args.epochs, seed)
            record(name, seed, out, time.perf_counter() - t0)
    p = search_params(iters[0])
    print()
    print(
        f"digits, NB201 cell C=8 N=1, stand-alone training {args.epochs} epochs "
        f"({trial} sample-steps a trial); supernet: population {p['population']}, "
        f"{p['epochs']} epochs a network, F {p['f_expand']}/{p['f_fine']}, "
        f"{len(p['lineages'])} lineages; stand-alone budgets {budgets} trials; "
        f"seeds {list(range(args.seeds))}"
    )
    ref = rows["standalone-pertnas"]
    head = (
        f"{'method':28} {'HV mean':>8} {'sd':>7} {'HV/standalone':>14} {'HV/random':>10} "
        f"{'train sample-steps':>19} {'compute/standalone':>19} {'jobs':>6} {'wall s':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:28} {np.mean(r['hv']):8.4f} {np.std(r['hv']):7.4f} "
            f"{np.mean(r['hv']) / np.mean(ref['hv']):14.3f} "
            f"{np.mean(r['hv']) / np.mean(rows['random']['hv']):10.3f} "
            f"{np.mean(r['train']):19.0f} {np.mean(r['train']) / np.mean(ref['train']):19.3f} "
            f"{np.mean(r['jobs']):6.1f} {np.mean(r['wall']):7.1f}"
        )
    print(
        "HV: of the method's stand-alone-trained results (reference 0 %, 0.1 M params, "
        "normalised); sd over seeds; compute/standalone: training sample-steps / "
        "standalone-pertnas's."
    )


if __name__ == "__main__":
    main()
