"""Does zero-shot pruning keep the front? Hypervolume on the NB201 table, pruned vs unpruned.

Option fitness comes from the 725 architectures of NASLib's NB201 sample, scored by paretune's
proxies in ``benchmarks/zero_cost.py`` (``--values``, default ``/work/notes/pruning_zc_values.json``):
scoring all 15,625 networks with torch is too slow on this machine, so the sample stands in for
``prune.samples``. Every pruned space removes ``floor(ratio * 5)`` options per edge (ratio 0.5:
3 of 5 kept, 729 cells). Spaces compared:

* ``none``: the whole space;
* ``synflow`` / ``naswot``: paretune's proxy, plain rule (``naswot``: the subset it was computed on);
* ``synflow+front``: the front-protecting rule (options of the sample's (synflow, params) front kept);
* ``params``: pruning by parameter count (larger is better: the classic size baseline);
* ``zen``: the table's ``cifar10_zen_score`` column on the same sample;
* ``random``: random pruning (``--random`` seeds).

Per objective set (``acc-lat-energy``: CIFAR-10 test accuracy x Pixel 3 latency x Pi 5 ONNX
energy; ``acc-params``), it prints (1) exhaustively, the share of the true front's hypervolume
the pruned space can still reach and how many true-front cells it keeps, and (2) the
hypervolume gap (convention of ``benchmarks/nb201_bench.py``) after 100/300/1000 evaluations of
each engine (mean over ``--seeds``) on each space. Usage::

    python benchmarks/prune_quality.py --seeds 3 --out /work/notes/pruning_quality.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.nb201_bench import OBJECTIVE_SET_NAMES, NB201Benchmark  # noqa: E402
from paretune.objectives.nb201_table import load_table, resolve_table_path  # noqa: E402
from paretune.search_algos import make_engine  # noqa: E402
from paretune.search_algos.pareto import hypervolume  # noqa: E402
from paretune.search_algos.pruning import prune, random_prune  # noqa: E402
from paretune.spaces.nb201 import NB201Space  # noqa: E402


def pruned_spaces(values: list[dict], table, ratio: float, random_seeds: int) -> dict:
    """name -> restricted NB201 space."""
    space = NB201Space()
    zen = dict(zip(table["arch"], table["cifar10_zen_score"], strict=True))
    out = {"none": space}

    def by(name: str, key, rule: str = "proxy", cost=None):
        rows = [r for r in values if key(r) is not None and np.isfinite(key(r))]
        archs = [space.decode(r["arch"]) for r in rows]
        scores = [key(r) for r in rows]
        costs = [cost(r) for r in rows] if cost else None
        result = prune(space, archs, scores, ratio=ratio, rule=rule, costs=costs)
        out[name] = space.restrict(result.allowed)
        return len(rows)

    counts = {
        "synflow": by("synflow", lambda r: r["ours"].get("synflow")),
        "synflow+front": by(
            "synflow+front",
            lambda r: r["ours"].get("synflow"),
            "front",
            lambda r: r["ours"]["params"],
        ),
        "naswot": by("naswot", lambda r: r["ours"].get("naswot")),
        "params": by("params", lambda r: r["ours"].get("params")),
        "zen": by("zen", lambda r: float(zen[r["arch"]])),
    }
    for s in range(random_seeds):
        out[f"random{s}"] = space.restrict(random_prune(space, ratio, np.random.default_rng(s)))
    return out, counts


def run(bench: NB201Benchmark, space, engine: str, seed: int, budget: int) -> list:
    eng = make_engine(engine, space, bench.objectives, seed=seed)
    archs = []
    while len(archs) < budget:
        proposal = eng.ask()
        if proposal is None:
            break
        eng.tell(proposal, bench.values(proposal.arch))
        archs.append(proposal.arch)
    return archs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", default="/work/notes/pruning_zc_values.json")
    ap.add_argument("--source", choices=("ours", "naslib"), default="ours")
    ap.add_argument(
        "--naslib",
        default="/work/shared/benchmarks/nb201/sources/automl_NASLib/zc_nasbench201.json",
    )
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--random", type=int, default=3, help="random-pruning seeds")
    ap.add_argument("--budgets", default="100,300,1000")
    ap.add_argument("--engines", default="random,regularized_evolution,pertnas")
    ap.add_argument(
        "--cap", default="", help="engine=budget: run an engine only up to it (e.g. pertnas=300)"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.cap = {k: int(v) for k, v in (c.split("=") for c in args.cap.split(",") if c)}
    budgets = [int(b) for b in args.budgets.split(",")]
    table = load_table(resolve_table_path(None))
    if args.source == "naslib":  # NASLib's own values of the same 725 cells
        from benchmarks.zero_cost import NASLIB_NAME, naslib_string

        raw = json.loads(Path(args.naslib).read_text())["cifar10"]
        values = [
            {
                "arch": naslib_string(k),
                "ours": {p: v[n]["score"] for p, n in NASLIB_NAME.items() if n in v},
            }
            for k, v in raw.items()
        ]
    else:
        values = json.loads(Path(args.values).read_text())
    spaces, counts = pruned_spaces(values, table, args.ratio, args.random)
    lines = [
        f"Zero-shot pruning on the NB201 table, ratio {args.ratio} (floor(ratio*5) options "
        "removed per edge); option fitness = mean normalised rank of the sampled cells using "
        "the option; samples = NASLib's 725 NB201 cells, scored by "
        + (
            "NASLib's own proxy values (zc_nasbench201.json)"
            if args.source == "naslib"
            else "paretune's torch proxies (benchmarks/zero_cost.py)"
        )
        + f"; cells scored per proxy: {counts}",
        "",
    ]
    start = time.perf_counter()
    for objective_set in OBJECTIVE_SET_NAMES:
        bench = NB201Benchmark(table, objective_set)
        front = set(bench.front_archs())
        lines.append(f"== {objective_set}: true front {len(front)} cells")
        lines.append(
            f"{'space':<14} {'cells':>6} {'front cells kept':>16} {'reachable HV share':>18} "
            f"{'cheap-end HV share':>18}"
        )
        # The cheap end: true-front points whose first cost (latency / params) is at most the
        # front's median; its HV share counts only pruned-space points as cheap.
        cost = bench.front[:, 1]
        limit = float(np.median(cost))
        cheap_front = bench.front[cost <= limit]
        cheap_hv = hypervolume(cheap_front, bench.reference)
        for name, space in spaces.items():
            cells = list(space)
            kept = sum(a in front for a in cells)
            share = 1.0 - bench.gap(cells)
            pts = bench.points(cells)
            cheap = hypervolume(pts[pts[:, 1] <= limit], bench.reference) / cheap_hv
            lines.append(
                f"{name:<14} {space.size:>6} {kept:>7}/{len(front):<8} {share:>18.4f} "
                f"{cheap:>18.4f}"
            )
        lines.append("")
        engines = args.engines.split(",")
        header = f"{'space':<14} " + " ".join(
            f"{e[:8] + '@' + str(b):>14}" for e in engines for b in budgets
        )
        lines.append("HV gap (mean over seeds; lower is better)")
        lines.append(header)
        for name, space in spaces.items():
            row = []
            for engine in engines:
                gaps = {b: [] for b in budgets}
                cap = args.cap.get(engine, max(budgets))
                for seed in range(args.seeds):
                    archs = run(bench, space, engine, seed, min(max(budgets), cap))
                    for b in budgets:
                        gaps[b].append(bench.gap(archs[:b]) if b <= cap else np.nan)
                row += [f"{np.mean(gaps[b]):>14.4f}" for b in budgets]
            lines.append(f"{name:<14} " + " ".join(row))
            print(lines[-1], flush=True)
        lines.append("")
    lines.append(
        f"wall {time.perf_counter() - start:.0f}s, seeds {args.seeds}; nan: not run "
        f"(budget caps {args.cap or 'none'}, for time on 2 shared cores)"
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
