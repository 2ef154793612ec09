"""The package's import graph, read from the source with ``ast`` (nothing is imported):
no import cycle, and the layering ``platform -> search_algos, objectives -> spaces`` with
``spaces``, ``objectives`` and ``search_algos`` free of Ray and MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paretune"
LOWER = ("spaces", "objectives", "search_algos")  # they import neither Ray nor MLflow
# layer -> the paretune layers it may import
ALLOWED = {
    "spaces": {"spaces"},
    "objectives": {"objectives", "spaces"},
    "search_algos": {"search_algos", "objectives", "spaces"},
}
# Known breaks of the layering, listed so that no new one comes unnoticed and one that is
# mended is struck off here (the test asks for exactly these):
# - MLflow imported inside a function (not at import time) of the latency predictor's MLflow
#   reader and artifact store; they belong in platform/;
# - objectives importing search_algos (the reverse of search_algos -> objectives.base): TND's
#   stage uses the shrinking policy, PertNAS's valuation the lineage weights.
EXCEPTIONS = {
    ("paretune.objectives.predictor.data", "mlflow.tracking"),
    ("paretune.objectives.predictor.store", "mlflow.tracking"),
    ("paretune.objectives.predictor.store", "mlflow.artifacts"),
    ("paretune.objectives.tnd_stage", "paretune.search_algos.shrinking.policy"),
    ("paretune.objectives.pertnas_valuation", "paretune.search_algos.perturbation_supernet"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path = PACKAGE) -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package: name -> (path, syntax tree)."""
    return {
        module_name(p): (p, ast.parse(p.read_text(), filename=str(p)))
        for p in sorted(root.rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(
    name: str, tree: ast.Module, is_package: bool, modules: set[str]
) -> list[tuple[str, bool]]:
    """``(imported module, at import time)`` for every import statement of a module.

    At import time: not inside a function or under ``if TYPE_CHECKING``. ``from a import b``
    names the module ``a.b`` when that is a module of the package, else ``a``."""
    out: list[tuple[str, bool]] = []
    package = name if is_package else name.rpartition(".")[0]

    def visit(node: ast.AST, now: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((alias.name, now) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in modules else base, now))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, now)
            for child in node.body:
                visit(child, False)
            return
        lazy = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, now and not lazy)

    visit(tree, True)
    return out


def import_graph(mods: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time."""
    names = set(mods)
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in mods.items():
        found = imports(name, tree, path.name == "__init__.py", names)
        graph[name] = {m for m, now in found if now and m in names and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


@pytest.fixture(scope="module")
def mods() -> dict[str, tuple[Path, ast.Module]]:
    return sources()


def test_the_package_has_no_import_cycle(mods) -> None:
    assert cycles(import_graph(mods)) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "paretune"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "a.py").write_text("from paretune.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from paretune import c\n"
        "def f():\n    from paretune.sub import a\n"
    )
    (pkg / "c.py").write_text("import paretune.sub\n")
    (pkg / "d.py").write_text("from .sub import b\nimport paretune.d\n")
    global PACKAGE
    real, PACKAGE = PACKAGE, pkg
    try:
        graph = import_graph(sources(pkg))
    finally:
        PACKAGE = real
    assert graph["paretune.sub"] == {"paretune.sub.a"}
    assert graph["paretune.sub.b"] == set()  # lazy and typing-only imports do not count
    assert graph["paretune.d"] == {"paretune.sub.b"}
    assert cycles(graph) == []
    graph["paretune.sub.b"].add("paretune.c")  # b -> c -> sub -> a -> b
    assert cycles(graph) == [["paretune.c", "paretune.sub", "paretune.sub.a", "paretune.sub.b"]]


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_import_neither_ray_nor_mlflow_nor_upper_layers(mods, layer: str) -> None:
    names = set(mods)
    found = set()
    for name, (path, tree) in mods.items():
        if not name.startswith(f"paretune.{layer}"):
            continue
        for module, now in imports(name, tree, path.name == "__init__.py", names):
            top, _, rest = module.partition(".")
            if top in ("ray", "mlflow") or (
                top == "paretune" and rest.split(".")[0] not in ALLOWED[layer]
            ):
                found.add((name, module, now))
    known = {e for e in EXCEPTIONS if e[0].startswith(f"paretune.{layer}.")}
    assert {(n, m) for n, m, _ in found} == known
    assert not {(n, m) for n, m, now in found if now and m.split(".")[0] in ("ray", "mlflow")}
