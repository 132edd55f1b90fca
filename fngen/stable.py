"""Rewrite numerically unstable forms into stable ones.

Applied to every formula expression and to every derivative, so that a
formula written the textbook way (``log(1 + exp(x))``) is computed the way
PyTorch computes its own function (``softplus``), in the forward and in the
backward alike:

=========================  ===========================  ======================
form                       becomes                      why
=========================  ===========================  ======================
``log(1 + exp(u))``        ``softplus(u)``              exp overflows
``1/(1 + exp(u))``         ``sigmoid(-u)``              exp overflows
``exp(u) * sigmoid(-u)``   ``sigmoid(u)``               inf * 0
``log(sigmoid(u))``        ``logsigmoid(u)``            log(0)
``log(1 + u)``             ``log1p(u)``                 cancellation near 0
``c*exp(u) - c``           ``c*expm1(u)``               cancellation near 0
``log(cosh(u))``           ``|u| + softplus(-2|u|)      cosh overflows
                           - log(2)``
=========================  ===========================  ======================
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from fngen import tensorops as T
from fngen.functions import (
    Abs,
    HeavisideStep,
    LogSigmoid,
    Piecewise,
    Sigmoid,
    SigmoidBackward,
    Softplus,
    has_zero_branch,
    indicator,
)

MAX_PASSES = 8


def _exp_argument(expr: sp.Expr) -> sp.Expr | None:
    return expr.args[0] if isinstance(expr, sp.exp) else None


def _one_plus(expr: sp.Expr) -> sp.Expr | None:
    """`rest` when `expr` is ``1 + rest``."""
    if isinstance(expr, sp.Add) and sp.S.One in expr.args:
        return sp.Add(*[a for a in expr.args if a != sp.S.One])
    return None


def _rewrite_log(expr: sp.log) -> sp.Expr | None:
    (arg,) = expr.args
    if isinstance(arg, Sigmoid):
        return LogSigmoid(arg.args[0])
    if isinstance(arg, sp.cosh):
        u = arg.args[0]
        return Abs(u) + Softplus(-2 * Abs(u)) - sp.log(2)
    rest = _one_plus(arg)
    if rest is None:
        return None
    inner = _exp_argument(rest)
    if inner is not None:
        return Softplus(inner)
    return log1p(rest)


def _rewrite_pow(expr: sp.Pow) -> sp.Expr | None:
    base, exponent = expr.args
    if exponent != -1:
        return None
    rest = _one_plus(base)
    inner = _exp_argument(rest) if rest is not None else None
    return Sigmoid(-inner) if inner is not None else None


def _rewrite_mul(expr: sp.Mul) -> sp.Expr | None:
    factors = list(expr.args)
    for i, factor in enumerate(factors):
        u = _exp_argument(factor)
        if u is None:
            continue
        for j, other in enumerate(factors):
            if isinstance(other, Sigmoid) and sp.expand(other.args[0] + u) == 0:
                rest = [f for k, f in enumerate(factors) if k not in (i, j)]
                return sp.Mul(Sigmoid(u), *rest)
    return None


def _rewrite_add(expr: sp.Add) -> sp.Expr | None:
    """``c*exp(u) - c`` (SymPy's form of ``c*(exp(u) - 1)``) as ``c*expm1(u)``."""
    terms = list(expr.args)
    constants = [t for t in terms if t.is_Number]
    if not constants:
        return None
    for i, term in enumerate(terms):
        coefficient, factor = term.as_coeff_Mul()
        u = _exp_argument(factor)
        if u is not None and -coefficient in constants:
            rest = [t for k, t in enumerate(terms) if k != i]
            rest.remove(-coefficient)
            return sp.Add(coefficient * expm1(u), *rest)
    return None


def _rewrite_power_quotient(expr: sp.Mul) -> sp.Expr | None:
    """``b**e/b**k``, e not a whole number, as ``b**(e - k)``: SymPy's
    derivative of ``b**e`` is ``e*b**e/b``, a division by a base that may
    be 0 where the power is finite (``(1 - p)**gamma`` of a probability p
    that is 1 in float32).  Where the product has e as a factor (that
    derivative), e = 0 makes it 0, as PyTorch's pow backward is: the
    exponent is ``e - k`` only where e is not 0, which would give
    ``0*0**-1``.  ``b**e*sigmoid_backward(b)`` is ``b**(e + 1)*(1 - b)``:
    the derivative of a power of a sigmoid, with no ``b**(e - 1)`` that is
    inf where b is 0."""
    factors = list(expr.args)
    for i, power in enumerate(factors):
        base, exponent = power.as_base_exp()
        if not isinstance(power, sp.Pow) or exponent.is_integer:
            continue
        for j, other in enumerate(factors):
            if j == i:
                continue
            if isinstance(other, SigmoidBackward) and other.args[0] == base:
                rest = [f for k, f in enumerate(factors) if k not in (i, j)]
                return sp.Mul(*rest, base ** (exponent + 1), 1 - base)
            other_base, k = other.as_base_exp()
            if other_base != base or not (k.is_Integer and k.is_negative):
                continue
            rest = [f for n, f in enumerate(factors) if n not in (i, j)]
            new = exponent + k
            if not exponent.is_number and _divides(exponent, rest):
                new = Piecewise((0, sp.Eq(exponent, 0)), (new, True))
            return sp.Mul(*rest, sp.Pow(base, new))
    return None


def _divides(e: sp.Expr, factors: list[sp.Expr]) -> bool:
    """Whether the product of `factors` is e times something (up to a
    number): each factor of e, but numbers, is one of them."""
    left = list(factors)
    for factor in sp.Mul.make_args(e):
        if factor.is_Number:
            continue
        if factor not in left:
            return False
        left.remove(factor)
    return True


def _rewrite_products(expr: sp.Mul) -> sp.Expr | None:
    return _rewrite_power_quotient(expr) or _rewrite_mul(expr)


_RULES = (
    (sp.log, _rewrite_log),
    (sp.Pow, _rewrite_pow),
    (sp.Mul, _rewrite_products),
    (sp.Add, _rewrite_add),
)


def bottom_up(expr: sp.Basic, rules) -> sp.Basic:
    """One bottom-up pass of `rules`, (class, rule) pairs: each node, its
    arguments rewritten first, becomes the first rule's result that is not
    None among the rules for its class."""
    if expr.is_Atom or not isinstance(expr, sp.Basic):
        return expr
    args = [bottom_up(a, rules) if isinstance(a, sp.Basic) else a for a in expr.args]
    if any(a is not b for a, b in zip(args, expr.args)):
        expr = expr.func(*args)
    for cls, rule in rules:
        if isinstance(expr, cls):
            result = rule(expr)
            if result is not None:
                return result
    return expr


def stabilize(expr: sp.Expr) -> sp.Expr:
    """`expr` with the unstable forms of the table above rewritten."""
    for _ in range(MAX_PASSES):
        rewritten = bottom_up(expr, _RULES)
        if rewritten == expr:
            return expr
        expr = rewritten
    return expr


def _safe_outside(factor: sp.Basic) -> bool:
    """Whether `factor` may stay outside a where it multiplies: a number, a
    name (an input, a gradient, a tangent: finite where the inputs are) or
    a tensor operation of such (a broadcast gradient, a matrix product)."""
    return factor.is_Number or isinstance(
        factor, (sp.Symbol, sp.NumberSymbol, T.TensorOp)
    )


def _has_zero_factor(term: sp.Basic) -> bool:
    """Whether `term` is, or has as a factor, a where with a 0 branch."""
    factors = term.args if isinstance(term, sp.Mul) else (term,)
    return any(has_zero_branch(f) for f in factors)


def _select_in(piece: sp.Piecewise, value_of) -> sp.Expr:
    """A where of ``value_of(value)`` on each branch of `piece`."""
    return Piecewise(*[(value_of(value), c) for value, c in piece.args])


def select_zero_branches(expr: sp.Basic) -> sp.Basic:
    """`expr` with every factor that multiplies a where with a 0 branch (a
    derivative of max, min, clamp, relu, or a where of 0) taken into that
    where, so that the 0 is selected rather than multiplied: the derivative
    of ``min(0, alpha*(exp(x/alpha) - 1))`` is ``where(t < 0, exp(x/alpha),
    0)``, not ``where(t < 0, 1, 0)*exp(x/alpha)``, which is ``0*inf = NaN``
    at x = 200 in float32 where that branch is not taken.  A product with a
    sum of such terms is distributed over it.  Names and numbers stay
    outside (``grad*where(x > 0, 1, 0)`` is a mask or relu's
    threshold_backward), and so do tensor operations of them.

    Run on each program just before its common subexpressions are named, as
    naming a where or part of a product could take a factor out again."""
    memo: dict = {}

    def walk(e):
        if not isinstance(e, sp.Basic) or e.is_Atom:
            return e
        if e in memo:
            return memo[e]
        args = [walk(a) for a in e.args]
        new = e
        if any(a is not b for a, b in zip(args, e.args)):
            new = e.func(*args)
        if isinstance(new, sp.Pow) and has_zero_branch(new.base):
            if new.exp.is_positive:
                power = new.exp
                new = _select_in(new.base, lambda v: walk(v**power))
        elif isinstance(new, sp.Mul):
            new = _mul(new)
        memo[e] = new
        return new

    def _mul(e: sp.Mul) -> sp.Expr:
        # heaviside(u) is the where ``where(u > 0, 1, 0)``.
        factors = [
            indicator(f.args[0] > 0) if isinstance(f, HeavisideStep) else f
            for f in e.args
        ]
        inside = [f for f in factors if not _safe_outside(f)]
        piece = next((f for f in factors if has_zero_branch(f)), None)
        if piece is not None:
            rest = [f for f in inside if f is not piece]
            if not rest:
                return e
            outside = [f for f in factors if _safe_outside(f)]
            rest = sp.Mul(*rest)
            return sp.Mul(*outside, _select_in(piece, lambda v: walk(v * rest)))
        total = next(
            (
                f
                for f in inside
                if isinstance(f, sp.Add) and any(map(_has_zero_factor, f.args))
            ),
            None,
        )
        rest = [f for f in inside if f is not total]
        if total is None or not rest:
            return e
        outside = sp.Mul(*[f for f in factors if _safe_outside(f)])
        return outside * sp.Add(*[walk(term * sp.Mul(*rest)) for term in total.args])

    return walk(expr)
