"""Exact strings of `fngen.printer.print_torch`, and that what it prints
computes what the SymPy expression means."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from fngen import functions as F
from fngen import tensorops as T
from fngen.printer import PrintError, TorchPrinter, print_torch

x, y, z, w, b, grad = sp.symbols("x y z w b grad", real=True)
heaviside = F.POINTWISE_FUNCTIONS["heaviside"].build


def everything(*dims):
    """The dims argument of a reduction."""
    return sp.Tuple(*dims)


NO_DIMS = sp.Tuple()


# Exact strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        # roots and reciprocals
        (sp.sqrt(x), "torch.sqrt(x)"),
        (1 / sp.sqrt(x), "torch.rsqrt(x)"),
        (1 / x, "torch.reciprocal(x)"),
        (1 / (x + 1), "torch.reciprocal(x + 1)"),
        (-sp.sqrt(x), "-torch.sqrt(x)"),
        # powers
        (x**2, "x**2"),
        ((x + 1) ** 2, "(x + 1)**2"),
        (x**-2, "torch.reciprocal(x**2)"),
        (x ** sp.Rational(3, 2), "x**1.5"),
        (x ** sp.Rational(-3, 2), "torch.reciprocal(x**1.5)"),
        (x**y, "x**y"),
        (2**x, "2**x"),
        (-(x**2), "-x**2"),
        # numbers
        (sp.Integer(3), "3"),
        (sp.Rational(1, 3), "1/3"),
        (sp.Rational(1, 10), "0.1"),
        (sp.Float(0.1), "0.1"),
        (sp.Float(1e-300), "1e-300"),
        (sp.Float(-0.5) * x, "-0.5*x"),
        (x / 3, "x/3"),
        (sp.pi, "math.pi"),
        (sp.pi * x, "math.pi*x"),
        (sp.E, "math.e"),
        (sp.sqrt(2), "1.4142135623730951"),
        # functions
        (sp.exp(x), "torch.exp(x)"),
        (sp.log(x), "torch.log(x)"),
        (sp.tanh(x), "torch.tanh(x)"),
        (sp.erfinv(x), "torch.erfinv(x)"),
        (sp.loggamma(x), "torch.lgamma(x)"),
        (sp.digamma(x), "torch.digamma(x)"),
        (sp.polygamma(1, x), "torch.polygamma(1, x)"),
        (F.Abs(x), "torch.abs(x)"),
        (F.Sign(x), "torch.sign(x)"),
        (F.Relu(x), "torch.relu(x)"),
        (F.Sigmoid(x), "torch.sigmoid(x)"),
        (F.Softplus(x), "torch.nn.functional.softplus(x)"),
        (F.LogSigmoid(x), "torch.nn.functional.logsigmoid(x)"),
        (F.Softplus(x).diff(x), "torch.sigmoid(x)"),
        (F.LogSigmoid(x).diff(x), "torch.sigmoid(-x)"),
        (F.Sigmoid(x).diff(x), "torch.sigmoid(x)*(1 - torch.sigmoid(x))"),
        (sp.atan2(y, x), "torch.atan2(y, x)"),
        (sp.atan2(1, x), "torch.atan2(torch.full_like(x, 1), x)"),
        (F.Hypot(x, 2), "torch.hypot(x, torch.full_like(x, 2))"),
        (F.Maximum(x, y), "torch.maximum(x, y)"),
        (F.Maximum(x, 0), "torch.clamp(x, min=0)"),
        (F.Minimum(0, x), "torch.clamp(x, max=0)"),
        (F.Clamp(x, -1, 1), "torch.clamp(x, -1, 1)"),
        (F.Clamp(x, y, z), "torch.clamp(x, y, z)"),
        # conditions
        (F.Relu(x).diff(x) * grad, "torch.where(x > 0, grad, 0)"),
        # PyTorch's fused backward kernels, on any tensor
        (
            F.Sigmoid(x).diff(x) * grad,
            "torch.ops.aten.sigmoid_backward(grad, torch.sigmoid(x))",
        ),
        (
            (x * F.Sigmoid(x)).diff(x),
            "torch.ops.aten.sigmoid_backward(x, torch.sigmoid(x)) + torch.sigmoid(x)",
        ),
        (
            F.Softplus(2 * x).diff(x) * grad,
            "torch.ops.aten.softplus_backward(2*grad, 2*x, 1.0, 20.0)",
        ),
        (
            F.Tanh(x).diff(x) * grad * y,
            "torch.ops.aten.tanh_backward(grad*y, torch.tanh(x))",
        ),
        (2 * F.Tanh(x).diff(x) + x, "x + 2*(1 - torch.tanh(x)**2)"),
        # ... and alone, with nothing to scale
        (F.SigmoidBackward(F.Sigmoid(x)), "torch.sigmoid(x)*(1 - torch.sigmoid(x))"),
        (F.SoftplusBackward(x), "torch.sigmoid(x)"),
        (F.SigmoidBackward(sp.Rational(1, 4)), "0.1875"),
        (F.indicator(x > 0), "(x > 0).to(grad.dtype)"),
        (
            F.Maximum(x, y).diff(x) * grad,
            "torch.where(x > y, grad, torch.where(x == y, grad/2, 0))",
        ),
        (
            F.Minimum(x, y).diff(y) * grad,
            "torch.where(x > y, grad, torch.where(x == y, grad/2, 0))",
        ),
        (
            F.Clamp(x, -1, 1).diff(x) * grad,
            "torch.where((x >= -1) & (x <= 1), grad, 0)",
        ),
        (
            sp.Piecewise((x, x > 0), (y, x < -1), (0, True)),
            "torch.where(x > 0, x, torch.where(x < -1, y, 0))",
        ),
        (sp.Piecewise((x, x > y), (y, True)) + 1, "torch.where(x > y, x, y) + 1"),
        (2 * sp.Piecewise((x, x > y), (y, True)), "torch.where(x > y, 2*x, 2*y)"),
        (heaviside(x), "(x > 0).to(grad.dtype)"),
        # reductions
        (T.TensorSum(x, NO_DIMS, sp.false), "x.sum()"),
        (T.TensorSum(x, everything(-1), sp.false), "x.sum(dim=-1)"),
        (T.TensorSum(x, everything(0, 1), sp.true), "x.sum(dim=(0, 1), keepdim=True)"),
        (
            T.TensorMean(x * y, everything(1), sp.true),
            "(x*y).mean(dim=1, keepdim=True)",
        ),
        (T.TensorMean(x, NO_DIMS, sp.false), "x.mean()"),
        (T.TensorSum(sp.sqrt(x), NO_DIMS, sp.false), "torch.sqrt(x).sum()"),
        (T.TensorSum(-x, NO_DIMS, sp.false), "(-x).sum()"),
        (T.TensorSum(x**2, NO_DIMS, sp.false), "(x**2).sum()"),
        (2 * T.TensorSum(x, NO_DIMS, sp.false), "2*x.sum()"),
        # matrix products and transposes
        (T.TensorMatmul(x, y), "x @ y"),
        (z * T.TensorMatmul(x, y), "z*(x @ y)"),
        (T.TensorMatmul(x, y) + z, "z + x @ y"),
        (T.TensorMatmul(x, y) ** 2, "(x @ y)**2"),
        (1 / T.TensorMatmul(x, y), "torch.reciprocal(x @ y)"),
        (-T.TensorMatmul(x, y), "-(x @ y)"),
        (T.TensorMatmul(x + 1, y), "(x + 1) @ y"),
        (T.TensorMatmul(x, y + 1), "x @ (y + 1)"),
        (T.TensorMatmul(2 * x, y), "(2*x) @ y"),
        (T.TensorMatmul(x, T.TensorMT(y)), "x @ y.transpose(-2, -1)"),
        (T.TensorMatmul(T.TensorMatmul(x, y), z), "(x @ y) @ z"),
        (T.TensorMatmul(x, T.TensorMatmul(y, z)), "x @ (y @ z)"),
        (T.TensorMT(x), "x.transpose(-2, -1)"),
        (T.TensorMT(x * y), "(x*y).transpose(-2, -1)"),
        (T.TensorMT(-x), "(-x).transpose(-2, -1)"),
        (T.TensorMT(T.TensorMatmul(x, y)), "(x @ y).transpose(-2, -1)"),
        # broadcasting bookkeeping
        (T.SumToSize(grad, T.ShapeOf(x)), "grad.sum_to_size(x.shape)"),
        # the shape of a keepdim reduction, from its argument's shape
        (T.KeptShape(T.ShapeOf(x), everything(-1)), "(*x.shape[:-1], 1)"),
        (
            T.KeptShape(T.ShapeOf(x), everything(-3, -1)),
            "(*x.shape[:-3], 1, x.shape[-2], 1)",
        ),
        (T.KeptShape(T.ShapeOf(x), everything(1)), "(x.shape[0], 1, *x.shape[2:])"),
        (
            T.KeptShape(T.ShapeOf(x, y), everything(0)),
            "(1, *torch.broadcast_shapes(x.shape, y.shape)[1:])",
        ),
        (T.KeptShape(T.ShapeOf(x), NO_DIMS), "(1,) * len(x.shape)"),
        (T.SumToSize(grad * y, T.ShapeOf(x)), "(grad*y).sum_to_size(x.shape)"),
        (T.SumToSize(-grad, T.ShapeOf(x)), "(-grad).sum_to_size(x.shape)"),
        (
            T.SumToSize(grad, T.ShapeOf(x, y)),
            "grad.sum_to_size(torch.broadcast_shapes(x.shape, y.shape))",
        ),
        (T.Expand(x, T.ShapeOf(y)), "x.expand(y.shape)"),
        (
            T.Expand(sp.Integer(2), T.ShapeOf(y)),
            "torch.full(y.shape, 2, dtype=grad.dtype, device=grad.device)",
        ),
        # zeros: of a tensor at hand with its layout, else of its shape
        (T.Expand(sp.Integer(0), T.ShapeOf(y)), "torch.zeros_like(y)"),
        (
            T.Expand(sp.Integer(0), T.ShapeOf(x, y)),
            "grad.new_zeros(torch.broadcast_shapes(x.shape, y.shape))",
        ),
        (T.Unsqueeze(grad, everything(0, -1)), "grad.unsqueeze(0).unsqueeze(-1)"),
        (T.Unsqueeze(2 * grad, everything(1)), "(2*grad).unsqueeze(1)"),
        (T.Numel(T.ShapeOf(x), NO_DIMS), "x.numel()"),
        (
            T.Numel(T.ShapeOf(x, y), NO_DIMS),
            "torch.broadcast_shapes(x.shape, y.shape).numel()",
        ),
        (T.Numel(T.ShapeOf(x), everything(0, 1)), "(x.shape[0] * x.shape[1])"),
    ],
)
def test_exact_strings(expr, expected):
    assert print_torch(expr) == expected


def test_options_rename_symbols_shapes_and_dtype():
    assert print_torch(x * y, names={x: "ctx.x"}) == "ctx.x*y"
    assert print_torch(
        T.SumToSize(grad, T.ShapeOf(x)), shape_names={x: "ctx.x_shape"}
    ) == ("grad.sum_to_size(ctx.x_shape)")
    assert print_torch(F.indicator(x > 0), dtype_of="y") == "(x > 0).to(y.dtype)"
    assert (
        print_torch(T.Expand(0, T.ShapeOf(x)), shape_names={x: "ctx.x_shape"})
        == "grad.new_zeros(ctx.x_shape)"
    )


def test_uses_math_only_when_needed():
    printer = TorchPrinter()
    assert printer.doprint(sp.exp(x) + 1) == "torch.exp(x) + 1"
    assert printer.uses_math is False
    assert printer.doprint(sp.pi * x) == "math.pi*x"
    assert printer.uses_math is True


# Floats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0.1, 1 / 3, 2 / 3, 1e-300, 5e-324, 1.7976931348623157e308, 123456.789e-7, -0.1],
)
def test_floats_round_trip(value):
    printed = print_torch(sp.Float(value))
    assert float(eval(printed)) == value


@pytest.mark.parametrize(
    "value",
    [sp.Rational(1, 3), sp.Rational(-7, 3), sp.Rational(2**60 + 1, 3), sp.Integer(-5)],
)
def test_rationals_evaluate_to_the_nearest_double(value):
    assert float(eval(print_torch(value))) == float(value)


@pytest.mark.parametrize(
    "constant",
    [sp.log(2), sp.sqrt(3), 2 * sp.E, sp.EulerGamma, sp.exp(sp.Rational(1, 3))],
)
def test_irrational_constants(constant):
    printed = print_torch(constant)
    assert float(printed) == float(sp.N(constant, 50))


def test_irrational_constant_is_correctly_rounded():
    constant = sp.sqrt(89497870) / 12365
    assert float(print_torch(constant)) == float(sp.N(constant, 50))


@pytest.mark.parametrize(
    "constant",
    [sp.Integer(2**1100), sp.Float("1e400"), sp.exp(sp.Integer(1000))],
    ids=["integer", "float", "exp"],
)
def test_constant_out_of_float_range_is_an_error(constant):
    with pytest.raises(PrintError):
        print_torch(constant * x)


@pytest.mark.parametrize(
    "name, args, value",
    [
        ("relu", (1,), 1.0),
        ("sigmoid", (0,), 0.5),
        ("softplus", (1,), math.log1p(math.e)),
        ("logsigmoid", (0,), -math.log(2)),
        ("max", (1, 2), 2.0),
        ("min", (1, 2), 1.0),
        ("clamp", (5, 0, 1), 1.0),
        ("hypot", (3, 4), 5.0),
        ("floor", (sp.Rational(5, 2),), 2.0),
        ("ceil", (sp.Rational(5, 2),), 3.0),
        ("sign", (-3,), -1.0),
        ("round", (sp.Rational(1, 2),), 0.0),
        ("heaviside", (-1,), 0.0),
    ],
)
def test_functions_of_constants_print_their_value(name, args, value):
    constant = F.POINTWISE_FUNCTIONS[name].build(
        *(sp.Integer(a) if isinstance(a, int) else a for a in args)
    )
    # constant*x + x**2: a constant 0 must still leave a tensor to compare.
    printed = print_torch(constant * x + x**2)
    result = eval(printed, {"torch": torch, "math": math, "x": TX, "grad": TG})
    assert torch.allclose(result, value * TX + TX**2, rtol=1e-15, atol=0)


# Strictness -------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        sp.Integral(x, x),
        sp.DiracDelta(x),
        sp.besselj(0, x),
        sp.Derivative(sp.Function("f")(x), x),
        sp.Function("f")(x),
        sp.Mod(x, 2),
        sp.Max(x, y),
        sp.I * x,
        sp.oo,
        sp.nan,
        sp.zoo * x,
        sp.Piecewise((x, x > 0)),
        sp.exp(x) * sp.DiracDelta(x - 1),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unsupported_nodes_raise(expr):
    with pytest.raises(PrintError):
        print_torch(expr)


def test_unsupported_node_around_heaviside_raises_print_error():
    # SymPy's StrPrinter has a _print_Heaviside for its own class; fngen's step
    # must not pick it up, or str() and error messages crash.
    assert str(heaviside(x)).endswith("(x)")
    with pytest.raises(PrintError):
        print_torch(sp.Integral(heaviside(x), x))


# What the printed code computes -----------------------------------------------


def sample(*shape, low=0.5, high=2.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(
        *shape, dtype=torch.float64, generator=generator
    )


TX = sample(3, 4, seed=1)
TY = sample(3, 4, seed=2)
TG = sample(3, 4, low=-1, high=1, seed=3)
TZ = sample(4, 4, seed=4)
TW = sample(3, 3, seed=5)
TB = sample(4, seed=6)
TX[0, 0] = TY[0, 0]  # a tie for max/min
TX[0, 1] = 1.0  # on clamp's boundary


def evaluate(expr, **tensors):
    env = {"torch": torch, "math": math, "x": TX, "y": TY, "z": TZ, "w": TW, "b": TB}
    env["grad"] = TG
    env.update(tensors)
    return eval(print_torch(expr), env)  # generated code, not spec text


def max_grad_x(a, b, g):
    """PyTorch's own gradient of torch.maximum with respect to a."""
    a = a.clone().requires_grad_()
    torch.maximum(a, b).backward(g)
    return a.grad


def clamp_grad(a, g):
    a = a.clone().requires_grad_()
    torch.clamp(a, 0.8, 1.0).backward(g)
    return a.grad


@pytest.mark.parametrize(
    "expr, reference",
    [
        (sp.sqrt(x) + 1 / x + 2 * y**2, lambda: TX.sqrt() + 1 / TX + 2 * TY**2),
        (1 / sp.sqrt(x * y), lambda: torch.rsqrt(TX * TY)),
        ((x + y) ** sp.Rational(-3, 2), lambda: (TX + TY) ** -1.5),
        (x ** sp.Rational(1, 3), lambda: TX ** (1 / 3)),
        (sp.Rational(1, 2) ** x, lambda: 0.5**TX),
        (sp.pi * x / 3, lambda: math.pi * TX / 3),
        (sp.exp(-x) / (1 + sp.exp(-x)), lambda: torch.sigmoid(-TX)),
        (F.Softplus(x) + F.LogSigmoid(-x), lambda: torch.zeros_like(TX)),
        (
            F.Sigmoid(x).diff(x) * grad,
            lambda: TG * torch.sigmoid(TX) * (1 - torch.sigmoid(TX)),
        ),
        (F.Relu(x - 1).diff(x) * grad, lambda: torch.where(TX > 1, TG, 0.0)),
        (F.Maximum(x, y).diff(x) * grad, lambda: max_grad_x(TX, TY, TG)),
        (F.Clamp(x, 0.8, 1).diff(x) * grad, lambda: clamp_grad(TX, TG)),
        (F.Maximum(x, 1), lambda: torch.clamp(TX, min=1)),
        (F.Hypot(x, 2), lambda: torch.hypot(TX, torch.full_like(TX, 2))),
        (sp.atan2(1, x), lambda: torch.atan2(torch.ones_like(TX), TX)),
        (heaviside(x - 1) * x, lambda: torch.where(TX > 1, TX, 0.0)),
        (
            F.indicator(x > 1) * F.indicator(y > 1),
            lambda: ((TX > 1) & (TY > 1)).double(),
        ),
        (
            T.TensorSum(x * y, everything(-1), sp.true),
            lambda: (TX * TY).sum(-1, keepdim=True),
        ),
        (T.TensorMean(x, everything(0, 1), sp.false), lambda: TX.mean()),
        (w * T.TensorMatmul(x, T.TensorMT(y)), lambda: TW * (TX @ TY.mT)),
        (T.TensorMT(T.TensorMatmul(x, z)) - 1, lambda: (TX @ TZ).mT - 1),
        (-T.TensorMatmul(2 * x, z), lambda: -((2 * TX) @ TZ)),
        (T.SumToSize(grad * y, T.ShapeOf(b)), lambda: (TG * TY).sum(0)),
        (
            T.Unsqueeze(T.TensorSum(x, everything(0, -1), sp.false), everything(0, -1)),
            lambda: TX.sum(dim=(0, -1), keepdim=True),
        ),
    ],
)
def test_printed_code_computes_the_expression(expr, reference):
    expected = reference()
    result = evaluate(expr)
    assert result.shape == expected.shape
    assert torch.allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_piecewise_constant_takes_the_dtype_of_its_reference():
    result = evaluate(sp.Piecewise((2, x > 1), (0, True)), grad=TG.float())
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.where(TX > 1, 2.0, 0.0).float())


def test_a_where_of_tensors_is_selected_once_then_scaled():
    from fngen.functions import Piecewise

    g, d, delta = sp.symbols("g d delta", real=True)
    piece = Piecewise((d, delta > F.Abs(d)), (delta * F.Sign(d), True))
    printer = TorchPrinter(tensors={d})
    assert printer.doprint(g * piece) == (
        "g * torch.where(delta > torch.abs(d), d, delta*torch.sign(d))"
    )
    # Without a tensor in a branch, or with a 0 branch (that must stay 0
    # where g is inf), the product goes inside each branch.
    assert TorchPrinter().doprint(g * piece) == (
        "torch.where(delta > torch.abs(d), d*g, delta*g*torch.sign(d))"
    )
    zero = Piecewise((d, d > 0), (0, True))
    assert printer.doprint(g * zero) == "torch.where(d > 0, d*g, 0)"


# A sum with a product of tensors: torch.addcmul ---------------------------------

TENSORS = TorchPrinter(tensors={x, y, z, w, b})


@pytest.mark.parametrize(
    "expr, expected",
    [
        (b + w * x, "torch.addcmul(b, w, x)"),
        (b - w * x, "torch.addcmul(b, w, x, value=-1)"),
        (b + 3 * w * x, "torch.addcmul(b, w, x, value=3)"),
        # A fractional coefficient multiplies a factor (value= would be
        # truncated for integer tensors, where the formula is not).
        (b + w * x / 2, "torch.addcmul(b, w/2, x)"),
        (b + w * x * y, "torch.addcmul(b, w*x, y)"),
        # The whole coefficient first: value= spares a product as well.
        (
            x * y / 2 + 4 * w * z + b,
            "torch.addcmul(torch.addcmul(b, x/2, y), w, z, value=4)",
        ),
        # Not without two tensor factors, or with a Python number left over.
        (b + 2 * x, "b + 2*x"),
        (w * x + 1, "w*x + 1"),
        (w * x + grad, "grad + w*x"),
        # Shapes are numbers: x.shape[-1]*w is one tensor factor.
        (b + w * T.Numel(T.ShapeOf(x), sp.Tuple(-1)), "b + w*x.shape[-1]"),
    ],
)
def test_a_sum_with_a_product_of_tensors_is_one_addcmul(expr, expected):
    assert TENSORS.doprint(expr) == expected


@pytest.mark.parametrize(
    "expr, expected",
    [
        # A half power of a tensor name: a root and products, not pow.
        (x ** sp.Rational(3, 2), "x*torch.sqrt(x)"),
        (x ** sp.Rational(5, 2), "x**2*torch.sqrt(x)"),
        (x ** sp.Rational(-3, 2), "torch.rsqrt(x)/x"),
        (x ** sp.Rational(-5, 2), "torch.rsqrt(x)/x**2"),
        (y / x ** sp.Rational(3, 2), "y/(x*torch.sqrt(x))"),
        (2 * x ** sp.Rational(3, 2), "2*(x*torch.sqrt(x))"),
        (sp.Pow(x ** sp.Rational(3, 2), 2, evaluate=False), "(x*torch.sqrt(x))**2"),
        # Of a sum, which the product would compute twice: pow.
        ((x + y) ** sp.Rational(3, 2), "(x + y)**1.5"),
    ],
)
def test_a_half_power_of_a_tensor_is_a_root_and_products(expr, expected):
    assert TENSORS.doprint(expr) == expected
    values = {str(s): torch.rand(5, dtype=torch.float64) + 0.5 for s in (x, y)}
    printed = eval(TENSORS.doprint(expr), {"torch": torch}, values)  # test's own text
    wanted = sp.lambdify((x, y), expr, "math")
    expected_values = [
        wanted(float(a), float(b)) for a, b in zip(values["x"], values["y"])
    ]
    torch.testing.assert_close(
        printed, torch.tensor(expected_values, dtype=torch.float64)
    )


def test_addcmul_needs_no_parentheses():
    assert TENSORS.doprint(z * (b + w * x)) == "z*torch.addcmul(b, w, x)"
    mean = T.TensorMean(b + w * x, sp.Tuple(-1), sp.true)
    assert TENSORS.doprint(mean) == "torch.addcmul(b, w, x).mean(dim=-1, keepdim=True)"


def test_the_formula_as_written_keeps_its_sums():
    printer = TorchPrinter(tensors={b, w, x}, fused_arithmetic=False)
    assert printer.doprint(b + w * x) == "b + w*x"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_addcmul_computes_the_sum(dtype):
    values = {
        s: (torch.arange(12).reshape(3, 4) % 5 - 2).to(dtype) for s in (b, w, x, y)
    }
    values[b] = values[b][:1]  # broadcast from a row
    for expr in (b + w * x, b - 3 * w * x, b + w * x / 2, b + w * x * y):
        text = TENSORS.doprint(expr)
        got = eval(text, {"torch": torch}, {s.name: v for s, v in values.items()})
        want = eval(
            print_torch(expr), {"torch": torch}, {s.name: v for s, v in values.items()}
        )
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, equal_nan=True)


def test_a_where_of_numbers_takes_its_dtype_from_a_tensor():
    from fngen.functions import Piecewise

    piece = Piecewise((sp.Rational(8, 7), x > 0), (sp.Rational(1, 3), True))
    assert print_torch(piece) == "torch.where(x > 0, 8/7, grad.new_full((), 1/3))"
    # In float64 the values are float64's, not float32's 8/7 cast up.
    grad_t = torch.zeros(3, dtype=torch.float64)
    values = eval(
        print_torch(piece),
        {"torch": torch},
        {"x": torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64), "grad": grad_t},
    )
    assert values.dtype == torch.float64
    assert values.tolist() == [1 / 3, 1 / 3, 8 / 7]


def test_a_constant_where_in_a_float64_gradient_is_exact():
    import fngen
    from fngen.spec import parse_spec

    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = where(x > 0, 8*x/7, x/3) + x*x\n"
    )
    module = fngen.load(parse_spec(text, "f.yaml"))
    t = torch.linspace(-2, 2, 9, dtype=torch.float64).requires_grad_()
    (ours,) = torch.autograd.grad(module.f(t).sum(), t)
    (want,) = torch.autograd.grad(
        (torch.where(t > 0, 8 * t / 7, t / 3) + t * t).sum(), t
    )
    torch.testing.assert_close(ours, want, rtol=1e-15, atol=1e-15)


def test_under_compile_a_gradient_scales_each_branch():
    from fngen.functions import Piecewise

    g, d, delta = sp.symbols("g d delta", real=True)
    piece = Piecewise((d, delta > F.Abs(d)), (delta * F.Sign(d), True))
    eager = TorchPrinter(tensors={d})
    compiled = TorchPrinter(tensors={d}, select_then_scale=False)
    assert eager.doprint(g * piece) == (
        "g * torch.where(delta > torch.abs(d), d, delta*torch.sign(d))"
    )
    assert compiled.doprint(g * piece) == (
        "torch.where(delta > torch.abs(d), d*g, delta*g*torch.sign(d))"
    )


def test_a_negated_where_is_a_subtraction():
    x = sp.Symbol("x")
    where = F.Piecewise((x, x > 0), (1, True))
    assert print_torch(2 - where) == "2 - torch.where(x > 0, x, 1)"
    assert print_torch(-where) == "-torch.where(x > 0, x, 1)"


# A gradient selected by a threshold: relu's backward kernel ------------------


def test_a_gradient_selected_by_a_threshold_is_relus_backward():
    from fngen.functions import Piecewise

    printer = TorchPrinter(mask_safe={grad}, tensors={x})
    relu_piece = Piecewise((F.Relu(x), x > 0), (0, True))
    assert printer.doprint(2 * grad * relu_piece) == (
        "torch.ops.aten.threshold_backward(2*grad*torch.relu(x), x, 0)"
    )
    # u < c is -u > -c; c < u is u > c.
    assert printer.doprint(grad * Piecewise((x, x < 1), (0, True))) == (
        "torch.ops.aten.threshold_backward(grad*x, -x, -1)"
    )
    assert printer.doprint(grad * Piecewise((x, 1 < x), (0, True))) == (
        "torch.ops.aten.threshold_backward(grad*x, x, 1)"
    )
    # No gradient in it (a forward), >= (threshold_backward has no such
    # form), a threshold that is a tensor: a torch.where.
    assert printer.doprint(y * relu_piece) == "torch.where(x > 0, y*torch.relu(x), 0)"
    assert printer.doprint(grad * Piecewise((x, x >= 0), (0, True))).startswith(
        "torch.where(x >= 0"
    )
    assert printer.doprint(grad * Piecewise((x, x > y), (0, True))).startswith(
        "torch.where(x > y"
    )


def test_the_threshold_select_computes_the_where():
    """The printed threshold_backward selects as torch.where does, and stays
    0 where masked when the gradient is inf (as PyTorch's relu backward)."""
    from fngen.functions import Piecewise

    printer = TorchPrinter(mask_safe={grad}, tensors={x})
    X = torch.tensor([-2.0, -0.0, 0.0, 0.5, 1.0, 3.0])
    G = torch.tensor([1.0, float("inf"), 2.0, -1.0, float("inf"), 4.0])
    cases = [
        (Piecewise((F.Relu(x), x > 0), (0, True)), X > 0, torch.relu(X)),
        (Piecewise((x, x < 1), (0, True)), X < 1, X),
        (Piecewise((x + 1, 0.5 < x), (0, True)), X > 0.5, X + 1),
    ]
    for piece, condition, value in cases:
        text = printer.doprint(2 * grad * piece)
        assert text.startswith("torch.ops.aten.threshold_backward("), text
        got = eval(text, {"torch": torch, "x": X, "grad": G})  # printed code
        want = torch.where(condition, 2 * G * value, 0.0)
        torch.testing.assert_close(got, want, equal_nan=True)


def test_a_comparison_moves_one_number_across_as_one_writes_it():
    v, w, t = sp.symbols("v w t", real=True)
    # heaviside(v - threshold) reads v > threshold, whichever way SymPy
    # ordered it; for floats a - b > 0 exactly when a > b.
    assert print_torch(v - t > 0, scalars={t}) == "v > t"
    assert print_torch(sp.StrictLessThan(t - v, 0, evaluate=False), scalars={t}) == (
        "v > t"
    )
    assert print_torch(v - 1 >= 0) == "v >= 1"
    assert print_torch(2 * v - 3 <= 0) == "2*v <= 3"
    # Two terms moved would round otherwise; a tensor stays on its side.
    assert print_torch(v - t - 1 > 0, scalars={t}) == "v - t - 1 > 0"
    assert print_torch(v - w > 0) == "v - w > 0"


def test_a_where_of_counts_alone_takes_the_gradients_dtype():
    # 1/(2*x.numel()) is a Python float: a where of two of them would be
    # float32 in a float64 backward.
    x = sp.Symbol("x", real=True)
    count = T.Numel(T.ShapeOf(x), sp.Tuple())
    expr = sp.Piecewise((1 / (2 * count), x > 0), (0, True))
    text = print_torch(expr, dtype_of="grad")
    assert text == "torch.where(x > 0, 1 / (2*x.numel()), grad.new_full((), 0))"
