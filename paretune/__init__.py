"""paretune: multi-objective neural architecture search on Ray Tune, tracked in MLflow.

The top-level names import lazily so that ``import paretune`` stays cheap (no Ray, no torch).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_config", "run"]


def __getattr__(name: str):
    if name == "load_config":
        from paretune.platform.config import load_config

        return load_config
    if name == "run":
        from paretune.platform.launcher import run

        return run
    raise AttributeError(f"module 'paretune' has no attribute {name!r}")
