"""Exact rewrites of the numerically unstable forms (`fngen.stable`)."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from fngen import functions as F
from fngen.stable import stabilize

x, y = sp.symbols("x y", real=True)


@pytest.mark.parametrize(
    "expr, expected",
    [
        (sp.log(1 + sp.exp(x)), F.Softplus(x)),
        (1 / (1 + sp.exp(x)), F.Sigmoid(-x)),
        (sp.log(F.Sigmoid(x)), F.LogSigmoid(x)),
        (sp.log(1 + x**2), log1p(x**2)),
        (sp.exp(x) - 1, expm1(x)),
        (1 - sp.exp(x), -expm1(x)),
        # SymPy distributes a constant: c*(exp(u) - 1) arrives as c*exp(u) - c.
        (3 * (sp.exp(x) - 1), 3 * expm1(x)),
        (
            sp.Rational(5, 2) * (sp.exp(2 * x) - 1) + y,
            sp.Rational(5, 2) * expm1(2 * x) + y,
        ),
    ],
)
def test_unstable_forms_are_rewritten(expr, expected):
    assert stabilize(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [2 * sp.exp(x) - 1, sp.exp(x) - 2, sp.exp(x) + 1, 3 * sp.exp(x) - 3 * y],
)
def test_other_forms_are_left_alone(expr):
    assert stabilize(expr) == expr
