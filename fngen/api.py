"""The library API: load_spec, generate, build, load, check.

Building (`load_spec`, `generate`, `build`) never imports torch; `load` and
`check` run generated code and import it lazily.
"""

from __future__ import annotations

import linecache
import os
import sys
import tempfile
import types
from pathlib import Path

from fngen.codegen import generate as _generate
from fngen.model import Spec
from fngen.spec import load_spec

__all__ = ["load_spec", "generate", "build", "load", "check", "write_if_changed"]


def generate(spec: Spec | str | os.PathLike) -> str:
    """The formatted source of the module for `spec` (a Spec or a path)."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return _generate(spec)


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Atomically replace `path` with `text` unless it already holds it.
    Returns whether the file changed."""
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def build(spec_path: str | os.PathLike, out_path: str | os.PathLike) -> bool:
    """Generate the module for `spec_path` and write it to `out_path`
    atomically; nothing is written when anything fails.  Returns whether
    the file changed."""
    return write_if_changed(out_path, generate(spec_path))


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


def check(spec: Spec | str | os.PathLike, **options):
    """Verify the generated gradients; see `fngen.check.check_spec`."""
    from fngen.checker import check_spec

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return check_spec(spec, **options)
