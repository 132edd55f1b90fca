"""Importing a generated module in memory, with no file: `load` and
`import_source`, which the API, the checker and the benchmarks share."""

from __future__ import annotations

import linecache
import os
import sys
import types
from pathlib import Path

from fngen.codegen import generate as _generate
from fngen.model import Spec
from fngen.spec import load_spec

__all__ = ["load", "import_source"]


def load(spec: Spec | str | os.PathLike, name: str | None = None) -> types.ModuleType:
    """Generate the module for `spec` and import it in memory, with no file.

    What runs is the generated source, never the spec's text."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    name = name or f"fngen_generated_{Path(spec.path).stem}".replace("-", "_")
    return import_source(_generate(spec), name, f"<fngen {spec.path}>")


def import_source(source: str, name: str, filename: str) -> types.ModuleType:
    """Import generated `source` as the module `name`, with no file;
    tracebacks and ``inspect.getsource`` show its lines as `filename`."""
    module = types.ModuleType(name)
    module.__file__ = filename
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # generated code, the equivalent of an import
    except BaseException:
        sys.modules.pop(name, None)
        raise
    module.__fngen_source__ = source
    return module
