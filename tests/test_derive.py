"""The derivation's measures of cost and its simplification budget."""

from __future__ import annotations

import sympy as sp

import fngen
from fngen import derive
from fngen import tensorops as T
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
    # Plain arithmetic in a forward, as the math reads (no torch.addcmul).
    assert "z = x * (x * (x + 3 * y) + y * (-2 * y - 1)) + y**3\n" in source


def test_a_leaf_is_solved_from_a_kept_difference():
    from fngen.derive import Deriver, _with_kept

    text = "fngen: 1\nfunctions:\n  f:\n    formula: z = sum((x - y)**2)\n"
    fn = parse_spec(text, "f.yaml").functions[0]
    symbols = dict(fn.symbols)
    x, y = symbols["x"], symbols["y"]
    deriver = Deriver(_with_kept(fn, x - y))
    kept = deriver.outputs[1]
    assert kept.name == "kept"
    # 2*x - 2*y, where subs(x - y, kept) finds nothing, becomes 2*kept.
    assert deriver.substitute_outputs([2 * x - 2 * y]) == [2 * kept]
    # Shapes are left alone: they are kept on ctx, never recomputed.
    shaped = T.SumToSize(2 * x - 2 * y, T.ShapeOf(x))
    assert deriver.substitute_outputs([shaped]) == [T.SumToSize(2 * kept, T.ShapeOf(x))]
    # Nothing is solved where it would not leave fewer tensors.
    assert deriver.substitute_outputs([x * y]) == [x * y]


FORWARD_AD_SPEC = """\
fngen: 1
functions:
  pair:
    formula: |
      p = x*y
      s = sin(x) + y
    outputs: [p, s]
"""


def test_forward_ad_of_two_outputs_with_one_tangent():
    import torch
    import torch.autograd.forward_ad as fwAD

    module = fngen.load(parse_spec(FORWARD_AD_SPEC, "pair.yaml"))
    x = torch.rand(4, dtype=torch.float64)
    y = torch.rand(3, 1, dtype=torch.float64)
    y_t = torch.randn_like(y)
    with fwAD.dual_level():
        p, s = module.pair(x, fwAD.make_dual(y, y_t))
        p_t, s_t = fwAD.unpack_dual(p).tangent, fwAD.unpack_dual(s).tangent
    torch.testing.assert_close(p_t, x * y_t)
    torch.testing.assert_close(s_t, y_t.expand(3, 4))


def test_derivatives_read_as_math_in_docstrings():
    from fngen import functions as F

    assert (
        sp.sstr(x * F.Tanh(x).diff(x) * F.Sigmoid(x)) == "x*Sigmoid(x)*(1 - tanh(x)**2)"
    )
    assert sp.sstr(F.Sigmoid(x).diff(x) ** 2) == "(Sigmoid(x)*(1 - Sigmoid(x)))**2"
    assert sp.sstr(F.Softplus(x).diff(x)) == "Sigmoid(x)"
    assert sp.N(F.Tanh(3)) == sp.N(sp.tanh(3))


def test_a_factor_common_to_every_branch_is_pulled_out_of_where():
    from fngen.derive import factor_piecewise
    from fngen.functions import Piecewise

    d, delta = sp.symbols("d delta", real=True)
    c = delta > d
    # huber's gradient for the target: the input's, negated.
    piece = Piecewise((-d, c), (-delta * d**2, True))
    assert factor_piecewise(piece) == -Piecewise((d, c), (delta * d**2, True))
    assert factor_piecewise(Piecewise((y, c), (-2 * x, True))) == Piecewise(
        (y, c), (-2 * x, True)
    )
    assert factor_piecewise(Piecewise((2 * x * y, c), (2 * x * d, True))) == (
        2 * x * Piecewise((y, c), (d, True))
    )
    # A 0 branch stays 0 even where the factor is inf: nothing is pulled out.
    zero = Piecewise((2 * x, c), (0, True))
    assert factor_piecewise(zero) == zero


def test_where_terms_on_one_variable_fold_into_one_where():
    from fngen.derive import fold_piecewise, simplest
    from fngen.functions import Maximum, Minimum, Piecewise

    a = sp.Symbol("a", real=True)
    prelu = sp.diff(Maximum(x, 0) + a * Minimum(x, 0), x)
    folded = Piecewise((a, x < 0), (a / 2 + sp.Rational(1, 2), sp.Eq(x, 0)), (1, True))
    assert fold_piecewise(prelu) == folded
    assert simplest(prelu) == folded
    # Conditions on two variables are left alone (no interval reasoning).
    two = Piecewise((1, x > 0), (0, True)) + Piecewise((1, y > 0), (0, True))
    assert fold_piecewise(two) == two


RMS_SPEC = """\
fngen: 1
functions:
  rms:
    formula: y = x / sqrt(mean(x**2, dim=-1, keepdim=true) + eps) * w
    inputs:
      x: tensor
      w: tensor
      eps: {type: float, default: 1.0e-6}
"""


def test_factors_of_a_reductions_shape_are_applied_after_its_sum():
    from fngen.derive import Deriver

    fn = parse_spec(RMS_SPEC, "rms.yaml").functions[0]
    deriver = Deriver(fn)
    deriver.gradient_expressions()
    ((grad_mean, expr),) = deriver.op_grads
    symbols = dict(fn.symbols)
    x, w, eps = symbols["x"], symbols["w"], symbols["eps"]
    (mean,) = deriver.op_results
    grad = deriver.grad_symbols[0]
    shape = T.KeptShape(T.ShapeOf(x), sp.Tuple(-1))
    # sum(grad*x*w) over the row, then the per-row factor: not the factor
    # multiplied into every element before the sum.
    assert expr == -T.SumToSize(grad * w * x, shape) / (
        2 * (eps + mean) ** sp.Rational(3, 2)
    )
    # An input's own shape is left alone: no sum happens there, most often.
    grads = deriver.gradient_expressions()
    assert isinstance(grads[w], T.SumToSize)


LAYER_NORM_SPEC = """\
fngen: 1
functions:
  ln:
    formula: |
      mu = mean(x, dim=-1, keepdim=true)
      var = mean((x - mu)**2, dim=-1, keepdim=true)
      y = (x - mu) / sqrt(var + eps)
    inputs:
      x: tensor
      eps: {type: float, default: 1.0e-5}
"""


def test_a_keepdim_reduction_adds_nothing_to_a_broadcast_shape():
    from fngen.derive import Deriver

    fn = parse_spec(LAYER_NORM_SPEC, "ln.yaml").functions[0]
    deriver = Deriver(fn)
    x = dict(fn.symbols)["x"]
    mu, var = deriver.op_results
    assert deriver.shape_of(x - mu) == T.ShapeOf(x)
    assert deriver.shape_of(mu * var) == T.ShapeOf(mu, var)
    # mu and var then have the same shape expression, so var's gradient
    # (a per-row value) comes out of the row sum in mu's, leaving the sum of
    # x - mu over the row: zero, and left out.
    source = " ".join(fngen.generate(parse_spec(LAYER_NORM_SPEC, "ln.yaml")).split())
    assert "torch.broadcast_shapes" not in source
    assert "grad_mu = -rstd * grad_y.sum_to_size(mu.shape)" in source


def test_deviations_from_a_mean_sum_to_zero_only_over_its_dimensions():
    from fngen.derive import Deriver

    text = """\
fngen: 1
functions:
  f:
    formula: |
      m = mean(x, dim=-1, keepdim=true)
      s = sum(x, dim=-1, keepdim=true)
      y = (x - m)**2 + (x - s)**2
"""
    fn = parse_spec(text, "f.yaml").functions[0]
    deriver = Deriver(fn)
    x = dict(fn.symbols)["x"]
    m, s = deriver.op_results
    row = deriver.pure_leaf_shape(m)
    assert deriver.sums_to_zero(x - m, row)
    assert deriver.sums_to_zero(m - x, row)
    assert not deriver.sums_to_zero(x - s, row)  # a sum, not a mean
    assert not deriver.sums_to_zero(x - m, T.ShapeOf(x))  # not summed over the row
    assert not deriver.sums_to_zero(x**2 - m, row)
