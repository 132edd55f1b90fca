"""The package's layout: its modules import each other without a cycle
(lazy imports inside functions included), and the errors a user catches
are importable from `fngen` itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fngen

PACKAGE = Path(fngen.__file__).resolve().parent


def import_graph() -> dict[str, set[str]]:
    """Each module of fngen (``api``, ``templates.runtime``...) and the
    fngen modules it imports anywhere in its text."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        name = name.removesuffix(".__init__").removesuffix("__init__") or "fngen"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                if module.startswith("fngen."):
                    found.add(module.removeprefix("fngen."))
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node, path):
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append(path[path.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    return found


def test_the_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert {"api", "checker", "importing", "codegen"} <= set(graph)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_device_error_is_fngens():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = fngen.load_spec(PACKAGE.parent / "examples" / "ops.yaml")
    with pytest.raises(fngen.DeviceError, match="cuda"):
        fngen.check(spec, device="cuda")
    assert fngen.DeviceError is fngen.errors.DeviceError
