"""A user's own evaluation: ``function(arch: dict, report) -> {metric: value}``.

``evaluator: {kind: python, function: "my_model:evaluate", sources: [src]}`` makes every trial
call the user's function with the architecture as a dict (``{decision: option value}``; the
option values keep their YAML types for ``choices`` spaces) and a ``report`` callable
(``report(epoch=1, accuracy=91.2)`` forwards an intermediate result, e.g. for a scheduler). It
returns ``{metric: value}`` or ``{metric: (value, source)}`` with ``source`` one of
:data:`~paretune.objectives.base.SOURCES` (default ``measured``). The metrics are the ones the
config's objectives name: each must be returned. An exception raised by the function fails the
trial, as any evaluator's does. A function taking ``trial_dir`` gets the trial's folder.

The function and the space are named (``module:function`` and the space's kind and settings),
never pickled: each trial process imports them itself.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paretune.objectives.base import SOURCES, Evaluation, MetricInfo, ReportFn
from paretune.spaces import SearchSpace, load_object, make_space
from paretune.spaces.base import Arch

_SPACES: dict[str, SearchSpace] = {}


def space_from_spec(spec: Mapping[str, Any] | None) -> SearchSpace:
    """The space of ``{"kind": ..., "restrict": ..., **settings}`` (``None``: NB201), built
    once per process."""
    spec = dict(spec or {"kind": "nb201"})
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _SPACES:
        kind = spec.pop("kind", "nb201")
        restrict = spec.pop("restrict", None)
        _SPACES[key] = make_space(kind, restrict, **spec)
    return _SPACES[key]


def arch_dict(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """``{decision: option}``: the option values as written for ``choices`` spaces, the option
    names otherwise."""
    to_dict = getattr(space, "to_dict", None)
    return dict(to_dict(arch)) if callable(to_dict) else space.to_params(arch)


def _add_sources(sources: Sequence[str | Path] | str | None) -> list[str]:
    if isinstance(sources, str | Path):
        sources = [sources]
    folders = []
    for s in sources or ():
        folder = Path(s).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"evaluator.sources: {str(s)!r} is not a folder")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        folders.append(str(folder))
    return folders


class PythonEvaluator:
    """Calls a user's ``module:function`` on each architecture (see the module docstring).

    Args:
        function: ``"module:function"``.
        metrics: the metrics it returns, ``{name: direction}`` or a list of names.
        space: the space's spec (``{"kind": ..., **settings}``); ``None``: NB201.
        sources: folders put first on ``sys.path`` before importing ``function``.
        args: keyword arguments passed to every call.

    Raises:
        ValueError: the function cannot be imported or is not callable, no metrics, or a
            source folder is missing; one line naming the field and the value.
    """

    def __init__(
        self,
        function: str,
        metrics: Mapping[str, str] | Sequence[str] = (),
        space: Mapping[str, Any] | None = None,
        sources: Sequence[str] | str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        self.sources = _add_sources(sources)
        fn = load_object(function, "evaluator.function")
        if not callable(fn):
            raise ValueError(
                f"evaluator.function = {function!r}: {type(fn).__name__} is not callable"
            )
        if not metrics:
            raise ValueError(
                f"evaluator.function = {function!r}: no metrics declared (name them as objectives)"
            )
        if not isinstance(metrics, Mapping):
            metrics = dict.fromkeys(metrics, "")
        self.function = function
        self._fn = fn
        self.args = dict(args or {})
        self.space = space_from_spec(space)
        self._metrics = {
            name: MetricInfo("", direction if direction in ("min", "max") else "", "measured")
            for name, direction in metrics.items()
        }
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = []
        self._takes_trial_dir = any(
            p.name == "trial_dir" or p.kind is p.VAR_KEYWORD for p in params
        )

    def metrics(self) -> Mapping[str, MetricInfo]:
        """The declared metrics (source ``measured`` unless a value says otherwise)."""
        return dict(self._metrics)

    def evaluate(self, arch: Arch, report: ReportFn | None = None, **context: Any) -> Evaluation:
        """Call the function on ``arch`` and check what it returns.

        Raises:
            ValueError: the result is not a mapping, misses a declared metric, or holds a value
                that is not a number or a source that is not known.
        """
        arch = self.space.validate_full(arch)

        def report_kw(**values: Any) -> None:
            if report is not None:
                report(dict(values))

        kwargs = dict(self.args)
        if self._takes_trial_dir and context.get("trial_dir") is not None:
            kwargs["trial_dir"] = context["trial_dir"]
        result = self._fn(arch_dict(self.space, arch), report_kw, **kwargs)
        return self._evaluation(result)

    def _evaluation(self, result: Any) -> Evaluation:
        where = f"evaluator.function = {self.function!r}"
        if not isinstance(result, Mapping):
            raise ValueError(
                f"{where} returned {type(result).__name__}, expected a dict {{metric: value}}"
            )
        missing = [m for m in self._metrics if m not in result]
        if missing:
            raise ValueError(
                f"{where} returned no {missing} (returned: {sorted(map(str, result))}; the "
                "objectives name these metrics)"
            )
        values: dict[str, float] = {}
        sources: dict[str, str] = {}
        extras: dict[str, Any] = {}
        for name, item in result.items():
            value, source = item, "measured"
            if isinstance(item, tuple | list) and len(item) == 2:
                value, source = item
                if source not in SOURCES:
                    raise ValueError(
                        f"{where}: {name} source {source!r} is unknown (allowed: "
                        f"{', '.join(SOURCES)})"
                    )
            if name not in self._metrics:
                # logged beside, not an objective
                extras[str(name)] = value if isinstance(value, int | float | str) else str(value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value)  # numpy and torch scalars
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: {name} = {value!r} is not a number") from None
            values[name] = float(value)
            sources[name] = source
        return Evaluation(values=values, sources=sources, extras=extras)

    def __repr__(self) -> str:
        return f"PythonEvaluator({self.function!r}, metrics={list(self._metrics)})"
