"""Walks of a SymPy expression as the shared expression it is (a DAG).

Inlining statements shares subexpressions: ``a = x*x + x; b = a*a + a``
holds one object ``a`` twice, and fifteen such lines a tree of 2**15
leaves on some forty distinct nodes.  SymPy's own walks (``diff``,
``factor_terms``, ``expand``) go through the tree, every repetition again,
so they are exponential in the number of such statements.  The walks here
visit each distinct subexpression once (a memo keyed on it), and give what
SymPy's walks give: ``derivative(e, x) == sp.diff(e, x)``.
"""

from __future__ import annotations

import sympy as sp
from sympy.core.function import ArgumentIndexError, Function

_MUL_DERIVATIVE = sp.Mul._eval_derivative
_ADD_DERIVATIVE = sp.Add._eval_derivative
_POW_DERIVATIVE = sp.Pow._eval_derivative
_FUNCTION_DERIVATIVE = Function._eval_derivative
_PIECEWISE_DERIVATIVE = sp.Piecewise._eval_derivative


def postorder(*exprs: sp.Basic):
    """Each distinct subexpression of `exprs` once, arguments before the
    expressions that use them, without recursion."""
    seen: set = set()
    stack = [(e, False) for e in reversed(exprs)]
    while stack:
        expr, expanded = stack.pop()
        if expanded:
            yield expr
            continue
        if expr in seen:
            continue
        seen.add(expr)
        stack.append((expr, True))
        stack.extend(
            (a, False)
            for a in reversed(getattr(expr, "args", ()))
            if isinstance(a, sp.Basic) and a not in seen
        )


def tree_size(expr: sp.Basic, limit: int | None = None) -> int:
    """The number of nodes of `expr` as a tree (what SymPy's recursive walks
    visit), counted on the DAG; at most `limit` + 1 when `limit` is given."""
    cap = None if limit is None else limit + 1
    size: dict = {}
    for node in postorder(expr):
        total = 1 + sum(size.get(a, 1) for a in node.args)
        size[node] = total if cap is None else min(total, cap)
    return size[expr]


# Deeper than this, SymPy's own recursive walks (printing, simplifying,
# the generated code's parentheses) run out of Python's stack: a derivative
# of such an expression is refused as `RecursionError`, as sp.diff would.
MAX_DEPTH = 120


def depth(expr: sp.Basic) -> int:
    """The number of nodes on the longest path from `expr` to a leaf."""
    found: dict = {}
    for node in postorder(expr):
        found[node] = 1 + max((found.get(a, 1) for a in node.args), default=0)
    return found[expr]


def derivative(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr:
    """``sp.diff(expr, symbol)``, each distinct subexpression differentiated
    once: the rules of SymPy's ``_eval_derivative`` for sums, products,
    powers, functions and piecewise, with memoised arguments.  Any other
    node is left to ``sp.diff``.  Raises RecursionError past `MAX_DEPTH`."""
    if depth(expr) > MAX_DEPTH:
        raise RecursionError(f"expression nested deeper than {MAX_DEPTH}")
    depends: dict = {}
    result: dict = {}
    for node in postorder(expr):
        depends[node] = node == symbol or any(depends.get(a, False) for a in node.args)
        if not depends[node]:
            result[node] = sp.S.Zero
        elif node == symbol:
            result[node] = sp.S.One
        elif isinstance(node, sp.Expr):
            result[node] = _derivative_of(node, symbol, result)
        # Conditions and pairs of a piecewise have no derivative of their own.
    return result[expr]


class _Unknown(Exception):
    pass


def _derivative_of(node, symbol, result) -> sp.Expr:
    rule = getattr(type(node), "_eval_derivative", None)

    def d(arg, default):
        if arg not in result:
            raise _Unknown
        return result[arg]

    try:
        return _by_rule(node, rule, d)
    except _Unknown:
        return sp.diff(node, symbol)


def _by_rule(node, rule, d):
    if rule is _MUL_DERIVATIVE:
        args = list(node.args)
        terms = []
        for i in range(len(args)):
            da = d(args[i], sp.S.Zero)
            if da:
                terms.append(sp.Mul(*args[:i], da, *args[i + 1 :]))
        return sp.Add.fromiter(terms)
    if rule is _ADD_DERIVATIVE:
        return node.func(*[d(a, sp.S.Zero) for a in node.args])
    if rule is _POW_DERIVATIVE:
        base, exp = node.args
        return node * (
            d(exp, sp.S.Zero) * sp.log(base) + d(base, sp.S.Zero) * exp / base
        )
    if rule is _FUNCTION_DERIVATIVE:
        terms = []
        for i, a in enumerate(node.args, start=1):
            da = d(a, sp.S.Zero)
            if da.is_zero:
                continue
            try:
                df = node.fdiff(i)
            except ArgumentIndexError:
                df = Function.fdiff(node, i)
            terms.append(df * da)
        return sp.Add(*terms)
    if rule is _PIECEWISE_DERIVATIVE:
        return node.func(*[(d(e, sp.S.Zero), c) for e, c in node.args])
    raise _Unknown


def free_symbols(expr: sp.Basic) -> set:
    """``expr.free_symbols``, each distinct subexpression visited once (for
    the expressions of formulas: no bound variables)."""
    found: dict = {}
    for node in postorder(expr):
        if node.is_Symbol:
            found[node] = {node}
        elif not node.args:
            found[node] = node.free_symbols
        else:
            found[node] = set().union(*(found.get(a, set()) for a in node.args))
    return set(found[expr])


def atoms(expr: sp.Basic, *types: type) -> set:
    """``expr.atoms(*types)``, each distinct subexpression visited once."""
    return {node for node in postorder(expr) if isinstance(node, types)}


def xreplace(expr: sp.Basic, rule: dict) -> sp.Basic:
    """``expr.xreplace(rule)``, each distinct subexpression rebuilt once."""
    if not rule:
        return expr
    done: dict = {}
    for node in postorder(expr):
        if node in rule:
            done[node] = rule[node]
            continue
        args = node.args
        new = tuple(done.get(a, a) for a in args)
        if any(a is not b for a, b in zip(new, args)):
            done[node] = node.func(*new)
        else:
            done[node] = node
    return done[expr]


def preorder(expr: sp.Basic):
    """The distinct subexpressions of `expr` in the order of their first
    visit by ``sp.preorder_traversal`` (each node before its arguments),
    each once."""
    seen: set = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(
            a for a in reversed(getattr(node, "args", ())) if isinstance(a, sp.Basic)
        )


def symbols_below(expr: sp.Basic) -> dict:
    """Each distinct subexpression of `expr` -> its free symbols."""
    found: dict = {}
    for node in postorder(expr):
        if node.is_Symbol:
            found[node] = frozenset({node})
        elif not node.args:
            found[node] = frozenset(getattr(node, "free_symbols", ()))
        else:
            found[node] = frozenset().union(*(found.get(a, ()) for a in node.args))
    return found
