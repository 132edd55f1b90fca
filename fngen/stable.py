"""Rewrite numerically unstable forms into stable ones.

Applied to every formula expression and to every derivative, so that a
formula written the textbook way (``log(1 + exp(x))``) is computed the way
PyTorch computes its own function (``softplus``), in the forward and in the
backward alike:

=========================  ===========================  ======================
form                       becomes                      why
=========================  ===========================  ======================
``log(1 + exp(u))``,       ``softplus(u)``              exp overflows
``log1p(exp(u))``
``log(a + b*exp(u))``      ``log(a) + softplus(u +      exp overflows
                           log(b/a))``
``1/(1 + exp(u))``         ``sigmoid(-u)``              exp overflows
a rational function of     the same of ``sigmoid(u)``   inf/inf, inf * 0,
one exp(u) (and sigmoid)   and ``sigmoid(-u)``: ``exp   cancellation
                           (u)/(1 + exp(u))**2`` is
                           ``sigmoid(u)*sigmoid(-u)``,
                           ``1 - sigmoid(u)`` is
                           ``sigmoid(-u)``
``log(sigmoid(u))``        ``logsigmoid(u)``            log(0)
``log(1 + u)``             ``log1p(u)``                 cancellation near 0
``c*exp(u) - c``           ``c*expm1(u)``               cancellation near 0
``log(cosh(u))``           ``|u| + softplus(-2|u|)      cosh overflows
                           - log(2)``
``b**e/b**k``              ``b**(e - k)``               b = 0 (a derivative)
``exp(w)*D``, D the        ``exp(w + log(D))``, log(D)  inf * 0: exp(w)
derivative of tanh or      stable (``tanh(exp(x))``'s   overflows where D
sigmoid, or another exp    derivative)                  underflows
=========================  ===========================  ======================

`select_zero_branches` (run on each program before common subexpressions
are named) keeps a where's 0 branch from being multiplied by a factor that
overflows where that branch is taken.
"""

from __future__ import annotations

import math

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
    SoftplusBackward,
    TanhBackward,
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
    softplus = _softplus_of(arg)
    if softplus is not None:
        return softplus
    rest = _one_plus(arg)
    if rest is None:
        return None
    return log1p(rest)


def _softplus_of(arg: sp.Expr) -> sp.Expr | None:
    """``log(a + b*exp(u))`` for positive numbers a and b as ``log(a) +
    softplus(u + log(b/a))``: exp overflows where the log does not."""
    terms = sp.Add.make_args(arg)
    if len(terms) != 2:
        return None
    for a, term in (terms, terms[::-1]):
        b, factor = term.as_coeff_Mul()
        u = _exp_argument(factor)
        if u is not None and a.is_Number and a.is_positive and b.is_positive:
            return sp.log(a) + Softplus(u + sp.log(b / a))
    return None


def _rewrite_log1p(expr: log1p) -> sp.Expr | None:
    """``log1p(b*exp(u))`` as ``softplus(u + log(b))``."""
    return _softplus_of(1 + expr.args[0])


def _rewrite_pow(expr: sp.Pow) -> sp.Expr | None:
    base, exponent = expr.args
    if exponent != -1:
        return None
    rest = _one_plus(base)
    inner = _exp_argument(rest) if rest is not None else None
    return Sigmoid(-inner) if inner is not None else None


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
    ``0*0**-1``.  A factor ``sigmoid_backward(b)``, ``b*(1 - b)``, counts
    as b times ``1 - b``: the derivative of a power of a sigmoid is
    ``e*b**e*(1 - b)``, with no ``b**(e - 1)`` that is inf where b is 0."""
    factors = list(expr.args)
    for power in factors:
        base, exponent = power.as_base_exp()
        if not isinstance(power, sp.Pow) or exponent.is_integer:
            continue
        shift, rest, extra = 0, [], []
        for other in factors:
            if other is power:
                continue
            other_base, k = other.as_base_exp()
            if isinstance(other, SigmoidBackward) and other.args[0] == base:
                shift += 1
                extra.append(1 - base)
            elif other_base == base and k.is_Integer and k.is_negative:
                shift += k
            elif other_base == -base and k.is_Integer and k.is_negative:
                # SymPy holds 1/(-expm1(x)) as -1/expm1(x): (-b)**k is
                # (-1)**k*b**k (the derivative of (1 - exp(x))**g).
                shift += k
                extra.append(sp.Integer(-1) ** k)
            else:
                rest.append(other)
        if len(rest) == len(factors) - 1:
            continue
        new = exponent + shift
        if shift < 0 and not exponent.is_number and _divides(exponent, rest):
            new = Piecewise((0, sp.Eq(exponent, 0)), (new, True))
        return sp.Mul(*rest, *extra, sp.Pow(base, new))
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


# -- rational functions of one exp(u), through sigmoid ------------------------
#
# A product or sum of exp(n*u) (n whole), sigmoid(m*u), sigmoid's derivative
# and expm1(m*u) is a rational function R(t) of t = exp(u).  Evaluated as
# written it overflows where the function does not: exp(-k*x)/(1 + exp(-k*x))**2
# is inf/inf for k*x <= -89 in float32.  Over s = sigmoid(u) and c =
# sigmoid(-u), both in [0, 1], t = s/c, so R(t) = P(s, c)/Q(s, c) with P and
# Q homogeneous of the degree of R, and s + c = 1 divided out of each:
# exp(u)/(1 + exp(u))**2 is s*c, exact in float32 at both ends where
# s*(1 - s) is 0 from u = 17 on.  Only where the form as written is unstable: a product of a
# factor that grows and one that vanishes at the same end (u to +inf or to
# -inf), or a sum that cancels there (1 - sigmoid(u) is sigmoid(-u)).

MAX_RATIONAL_DEGREE = 16
MAX_RATIONAL_PARTS = 12


def _exp_arguments(expr: sp.Expr) -> list[sp.Expr] | None:
    """The arguments of the exp, sigmoid, sigmoid' and expm1 in `expr` read
    as a rational function of them (through sums, products and whole
    powers); None where one sits elsewhere too (inside another function)."""
    if isinstance(expr, (sp.Add, sp.Mul)):
        found = []
        for arg in expr.args:
            found += _exp_arguments(arg)
        return found
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
        return _exp_arguments(expr.base)
    if isinstance(expr, (sp.exp, Sigmoid, SoftplusBackward, expm1)):
        return [expr.args[0]]
    if isinstance(expr, SigmoidBackward) and isinstance(expr.args[0], Sigmoid):
        return [expr.args[0].args[0]]
    return []


def _common_argument(arguments: list[sp.Expr]) -> tuple[sp.Expr, dict] | None:
    """(u, {argument: (n, b)}) with each argument ``n*u + b``, n a nonzero
    whole number and b a number (exp(x + 1) is e*exp(x)), or None where
    they are not all such of one u."""
    return _multiples(arguments, {a: (sp.S.Zero, a) for a in arguments}) or (
        _multiples(arguments, {a: a.as_coeff_Add() for a in arguments})
    )


def _multiples(arguments: list[sp.Expr], split: dict) -> tuple | None:
    first = split[arguments[0]][1]
    ratios = {}
    for arg, (_, core) in split.items():
        ratio = core / first
        if not ratio.is_Rational:
            ratio = sp.cancel(ratio)
        if not ratio.is_Rational or ratio == 0:
            return None
        ratios[arg] = ratio
    # The largest rational that every ratio is a whole multiple of.
    unit = sp.Rational(
        math.gcd(*(int(r.p) for r in ratios.values())),
        math.lcm(*(int(r.q) for r in ratios.values())),
    )
    u = first * unit
    if u.could_extract_minus_sign():
        u, unit = -u, -unit
    return u, {arg: (int(ratios[arg] / unit), split[arg][0]) for arg in arguments}


def _in_t(expr: sp.Expr, multiples: dict, t: sp.Dummy) -> sp.Expr:
    """`expr` as a function of t = exp(u) (see `_common_argument`)."""
    if isinstance(expr, (sp.Add, sp.Mul)):
        return expr.func(*[_in_t(arg, multiples, t) for arg in expr.args])
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
        return _in_t(expr.base, multiples, t) ** expr.exp
    inner = expr.args[0] if expr.args else None
    if isinstance(expr, SigmoidBackward) and isinstance(inner, Sigmoid):
        n, b = multiples[inner.args[0]]
        w = sp.exp(b) * t**n
        return w / (1 + w) ** 2
    if inner not in multiples:
        return expr
    n, b = multiples[inner]
    w = sp.exp(b) * t**n  # exp(inner)
    if isinstance(expr, sp.exp):
        return w
    if isinstance(expr, (Sigmoid, SoftplusBackward)):
        return w / (1 + w)
    if isinstance(expr, expm1):
        return w - 1
    return expr


def _fraction(expr: sp.Expr, t: sp.Dummy) -> tuple[sp.Poly, sp.Poly] | None:
    numerator, denominator = sp.fraction(sp.cancel(sp.together(expr)))
    try:
        p, q = sp.Poly(numerator, t), sp.Poly(denominator, t)
    except sp.PolynomialError:
        return None
    return (p, q) if not p.is_zero else None


def _ends(p: sp.Poly, q: sp.Poly) -> tuple[int, int]:
    """(growth as t -> inf, order as t -> 0) of p/q: positive growth is a
    value that overflows as u -> inf, negative order one that overflows as
    u -> -inf."""
    low = lambda poly: min(m[0] for m in poly.monoms())  # noqa: E731
    return p.degree() - q.degree(), low(p) - low(q)


def _unstable(is_sum: bool, expr: sp.Expr, parts: list[sp.Expr], t: sp.Dummy) -> bool:
    """Whether `expr` (a product or sum of `parts`, as functions of t)
    overflows or cancels where its value does not."""
    ends = []
    for part in parts:
        fraction = _fraction(part, t)
        if fraction is None:
            return False
        ends.append(_ends(*fraction))
    if not is_sum:
        varying = [e for e, part in zip(ends, parts) if part.has(t)]
        grows = any(g > 0 for g, _ in varying) and any(g < 0 for g, _ in varying)
        shrinks = any(o < 0 for _, o in varying) and any(o > 0 for _, o in varying)
        return grows or shrinks
    whole = _fraction(expr, t)
    if whole is None:
        return False
    growth, order = _ends(*whole)
    return growth < max(g for g, _ in ends) or order > min(o for _, o in ends)


def _homogeneous(poly: sp.Poly, degree: int, s: sp.Symbol, c: sp.Symbol) -> sp.Expr:
    """poly(s/c) * c**degree, with the factors s + c (= 1) divided out."""
    terms = [coeff * s**k * c ** (degree - k) for (k,), coeff in poly.terms()]
    h = sp.Poly(sp.Add(*terms), s, c)
    one = sp.Poly(s + c, s, c)
    while not h.is_zero:
        quotient, remainder = sp.div(h, one)
        if not remainder.is_zero:
            break
        h = quotient
    return h.as_expr()


def _through_sigmoid(p: sp.Poly, q: sp.Poly, u: sp.Expr) -> sp.Expr:
    """p(t)/q(t), t = exp(u), in s = sigmoid(u) and c = sigmoid(-u)."""
    s, c = sp.Dummy("s"), sp.Dummy("c")
    degree = max(p.degree(), q.degree())
    value = _homogeneous(p, degree, s, c) / _homogeneous(q, degree, s, c)
    return value.xreplace({s: Sigmoid(u), c: Sigmoid(-u)})


def _rewrite_rational(expr: sp.Expr) -> sp.Expr | None:
    """A product or sum that is an unstable rational function of one
    exp(u), through sigmoid(u) and sigmoid(-u) (see above)."""
    if len(expr.args) > MAX_RATIONAL_PARTS:
        return None
    if isinstance(expr, sp.Mul):
        # Factors of other arguments (or of none) stay as they are.
        groups: dict = {}
        others = []
        for factor in expr.args:
            arguments = _exp_arguments(factor)
            common = _common_argument(arguments) if arguments else None
            if common is None:
                others.append(factor)
                continue
            key = next(
                (u for u in groups if _common_argument([u, common[0]])), common[0]
            )
            groups.setdefault(key, []).append(factor)
        changed = False
        rewritten = []
        for factors in groups.values():
            new = _rational_group(sp.Mul(*factors), factors)
            changed |= new is not None
            rewritten.append(new if new is not None else sp.Mul(*factors))
        return sp.Mul(*others, *rewritten) if changed else None
    return _rational_group(expr, list(expr.args))


def _rational_group(expr: sp.Expr, parts: list[sp.Expr]) -> sp.Expr | None:
    arguments = _exp_arguments(expr)
    if not arguments or len(parts) < 2:
        return None
    common = _common_argument(arguments)
    if common is None:
        return None
    u, multiples = common
    t = sp.Dummy("t", positive=True)
    whole = _in_t(expr, multiples, t)
    if _unstable(
        isinstance(expr, sp.Add),
        whole,
        [_in_t(part, multiples, t) for part in parts],
        t,
    ):
        fraction = _fraction(whole, t)
        if fraction is None or max(f.degree() for f in fraction) > MAX_RATIONAL_DEGREE:
            return None
        return _through_sigmoid(*fraction, u)
    return None


def _rewrite_power_log(expr: sp.Mul) -> sp.Expr | None:
    """``b**e*log(b)`` (the derivative of ``b**e`` for e) with the log of
    ``where(b == 0, 1, b)``: 0 where b is 0 (and e > 0, where the power is
    0), as PyTorch's pow backward for the exponent, not ``0*-inf``."""
    factors = list(expr.args)
    for n, factor in enumerate(factors):
        if not isinstance(factor, sp.log):
            continue
        (base,) = factor.args
        if base.is_number or base.is_positive:
            continue
        for power in factors:
            b, e = power.as_base_exp()
            if b == base and isinstance(power, sp.Pow) and not e.is_nonpositive:
                safe = sp.log(Piecewise((1, sp.Eq(base, 0)), (base, True)))
                return sp.Mul(*factors[:n], safe, *factors[n + 1 :])
    return None


def _log_of_decay(factor: sp.Basic) -> sp.Expr | None:
    """The stable log of `factor` when it is the derivative of a function
    that saturates (exactly 0 in floating point once its argument is
    large): ``log(1 - tanh(v)**2)`` is ``2*(log(2) - |v| - softplus(-2|v|))``
    and ``log(s*(1 - s))`` of ``s = sigmoid(v)`` is ``logsigmoid(v) +
    logsigmoid(-v)``.  None for any other factor."""
    if isinstance(factor, TanhBackward) and isinstance(factor.args[0], sp.tanh):
        v = Abs(factor.args[0].args[0])
        return 2 * (sp.log(2) - v - Softplus(-2 * v))
    if isinstance(factor, SigmoidBackward) and isinstance(factor.args[0], Sigmoid):
        v = factor.args[0].args[0]
        return LogSigmoid(v) + LogSigmoid(-v)
    return None


def _rewrite_exp_decay(expr: sp.Mul) -> sp.Expr | None:
    """A product of exps and factors that decay to 0 as one exp of the sum
    of their logs: ``exp(x)*(1 - tanh(exp(x))**2)`` (the derivative of
    ``tanh(exp(x))``) is ``exp(x + log(1 - tanh(exp(x))**2))``, 0 at x =
    100 in float32 where the product is ``inf*0 = NaN``; so is
    ``exp(x)*exp(-exp(2*x))`` (erf's derivative of ``exp(x)``).  Taken only
    when one exp can overflow (its argument is not bounded above) and some
    other factor can underflow to 0."""
    exps = [f for f in expr.args if isinstance(f, sp.exp)]
    logs = [(f, _log_of_decay(f)) for f in expr.args]
    decays = [(f, log) for f, log in logs if log is not None]
    grows = [f for f in exps if not f.args[0].is_nonpositive]
    shrinks = [f for f in exps if not f.args[0].is_nonnegative]
    if not grows or not (decays or any(f is not g for f in shrinks for g in grows)):
        return None
    merged = {f for f in exps} | {f for f, _ in decays}
    exponent = sp.Add(*[f.args[0] for f in exps], *[log for _, log in decays])
    rest = [f for f in expr.args if f not in merged]
    return sp.Mul(*rest, sp.exp(exponent, evaluate=False))


def _rewrite_products(expr: sp.Mul) -> sp.Expr | None:
    return (
        _rewrite_power_quotient(expr)
        or _rewrite_power_log(expr)
        or _rewrite_rational(expr)
        or _rewrite_exp_decay(expr)
    )


def _rewrite_sums(expr: sp.Add) -> sp.Expr | None:
    return _rewrite_add(expr) or _rewrite_rational(expr)


_RULES = (
    (sp.log, _rewrite_log),
    (log1p, _rewrite_log1p),
    (sp.Pow, _rewrite_pow),
    (sp.Mul, _rewrite_products),
    (sp.Add, _rewrite_sums),
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


def _as_indicator(factor: sp.Basic) -> sp.Basic:
    """``heaviside(u)``, or a positive power of it, as ``where(u > 0, 1, 0)``."""
    base, exponent = factor.as_base_exp()
    if isinstance(base, HeavisideStep) and exponent.is_positive:
        return indicator(base.args[0] > 0)
    return factor


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
        # heaviside(u) is the where ``where(u > 0, 1, 0)``, and so is a
        # positive power of it (SymPy's (heaviside(u)*exp(x))**2).
        factors = [_as_indicator(f) for f in e.args]
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


# Functions defined on part of the real line only: NaN (or inf) outside it,
# and so are their derivatives.
_PARTIAL = (
    sp.log,
    log1p,
    sp.asin,
    sp.acos,
    sp.atanh,
    sp.acosh,
    sp.loggamma,
    sp.gamma,
    sp.polygamma,
    sp.erfinv,
)


def _partial_calls(value: sp.Basic, symbol: sp.Symbol) -> list:
    """The outermost calls in `value` of a function defined on part of the
    line only (a log, a root, a negative power, asin...) of `symbol`."""
    found = []
    stack = [value]
    while stack:
        node = stack.pop()
        if symbol not in getattr(node, "free_symbols", ()):
            continue
        if isinstance(node, _PARTIAL) or (
            isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp >= 0)
        ):
            found.append(node)
            continue
        stack.extend(a for a in node.args if isinstance(a, sp.Basic))
    return found


class Guarded(Piecewise):
    """``where(c, x, safe)``: a name replaced where its branch is not taken.
    Unlike a where, a power of it stays a power of it (SymPy would take
    ``sqrt`` into each branch, and the guard would be lost)."""

    def _eval_power(self, e):
        return None


def _interval(conditions: list, symbol: sp.Symbol) -> tuple | None:
    """(lo, hi) of `symbol` where all `conditions` (comparisons linear in
    it, with number coefficients) hold, None or -inf/inf where unbounded;
    None when a condition is of another form."""
    lo, hi = -sp.oo, sp.oo
    for condition in conditions:
        parts = condition.args if isinstance(condition, sp.And) else (condition,)
        for part in parts:
            if isinstance(part, sp.Not) and isinstance(
                part.args[0], sp.core.relational.Relational
            ):
                part = part.args[0].negated
            if not isinstance(
                part,
                (sp.StrictGreaterThan, sp.GreaterThan, sp.StrictLessThan, sp.LessThan),
            ):
                return None
            side = sp.expand(part.lhs - part.rhs)  # side > 0, >= 0, < 0, <= 0
            if side.free_symbols != {symbol}:
                return None
            k, c = side.coeff(symbol, 1), side.coeff(symbol, 0)
            if not (k.is_Number and c.is_Number) or k == 0 or side != k * symbol + c:
                return None
            bound = -c / k
            above = isinstance(part, (sp.StrictGreaterThan, sp.GreaterThan)) == (k > 0)
            if above:
                lo = max(lo, bound)
            else:
                hi = min(hi, bound)
    return lo, hi


def _inside(lo, hi):
    """A number strictly inside (lo, hi), None when it is empty."""
    if lo >= hi:
        return None
    if lo == -sp.oo and hi == sp.oo:
        return None
    if lo == -sp.oo:
        return hi - 1
    if hi == sp.oo:
        return lo + 1
    return (lo + hi) / 2


def guard_branch_domains(expr: sp.Basic) -> sp.Basic:
    """`expr` with a where's branch that applies a partial function (log,
    sqrt, 1/x...) to a name computed at a value its condition holds at,
    where the condition is not taken: ``where(x > 0, 1/(2*sqrt(x)), 0)``
    is ``where(x > 0, 1/(2*sqrt(where(x > 0, x, 1))), 0)``.  The value is
    the same; but differentiated again (double backward), the branch not
    taken is multiplied by 0, and ``0*nan`` is NaN, as the derivative of
    sqrt is at x < 0.  Only for conditions that are comparisons of one name
    with numbers."""
    return bottom_up(expr, ((sp.Piecewise, _guarded),))


def _guarded(piece: sp.Piecewise) -> sp.Expr:
    pairs, before, changed = [], [], False
    for value, condition in piece.args:
        holds = before + ([] if condition == sp.true else [condition])
        for symbol in sorted(value.free_symbols, key=str):
            calls = (
                _partial_calls(value, symbol) if isinstance(symbol, sp.Symbol) else []
            )
            if not calls or not holds:
                continue
            interval = _interval(holds, symbol)
            safe = None if interval is None else _inside(*interval)
            if safe is None:
                continue
            inside = sp.And(*holds) if len(holds) > 1 else holds[0]
            guard = {symbol: Guarded((symbol, inside), (safe, True))}
            value = value.xreplace({call: call.xreplace(guard) for call in calls})
            changed = True
        pairs.append((value, condition))
        before.append(sp.Not(condition))
    return Piecewise(*pairs) if changed else piece
