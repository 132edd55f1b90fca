"""Recognize the activations PyTorch computes in one kernel.

A formula that is exactly ``u*sigmoid(u)`` is ``torch.nn.functional.silu(u)``:
one pass over memory instead of two in the forward, and in the backward
``aten.silu_backward``, one pass instead of four.  The rewrite is exact: the
constants must be PyTorch's own (GELU's ``sqrt(2/pi)`` and ``0.044715``), to
within the rounding of a double; anything else stays as written.

=========================================  ==============================
form (times any other factors)             becomes
=========================================  ==============================
``u*sigmoid(u)``                           ``silu(u)``
``u*tanh(softplus(u))``                    ``mish(u)``
``u*(1 + erf(u/sqrt(2)))/2``               ``gelu(u)``
``u*(1 + tanh(sqrt(2/pi)*(u +              ``gelu(u, approximate="tanh")``
0.044715*u**3)))/2``
``where(u > 0, u, alpha*(exp(u) - 1))``    ``elu(u, alpha)``
=========================================  ==============================

Applied to the forward of each function before it is differentiated (the
derivatives come from the fused functions' own), never to the spec's formula
itself: `fngen check` compares against the formula as written.
"""

from __future__ import annotations

import math
from dataclasses import replace

import sympy as sp
from sympy.codegen.cfunctions import expm1

from fngen.functions import (
    GELU_TANH_CUBIC,
    GELU_TANH_SCALE,
    Elu,
    Gelu,
    GeluTanh,
    Mish,
    Sigmoid,
    Silu,
    Softplus,
    Tanh,
    constant_value,
)
from fngen.model import FunctionSpec, OpNode
from fngen.stable import bottom_up

# Relative difference below which a constant is PyTorch's: a few roundings
# of a double.
TOLERANCE = 1e-15


def _snap(u: sp.Expr) -> sp.Expr:
    """`u` with a constant factor within rounding of an integer made that
    integer: ``sqrt(2)*0.7071067811865476*x`` is ``x``."""
    constant, rest = u.as_independent(*u.free_symbols, as_Add=False)
    if constant.is_Integer or not constant.is_number:
        return u
    value = constant_value(constant)
    if value is None or not math.isfinite(float(value)):
        return u  # no float: nothing PyTorch's constants could be
    nearest = round(float(value))
    if nearest and abs(value - nearest) <= TOLERANCE * abs(value):
        return nearest * rest
    return u


def _negligible(expr: sp.Expr) -> bool:
    """Whether the expanded `expr` is zero up to the rounding of a double:
    the constants of the terms of each power product sum to almost 0."""
    sums: dict[sp.Expr, sp.Float] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        constant, part = term.as_independent(*term.free_symbols, as_Add=False)
        value = constant_value(constant)
        if value is None:
            return False
        sums[part] = sums.get(part, 0) + value
    return all(abs(total) <= TOLERANCE for total in sums.values())


def _times(expr: sp.Mul, factor: sp.Expr, fused: sp.Expr, u: sp.Expr):
    """`expr` with `factor*u` replaced by `fused`, or None when `u` is not
    among the other factors (up to a rational constant)."""
    rest = sp.Mul(*[f for f in expr.args if f is not factor]) / u
    if rest.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        return None  # u a where with a 0 branch: 1/u is no factor to take out
    constant, _ = rest.as_independent(*rest.free_symbols, as_Add=False)
    if not constant.is_Rational or not sp.fraction(rest)[1].is_number:
        return None
    return fused * rest


def _silu_or_mish(expr: sp.Mul, factor: sp.Expr):
    if isinstance(factor, Sigmoid):
        (u,) = factor.args
        return _times(expr, factor, Silu(u), u)
    if isinstance(factor, Tanh) and isinstance(factor.args[0], Softplus):
        (u,) = factor.args[0].args
        return _times(expr, factor, Mish(u), u)
    return None


def _gelu_argument(term: sp.Expr) -> tuple[type, sp.Expr] | None:
    """(class, u) when `term` is ``erf(u/sqrt(2))`` or GELU's tanh of u."""
    if isinstance(term, sp.erf):
        (v,) = term.args
        u = _snap(sp.expand(sp.sqrt(2) * v))
        return (Gelu, u) if _negligible(v - u / sp.sqrt(2)) else None
    if isinstance(term, Tanh):
        (v,) = term.args
        inner = sp.expand(v / GELU_TANH_SCALE)
        for u in sp.Add.make_args(inner):  # the linear term is u itself
            u = _snap(u)
            if _negligible(inner - u - GELU_TANH_CUBIC * u**3):
                return GeluTanh, u
    return None


def _gelu(expr: sp.Mul, factor: sp.Expr):
    if not (isinstance(factor, sp.Add) and len(factor.args) == 2):
        return None
    if sp.S.One not in factor.args:
        return None
    (term,) = [a for a in factor.args if a != sp.S.One]
    found = _gelu_argument(term)
    if found is None:
        return None
    cls, u = found
    return _times(expr, factor, cls(u), u / 2)


def _rewrite_mul(expr: sp.Mul) -> sp.Expr | None:
    for factor in expr.args:
        for rule in (_silu_or_mish, _gelu):
            result = rule(expr, factor)
            if result is not None:
                return result
    return None


def _elu(expr: sp.Piecewise) -> sp.Expr | None:
    """``where(u > 0, u, alpha*expm1(u))``, or the same with ``u <= 0`` and
    the branches swapped: the conventions at 0 where elu'(0) = alpha."""
    if len(expr.args) != 2 or expr.args[1].cond != sp.true:
        return None
    (first, condition), (second, _) = expr.args
    if isinstance(condition, sp.StrictGreaterThan):
        u, negative = first, second
    elif isinstance(condition, sp.LessThan):
        u, negative = second, first
    else:
        return None
    # The condition is on u itself, up to a positive factor (SymPy reads
    # x - 1 > 0 as x > 1, and 2*x > 0 as x > 0).
    factor = u / (condition.lhs - condition.rhs)
    if not (factor.is_number and factor.is_positive):
        return None
    alpha = negative / expm1(u)
    if not alpha.is_number or alpha == 0 or constant_value(alpha) is None:
        return None
    return Elu(u, alpha)


_RULES = ((sp.Mul, _rewrite_mul), (sp.Piecewise, _elu))


def fuse(expr: sp.Expr) -> sp.Expr:
    """`expr` with the forms of the table above rewritten."""
    if not expr.has(Sigmoid, Tanh, sp.erf, expm1):
        return expr
    return bottom_up(expr, _RULES)


def fuse_function(fn: FunctionSpec) -> FunctionSpec:
    """`fn` with every formula expression fused."""
    formula = fn.formula
    ops = tuple(OpNode(op.result, fuse(op.expr), op.location) for op in formula.ops)
    outputs = tuple((out, fuse(expr)) for out, expr in formula.outputs)
    if ops == formula.ops and outputs == formula.outputs:
        return fn
    return replace(fn, formula=replace(formula, ops=ops, outputs=outputs))
