"""Functions of float inputs: ``x / sqrt(d)`` with ``d: float``.

torch's functions take tensors only (``torch.sqrt(4.0)`` is a TypeError), so
a part of a formula that reads Python numbers alone is printed with the math
module or builtins (``math.sqrt(d)``, ``min(d, 1)``, ``x if d > 0 else 2*x``),
and where math has no such function (sigmoid, erfinv, digamma, ...) on the
number as a 0-dim float64 tensor, which takes the tensors' dtype and device
where it meets them.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import fngen
from fngen.reference import reference_forward
from fngen.spec import parse_spec
from test_differential import EXPRESSIONS, SAFE_FORMS, TOL, fuzz_settings

# Every pointwise function of the formula language, of d alone (the forms
# stay in each function's domain for any real d), scaling a tensor.
ALL_FUNCTIONS = "fngen: 1\nfunctions:\n" + "".join(
    f"  of_{name}:\n"
    f"    formula: y = x * ({form.format('d', 'd', c='0.5')}) + x\n"
    "    inputs:\n      x: tensor\n      d: {type: float, default: 0.7}\n"
    for name, form in SAFE_FORMS.items()
)

SPEC = """\
fngen: 1
functions:
  scaled:
    formula: y = x / sqrt(d) + exp(-d) * x
    inputs:
      x: tensor
      d: {type: float, default: 4.0}
  gate:
    formula: y = x * sigmoid(d)
    inputs:
      x: tensor
      d: {type: float, default: 0.5}
  branch:
    formula: y = where(d > 0.3, x, 2*x) + x * where(not_(d), 1, 0)
    inputs:
      x: tensor
      d: {type: float, default: 0.5}
  chained:
    doc: A number computed in a statement of its own, used twice.
    formula: |
      s = sqrt(d) + 1
      y = x * s + s**2
    inputs:
      x: tensor
      d: {type: float, default: 2.0}
  masked:
    doc: Branches of a number test that are not all of one shape.
    formula: y = x * where(d > 0, where(d < 1, 1, 0), 0) + where(abs(d) > 2, 0, x)
    inputs:
      x: tensor
      d: {type: float, default: 0.5}
  flag:
    doc: A bool input, tested as it is, that selects the identity.
    formula: y = where(use, x**2, x)
    inputs:
      x: tensor
      use: {type: bool, default: true}
  fractional:
    formula: y = x * d**1.5
    inputs:
      x: tensor
      d: {type: float, default: 2.0}
"""


@pytest.fixture(scope="module")
def mod():
    return fngen.load(parse_spec(SPEC.replace("not_(d)", "d < 0.1"), "scalar.yaml"))


def _forward(function) -> str:
    return inspect.getsource(function.forward)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_function_of_a_float_input_passes_check(dtype):
    spec = parse_spec(ALL_FUNCTIONS, "all.yaml")
    report = fngen.check(spec, dtype=dtype, checks=["reference", "gradcheck", "vmap"])
    assert report.ok, report.table()


def test_math_where_math_has_the_function(mod):
    assert "y = x * math.exp(-d) + x / math.sqrt(d)" in _forward(mod.ScaledFunction)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(
        mod.scaled(x, 4.0), x / 2 + torch.exp(torch.tensor(-4.0)) * x
    )
    (grad,) = torch.autograd.grad(mod.scaled(x, 4.0).sum(), x)
    torch.testing.assert_close(
        grad, torch.full_like(x, 0.5 + torch.exp(torch.tensor(-4.0)).item())
    )


def test_a_zero_dim_tensor_where_math_has_none(mod):
    source = _forward(mod.GateFunction)
    assert "torch.sigmoid(torch.as_tensor(d, dtype=torch.float64))" in source
    x = torch.randn(5, requires_grad=True)
    y = mod.gate(x, 0.5)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x * torch.sigmoid(torch.tensor(0.5)))


def test_conditions_on_numbers_are_python_conditionals(mod):
    source = _forward(mod.BranchFunction)
    # Values of one shape: a conditional expression; x or nothing: a where.
    assert "x if d > 0.3 else 2 * x" in source
    assert "torch.where(torch.as_tensor(d < 0.1, device=x.device), x, 0)" in source
    x = torch.randn(5, dtype=torch.float64)
    for d in (0.0, 0.5):
        expected = (x if d > 0.3 else 2 * x) + x * (1 if d < 0.1 else 0)
        torch.testing.assert_close(mod.branch(x, d), expected)


def test_a_number_statement_stays_a_number(mod):
    source = _forward(mod.ChainedFunction)
    assert "math.sqrt(d) + 1" in source
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    s = 2.0**0.5 + 1
    torch.testing.assert_close(mod.chained(x, 2.0), x * s + s**2)


def test_fractional_power_of_a_negative_number_is_an_error_not_complex(mod):
    assert "math.pow(d, 1.5)" in _forward(mod.FractionalFunction)
    x = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(mod.fractional(x, 2.0), x * 2.0**1.5)
    with pytest.raises(ValueError, match="math domain error"):
        mod.fractional(x, -2.0)


@pytest.mark.parametrize("d", [-5.0, 0.5, 1.5, 3.0])
def test_branches_of_other_shapes_keep_the_tensor_shape(mod, d):
    # (0 if abs(d) > 2 else x) would be a Python 0 for d = 3: a torch.where
    # of the number test as a 0-dim tensor keeps x's shape.
    assert "torch.as_tensor(abs(d) > 2, device=x.device)" in _forward(
        mod.MaskedFunction
    )
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = mod.masked(x, d)
    expected = x * (1 if 0 < d < 1 else 0) + (torch.zeros_like(x) if abs(d) > 2 else x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(
        torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(expected.sum(), x)[0]
    )


@pytest.mark.parametrize("use", [True, False])
def test_a_branch_that_is_the_input_itself(mod, use):
    # x is saved (for x**2's gradient) and, with use false, returned as it
    # is, which autograd refuses: the Function returns a copy then.
    source = _forward(mod.FlagFunction)
    assert "y = x**2 if use != 0 else x" in source
    assert "if y is x:  # an input" in source
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def function(x):
        return mod.flag(x, use)

    y = function(x)
    assert y is not x
    torch.testing.assert_close(y, x**2 if use else x)
    assert torch.autograd.gradcheck(function, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(function, (x,))
    torch.func.vmap(function)(torch.randn(2, 4, dtype=torch.float64))


# -- differential: random formulas with a float input -----------------------


@fuzz_settings(60)
@given(
    expression=EXPRESSIONS,
    d=st.sampled_from([-1.3, -0.2, 0.0, 0.7, 1.9]),
    seed=st.integers(0, 2**16),
)
def test_random_formulas_of_a_float_input_agree_with_torch_autograd(
    expression, d, seed
):
    # The differential grammar with its y a float: functions, comparisons
    # and where of the number alone, and mixed with the tensor x.
    expression = re.sub(r"\by\b", "d", expression)
    assume(re.search(r"\bd\b", expression))
    text = (
        "fngen: 1\nfunctions:\n  f:\n"
        f"    formula: out = {expression} + x/7919 + x*d/7901\n"
        "    inputs:\n      x: tensor\n      d: {type: float, default: 0.5}\n"
    )
    spec = parse_spec(text, "scalar.yaml")
    module, fn = fngen.load(spec), spec.functions[0]
    generator = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(3, 4, generator=generator, dtype=torch.float64) - 2
    x.requires_grad_()
    expected = reference_forward(fn, x, d)
    assume(torch.isfinite(expected).all())
    out = module.f(x, d)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, **TOL)
    seed_grad = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, x, seed_grad)
    (want,) = torch.autograd.grad(expected, x, seed_grad)
    torch.testing.assert_close(got, want, **TOL)


def test_only_a_bool_input_is_a_condition_as_it_is():
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = where(d, x, 2*x)\n"
        "    inputs:\n      x: tensor\n      d: {type: float, default: 0.5}\n"
    )
    with pytest.raises(fngen.SpecError) as caught:
        parse_spec(text, "ops.yaml")
    assert str(caught.value) == (
        "ops.yaml:4:24: error: where() needs a comparison as its first argument"
    )


def test_a_where_of_numbers_keeps_the_tensor_dtype():
    # torch.where(x > 0.5, d, 0) of two Python numbers is float32 (the
    # default dtype), in a float64 function: the last value is a 0-dim
    # tensor of the input's dtype instead.
    text = (
        "fngen: 1\nfunctions:\n  f:\n"
        "    formula: y = cos(where(x > 0.5, d, 0)) + x\n"
        "    inputs:\n      x: tensor\n      d: {type: float, default: 0.5}\n"
    )
    module = fngen.load(parse_spec(text, "ops.yaml"))
    assert "torch.where(x > 0.5, d, x.new_full((), 0))" in _forward(module.FFunction)
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)
    d = 1 / 3
    expected = (
        torch.cos(torch.where(x > 0.5, torch.tensor(d, dtype=torch.float64), 0)) + x
    )
    assert module.f(x, d).dtype == torch.float64
    torch.testing.assert_close(module.f(x, d), expected, rtol=0, atol=1e-15)
