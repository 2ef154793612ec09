"""Loading a config: YAML files, ``key=value`` overrides and one-line error messages."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from paretune.platform.config_common import ConfigError, _short
from paretune.platform.config_evaluation import (
    _EVALUATOR_TAGS,
    PythonEvaluatorConfig,
    TableEvaluatorConfig,
    TrainEvaluatorConfig,
)
from paretune.platform.config_experiment import ExperimentConfig


# ---------------------------------------------------------------------- loading
def _format_loc(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _EVALUATOR_TAGS and text.endswith("evaluator"):
            continue  # the discriminator tag pydantic inserts into the location
        else:
            text += f".{part}" if text else str(part)
    return text or "(config)"


def _lookup(data: Any, loc: Iterable[Any]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def format_validation_error(error: ValidationError, data: Mapping[str, Any]) -> str:
    """One line per problem: ``field = value: what is wrong / allowed``.

    A check across fields (a model validator) names its fields itself: its message is
    printed without the section's value.
    """
    lines = []
    for e in error.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p in _EVALUATOR_TAGS)]
        where = _format_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = _lookup(data, loc[:-1]) if len(loc) > 1 else data
            lines.append(f"{where}: unknown key{_allowed_keys_hint(error, e, parent)}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required field is missing")
        else:
            value = e.get("input", _lookup(data, loc))
            if isinstance(value, Mapping) and e["type"] == "value_error":
                top = where.split(".")[0].split("[")[0]
                lines.append(msg if not loc or msg.startswith(top) else f"{where}: {msg}")
            else:
                lines.append(f"{where} = {_short(value)}: {msg}")
    return "\n".join(lines)


def _allowed_keys_hint(error: ValidationError, e: Mapping[str, Any], parent: Any) -> str:
    model = _model_at(ExperimentConfig, [p for p in e["loc"][:-1]], parent)
    if model is None:
        return ""
    return f" (allowed: {', '.join(model.model_fields)})"


def _model_at(model: type[BaseModel], loc: list[Any], data: Any) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _EVALUATOR_TAGS:
            model = {
                "table": TableEvaluatorConfig,
                "train": TrainEvaluatorConfig,
                "python": PythonEvaluatorConfig,
            }[part]
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        nxt = _first_model(ann)
        if nxt is None:
            return None
        model = nxt
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. search.num_samples=50)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: value is not valid YAML ({_yaml_problem(exc)})"
        ) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; list items by index (``objectives.0.limit=2``)."""
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {item!r}: {where} is not an index of a {len(node)}-item list"
                    )
                node = node[int(part)]
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict | list):
                    raise ConfigError(f"override {item!r}: {where} is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(
                    f"override {item!r}: {last} is not an index of a {len(node)}-item list"
                )
            node[int(last)] = value
        else:
            node[last] = value
    return data


def config_from_dict(
    data: Mapping[str, Any], source: str = "config", *, check_data: bool = True
) -> ExperimentConfig:
    """Validate a dict; raises :class:`ConfigError` with one line per problem.

    ``check_data``: check that a dataset read from disk (``evaluator.data_path``) is there.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(dict(data), context={"check_data": check_data})
    except ValidationError as exc:
        lines = format_validation_error(exc, data)
        head = f"{source}: " if "\n" not in lines else f"{source}: invalid config\n"
        raise ConfigError(head + lines) from None


def read_config_data(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The mapping of a YAML experiment with ``key=value`` overrides applied, not yet validated."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the config as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return apply_overrides(data, overrides)


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), *, check_data: bool | None = None
) -> ExperimentConfig:
    """Read and validate a YAML experiment, applying ``key=value`` overrides.

    ``check_data``: check ``evaluator.data_path`` (see :func:`config_from_dict`); ``None``:
    check unless ``path`` is the saved config of an experiment directory (beside its
    ``paretune.json``), which ``report``, ``sync-mlflow`` and ``ui`` read without the data.
    """
    if check_data is None:
        check_data = not (Path(path).parent / "paretune.json").is_file()
    return config_from_dict(
        read_config_data(path, overrides), source=str(path), check_data=check_data
    )
