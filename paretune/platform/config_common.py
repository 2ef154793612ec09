"""What every config section shares: the error type, strict models, short value reprs."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
)


class ConfigError(ValueError):
    """A config that cannot run; the message says which field, which value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut in the middle when longer than ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: limit - 20]}...{text[-8:]}{size}"
