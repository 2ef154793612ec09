"""Predictor screening: hopeless candidates are rejected before they cost a trial.

:class:`ScreenedEngine` wraps any engine. Before a proposal of the inner engine is handed out,
``predict(arch)`` estimates the limited objective (e.g. latency with a limit of 12 ms); a
candidate predicted beyond the limit by more than ``margin`` (relative to the limit) is told to
the inner engine as a failure (``screened: ...``) without a trial, and the inner engine is asked
again, at most ``max_screens`` times per ``ask``; after that the proposal is handed out whatever
its prediction, so screening never stalls a search. Everything else (``tell``, history, archive,
state) is the inner engine's, so results and constrained domination work as without screening.
It wraps the engine (composition): it offers the engine interface
(:class:`~paretune.search_algos.base.SearchEngine`) and is not an ``Engine`` subclass.

Engines stay numpy-only: the predictor comes in as a plain callable ``predict(arch) -> float``
(e.g. :class:`paretune.objectives.predictor.PredictorFunction`, which pickles small).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paretune.search_algos.base import STATE_VERSION, Engine, Proposal, Record
from paretune.search_algos.wrapper import EngineWrapper
from paretune.spaces.base import Arch

SCREEN_PREFIX = "screened:"


@dataclass(frozen=True)
class EngineSpec:
    """How to rebuild an engine: its class and constructor arguments (pickles small)."""

    cls: type[Engine]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, engine: Engine) -> EngineSpec:
        args, kwargs = engine.init_args
        return cls(type(engine), tuple(args), dict(kwargs))

    def build(self) -> Engine:
        return self.cls(*self.args, **self.kwargs)


class ScreenedEngine(EngineWrapper):
    """An engine whose proposals are screened by a predictor against one objective's limit.

    It holds the engine it screens (``inner``) and hands everything but ``ask`` to it.

    Args:
        inner: the engine to wrap (or an :class:`EngineSpec` of it).
        predict: ``arch -> predicted value`` of the screened objective, in its units.
        objective: the screened objective's name (default: the first objective with a limit).
        limit: the limit to screen against (default: the objective's limit).
        margin: how far beyond the limit, relative to it, a prediction must be to screen a
            candidate out (0.1: predicted more than 10% over a ``min`` limit).
        max_screens: candidates screened out at most per ``ask`` (0: none).
        enabled: screen at all (off: the inner engine unchanged, predictions still logged).

    Raises:
        ValueError: no objective with a limit to screen, an unknown objective, or a bad
            ``margin``/``max_screens``, naming the value and what is allowed.
    """

    name = "screened"

    def __init__(
        self,
        inner: Engine | EngineSpec,
        predict: Callable[[Arch], float],
        objective: str | None = None,
        limit: float | None = None,
        margin: float = 0.1,
        max_screens: int = 20,
        enabled: bool = True,
    ) -> None:
        if isinstance(inner, EngineSpec):
            inner = inner.build()
        if not isinstance(inner, Engine):
            raise TypeError(f"ScreenedEngine: inner must be an Engine, got {type(inner).__name__}")
        if not callable(predict):
            raise TypeError("ScreenedEngine: predict must be a callable arch -> float")
        objectives = inner.objectives
        if objective is None:
            limited = [o.name for o in objectives if o.limit is not None]
            if not limited and limit is None:
                raise ValueError(
                    f"screening.objective: no objective has a limit to screen against "
                    f"(objectives: {objectives.names})"
                )
            objective = limited[0] if limited else objectives.names[0]
        if objective not in objectives.names:
            raise ValueError(
                f"screening.objective = {objective!r}: not an objective (allowed: {objectives.names})"
            )
        target = objectives[objective]
        limit = target.limit if limit is None else float(limit)
        if limit is None or not math.isfinite(limit):
            raise ValueError(
                f"screening.objective = {objective!r}: it has no limit (give one in objectives)"
            )
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"screening.margin = {margin!r}: must be a finite number >= 0")
        if isinstance(max_screens, bool) or int(max_screens) != max_screens or max_screens < 0:
            raise ValueError(f"screening.max_screens = {max_screens!r}: must be an integer >= 0")
        self.inner = inner
        self.predict = predict
        self.objective = objective
        self.direction = target.direction
        self.limit = float(limit)
        self.margin = float(margin)
        self.max_screens = int(max_screens)
        self.enabled = bool(enabled)
        self.num_screened = 0
        self.num_passed = 0
        self.num_forced = 0
        self.init_args = (
            (EngineSpec.of(inner), predict),
            {
                "objective": objective,
                "limit": limit,
                "margin": margin,
                "max_screens": max_screens,
                "enabled": enabled,
            },
        )

    # ------------------------------------------------------------------ screening
    @property
    def threshold(self) -> float:
        """The predicted value beyond which a candidate is screened out."""
        slack = self.margin * abs(self.limit)
        return self.limit + slack if self.direction == "min" else self.limit - slack

    def hopeless(self, predicted: float) -> bool:
        """True when ``predicted`` is beyond the limit by more than the margin."""
        if not math.isfinite(predicted):
            return False
        if self.direction == "min":
            return predicted > self.threshold
        return predicted < self.threshold

    def ask(self) -> Proposal | None:
        """The inner engine's next proposal that is not hopeless (see the module docstring)."""
        for attempt in range(self.max_screens + 1):
            proposal = self.inner.ask()
            if proposal is None:
                return None
            try:
                predicted = float(self.predict(proposal.arch))
            except Exception as exc:  # noqa: BLE001 - a broken predictor must not stop a search
                proposal.meta["screen_error"] = f"{type(exc).__name__}: {exc}"
                self.num_passed += 1
                return proposal
            proposal.meta[f"predicted_{self.objective}"] = predicted
            if self.enabled and self.hopeless(predicted):
                if attempt < self.max_screens:
                    self.num_screened += 1
                    self.inner.tell_failure(
                        proposal,
                        f"{SCREEN_PREFIX} predicted {self.objective} {predicted:.4g} beyond "
                        f"the limit {self.limit:.4g} (margin {self.margin:g})",
                    )
                    continue
                self.num_forced += 1
                proposal.meta["screen"] = "over the limit, handed out after max_screens"
            self.num_passed += 1
            return proposal
        return None  # pragma: no cover - the loop always returns

    def screened_records(self) -> list[Record]:
        """The candidates screened out (failures whose error starts with ``screened:``)."""
        return [r for r in self.history if r.failed and (r.error or "").startswith(SCREEN_PREFIX)]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "engine": self.name,
            "inner": self.inner.state_dict(),
            "screen": {
                "num_screened": self.num_screened,
                "num_passed": self.num_passed,
                "num_forced": self.num_forced,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("engine") != self.name:
            raise ValueError(f"state is for engine {state.get('engine')!r}, not {self.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"state version {state.get('version')} is not supported (expected {STATE_VERSION})"
            )
        self.inner.load_state_dict(state["inner"])
        screen = state.get("screen", {})
        self.num_screened = int(screen.get("num_screened", 0))
        self.num_passed = int(screen.get("num_passed", 0))
        self.num_forced = int(screen.get("num_forced", 0))

    def __repr__(self) -> str:
        return (
            f"ScreenedEngine({type(self.inner).__name__}, objective={self.objective!r}, "
            f"limit={self.limit:g}, margin={self.margin:g}, enabled={self.enabled})"
        )


def screen_engine(
    engine: Engine, predict: Callable[[Arch], float] | None, settings: Mapping[str, Any] | None
) -> Engine | ScreenedEngine:
    """``engine`` wrapped in a :class:`ScreenedEngine` when ``settings["enabled"]``.

    ``settings`` are the config's ``screening`` section (``enabled``, ``objective``, ``margin``,
    ``max_screens``, optional ``limit``); no settings or not enabled: ``engine`` unchanged.
    """
    if not settings or not settings.get("enabled"):
        return engine
    if predict is None:
        raise ValueError("screening.enabled = True: needs a predictor (predictor.path)")
    kwargs = {k: v for k, v in settings.items() if k != "enabled" and v is not None}
    allowed = ("objective", "limit", "margin", "max_screens")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"screening: unknown settings {unknown} (allowed: enabled, {', '.join(allowed)})"
        )
    return ScreenedEngine(engine, predict, **kwargs)
