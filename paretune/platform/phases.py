"""Weight-sharing phases: Ray Tune trials that run before a search's own trials.

Four of the five seed papers train shared weights before (or instead of) evaluating networks
one by one. Such a method is a *phase*: it runs its own Ray Tune trials (supernet training,
TND's stages, PertNAS's valuations, NAS-LID's split), writes its checkpoints to the experiment's
storage, and hands the search what it then needs: the prepared experiment (for example the
one-shot evaluator's checkpoint path) and the searcher (for example one that proposes the final
genotypes, retrained stand-alone as ordinary trials). The search's trials then run, are tracked
and reported like any other.

A phase is idempotent: run again on the same folder (``paretune resume``), it continues from
its checkpoints and returns the same hand-over without training twice.

Which phase runs is decided by the config alone (:func:`phase_for`); each lives in its own
module, named here and imported only when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from paretune.platform.config import ExperimentConfig
from paretune.platform.experiment import write_state

if TYPE_CHECKING:  # prepare.make_searcher asks a phase for its placeholder searcher
    from paretune.platform.prepare import Prepared

# phase name -> "module:factory"; the factory takes the config and returns the phase.
PHASES: dict[str, str] = {
    "supernet_training": "paretune.platform.supernet_phase:make_phase",
    "tnd_supernet": "paretune.platform.tnd_supernet:make_phase",
    "pertnas_supernet": "paretune.platform.pertnas_supernet:make_phase",
    "nas_lid": "paretune.platform.nas_lid:make_phase",
}


class Phase(Protocol):
    """What the launcher asks of a weight-sharing phase."""

    name: str

    def run(
        self,
        prepared: Prepared,
        searcher: Any,
        experiment_dir: Path,
        state: dict[str, Any],
        *,
        verbose: int = 1,
    ) -> tuple[Prepared, Any]:
        """Run (or continue) the phase's trials; return the prepared experiment and the
        searcher the search then uses."""
        ...


def phase_name(config: ExperimentConfig) -> str | None:
    """The phase this config needs before its search, or ``None``."""
    if config.search.mode == "supernet":
        return f"{config.search.algorithm}_supernet"
    if getattr(config.evaluator, "kind", None) == "supernet":
        return "nas_lid" if getattr(config.evaluator, "split", None) else "supernet_training"
    return None


def phase_for(config: ExperimentConfig) -> Phase | None:
    """The phase object for this config (its module imported now), or ``None``."""
    name = phase_name(config)
    if name is None:
        return None
    module, _, factory = PHASES[name].partition(":")
    return getattr(importlib.import_module(module), factory)(config)


def run_phase(
    prepared: Prepared,
    searcher: Any,
    experiment_dir: Path,
    state: dict[str, Any],
    *,
    verbose: int = 1,
) -> tuple[Prepared, Any]:
    """Run the config's phase, if any, and record in the state file that it finished."""
    phase = phase_for(prepared.config)
    if phase is None:
        return prepared, searcher
    prepared, searcher = phase.run(prepared, searcher, experiment_dir, state, verbose=verbose)
    state.setdefault("phases_done", [])
    if phase.name not in state["phases_done"]:
        state["phases_done"].append(phase.name)
    write_state(experiment_dir, state)
    return prepared, searcher
