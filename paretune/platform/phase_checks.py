"""Checks shared by the weight-sharing phases' constructors (``search.mode: supernet``): the
evaluator and space they need and their ``search.params``, each failure one ConfigError line."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from paretune.platform.config import ConfigError, ExperimentConfig


def check_phase_config(
    config: ExperimentConfig,
    *,
    mode: str,
    evaluator_reason: str,
    spaces: Iterable[str],
    networks: str,
    check_params: Callable[..., dict[str, Any]],
    params_args: Callable[[], tuple[Any, ...]],
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """``(objectives, params)`` of a phase, or ConfigError naming the first bad field.

    Args:
        mode: who needs it in the messages (``"tnd's supernet mode"``).
        evaluator_reason: why ``evaluator.kind = 'train'`` is needed (after the mode).
        spaces, networks: the space kinds the mode has ``networks`` for.
        check_params: ``check_params(params, objectives, *params_args())``
            completes ``search.params`` or raises ValueError (its message is the line).
    """
    if config.evaluator.kind != "train":
        raise ConfigError(f"evaluator.kind = {config.evaluator.kind!r}: {mode} {evaluator_reason}")
    spaces = tuple(spaces)
    if config.space.kind not in spaces:
        raise ConfigError(
            f"space.kind = {config.space.kind!r}: {mode} has {networks} for "
            f"{', '.join(spaces)} only"
        )
    objectives = [(o.name, o.direction) for o in config.objectives]
    try:
        params = check_params(dict(config.search.params), objectives, *params_args())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return objectives, params


__all__ = ["check_phase_config"]
