"""NAS-Bench-Macro's stage layout, shared by the space and its network (no torch)."""

from __future__ import annotations

# Layers per stage (8 in all).
MACRO_STAGES: tuple[int, ...] = (2, 3, 3)
