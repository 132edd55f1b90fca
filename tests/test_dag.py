"""Walks of shared expressions (fngen/dag.py), and the formulas that need
them: statements that reuse the one before make a tree exponential in
their number on a DAG linear in it (issue 14).  The times are benchmarks
(benchmarks/scale.py); these tests hold the results to be right."""

from __future__ import annotations

import inspect

import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fngen
from fngen import dag
from fngen.functions import Piecewise
from fngen.spec import parse_spec

x, y = sp.symbols("x y")

LEAVES = st.sampled_from([x, y, sp.Integer(2), sp.Rational(1, 3)])


def _expressions():
    def extend(children):
        unary = st.sampled_from([sp.sin, sp.exp, sp.tanh, sp.log, sp.sqrt])
        return st.one_of(
            st.builds(lambda a, b: a + b, children, children),
            st.builds(lambda a, b: a * b, children, children),
            st.builds(lambda a, b: a**b, children, st.sampled_from([2, 3, -1])),
            st.builds(lambda f, a: f(a), unary, children),
            st.builds(
                lambda a, b: Piecewise((a, x > 0), (b, True)), children, children
            ),
        )

    return st.recursive(LEAVES, extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_expressions())
def test_derivative_on_the_dag_is_sympys(expr):
    for symbol in (x, y):
        assert dag.derivative(expr, symbol) == sp.diff(expr, symbol)


def test_shared_subexpressions_are_visited_once():
    a = x * x + x
    for _ in range(40):
        a = a * a + a  # 2**40 leaves as a tree
    nodes = list(dag.postorder(a))
    assert len(nodes) == len(set(nodes)) < 200
    assert dag.tree_size(a, limit=10_000) == 10_001
    assert dag.free_symbols(a) == {x}


def test_tree_size_counts_repetitions():
    a = sp.sin(x) + 1  # Add(1, sin(x)): 4 nodes
    assert dag.tree_size(a) == 4
    shared = a * sp.sin(a)  # Mul(a, sin(a)): a twice
    assert dag.tree_size(shared) == 1 + 4 + 1 + 4
    assert len(list(dag.postorder(shared))) == 6


def test_depth_past_sympys_stack_is_refused_as_recursion():
    e = x
    for _ in range(dag.MAX_DEPTH + 1):
        e = sp.sin(e)
    try:
        dag.derivative(e, x)
    except RecursionError:
        pass
    else:
        raise AssertionError("a derivative deeper than MAX_DEPTH was taken")


def _module(formula: str):
    text = "fngen: 1\nfunctions:\n  f:\n    formula: |\n"
    text += "".join(f"      {line}\n" for line in formula.splitlines())
    return fngen.load(parse_spec(text, "dag.yaml"))


def test_a_chain_of_fifteen_reused_statements_builds_and_is_right():
    lines = ["a0 = x*x + x"]
    lines += [f"a{i} = a{i - 1}*a{i - 1} + a{i - 1}" for i in range(1, 15)]
    lines.append("y = a14")
    module = _module("\n".join(lines))
    # Small x: a_i stays finite for 15 squarings.
    x_ = torch.linspace(-1e-3, 1e-3, 9, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(module.f(x_).sum(), x_)[0]
    a = x_ * x_ + x_
    for _ in range(14):
        a = a * a + a
    want = torch.autograd.grad(a.sum(), x_)[0]
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(module.f, (x_[:3].detach().requires_grad_(),))


def test_a_sum_of_many_reductions_builds_and_is_right():
    n = 60
    module = _module("y = " + " + ".join(f"sum(x{i}*x)" for i in range(n)))
    x_ = torch.randn(5, dtype=torch.float64, requires_grad=True)
    others = [torch.randn(5, dtype=torch.float64, requires_grad=True) for _ in range(n)]
    values = {"x": x_, **{f"x{i}": t for i, t in enumerate(others)}}
    names = list(inspect.signature(module.f).parameters)
    out = module.f(*[values[name] for name in names])
    grads = torch.autograd.grad(out, [x_, *others])
    torch.testing.assert_close(grads[0], sum(others).detach())
    for g in grads[1:]:
        torch.testing.assert_close(g, x_.detach())
