"""The engine registry: built-ins load on demand, user engines join with ``register``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paretune.objectives.base import ObjectiveSet
from paretune.search_algos import ENGINES, Engine, engine_names, make_engine, register
from paretune.search_algos.random_search import RandomSearch
from paretune.search_algos.registry import BUILTIN_ENGINES
from paretune.spaces.nb201 import NB201Space


@pytest.mark.parametrize("name", sorted(BUILTIN_ENGINES))
def test_each_builtin_path_loads_the_engine_of_that_name(name: str) -> None:
    cls = ENGINES[name]
    assert issubclass(cls, Engine)
    assert cls.name == name


def test_the_mapping_lists_builtins_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from paretune.search_algos import ENGINES, engine_names\n"
        "names = engine_names()\n"
        "assert 'tnd' in ENGINES and len(ENGINES) == len(names), names\n"
        "assert 'paretune.search_algos.shrinking.engine' not in sys.modules\n"
        "assert ENGINES['tnd'].name == 'tnd'\n"
        "assert 'paretune.search_algos.shrinking.engine' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_engine_is_named() -> None:
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        make_engine("nope", NB201Space(), ObjectiveSet.of(("accuracy", "max")))
    with pytest.raises(KeyError):
        ENGINES["nope"]


def test_registered_user_engine_is_selectable() -> None:
    from paretune.search_algos import registry

    @register
    class Mine(RandomSearch):
        name = "test_registry_mine"

    try:
        assert "test_registry_mine" in engine_names()
        assert ENGINES["test_registry_mine"] is Mine
        engine = make_engine("test_registry_mine", NB201Space(), ObjectiveSet.of(("a", "max")))
        assert isinstance(engine, Mine)
    finally:
        del registry._registered["test_registry_mine"]
    assert "test_registry_mine" not in ENGINES
