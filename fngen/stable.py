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

from fngen.functions import Abs, LogSigmoid, Sigmoid, Softplus

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


_RULES = (
    (sp.log, _rewrite_log),
    (sp.Pow, _rewrite_pow),
    (sp.Mul, _rewrite_mul),
    (sp.Add, _rewrite_add),
)


def bottom_up(expr: sp.Basic, rules, memo: dict | None = None) -> sp.Basic:
    """One bottom-up pass of `rules`, (class, rule) pairs: each node, its
    arguments rewritten first, becomes the first rule's result that is not
    None among the rules for its class.  Each distinct subexpression is
    rewritten once (`memo`): a statement used twice is one object in the
    expression, and a walk of it as a tree doubles with every such one."""
    if memo is None:
        memo = {}
    if expr.is_Atom or not isinstance(expr, sp.Basic):
        return expr
    if expr in memo:
        return memo[expr]
    args = [
        bottom_up(a, rules, memo) if isinstance(a, sp.Basic) else a for a in expr.args
    ]
    rewritten = expr
    if any(a is not b for a, b in zip(args, expr.args)):
        rewritten = expr.func(*args)
    for cls, rule in rules:
        if isinstance(rewritten, cls):
            result = rule(rewritten)
            if result is not None:
                memo[expr] = result
                return result
    memo[expr] = rewritten
    return rewritten


def stabilize(expr: sp.Expr) -> sp.Expr:
    """`expr` with the unstable forms of the table above rewritten."""
    for _ in range(MAX_PASSES):
        rewritten = bottom_up(expr, _RULES)
        if rewritten == expr:
            return expr
        expr = rewritten
    return expr
