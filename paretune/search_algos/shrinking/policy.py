"""TND-NAS's architecture policy on supernet edges: logits, sampling, REINFORCE, shrinking.

Pure numpy, no torch: the supernet stage (:mod:`paretune.objectives.tnd_stage`) draws paths
from it, scores them with the shared weights and hands back rewards. As in the authors' code
(``blyucs/pdarts`` ``train_search.py`` / ``model_search.py``, ``algorithms.md`` §2.4):

* one logit per (edge, operation), initialised ``N(0, init_std)``, a fresh policy per stage;
* a path takes, on every edge independently, ``op ~ softmax(logits[e])`` over the operations
  still allowed on the edge (``None`` entries of a path: edges the path does not use);
* a REINFORCE step over the ``M`` scored samples of one policy step: moving baseline
  ``b <- mean R`` the first time, then ``b <- b + decay * (mean R - b)`` (decay 0.95, the weight
  of the *new* mean); gradient ``(1/M) sum_j (R_j - b) grad(-log pi(a_j))``; its norm clipped
  at ``clip_norm``; one Adam step (torch's Adam: L2 weight decay added to the gradient,
  ``eps = 1e-8``; the authors' CIFAR-10 run: lr 6e-3, betas (0.5, 0.999), weight decay 1e-3);
* at the end of a stage every edge keeps its ``keep`` operations of highest probability
  (ties: the lower index); the authors' last shrink always drops ``none`` first.

Rewards: :func:`product_reward` (MnasNet form ``acc * prod_k (m_k / T_k) ** w_k``, accuracy as
a fraction) and :func:`pareto_rewards` (exclusive additive-epsilon margin against the recent
samples, for more than two objectives when no targets are given).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from paretune.search_algos.shrinking.rewards import RATIO_FLOOR

PathT = list[int | None]


class EdgePolicy:
    """Per-edge categorical policy over the allowed operations of a supernet.

    Args:
        edge_options: allowed operation indices per edge (an empty list: an edge with none).
        num_ops: operations of the space (the logits' width).
        seed: seed of the initial logits (``rng`` wins when given).
        lr, betas, weight_decay: Adam on the logits.
        clip_norm: gradient-norm clipping (0: off).
        baseline_decay: weight of the new batch mean in the moving baseline.
        init_std: standard deviation of the initial logits.
    """

    def __init__(
        self,
        edge_options: Sequence[Sequence[int]],
        num_ops: int,
        *,
        seed: int = 0,
        rng: np.random.Generator | None = None,
        lr: float = 6e-3,
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        clip_norm: float = 5.0,
        baseline_decay: float = 0.95,
        init_std: float = 1e-3,
    ) -> None:
        self.num_ops = int(num_ops)
        self.edge_options = [sorted(int(k) for k in opts) for opts in edge_options]
        for e, opts in enumerate(self.edge_options):
            if any(not 0 <= k < self.num_ops for k in opts):
                raise ValueError(f"edge {e}: options {opts} out of range 0..{self.num_ops - 1}")
        self.mask = np.zeros((len(self.edge_options), self.num_ops), dtype=bool)
        for e, opts in enumerate(self.edge_options):
            self.mask[e, opts] = True
        rng = rng if rng is not None else np.random.default_rng(seed)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.clip_norm = float(clip_norm)
        self.baseline_decay = float(baseline_decay)
        self.init_std = float(init_std)
        shape = self.mask.shape
        self.logits = np.where(self.mask, rng.normal(0.0, self.init_std, shape), 0.0)
        self._m = np.zeros(shape)
        self._v = np.zeros(shape)
        self._t = 0
        self.baseline: float | None = None
        self.steps = 0

    @property
    def num_edges(self) -> int:
        return len(self.edge_options)

    # ------------------------------------------------------------------ distribution
    def probabilities(self) -> np.ndarray:
        """Softmax of the logits over each edge's allowed operations (0 elsewhere)."""
        z = np.where(self.mask, self.logits, -np.inf)
        top = np.max(np.where(self.mask, self.logits, -np.inf), axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        p = np.where(self.mask, np.exp(z - top), 0.0)
        s = p.sum(axis=1, keepdims=True)
        return np.divide(p, s, out=np.zeros_like(p), where=s > 0)

    def sample(self, rng: np.random.Generator) -> PathT:
        """One operation per edge, drawn independently (``None`` on an edge with no option)."""
        probs = self.probabilities()
        out: PathT = []
        for e, opts in enumerate(self.edge_options):
            out.append(int(opts[rng.choice(len(opts), p=probs[e, opts])]) if opts else None)
        return out

    def log_prob(self, path: Sequence[int | None]) -> float:
        """``log pi(path)`` summed over the edges the path uses."""
        probs = self.probabilities()
        return float(sum(math.log(probs[e, k]) for e, k in enumerate(path) if k is not None))

    def grad_neg_log_prob(self, path: Sequence[int | None]) -> np.ndarray:
        """``d(-log pi(path)) / d logits = softmax - onehot`` on the edges the path uses."""
        self._check(path)
        probs = self.probabilities()
        g = np.zeros_like(self.logits)
        for e, k in enumerate(path):
            if k is not None:
                g[e] = probs[e]
                g[e, k] -= 1.0
        return np.where(self.mask, g, 0.0)

    def _check(self, path: Sequence[int | None]) -> None:
        if len(path) != self.num_edges:
            raise ValueError(f"path has {len(path)} entries, the policy has {self.num_edges}")
        for e, k in enumerate(path):
            if k is not None and k not in self.edge_options[e]:
                raise ValueError(f"edge {e}: operation {k} is not allowed {self.edge_options[e]}")

    # ------------------------------------------------------------------ REINFORCE
    def step(self, paths: Sequence[Sequence[int | None]], rewards: Sequence[float]) -> dict:
        """One REINFORCE step over ``M`` scored samples; returns its statistics."""
        if len(paths) != len(rewards) or not paths:
            raise ValueError(f"{len(paths)} paths and {len(rewards)} rewards")
        r = np.asarray(rewards, dtype=float)
        mean = float(r.mean())
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.baseline_decay * (mean - self.baseline)
        grad = np.zeros_like(self.logits)
        for path, rj in zip(paths, r, strict=True):
            grad += (rj - self.baseline) * self.grad_neg_log_prob(path)
        grad /= len(paths)
        norm = float(np.linalg.norm(grad))
        if self.clip_norm > 0 and norm > self.clip_norm:
            grad *= self.clip_norm / (norm + 1e-6)
        self._adam(grad)
        self.steps += 1
        return {"mean_reward": mean, "baseline": float(self.baseline), "grad_norm": norm}

    def _adam(self, grad: np.ndarray) -> None:
        b1, b2 = self.betas
        g = grad + self.weight_decay * self.logits
        self._t += 1
        self._m = np.where(self.mask, b1 * self._m + (1 - b1) * g, 0.0)
        self._v = np.where(self.mask, b2 * self._v + (1 - b2) * g * g, 0.0)
        m_hat = self._m / (1 - b1**self._t)
        v_hat = self._v / (1 - b2**self._t)
        self.logits = np.where(
            self.mask, self.logits - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8), 0
        )

    # ------------------------------------------------------------------ shrinking
    def shrink(self, keep: int | Sequence[int], drop_first: int | None = None) -> list[list[int]]:
        """Per edge the ``keep`` allowed operations of highest probability (ties: lower index);
        ``drop_first``: an operation dropped before the others wherever it is allowed and the
        edge keeps fewer than it has (the authors' last shrink drops ``none`` so)."""
        probs = self.probabilities()
        keeps = [int(keep)] * self.num_edges if isinstance(keep, int) else [int(k) for k in keep]
        out = []
        for e, opts in enumerate(self.edge_options):
            k = min(keeps[e], len(opts))
            cand = list(opts)
            if drop_first is not None and drop_first in cand and k < len(cand):
                cand.remove(drop_first)
            order = sorted(cand, key=lambda i, e=e: (-probs[e, i], i))
            out.append(sorted(order[:k]))
        return out

    def top_paths(self, k: int, skip: int | None = None) -> list[PathT]:
        """The ``k`` most probable paths (edges independent), most probable first; ``skip``: an
        operation never used (where an edge has another). Exact (best-first over ranks)."""
        probs = self.probabilities()
        ranked = []
        for e, opts in enumerate(self.edge_options):
            cand = [i for i in opts if i != skip] or list(opts)
            ranked.append(sorted(cand, key=lambda i, e=e: (-probs[e, i], i)))

        def cost(idx: tuple[int, ...]) -> float:
            return -sum(
                math.log(max(probs[e, ranked[e][j]], 1e-300))
                for e, j in enumerate(idx)
                if ranked[e]
            )

        start = tuple(0 for _ in ranked)
        heap = [(cost(start), start)]
        seen = {start}
        out: list[PathT] = []
        while heap and len(out) < k:
            _, idx = heapq.heappop(heap)
            out.append([ranked[e][j] if ranked[e] else None for e, j in enumerate(idx)])
            for e in range(len(idx)):
                if ranked[e] and idx[e] + 1 < len(ranked[e]):
                    nxt = idx[:e] + (idx[e] + 1,) + idx[e + 1 :]
                    if nxt not in seen:
                        seen.add(nxt)
                        heapq.heappush(heap, (cost(nxt), nxt))
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state."""
        return {
            "edge_options": self.edge_options,
            "num_ops": self.num_ops,
            "logits": self.logits.tolist(),
            "adam_m": self._m.tolist(),
            "adam_v": self._v.tolist(),
            "adam_t": self._t,
            "baseline": self.baseline,
            "steps": self.steps,
            "settings": {
                "lr": self.lr,
                "betas": list(self.betas),
                "weight_decay": self.weight_decay,
                "clip_norm": self.clip_norm,
                "baseline_decay": self.baseline_decay,
                "init_std": self.init_std,
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EdgePolicy:
        s = state["settings"]
        out = cls(state["edge_options"], state["num_ops"], **s)
        out.logits = np.asarray(state["logits"], dtype=float)
        out._m = np.asarray(state["adam_m"], dtype=float)
        out._v = np.asarray(state["adam_v"], dtype=float)
        out._t = int(state["adam_t"])
        out.baseline = None if state["baseline"] is None else float(state["baseline"])
        out.steps = int(state["steps"])
        return out


# ---------------------------------------------------------------------- rewards
def stage_value(value: float | Sequence[float], stage: int) -> float:
    """A per-stage setting: a number, or a list with one entry per stage (the last repeats)."""
    if isinstance(value, int | float):
        return float(value)
    seq = list(value)
    return float(seq[min(stage, len(seq) - 1)])


def product_reward(
    values: Mapping[str, float],
    accuracy: str,
    targets: Mapping[str, float],
    exponents: Mapping[str, float],
) -> float:
    """``acc * prod_k (m_k / T_k) ** w_k`` with ``acc`` a fraction (the authors' ``prec1/100``);
    ratios floored at ``1e-3``; a negative accuracy counts as 0."""
    r = max(0.0, float(values[accuracy])) / 100.0
    for k, t in targets.items():
        r *= max(float(values[k]) / float(t), RATIO_FLOOR) ** float(exponents[k])
    return float(r) if math.isfinite(r) else 0.0


def pareto_rewards(batch: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Exclusive additive-epsilon margin of each row of ``batch`` (minimisation rows) against
    the other rows of ``batch`` and every row of ``reference`` (earlier samples), objectives
    min-max normalised over both: ``R_j = min_{a != j} max_k (y_ak - y_jk)``. Positive for a
    non-dominated sample (by how far it stands out), negative for a dominated one."""
    batch = np.atleast_2d(np.asarray(batch, dtype=float))
    ref = np.asarray(reference, dtype=float).reshape(-1, batch.shape[1])
    allp = np.vstack([batch, ref])
    lo = allp.min(axis=0)
    span = allp.max(axis=0) - lo
    y = (allp - lo) / np.where(span > 0, span, 1.0)
    yb = y[: len(batch)]
    gap = np.max(y[None, :, :] - yb[:, None, :], axis=2)  # gap[j, a]
    idx = np.arange(len(batch))
    gap[idx, idx] = np.inf
    # a row equal to the sample (its own earlier score) is no competitor
    same = np.all(np.isclose(y[None, :, :], yb[:, None, :]), axis=2)
    gap[same] = np.inf
    m = gap.min(axis=1)
    return np.where(np.isfinite(m), m, 1.0)


__all__ = ["EdgePolicy", "pareto_rewards", "product_reward", "stage_value"]
