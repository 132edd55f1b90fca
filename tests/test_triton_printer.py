"""Exact strings of `fngen.triton_printer.print_triton`, its strictness, and
that it covers every function the torch printer knows.  No Triton needed:
what the printed code computes is tests/test_kernels.py's."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from fngen import functions as F
from fngen import printer as torch_printer
from fngen import tensorops as T
from fngen.triton_printer import HELPERS, PrintError, TritonPrinter, print_triton

x, y, a, grad = sp.symbols("x y a grad", real=True)

SIGMOID = "1 / (1 + libdevice.exp(-x))"
NAN = "propagate_nan=tl.PropagateNan.ALL"


@pytest.mark.parametrize(
    "expr, expected",
    [
        # powers: products as torch.pow computes 2 and 3, roots, libdevice
        (x**2, "x * x"),
        (x**3, "x * x * x"),
        ((x + 1) ** 2, "(x + 1) * (x + 1)"),
        (y / x**2, "y / (x * x)"),
        ((x + 1) ** -2, "1 / ((x + 1) * (x + 1))"),
        (1 / x, "1 / x"),
        (-1 / x, "-1 / x"),
        (x / (a * y), "x / (a * y)"),
        ((-x - y) / a, "(-x - y) / a"),
        (sp.sqrt(x), "tl.sqrt(x)"),
        (1 / sp.sqrt(x + 1), "1 / tl.sqrt(x + 1)"),
        (y / sp.sqrt(x), "y / tl.sqrt(x)"),
        (x ** sp.Rational(3, 2), "x * tl.sqrt(x)"),
        (x ** sp.Rational(-3, 2), "1 / (x * tl.sqrt(x))"),
        (x**4, "libdevice.pow(x, 4.0)"),
        (x ** sp.Float(1.5), "libdevice.pow(x, 1.5)"),
        (x**y, "libdevice.pow(x, y)"),
        (x ** sp.Rational(1, 10), "libdevice.pow(x, tl.full((), 0.1, COMPUTE_DTYPE))"),
        (2**x, "libdevice.exp2(x)"),
        (sp.E**x, "libdevice.exp(x)"),
        # numbers: one literal, round-trip exact; constants evaluated
        (sp.Rational(5, 2) * x**3 - sp.Rational(3, 2) * x, "2.5 * x * x * x - 1.5 * x"),
        (3 * x**2, "3 * x * x"),
        (-x * y, "-x * y"),
        (x - 1, "x - 1"),
        (x + sp.Float(-1.5), "x - 1.5"),
        (x / 3, "0.3333333333333333 * x"),
        (sp.pi * x, "3.141592653589793 * x"),
        (sp.sqrt(2) * x / (2 * sp.sqrt(sp.pi)), "0.3989422804014327 * x"),
        (x * sp.exp(-(x**2) / 2), "x * libdevice.exp(-0.5 * x * x)"),
        (sp.Float(1e-300) * x, "1e-300 * x"),
        # functions
        (sp.exp(x), "libdevice.exp(x)"),
        (expm1(x), "libdevice.expm1(x)"),
        (sp.log(x), "tl.log(x)"),
        (log1p(x), "libdevice.log1p(x)"),
        (sp.sin(x), "tl.sin(x)"),
        (sp.tanh(x), "libdevice.tanh(x)"),
        (F.Tanh(x), "libdevice.tanh(x)"),
        (sp.erf(x), "tl.erf(x)"),
        (sp.erfinv(x), "libdevice.erfinv(x)"),
        (F.LogGamma(x), "libdevice.lgamma(x)"),
        (sp.loggamma(x), "libdevice.lgamma(x)"),
        (sp.digamma(x), "_digamma(x)"),
        (sp.polygamma(1, x), "_trigamma(x)"),
        (F.Abs(x), "tl.abs(x)"),
        (F.Floor(x), "tl.floor(x)"),
        (F.Round(x), "libdevice.rint(x)"),  # half to even, as torch.round
        (sp.atan2(y, x), "libdevice.atan2(y, x)"),
        (F.Hypot(x, 2), "libdevice.hypot(x, 2.0)"),
        (
            F.Hypot(x, sp.Rational(1, 10)),
            "libdevice.hypot(x, tl.full((), 0.1, COMPUTE_DTYPE))",
        ),
        # kinks and steps, with torch's values at 0 and NaN
        (F.Relu(x), "tl.where(x < 0, 0.0, x)"),
        (F.Sign(x), "tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))"),
        (F.HeavisideStep(x - a), "tl.where(-a + x > 0, 1.0, 0.0)"),
        (F.Maximum(x, 0), f"tl.maximum(x, 0, {NAN})"),
        (F.Minimum(x, y), f"tl.minimum(x, y, {NAN})"),
        (F.Clamp(x, -1, 1), f"tl.minimum(tl.maximum(x, -1, {NAN}), 1, {NAN})"),
        # stable forms, as PyTorch's kernels
        (F.Sigmoid(x), SIGMOID),
        (x * F.Sigmoid(x), "x / (1 + libdevice.exp(-x))"),
        (F.Sigmoid(x) ** 2, f"({SIGMOID}) * ({SIGMOID})"),
        (F.SigmoidBackward(y), "y * (1 - y)"),
        (F.SigmoidBackward(F.Sigmoid(x)), f"(1 - {SIGMOID}) / (1 + libdevice.exp(-x))"),
        (F.TanhBackward(y), "1 - y * y"),
        (F.Softplus(x), "tl.where(x > 20.0, x, libdevice.log1p(libdevice.exp(x)))"),
        (F.SoftplusBackward(x), f"tl.where(x > 20.0, 1.0, {SIGMOID})"),
        (
            F.LogSigmoid(x),
            "tl.minimum(x, 0.0) - libdevice.log1p(libdevice.exp(-tl.abs(x)))",
        ),
        (
            x - F.LogSigmoid(x),
            "x - (tl.minimum(x, 0.0) - libdevice.log1p(libdevice.exp(-tl.abs(x))))",
        ),
        # fused functions: their formulas
        (F.Silu(x), "x / (1 + libdevice.exp(-x))"),
        (F.Elu(x, 1), "tl.where(x > 0, x, libdevice.expm1(x))"),
        (F.Gelu(x), "0.5 * x * (tl.erf(0.7071067811865476 * x) + 1)"),
        (
            F.GeluTanh(x),
            "0.5 * x * (libdevice.tanh(0.7978845608028654 * (0.044715 * x * x * x + x)) + 1)",
        ),
        # where selects; a 0 branch multiplies inside, so it stays 0
        (grad * F.indicator(x > 0), "tl.where(x > 0, grad, 0.0)"),
        (
            grad * F.Piecewise((a, x < 0), (a / 2 + sp.S.Half, sp.Eq(x, 0)), (1, True)),
            "grad * tl.where(x < 0, a, tl.where(x == 0, 0.5 * a + 0.5, 1.0))",
        ),
        (
            grad * F.Piecewise((1, x > 0), (sp.exp(x), True)),
            "grad * tl.where(x > 0, 1.0, libdevice.exp(x))",
        ),
        (
            F.Piecewise((x, x > 0), (expm1(x), True)),
            "tl.where(x > 0, x, libdevice.expm1(x))",
        ),
        (F.indicator(sp.And(x > -1, x < 1)), "tl.where((x > -1) & (x < 1), 1.0, 0.0)"),
        (F.indicator(sp.Or(x > 1, x < -1)), "tl.where((x > 1) | (x < -1), 1.0, 0.0)"),
        (
            F.Piecewise((sp.Rational(1, 10), x > 0), (sp.Float(0.3), True)),
            "tl.where(x > 0, 0.1, tl.full((), 0.3, COMPUTE_DTYPE))",
        ),
        (F.Piecewise((sp.S.Half, x > 0), (2, True)), "tl.where(x > 0, 0.5, 2.0)"),
        (sp.logic.boolalg.ITE(x > 0, x, y), "tl.where(x > 0, x, y)"),
        # conditions
        (sp.Eq(x, y), "x == y"),
        (sp.Ne(x, y), "x != y"),
        (x > -1, "x > -1"),
        (sp.Not(x > y), "x <= y"),
        (x + 1 > y * 2, "x + 1 > 2 * y"),
    ],
)
def test_prints(expr, expected):
    assert print_triton(expr) == expected


def test_names_rename_symbols():
    assert TritonPrinter({x: "x_"}).doprint(x * y) == "x_ * y"


def test_the_compute_dtype_is_named():
    piece = F.Piecewise((sp.Rational(1, 10), x > 0), (sp.Float(0.3), True))
    assert (
        print_triton(piece, compute_dtype="DT")
        == "tl.where(x > 0, 0.1, tl.full((), 0.3, DT))"
    )


def test_helpers_are_recorded():
    printer = TritonPrinter()
    printer.doprint(sp.digamma(x) + sp.polygamma(1, x))
    assert printer.helpers == {"_digamma", "_trigamma"}
    assert set(HELPERS) == {"_digamma", "_trigamma"}


@pytest.mark.parametrize(
    "expr",
    [
        T.TensorSum(x, sp.Tuple(), False),
        T.TensorMatmul(x, y),
        T.SumToSize(x, T.ShapeOf(y)),
        sp.polygamma(2, x),
        sp.gamma(x),
        sp.Function("mystery")(x),
        sp.zoo * x,
        sp.oo,
        F.Piecewise((x, x > 0)),  # no default branch
    ],
    ids=str,
)
def test_a_node_with_no_rule_raises(expr):
    with pytest.raises(PrintError):
        print_triton(expr)


# Every class the torch printer has a rule for, with the arguments it takes.
TORCH_CLASSES = [
    *torch_printer.TORCH_FUNCTIONS,
    *torch_printer.TORCH_BINARY,
    *torch_printer.FUSED_BACKWARD,
    F.Clamp,
    F.HeavisideStep,
    F.GeluTanh,
    F.Elu,
]


@pytest.mark.parametrize("cls", TORCH_CLASSES, ids=lambda c: c.__name__)
def test_covers_what_the_torch_printer_prints(cls):
    arity = {F.Clamp: 3, F.Elu: 2, F.EluBackward: 2}.get(cls)
    if arity is None:
        arity = 2 if cls in torch_printer.TORCH_BINARY else 1
    args = [x, y, a][:arity]
    if cls in (F.Elu, F.EluBackward):
        args = [x, sp.Float(1.5)]
    assert print_triton(cls(*args))


@pytest.mark.parametrize("name", sorted(F.POINTWISE_FUNCTIONS))
def test_covers_the_formula_language(name):
    function = F.POINTWISE_FUNCTIONS[name]
    args = [x, y, a][: max(function.arities)]
    if name == "where":
        args = [x > 0, y, a]
    expr = function.build(*args)
    assert print_triton(expr)
    for arg in args[:2]:
        if isinstance(arg, sp.Symbol):
            assert print_triton(sp.diff(expr, arg)) is not None
