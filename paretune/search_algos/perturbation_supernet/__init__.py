"""PertNAS as the paper runs it (``search.mode: supernet``): valuation matrices, coarse, fine
and topology selections, and lineages of trade-off weights for several objectives (pure
numpy; the torch side is :mod:`paretune.objectives.pertnas_valuation`, the Ray side
:mod:`paretune.platform.pertnas_supernet`)."""

from __future__ import annotations

from paretune.search_algos.perturbation_supernet.plan import Job, PertNASPlan, matrix_csv
from paretune.search_algos.perturbation_supernet.selection import (
    coarse_select,
    fine_order,
    importance,
    lineage_weights,
    scales,
    top_options,
    topology_select,
)

__all__ = [
    "Job",
    "PertNASPlan",
    "coarse_select",
    "fine_order",
    "importance",
    "lineage_weights",
    "matrix_csv",
    "scales",
    "top_options",
    "topology_select",
]
