"""PertNAS's search as a plan of jobs (pure Python): which networks to train, which options to
value, and the genotypes it ends with (``algorithms.md`` section 1.4, the authors'
``search_evolutionary.py``).

The plan is a pure function of the results so far (:meth:`PertNASPlan.frontier`): given the
finished jobs' results it lists every job that can start now. A job is

* ``train``: build the network of ``options`` (per search edge, the options it holds; one on a
  compact edge, several on an expanded one, none on a removed DARTS edge; their outputs summed)
  from scratch, train it ``epochs`` epochs at ``lr * lr_factor`` and store weights and
  optimizer state under its key;
* ``value``: load that checkpoint, mask ``option`` on ``edge`` (``None``: the edge's single
  option, i.e. remove the edge), restore weights and optimizer state, fine-tune ``steps``
  steps, and report ``delta[objective] = metric(without) - metric(with)``.

Stages (each member and each lineage advances on its own; there is no generation barrier):

1. ``expand``: each of ``population`` members is a compact network (one option per edge, drawn
   uniformly); for every edge ``e``, the member with ``e`` expanded trains from scratch (the
   authors rebuild without inheriting weights) and every option of ``e`` is valued (``F_expand``).
   With ``n_iter > 1`` the expansion runs ``n_iter`` times, each *iteration* on a fresh
   population (the authors' ``n_iter`` loop); the iterations' jobs are independent and all
   start at once (no barrier), keyed ``expand-i<it>-m<m>-e<e>`` (iteration 0 keeps the keys
   ``expand-m<m>-e<e>`` of a single iteration).
2. The valuation matrix (per iteration the mean over its members; over the iterations their
   running mean, as the authors' ``V_avg``) and, per lineage (trade-off weights over the
   objectives, :func:`~.selection.lineage_weights`), ``coarse``: keep the 2 most important
   options per edge and train that partial supernet (``lr / 3``).
3. ``fine``: in the authors' edge order, value the 2 options of the edge (``F_fine``), keep the
   more important, retrain from scratch (``lr / 2.5``).
4. ``topology`` (DARTS): nodes 3, 4, 5 in a random order; value the removal of each incoming
   edge (``F_topology``), keep the 2 most important, retrain before the next node.

Each lineage ends in one genotype (one option per edge; DARTS: 2 incoming edges per node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from paretune.search_algos.perturbation_supernet.selection import (
    DARTS_NODE_EDGES,
    coarse_select,
    fine_order,
    importance,
    scales,
    top_options,
    topology_select,
)

Job = dict[str, Any]
Results = Mapping[str, Mapping[str, Any]]


class PertNASPlan:
    """The job graph of one PertNAS search (see the module docstring).

    Args:
        options: per search edge, the option indices that may be placed on it.
        num_ops: the length of a valuation row (the space's operation count).
        objectives: ``(name, direction)`` pairs; every valuation reports a delta per name.
        lineages: trade-off weights per lineage (``{objective: weight}``).
        population, epochs, f_expand, f_fine, f_topology, coarse_keep: the paper's knobs.
        n_iter: expansion iterations (fresh populations) whose matrices are averaged.
        topology: run the topology stage (DARTS cells).
        seed: draws the members' compact networks and the lineages' node orders.
    """

    def __init__(
        self,
        options: Sequence[Sequence[int]],
        num_ops: int,
        objectives: Sequence[tuple[str, str]],
        lineages: Sequence[Mapping[str, float]],
        *,
        population: int = 4,
        n_iter: int = 1,
        epochs: int = 5,
        f_expand: int = 70,
        f_fine: int = 130,
        f_topology: int = 180,
        coarse_keep: int = 2,
        topology: bool = False,
        seed: int = 0,
    ) -> None:
        self.options = [sorted(int(k) for k in o) for o in options]
        if any(not o for o in self.options):
            raise ValueError("every edge needs at least one option")
        self.num_edges = len(self.options)
        self.num_ops = int(num_ops)
        self.objectives = [(str(n), str(d)) for n, d in objectives]
        self.directions = dict(self.objectives)
        self.lineages = [dict(w) for w in lineages]
        self.population = int(population)
        self.n_iter = int(n_iter)
        if self.n_iter < 1:
            raise ValueError(f"n_iter = {n_iter!r}: must be an integer >= 1")
        self.epochs = int(epochs)
        self.f = {"expand": int(f_expand), "fine": int(f_fine), "topology": int(f_topology)}
        self.coarse_keep = int(coarse_keep)
        self.topology = bool(topology)
        if self.topology and self.num_edges != 14:
            raise ValueError("the topology stage needs DARTS's 14 edges")
        rng = np.random.default_rng(seed)
        # per iteration, its members' compact networks (iteration 0 drawn first: the members
        # of a single iteration do not depend on n_iter)
        self.iterations = [
            [[int(rng.choice(o)) for o in self.options] for _ in range(self.population)]
            for _ in range(self.n_iter)
        ]
        self.members = self.iterations[0]
        self.node_orders = [
            [int(n) for n in np.random.default_rng(seed + 1 + i).permutation([3, 4, 5])]
            for i in range(len(self.lineages))
        ]
        self.order = fine_order(self.num_edges)

    @classmethod
    def from_params(
        cls,
        options: Sequence[Sequence[int]],
        num_ops: int,
        objectives: Sequence[tuple[str, str]],
        params: Mapping[str, Any],
        seed: int,
    ) -> PertNASPlan:
        """The plan of checked ``search.params`` (``pertnas_valuation.check_params``'s output:
        lineages as weight maps, every knob present)."""
        return cls(
            options,
            num_ops,
            objectives,
            params["lineages"],
            population=params["population"],
            n_iter=params["n_iter"],
            epochs=params["epochs"],
            f_expand=params["f_expand"],
            f_fine=params["f_fine"],
            f_topology=params["f_topology"],
            coarse_keep=params["coarse_keep"],
            topology=params["topology"],
            seed=seed,
        )

    # ------------------------------------------------------------------ jobs
    def _train(
        self, key: str, stage: str, options: list[list[int]], lr_factor: float, **kw: Any
    ) -> Job:
        return {
            "key": key,
            "kind": "train",
            "stage": stage,
            "options": [list(o) for o in options],
            "epochs": self.epochs,
            "lr_factor": lr_factor,
            **kw,
        }

    def _value(
        self,
        key: str,
        stage: str,
        ckpt: str,
        options: list[list[int]],
        edge: int,
        option: int | None,
        **kw: Any,
    ) -> Job:
        return {
            "key": key,
            "kind": "value",
            "stage": stage,
            "checkpoint": ckpt,
            "options": [list(o) for o in options],
            "edge": int(edge),
            "option": option,
            "steps": self.f[stage],
            **kw,
        }

    def expand_options(self, m: int, e: int, it: int = 0) -> list[list[int]]:
        """Member ``m``'s (of iteration ``it``) compact network with edge ``e`` expanded."""
        out = [[k] for k in self.iterations[it][m]]
        out[e] = list(self.options[e])
        return out

    @staticmethod
    def expand_key(it: int, m: int, e: int) -> str:
        """The key of the expansion of edge ``e`` of member ``m`` in iteration ``it``."""
        return f"expand-m{m}-e{e}" if it == 0 else f"expand-i{it}-m{m}-e{e}"

    def _expansions(self) -> list[tuple[int, int, int]]:
        """(iteration, member, edge) of every expansion (edges with one option have none)."""
        return [
            (it, m, e)
            for it in range(self.n_iter)
            for m in range(self.population)
            for e in range(self.num_edges)
            if len(self.options[e]) > 1
        ]

    def frontier(self, results: Results) -> list[Job]:
        """Every job that can start now and has no result yet (in a fixed order)."""
        jobs: list[Job] = []
        for it, m, e in self._expansions():
            tk = self.expand_key(it, m, e)
            opts = self.expand_options(m, e, it)
            if tk not in results:
                jobs.append(
                    self._train(tk, "expand", opts, 1 / 2.5, member=m, edge=e, iteration=it)
                )
                continue
            for k in self.options[e]:
                vk = f"{tk}-k{k}"
                if vk not in results:
                    jobs.append(self._value(vk, "expand", tk, opts, e, k, member=m, iteration=it))
        if jobs:
            return jobs
        matrix = self.matrix(results)
        scale = scales(matrix)
        for i in range(len(self.lineages)):
            jobs += self._lineage(i, matrix, scale, results)[0]
        return jobs

    def iteration_matrix(self, results: Results, it: int) -> dict[str, np.ndarray]:
        """Iteration ``it``'s valuation matrices (objective -> edges x ops): the mean over its
        members that valued each (edge, option); NaN where none did."""
        total = {n: np.zeros((self.num_edges, self.num_ops)) for n, _ in self.objectives}
        count = np.zeros((self.num_edges, self.num_ops))
        for m in range(self.population):
            for e in range(self.num_edges):
                for k in self.options[e]:
                    r = results.get(f"{self.expand_key(it, m, e)}-k{k}")
                    if r is None:
                        continue
                    count[e, k] += 1
                    for n in total:
                        total[n][e, k] += float(r["delta"][n])
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                n: np.where(count > 0, t / np.maximum(count, 1), np.nan) for n, t in total.items()
            }

    def matrix(self, results: Results) -> dict[str, np.ndarray]:
        """The expansion stage's valuation matrices (objective -> edges x ops): the running
        mean over the iterations (``V_avg += (V_it - V_avg) / t``, ``t`` counting the
        iterations that valued the entry) of each iteration's mean over its members."""
        shape = (self.num_edges, self.num_ops)
        avg = {n: np.full(shape, np.nan) for n, _ in self.objectives}
        seen = np.zeros(shape)
        for it in range(self.n_iter):
            v = self.iteration_matrix(results, it)
            have = np.isfinite(v[self.objectives[0][0]])
            seen += have
            for n in avg:
                prev = np.where(np.isfinite(avg[n]), avg[n], 0.0)
                step = (np.where(have, v[n], 0.0) - prev) / np.maximum(seen, 1)
                avg[n] = np.where(have, prev + step, avg[n])
        return avg

    def _score(self, lineage: int, result: Mapping[str, Any], scale: Mapping[str, float]) -> float:
        d = {n: np.asarray(float(result["delta"][n])) for n, _ in self.objectives}
        return float(importance(d, self.lineages[lineage], self.directions, scale))

    def _lineage(
        self, i: int, matrix: Mapping[str, np.ndarray], scale: Mapping[str, float], results: Results
    ) -> tuple[list[Job], list[list[int]] | None, dict[str, Any]]:
        """(ready jobs, final options or None, record of the selections) of lineage ``i``."""
        record: dict[str, Any] = {"lineage": i, "weights": self.lineages[i]}
        score = importance(matrix, self.lineages[i], self.directions, scale)
        sw = coarse_select(score, self.options, self.coarse_keep)
        record["coarse"] = [list(o) for o in sw]
        ckpt = f"L{i}-coarse"
        if ckpt not in results:
            return [self._train(ckpt, "coarse", sw, 1 / 3, lineage=i)], None, record
        record["fine"] = []
        for step, e in enumerate(self.order):
            if len(sw[e]) < 2:
                continue  # one option already (a restricted edge): nothing to select
            if len(sw[e]) > 1:
                keys = {k: f"L{i}-fine{step}-e{e}-k{k}" for k in sw[e]}
                missing = [
                    self._value(v, "fine", ckpt, sw, e, k, lineage=i)
                    for k, v in keys.items()
                    if v not in results
                ]
                if missing:
                    return missing, None, record
                scores = {k: self._score(i, results[v], scale) for k, v in keys.items()}
                sw = [list(o) for o in sw]
                sw[e] = top_options(scores, sorted(scores), 1)
                record["fine"].append({"edge": e, "scores": scores, "kept": sw[e][0]})
            tk = f"L{i}-fine{step}"
            if tk not in results:
                return [self._train(tk, "fine", sw, 1 / 2.5, lineage=i)], None, record
            ckpt = tk
        if self.topology:
            record["topology"] = []
            nodes = self.node_orders[i]
            for t, node in enumerate(nodes):
                first, end = DARTS_NODE_EDGES[node]
                keys = {e: f"L{i}-top{t}-e{e}" for e in range(first, end) if sw[e]}
                missing = [
                    self._value(v, "topology", ckpt, sw, e, None, lineage=i, node=node)
                    for e, v in keys.items()
                    if v not in results
                ]
                if missing:
                    return missing, None, record
                scores = {e: self._score(i, results[v], scale) for e, v in keys.items()}
                kept = topology_select(scores, node)
                sw = [
                    list(o) if not first <= e < end or e in kept else [] for e, o in enumerate(sw)
                ]
                record["topology"].append({"node": node, "scores": scores, "kept": kept})
                if t < len(nodes) - 1:
                    tk = f"L{i}-top{t}"
                    if tk not in results:
                        return [self._train(tk, "topology", sw, 1 / 2.5, lineage=i)], None, record
                    ckpt = tk
        record["final"] = [list(o) for o in sw]
        return [], [list(o) for o in sw], record

    # ------------------------------------------------------------------ outcome
    def records(self, results: Results) -> list[dict[str, Any]]:
        """Per lineage, its selections so far (and ``final`` when it has ended)."""
        if self.frontier_expansion_open(results):
            return []
        matrix = self.matrix(results)
        scale = scales(matrix)
        return [self._lineage(i, matrix, scale, results)[2] for i in range(len(self.lineages))]

    def frontier_expansion_open(self, results: Results) -> bool:
        return any(
            f"{self.expand_key(it, m, e)}-k{k}" not in results
            for it, m, e in self._expansions()
            for k in self.options[e]
        )

    def finals(self, results: Results) -> list[list[list[int]]] | None:
        """Each lineage's final options (one per edge, or none on a removed edge), or ``None``
        while some lineage still has jobs to run."""
        if self.frontier_expansion_open(results):
            return None
        matrix = self.matrix(results)
        scale = scales(matrix)
        out = []
        for i in range(len(self.lineages)):
            _, final, _ = self._lineage(i, matrix, scale, results)
            if final is None:
                return None
            out.append(final)
        return out

    def total_jobs_upper_bound(self) -> int:
        """Jobs of a whole search (a bound: restricted edges need fewer)."""
        expand = sum(self.n_iter * self.population * (1 + len(o)) for o in self.options)
        per = 1 + self.num_edges * (1 + self.coarse_keep)
        if self.topology:
            per += 14 + 2
        return expand + len(self.lineages) * per


def matrix_csv(
    matrix: Mapping[str, np.ndarray], edge_names: Sequence[str], op_names: Sequence[str]
) -> str:
    """The valuation matrices as CSV: one row per (objective, edge), one column per option."""
    lines = ["objective,edge," + ",".join(op_names)]
    for name, m in matrix.items():
        for e, edge in enumerate(edge_names):
            cells = ["" if not np.isfinite(v) else f"{v:.6g}" for v in np.asarray(m)[e]]
            lines.append(f"{name},{edge}," + ",".join(cells))
    return "\n".join(lines) + "\n"


__all__ = ["Job", "PertNASPlan", "matrix_csv"]
