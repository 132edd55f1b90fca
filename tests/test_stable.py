"""Exact rewrites of the numerically unstable forms (`fngen.stable`)."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from fngen import functions as F
from fngen.stable import select_zero_branches, stabilize

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


# -- a where's 0 branch is selected, not multiplied ----------------------------

g = sp.Symbol("grad", real=True)
positive, tie = F.indicator(x > 0), F.Piecewise(
    (1, x > 0), (sp.Rational(1, 2), sp.Eq(x, 0)), (0, True)
)


@pytest.mark.parametrize(
    "expr, expected",
    [
        # A factor that may overflow goes into the where: min's derivative
        # times exp(x) is exp(x) where taken, else 0.
        (positive * sp.exp(y), F.Piecewise((sp.exp(y), x > 0), (0, True))),
        (
            tie * sp.exp(y),
            F.Piecewise((sp.exp(y), x > 0), (sp.exp(y) / 2, sp.Eq(x, 0)), (0, True)),
        ),
        # Names and numbers stay outside: grad*mask, relu's threshold_backward.
        (
            3 * g * y * positive * sp.exp(y),
            3 * g * y * F.Piecewise((sp.exp(y), x > 0), (0, True)),
        ),
        (g * positive, g * positive),
        # Over a sum of such terms, as factor_terms writes it.
        (
            sp.exp(y) * (positive + 2 * F.indicator(y < 0)),
            F.Piecewise((sp.exp(y), x > 0), (0, True))
            + 2 * F.Piecewise((sp.exp(y), y < 0), (0, True)),
        ),
        # Two wheres: each absorbs the factor in turn.
        (
            positive * F.indicator(y < 0) * sp.exp(y),
            F.Piecewise((F.Piecewise((sp.exp(y), y < 0), (0, True)), x > 0), (0, True)),
        ),
        # A power of a where, and heaviside, which is the where of u > 0.
        (positive**2 * sp.exp(y), F.Piecewise((sp.exp(y), x > 0), (0, True))),
        (F.HeavisideStep(-x) * sp.exp(x), F.Piecewise((sp.exp(x), -x > 0), (0, True))),
        # No 0 branch: a select then a product is right as it is.
        (
            F.Piecewise((1, x > 0), (2, True)) * sp.exp(y),
            F.Piecewise((1, x > 0), (2, True)) * sp.exp(y),
        ),
    ],
)
def test_factors_of_a_where_with_a_zero_branch_go_inside(expr, expected):
    assert select_zero_branches(expr) == expected


def test_a_where_of_one_value_is_that_value():
    # SymPy's derivative of where(x < y, exp(x), 0) for y.
    assert F.Piecewise((0, x < y), (0, True)) == 0
    assert F.Piecewise((x, x < y), (x, True)) == x


# -- a power's derivative never divides by its base ----------------------------

g_ = sp.Symbol("gamma", real=True)


def test_a_symbolic_power_is_differentiated_without_a_division_by_its_base():
    # SymPy writes -gamma*(1 - x)**gamma/(1 - x).
    assert sp.diff((1 - x) ** g_, x).has(1 / (1 - x))
    exponent = F.Piecewise((0, sp.Eq(g_, 0)), (g_ - 1, True))
    assert stabilize(sp.diff((1 - x) ** g_, x)) == -g_ * (1 - x) ** exponent
    # A tensor exponent: zero where the exponent is, as torch.pow's backward.
    exponent = F.Piecewise((0, sp.Eq(y, 0)), (y - 1, True))
    assert stabilize(sp.diff(x**y, x)) == y * x**exponent


@pytest.mark.parametrize(
    "expr, expected",
    [
        # Not a derivative (no factor gamma): the quotient alone.
        (x**g_ / x, x ** (g_ - 1)),
        (x**g_ / x**2 * y, y * x ** (g_ - 2)),
        # sigmoid's derivative times a power of it: no s**(gamma - 1).
        (
            F.Sigmoid(x) ** g_ * F.SigmoidBackward(F.Sigmoid(x)),
            F.Sigmoid(x) ** (g_ + 1) * (1 - F.Sigmoid(x)),
        ),
    ],
)
def test_a_power_over_its_base_is_one_power(expr, expected):
    assert stabilize(expr) == expected
