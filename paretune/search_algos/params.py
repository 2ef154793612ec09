"""Checks of engine parameters: each returns the clean value or raises one clear ``ValueError``."""

from __future__ import annotations

from typing import Any


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (booleans and non-integral numbers are refused)."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def optional_int(name: str, value: Any, minimum: int) -> int | None:
    """``None``, or ``value`` as an int >= ``minimum``."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")
    return int(value)


def fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1]."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return v


def non_negative(name: str, value: Any) -> float:
    """``value`` as a float >= 0 (NaN refused)."""
    v = float(value)
    if not v >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def positive_float(name: str, value: Any) -> float:
    """``value`` as a float > 0 (NaN refused)."""
    v = float(value)
    if not v > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v
