"""User spaces from Python: a factory ``module:function`` that returns a :class:`SearchSpace`."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paretune.spaces.base import SearchSpace

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_object(spec: str, field: str, sources: str | Path | None = None) -> Any:
    """The object named by ``"package.module:attribute"``.

    Args:
        spec: ``module:attribute`` (the attribute may be dotted, ``module:Class.method``).
        field: the config field named in errors (e.g. ``space.factory``).
        sources: a folder put first on ``sys.path`` before importing (the user's code).

    Raises:
        ValueError: a malformed spec, a missing folder, module or attribute, or an import that
            fails, in one line naming the field and the value.
    """
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ValueError(
            f"{field} = {spec!r}: expected 'module:function' (e.g. 'my_package.spaces:make_space')"
        )
    if sources is not None:
        folder = Path(sources).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"{field}: sources = {str(sources)!r} is not a folder")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"{field} = {spec!r}: module {exc.name!r} not found (is it installed or in sources?)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(
            f"{field} = {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{field} = {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def python_space(
    factory: str,
    args: Mapping[str, Any] | None = None,
    sources: str | Path | None = None,
) -> SearchSpace:
    """Call the user's ``factory(**args)`` and check that it returns a :class:`SearchSpace`."""
    fn = load_object(factory, "space.factory", sources)
    if not callable(fn):
        raise ValueError(f"space.factory = {factory!r}: {type(fn).__name__} is not callable")
    if args is not None and not isinstance(args, Mapping):
        raise ValueError(f"space.args = {args!r}: expected a mapping of keyword arguments")
    try:
        space = fn(**dict(args or {}))
    except Exception as exc:  # noqa: BLE001 - report the user's error in one line
        raise ValueError(
            f"space.factory = {factory!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(space, SearchSpace):
        raise ValueError(
            f"space.factory = {factory!r} returned {type(space).__name__}, expected a "
            "paretune.spaces.SearchSpace"
        )
    return space
