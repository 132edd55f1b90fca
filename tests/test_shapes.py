"""Shape facts: each rewrite as expression in, expression out."""

from __future__ import annotations

import sympy as sp

from fngen import tensorops as T
from fngen.shapes import ShapeFacts

x, w, y, d, g, grad_y, r, s, eps = sp.symbols("x w y d g grad_y r s eps", real=True)
ALL = sp.Tuple()
LAST = sp.Tuple(sp.Integer(-1))


def facts(named=()) -> ShapeFacts:
    # x, w: inputs; r = mean(x, -1, keepdim=True); s = sum(x, -1) (no
    # keepdim); d = x - w, y = r*x: outputs; grad_y: y's gradient.
    return ShapeFacts(
        leaves=frozenset({x, w, r, s}),
        reductions={r: (x, LAST, sp.true), s: (x, LAST, sp.false)},
        values={d: x - w, y: r * x, grad_y: y},
        scalars=frozenset({eps}),
        named=tuple(named),
    )


def test_atoms_are_the_tensors_a_shape_is_the_broadcast_of():
    f = facts()
    assert f.atoms(x - w) == {x, w}
    assert f.atoms(d) == {x, w}
    assert f.atoms(eps * sp.exp(x)) == {x}
    # A keepdim reduction of x adds nothing to x's shape; one without
    # keepdim does.
    assert f.atoms(grad_y * r) == {x}
    assert f.atoms(x * s) == {x, s}
    assert f.atoms(r) == {r}
    assert f.atoms(T.Numel(T.ShapeOf(x), ALL)) == set()
    # A where's conditions broadcast too; an unknown name is unknown.
    assert f.atoms(sp.Piecewise((x, w > 0), (0, True))) == {x, w}
    assert f.atoms(g * x) is None


def test_an_expand_beside_an_operand_of_its_shape_is_dropped():
    f = facts()
    expanded = T.Expand(g / T.Numel(T.ShapeOf(x, w), ALL), T.ShapeOf(x, w))
    assert f.tidy(2 * d * expanded) == 2 * d * g / T.Numel(T.ShapeOf(x, w), ALL)
    assert f.tidy(expanded + (x - w)) == g / T.Numel(T.ShapeOf(x, w), ALL) + x - w
    # Beside operands of a smaller shape the expand makes the shape.
    assert f.tidy(expanded * x) == expanded * x
    assert f.tidy(expanded * g) == expanded * g


def test_a_sum_to_an_expressions_own_shape_is_dropped():
    f = facts()
    assert f.tidy(T.SumToSize(grad_y * r, T.ShapeOf(x))) == grad_y * r
    # x - w may be broadcast past x: summed.
    kept = T.SumToSize(x - w, T.ShapeOf(x))
    assert f.tidy(kept) == kept
    # s (no keepdim) broadcasts against x's trailing dimensions: summed.
    kept = T.SumToSize(x * s, T.ShapeOf(x))
    assert f.tidy(kept) == kept


def test_a_broadcast_shape_is_read_from_a_tensor_that_has_it():
    shape = T.ShapeOf(x, w)
    assert facts(named=[d]).tidy(T.Numel(shape, ALL)) == T.Numel(T.ShapeOf(d), ALL)
    assert facts().tidy(T.Numel(shape, ALL)) == T.Numel(shape, ALL)
    assert facts(named=[y]).tidy(shape) == shape  # y has x's shape only


def test_sums_to_one_size_are_one_sum():
    f = facts()
    a = T.SumToSize(x * w, T.ShapeOf(w))
    b = T.SumToSize(x - w, T.ShapeOf(w))
    assert f.tidy(a - b) == T.SumToSize(x * w - x + w, T.ShapeOf(w))
    other = T.SumToSize(x, T.ShapeOf(x, s))
    assert f.tidy(a + other) == a + other
    # Of two shapes, a + b would broadcast g before summing it: kept apart.
    wide = T.SumToSize(x * w * s, T.ShapeOf(w))
    assert f.tidy(a + wide) == a + wide
    # Of an unknown shape: kept apart too.
    unknown = T.SumToSize(g, T.ShapeOf(w))
    assert f.tidy(a + unknown) == a + unknown


def test_abs_of_a_positive_expression_is_the_expression():
    from fngen.functions import Abs, Sign

    assert Abs(sp.exp(x)) == sp.exp(x)
    assert Abs(-sp.exp(x)) == sp.exp(x)
    assert isinstance(Abs(x), Abs)
    # The derivative is unchanged: sign folds the same way.
    assert Sign(sp.exp(x)) == 1
