"""Print SymPy expressions as torch source code.

One printer class in the manner of SymPy's own code printers: a declarative
table of functions, a ``_print_<Class>`` method per node that needs one, and
strictness: a node with no rule raises `PrintError` at generation time rather
than producing wrong code.  Floats round-trip exactly.
"""

from __future__ import annotations

import ast
import functools
import math

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p, log2, log10
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.str import StrPrinter

from fngen import functions as F
from fngen.functions import constant_value
from fngen import tensorops as T


class PrintError(Exception):
    """An expression has no torch translation (a bug in fngen, not in the spec)."""


# Python's operator precedence, loosest first (the table of the language
# reference): where an operand goes in parentheses is decided by these and
# by the text the operand printed as, never by SymPy's notion of the node.
(
    _IF,
    _OR,
    _AND,
    _NOT,
    _COMPARE,
    _BITOR,
    _BITXOR,
    _BITAND,
    _SHIFT,
    _ADD,
    _MUL,
    _UNARY,
    _POW,
    _AWAIT,
    _POSTFIX,
    _ATOM,
) = range(1, 17)
_BINARY_LEVELS = {
    ast.BitOr: _BITOR,
    ast.BitXor: _BITXOR,
    ast.BitAnd: _BITAND,
    ast.LShift: _SHIFT,
    ast.RShift: _SHIFT,
    ast.Add: _ADD,
    ast.Sub: _ADD,
    ast.Mult: _MUL,
    ast.MatMult: _MUL,
    ast.Div: _MUL,
    ast.FloorDiv: _MUL,
    ast.Mod: _MUL,
    ast.Pow: _POW,
}
# SymPy's precedence levels (what its printers pass to `parenthesize`) as
# Python's.
_FROM_SYMPY = sorted(
    [
        (PRECEDENCE["Lambda"], _IF),
        (PRECEDENCE["Or"], _BITOR),
        (PRECEDENCE["And"], _BITAND),
        (PRECEDENCE["Relational"], _COMPARE),
        (PRECEDENCE["Add"], _ADD),
        (PRECEDENCE["Mul"], _MUL),
        (PRECEDENCE["Pow"], _POW),
        (PRECEDENCE["Func"], _POSTFIX),
        (PRECEDENCE["Not"], _UNARY),
        (PRECEDENCE["Atom"], _ATOM),
    ]
)


def _python_level_of(sympy_level: int) -> int:
    level = _IF
    for bound, python in _FROM_SYMPY:
        if sympy_level >= bound:
            level = python
    return level


def _enclosed(text: str) -> bool:
    """Whether `text` is one parenthesised group, ``(...)``."""
    if not text.startswith("("):
        return False
    depth = 0
    for n, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return n == len(text) - 1
    return False


@functools.lru_cache(maxsize=8192)
def python_level(text: str) -> int:
    """The precedence of the outermost operation of the Python expression
    `text` (`_ATOM` for a name, a literal or a parenthesised group)."""
    if _enclosed(text):
        return _ATOM
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise PrintError(f"printed code is not a Python expression: {text}") from None
    if isinstance(node, ast.Lambda):
        return 0
    if isinstance(node, ast.IfExp):
        return _IF
    if isinstance(node, ast.BoolOp):
        return _OR if isinstance(node.op, ast.Or) else _AND
    if isinstance(node, ast.UnaryOp):
        return _NOT if isinstance(node.op, ast.Not) else _UNARY
    if isinstance(node, ast.Compare):
        return _COMPARE
    if isinstance(node, ast.BinOp):
        return _BINARY_LEVELS[type(node.op)]
    if isinstance(node, ast.Await):
        return _AWAIT
    if isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        return _POSTFIX
    return _ATOM


def operand(text: str, level: int, right: bool) -> str:
    """`text` as an operand of an operator of Python precedence `level`, on
    its `right` (or left), in parentheses where Python would otherwise read
    it differently: ``a @ (a * b)``, ``(x**y)**z``, ``-(a + b)``.  Binary
    operators group left to right, so an operand on the right of the same
    precedence needs them; ``**`` groups right to left."""
    own = python_level(text)
    if level == _POW:
        # (x**y)**z and (-x)**2 need them; x**-y does not.
        needed = own <= _POW if not right else own < _UNARY
    elif level == _UNARY:
        needed = own < _UNARY
    elif level == _COMPARE:
        needed = own <= _COMPARE  # a < b < c is a chained comparison
    else:
        needed = own < level or (right and own == level)
    return f"({text})" if needed else text


TORCH_FUNCTIONS: dict[type, str] = {
    sp.exp: "torch.exp",
    expm1: "torch.expm1",
    sp.log: "torch.log",
    log1p: "torch.log1p",
    log2: "torch.log2",
    log10: "torch.log10",
    sp.sin: "torch.sin",
    sp.cos: "torch.cos",
    sp.tan: "torch.tan",
    sp.asin: "torch.asin",
    sp.acos: "torch.acos",
    sp.atan: "torch.atan",
    sp.sinh: "torch.sinh",
    sp.cosh: "torch.cosh",
    sp.tanh: "torch.tanh",
    F.Tanh: "torch.tanh",
    sp.asinh: "torch.asinh",
    sp.acosh: "torch.acosh",
    sp.atanh: "torch.atanh",
    sp.erf: "torch.erf",
    sp.erfc: "torch.erfc",
    sp.erfinv: "torch.erfinv",
    F.LogGamma: "torch.lgamma",
    sp.loggamma: "torch.lgamma",
    F.Abs: "torch.abs",
    F.Sign: "torch.sign",
    F.Floor: "torch.floor",
    F.Ceil: "torch.ceil",
    F.Round: "torch.round",
    F.Relu: "torch.relu",
    F.Sigmoid: "torch.sigmoid",
    F.Softplus: "torch.nn.functional.softplus",
    F.LogSigmoid: "torch.nn.functional.logsigmoid",
    F.Silu: "torch.nn.functional.silu",
    F.Mish: "_mish",
    F.Gelu: "torch.nn.functional.gelu",
}

# Functions of Python numbers only (a float input, ``sqrt(d)``): torch's
# take tensors, so the math module's, or builtins, where they exist; the
# others run on the number as a 0-dim float64 tensor (``_scalar_tensor``).
MATH_FUNCTIONS: dict[type, str] = {
    sp.exp: "math.exp",
    expm1: "math.expm1",
    sp.log: "math.log",
    log1p: "math.log1p",
    log2: "math.log2",
    log10: "math.log10",
    sp.sin: "math.sin",
    sp.cos: "math.cos",
    sp.tan: "math.tan",
    sp.asin: "math.asin",
    sp.acos: "math.acos",
    sp.atan: "math.atan",
    sp.sinh: "math.sinh",
    sp.cosh: "math.cosh",
    sp.tanh: "math.tanh",
    F.Tanh: "math.tanh",
    sp.asinh: "math.asinh",
    sp.acosh: "math.acosh",
    sp.atanh: "math.atanh",
    sp.erf: "math.erf",
    sp.erfc: "math.erfc",
    F.LogGamma: "math.lgamma",
    sp.loggamma: "math.lgamma",
    F.Abs: "abs",
    F.Floor: "math.floor",
    F.Ceil: "math.ceil",
}
MATH_BINARY: dict[type, str] = {
    sp.atan2: "math.atan2",
    F.Hypot: "math.hypot",
    F.Maximum: "max",
    F.Minimum: "min",
}

# What prints as Python arithmetic when its arguments are numbers: a
# conditional expression for where, builtins min and max for clamp.
_MATH_PRINTABLE = (
    *MATH_FUNCTIONS,
    *MATH_BINARY,
    F.Clamp,
    F.HeavisideStep,
)

# Functions of two tensors: torch wants tensors on both sides.
TORCH_BINARY: dict[type, str] = {
    sp.atan2: "torch.atan2",
    F.Hypot: "torch.hypot",
    F.Maximum: "torch.maximum",
    F.Minimum: "torch.minimum",
}

_RELATIONS = {
    sp.StrictLessThan: "<",
    sp.LessThan: "<=",
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: ">=",
    sp.Equality: "==",
    sp.Unequality: "!=",
}

_FLIPPED = {
    sp.StrictLessThan: sp.StrictGreaterThan,
    sp.LessThan: sp.GreaterThan,
    sp.StrictGreaterThan: sp.StrictLessThan,
    sp.GreaterThan: sp.LessThan,
    sp.Equality: sp.Equality,
    sp.Unequality: sp.Unequality,
}


def _prints_a_number(printer, expr: sp.Basic) -> bool:
    """Whether `expr` prints as a Python number: a number, math on float
    inputs, or of counts and sizes (``1/(2*x.numel())``, ``x.shape[-1]``)."""
    ops = expr.atoms(T.TensorOp)
    if any(not isinstance(op, T.SCALAR_OPS) for op in ops):
        return False
    masked = expr.xreplace({op: sp.Integer(2) for op in ops})  # a count
    return bool(masked.is_number) or printer.is_math(masked)


def _one_side(expr: sp.Basic, is_number) -> tuple[sp.Expr, type, sp.Expr]:
    """(lhs, relation, rhs) of a comparison as one writes it: ``v >
    threshold`` for ``threshold - v < 0`` (heaviside(v - threshold)).  Only
    one term moves across, a number or a Python number (`is_number`), and
    the sides swap where the tensor side would read negated: for floats
    ``a - b > 0`` exactly when ``a > b``, so the comparison is the same."""
    lhs, rhs, relation = expr.lhs, expr.rhs, type(expr)
    if rhs == 0 and isinstance(lhs, sp.Add):
        moved = [t for t in lhs.args if is_number(t)]
        if len(moved) == 1 and len(lhs.args) > 1:
            lhs, rhs = lhs - moved[0], -moved[0]
            if lhs.could_extract_minus_sign():
                lhs, rhs, relation = -lhs, -rhs, _FLIPPED[relation]
    return lhs, relation, rhs


# Derivatives printed as PyTorch's fused kernel when they scale a tensor:
# class -> the call, with {t} the tensor and {0}, {1} the derivative's args.
FUSED_BACKWARD = {
    F.SigmoidBackward: "torch.ops.aten.sigmoid_backward({t}, {0})",
    F.TanhBackward: "torch.ops.aten.tanh_backward({t}, {0})",
    F.SoftplusBackward: "torch.ops.aten.softplus_backward({t}, {0}, 1.0, 20.0)",
    F.GeluBackward: "torch.ops.aten.gelu_backward({t}, {0})",
    F.GeluTanhBackward: 'torch.ops.aten.gelu_backward({t}, {0}, approximate="tanh")',
    F.EluBackward: "torch.ops.aten.elu_backward({t}, {1}, 1, 1, False, {0})",
    # Kernels with no derivative of their own: a helper of the generated
    # module calls them, or composed ops when the backward is differentiated.
    F.SiluBackward: "_silu_backward({t}, {0})",
    F.MishBackward: "_mish_backward({t}, {0})",
}


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
    F.HeavisideStep,
    F.Clamp,
    F.GeluTanh,
    F.Elu,
    *FUSED_BACKWARD,
    T.TensorOp,
    *TORCH_FUNCTIONS,
    *TORCH_BINARY,
)


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def _half_power(printer, base, exponent) -> str | None:
    """``u**(k + 1/2)`` of a tensor as ``u**k * torch.sqrt(u)``, and
    ``u**-(k + 1/2)`` as ``torch.rsqrt(u) / u**k``: a root and products,
    where torch's pow of a float exponent costs five times as much on a
    CPU (24 against 5 ms for 4M floats).  Past the root alone, only of a
    name, which the product reads twice."""
    if not (exponent.is_Rational and exponent.q == 2):
        return None
    k = (abs(exponent.p) - 1) // 2
    if k and not (base.is_Symbol and printer.is_tensor(base)):
        return None
    text = printer._print(base)
    if exponent > 0:
        root = f"torch.sqrt({text})"
        return f"{printer._print(base**k)}*{root}" if k else root
    root = f"torch.rsqrt({text})"
    return f"{root}/{printer._print(base**k)}" if k else root


class TorchPrinter(StrPrinter):
    """Prints an expression as a torch expression.

    `names` renames symbols (``alpha`` -> ``ctx.alpha``); `shape_names`
    gives the expression for the shape of a tensor that is not at hand
    (``ctx.x_shape``); `dtype_of` is a tensor whose dtype a constant-valued
    ``torch.where`` takes.
    """

    printmethod = "_torchcode"

    def __init__(
        self,
        names=None,
        shape_names=None,
        dtype_of="grad",
        mask_safe=frozenset(),
        tensors=frozenset(),
        scalars=frozenset(),
        fused_arithmetic=True,
        select_then_scale=True,
    ):
        super().__init__()
        self.names = dict(names or {})
        self.shape_names = dict(shape_names or {})
        self.dtype_of = dtype_of
        # Symbols (incoming gradients, tangents) that may be multiplied by a
        # mask instead of selected by torch.where.
        self.mask_safe = frozenset(mask_safe)
        # Symbols known to be tensors (not Python numbers): a torch.where
        # with one of them in a branch takes its dtype from it.
        self.tensors = frozenset(tensors) | self.mask_safe
        # Symbols known to be Python numbers (float, int, bool inputs, and
        # what is computed from them alone by the math module).
        self.scalars = frozenset(scalars)
        # ``a + u*v`` as ``torch.addcmul(a, u, v)``: one pass and one new
        # tensor, not two (off for the formula as written, the benchmark's
        # baseline).
        self.fused_arithmetic = fused_arithmetic
        # g*where(c, d, e) as one select then one multiply (eager: fewer
        # passes), or as where(c, g*d, g*e) (under torch.compile: the
        # partitioner then saves d, not the select, and the forward computes
        # it in the loop it already makes; huber_loss 4.3 -> 2.6 ms).
        self.select_then_scale = select_then_scale
        self.uses_math = False
        # The module's helper functions the printed code calls.
        self.helpers: set[str] = set()

    def doprint(self, expr):
        return super().doprint(expr)

    def statements(self, assignments) -> list[tuple[sp.Symbol, str]]:
        """Each (target, value) printed, in order; each target is known
        from then on as what its value is (a tensor, or a Python number: a
        number run through a torch function is a 0-dim tensor)."""
        printed = []
        for target, expr in assignments:
            printed.append((target, self.doprint(expr)))
            if self.is_tensor(expr) or self.is_scalar(expr):
                if not self.is_math(expr):
                    self.tensors |= {target}
                else:
                    self.scalars |= {target}
        return printed

    def _print(self, expr, **kwargs):
        if isinstance(expr, sp.Basic) and not isinstance(
            expr, (sp.Tuple, sp.logic.boolalg.BooleanAtom)
        ):
            if not isinstance(expr, _ALLOWED):
                raise PrintError(
                    f"no torch translation for {type(expr).__name__}: {expr}"
                )
            if (
                expr.is_number
                and not isinstance(expr, (sp.Number, sp.NumberSymbol))
                and not expr.is_Relational
            ):
                return self._print_constant(expr)
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
        return repr(value)  # (-0.5)**x: `parenthesize` adds what is needed

    def _print_Float(self, expr):
        return self._print_float(float(expr))

    def _print_Rational(self, expr):
        p, q = int(expr.p), int(expr.q)
        if max(abs(p), q) > 2**53 or _is_power_of_ten(q) or len(repr(float(expr))) <= 6:
            return self._print_float(float(expr))  # 1.5, 0.25, 1e-05: exact and short
        return f"{p}/{q}"

    def _print_Integer(self, expr):
        if abs(int(expr)) > 2**53:
            return self._print_float(float(expr))
        return str(int(expr))

    def _print_Pi(self, expr):
        self.uses_math = True
        return "math.pi"

    def _print_Exp1(self, expr):
        self.uses_math = True
        return "math.e"

    def _print_NumberSymbol(self, expr):
        return self._print_constant(expr)

    _print_EulerGamma = _print_NumberSymbol
    _print_Catalan = _print_NumberSymbol
    _print_GoldenRatio = _print_NumberSymbol

    def _print_Infinity(self, expr):
        raise PrintError("infinity in a formula")

    _print_NegativeInfinity = _print_Infinity
    _print_ComplexInfinity = _print_Infinity
    _print_NaN = _print_Infinity

    # -- arithmetic -------------------------------------------------------

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent in (sp.S.Half, -sp.S.Half) and self.is_math(base):
            self.uses_math = True
            root = f"math.sqrt({self._print(base)})"
            return root if exponent == sp.S.Half else f"1 / {root}"
        half = _half_power(self, base, exponent)
        if half is not None:
            return half
        level = precedence(expr)
        if exponent.is_Number and exponent.is_negative:
            positive = (
                base if exponent == -1 else sp.Pow(base, -exponent, evaluate=False)
            )
            return self._reciprocal(positive)
        if exponent.is_Rational and not exponent.is_Integer and self.is_math(base):
            # Python's ** of a negative float to 1.5 is a complex number.
            self.uses_math = True
            power = self._print_float(float(exponent))
            return f"math.pow({self._print(base)}, {power})"
        if exponent.is_Rational and not exponent.is_Integer:
            power = self._print_float(float(exponent))
        else:
            power = self.parenthesize(exponent, level, strict=True, right=True)
        return f"{self.parenthesize(base, level, strict=True)}**{power}"

    def _reciprocal(self, expr: sp.Expr) -> str:
        """``1 / expr``: of a tensor ``torch.reciprocal(expr)``, as the
        legacy ONNX exporter cannot export ``1 / x`` (``Tensor.__rtruediv__``
        traced inside a Function); of a Python number, Python's division."""
        if self.is_number_valued(expr):
            return f"1 / {operand(self._print(expr), _MUL, right=True)}"
        return f"torch.reciprocal({self._print(expr)})"

    def is_number_valued(self, expr: sp.Basic) -> bool:
        """Whether `expr` is a Python number: a constant, arithmetic on
        numbers (`is_math`), or on sizes of tensors (``1 / x.shape[-1]``)."""
        values = expr.replace(
            lambda e: isinstance(e, T.SCALAR_OPS), lambda e: sp.Integer(1)
        )
        return values.is_number or self.is_math(values)

    def is_tensor(self, expr: sp.Basic) -> bool:
        """Whether `expr` is surely a tensor, not a Python number: it reads
        a known tensor's values (not only its shape)."""
        if not self.tensors:
            return False
        values = expr.replace(
            lambda e: isinstance(e, T.SCALAR_OPS), lambda e: sp.Integer(1)
        )
        return bool(values.free_symbols & self.tensors)

    def is_scalar(self, expr: sp.Basic) -> bool:
        """Whether `expr` reads Python numbers only (``sqrt(d)`` for a float
        input d), which torch's functions do not take."""
        return bool(expr.free_symbols) and self.reads_no_tensor(expr)

    def reads_no_tensor(self, expr: sp.Basic) -> bool:
        """Whether `expr` surely reads no tensor (every name in it a known
        number, or none): a Python value, or a 0-dim tensor of one."""
        return expr.free_symbols <= self.scalars and not expr.atoms(T.TensorOp)

    def is_math(self, expr: sp.Basic) -> bool:
        """Whether `expr` is printed as Python arithmetic on numbers alone
        (the math module, builtins), its value a number: no tensor in it."""
        return self.is_scalar(expr) and self._math_only(expr)

    def _math_only(self, expr: sp.Basic) -> bool:
        return not any(
            isinstance(sub, sp.Function)
            and type(sub) not in _MATH_PRINTABLE
            and not isinstance(sub, sp.Piecewise)  # fngen's indicator too
            for sub in sp.preorder_traversal(expr)
        )

    def _scalar_tensor(self, expr: sp.Expr) -> str:
        """A number as a 0-dim float64 tensor for a torch function: the
        result takes the tensors' dtype and device where it meets them."""
        text = self._print(expr)
        if not (self.is_math(expr) or expr.is_number):
            return text  # already a tensor
        return f"torch.as_tensor({text}, dtype=torch.float64)"

    def _addcmul(self, expr: sp.Add) -> str | None:
        """``rest + c*u*v`` as ``torch.addcmul(rest, u, v, value=c)``, with
        rest and both factors tensors; c a whole number (with integer
        tensors a fractional one would be truncated, where ``c*u*v`` is
        not), any other coefficient multiplying u."""
        if not self.fused_arithmetic:
            return None
        candidates = []
        for term in self._as_ordered_terms(expr, order=None):
            if not isinstance(term, sp.Mul):
                continue
            tensors = [f for f in term.args if self.is_tensor(f)]
            if len(tensors) < 2:
                continue
            rest = expr - term  # a new sum of the other terms: only now
            if not self.is_tensor(rest):
                continue
            value = sp.Mul(*[f for f in term.args if f not in tensors])
            folded = not value.is_Integer
            if folded:
                value, tensors = sp.Integer(1), [value * tensors[0], *tensors[1:]]
            # A whole coefficient first: value= spares a product as well.
            candidates.append((folded, rest, value, tensors))
        if not candidates:
            return None
        _, rest, value, tensors = min(candidates, key=lambda c: c[0])
        args = [
            self._print(rest),
            self._print(sp.Mul(*tensors[:-1])),
            self._print(tensors[-1]),
        ]
        if value != 1:
            args.append(f"value={self._print(value)}")
        return f"torch.addcmul({', '.join(args)})"

    def _print_Add(self, expr, order=None):
        # As SymPy's, but a negative constant term reads ``- 1.5``, not
        # ``+ (-1.5)``: constants print in parentheses when negative.
        fused = self._addcmul(expr)
        if fused is not None:
            return fused
        terms = []
        ordered = self._as_ordered_terms(expr, order=order)
        # The terms that read positive first, as one writes ``x - mu``
        # (SymPy's order gives ``-mu + x``); otherwise SymPy's order.
        ordered = sorted(ordered, key=lambda term: term.could_extract_minus_sign())
        for term in ordered:
            text = self._print(term)
            if term.is_number and text.startswith("(-") and text.endswith(")"):
                text = text[1:-1]
            sign = "+"
            if text.startswith("-") and not term.is_Add:
                sign, text = "-", text[1:]
            if (
                precedence(term) < precedence(expr)
                or term.is_Add
                or python_level(text) <= _ADD
            ):
                text = f"({text})"
            terms += [sign, text]
        sign = terms.pop(0)
        return ("-" if sign == "-" else "") + " ".join(terms)

    def _print_Mul(self, expr):
        pieces = [f for f in expr.args if isinstance(f, sp.Piecewise)]
        if pieces:
            piece = pieces[0]
            rest = sp.Mul(*[f for f in expr.args if f is not piece])
            if rest == -1 and len(pieces) == 1:
                # A negated where: ``2 - torch.where(...)``, not
                # ``2 + (-1) * torch.where(...)``.
                return f"-{self._print_Piecewise(piece)}"
            mask = self._mask(piece)
            # Only a tensor the mask may scale: a gradient or a tangent.  A
            # bare constant would give the mask the default dtype, not x's.
            by_gradient = (
                bool(rest.free_symbols) and rest.free_symbols <= self.mask_safe
            )
            selected = self._threshold_select(rest, piece)
            if selected is not None:
                return selected
            if mask is not None and by_gradient:
                # A constant step times the incoming gradient: a multiply by
                # a mask, several times faster than torch.where on CPU.
                return f"{self.parenthesize(rest, PRECEDENCE['Mul'])} * {mask}"
            values = [value for value, _ in piece.args]
            if (
                self.select_then_scale
                and not F.has_zero_branch(piece)
                and any(v.free_symbols & self.tensors for v in values)
            ):
                # A tensor branch gives the dtype: one select, then one
                # multiply, the same values as multiplying in each branch.
                where = self._print_Piecewise(piece)
                return f"{self.parenthesize(rest, PRECEDENCE['Mul'])} * {where}"
            # A 0 branch must stay 0 where `rest` is inf or nan, and numbers
            # (or Python scalars) need `rest` for their dtype: multiply inside.
            branches = [(rest * value, condition) for value, condition in piece.args]
            return self._print_Piecewise(sp.Piecewise(*branches, evaluate=False))
        backward = next((f for f in expr.args if type(f) in FUSED_BACKWARD), None)
        if backward is not None:
            rest = sp.Mul(*[f for f in expr.args if f is not backward])
            if not rest.is_number and not self.reads_no_tensor(rest):
                # PyTorch's fused backward kernel of the function, on any
                # tensor (a gradient, a tangent, or x*grad for swish).
                call = FUSED_BACKWARD[type(backward)]
                if call.startswith("_"):
                    self.helpers.add(call.split("(")[0])
                args = [self._print(arg) for arg in backward.args]
                return call.format(*args, t=self._print(rest))
        numbers = [f for f in expr.args if f.is_number]
        others = [f for f in expr.args if not f.is_number]
        if numbers and others:
            coefficient = sp.Mul(*numbers)
            simple = coefficient.is_Rational and (
                coefficient.is_Integer or abs(coefficient.p) == 1
            )
            simple |= isinstance(coefficient, sp.NumberSymbol)  # math.pi*x reads best
            if not simple:
                # One literal, one kernel: 2.5*x**3 rather than 5*x**3/2.
                value = constant_value(coefficient)
                if value is None:
                    raise PrintError(
                        f"constant {coefficient} is not a finite real number"
                    )
                value = float(value)
                body = self.parenthesize(sp.Mul(*others), PRECEDENCE["Mul"])
                sign = "-" if value < 0 else ""
                return f"{sign}{self._print_float(abs(value))}*{body}"
        denominator = _denominator_only(expr)
        if denominator is not None:
            sign, positive = denominator
            return sign + self._reciprocal(positive)
        return super()._print_Mul(expr)

    def _threshold_select(self, rest: sp.Expr, piece: sp.Piecewise) -> str | None:
        """``rest * where(u > c, v, 0)`` as relu's backward kernel,
        ``threshold_backward(rest * v, u, c)`` (``u < c`` as ``-u > -c``),
        where ``rest * v`` carries a gradient or a tangent: one fused pass,
        and 0 where masked even if the gradient is not finite, as PyTorch's
        relu backward gives.  On a CPU, torch.where with a bool mask takes
        about seven times as long (4M floats, one thread)."""
        if len(piece.args) != 2 or piece.args[1] != (0, sp.true):
            return None
        (value, condition), _ = piece.args
        selected = rest * value
        if not selected.free_symbols & self.mask_safe:
            return None
        if not isinstance(condition, (sp.StrictGreaterThan, sp.StrictLessThan)):
            return None
        high, low = condition.lhs, condition.rhs  # high > low
        if isinstance(condition, sp.StrictLessThan):
            high, low = low, high
        if high.is_number and not low.is_number:
            high, low = -low, -high  # c > u: -u > -c
        if not low.is_number or high.is_number or constant_value(low) is None:
            return None
        return (
            f"torch.ops.aten.threshold_backward({self._print(selected)},"
            f" {self._print(high)}, {self._print(low)})"
        )

    def _mask(self, piece: sp.Piecewise) -> str | None:
        """A two-valued constant Piecewise as arithmetic on a bool mask."""
        if len(piece.args) != 2 or not all(v.is_number for v, _ in piece.args):
            return None
        if self.reads_no_tensor(piece.args[0][1]):
            return None  # no tensor mask: see _print_Piecewise
        (high, condition), (low, _) = piece.args
        test = f"({self._print(condition)})"
        if (high, low) == (1, 0):
            return test
        if (high, low) == (0, 1):
            return f"(~{test})"
        return None

    # -- functions --------------------------------------------------------

    def _print_Function(self, expr):
        cls = type(expr)
        if cls in FUSED_BACKWARD:
            # Alone, with nothing to scale: the plain math, as docstrings read it.
            return expr._sympystr(self)
        if cls in MATH_FUNCTIONS and self.is_math(expr):
            name = MATH_FUNCTIONS[cls]
            self.uses_math |= name.startswith("math.")
            return f"{name}({self._print(expr.args[0])})"
        if cls in TORCH_FUNCTIONS:
            name = TORCH_FUNCTIONS[cls]
            if name.startswith("_"):
                self.helpers.add(name)  # a function of the generated module
            return f"{name}({self._argument(expr, expr.args[0])})"
        if cls in TORCH_BINARY:
            return self._print_binary(expr)
        raise PrintError(f"no torch translation for function {cls.__name__}")

    def _print_binary(self, expr):
        a, b = expr.args
        cls = type(expr)
        if self.is_math(expr):
            name = MATH_BINARY[cls]
            self.uses_math |= name.startswith("math.")
            return f"{name}({self._print(a)}, {self._print(b)})"
        if self.is_scalar(expr):
            return f"{TORCH_BINARY[cls]}({self._scalar_tensor(a)}, {self._scalar_tensor(b)})"
        a_number = a.is_number or self.is_math(a)
        b_number = b.is_number or self.is_math(b)
        if cls in (F.Maximum, F.Minimum) and (a_number or b_number):
            tensor, bound = (b, a) if a_number else (a, b)
            side = "min" if cls is F.Maximum else "max"
            return f"torch.clamp({self._print(tensor)}, {side}={self._print(bound)})"
        if a_number or b_number:
            tensor = b if a_number else a
            like = self._print(tensor)
            a_text = (
                f"torch.full_like({like}, {self._print(a)})"
                if a_number
                else self._print(a)
            )
            b_text = (
                f"torch.full_like({like}, {self._print(b)})"
                if b_number
                else self._print(b)
            )
            return f"{TORCH_BINARY[cls]}({a_text}, {b_text})"
        return f"{TORCH_BINARY[cls]}({self._print(a)}, {self._print(b)})"

    _print_atan2 = _print_binary

    def _print_Clamp(self, expr):
        x, lo, hi = expr.args
        x_text = self._print(x)
        if self.is_math(expr) or (self.is_math(x) and lo.is_number and hi.is_number):
            return f"min(max({x_text}, {self._print(lo)}), {self._print(hi)})"
        if x.is_number or self.is_math(x):
            # torch.clamp takes its input as a tensor: a bound's, filled.
            like = self._print(lo if not lo.is_number else hi)
            x_text = f"torch.full_like({like}, {x_text})"
        lo_text, hi_text = self._print(lo), self._print(hi)
        if lo.is_number == hi.is_number:
            return f"torch.clamp({x_text}, {lo_text}, {hi_text})"
        # torch.clamp takes two numbers or two tensors, not one of each.
        return f"torch.clamp(torch.clamp({x_text}, min={lo_text}), max={hi_text})"

    def _print_polygamma(self, expr):
        order, x = expr.args
        x_text = self._scalar_tensor(x) if self.is_scalar(x) else self._print(x)
        if order == 0:
            return f"torch.digamma({x_text})"
        return f"torch.polygamma({self._print(order)}, {x_text})"

    def _argument(self, expr, u) -> str:
        """`u`, the argument of a torch function: a 0-dim tensor where
        `expr` is of numbers and floats only (the function takes no float)."""
        return self._scalar_tensor(u) if self.is_scalar(expr) else self._print(u)

    def _print_Elu(self, expr):
        u, alpha = expr.args
        if alpha == 1:
            return f"torch.nn.functional.elu({self._argument(expr, u)})"
        return (
            f"torch.nn.functional.elu({self._argument(expr, u)}, "
            f"alpha={self._print(alpha)})"
        )

    def _print_GeluTanh(self, expr):
        (u,) = expr.args
        return (
            f'torch.nn.functional.gelu({self._argument(expr, u)}, approximate="tanh")'
        )

    def _print_HeavisideStep(self, expr):
        return self._print(F.indicator(expr.args[0] > 0))

    # -- conditions -------------------------------------------------------

    def _print_Relational(self, expr):
        lhs, relation, rhs = _one_side(expr, self.reads_no_tensor)
        level = PRECEDENCE["Relational"]
        return f"{self.parenthesize(lhs, level)} {_RELATIONS[relation]} {self.parenthesize(rhs, level)}"

    def _print_And(self, expr):
        return " & ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(f"({self._print(a)})" for a in expr.args)

    def _print_ITE(self, expr):
        condition, a, b = expr.args
        if self.reads_no_tensor(condition):
            return self._print_Piecewise(sp.Piecewise((a, condition), (b, True)))
        condition, a, b = (self._print(arg) for arg in expr.args)
        return f"torch.where({condition}, {a}, {b})"

    def _print_Not(self, expr):
        if self.reads_no_tensor(expr) and self._math_only(expr):
            return f"not ({self._print(expr.args[0])})"  # ~True is -2
        return f"~({self._print(expr.args[0])})"

    def _print_Guarded(self, expr):
        # stable.Guarded, a where SymPy does not take powers into.
        return self._print_Piecewise(expr)

    def _print_Piecewise(self, expr):
        branches = list(expr.args)
        if branches[-1][1] != sp.true:
            raise PrintError("a Piecewise without a default branch")
        values = [value for value, _ in branches]
        if all(self.is_math(c) for _, c in branches[:-1]) and (
            all(self.is_math(v) or v.is_number for v in values)
            or len({frozenset(v.free_symbols) for v in values}) == 1
        ):
            # Conditions on numbers alone, and values all numbers or all of
            # one shape (the same leaves): Python's, not a torch.where.
            text = self._print(branches[-1][0])
            for value, condition in reversed(branches[:-1]):
                text = f"({self._print(value)} if {self._print(condition)} else {text})"
            return text
        constant = all(value.is_number for value, _ in branches)
        if (
            constant
            and len(branches) == 2
            and branches[0][0] == 1
            and branches[1][0] == 0
        ):
            condition = branches[0][1]
            if self.reads_no_tensor(condition):
                return f"{self._as_tensor(condition)}.to({self.dtype_of}.dtype)"
            return f"({self._print(condition)}).to({self.dtype_of}.dtype)"
        text = self._print(branches[-1][0])
        if all(_prints_a_number(self, v) for v in values):
            # A where of Python numbers only (8/7, 1/(2*x.numel())) would be
            # float32 in a float64 backward: the last value is a 0-dim tensor
            # of the right dtype and device.
            text = f"{self.dtype_of}.new_full((), {text})"
        for value, condition in reversed(branches[:-1]):
            test = self._print(condition)
            if self.reads_no_tensor(condition):
                test = self._as_tensor(condition)
            text = f"torch.where({test}, {self._print(value)}, {text})"
        return text

    def _as_tensor(self, condition) -> str:
        """A test that reads no tensor (a Python bool, or a 0-dim tensor of
        a number) as a 0-dim tensor where the values are, for torch."""
        return (
            f"torch.as_tensor({self._print(condition)}, device={self.dtype_of}.device)"
        )

    # -- tensor operations --------------------------------------------------

    def _postfix(self, expr) -> str:
        """`expr` printed so that a method call or attribute can follow it."""
        text = self._print(expr)
        if python_level(text) < _POSTFIX or (
            isinstance(expr, sp.Number) and not _enclosed(text)
        ):
            return f"({text})"  # (x @ y).sum(), and (2).sum() as 2.sum() is not Python
        return text

    def parenthesize(self, item, level, strict=False, right=None):
        """`item` as an operand at SymPy's precedence `level` (what SymPy's
        own printers ask for), in parentheses where SymPy's precedence of the
        node wants them, as SymPy would print it, and wherever Python's
        precedence of the printed text needs them (`operand`): the one place
        that decides.  `right`: the operand is on the right of its operator
        (by default, where `strict` is false, as SymPy then wants them for
        an operand of the same precedence)."""
        text = self._print(item)
        if python_level(text) >= _POSTFIX:
            return text  # a name, a literal, a call: never (torch.addcmul(...))
        own = precedence(item)
        if own < level or (not strict and own <= level):
            return f"({text})"
        return operand(
            text, _python_level_of(level), not strict if right is None else right
        )

    def _reduction(self, expr, method):
        arg, dims, keepdim = expr.args
        options = []
        if len(dims):
            options.append(f"dim={self._dims(dims)}")
        elif keepdim:
            options.append("dim=()")  # every dimension, kept with size 1
        if keepdim:
            options.append("keepdim=True")
        return f"{self._postfix(arg)}.{method}({', '.join(options)})"

    @staticmethod
    def _dims(dims) -> str:
        values = [int(d) for d in dims]
        return (
            str(values[0]) if len(values) == 1 else f"({', '.join(map(str, values))})"
        )

    def _print_TensorSum(self, expr):
        return self._reduction(expr, "sum")

    def _print_TensorMean(self, expr):
        return self._reduction(expr, "mean")

    def _print_TensorAmax(self, expr):
        return self._reduction(expr, "amax")

    def _print_TensorAmin(self, expr):
        return self._reduction(expr, "amin")

    def _print_TensorLogSumExp(self, expr):
        arg, dims, keepdim = expr.args
        keep = ", keepdim=True" if keepdim else ""
        return f"torch.logsumexp({self._print(arg)}, dim={self._dims(dims)}{keep})"

    def _print_TensorSoftmax(self, expr):
        arg, dims = expr.args
        return f"torch.softmax({self._print(arg)}, dim={self._dims(dims)})"

    def _print_TensorLogSoftmax(self, expr):
        arg, dims = expr.args
        return f"torch.log_softmax({self._print(arg)}, dim={self._dims(dims)})"

    def _print_TensorGather(self, expr):
        arg, dim, index = expr.args
        return f"torch.gather({self._print(arg)}, {int(dim)}, {self._print(index)})"

    def _print_ScatterAdd(self, expr):
        grad, dim, index, shape = expr.args
        text = self._postfix(grad)
        return (
            f"{text}.new_zeros({self._print(shape)})"
            f".scatter_add({int(dim)}, {self._print(index)}, {self._print(grad)})"
        )

    def _print_TensorOneHot(self, expr):
        index, count = expr.args
        # Not torch.nn.functional.one_hot: that syncs with the device to
        # check the indices, and refuses an ignore_index of -100; here an
        # index outside 0 .. n - 1 gives a row of zeros.
        text = self._print(index)
        return (
            f"({text}.unsqueeze(-1) == torch.arange({self._print(count)}, "
            f"device={text}.device)).to({self.dtype_of}.dtype)"
        )

    def _print_TensorMatmul(self, expr):
        a, b = expr.args
        level = PRECEDENCE["Mul"]
        left = self.parenthesize(a, level, strict=False)
        right = self.parenthesize(b, level, strict=False)  # a @ (a*b)
        return f"{left} @ {right}"

    def _print_MatmulGradA(self, expr):
        return self._helper_call("_matmul_grad_a", expr.args)

    def _print_MatmulGradB(self, expr):
        return self._helper_call("_matmul_grad_b", expr.args)

    def _helper_call(self, name: str, args) -> str:
        """A call of a function of the generated module (see module.py.j2)."""
        self.helpers.add(name)
        return f"{name}({', '.join(self._print(arg) for arg in args)})"

    def _print_TensorMT(self, expr):
        # Not .mT: the legacy ONNX exporter has no aten::mT.
        return f"{self._postfix(expr.args[0])}.transpose(-2, -1)"

    def _print_ShapeOf(self, expr):
        shapes = [self.shape_names.get(s, f"{self._print(s)}.shape") for s in expr.args]
        if len(shapes) == 1:
            return shapes[0]
        return f"torch.broadcast_shapes({', '.join(shapes)})"

    def _print_KeptShape(self, expr):
        shape, dims = expr.args
        text = self._postfix(shape)
        dims = {int(d) for d in dims}
        if not dims:
            return f"(1,) * len({text})"
        if min(dims) < 0:
            # (*x.shape[:-2], 1, x.shape[-1]) for dims (-2,)
            last = -min(dims)
            items = [f"*{text}[:-{last}]"]
            items += ["1" if j in dims else f"{text}[{j}]" for j in range(-last, 0)]
        else:
            last = max(dims)
            items = ["1" if j in dims else f"{text}[{j}]" for j in range(last + 1)]
            items.append(f"*{text}[{last + 1}:]")
        return f"({', '.join(items)})"

    def _print_SumToSize(self, expr):
        return f"{self._postfix(expr.args[0])}.sum_to_size({self._print(expr.args[1])})"

    def _print_Unsqueeze(self, expr):
        arg, dims = expr.args
        dims = [int(d) for d in dims]
        # Non-negative dims from the front, then negative ones from the back:
        # each insertion then lands where the reduction removed a dimension.
        order = sorted(d for d in dims if d >= 0) + sorted(
            (d for d in dims if d < 0), reverse=True
        )
        text = self._postfix(arg)
        return text + "".join(f".unsqueeze({d})" for d in order)

    def _print_Expand(self, expr):
        arg, shape = expr.args
        if arg == 0:
            tensors = shape.args if isinstance(shape, T.ShapeOf) else ()
            tensor = tensors[0] if len(tensors) == 1 else None
            if (
                isinstance(tensor, sp.Symbol)
                and tensor not in self.shape_names
                and not tensor.is_integer  # a long input: zeros of a float dtype
            ):
                # Its layout too: the tangent of a transposed output must
                # have the output's strides.
                return f"torch.zeros_like({self._print(tensor)})"
            return f"{self.dtype_of}.new_zeros({self._print(shape)})"
        if arg.is_number:
            return f"torch.full({self._print(shape)}, {self._print(arg)}, dtype={self.dtype_of}.dtype, device={self.dtype_of}.device)"
        return f"{self._postfix(arg)}.expand({self._print(shape)})"

    def _print_Numel(self, expr):
        shape, dims = expr.args
        text = self._postfix(shape)
        if not len(dims):
            tensors = shape.args if isinstance(shape, T.ShapeOf) else ()
            if len(tensors) == 1 and tensors[0] not in self.shape_names:
                return f"{self._postfix(tensors[0])}.numel()"  # d.numel()
            return f"{text}.numel()"
        product = " * ".join(f"{text}[{int(d)}]" for d in dims)
        return product if len(dims) == 1 else f"({product})"


def _denominator_only(expr: sp.Mul) -> tuple[str, sp.Expr] | None:
    """(sign, d) for a product that SymPy prints as ``1/d`` (or ``-1/d``):
    every factor a power with a negative exponent, times +-1/n."""
    coefficient, factors = expr.as_coeff_mul()
    if not coefficient.is_Rational or abs(coefficient.p) != 1 or not factors:
        return None
    if not all(isinstance(f, sp.Pow) and f.exp.as_coeff_Mul()[0] < 0 for f in factors):
        return None
    positive = sp.Mul(
        sp.Integer(coefficient.q), *[sp.Pow(f.base, -f.exp) for f in factors]
    )
    return ("-" if coefficient < 0 else ""), positive


def print_torch(expr: sp.Expr, **options) -> str:
    return TorchPrinter(**options).doprint(expr)


class MathPrinter(StrPrinter):
    """Prints an expression in the formula language, for docstrings:
    ``sigmoid(x)`` and ``where(x > 0, 1, exp(x))``, as a spec writes them."""

    def _print_Function(self, expr):
        name = F.FORMULA_NAMES.get(type(expr))
        if name is None:
            return super()._print_Function(expr)
        return f"{name}({self.stringify(expr.args, ', ')})"

    # ``x == 0`` as torch code writes it, where SymPy's would say Eq(x, 0),
    # with only a number moved across (`_one_side`): no names are known.
    _print_Relational = TorchPrinter._print_Relational

    def reads_no_tensor(self, expr) -> bool:
        return expr.is_number

    def _as_ordered_terms(self, expr, order=None):
        # The terms that read positive first, as the torch code: x - mu.
        terms = super()._as_ordered_terms(expr, order=order)
        return sorted(terms, key=lambda term: term.could_extract_minus_sign())

    def _print_Guarded(self, expr):
        # stable.Guarded, a where SymPy does not take powers into.
        return self._print_Piecewise(expr)

    def _print_Piecewise(self, expr):
        *pairs, (last, otherwise) = expr.args
        if otherwise != sp.true:
            return super()._print_Piecewise(expr)
        text = self._print(last)
        for value, condition in reversed(pairs):
            text = f"where({self._print(condition)}, {self._print(value)}, {text})"
        return text


def math_text(expr: sp.Basic) -> str:
    """`expr` as a formula would write it."""
    return MathPrinter().doprint(expr)
