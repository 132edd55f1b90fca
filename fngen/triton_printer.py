"""Print SymPy expressions as Triton code, for the body of a pointwise kernel.

The sibling of `fngen.printer.TorchPrinter`, in the same manner: a
declarative table of functions, a ``_print_<Class>`` method per node that
needs one, and strictness: a node with no rule raises `PrintError` at
generation time (the function then keeps its torch code), never wrong code.
Floats round-trip exactly.

What it prints runs on values already loaded into registers, in the kernel's
compute dtype (float32, or float64 for float64 tensors):

* ``tl.*`` where Triton's own function is as accurate as CUDA's math library
  (``tl.log``, ``tl.sin``, ``tl.erf``: they lower to libdevice) or exact
  (``tl.abs``, ``tl.floor``); ``libdevice.*`` for the rest, and for ``exp``,
  whose ``tl.exp`` is the unreduced ``ex2.approx`` (dozens of ulps at
  |x| ~ 80), where PyTorch's kernels call ``expf``.
* PyTorch's stable forms: softplus with its threshold of 20, logsigmoid as
  ``min(x, 0) - log1p(exp(-|x|))``, sigmoid as ``1 / (1 + exp(-x))`` (0 and
  1 at the ends, never NaN).
* A ``where`` (``Piecewise``) selects with ``tl.where``; a product with a
  ``where`` that has a 0 branch multiplies inside the branches, so that the
  0 stays 0 where the other factor is inf or NaN (PyTorch's convention for
  masked gradients, ``threshold_backward``), and an untaken branch that
  overflows cannot make a NaN.
* ``max``, ``min``, ``clamp`` and ``relu`` propagate NaN, as torch's do.
"""

from __future__ import annotations

import math

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p, log2, log10
from sympy.printing.str import StrPrinter

from fngen import functions as F
from fngen import tensorops as T
from fngen.functions import constant_value


class PrintError(Exception):
    """An expression has no Triton translation: the function keeps its torch
    code (a limit of the kernel printer, not an error in the spec)."""


TRITON_FUNCTIONS: dict[type, str] = {
    sp.exp: "libdevice.exp",
    expm1: "libdevice.expm1",
    sp.log: "tl.log",
    log1p: "libdevice.log1p",
    log2: "libdevice.log2",
    log10: "libdevice.log10",
    sp.sin: "tl.sin",
    sp.cos: "tl.cos",
    sp.tan: "libdevice.tan",
    sp.asin: "libdevice.asin",
    sp.acos: "libdevice.acos",
    sp.atan: "libdevice.atan",
    sp.sinh: "libdevice.sinh",
    sp.cosh: "libdevice.cosh",
    sp.tanh: "libdevice.tanh",
    F.Tanh: "libdevice.tanh",
    sp.asinh: "libdevice.asinh",
    sp.acosh: "libdevice.acosh",
    sp.atanh: "libdevice.atanh",
    sp.erf: "tl.erf",
    sp.erfc: "libdevice.erfc",
    sp.erfinv: "libdevice.erfinv",
    F.LogGamma: "libdevice.lgamma",
    sp.loggamma: "libdevice.lgamma",
    F.Abs: "tl.abs",
    F.Floor: "tl.floor",
    F.Ceil: "tl.ceil",
    # torch.round rounds half to even, as rint does (libdevice's round
    # rounds half away from zero).
    F.Round: "libdevice.rint",
}

TRITON_BINARY: dict[type, str] = {
    sp.atan2: "libdevice.atan2",
    F.Hypot: "libdevice.hypot",
}

# ``tl.maximum``'s default lets either operand win over a NaN (fmaxf).
PROPAGATE_NAN = "propagate_nan=tl.PropagateNan.ALL"

_RELATIONS = {
    sp.StrictLessThan: "<",
    sp.LessThan: "<=",
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: ">=",
    sp.Equality: "==",
    sp.Unequality: "!=",
}

PI = repr(math.pi)

# Functions with no Triton or libdevice counterpart, as @triton.jit helpers
# of the kernel module, computed as PyTorch computes them (calc_digamma and
# calc_trigamma of ATen's Math.h).  The printer records the ones it calls.
HELPERS: dict[str, str] = {
    "_digamma": f'''\
@triton.jit
def _digamma(x):
    """digamma(x) as PyTorch computes it: reflected below 0, pushed up to
    10 by the recurrence digamma(x) = digamma(x + 1) - 1/x, then the
    asymptotic series."""
    reflected = x < 0
    pole = x == libdevice.trunc(x)
    reflection = {PI} / libdevice.tan({PI} * (x - libdevice.trunc(x)))
    z = tl.where(reflected, 1 - x, x)
    result = tl.where(reflected, -reflection, 0.0)
    for _ in tl.static_range(10):
        small = z < 10
        result = tl.where(small, result - 1 / z, result)
        z = tl.where(small, z + 1, z)
    w = 1 / (z * z)
    series = w * (
        0.08333333333333333
        + w
        * (
            -0.008333333333333333
            + w
            * (
                0.003968253968253968
                + w
                * (
                    -0.004166666666666667
                    + w
                    * (
                        0.007575757575757576
                        + w * (-0.021092796092796094 + w * 0.08333333333333333)
                    )
                )
            )
        )
    )
    series = tl.where(z < 1.0e17, series, 0.0)
    result = tl.where(
        z == 10, result + 2.251752589066721, result + tl.log(z) - 0.5 / z - series
    )
    result = tl.where(x == 0, tl.where(x < 0, 1.0, -1.0) * float("inf"), result)
    return tl.where(reflected & pole, float("nan"), result)
''',
    "_trigamma": f'''\
@triton.jit
def _trigamma(x):
    """polygamma(1, x) as PyTorch computes it: reflected below 1/2, pushed
    up by six steps of the recurrence, then the asymptotic series."""
    reflected = x < 0.5
    sin_pi_x = tl.sin({PI} * x)
    result = tl.where(reflected, -{repr(math.pi**2)} / (sin_pi_x * sin_pi_x), 0.0)
    z = tl.where(reflected, 1 - x, x)
    for _ in tl.static_range(6):
        result = result + 1 / (z * z)
        z = z + 1
    w = 1 / (z * z)
    result = result + (
        1 + 1 / (2 * z) + w * (1 / 6 - w * (1 / 30 - w * (1 / 42)))
    ) / z
    return tl.where(reflected, -result, result)
''',
}


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def _exact_in_float32(value: float) -> bool:
    import struct

    try:
        return struct.unpack("f", struct.pack("f", value))[0] == value
    except OverflowError:
        return False


_ALLOWED = (
    sp.Symbol,
    sp.Number,
    sp.NumberSymbol,
    sp.Add,
    sp.Mul,
    sp.Pow,
    sp.Piecewise,
    sp.core.relational.Relational,
    sp.And,
    sp.Or,
    sp.Not,
    sp.logic.boolalg.ITE,
    sp.polygamma,
    F.Relu,
    F.Sign,
    F.HeavisideStep,
    F.Maximum,
    F.Minimum,
    F.Clamp,
    F.Sigmoid,
    F.SigmoidBackward,
    F.TanhBackward,
    F.Softplus,
    F.SoftplusBackward,
    F.LogSigmoid,
    F._Fused,
    *TRITON_FUNCTIONS,
    *TRITON_BINARY,
)


class TritonPrinter(StrPrinter):
    """Prints an expression as Triton code in a kernel's body.

    `names` renames symbols (a formula name that a kernel reserves, such as
    ``mask``); `compute_dtype` is the name of the kernel's compute dtype,
    which a ``where`` of numbers alone takes (Triton would give it float32).
    After printing, `helpers` holds the `HELPERS` the code calls.
    """

    printmethod = "_tritoncode"

    def __init__(self, names=None, compute_dtype: str = "COMPUTE_DTYPE"):
        super().__init__()
        self.names = dict(names or {})
        self.compute_dtype = compute_dtype
        self.helpers: set[str] = set()

    def _print(self, expr, **kwargs):
        if isinstance(expr, sp.logic.boolalg.BooleanAtom):
            return "True" if expr else "False"
        if isinstance(expr, sp.Basic) and not isinstance(expr, sp.Tuple):
            if isinstance(expr, T.TensorOp) or not isinstance(expr, _ALLOWED):
                raise PrintError(
                    f"no Triton translation for {type(expr).__name__}: {expr}"
                )
            if (
                expr.is_number
                and not isinstance(expr, (sp.Number, sp.NumberSymbol))
                and not expr.is_Relational
            ):
                return self._print_constant(expr)
            # SymPy's printers dispatch on the class's own name only, not on
            # a base class of another name (fngen's Tanh is a tanh, Mish a
            # _Fused): by the table, and the fused functions by their base.
            if type(expr) in TRITON_FUNCTIONS or type(expr) in TRITON_BINARY:
                return self._print_Function(expr)
            if isinstance(expr, F._Fused):
                return self._print__Fused(expr)
        return super()._print(expr, **kwargs)

    # -- atoms ------------------------------------------------------------

    def _print_Symbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_constant(self, expr):
        # Evaluated well past double precision: one rounding, in float().
        value = constant_value(expr)
        if value is None:
            raise PrintError(f"constant {expr} is not a finite real number")
        return self._print_float(float(value))

    def _print_float(self, value: float) -> str:
        if not math.isfinite(value):
            raise PrintError(f"constant {value} is out of the float range")
        return repr(value)

    def _print_Float(self, expr):
        return self._print_float(float(expr))

    def _print_Rational(self, expr):
        # A float literal, one rounding: Triton computes in floats anyway.
        return self._print_float(float(expr))

    def _print_Integer(self, expr):
        if abs(int(expr)) > 2**53:
            return self._print_float(float(expr))
        return str(int(expr))

    def _print_NumberSymbol(self, expr):
        return self._print_constant(expr)

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol
    _print_EulerGamma = _print_NumberSymbol
    _print_Catalan = _print_NumberSymbol
    _print_GoldenRatio = _print_NumberSymbol

    def _print_Infinity(self, expr):
        raise PrintError("infinity in a formula")

    _print_NegativeInfinity = _print_Infinity
    _print_ComplexInfinity = _print_Infinity
    _print_NaN = _print_Infinity

    # -- arithmetic -------------------------------------------------------
    #
    # Parentheses are decided on the printed text (see `_level`), not on the
    # SymPy node: x**2 prints as ``x * x`` and sigmoid as ``1 / (1 + ...)``,
    # which bind as a product, whatever their node.

    def _wrap(self, expr, level: int) -> str:
        """`expr` printed, in parentheses unless it binds at least as
        tightly as `level`."""
        text = self._print(expr)
        return text if _level(text) >= level else f"({text})"

    def _factor(self, expr, alone: bool = False) -> str:
        """`expr` as a factor of a product: a quotient in parentheses too,
        x * (1 / y) rather than x * 1 / y, unless it is the only one."""
        text = self._wrap(expr, _PRODUCT)
        if not alone and _level(text) == _PRODUCT and " / " in _outside(text):
            return f"({text})"
        return text

    def _print_Add(self, expr, order=None):
        terms = []
        for term in self._as_ordered_terms(expr, order=order):
            text = self._print(term)
            sign = "+"
            if text.startswith("-"):
                sign, text = "-", text[1:]
            if _level(text) < _SUM:
                text = f"({text})"
            terms += [sign, text]
        sign = terms.pop(0)
        return ("-" if sign == "-" else "") + " ".join(terms)

    def _print_Mul(self, expr):
        pieces = [f for f in expr.args if isinstance(f, sp.Piecewise)]
        if pieces and any(value.is_zero for value, _ in pieces[0].args):
            # A 0 branch stays 0 where the other factors are inf or NaN:
            # multiply inside the branches, then select.
            piece = pieces[0]
            rest = sp.Mul(*[f for f in expr.args if f is not piece])
            branches = [(rest * value, condition) for value, condition in piece.args]
            return self._print_Piecewise(sp.Piecewise(*branches, evaluate=False))
        numbers = [f for f in expr.args if f.is_number]
        others = [f for f in expr.as_ordered_factors() if not f.is_number]
        coefficient = sp.Mul(*numbers)
        value = constant_value(coefficient)
        if value is None:
            raise PrintError(f"constant {coefficient} is not a finite real number")
        sign = "-" if value < 0 else ""
        numerator, denominator = [], []
        if abs(float(value)) != 1.0:
            # One literal, one multiply: 2.5 * x, not 5 * x / 2.
            magnitude = abs(coefficient) if coefficient.is_Integer else abs(value)
            numerator.append(self._print(sp.sympify(magnitude)))
        for factor in others:
            base, exponent = factor.as_base_exp()
            if factor.is_Pow and exponent.is_Number and exponent.is_negative:
                power = sp.Pow(base, -exponent, evaluate=False)
                denominator.append(base if exponent == -1 else power)
            elif isinstance(factor, F.Sigmoid) and len(others) > 1:
                # x / (1 + exp(-x)), not x * (1 / (1 + exp(-x))).
                denominator.append(1 + sp.exp(-factor.args[0]))
            else:
                numerator.append(factor)
        alone = len(numerator) == 1 and not denominator
        text = " * ".join(
            item if isinstance(item, str) else self._factor(item, alone)
            for item in numerator
        )
        if denominator:
            divisor = " * ".join(self._factor(f) for f in denominator)
            if _level(divisor) < _UNARY:
                divisor = f"({divisor})"
            text = f"{text or 1} / {divisor}"
        return f"{sign}{text}"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if base == sp.E:
            return f"libdevice.exp({self._print(exponent)})"
        if exponent == sp.S.Half:
            return f"tl.sqrt({self._print(base)})"
        if exponent == -sp.S.Half:
            # Not tl.rsqrt: that is rsqrt.approx in float64 too.
            return f"1 / tl.sqrt({self._print(base)})"
        if exponent.is_Number and exponent.is_negative:
            power = base if exponent == -1 else sp.Pow(base, -exponent, evaluate=False)
            divisor = self._print(power)
            if _level(divisor) < _UNARY:
                divisor = f"({divisor})"
            return f"1 / {divisor}"
        if exponent in (2, 3):
            # As torch.pow does for these exponents: products, exact.
            factor = self._wrap(base, _ATOM)
            return " * ".join([factor] * int(exponent))
        if exponent == sp.Rational(3, 2):
            return f"{self._wrap(base, _ATOM)} * tl.sqrt({self._print(base)})"
        if base == 2:
            return f"libdevice.exp2({self._print(exponent)})"
        # powf of an integer-valued exponent is exact for a negative base
        # too, as torch.pow is.
        return f"libdevice.pow({self._argument(base)}, {self._argument(exponent)})"

    def _argument(self, expr) -> str:
        """An argument of a libdevice function of several: Triton makes a
        Python number there a float32 tensor before it meets the others,
        so a number that float32 does not hold is made in the compute
        dtype (0.1 in a float64 kernel)."""
        if not expr.is_number:
            return self._print(expr)
        value = constant_value(expr)
        if value is None:
            raise PrintError(f"constant {expr} is not a finite real number")
        text = self._print_float(float(value))
        if _exact_in_float32(float(value)):
            return text
        return f"tl.full((), {text}, {self.compute_dtype})"

    # -- functions --------------------------------------------------------

    def _print_Function(self, expr):
        cls = type(expr)
        if cls in TRITON_FUNCTIONS:
            return f"{TRITON_FUNCTIONS[cls]}({self._print(expr.args[0])})"
        if cls in TRITON_BINARY:
            a, b = (self._argument(arg) for arg in expr.args)
            return f"{TRITON_BINARY[cls]}({a}, {b})"
        raise PrintError(f"no Triton translation for function {cls.__name__}")

    _print_atan2 = _print_Function

    def _print_Relu(self, expr):
        # relu(nan) is nan, and relu(-0.0) is -0.0, as torch.relu's.
        (u,) = expr.args
        text = self._print(u)
        return f"tl.where({text} < 0, 0.0, {text})"

    def _print_Sign(self, expr):
        # torch.sign: 0 at 0 and at NaN.
        text = self._print(expr.args[0])
        return f"tl.where({text} > 0, 1.0, tl.where({text} < 0, -1.0, 0.0))"

    def _print_HeavisideStep(self, expr):
        return f"tl.where({self._print(expr.args[0])} > 0, 1.0, 0.0)"

    def _print_Maximum(self, expr):
        a, b = (self._print(arg) for arg in expr.args)
        return f"tl.maximum({a}, {b}, {PROPAGATE_NAN})"

    def _print_Minimum(self, expr):
        a, b = (self._print(arg) for arg in expr.args)
        return f"tl.minimum({a}, {b}, {PROPAGATE_NAN})"

    def _print_Clamp(self, expr):
        # torch.clamp: max first, then min, so that lo > hi gives hi.
        x, lo, hi = (self._print(arg) for arg in expr.args)
        return (
            f"tl.minimum(tl.maximum({x}, {lo}, {PROPAGATE_NAN}), {hi}, {PROPAGATE_NAN})"
        )

    def _print_Sigmoid(self, expr):
        return f"1 / (1 + libdevice.exp({self._print(-expr.args[0])}))"

    def _print_SigmoidBackward(self, expr):
        (s,) = expr.args
        return self._print(s * (1 - s))

    def _print_TanhBackward(self, expr):
        return self._print(1 - expr.args[0] ** 2)

    def _print_Softplus(self, expr):
        # torch.nn.functional.softplus: u itself past the threshold of 20.
        u = self._print(expr.args[0])
        return f"tl.where({u} > 20.0, {u}, libdevice.log1p(libdevice.exp({u})))"

    def _print_SoftplusBackward(self, expr):
        # aten.softplus_backward: exactly 1 past the threshold of 20.
        (u,) = expr.args
        text = self._print(u)
        return f"tl.where({text} > 20.0, 1.0, {self._print_Sigmoid(F.Sigmoid(u))})"

    def _print_LogSigmoid(self, expr):
        # PyTorch's log_sigmoid: min(u, 0) - log1p(exp(-|u|)).
        u = self._print(expr.args[0])
        return f"tl.minimum({u}, 0.0) - libdevice.log1p(libdevice.exp(-tl.abs({u})))"

    def _print__Fused(self, expr):
        # silu, mish, gelu, elu and their derivatives: the formula they stand
        # for, which this printer computes in one pass anyway.
        return self._print(type(expr).formula(*expr.args))

    def _print_polygamma(self, expr):
        order, x = expr.args
        if order not in (0, 1):
            raise PrintError(f"no Triton translation for polygamma({order}, x)")
        name = "_digamma" if order == 0 else "_trigamma"
        self.helpers.add(name)
        return f"{name}({self._print(x)})"

    # -- conditions -------------------------------------------------------

    def _print_Relational(self, expr):
        op = _RELATIONS[type(expr)]
        return f"{self._wrap(expr.lhs, _SUM)} {op} {self._wrap(expr.rhs, _SUM)}"

    def _print_And(self, expr):
        return " & ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Not(self, expr):
        return f"~({self._print(expr.args[0])})"

    def _print_ITE(self, expr):
        condition, a, b = expr.args
        return self._print_Piecewise(sp.Piecewise((a, condition), (b, True)))

    def _print_Guarded(self, expr):
        # stable.Guarded, a where SymPy does not take powers into.
        return self._print_Piecewise(expr)

    def _print_Piecewise(self, expr):
        branches = list(expr.args)
        if branches[-1][1] != sp.true:
            raise PrintError("a Piecewise without a default branch")
        values = [value for value, _ in branches]
        if all(value.is_number for value in values):
            # Floats, not ints: the result is a float tensor.
            numbers = [constant_value(value) for value in values]
            if any(number is None for number in numbers):
                raise PrintError(f"a where of {values}: not finite real numbers")
            texts = [self._print_float(float(number)) for number in numbers]
            if not all(_exact_in_float32(float(number)) for number in numbers):
                # tl.where of Python floats alone computes in float32: the
                # default in the compute dtype makes the others follow it.
                texts[-1] = f"tl.full((), {texts[-1]}, {self.compute_dtype})"
        else:
            texts = [
                (
                    self._print_float(float(value))
                    if value.is_Integer
                    else self._print(value)
                )
                for value in values
            ]
        text = texts[-1]
        for (_, condition), value in zip(reversed(branches[:-1]), reversed(texts[:-1])):
            text = f"tl.where({self._print(condition)}, {value}, {text})"
        return text


# How tightly printed code binds, by its loosest operator outside
# parentheses (Python's precedence).
_COMPARISON, _OR, _AND, _SUM, _PRODUCT, _UNARY, _ATOM = range(7)
_BINARY = {
    "<": _COMPARISON,
    "<=": _COMPARISON,
    ">": _COMPARISON,
    ">=": _COMPARISON,
    "==": _COMPARISON,
    "!=": _COMPARISON,
    "|": _OR,
    "&": _AND,
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
}


def _outside(text: str) -> str:
    """`text` without what is inside its parentheses and brackets."""
    outside, depth = [], 0
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0:
            outside.append(char)
    return "".join(outside)


def _level(text: str) -> int:
    """The precedence of printed code: this printer writes every binary
    operator between spaces and a unary one without, so the words outside
    parentheses tell them apart."""
    levels = [_BINARY[word] for word in _outside(text).split(" ") if word in _BINARY]
    if levels:
        return min(levels)
    return _UNARY if text[:1] in ("-", "~") else _ATOM


def print_triton(expr: sp.Expr, **options) -> str:
    return TritonPrinter(**options).doprint(expr)
