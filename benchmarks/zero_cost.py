"""Zero-cost proxies on NAS-Bench-201 networks against the table and NASLib's own values.

For the 725 architectures of NASLib's sample (``zc_nasbench201.json``, CIFAR-10 part), builds
the NB201 network (C=16, N=5, 32x32 inputs, 10 classes) with paretune's space, computes
paretune's proxies (:mod:`paretune.objectives.proxies`) and prints, per proxy, Spearman's rho with
``cifar10_test_200`` of the table, NASLib's rho for the same architectures, and the seconds per
architecture. The data-free proxies (synflow, params) run on all 725; the data-dependent ones
(and flops) on a seeded subset (``--subset``) because the machine is small. There is no
CIFAR-10 here: the batch is ``--dataset`` (default MNIST, 28x28 bilinearly upsampled to 32x32,
the grey channel repeated to 3). Usage::

    python benchmarks/zero_cost.py --subset 200 --out /work/notes/pruning_zero_cost.txt
    python benchmarks/zero_cost.py --subset 20 --all-limit 50   # a quick look

It also writes the per-architecture values (``--values``, JSON) that
``benchmarks/prune_quality.py`` uses to score options.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import spearmanr  # noqa: E402

from paretune.objectives.nb201_table import load_table, resolve_table_path  # noqa: E402
from paretune.objectives.proxies import ProxyScorer  # noqa: E402
from paretune.spaces import make_space  # noqa: E402

NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
# paretune proxy -> NASLib's key
NASLIB_NAME = {
    "synflow": "synflow",
    "naswot": "nwot",
    "jacov": "jacov",
    "grad_norm": "grad_norm",
    "snip": "snip",
    "fisher": "fisher",
    "params": "params",
    "flops": "flops",
}
DATA_FREE = ("synflow", "params")
DATA_DEPENDENT = ("naswot", "jacov", "grad_norm", "snip", "fisher", "flops")


def naslib_string(key: str) -> str:
    """The NB201 string of a NASLib op tuple ``"(0, 2, 3, 2, 3, 1)"``."""
    ops = dict(zip(NASLIB_EDGES, (NASLIB_OPS[i] for i in ast.literal_eval(key)), strict=True))
    nodes = ["|" + "|".join(f"{ops[(s, d)]}~{s}" for s in range(d)) + "|" for d in range(1, 4)]
    return "+".join(nodes)


def load_naslib(path: Path, table) -> list[dict]:
    """NASLib's CIFAR-10 entries with the table's row (checked: val_accuracy = valid_200)."""
    data = json.loads(path.read_text())["cifar10"]
    by_arch = table.set_index("arch")
    rows = []
    mismatched = 0
    for key, entry in data.items():
        text = naslib_string(key)
        row = by_arch.loc[text]
        if abs(float(row["cifar10_valid_200"]) - float(entry["val_accuracy"])) > 1e-6:
            mismatched += 1
        rows.append(
            {
                "arch": text,
                "test": float(row["cifar10_test_200"]),
                "naslib": {
                    ours: float(entry[theirs]["score"])
                    for ours, theirs in NASLIB_NAME.items()
                    if theirs in entry
                },
                "naslib_time": {
                    ours: float(entry[theirs]["time"])
                    for ours, theirs in NASLIB_NAME.items()
                    if theirs in entry
                },
            }
        )
    if mismatched:
        print(f"WARNING: {mismatched} archs: NASLib val_accuracy != table cifar10_valid_200")
    return rows


def rho(x, y) -> float:
    """Spearman's rho over the pairs where both are known (-inf scores rank last)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    x = np.where(np.isfinite(x[keep]), x[keep], -1e300)
    return float(spearmanr(x, y[keep]).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--naslib", default=None, help="zc_nasbench201.json")
    ap.add_argument("--subset", type=int, default=200, help="archs for data-dependent proxies")
    ap.add_argument("--all-limit", type=int, default=0, help="cap on data-free archs (0: all)")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--values", default="/work/notes/pruning_zc_values.json")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table_path = resolve_table_path(None)
    table = load_table(table_path)
    naslib_path = Path(
        args.naslib or os.path.join(table_path.parent, "sources/automl_NASLib/zc_nasbench201.json")
    )
    rows = load_naslib(naslib_path, table)
    space = make_space("nb201")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    free_idx = sorted(order[: args.all_limit] if args.all_limit else order)
    dep_idx = sorted(order[: args.subset])
    free = ProxyScorer(space, DATA_FREE, seed=args.seed, threads=args.threads)
    dep = ProxyScorer(
        space,
        DATA_DEPENDENT,
        dataset=args.dataset,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
    )
    start = time.perf_counter()
    for n, i in enumerate(free_idx):
        rows[i]["ours"] = free.scores(space.decode(rows[i]["arch"]))
        if n % 100 == 0:
            print(f"data-free {n}/{len(free_idx)} {time.perf_counter() - start:.0f}s", flush=True)
    for n, i in enumerate(dep_idx):
        rows[i]["ours"].update(dep.scores(space.decode(rows[i]["arch"])))
        if n % 25 == 0:
            print(f"data-dep {n}/{len(dep_idx)} {time.perf_counter() - start:.0f}s", flush=True)
    wall = time.perf_counter() - start
    if args.values:  # first, so that a failure below loses no computation
        Path(args.values).write_text(
            json.dumps(
                [
                    {"arch": r["arch"], "ours": r.get("ours", {}), "naslib": r["naslib"]}
                    for r in rows
                ]
            )
        )

    lines = [
        f"Zero-cost proxies on NB201 (C=16, N=5, 32x32, 10 classes), NASLib sample of {len(rows)}",
        f"target: cifar10_test_200 of the table; batch: {args.batch_size} {args.dataset} images "
        "(upsampled to 32x32, 3 channels; no CIFAR-10 here), seed "
        f"{args.seed}, torch threads {args.threads}, 2 shared cores; wall {wall:.0f}s",
        "",
        f"{'proxy':<10} {'archs':>5} {'rho ours':>9} {'rho NASLib':>10} {'|diff|':>7} "
        f"{'rho(ours,NASLib)':>16} {'s/arch ours':>11} {'s/arch NASLib(GPU)':>18}",
    ]
    for name in (*DATA_FREE, *DATA_DEPENDENT):
        idx = free_idx if name in DATA_FREE else dep_idx
        scorer = free if name in DATA_FREE else dep
        ours = [rows[i]["ours"][name] for i in idx]
        test = [rows[i]["test"] for i in idx]
        theirs = [rows[i]["naslib"].get(name, np.nan) for i in idx]
        r_ours, r_theirs = rho(ours, test), rho(theirs, test)
        agree = rho(ours, theirs)
        t_ours = float(np.mean(scorer.timings[name])) if scorer.timings[name] else float("nan")
        t_theirs = float(np.mean([rows[i]["naslib_time"].get(name, np.nan) for i in idx]))
        lines.append(
            f"{name:<10} {len(idx):>5} {r_ours:>9.3f} {r_theirs:>10.3f} "
            f"{abs(r_ours - r_theirs):>7.3f} {agree:>16.3f} {t_ours:>11.3f} {t_theirs:>18.3f}"
        )
    syn = [rows[i]["ours"]["synflow"] for i in free_idx]
    test = [rows[i]["test"] for i in free_idx]
    theirs = [rows[i]["naslib"].get("synflow", np.nan) for i in free_idx]
    lines.append("")
    lines.append(
        f"synflow check: |rho ours - rho NASLib| = {abs(rho(syn, test) - rho(theirs, test)):.3f}"
        " (target <= 0.03); NASLib lacks a value for "
        + ", ".join(
            f"{n}: {sum(n not in rows[i]['naslib'] for i in idx)}"
            for n, idx in (("synflow", free_idx), ("naswot", dep_idx))
        )
        + " archs (rho over the archs both have)"
    )
    lines.append(
        "s/arch ours: one proxy on one architecture on this CPU (build excluded); grad_norm, snip "
        "and fisher share one backward pass (its time split in three). NASLib's times are its "
        "file's (GPU)."
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
