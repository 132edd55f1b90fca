"""Activations PyTorch computes in one kernel: recognized exactly, printed as
that kernel, and still right under every autograd transform."""

from __future__ import annotations

import inspect

import pytest
import sympy as sp
import torch
import torch.nn.functional as nnf

import fngen
from fngen import functions as F
from fngen.fuse import fuse
from fngen.printer import TorchPrinter, math_text
from fngen.spec import parse_spec

x, y = sp.symbols("x y", real=True)


def parsed(formula: str) -> sp.Expr:
    """The output expression of a one-line formula, as the spec parser reads it."""
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n"
    fn = parse_spec(text, "f.yaml").functions[0]
    symbols = dict(fn.symbols)
    return fn.formula.outputs[0][1].xreplace({symbols["x"]: x})


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("y = x*sigmoid(x)", F.Silu(x)),
        ("y = 2*x*sigmoid(2*x)", F.Silu(2 * x)),
        ("y = x*sigmoid(2*x)", F.Silu(2 * x) / 2),
        ("y = -x*sigmoid(-x)", F.Silu(-x)),
        ("y = x**2*sigmoid(x)", x * F.Silu(x)),
        ("y = x*sigmoid(x) + sigmoid(x)", F.Silu(x) + F.Sigmoid(x)),
        ("y = (x + 1)*tanh(softplus(x + 1))", F.Mish(x + 1)),
        ("y = x*tanh(log(1 + exp(x)))", F.Mish(x)),
        ("y = 0.5*x*(1 + erf(x/sqrt(2)))", F.Gelu(x)),
        ("y = 3*x*(1 + erf(0.7071067811865476*x))/2", 3 * F.Gelu(x)),
        (
            "y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))",
            F.GeluTanh(x),
        ),
        (
            "y = x*(1 + tanh(0.7978845608028654*(x + 0.044715*x**3)))/2",
            F.GeluTanh(x),
        ),
        ("y = sin(x*sigmoid(x))", sp.sin(F.Silu(x))),
        ("y = where(x > 0, x, exp(x) - 1)", F.Elu(x, 1)),
        ("y = where(x <= 0, exp(x) - 1, x)", F.Elu(x, 1)),
        ("y = where(x > 1, x - 1, 2*(exp(x - 1) - 1))", F.Elu(x - 1, 2)),
        (
            "y = where(2*x > 0, 2*x, 0.5*(exp(2*x) - 1))",
            F.Elu(2 * x, sp.Rational(1, 2)),
        ),
        (
            "y = 1.0507009873554805*where(x > 0, x, 1.6732632423543772*(exp(x) - 1))",
            sp.Rational(10507009873554805, 10**16)
            * F.Elu(x, sp.Rational(16732632423543772, 10**16)),
        ),
    ],
)
def test_exact_forms_are_fused(formula, expected):
    assert fuse(parsed(formula)) == expected


@pytest.mark.parametrize(
    "formula",
    [
        "y = x*sigmoid(x + 1)",
        "y = x/sigmoid(x)",
        "y = x*tanh(x)",
        "y = sigmoid(x)",
        # Constants that are not PyTorch's compute another function.
        "y = 0.5*x*(1 + erf(0.70710678*x))",
        "y = 0.5*x*(1 + tanh(0.79788456*(x + 0.044715*x**3)))",
        "y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.0447*x**3)))",
        "y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**2)))",
        # At 0 the derivative would be 1, where elu's is alpha.
        "y = where(x >= 0, x, 2*(exp(x) - 1))",
        "y = where(x > 0, x, exp(2*x) - 1)",
        "y = where(x > 0, 2*x, exp(x) - 1)",
        "y = where(x > 0, x, 0)",
        "y = where(x < 0, x, exp(x) - 1)",
    ],
)
def test_other_forms_are_left_as_written(formula):
    expr = parsed(formula)
    assert fuse(expr) == expr


@pytest.mark.parametrize(
    "expr, expected",
    [
        (F.Silu(x), "torch.nn.functional.silu(x)"),
        (F.Mish(x), "_mish(x)"),
        (F.Gelu(2 * x), "torch.nn.functional.gelu(2*x)"),
        (F.GeluTanh(x), 'torch.nn.functional.gelu(x, approximate="tanh")'),
        (y * F.SiluBackward(x), "_silu_backward(y, x)"),
        (y * F.MishBackward(x), "_mish_backward(y, x)"),
        (y * F.GeluBackward(x), "torch.ops.aten.gelu_backward(y, x)"),
        (
            y * F.GeluTanhBackward(x),
            'torch.ops.aten.gelu_backward(y, x, approximate="tanh")',
        ),
    ],
)
def test_printed_as_pytorch_kernels(expr, expected):
    assert TorchPrinter().doprint(expr) == expected


def test_helpers_are_recorded_only_when_called():
    printer = TorchPrinter()
    printer.doprint(y * F.GeluBackward(x))
    assert printer.helpers == set()
    printer.doprint(y * F.SiluBackward(x) + y * F.MishBackward(x))
    assert printer.helpers == {"_silu_backward", "_mish_backward"}
    printer.doprint(F.Mish(x))
    assert printer.helpers == {"_silu_backward", "_mish_backward", "_mish"}


def test_docstrings_write_the_math():
    assert (
        math_text(F.SiluBackward(x)) == "x*(sigmoid(x)*(1 - sigmoid(x))) + sigmoid(x)"
    )
    assert math_text(F.Mish(x)) == "x*tanh(softplus(x))"


@pytest.mark.parametrize(
    "cls, kernel",
    [
        (F.SiluBackward, lambda g, v: torch.ops.aten.silu_backward(g, v)),
        (F.MishBackward, lambda g, v: torch.ops.aten.mish_backward(g, v)),
        (F.GeluBackward, lambda g, v: torch.ops.aten.gelu_backward(g, v)),
        (
            F.GeluTanhBackward,
            lambda g, v: torch.ops.aten.gelu_backward(g, v, approximate="tanh"),
        ),
        (
            lambda v: F.EluBackward(v, sp.Rational(3, 2)),
            lambda g, v: torch.ops.aten.elu_backward(g, 1.5, 1, 1, False, v),
        ),
    ],
)
def test_derivative_formula_is_the_kernels(cls, kernel):
    # The formula serves docstrings, constants and second derivatives: it
    # must be the function the kernel computes.
    points = [-3.5, -1.0, -0.25, 0.0, 0.5, 2.0, 4.0]
    values = torch.tensor(points, dtype=torch.float64)
    expected = kernel(torch.ones_like(values), values)
    for point, value in zip(points, expected.tolist()):
        number = F.constant_value(cls(sp.Float(point)))
        assert float(number) == pytest.approx(value, rel=1e-12, abs=1e-14)


SPEC = """\
fngen: 1
functions:
  swish:
    formula: y = x*sigmoid(x)
  mish:
    formula: y = x*tanh(softplus(x))
  gelu:
    formula: y = 0.5*x*(1 + erf(x/sqrt(2)))
  gelu_tanh:
    formula: y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))
  scaled:
    formula: y = w*(2*x)*sigmoid(2*x)
  elu:
    formula: y = where(x > 0, x, 1.5*(exp(x) - 1))
"""

REFERENCES = {
    "swish": nnf.silu,
    "mish": nnf.mish,
    "gelu": nnf.gelu,
    "gelu_tanh": lambda v: nnf.gelu(v, approximate="tanh"),
    "elu": lambda v: nnf.elu(v, alpha=1.5),
}


@pytest.fixture(scope="module")
def module():
    return fngen.load(parse_spec(SPEC, "fused.yaml"))


def test_generated_code_calls_the_kernels(module):
    source = module.__fngen_source__
    assert "y = torch.nn.functional.silu(x)" in source
    assert "grad_x = _silu_backward(grad, x)" in source
    assert 'torch.ops.aten.gelu_backward(grad, x, approximate="tanh")' in source
    assert source.count("def _silu_backward(") == 1
    assert source.count("def _mish_backward(") == 1
    assert "y = _mish(x)" in source and source.count("def _mish(") == 1


EXTREMES = [-float("inf"), -100.0, -30.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 30.0, 100.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mish_on_a_cpu_agrees_with_the_kernels(module, dtype):
    # On a CPU the helpers compute mish from one sigmoid, not by the
    # kernels: the same values, to a few units in the last place.
    x = torch.cat([torch.linspace(-12, 12, 2001), torch.tensor(EXTREMES)])
    x = x.to(dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    tol = {
        torch.float32: dict(rtol=4e-6, atol=1e-6),
        torch.float64: dict(rtol=1e-12, atol=1e-14),
        torch.bfloat16: dict(rtol=0, atol=0),  # the kernels themselves
    }[dtype]
    torch.testing.assert_close(module._mish(x), nnf.mish(x), equal_nan=True, **tol)
    with torch.no_grad():
        torch.testing.assert_close(
            module._mish_backward(g, x),
            torch.ops.aten.mish_backward(g, x),
            equal_nan=True,
            **tol,
        )
    # The inputs are left as they were (the helpers work in place only on
    # their own temporaries).
    assert torch.equal(
        x, torch.cat([torch.linspace(-12, 12, 2001), torch.tensor(EXTREMES)]).to(dtype)
    )


def test_mish_helpers_read_the_device(module):
    test = (
        '    if (\n        x.device.type != "cpu"\n'
        "        or x.dtype not in (torch.float32, torch.float64)\n"
        "        or type(x) is not torch.Tensor\n    ):\n"
    )
    source = inspect.getsource(module._mish)
    assert f"{test}        return torch.nn.functional.mish(x)" in source
    source = inspect.getsource(module._mish_backward)
    assert f"{test}        return torch.ops.aten.mish_backward(grad, x)" in source


def test_mish_helpers_trace_to_graphs_of_no_in_place_op(module):
    # Fake tensors (a custom op's backward under aot_autograd) take the
    # kernels: aot_autograd refuses a graph with in-place ops.
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(5)
    for helper, args in ((module._mish, (x,)), (module._mish_backward, (x, x))):
        with torch.no_grad():
            graph = make_fx(helper, tracing_mode="fake")(*args).graph
        targets = [n.target for n in graph.nodes if n.op == "call_function"]
        assert targets and not any(t._schema.is_mutable for t in targets), targets


def test_no_helper_without_a_caller():
    text = "fngen: 1\nfunctions:\n  f:\n    formula: y = x*sigmoid(x + 1)\n"
    source = fngen.generate(parse_spec(text, "f.yaml"))
    assert "_silu_backward" not in source
    assert "torch.nn.functional.silu" not in source


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_second_derivatives_through_the_kernels(module, name):
    # silu_backward and mish_backward have no derivative: with grad mode on,
    # the helpers compute by composed ops, and torch.func sees the same.
    f, ref = getattr(module, name), REFERENCES[name]
    v = torch.linspace(-4, 4, 9, dtype=torch.float64) + 0.125  # not at a kink
    expected = torch.func.hessian(lambda t: ref(t).sum())(v)
    got = torch.func.hessian(lambda t: f(t).sum())(v)
    torch.testing.assert_close(got, expected)
    got = torch.func.jacrev(torch.func.jacrev(lambda t: f(t).sum()))(v)
    torch.testing.assert_close(got, expected)
    got = torch.func.vmap(torch.func.grad(lambda t: f(t).sum()))(v.unsqueeze(1))
    torch.testing.assert_close(
        got, torch.func.vmap(torch.func.grad(lambda t: ref(t).sum()))(v.unsqueeze(1))
    )
    x64 = v.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(f, (x64,))


def test_fused_with_other_factors(module):
    x64 = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.rand(7, dtype=torch.float64, requires_grad=True)
    f = module.scaled
    assert list(inspect.signature(f).parameters) == ["w", "x"]
    assert torch.autograd.gradcheck(f, (w, x64))
    assert torch.autograd.gradgradcheck(f, (w, x64))
    torch.testing.assert_close(f(w, x64), w * nnf.silu(2 * x64))


def test_elu_prints_as_pytorchs():
    printer = TorchPrinter()
    assert printer.doprint(F.Elu(x, 1)) == "torch.nn.functional.elu(x)"
    assert printer.doprint(F.Elu(x, 2)) == "torch.nn.functional.elu(x, alpha=2)"
    assert (
        printer.doprint(y * F.EluBackward(x, sp.Rational(3, 2)))
        == "torch.ops.aten.elu_backward(y, 1.5, 1, 1, False, x)"
    )
    assert math_text(F.EluBackward(x, 2)) == "where(x > 0, 1, 2*exp(x))"


def test_a_fused_derivative_shared_by_paths_is_one_kernel():
    # x*sigmoid(x) feeds two outputs: grad_a*D + grad_b*D*cos(...) is
    # D*(grad_a + grad_b*cos(...)), one silu_backward; and in forward mode
    # (x_t + b_t)*mish'(x + b) is one mish_backward (of the kept x + b).
    text = """\
fngen: 1
functions:
  two:
    formula: |
      a = x*sigmoid(x)
      b = sin(x*sigmoid(x))
    outputs: [a, b]
  shifted:
    formula: y = (x + b)*tanh(softplus(x + b))
"""
    source = " ".join(fngen.generate(parse_spec(text, "paths.yaml")).split())
    assert (
        "grad_x = _silu_backward( "
        "torch.addcmul(grad_a, grad_b, torch.cos(torch.nn.functional.silu(x))), x )"
    ) in source
    assert "kept_t = b_t + x_t y_t = _mish_backward(kept_t, kept)" in source
