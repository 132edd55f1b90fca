"""Fragments of Python source: safe docstrings and comments, literals,
parameter lists, and the custom-op schema of a function."""

from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import pycode

from fngen.model import FunctionSpec, InputKind


def _escape_unprintable(text: str, keep: str = "") -> str:
    """Every character Python source cannot carry as itself, as an escape.

    Carriage returns, NULs, lone surrogates, line and paragraph separators
    and the other non-printable characters become `\\r`, `\\x00`, `\\ud800`...
    so that they can neither end a comment nor break the module's encoding.
    """
    return "".join(
        ch if ch.isprintable() or ch in keep else ascii(ch)[1:-1] for ch in text
    )


def comment_text(text: str) -> str:
    """`text` made safe inside a one-line `#` comment."""
    return _escape_unprintable(text)


def docstring(text: str) -> str:
    """`text` made safe inside triple double quotes, carried faithfully."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    text = _escape_unprintable(text, keep="\n\t")
    if text.endswith('"'):
        text += " "
    return text


def literal(value) -> str:
    return repr(value)


ANNOTATIONS = {
    InputKind.TENSOR: "torch.Tensor",
    InputKind.LONG: "torch.Tensor",
    InputKind.FLOAT: "float",
    InputKind.INT: "int",
    InputKind.BOOL: "bool",
}


SCHEMA_TYPES = {
    InputKind.TENSOR: "Tensor",
    InputKind.LONG: "Tensor",
    InputKind.FLOAT: "float",
    InputKind.INT: "int",
    InputKind.BOOL: "bool",
}


def custom_op_schema(fn: FunctionSpec, outputs: int) -> str:
    """The torch.library schema of `fn`: ``(Tensor x, float alpha) -> Tensor``."""
    arguments = ", ".join(
        f"{SCHEMA_TYPES[i.kind]}{'?' if i.optional else ''} {i.name}" for i in fn.inputs
    )
    results = "Tensor" if outputs == 1 else f"({', '.join(['Tensor'] * outputs)})"
    return f"({arguments}) -> {results}"


def parameters(inputs, annotated: bool = False) -> str:
    """Parameters in the declared order, with the declared defaults; an
    optional tensor defaults to None where no argument without a default
    follows it (else it is passed, None to leave it out, as
    ``F.batch_norm``'s ``running_mean``).  The spec refuses a declared
    default before an argument without one.  `annotated`: with types, as
    torch.jit.script reads an unannotated argument as a tensor."""
    parts = []
    defaults_from_here = True
    for spec in reversed(inputs):
        name = spec.name
        if annotated:
            name += ": " + ANNOTATIONS[spec.kind] + (" | None" if spec.optional else "")
        equals = " = " if annotated else "="
        if spec.has_default:
            parts.append(f"{name}{equals}{literal(spec.default)}")
        elif spec.optional and defaults_from_here:
            parts.append(f"{name}{equals}None")
        else:
            parts.append(name)
            defaults_from_here = False
    return ", ".join(reversed(parts))


def python_value(expr: sp.Expr) -> str:
    """An init argument (an expression of dimension names) as Python."""
    if expr.is_number:
        return repr(float(expr))
    return pycode(expr, fully_qualified_modules=True)
