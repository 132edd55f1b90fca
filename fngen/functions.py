"""The pointwise functions a formula may call, as SymPy objects.

Smooth functions are SymPy's own (``exp``, ``sin``, ``erf`` ...).  Functions
whose derivative PyTorch defines by convention at a kink or a step get a class
of their own here, so that SymPy differentiates them the way PyTorch does:

* ``relu'(0) = 0``, ``abs'(0) = 0``, ``clamp`` passes the gradient on its
  closed interval, ties of ``max``/``min`` split the gradient in half;
* ``sign heaviside floor ceil round`` have a zero derivative everywhere
  (SymPy would produce a ``DiracDelta``, which has no torch counterpart).

Conditions are SymPy relationals and ``where`` is a ``Piecewise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.printing.precedence import PRECEDENCE
from sympy.codegen.cfunctions import expm1, log1p, log2, log10

ZERO = sp.Integer(0)
ONE = sp.Integer(1)
HALF = sp.Rational(1, 2)


class Piecewise(sp.Piecewise):
    """A Piecewise that never hands its conditions to SymPy to collapse.

    SymPy's collapsing recurses without end on some conditions, such as
    ``asinh(y) - x/7 < sin(1/sqrt(sin(y) + 2))``, when it builds the
    Piecewise and again on every substitution.  This one only drops the
    conditions SymPy has already decided to be False, and stops at one
    decided True.
    """

    @classmethod
    def eval(cls, *pairs):
        kept = []
        for value, condition in pairs:
            if condition is sp.false:
                continue
            if isinstance(condition, sp.core.relational.Relational):
                condition = condition.canonical  # y < x reads x > y
            kept.append((value, condition))
            if condition is sp.true:
                break
        if len(kept) == 1 and kept[0][1] is sp.true:
            return kept[0][0]
        if kept and kept[-1][1] is sp.true and len({v for v, _ in kept}) == 1:
            # where(x > 0, 0, 0), the derivative of a comparison: a zero.
            return kept[0][0]
        if kept != [tuple(pair) for pair in pairs]:
            # Built directly: through cls(...) this would run again.
            pairs = [ExprCondPair(value, condition) for value, condition in kept]
            return sp.Basic.__new__(cls, *pairs)
        return None


def has_zero_branch(piece: sp.Basic) -> bool:
    """Whether `piece`, a where, is 0 on some branch (a nested where's
    included): times a factor that is inf there, it must select that 0,
    not multiply by it (``0*inf`` is NaN)."""
    return isinstance(piece, sp.Piecewise) and any(
        getattr(value, "is_zero", False) or has_zero_branch(value)
        for value, _ in piece.args
    )


def indicator(condition: sp.Basic) -> sp.Expr:
    """1 where `condition` holds, else 0."""
    return Piecewise((ONE, condition), (ZERO, True))


class _StepLike(sp.Function):
    """A piecewise-constant function: its derivative is zero by convention."""

    nargs = 1

    def fdiff(self, argindex=1):
        return ZERO


class Sign(_StepLike):
    """``torch.sign``."""

    @classmethod
    def eval(cls, arg):
        # Known signs fold, so that sign(x**2 + 1) is the number 1.
        if arg.is_positive:
            return ONE
        if arg.is_negative:
            return -ONE
        if arg.is_zero:
            return ZERO
        return None


class HeavisideStep(_StepLike):
    """1 where the argument is > 0, else 0 (``heaviside(0) = 0``)."""

    @classmethod
    def eval(cls, arg):
        if arg.is_positive:
            return ONE
        if arg.is_nonpositive:
            return ZERO
        return None


class Floor(_StepLike):
    """``torch.floor``."""


class Ceil(_StepLike):
    """``torch.ceil``."""


class Round(_StepLike):
    """``torch.round`` (half to even)."""


class LogGamma(sp.loggamma):
    """``torch.lgamma``: SymPy's loggamma, never rewritten as log(gamma(z)).

    SymPy turns loggamma of a positive integer-valued argument, such as
    ``2 + where(x > 0, 1, 2)``, into ``log(gamma(...))``; torch has no gamma.
    """

    @classmethod
    def eval(cls, z):
        if z.is_number:
            return sp.loggamma(z)
        return None


class Abs(sp.Function):
    """``torch.abs``, with ``abs'(0) = 0`` like PyTorch."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        # A known sign folds (abs(exp(x)) is exp(x)), where sign(arg) is
        # the number Sign folds to, so the derivative is unchanged.
        sign = Sign(arg)
        return sign * arg if sign.is_number else None

    def fdiff(self, argindex=1):
        return Sign(self.args[0])


class Relu(sp.Function):
    """``torch.relu``, with ``relu'(0) = 0`` like PyTorch."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        # A number, as SymPy's piecewise folding makes of relu(where(...)).
        if arg.is_Number:
            return arg if arg > 0 else ZERO
        return None

    def fdiff(self, argindex=1):
        return indicator(self.args[0] > 0)


class Sigmoid(sp.Function):
    """``torch.sigmoid``; its derivative is written in terms of itself."""

    nargs = 1

    def fdiff(self, argindex=1):
        return SigmoidBackward(self)


class SigmoidBackward(sp.Function):
    """``s*(1 - s)`` of ``s = sigmoid(u)``: the derivative of sigmoid.

    Times a tensor it prints as ``torch.ops.aten.sigmoid_backward(t, s)``,
    PyTorch's own fused kernel (one pass instead of three)."""

    nargs = 1
    # Printed as a product: printers parenthesize it as one.
    precedence = PRECEDENCE["Mul"]

    @classmethod
    def eval(cls, s):
        if s.is_Number:
            return s * (1 - s)
        return None

    def fdiff(self, argindex=1):
        return 1 - 2 * self.args[0]

    def _sympystr(self, printer):
        # Also how TorchPrinter writes it alone, with nothing to scale.
        (s,) = self.args
        return f"{printer.parenthesize(s, PRECEDENCE['Mul'])}*({printer._print(1 - s)})"


class Tanh(sp.tanh):
    """``torch.tanh``: SymPy's tanh, with its derivative as `TanhBackward`."""

    def fdiff(self, argindex=1):
        return TanhBackward(self)

    def _eval_evalf(self, prec):
        # mpmath knows tanh by SymPy's class name, not by this one.
        return sp.tanh(self.args[0])._eval_evalf(prec)

    def _sympystr(self, printer):
        return f"tanh({printer.doprint(self.args[0])})"


class TanhBackward(sp.Function):
    """``1 - t**2`` of ``t = tanh(u)``: the derivative of tanh.

    Times a tensor it prints as ``torch.ops.aten.tanh_backward(g, t)``."""

    nargs = 1
    # Printed as a difference: printers parenthesize it as one.
    precedence = PRECEDENCE["Add"]

    @classmethod
    def eval(cls, t):
        if t.is_Number:
            return 1 - t**2
        return None

    def fdiff(self, argindex=1):
        return -2 * self.args[0]

    def _sympystr(self, printer):
        # Also how TorchPrinter writes it alone, with nothing to scale.
        return printer._print(1 - self.args[0] ** 2)


class Softplus(sp.Function):
    """``log(1 + exp(x))`` computed stably by ``torch.nn.functional.softplus``."""

    nargs = 1

    def fdiff(self, argindex=1):
        return SoftplusBackward(self.args[0])


class SoftplusBackward(sp.Function):
    """``sigmoid(u)``, the derivative of ``softplus(u)``.

    Times a tensor it prints as ``torch.ops.aten.softplus_backward(t, u,
    1.0, 20.0)``, the kernel of PyTorch's own softplus (exactly 1 past the
    threshold of 20, as ``torch.nn.functional.softplus`` is exactly u)."""

    nargs = 1

    @classmethod
    def eval(cls, u):
        if u.is_Number:
            return Sigmoid(u)
        return None

    def fdiff(self, argindex=1):
        return SigmoidBackward(Sigmoid(self.args[0]))

    def _sympystr(self, printer):
        # Also how TorchPrinter writes it alone, with nothing to scale.
        return printer._print(Sigmoid(self.args[0]))


class LogSigmoid(sp.Function):
    """``log(sigmoid(x))`` computed stably."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(-self.args[0])


class _Fused(sp.Function):
    """A composition of formula functions that PyTorch computes in one
    kernel.  `formula` is what it stands for: its value at numbers, its
    derivative, and how docstrings write it.  The first argument is the
    tensor; any other is a constant of the function (elu's alpha)."""

    nargs = 1
    precedence = PRECEDENCE["Mul"]

    @staticmethod
    def formula(u: sp.Expr, *constants: sp.Expr) -> sp.Expr:
        raise NotImplementedError

    @classmethod
    def eval(cls, u, *constants):
        if u.is_number:  # pi too: a constant is folded, never a kernel call
            return cls.formula(u, *constants)
        return None

    def _sympystr(self, printer):
        return printer._print(self.formula(*self.args))

    def fdiff(self, argindex=1):
        # The class that names this one in `of`: its derivative.
        return self.derivative(*self.args)


def _derivative_of(formula, u: sp.Expr, *constants: sp.Expr) -> sp.Expr:
    d = sp.Dummy("u", real=True)
    return sp.diff(formula(d, *constants), d).xreplace({d: u})


class _FusedDerivative(_Fused):
    """The derivative of a `_Fused` function in its first argument; times
    a tensor it prints as PyTorch's backward kernel of that function."""

    of: type[_Fused]
    precedence = PRECEDENCE["Add"]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.of.derivative = cls

    @classmethod
    def formula(cls, u, *constants):
        return _derivative_of(cls.of.formula, u, *constants)

    def fdiff(self, argindex=1):
        return _derivative_of(self.formula, *self.args)


class Silu(_Fused):
    """``u*sigmoid(u)``, ``torch.nn.functional.silu`` (swish)."""

    @staticmethod
    def formula(u):
        return u * Sigmoid(u)


class SiluBackward(_FusedDerivative):
    """silu'(u), ``torch.ops.aten.silu_backward`` times a tensor."""

    of = Silu


class Mish(_Fused):
    """``u*tanh(softplus(u))``, ``torch.nn.functional.mish``."""

    @staticmethod
    def formula(u):
        return u * Tanh(Softplus(u))


class MishBackward(_FusedDerivative):
    """mish'(u), ``torch.ops.aten.mish_backward`` times a tensor."""

    of = Mish


# GELU's constants, as ``torch.nn.functional.gelu`` has them.
GELU_TANH_SCALE = sp.sqrt(2 / sp.pi)
GELU_TANH_CUBIC = sp.Rational(44715, 1000000)


class Gelu(_Fused):
    """``u*(1 + erf(u/sqrt(2)))/2``, ``torch.nn.functional.gelu``."""

    @staticmethod
    def formula(u):
        return u * (1 + sp.erf(u / sp.sqrt(2))) / 2


class GeluBackward(_FusedDerivative):
    """gelu'(u), ``torch.ops.aten.gelu_backward`` times a tensor."""

    of = Gelu


class GeluTanh(_Fused):
    """``u*(1 + tanh(sqrt(2/pi)*(u + 0.044715*u**3)))/2``,
    ``torch.nn.functional.gelu(u, approximate="tanh")``."""

    @staticmethod
    def formula(u):
        return u * (1 + Tanh(GELU_TANH_SCALE * (u + GELU_TANH_CUBIC * u**3))) / 2


class GeluTanhBackward(_FusedDerivative):
    """The derivative of `GeluTanh`, ``torch.ops.aten.gelu_backward(...,
    approximate="tanh")`` times a tensor."""

    of = GeluTanh


class Elu(_Fused):
    """``where(u > 0, u, alpha*expm1(u))``, ``torch.nn.functional.elu(u,
    alpha)``: at 0 its derivative is alpha, as PyTorch's."""

    nargs = 2
    precedence = PRECEDENCE["Atom"]

    @staticmethod
    def formula(u, alpha):
        return Piecewise((u, u > 0), (alpha * expm1(u), True))


class EluBackward(_FusedDerivative):
    """The derivative of `Elu`, ``torch.ops.aten.elu_backward`` times a tensor."""

    of = Elu
    nargs = 2
    precedence = PRECEDENCE["Atom"]


class Hypot(sp.Function):
    """``sqrt(a**2 + b**2)`` without overflow, as ``torch.hypot``."""

    nargs = 2

    def fdiff(self, argindex=1):
        return self.args[argindex - 1] / self


class Maximum(sp.Function):
    """``torch.maximum``: ties split the gradient in half."""

    nargs = 2

    def fdiff(self, argindex=1):
        a, b = self.args if argindex == 1 else reversed(self.args)
        return Piecewise((ONE, a > b), (HALF, sp.Eq(a, b)), (ZERO, True))


class Minimum(sp.Function):
    """``torch.minimum``: ties split the gradient in half."""

    nargs = 2

    def fdiff(self, argindex=1):
        a, b = self.args if argindex == 1 else reversed(self.args)
        return Piecewise((ONE, a < b), (HALF, sp.Eq(a, b)), (ZERO, True))


class Clamp(sp.Function):
    """``torch.clamp(x, lo, hi)``: the gradient passes where ``lo <= x <= hi``."""

    nargs = 3

    def fdiff(self, argindex=1):
        x, lo, hi = self.args
        if argindex == 1:
            return indicator(sp.And(x >= lo, x <= hi))
        # As PyTorch's clamp_backward_min_max: when lo > hi the result is hi.
        if argindex == 2:
            return indicator(sp.And(x < lo, lo < hi))
        return indicator(sp.Or(x > hi, hi < lo))


@dataclass(frozen=True)
class FormulaFunction:
    """A function name a formula may call, with its arity and SymPy builder."""

    name: str
    arity: int | tuple[int, ...]  # the numbers of arguments it takes
    build: Callable[..., sp.Expr]

    @property
    def arities(self) -> tuple[int, ...]:
        return self.arity if isinstance(self.arity, tuple) else (self.arity,)


def _rsqrt(x):
    return 1 / sp.sqrt(x)


def _where(condition, a, b):
    return Piecewise((a, condition), (b, True))


# The activations PyTorch has one kernel for, by their written form: the
# forward becomes the fused function again (fuse.py), and the check
# compares with the formula as written.
def _silu(u):
    return u * Sigmoid(u)


def _mish(u):
    return u * Tanh(Softplus(u))


def _gelu(u):
    return u * (1 + sp.erf(u / sp.sqrt(2))) / 2


def _gelu_tanh(u):
    return u * (1 + Tanh(GELU_TANH_SCALE * (u + GELU_TANH_CUBIC * u**3))) / 2


def _heaviside(x, value=None):
    """``torch.heaviside(x, value)``: 1 above 0, 0 below, `value` at 0
    (0 when it is not given: fngen's heaviside has always been 0 at 0)."""
    if value is None or value == 0:
        return HeavisideStep(x)
    if value == 1:
        return indicator(x >= 0)
    return Piecewise((ONE, x > 0), (value, sp.Eq(x, 0)), (ZERO, True))


_BUILDERS: dict[str, tuple[int | tuple[int, ...], Callable[..., sp.Expr]]] = {
    "abs": (1, Abs),
    "sign": (1, Sign),
    "sqrt": (1, sp.sqrt),
    "rsqrt": (1, _rsqrt),
    "exp": (1, sp.exp),
    "expm1": (1, expm1),
    "log": (1, sp.log),
    "log2": (1, log2),
    "log10": (1, log10),
    "log1p": (1, log1p),
    "sin": (1, sp.sin),
    "cos": (1, sp.cos),
    "tan": (1, sp.tan),
    "asin": (1, sp.asin),
    "acos": (1, sp.acos),
    "atan": (1, sp.atan),
    "atan2": (2, sp.atan2),
    "sinh": (1, sp.sinh),
    "cosh": (1, sp.cosh),
    "tanh": (1, Tanh),
    "asinh": (1, sp.asinh),
    "acosh": (1, sp.acosh),
    "atanh": (1, sp.atanh),
    "sigmoid": (1, Sigmoid),
    "logsigmoid": (1, LogSigmoid),
    "softplus": (1, Softplus),
    "relu": (1, Relu),
    "silu": (1, _silu),
    "mish": (1, _mish),
    "gelu": (1, _gelu),
    "gelu_tanh": (1, _gelu_tanh),
    "erf": (1, sp.erf),
    "erfc": (1, sp.erfc),
    "erfinv": (1, sp.erfinv),
    "lgamma": (1, LogGamma),
    "digamma": (1, sp.digamma),
    "heaviside": ((1, 2), _heaviside),
    "floor": (1, Floor),
    "ceil": (1, Ceil),
    "round": (1, Round),
    "pow": (2, sp.Pow),
    "hypot": (2, Hypot),
    "min": (2, Minimum),
    "max": (2, Maximum),
    "clamp": (3, Clamp),
    "where": (3, _where),
}

POINTWISE_FUNCTIONS: dict[str, FormulaFunction] = {
    name: FormulaFunction(name, arity, build)
    for name, (arity, build) in _BUILDERS.items()
}

# fngen's own classes by the name a formula calls them, for docstrings.
FORMULA_NAMES: dict[type, str] = {
    build: name
    for name, (_, build) in _BUILDERS.items()
    if isinstance(build, type) and issubclass(build, sp.Function)
}


def _mp():
    import mpmath  # SymPy's own dependency

    return mpmath


def _round_half_even(v):
    mp = _mp()
    floor = mp.floor(v)
    diff = v - floor
    if diff > 0.5 or (diff == 0.5 and int(floor) % 2 == 1):
        return floor + 1
    return floor


# Numeric values of fngen's own functions at constant arguments (SymPy's own
# functions evaluate themselves), so that ``relu(1)`` folds to a number.
def _mp_sigmoid(v):
    return 1 / (1 + _mp().exp(-v))


NUMERIC = {
    Sign: lambda v: _mp().sign(v),
    HeavisideStep: lambda v: 1 if v > 0 else 0,
    Floor: lambda v: _mp().floor(v),
    Ceil: lambda v: _mp().ceil(v),
    Round: _round_half_even,
    Abs: lambda v: abs(v),
    Relu: lambda v: max(v, 0),
    Sigmoid: _mp_sigmoid,
    SigmoidBackward: lambda s: s * (1 - s),
    Tanh: lambda v: _mp().tanh(v),
    TanhBackward: lambda t: 1 - t**2,
    SoftplusBackward: _mp_sigmoid,
    Softplus: lambda v: _mp().log1p(_mp().exp(v)),
    LogSigmoid: lambda v: -_mp().log1p(_mp().exp(-v)),
    Hypot: lambda a, b: _mp().hypot(a, b),
    Maximum: lambda a, b: max(a, b),
    Minimum: lambda a, b: min(a, b),
    Clamp: lambda x, lo, hi: min(max(x, lo), hi),
}


# Constants are evaluated to 40 digits: bottom up, each function of values
# that carry enough digits for its result to be right to 40.  A large value
# needs more (sin(exp(1000)) needs exp(1000) to some 480 digits, not 40, or
# the sine is noise), so the working precision grows with the largest
# magnitude met, and a second evaluation at twice the digits must agree.
# A magnitude past 2**MAX_CONSTANT_BITS is refused before any function is
# applied to it: its digits alone would be too many (sin(exp(exp(exp(5))))
# had mpmath work at some 10**64 bits).  No float comes near (the largest
# is below 2**1024), and Python ints past it are refused by the parser.
MAX_CONSTANT_BITS = 4096
CONSTANT_DIGITS = 40


class ConstantTooLarge(ValueError):
    """A constant whose magnitude passes 2**MAX_CONSTANT_BITS, or that does
    not settle to 40 digits as the precision grows."""


def number_too_large(number: sp.Number) -> bool:
    """Whether the SymPy number's magnitude passes 2**MAX_CONSTANT_BITS."""
    if number.is_Rational:
        p, q = abs(int(number.p)), int(number.q)
        return p.bit_length() - q.bit_length() > MAX_CONSTANT_BITS
    if number.is_Float:
        _, man, exp, bc = number._mpf_
        return bool(man) and exp + bc > MAX_CONSTANT_BITS
    return False


def _evaluate(expr: sp.Expr, dps: int):
    """(value as an mpf or None, the largest magnitude in bits met), at
    `dps` digits; raises ConstantTooLarge past the bound."""
    mp = _mp()
    largest = [0]

    def bounded(value):
        if value is not None and mp.isfinite(value) and value:
            magnitude = mp.mag(value)
            if magnitude > MAX_CONSTANT_BITS:
                raise ConstantTooLarge(expr)
            largest[0] = max(largest[0], magnitude)
        return value

    def real(value):
        """A real SymPy number as an mpf (a sum that cancels is Integer 0)."""
        if value.is_Float:
            return mp.mpf(value._mpf_)
        if value.is_Rational:
            return mp.mpf(int(value.p)) / int(value.q)
        return None

    def evaluate(e):
        if e.is_Number:
            if number_too_large(e):
                raise ConstantTooLarge(expr)
            if e.is_Integer:
                return bounded(mp.mpf(int(e)))
            return bounded(mp.mpf(sp.Float(e, dps)._mpf_))
        if isinstance(e, sp.NumberSymbol) or not e.args:
            return bounded(real(sp.N(e, dps)))
        args = [evaluate(a) for a in e.args]
        if any(a is None for a in args):
            return None
        cls = type(e)
        if cls in NUMERIC:
            return bounded(mp.mpf(NUMERIC[cls](*args)))
        return bounded(real(sp.N(e.func(*[sp.Float(a, dps) for a in args]), dps)))

    try:
        with mp.workdps(dps):
            value = evaluate(expr)
    except ConstantTooLarge:
        raise
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None, largest[0]
    if value is None or not mp.isfinite(value):
        return None, largest[0]
    return value, largest[0]


def evaluate_constant(expr: sp.Expr) -> sp.Float | None:
    """The value of a constant expression as a 40-digit Float, or None when
    it has no finite real value (``log(0)``, ``asin(3)``); raises
    `ConstantTooLarge` when it, or a part of it, passes 2**MAX_CONSTANT_BITS
    or it does not settle to 40 digits."""
    mp = _mp()
    value, largest = _evaluate(expr, CONSTANT_DIGITS)
    if value is None:
        return None
    dps = CONSTANT_DIGITS + 10 + int(largest * 0.30103)
    for _ in range(3):
        low, _ = _evaluate(expr, dps)
        high, _ = _evaluate(expr, 2 * dps)
        if low is None or high is None:
            return None
        with mp.workdps(2 * dps):
            # Digits lost below the largest magnitude are noise: agreeing
            # to 2**-80 of the value, or both within the noise, is settled.
            noise = mp.mpf(2) ** (largest - int(dps * 3.3219) + 16)
            if abs(low - high) <= abs(high) * mp.mpf(2) ** -80:
                return sp.Float(high, CONSTANT_DIGITS)
            if abs(low) <= noise and abs(high) <= noise * 2 ** -(dps * 3):
                return sp.Float(0)
        dps *= 2
    raise ConstantTooLarge(expr)


def constant_value(expr: sp.Expr) -> sp.Float | None:
    """The value of a constant expression as a 40-digit Float, or None when
    it has no finite real value (``log(0)``, ``asin(3)``) or is too large
    to evaluate (see `evaluate_constant`)."""
    try:
        return evaluate_constant(expr)
    except ConstantTooLarge:
        return None
        cls = type(e)
        if cls in NUMERIC:
            return mp.mpf(NUMERIC[cls](*args))
        value = sp.N(e.func(*[sp.Float(a, 40) for a in args]), 40)
        return mp.mpf(value._mpf_) if value.is_Float else None

    try:
        with mp.workdps(40):
            value = evaluate(expr)
            if value is None or not mp.isfinite(value):
                return None
            return sp.Float(value, 40)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None
