"""How the next candidate is chosen: ask/tell engines, numpy only.

Engines are registered by name in :mod:`paretune.search_algos.registry` (``ENGINES``);
``make_engine`` builds one. The Ray adapter lives in :mod:`paretune.platform.searcher` (it needs
Ray; this package does not import Ray).
"""

from __future__ import annotations

from paretune.search_algos.base import Engine, InspectionTable, Proposal, Record
from paretune.search_algos.registry import ENGINES, engine_names, make_engine, register

__all__ = [
    "ENGINES",
    "Engine",
    "InspectionTable",
    "Proposal",
    "Record",
    "engine_names",
    "make_engine",
    "register",
]
