"""The printer's parentheses, against Python's own reading of what it prints.

Random expression trees (arithmetic, powers, ``@``, transposes, reductions,
comparisons in a ``where``, Python numbers) are printed, the text is parsed by
Python's `ast`, and the parsed tree is turned back into SymPy by a small
interpreter of the printed forms (`FromPython`).  Python's reading must be the
tree that was printed: a missing parenthesis (``a @ (a * b)`` printed as
``a @ a * b``, which Python reads as ``(a @ a) * b``) gives another tree.
"""

from __future__ import annotations

import ast
import math

import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fngen import functions as F
from fngen import tensorops as T
from fngen.functions import constant_value
from fngen.printer import TorchPrinter, python_level

a, b, c = sp.symbols("a b c", real=True)
s = sp.Symbol("s", real=True)  # a Python float: printed with math and builtins
grad = sp.Symbol("grad", real=True)
TENSORS = {a, b, c}
SYMBOLS = {sym.name: sym for sym in (a, b, c, s, grad)}


def printer() -> TorchPrinter:
    return TorchPrinter(tensors=TENSORS, scalars={s})


# -- Python's reading of the printed text, as SymPy ---------------------------

_BINARY = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
    ast.Pow: lambda x, y: x**y,
    ast.MatMult: T.TensorMatmul,
    ast.BitAnd: sp.And,
    ast.BitOr: sp.Or,
}
_COMPARE = {
    ast.Lt: sp.StrictLessThan,
    ast.LtE: sp.LessThan,
    ast.Gt: sp.StrictGreaterThan,
    ast.GtE: sp.GreaterThan,
    ast.Eq: sp.Eq,
    ast.NotEq: sp.Ne,
}
_CALLS = {
    "torch.sin": sp.sin,
    "math.sin": sp.sin,
    "torch.exp": sp.exp,
    "math.exp": sp.exp,
    "torch.relu": F.Relu,
    "torch.sqrt": sp.sqrt,
    "math.sqrt": sp.sqrt,
    "torch.rsqrt": lambda x: 1 / sp.sqrt(x),
    "torch.reciprocal": lambda x: 1 / x,
    "torch.maximum": F.Maximum,
    "max": F.Maximum,
    "torch.minimum": F.Minimum,
    "min": F.Minimum,
    "math.pow": lambda x, y: x**y,
    "torch.where": lambda cond, x, y: F.Piecewise((x, cond), (y, True)),
    "torch.full_like": lambda like, value: value,
    "torch.as_tensor": lambda value: value,
    "torch.addcmul": lambda rest, u, v, value=1: rest + value * u * v,
}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


class FromPython:
    """Python's tree of the printed forms, as SymPy: only the forms that the
    trees drawn below print as; anything else is a failure of the test."""

    def __call__(self, node: ast.AST):
        method = getattr(self, f"visit_{type(node).__name__}")
        return method(node)

    def visit_Expression(self, node):
        return self(node.body)

    def visit_Name(self, node):
        return SYMBOLS[node.id]

    def visit_Constant(self, node):
        if isinstance(node.value, bool):
            return sp.true if node.value else sp.false
        if isinstance(node.value, int):
            return sp.Integer(node.value)
        return sp.Rational(repr(node.value))

    def visit_Tuple(self, node):
        return sp.Tuple(*[self(e) for e in node.elts])

    def visit_BinOp(self, node):
        return _BINARY[type(node.op)](self(node.left), self(node.right))

    def visit_UnaryOp(self, node):
        operand = self(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        return sp.Not(operand)  # not, ~

    def visit_Compare(self, node):
        (op,), (right,) = node.ops, node.comparators
        return _COMPARE[type(op)](self(node.left), self(right))

    def visit_IfExp(self, node):
        return F.Piecewise(
            (self(node.body), self(node.test)), (self(node.orelse), True)
        )

    def visit_Attribute(self, node):
        name = _dotted(node)
        if name == "math.pi":
            return sp.pi
        if name == "math.e":
            return sp.E
        if node.attr == "shape":
            return T.ShapeOf(self(node.value))
        raise AssertionError(f"unexpected attribute {ast.unparse(node)}")

    def visit_Call(self, node):
        name = _dotted(node.func)
        args = [self(arg) for arg in node.args]
        kwargs = {kw.arg: kw.value for kw in node.keywords}
        if name == "torch.clamp":
            (x,) = args
            if "min" in kwargs:
                return F.Maximum(x, self(kwargs["min"]))
            return F.Minimum(x, self(kwargs["max"]))
        if name in _CALLS:
            values = {
                k: self(v) for k, v in kwargs.items() if k not in ("dtype", "device")
            }
            return _CALLS[name](*args, **values)
        if not isinstance(node.func, ast.Attribute):
            raise AssertionError(f"unexpected call {ast.unparse(node)}")
        method, receiver = node.func.attr, node.func.value
        if method in ("sum", "mean"):
            dims = sp.Tuple()
            if "dim" in kwargs:
                value = self(kwargs["dim"])
                dims = value if isinstance(value, sp.Tuple) else sp.Tuple(value)
            keep = sp.true if "keepdim" in kwargs else sp.false
            cls = T.TensorSum if method == "sum" else T.TensorMean
            return cls(self(receiver), dims, keep)
        if method == "transpose":
            assert args == [-2, -1], ast.unparse(node)
            return T.TensorMT(self(receiver))
        if method == "sum_to_size":
            return T.SumToSize(self(receiver), *args)
        if method == "expand":
            return T.Expand(self(receiver), *args)
        if method == "unsqueeze":  # the trees drawn unsqueeze one dim at a time
            return T.Unsqueeze(self(receiver), sp.Tuple(*args))
        if method == "to":  # (condition).to(grad.dtype): 1 or 0
            return F.indicator(self(receiver))
        if method == "new_full":  # grad.new_full((), value)
            return args[1]
        raise AssertionError(f"unexpected call {ast.unparse(node)}")


def read_back(text: str) -> sp.Basic:
    return FromPython()(ast.parse(text, mode="eval"))


def _numbers_as_floats(expr: sp.Basic) -> sp.Basic:
    """Every non-integer constant as the double it prints as (2/3 prints
    as 0.6666666666666666, 2*pi as 6.283185307179586); the constant factors
    of a product (terms of a sum) as one, as the printer writes them."""
    if not isinstance(expr, sp.Basic) or expr.is_Atom and not expr.is_number:
        return expr
    if isinstance(expr, sp.Expr) and expr.is_number:
        if expr.is_Integer:
            return expr
        return sp.Float(float(constant_value(expr)), 17)
    if not expr.args:
        return expr
    if isinstance(expr, (sp.Add, sp.Mul)):
        numbers = [arg for arg in expr.args if arg.is_number]
        others = [_numbers_as_floats(arg) for arg in expr.args if not arg.is_number]
        if numbers:
            others.append(_numbers_as_floats(expr.func(*numbers)))
        return expr.func(*others)
    return expr.func(*[_numbers_as_floats(arg) for arg in expr.args])


def _products_of_wheres(expr: sp.Basic) -> sp.Basic:
    """``r * where(c, x, y)`` as ``where(c, r*x, r*y)``: the printer writes
    either, as the branches' dtypes need."""
    if not expr.args:
        return expr
    expr = expr.func(*[_products_of_wheres(arg) for arg in expr.args])
    if isinstance(expr, sp.Mul):
        pieces = [f for f in expr.args if isinstance(f, sp.Piecewise)]
        if pieces:
            piece = pieces[0]
            rest = sp.Mul(*[f for f in expr.args if f is not piece])
            return _products_of_wheres(
                F.Piecewise(*[(rest * value, cond) for value, cond in piece.args])
            )
    return expr


def _symmetric_in_order(expr: sp.Basic) -> sp.Basic:
    """max(a, b) and max(b, a) alike (torch.clamp(x, min=m) is max(x, m))."""
    if not expr.args:
        return expr
    args = [_symmetric_in_order(arg) for arg in expr.args]
    if isinstance(expr, (F.Maximum, F.Minimum)):
        args.sort(key=sp.default_sort_key)
    return expr.func(*args)


def normal(expr: sp.Basic) -> sp.Basic:
    return _symmetric_in_order(_products_of_wheres(_numbers_as_floats(expr)))


def same_tree(x: sp.Basic, y: sp.Basic) -> bool:
    """Whether `x` and `y` are the same tree, their constants to rounding
    (SymPy folds ``(2*a)**5.14`` into ``35.3*a**5.14`` from either side,
    in its own order)."""
    if isinstance(x, sp.Float) or isinstance(y, sp.Float):
        return (
            isinstance(x, sp.Number)
            and isinstance(y, sp.Number)
            and math.isclose(float(x), float(y), rel_tol=1e-12)
        )
    if x.func != y.func or len(x.args) != len(y.args) or (not x.args and x != y):
        return False
    return all(same_tree(p, q) for p, q in zip(x.args, y.args))


# -- random trees ----------------------------------------------------------------

LEAVES = st.sampled_from(
    [a, b, c, s, sp.Integer(2), sp.Integer(3), sp.Integer(-1), sp.Integer(-2)]
    + [sp.Rational(1, 2), sp.Rational(-3, 2), sp.Rational(1, 3), sp.pi]
)
EXPONENTS = [2, 3, -1, -2, sp.Rational(1, 2), sp.Rational(-1, 2), sp.Rational(3, 2)]
DIMS = [sp.Tuple(), sp.Tuple(-1), sp.Tuple(0), sp.Tuple(0, 1)]
RELATIONS = [sp.StrictGreaterThan, sp.LessThan, sp.Eq, sp.Ne]


def _extend(children):
    two = st.tuples(children, children)
    return st.one_of(
        two.map(lambda p: p[0] + p[1]),
        two.map(lambda p: p[0] - p[1]),
        two.map(lambda p: p[0] * p[1]),
        two.map(lambda p: p[0] / p[1]),
        children.map(lambda e: -e),
        st.tuples(children, st.sampled_from(EXPONENTS)).map(lambda p: p[0] ** p[1]),
        # A number to a number could be astronomically large: not drawn.
        two.filter(lambda p: not (p[0].is_number and p[1].is_number)).map(
            lambda p: p[0] ** p[1]
        ),
        two.map(lambda p: T.TensorMatmul(*p)),
        children.map(T.TensorMT),
        st.tuples(
            children,
            st.sampled_from(DIMS),
            st.booleans(),
            st.sampled_from([T.TensorSum, T.TensorMean]),
        ).map(lambda p: p[3](p[0], p[1], sp.true if p[2] else sp.false)),
        children.map(lambda e: T.SumToSize(e, T.ShapeOf(a))),
        children.map(lambda e: T.Expand(e, T.ShapeOf(b))),
        children.map(lambda e: T.Unsqueeze(e, sp.Tuple(0))),
        children.map(sp.sin),
        children.map(sp.exp),
        children.map(F.Relu),
        two.map(lambda p: F.Maximum(*p)),
        st.tuples(children, children, children, children, st.sampled_from(RELATIONS))
        .filter(lambda p: p[4](p[1], p[2]) not in (sp.true, sp.false))
        .map(lambda p: F.Piecewise((p[0], p[4](p[1], p[2])), (p[3], True))),
    )


TREES = st.recursive(LEAVES, _extend, max_leaves=12)


def _printable(tree: sp.Basic) -> bool:
    """Finite real constants only (no 1/0, no sqrt(-1)), no reduction or
    transpose of a number (a formula never has one), and none of SymPy's own
    Abs and sign that it makes of sqrt(a**2) (not fngen's: not printable)."""
    if tree.atoms(sp.Abs, sp.sign):
        return False
    for sub in sp.preorder_traversal(tree):
        if isinstance(sub, sp.Expr) and sub.is_number:
            if sub.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I):
                return False
            if constant_value(sub) is None:
                return False
        if isinstance(sub, (T.TensorOp, F.Relu)) and sub.args and sub.args[0].is_number:
            return False
    return True


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(TREES)
def test_python_reads_the_printed_code_as_the_tree(tree):
    assume(isinstance(tree, sp.Expr) and not tree.is_number and _printable(tree))
    text = printer().doprint(tree)
    back = normal(read_back(text))
    assert same_tree(back, normal(tree)), f"{text} reads as {back}"


# -- the cases that were printed wrong, and the reader itself ---------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        (T.TensorMatmul(a, a * b), "a @ (a*b)"),
        (T.TensorMatmul(a, 2 * b), "a @ (2*b)"),
        (T.TensorMatmul(a, b / c), "a @ (b/c)"),
        (T.TensorMatmul(a, T.TensorMatmul(b, c)), "a @ (b @ c)"),
        (c * T.TensorMatmul(a, b), "c*(a @ b)"),
        (T.TensorMatmul(a, b) * c, "c*(a @ b)"),
        (T.TensorMatmul(a, b**2), "a @ b**2"),
        (sp.Pow(sp.Pow(a, b), c, evaluate=False), "(a**b)**c"),
        (1 / T.TensorMatmul(a, b), "torch.reciprocal(a @ b)"),
        (1 / (a * b), "torch.reciprocal(a*b)"),
        (-1 / (2 * a), "-torch.reciprocal(2*a)"),
        (2 / a, "2/a"),
        (1 / s, "1 / s"),
        (1 / (s + 1), "1 / (s + 1)"),
        (T.TensorMT(a), "a.transpose(-2, -1)"),
        (T.TensorMT(a * b), "(a*b).transpose(-2, -1)"),
        (T.TensorMT(T.TensorMatmul(a, b)), "(a @ b).transpose(-2, -1)"),
        (T.TensorSum(F.SigmoidBackward(a), sp.Tuple(), sp.false), "(a*(1 - a)).sum()"),
        (
            T.Numel(T.KeptShape(T.ShapeOf(a), sp.Tuple()), sp.Tuple(0)),
            "((1,) * len(a.shape))[0]",
        ),
    ],
)
def test_operands_in_parentheses_where_python_needs_them(expr, expected):
    text = printer().doprint(expr)
    assert text == expected
    if not expr.atoms(T.Numel, F.SigmoidBackward):  # printed as its math
        assert same_tree(normal(read_back(text)), normal(expr))


def test_the_reader_tells_the_trees_apart():
    """The comparison has teeth: the text printed before the fix reads as
    another tree."""
    assert not same_tree(read_back("a @ a*b"), T.TensorMatmul(a, a * b))
    assert same_tree(read_back("a @ (a*b)"), T.TensorMatmul(a, a * b))
    assert same_tree(read_back("-a**2"), -(a**2))
    assert not same_tree(read_back("(-a)**b"), -(a**b))
    assert not same_tree(read_back("1.5*a"), 1.4 * a)
    assert same_tree(normal(read_back("0.6666666666666666*a")), normal(2 * a / 3))


@pytest.mark.parametrize(
    "text, level",
    [
        ("a if b else c", 1),
        ("a < b", 5),
        ("a + b", 10),
        ("a @ b", 11),
        ("-a", 12),
        ("a**b", 13),
        ("a.sum()", 15),
        ("(a + b)", 16),
        ("(-1.5)", 16),
        ("(1,) * len(a)", 11),
        ("(a)(b)", 15),
    ],
)
def test_python_level(text, level):
    assert python_level(text) == level
