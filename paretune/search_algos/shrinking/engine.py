"""The ``tnd`` engine: policy, stages, REINFORCE and the final local search.

See :mod:`paretune.search_algos.shrinking` for the method; the rewards and the evaluated points
(the Pareto archive, margins, local-search order) are in :mod:`.rewards`, the final local search
(parents in flight, model children) in :mod:`.local_search`, the options kept per stage and the
stage lengths in :mod:`.schedule`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos.base import Engine, InspectionTable, Record
from paretune.search_algos.params import non_negative
from paretune.search_algos.shrinking.local_search import ENUMERATE_LIMIT, LocalSearch
from paretune.search_algos.shrinking.rewards import ParetoRewards
from paretune.search_algos.shrinking.schedule import (
    DEFAULT_STAGE_LENGTH,
    decision_schedules,
    default_schedule,
    default_stage_fractions,
)
from paretune.spaces.base import Arch, SearchSpace

REWARDS = ("product", "pareto")
FINALS = ("local", "stop")
LOCAL_ORDERS = ("hv", "margin")
LOCAL_CHILDREN = ("model", "random")


class ProgressiveShrinking(LocalSearch, ParetoRewards, Engine):
    """TND-NAS progressive shrinking with REINFORCE on any (non-differentiable) objectives.

    Args:
        space: the search space (archs index the full option lists).
        objectives: the objectives.
        seed: RNG seed.
        reward: ``"pareto"`` (target-free) or ``"product"`` (``acc * prod (m/T)**w``).
        accuracy: name of the accuracy objective of the product reward (default: the first
            ``max`` objective).
        targets: ``{objective: T_k}`` of the product reward.
        exponents: ``{objective: w_k}`` of the product reward (same names as ``targets``).
        batch_size: results per REINFORCE step (M).
        lr: Adam learning rate on the logits.
        betas: Adam betas.
        weight_decay: L2 weight decay added to the gradient (as torch's Adam does).
        clip_norm: gradient norm clipping.
        baseline_decay: weight of the new batch mean in the moving baseline.
        schedule: options kept per decision in each stage (first entry = all options), capped
            at each decision's options; default: derived per decision (``decision_schedules``).
        stage_lengths: results per stage for every stage but the last (which is open-ended).
        budget: expected number of evaluations; scales the default stage lengths.
        stage_fractions: fractions of ``budget`` per stage when ``stage_lengths`` is not given
            (default: see :func:`default_stage_fractions`).
        resample: redraws of a sample that was already evaluated before other fallbacks.
        reset_on_shrink: start every stage from fresh logits (the paper's fresh alphas).
        init_std: standard deviation of the initial logits.
        final: after the space is shrunk to one architecture: ``"local"`` search of the
            archive in the full space, or ``"stop"`` (``ask`` returns ``None``).
        reward_window: recent rewards kept to score failures.
        local_order: order of Pareto local-search parents: ``"hv"`` (exclusive hypervolume)
            or ``"margin"`` (exclusive additive-epsilon margin).
    """

    name = "tnd"

    def __init__(
        self,
        space: SearchSpace,
        objectives: ObjectiveSet,
        seed: int = 0,
        *,
        reward: str = "pareto",
        accuracy: str | None = None,
        targets: Mapping[str, float] | None = None,
        exponents: Mapping[str, float] | None = None,
        batch_size: int = 10,
        lr: float = 0.3,
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        clip_norm: float = 5.0,
        baseline_decay: float = 0.95,
        schedule: Sequence[int] | None = None,
        stage_lengths: Sequence[int] | None = None,
        budget: int | None = None,
        stage_fractions: Sequence[float] | None = None,
        resample: int = 20,
        reset_on_shrink: bool = False,
        init_std: float = 1e-3,
        final: str = "local",
        reward_window: int = 50,
        local_order: str = "hv",
        local_child: str = "model",
        local_exploration: float = 0.5,
    ) -> None:
        super().__init__(space, objectives, seed)
        if reward not in REWARDS:
            raise ValueError(f"reward {reward!r} is not allowed (allowed: {', '.join(REWARDS)})")
        if final not in FINALS:
            raise ValueError(f"final {final!r} is not allowed (allowed: {', '.join(FINALS)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.reward = reward
        self.final = final
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.clip_norm = float(clip_norm)
        self.baseline_decay = float(baseline_decay)
        self.resample = int(resample)
        self.reset_on_shrink = bool(reset_on_shrink)
        self.reward_window = int(reward_window)
        if local_order not in LOCAL_ORDERS:
            raise ValueError(
                f"local_order {local_order!r} is not allowed (allowed: {', '.join(LOCAL_ORDERS)})"
            )
        self.local_order = local_order
        if local_child not in LOCAL_CHILDREN:
            raise ValueError(
                f"local_child {local_child!r} is not allowed (allowed: {', '.join(LOCAL_CHILDREN)})"
            )
        self.local_child = local_child
        self.local_exploration = non_negative("local_exploration", local_exploration)
        self._init_product(accuracy, targets, exponents)

        self._full_space = space
        self._sizes = np.array([len(d.options) for d in space.decisions])
        kmax = int(self._sizes.max())
        self._exists = np.arange(kmax)[None, :] < self._sizes[:, None]
        self.schedule = self._init_schedule(schedule)
        # Options kept per decision and stage (each decision shrinks by its own option count).
        self.keep = decision_schedules(
            [int(n) for n in self._sizes], None if schedule is None else self.schedule
        )
        self.stage_lengths = self._init_stage_lengths(stage_lengths, budget, stage_fractions)
        self.budget = budget

        shape = (space.num_decisions, kmax)
        self.logits = np.where(self._exists, self.rng.normal(0.0, init_std, shape), 0.0)
        self.init_std = float(init_std)
        self._m = np.zeros(shape)
        self._v = np.zeros(shape)
        self._t = 0
        self.baseline: float | None = None
        self.generation = 0
        self.stage = 0
        self.stage_results = 0
        self.buffer: list[dict[str, Any]] = []
        self.recent_rewards: list[float] = []
        self.shrink_history: list[dict[str, Any]] = []
        self._apply_schedule_start()
        self._seen: set[Arch] = set()
        self._reset_cache()

    # ------------------------------------------------------------------ configuration
    def _init_product(
        self,
        accuracy: str | None,
        targets: Mapping[str, float] | None,
        exponents: Mapping[str, float] | None,
    ) -> None:
        names = self.objectives.names
        targets = dict(targets or {})
        exponents = dict(exponents or {})
        for label, given in (("targets", targets), ("exponents", exponents)):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ValueError(f"{label}: unknown objectives {unknown} (objectives: {names})")
        if set(targets) != set(exponents):
            raise ValueError(
                f"targets and exponents must name the same objectives: {sorted(targets)} vs {sorted(exponents)}"
            )
        for k, t in targets.items():
            if not (math.isfinite(float(t)) and float(t) > 0):
                raise ValueError(f"targets[{k!r}] must be a positive number, got {t!r}")
        if accuracy is None:
            maxes = [o.name for o in self.objectives if o.direction == "max"]
            accuracy = maxes[0] if maxes else None
        elif accuracy not in names:
            raise ValueError(f"accuracy: unknown objective {accuracy!r} (objectives: {names})")
        if self.reward == "product" and accuracy is None:
            raise ValueError(
                "the product reward needs an accuracy objective (a 'max' objective or accuracy=...)"
            )
        if accuracy is not None and accuracy in targets:
            raise ValueError(f"accuracy objective {accuracy!r} cannot also have a target")
        self.accuracy = accuracy
        self.targets = {k: float(v) for k, v in targets.items()}
        self.exponents = {k: float(v) for k, v in exponents.items()}

    def _init_schedule(self, schedule: Sequence[int] | None) -> list[int]:
        if schedule is None:
            return default_schedule(int(self._sizes.max()))
        out = [int(s) for s in schedule]
        if not out or any(s < 1 for s in out) or any(b > a for a, b in itertools.pairwise(out)):
            raise ValueError(
                f"schedule must be a non-increasing list of positive counts, got {list(schedule)}"
            )
        return out

    def _init_stage_lengths(
        self, lengths: Sequence[int] | None, budget: int | None, fractions: Sequence[float] | None
    ) -> list[int]:
        n = len(self.schedule) - 1
        if lengths is not None:
            out = [int(x) for x in lengths]
            if len(out) != n or any(x < 1 for x in out):
                raise ValueError(
                    f"stage_lengths needs {n} positive entries (one per stage before the last), got {list(lengths)}"
                )
            return out
        if budget is None:
            return [DEFAULT_STAGE_LENGTH] * n
        budget = int(budget)
        if fractions is None:
            fractions = default_stage_fractions(budget, n)
        fr = [float(f) for f in fractions]
        if len(fr) != n or any(f < 0 for f in fr):
            raise ValueError(
                f"stage_fractions needs {n} non-negative entries, got {list(fractions)}"
            )
        m = self.batch_size
        return [max(m, int(budget * f / m) * m) for f in fr]

    def _apply_schedule_start(self) -> None:
        """Restrict the starting space to the first stage's options (top logits) if fewer."""
        keep = self._stage_keep(0)
        if any(len(a) > k for a, k in zip(self.space.allowed, keep, strict=True)):
            self.space = self.space.restrict(self._top_options(keep))

    def _stage_keep(self, stage: int) -> list[int]:
        return [k[stage] for k in self.keep]

    # ------------------------------------------------------------------ policy
    def _mask(self) -> np.ndarray:
        mask = np.zeros(self.logits.shape, dtype=bool)
        for d, a in enumerate(self.space.allowed):
            mask[d, list(a)] = True
        return mask

    def _probs(self) -> np.ndarray:
        mask = self._mask()
        z = np.where(mask, self.logits, -np.inf)
        z = z - z.max(axis=1, keepdims=True)
        e = np.where(mask, np.exp(z), 0.0)
        return e / e.sum(axis=1, keepdims=True)

    def probabilities(self) -> dict[str, dict[str, float]]:
        """Sampling probability of every option per decision (dropped options: 0)."""
        p = self._probs()
        return {
            d.name: {opt: float(p[k, i]) for i, opt in enumerate(d.options)}
            for k, d in enumerate(self.space.decisions)
        }

    def arch_probability(self, arch: Sequence[int], probs: np.ndarray | None = None) -> float:
        """Probability of ``arch`` under the current policy (0 if outside the allowed space)."""
        p = self._probs() if probs is None else probs
        return float(np.prod([p[k, int(i)] for k, i in enumerate(arch)]))

    def _sample(self, probs: np.ndarray) -> Arch:
        out = []
        for k, a in enumerate(self.space.allowed):
            opts = np.asarray(a)
            w = probs[k, opts]
            out.append(int(opts[self.rng.choice(len(opts), p=w / w.sum())]))
        return tuple(out)

    @property
    def converged(self) -> bool:
        """True once the space is shrunk to a single architecture."""
        return self.space.size == 1

    # ------------------------------------------------------------------ ask
    def _space_for(self, meta: Mapping[str, Any]) -> SearchSpace:
        """Local-search proposals are validated against the full space, policy ones the shrunk."""
        return self.space if meta["phase"] == "policy" else self._full_space

    def _propose(self) -> tuple[Arch, dict[str, Any]] | None:
        if self.converged:
            return self._propose_final()
        for _ in range(len(self.schedule) + 1):
            probs = self._probs()
            arch = self._sample_unseen(probs)
            if arch is not None:
                return self._emit(arch, probs, "policy")
            # Nothing unseen is left in this stage's space: end the stage now.
            if self.stage >= len(self.schedule) - 1:
                break
            self._shrink()
            if self.converged:
                return self._propose_final()
        return self._propose_local(self._probs()) if self.final == "local" else None

    def _emit(
        self, arch: Arch, probs: np.ndarray, phase: str, **extra: Any
    ) -> tuple[Arch, dict[str, Any]]:
        self._seen.add(arch)
        meta = {
            "stage": self.stage,
            "probability": self.arch_probability(arch, probs),
            "generation": self.generation,
            "phase": phase,
            **extra,
        }
        return arch, meta

    def _sample_unseen(self, probs: np.ndarray) -> Arch | None:
        """A policy sample not yet evaluated or in flight, or ``None`` if none is left."""
        arch = self._sample(probs)
        for _ in range(self.resample):
            if arch not in self._seen:
                return arch
            arch = self._sample(probs)
        if arch not in self._seen:
            return arch
        if self.space.size <= ENUMERATE_LIMIT:
            cands = np.array(list(itertools.product(*self.space.allowed)), dtype=int)
            if math.prod(int(n) for n in self._sizes) < 2**62:
                radix = np.cumprod(np.r_[1, self._sizes[:0:-1]])[::-1]
                seen = np.array([np.dot(a, radix) for a in self._seen], dtype=np.int64)
                unseen = ~np.isin(cands @ radix, seen)
            else:  # codes would overflow int64: compare the tuples
                unseen = np.array([tuple(int(i) for i in c) not in self._seen for c in cands])
            if not unseen.any():
                return None
            cands = cands[unseen]
            w = np.prod(probs[np.arange(cands.shape[1])[None, :], cands], axis=1)
            w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
            return tuple(int(i) for i in cands[self.rng.choice(len(cands), p=w)])
        # Too large to enumerate: an unseen one-edit neighbour, else accept the duplicate.
        nbrs = [n for n in self.space.neighbors(arch) if n not in self._seen]
        if nbrs:
            w = np.array([self.arch_probability(n, probs) for n in nbrs])
            w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
            return nbrs[int(self.rng.choice(len(nbrs), p=w))]
        return arch

    def _propose_final(self) -> tuple[Arch, dict[str, Any]] | None:
        probs = self._probs()
        only = tuple(a[0] for a in self.space.allowed)
        if only not in self._seen:
            return self._emit(only, probs, "policy")
        if self.final == "stop":
            return None
        return self._propose_local(probs)

    # ------------------------------------------------------------------ tell
    def _on_result(self, record: Record) -> None:
        self._after_tell(record)

    def _on_failure(self, record: Record) -> None:
        self._after_tell(record)

    def _after_tell(self, record: Record) -> None:
        arch = record.proposal.arch
        self._seen.add(arch)
        self._add_point(record)
        # Only results of the stage's own proposals count towards its length: with K in flight
        # a stage does not end on the K results proposed before it began.
        if record.proposal.meta.get("stage", self.stage) == self.stage:
            self.stage_results += 1
        if record.proposal.meta.get("phase", "policy") == "policy" and self.space.contains(arch):
            self.buffer.append(
                {"id": record.proposal.id, "arch": list(arch), "values": record.values}
            )
        if len(self.buffer) >= self.batch_size:
            self._reinforce(self.buffer[: self.batch_size])
            self.buffer = self.buffer[self.batch_size :]
        if (
            self.stage < len(self.schedule) - 1
            and self.stage_results >= self.stage_lengths[self.stage]
        ):
            self._shrink()

    # ------------------------------------------------------------------ REINFORCE
    def _reinforce(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """One REINFORCE step on ``batch`` (moving baseline, clipping, Adam)."""
        r = self.rewards(batch)
        self.recent_rewards = (self.recent_rewards + [float(x) for x in r])[-self.reward_window :]
        mean = float(np.mean(r))
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.baseline_decay * (mean - self.baseline)
        probs = self._probs()
        mask = self._mask()
        grad = np.zeros_like(self.logits)
        rows = np.arange(self.logits.shape[0])
        for b, rj in zip(batch, r, strict=True):
            onehot = np.zeros_like(self.logits)
            onehot[rows, b["arch"]] = 1.0
            # d(-log pi(a))/d logits = softmax - onehot, over the allowed options.
            grad += (rj - self.baseline) * (probs - onehot)
        grad = np.where(mask, grad / len(batch), 0.0)
        norm = float(np.linalg.norm(grad))
        if norm > self.clip_norm:
            grad *= self.clip_norm / (norm + 1e-6)
        self._adam(grad, mask)
        self.generation += 1

    def _adam(self, grad: np.ndarray, mask: np.ndarray) -> None:
        b1, b2 = self.betas
        g = grad + self.weight_decay * self.logits
        self._t += 1
        self._m = np.where(mask, b1 * self._m + (1 - b1) * g, self._m)
        self._v = np.where(mask, b2 * self._v + (1 - b2) * g * g, self._v)
        m_hat = self._m / (1 - b1**self._t)
        v_hat = self._v / (1 - b2**self._t)
        step = self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        self.logits = np.where(mask, self.logits - step, self.logits)

    # ------------------------------------------------------------------ shrinking
    def _top_options(self, keep: Sequence[int]) -> list[list[int]]:
        """Per decision ``k``, the ``keep[k]`` allowed options of highest logit (ties: lower
        index)."""
        out = []
        for k, a in enumerate(self.space.allowed):
            opts = list(a)
            order = sorted(opts, key=lambda i, k=k: (-self.logits[k, i], i))
            out.append(sorted(order[: min(keep[k], len(opts))]))
        return out

    def _shrink(self) -> None:
        """End the stage: drop the lowest-probability options, start the next stage."""
        new_stage = self.stage + 1
        kept = self._top_options(self._stage_keep(new_stage))
        dropped = {
            d.name: [d.options[i] for i in a if i not in kept[k]]
            for k, (d, a) in enumerate(zip(self.space.decisions, self.space.allowed, strict=True))
        }
        self.shrink_history.append(
            {
                "stage": self.stage,
                "results": self.stage_results,
                "generation": self.generation,
                "dropped": dropped,
                "probabilities": self.probabilities(),
            }
        )
        self.space = self.space.restrict(kept)
        self.stage = new_stage
        self.stage_results = 0
        self.buffer = [b for b in self.buffer if self.space.contains(b["arch"])]
        if self.reset_on_shrink:
            mask = self._mask()
            self.logits = np.where(mask, 0.0, self.logits)
            self._m = np.where(mask, 0.0, self._m)
            self._v = np.where(mask, 0.0, self._v)

    # ------------------------------------------------------------------ inspection
    def stage_probabilities(self) -> list[dict[str, Any]]:
        """Per (decision, option): its sampling probability at the end of every stage.

        Columns ``decision``, ``option``, ``stage_<s>`` for each finished stage (just before its
        shrink) and ``stage_<current>`` for the current one (the probabilities now).
        """
        snapshots = [(h["stage"], h.get("probabilities")) for h in self.shrink_history]
        snapshots.append((self.stage, self.probabilities()))
        return [
            {
                "decision": d.name,
                "option": opt,
                **{
                    f"stage_{stage}": float("nan") if probs is None else probs[d.name][opt]
                    for stage, probs in snapshots
                },
            }
            for d in self.space.decisions
            for opt in d.options
        ]

    def shrink_table(self) -> list[dict[str, Any]]:
        """One row per shrink: stage, results in it, REINFORCE steps so far, what was dropped."""
        return [
            {
                "stage": h["stage"],
                "results": h["results"],
                "reinforce_steps": h["generation"],
                "decision": name,
                "dropped": " ".join(options),
            }
            for h in self.shrink_history
            for name, options in h["dropped"].items()
        ]

    def inspection_tables(self) -> list[InspectionTable]:
        """Option probabilities per stage (CSV and heat map) and the shrink history (CSV)."""
        probs = self.stage_probabilities()
        stages = tuple(k for k in (probs[0] if probs else {}) if k.startswith("stage_"))
        return [
            InspectionTable(
                "stage_probabilities",
                probs,
                heatmap=(("decision", "option"), stages),
                title="TND: sampling probability of each option at the end of each stage",
                colormap="viridis",
            ),
            InspectionTable(
                "shrink_history",
                self.shrink_table(),
                columns=("stage", "results", "reinforce_steps", "decision", "dropped"),
            ),
        ]

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {
            "logits": self.logits.tolist(),
            "adam_m": self._m.tolist(),
            "adam_v": self._v.tolist(),
            "adam_t": self._t,
            "baseline": self.baseline,
            "generation": self.generation,
            "stage": self.stage,
            "stage_results": self.stage_results,
            "stage_lengths": list(self.stage_lengths),
            "schedule": list(self.schedule),
            "keep": [list(k) for k in self.keep],
            "buffer": [dict(b) for b in self.buffer],
            "recent_rewards": list(self.recent_rewards),
            "shrink_history": [dict(h) for h in self.shrink_history],
            "local_child": self.local_child,
            "local_exploration": self.local_exploration,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.logits = np.array(state["logits"], dtype=float)
        self._m = np.array(state["adam_m"], dtype=float)
        self._v = np.array(state["adam_v"], dtype=float)
        self._t = int(state["adam_t"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.generation = int(state["generation"])
        self.stage = int(state["stage"])
        self.stage_results = int(state["stage_results"])
        self.stage_lengths = [int(x) for x in state["stage_lengths"]]
        self.schedule = [int(x) for x in state["schedule"]]
        if "keep" in state:
            self.keep = [[int(x) for x in k] for k in state["keep"]]
        else:  # a state written before per-decision schedules: one count for every decision
            self.keep = decision_schedules([int(n) for n in self._sizes], self.schedule)
        self.buffer = [
            {"id": int(b["id"]), "arch": [int(i) for i in b["arch"]], "values": b["values"]}
            for b in state["buffer"]
        ]
        self.recent_rewards = [float(x) for x in state["recent_rewards"]]
        self.shrink_history = [dict(h) for h in state["shrink_history"]]
        # A state saved before model children: random children, so the search goes on as it ran.
        self.local_child = str(state.get("local_child", "random"))
        self.local_exploration = float(state.get("local_exploration", 0.0))
        self._seen = {r.proposal.arch for r in self.history} | {
            p.arch for p in self.pending.values()
        }
        self._reset_cache()
        for r in self.history:
            self._add_point(r)
