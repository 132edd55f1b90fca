"""fngen: formulas in, verified ``torch.autograd.Function`` modules out."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use (PEP 562): `fngen --version` and `--help` do not
# load SymPy and black, which the API needs.
_EXPORTS = {
    "build": "fngen.api",
    "check": "fngen.api",
    "generate": "fngen.api",
    "load": "fngen.api",
    "load_spec": "fngen.api",
    "DeviceError": "fngen.errors",
    "Location": "fngen.errors",
    "OutputError": "fngen.errors",
    "SpecError": "fngen.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"fngen.{name}")  # fngen.api, ...
    except ModuleNotFoundError as err:
        if err.name != f"fngen.{name}":
            raise
        raise AttributeError(f"module 'fngen' has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(__all__))
