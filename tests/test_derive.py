"""The derivation's measures of cost and its simplification budget."""

from __future__ import annotations

import sympy as sp

import fngen
from fngen import derive
from fngen.derive import dag_size, horner, op_count, simplest
from fngen.spec import parse_spec

x, y = sp.symbols("x y", real=True)


def test_op_count_counts_what_the_printed_code_computes():
    assert op_count(x) == 0
    assert op_count(x - y) == 1  # one subtraction, no negation
    assert op_count(-y) == 1
    assert op_count(x * (x - y)) == 2
    assert op_count(x**2 - x * y) == 3
    assert op_count(sp.sin(x) * sp.exp(x)) == 3
    # A subexpression shared by two others is computed once.
    assert op_count(sp.sin(x + y) * sp.exp(x + y)) == 4
    # Several expressions, one program.
    assert op_count(sp.sin(x + y), sp.cos(x + y)) == 3


def test_op_count_is_linear_in_shared_subexpressions():
    # 40 levels of e -> sin(e)*exp(e): a tree of 2**40 nodes, 120 operations
    # once shared.  sp.count_ops would walk the tree and never return.
    # Built unevaluated: SymPy's own constructors also walk the tree.
    e = x
    for _ in range(40):
        e = sp.Mul(sp.sin(e, evaluate=False), sp.exp(e, evaluate=False), evaluate=False)
    assert op_count(e) == 120
    assert dag_size(e) == 120


def test_simplest_pulls_out_a_common_factor_only_when_it_saves_operations():
    t, z = sp.symbols("t z", real=True)
    assert simplest(t * x + t * y + t * z) == t * (x + y + z)
    # 7.5*x**2 - 1.5 is three operations, 1.5*(5*x**2 - 1) four.
    expr = sp.Rational(15, 2) * x**2 - sp.Rational(3, 2)
    assert simplest(expr) == expr


def test_simplest_leaves_expressions_past_the_budget_as_they_are(monkeypatch):
    t, z = sp.symbols("t z", real=True)
    expr = t * x + t * y + t * z
    monkeypatch.setattr(derive, "SIMPLIFY_LIMIT", dag_size(expr) - 1)
    assert simplest(expr) == expr
    monkeypatch.setattr(derive, "SIMPLIFY_LIMIT", dag_size(expr))
    assert simplest(expr) != expr


def test_horner_nests_a_polynomial_when_that_saves_operations():
    expr = x**3 + 3 * x**2 * y - 2 * x * y**2 - x * y + y**3
    nested = horner(expr)
    assert str(nested) == "x*(x*(x + 3*y) + y*(-2*y - 1)) + y**3"
    assert sp.expand(nested - expr) == 0
    assert op_count(nested) == 9 < op_count(expr) == 13
    # Not cheaper, or not a polynomial: left as it is.
    legendre = sp.Rational(5, 2) * x**3 - sp.Rational(3, 2) * x
    assert horner(legendre) == legendre
    assert horner(sp.sin(x) + x**3 + x**2) == sp.sin(x) + x**3 + x**2


def test_generated_polynomial_forward_is_in_horner_form():
    text = "fngen: 1\nfunctions:\n  p:\n    formula: z = x**3 + 3*x**2*y - 2*x*y**2 + y**3 - x*y\n"
    source = fngen.generate(parse_spec(text, "p.yaml"))
    assert "z = x * (x * (x + 3 * y) + y * (-2 * y - 1)) + y**3\n" in source
