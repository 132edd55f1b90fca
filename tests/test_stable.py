"""Exact rewrites of the numerically unstable forms (`fngen.stable`)."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from fngen import functions as F
from fngen.stable import _common_argument, select_zero_branches, stabilize

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


def test_a_power_of_a_base_sympy_negates_is_differentiated_without_division():
    # A regression (the focal loss's (1 - p_t)**gamma, p_t = exp(logp_t)):
    # 1 - exp(x) becomes -expm1(x), whose reciprocal SymPy holds as
    # -1/expm1(x), a base that did not match; the quotient was then 0/0 at
    # x = 0 (NaN in the backward, where the gradient is 0).
    derivative = stabilize(sp.diff((1 - sp.exp(x)) ** g_, x))
    assert not any(
        p.exp.is_negative for p in derivative.atoms(sp.Pow) if p.exp.is_number
    ), derivative
    exponent = F.Piecewise((0, sp.Eq(g_, 0)), (g_ - 1, True))
    assert derivative == -g_ * (-expm1(x)) ** exponent * sp.exp(x)


@pytest.mark.parametrize(
    "expr, expected",
    [
        # Not a derivative (no factor gamma): the quotient alone.
        (x**g_ / x, x ** (g_ - 1)),
        (x**g_ / x**2 * y, y * x ** (g_ - 2)),
        # sigmoid's derivative times a power of it: no s**(gamma - 1).
        (
            F.Sigmoid(x) ** g_ * F.SigmoidBackward(F.Sigmoid(x)),
            F.Sigmoid(x) ** (g_ + 1) * F.Sigmoid(-x),
        ),
    ],
)
def test_a_power_over_its_base_is_one_power(expr, expected):
    assert stabilize(expr) == expected


# -- rational functions of one exp(u), through sigmoid -------------------------

k = sp.Symbol("k", real=True)
s_, c_ = F.Sigmoid(x), F.Sigmoid(-x)


@pytest.mark.parametrize(
    "expr, expected",
    [
        (log1p(sp.exp(x)), F.Softplus(x)),
        (
            sp.log(2 + 3 * sp.exp(x)),
            sp.log(2) + F.Softplus(x + sp.log(sp.Rational(3, 2))),
        ),
        (log1p(2 * sp.exp(-x)), F.Softplus(-x + sp.log(2))),
        # The sigmoid surrogate of spiking-network libraries: inf/inf as written.
        (
            sp.exp(-k * x) / (1 + sp.exp(-k * x)) ** 2,
            F.Sigmoid(k * x) * F.Sigmoid(-k * x),
        ),
        (sp.exp(x) / (1 + sp.exp(x)), s_),
        (sp.exp(x) * c_, s_),
        (y * sp.exp(x) / (1 + sp.exp(x)), y * s_),
        (sp.exp(2 * x) / (1 + sp.exp(x)), s_**2 / c_),
        ((1 - sp.exp(x)) / (1 + sp.exp(x)), c_ - s_),
        (
            sp.exp(x) / (1 + sp.exp(x) + sp.exp(2 * x)),
            s_ * c_ / (s_**2 + s_ * c_ + c_**2),
        ),
        (1 - s_, c_),
        (sp.exp(x) * F.SigmoidBackward(c_), s_**2),
        # exp(x + 1) is e*exp(x); exp(x + 1)/(1 + exp(x + 1))**2 is of u = x + 1.
        (
            sp.exp(x + 1) / (1 + sp.exp(x + 1) + sp.exp(2 * x + 1)),
            sp.E * s_ * c_ / (c_**2 + sp.E * s_ * c_ + sp.E * s_**2),
        ),
        (
            sp.exp(x + 1) / (1 + sp.exp(x + 1)) ** 2,
            F.Sigmoid(x + 1) * F.Sigmoid(-x - 1),
        ),
        # expm1 is exp - 1 there too.
        (expm1(x) / (1 + sp.exp(x)), s_ - c_),
        # Factors of another argument are left out of the rewrite.
        (sp.exp(x) / (1 + sp.exp(y)), sp.exp(x) * F.Sigmoid(-y)),
        (sp.exp(y) * sp.exp(x) / (1 + sp.exp(x)) ** 2, sp.exp(y) * s_ * c_),
    ],
)
def test_rational_functions_of_exp_are_rewritten_through_sigmoid(expr, expected):
    assert stabilize(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        s_ * c_,  # already stable at both ends
        s_ * sp.exp(x),  # both factors vanish as x -> -inf, nothing overflows early
        1 / (2 + sp.exp(x)),  # 1/inf is 0, as it should be
        sp.exp(x) + 1,
        x / (1 + sp.exp(x)) ** 2 + y,
    ],
)
def test_stable_forms_of_exp_are_left_alone(expr):
    assert stabilize(expr) == expr


def test_the_log_of_a_power_s_base_is_masked_where_the_base_is_0():
    safe = sp.log(F.Piecewise((1, sp.Eq(x, 0)), (x, True)))
    assert stabilize(sp.diff(x**y, y)) == x**y * safe
    # A base that cannot be 0, or a power that is inf there anyway: as it is.
    assert not stabilize(sp.diff((1 + x**2) ** y, y)).has(sp.Piecewise)
    assert stabilize(x**-2 * sp.log(x)) == x**-2 * sp.log(x)


def test_arguments_are_whole_multiples_of_the_largest_common_one():
    # exp(x) is t**2 of t = exp(x/2), whichever comes first.
    assert _common_argument([x, x / 2]) == (x / 2, {x: (2, 0), x / 2: (1, 0)})
    assert _common_argument([x + 1, -x / 2]) == (
        x / 2,
        {x + 1: (2, 1), -x / 2: (-1, 0)},
    )
    assert _common_argument([x + 1, 2 * x + 1, -x / 2, x / 2])[0] == x / 2
    assert _common_argument([x, y]) is None


def _value(expr, at):
    """`expr` at x = `at`, fngen's sigmoid as its formula."""
    plain = expr.replace(
        lambda e: isinstance(e, F.Sigmoid), lambda e: 1 / (1 + sp.exp(-e.args[0]))
    )
    return float(plain.subs(x, at).evalf(30))


@pytest.mark.parametrize(
    "expr",
    [
        # Found by the float32 differential test: left as written (inf/inf).
        (1 - sp.exp(x / 2))
        / (1 + sp.exp(x / 2))
        * sp.exp(x + 1)
        / (1 + sp.exp(x + 1) + sp.exp(2 * x + 1)),
        sp.exp(x) * F.Sigmoid(-x / 2) * F.Sigmoid(-x),
        sp.exp(2 * x) * F.Sigmoid(-x / 2) / (1 + sp.exp(x)),
    ],
)
def test_rewrites_through_sigmoid_keep_the_value(expr):
    rewritten = stabilize(expr)
    assert not rewritten.has(sp.exp)
    for at in (-3.1, -0.4, 0.0, 1.3, 7.0):
        assert _value(rewritten, at) == pytest.approx(_value(expr, at), rel=1e-12)


def test_a_power_of_a_step_selects_its_zero_branch():
    # A regression (FNGEN_FUZZ): SymPy writes (heaviside(-x)*exp(x))**2 as
    # heaviside(-x)**2*exp(2*x), whose step as a power was multiplied, not
    # selected: 0*inf = NaN at x = 200 in float32.
    step = F.HeavisideStep(-x)
    selected = select_zero_branches(step**2 * sp.exp(2 * x))
    assert selected == F.Piecewise((sp.exp(2 * x), -x > 0), (0, True))


def test_a_power_of_a_step_times_an_exp_is_finite_in_float32():
    import torch

    import fngen
    from fngen.spec import parse_spec

    text = (
        "fngen: 1\nfunctions:\n  f:\n"
        "    formula: y = (heaviside(-x)*exp(x))**2 + x\n"
    )
    f = fngen.load(parse_spec(text, "step.yaml")).f
    x = torch.tensor([200.0, -3.0], requires_grad=True)
    y = f(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    torch.testing.assert_close(y.detach(), torch.tensor([200.0, -3.0 + 2.4787522e-3]))
