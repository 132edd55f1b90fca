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


def runtime_imports(module: str) -> set[str]:
    """The modules `module` imports when it runs (not those imported
    under ``if TYPE_CHECKING:`` for annotations)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {
                f"{node.module}.{a.name}" if node.module == "fngen" else node.module
                for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("module", ["writer", "wrapper"])
def test_the_writers_read_a_plan_and_derive_nothing(module):
    # The writers print what the plan holds: no derivation, no loader,
    # and no regular expression over the code they print.
    imports = runtime_imports(module)
    forbidden = {"fngen.derive", "fngen.spec", "fngen.formula", "fngen.plan", "re"}
    assert imports & forbidden == set()
    assert "fngen.fuse" not in imports and "fngen.kernels" not in imports


def test_the_runtime_import_finder_sees_imports():
    assert {"fngen.printer", "fngen.names"} <= runtime_imports("writer")
    assert "fngen.derive" in runtime_imports("plan")


# Classes still over 300 lines, and the most lines each may have: a class
# may shrink off this list, never grow, and no other may join it.
LONG_CLASSES = {
    ("checker", "FunctionChecker"): 1304,
    ("derive", "Deriver"): 867,
    ("printer", "TorchPrinter"): 750,
    ("formula", "FormulaParser"): 566,
    ("spec", "FunctionBuilder"): 467,
    ("triton_printer", "TritonPrinter"): 335,
}


def test_no_class_grows_past_300_lines():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 300:
                    found[(path.stem, node.name)] = lines
    assert set(found) <= set(LONG_CLASSES), set(found) - set(LONG_CLASSES)
    for key, lines in found.items():
        assert lines <= LONG_CLASSES[key], (key, lines)
