"""Parse formula text into SymPy, safely.

The text is parsed by Python's `ast` and walked under a whitelist of node
types; every node becomes a SymPy object directly.  Nothing is ever handed to
`eval`, `exec`, `sympify` or `parse_expr`.

Pointwise statements are inlined into the expressions that use them; tensor
operations (reductions, ``@``, ``.T``) become `OpNode`s whose results are new
leaf symbols, so that `derive.py` can differentiate them by their VJP rules.
"""

from __future__ import annotations

import ast
import difflib
import io
import tokenize
import keyword
from typing import Callable

import sympy as sp

from fngen import tensorops as T
from fngen.errors import Location, SpecError
from fngen.functions import (
    MAX_CONSTANT_BITS,
    NUMERIC,
    POINTWISE_FUNCTIONS,
    ConstantTooLarge,
    evaluate_constant,
    indicator,
)
from fngen.model import Formula, OpNode
from fngen.stable import stabilize

Locator = Callable[[int, int], Location]

MAX_FORMULA_LENGTH = 200_000
MAX_CONSTANT_EXPONENT = 1024
REDUCTIONS = {
    "sum": T.TensorSum,
    "mean": T.TensorMean,
    "logsumexp": T.TensorLogSumExp,
    "amax": T.TensorAmax,
    "amin": T.TensorAmin,
}
# softmax(e, dim=d) and log_softmax(e, dim=d), by the logsumexp of e.
NORMALIZATIONS = ("softmax", "log_softmax")
# Of a long input (class indices): gather(e, dim, index), one_hot(index, n).
INDEXING = ("gather", "one_hot")
# Every name a formula calls, in the order "did you mean" offers them.
FUNCTION_NAMES = (*POINTWISE_FUNCTIONS, *REDUCTIONS, *NORMALIZATIONS, *INDEXING)
CONSTANTS = {"pi": sp.pi}
_BOOL_NAMES = {"true": True, "false": False, "True": True, "False": False}
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.BitXor: lambda a, b: a**b,
}
_COMPARE = {
    ast.Lt: sp.StrictLessThan,
    ast.LtE: sp.LessThan,
    ast.Gt: sp.StrictGreaterThan,
    ast.GtE: sp.GreaterThan,
    ast.Eq: sp.Eq,
    ast.NotEq: sp.Ne,
}
# Functions SymPy evaluates exactly at integers, at a cost that grows with
# the integer: folded numerically at constant arguments.
_EXACT_AT_INTEGERS = frozenset({"digamma", "lgamma"})
_OPERATOR_NAMES = {ast.FloorDiv: "//", ast.Mod: "%", ast.BitAnd: "&", ast.BitOr: "|"}


def is_condition(expr: sp.Basic) -> bool:
    """Whether `expr` is a truth value (a comparison) rather than a number."""
    # A SymPy Symbol is also a Boolean: a condition is a Boolean that is no Expr.
    return isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Expr)


def tensor_leaves(expr: sp.Basic, leaves: frozenset[sp.Symbol] | set) -> set[sp.Symbol]:
    return expr.free_symbols & set(leaves)


class FormulaParser:
    """Turns one formula's text into a `Formula` graph.

    `symbols` maps each known input name to its SymPy symbol; when it is None,
    every unknown name becomes a new tensor input, in order of first use.
    `tensor_names` are the inputs that are tensors (the others are numbers).
    """

    def __init__(
        self,
        locate: Locator,
        symbols: dict[str, sp.Symbol] | None,
        tensor_names: set[str] | None = None,
        extra_names: dict[str, sp.Expr] | None = None,
        bool_names: set[str] | None = None,
        long_names: set[str] | None = None,
    ):
        self.locate = locate
        # long inputs: the indices gather() and one_hot() take.
        self.long_names = set(long_names or ())
        # bool inputs: a where() may test one as it is.
        self.bool_names = set(bool_names or ())
        self.declared = symbols is not None
        self.symbols: dict[str, sp.Symbol] = dict(symbols or {})
        self.tensor_names = set(
            tensor_names if tensor_names is not None else self.symbols
        )
        self.extra_names = dict(extra_names or {})
        self.env: dict[str, sp.Expr] = {}
        self.statement_lines: dict[str, int] = {}
        # Statements that are a comparison (``m = x > 0``): the condition,
        # what such a statement is as an output (a bool tensor); elsewhere
        # it is 1 or 0.
        self.conditions: dict[str, sp.Basic] = {}
        self.statement_nodes: dict[str, ast.stmt] = {}
        self.ops: list[OpNode] = []
        self.taken: set[str] = set(self.symbols) | set(self.extra_names)

    # -- entry points -----------------------------------------------------

    def parse_statements(
        self, text: str, location: Location, outputs: list[str] | None
    ) -> Formula:
        module = self._parse(text)
        if not module.body:
            raise SpecError(location, "formula is empty", "write 'name = expression'")
        statements = []
        for stmt in module.body:
            name, expr = self._statement(stmt)
            statements.append((name, expr))
        names = outputs if outputs else [statements[-1][0]]
        result = []
        for name in names:
            if name not in self.env:
                raise SpecError(
                    location, f"output '{name}' is not assigned by the formula"
                )
            value = self.conditions.get(name, self.env[name])
            if not value.free_symbols:
                raise self._constant_output(name)
            result.append((sp.Symbol(name, real=True), value))
        return Formula(
            text, tuple(self.ops), tuple(result), tuple(statements), location
        )

    def parse_expression(self, text: str) -> sp.Expr:
        module = self._parse(text)
        if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
            node = module.body[0] if module.body else module
            raise self._error(node, "expected a single expression")
        return stabilize(self._number(module.body[0].value))

    # -- statements -------------------------------------------------------

    def _parse(self, text: str) -> ast.Module:
        if len(text) > MAX_FORMULA_LENGTH:
            raise SpecError(
                self.locate(0, 0),
                f"formula is longer than {MAX_FORMULA_LENGTH} characters",
            )
        text, carets = caret_to_power(text.rstrip("\n"))
        if carets:
            self.locate = _shifted_locator(self.locate, carets)
        try:
            return ast.parse(text, mode="exec")
        except SyntaxError as err:
            line = (err.lineno or 1) - 1
            column = max((err.offset or 1) - 1, 0)
            raise SpecError(
                self.locate(line, column), f"invalid formula syntax: {err.msg}"
            ) from None
        except (ValueError, RecursionError, MemoryError):
            raise SpecError(
                self.locate(0, 0),
                "formula cannot be parsed (nested too deeply or not text)",
            ) from None

    def _statement(self, stmt: ast.stmt) -> tuple[str, sp.Expr]:
        if not (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            raise self._error(stmt, "expected a statement 'name = expression'")
        target = stmt.targets[0]
        name = target.id
        if name in self.env:
            raise self._error(
                target,
                f"'{name}' is already assigned at line {self.statement_lines[name]}",
            )
        if name in self.symbols or name in self.extra_names:
            raise self._error(target, f"'{name}' is an input and cannot be assigned")
        if name in FUNCTION_NAMES or name in CONSTANTS:
            raise self._error(
                target, f"'{name}' is a function or constant and cannot be assigned"
            )
        check_identifier(name, self.locate(stmt.lineno - 1, stmt.col_offset))
        self.statement = (name, stmt.value)
        try:
            expr = stabilize(self._number(stmt.value))
        except RecursionError:
            raise self._error(stmt, "formula is nested too deeply") from None
        if name in self.symbols:
            raise self._error(target, f"'{name}' is an input and cannot be assigned")
        self.taken.add(name)
        self.env[name] = expr
        self.statement_lines[name] = stmt.lineno
        self.statement_nodes[name] = stmt
        if (
            isinstance(stmt.value, ast.Compare)
            and isinstance(expr, sp.Piecewise)
            and expr.free_symbols
        ):
            self.conditions[name] = expr.args[0][1]  # indicator(condition)
        return name, expr

    def _constant_output(self, name: str) -> SpecError:
        """An output that SymPy folds to a constant has no shape to take."""
        stmt = self.statement_nodes[name]
        written = ast.unparse(stmt.value)
        if isinstance(stmt.value, ast.Compare):
            value = "true" if self.env[name] == 1 else "false"
            message = (
                f"output '{name}' is always {value}: SymPy proves {written} "
                f"{value} for every input"
            )
        elif written == str(self.env[name]):
            message = f"output '{name}' is the constant {written}"
        else:
            message = f"output '{name}' is a constant: {written} is {self.env[name]}"
        return self._error(stmt, message, "an output must depend on a tensor input")

    # -- expressions ------------------------------------------------------

    def _error(self, node: ast.AST, message: str, hint: str | None = None) -> SpecError:
        line = getattr(node, "lineno", 1) - 1
        column = getattr(node, "col_offset", 0)
        return SpecError(self.locate(line, column), message, hint)

    def _number(self, node: ast.AST) -> sp.Expr:
        """Visit `node` as a number: a comparison used as a number is 1 or 0."""
        expr = self._visit(node)
        if isinstance(expr, T.TensorMT):
            expr = self._lift(expr, node)
        expr = indicator(expr) if is_condition(expr) else expr
        return self._fold(expr, node)

    def _fold(self, expr: sp.Expr, node: ast.AST, numeric: bool = False) -> sp.Expr:
        """Check a constant subexpression now, where its location is known,
        and fold it to a number when SymPy cannot evaluate it itself (always,
        with `numeric`).  A constant past 2**MAX_CONSTANT_BITS is refused
        before a function is applied to it."""
        if expr.is_Number and not expr.is_finite:
            raise self._error(
                node, f"the constant {ast.unparse(node)} has no finite real value"
            )
        if expr.free_symbols or is_condition(expr):
            return expr
        try:
            # A Number is exact (an int): evaluated for its magnitude only.
            value = evaluate_constant(expr)
        except ConstantTooLarge:
            raise self._error(
                node,
                f"constant too large to evaluate: {_shortened(ast.unparse(node))}",
                f"its magnitude passes 2**{MAX_CONSTANT_BITS}",
            ) from None
        if expr.is_Number:
            return expr
        if value is None:
            raise self._error(
                node, f"the constant {ast.unparse(node)} has no finite real value"
            )
        if numeric or any(
            type(e) in NUMERIC or isinstance(e, sp.Piecewise)
            for e in sp.preorder_traversal(expr)
        ):
            return value
        return expr

    def _visit(self, node: ast.AST) -> sp.Expr:
        method = getattr(self, f"_visit_{type(node).__name__}", None)
        if method is None:
            raise self._error(node, f"{_describe(node)} is not allowed in a formula")
        return method(node)

    def _visit_Constant(self, node: ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(
                node,
                f"{_describe(node)} is not allowed in a formula",
                "expected a number",
            )
        if isinstance(value, int):
            return sp.Integer(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise self._error(node, "the number is not finite")
        # The decimal text, not the binary double: 0.1 stays exactly 1/10.
        return sp.Rational(repr(value))

    def _visit_Name(self, node: ast.Name):
        name = node.id
        if name in self.env:
            return self.env[name]
        if name in self.symbols:
            return self.symbols[name]
        if name in self.extra_names:
            return self.extra_names[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTION_NAMES:
            raise self._error(node, f"'{name}' is a function: call it with arguments")
        if name in _BOOL_NAMES:
            raise self._error(node, f"'{name}' is only allowed as keepdim=")
        if not self.declared and name.isidentifier() and not keyword.iskeyword(name):
            check_identifier(
                name, self.locate(node.lineno - 1, node.col_offset), attribute=True
            )
            symbol = sp.Symbol(name, real=True)
            self.symbols[name] = symbol
            self.tensor_names.add(name)
            self.taken.add(name)
            return symbol
        known = list(self.env) + list(self.symbols) + list(self.extra_names)
        raise self._error(node, f"unknown name '{name}'", _did_you_mean(name, known))

    def _visit_UnaryOp(self, node: ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return -self._number(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self._number(node.operand)
        raise self._error(node, f"unary operator {_describe(node.op)} is not supported")

    def _visit_BinOp(self, node: ast.BinOp):
        if isinstance(node.op, ast.MatMult):
            return self._matmul(node)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return self._sum(node)
        combine = _BINARY.get(type(node.op))
        if combine is None:
            symbol = _OPERATOR_NAMES.get(type(node.op), type(node.op).__name__)
            raise self._error(node, f"operator '{symbol}' is not supported")
        left, right = self._number(node.left), self._number(node.right)
        if isinstance(node.op, (ast.Pow, ast.BitXor)):
            self._check_power(node, left, right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise self._error(node.right, "division by zero")
        return combine(left, right)

    def _sum(self, node: ast.BinOp) -> sp.Expr:
        """``a + b - c + ...`` as one flat SymPy Add.

        The chain is walked with a loop, not recursion, and the terms are
        added at once: a polynomial of thousands of terms neither runs out
        of stack nor costs a quadratic rebuild of the partial sums.
        """
        chain = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            chain.append((node.op, node.right))
            node = node.left
        terms = [self._number(node)]
        for op, right in reversed(chain):
            term = self._number(right)
            terms.append(-term if isinstance(op, ast.Sub) else term)
        return sp.Add(*terms)

    def _check_power(self, node, base, exponent):
        if base.is_number and exponent.is_number:
            too_large = abs(complex(exponent)) > MAX_CONSTANT_EXPONENT
            if not too_large and base != 0:
                # Decimal digits of the result: refuse what no float can hold
                # before SymPy computes it exactly.
                digits = abs(float(exponent)) * float(
                    sp.log(sp.Abs(base), 10).evalf(15)
                )
                too_large = digits > 400
            if too_large:
                raise self._error(
                    node,
                    "constant power is too large",
                    f"exponents up to {MAX_CONSTANT_EXPONENT}",
                )
        if base == 0 and exponent.is_number and exponent.is_negative:
            raise self._error(node, "division by zero")

    def _visit_Compare(self, node: ast.Compare):
        if len(node.ops) != 1:
            raise self._error(
                node, "chained comparisons are not supported", "use where() twice"
            )
        left, right = self._number(node.left), self._number(node.comparators[0])
        return _COMPARE[type(node.ops[0])](left, right)

    def _visit_Attribute(self, node: ast.Attribute):
        if node.attr != "T":
            raise self._error(
                node, f"attribute '.{node.attr}' is not supported", "only '.T' is"
            )
        operand = self._number(node.value)
        self._require_tensor(node.value, operand, "'.T'")
        return T.TensorMT(operand)

    def _matmul(self, node: ast.BinOp):
        operands = []
        for side in (node.left, node.right):
            expr = self._visit(side)
            if is_condition(expr):
                expr = indicator(expr)
            self._require_tensor(side, expr, "'@'")
            if self._is_scalar_reduction(expr):
                raise self._error(
                    side,
                    "'@' needs operands with at least one dimension, got a full reduction",
                )
            operands.append(expr)
        return self._lift(T.TensorMatmul(*operands), node)

    def _visit_Call(self, node: ast.Call):
        if not isinstance(node.func, ast.Name):
            raise self._error(node, "only calls of named functions are allowed")
        name = node.func.id
        if name in REDUCTIONS:
            return self._reduction(node, name)
        if name in NORMALIZATIONS:
            return self._normalization(node, name)
        if name in INDEXING:
            return self._indexing(node, name)
        if name == "log" and len(node.args) == 1 and not node.keywords:
            count = len(self.ops)
            argument = self._number(node.args[0])
            stable = self._logsumexp(argument, count, node)
            if stable is not None:
                return stable
            return self._fold(POINTWISE_FUNCTIONS["log"].build(argument), node)
        function = POINTWISE_FUNCTIONS.get(name)
        if function is None:
            raise self._error(
                node.func,
                f"unknown function '{name}'",
                _did_you_mean(name, list(FUNCTION_NAMES)),
            )
        if node.keywords:
            raise self._error(node.keywords[0], f"{name}() takes no keyword arguments")
        if len(node.args) not in function.arities:
            counts = " or ".join(map(str, function.arities))
            plural = "" if function.arities == (1,) else "s"
            raise self._error(
                node,
                f"{name}() takes {counts} argument{plural}, got {len(node.args)}",
            )
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self._error(node, "'*' arguments are not allowed in a formula")
        if name == "where":
            condition = self._visit(node.args[0])
            if isinstance(condition, sp.Symbol) and condition.name in self.bool_names:
                condition = sp.Ne(condition, 0)  # where(flag, ...): flag != 0
            if not is_condition(condition):
                raise self._error(
                    node.args[0], "where() needs a comparison as its first argument"
                )
            result = function.build(
                condition, self._number(node.args[1]), self._number(node.args[2])
            )
            return self._fold(result, node)
        args = [self._number(a) for a in node.args]
        if name in _EXACT_AT_INTEGERS and all(a.is_number for a in args):
            # SymPy computes these exactly at an integer (a harmonic number,
            # a factorial): digamma(100000) would never end.  Fold them to
            # their 40-digit value instead, which the printer writes anyway.
            with sp.evaluate(False):
                unevaluated = function.build(*args)
            return self._fold(unevaluated, node, numeric=True)
        return self._fold(function.build(*args), node)

    def _logsumexp(
        self, argument: sp.Expr, count: int, node: ast.Call
    ) -> sp.Expr | None:
        """``log(sum(exp(u), dim=...))`` as one stable logsumexp, when the sum
        was made for this log alone (the one op its argument created)."""
        if len(self.ops) != count + 1 or argument != self.ops[-1].result:
            return None
        op = self.ops[-1]
        if not isinstance(op.expr, T.TensorSum) or not isinstance(
            op.expr.args[0], sp.exp
        ):
            return None
        power, dims, keepdim = op.expr.args
        if not len(dims):
            return None
        self.ops.pop()
        self.taken.discard(op.result.name)
        return self._lift(T.TensorLogSumExp(power.args[0], dims, keepdim), node)

    def _reduction(self, node: ast.Call, name: str):
        operand, dims, keepdim = self._reduction_arguments(node, name)
        if name == "logsumexp" and not dims:
            raise self._error(
                node,
                "logsumexp() needs dim=",
                "as torch.logsumexp, it reduces named dimensions",
            )
        op = REDUCTIONS[name](
            operand, sp.Tuple(*dims), sp.true if keepdim else sp.false
        )
        return self._lift(op, node)

    def _normalization(self, node: ast.Call, name: str):
        """``softmax(e, dim=d)`` and ``log_softmax(e, dim=d)``: PyTorch's
        fused kernels, differentiated by their rules through the result
        (the backward of an output keeps only the output)."""
        operand, dims, keepdim = self._reduction_arguments(node, name)
        if len(dims) != 1 or keepdim:
            raise self._error(
                node, f"{name}() takes an expression and one dim=, as torch.{name}"
            )
        op = T.TensorSoftmax if name == "softmax" else T.TensorLogSoftmax
        return self._lift(op(operand, sp.Tuple(*dims)), node)

    def _indexing(self, node: ast.Call, name: str):
        """``gather(e, dim, index)`` as torch.gather, ``one_hot(index, n)``
        as torch.nn.functional.one_hot (in the formula's float dtype)."""
        signature = "(e, dim, index)" if name == "gather" else "(index, n)"
        if node.keywords or len(node.args) != len(signature.split(",")):
            raise self._error(
                node,
                f"{name}() takes {signature}, positionally",
                f"as torch.{'gather' if name == 'gather' else 'nn.functional.one_hot'}",
            )
        *_, index_node = node.args if name == "gather" else node.args[:1]
        if not (isinstance(index_node, ast.Name) and index_node.id in self.long_names):
            raise self._error(
                index_node,
                f"{name}()'s index must be a long input",
                "declare it as {type: long, classes: n}",
            )
        index = self.symbols[index_node.id]
        if name == "one_hot":
            count = self._class_count(node.args[1])
            return self._lift(T.TensorOneHot(index, count), node)
        operand = self._number(node.args[0])
        self._require_tensor(node.args[0], operand, "gather()")
        if isinstance(node.args[1], ast.Tuple):
            raise self._error(node.args[1], "gather()'s dim must be one int")
        (dim,) = self._dims(node.args[1])
        return self._lift(T.TensorGather(operand, sp.Integer(dim), index), node)

    def _class_count(self, node: ast.AST) -> sp.Expr:
        """one_hot's number of classes: a positive int, or an int input."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            if node.value < 1:
                raise self._error(node, "one_hot() needs at least one class")
            return sp.Integer(node.value)
        if isinstance(node, ast.Name) and node.id in self.symbols:
            symbol = self.symbols[node.id]
            if symbol.is_integer and node.id not in self.tensor_names:
                return symbol
        raise self._error(
            node, "one_hot()'s number of classes must be an int or an int input"
        )

    def _reduction_arguments(self, node: ast.Call, name: str):
        """(operand, dims, keepdim) of ``name(e, dim, keepdim=...)``."""
        if not 1 <= len(node.args) <= 2:
            raise self._error(
                node,
                f"{name}() takes an expression and an optional dim, got {len(node.args)} arguments",
            )
        operand = self._number(node.args[0])
        self._require_tensor(node.args[0], operand, f"{name}()")
        dims_node = node.args[1] if len(node.args) == 2 else None
        keepdim = False
        seen = set()
        for kw in node.keywords:
            if kw.arg in seen or (kw.arg == "dim" and dims_node is not None):
                raise self._error(kw.value, f"{name}() got '{kw.arg}' twice")
            seen.add(kw.arg)
            if kw.arg == "dim":
                dims_node = kw.value
            elif kw.arg == "keepdim":
                keepdim = self._bool(kw.value)
            else:
                raise self._error(
                    kw.value,
                    f"{name}() got an unexpected argument '{kw.arg}'",
                    "expected dim= or keepdim=",
                )
        dims = () if dims_node is None else self._dims(dims_node)
        return operand, dims, keepdim

    def _dims(self, node: ast.AST) -> tuple[int, ...]:
        items = node.elts if isinstance(node, ast.Tuple) else [node]
        dims = []
        for item in items:
            sign = 1
            if isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub):
                sign, item = -1, item.operand
            if not (isinstance(item, ast.Constant) and type(item.value) is int):
                raise self._error(item, "dim must be an int or a tuple of ints")
            dims.append(sign * item.value)
        if not dims or len(set(dims)) != len(dims):
            raise self._error(node, "dim must name distinct dimensions")
        return tuple(dims)

    def _bool(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name) and node.id in _BOOL_NAMES:
            return _BOOL_NAMES[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        raise self._error(node, "keepdim must be true or false")

    def _is_scalar_reduction(self, expr) -> bool:
        """Whether `expr` is the 0-dim result of a full reduction."""
        for op in self.ops:
            if op.result == expr and isinstance(op.expr, tuple(REDUCTIONS.values())):
                _, dims, keepdim = op.expr.args
                return not len(dims) and not keepdim
        return False

    def _require_tensor(self, node, expr, what):
        tensors = {self.symbols[n] for n in self.tensor_names if n in self.symbols}
        tensors |= {op.result for op in self.ops}
        if not (expr.free_symbols & tensors):
            raise self._error(
                node, f"{what} needs a tensor operand, got a scalar expression"
            )

    def _lift(self, expr: sp.Expr, node: ast.AST, whole: bool = True) -> sp.Symbol:
        """Make the tensor operation `expr` a graph node with a leaf symbol,
        named after its statement when it is the statement's whole value
        (`whole`: `node` is all of `expr`, not a part of what it computes)."""
        statement, value = getattr(self, "statement", ("expr", None))
        if whole and node is value and statement not in self.taken:
            name = statement
        else:
            base = f"{statement}_{_OP_NAMES[type(expr)]}"
            name, n = base, 1
            while name in self.taken:
                name, n = f"{base}{n}", n + 1
        self.taken.add(name)
        expr = stabilize(expr)
        result = sp.Symbol(name, real=True)
        location = self.locate(node.lineno - 1, node.col_offset)
        self.ops.append(OpNode(result, expr, location))
        return result


_OP_NAMES = {
    T.TensorLogSumExp: "logsumexp",
    T.TensorSum: "sum",
    T.TensorMean: "mean",
    T.TensorAmax: "amax",
    T.TensorAmin: "amin",
    T.TensorMatmul: "matmul",
    T.TensorMT: "mT",
    T.TensorGather: "gather",
    T.TensorSoftmax: "softmax",
    T.TensorLogSoftmax: "log_softmax",
    T.TensorOneHot: "one_hot",
}


def caret_to_power(text: str) -> tuple[str, dict[int, list[int]]]:
    """Replace each ``^`` operator token by ``**``, so that ``x^2 + 1`` binds
    like a power (Python's ``^`` binds looser than ``+``).  Done on tokens,
    not characters: a ``^`` in a comment is left alone.  Returns the new text
    and, per 0-based line, the original columns of the replaced carets."""
    carets: dict[int, list[int]] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP and token.string == "^":
                carets.setdefault(token.start[0] - 1, []).append(token.start[1])
    except (tokenize.TokenError, SyntaxError, ValueError):
        return text, {}  # ast.parse reports the problem
    if not carets:
        return text, {}
    lines = text.split("\n")
    for line, columns in carets.items():
        chars = lines[line]
        for column in sorted(columns, reverse=True):
            chars = chars[:column] + "**" + chars[column + 1 :]
        lines[line] = chars
    return "\n".join(lines), carets


def _shifted_locator(locate: Locator, carets: dict[int, list[int]]) -> Locator:
    """Map columns of the rewritten text back to the original text."""

    def shifted(line: int, column: int) -> Location:
        before = sum(
            1 for i, c in enumerate(sorted(carets.get(line, []))) if c + i < column
        )
        return locate(line, column - before)

    return shifted


# Builtins the generated code calls inside its functions (min, max and abs
# on numbers, len of a shape, next in a jvp, super() in the Module):
# an input or a statement of that name would hide them there.
# tests/test_hostile.py checks the list against generated modules, and
# codegen checks every generated function (`check_calls`).
GENERATED_CODE_BUILTINS = frozenset(
    {
        "abs",
        "len",
        "max",
        "min",
        "next",
        "staticmethod",
        "super",
        # raised by the wrappers: complex input, a meta tensor's check
        "TypeError",
        "RuntimeError",
    }
)

# Names refused for inputs, statements, outputs and dimensions: the generated
# code's own names, and its locals in every function it writes.
RESERVED_NAMES = frozenset(
    {
        "torch",
        "math",
        "ctx",
        "grad",
        "self",
        "inputs",
        "output",
        "outputs",
        "None",
        "True",
        "False",
        # Locals of the generated wrapper and jvp.
        "function",
        "device_type",
        "dtype",
        "like",
        *GENERATED_CODE_BUILTINS,
    }
)

# The attributes and methods of torch.nn.Module (dir(torch.nn.Module) and
# the instance attribute `training`, of torch 2.13; tests/test_hostile.py
# checks them against the installed torch, as building never imports it),
# and the method the generated Module adds.  An input or a dimension name
# is an attribute of the generated Module (``self.scale``, ``self.weight``,
# ``self.in_features``) or an argument of its methods: of these names it
# would overwrite the Module's own (``.eval()`` sets ``training``).
MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        # Added by the generated Module.
        "reset_parameters",
    }
)


def check_identifier(
    name: str, location: Location, what: str = "name", attribute: bool = False
) -> None:
    """Refuse names that would not be plain, safe Python identifiers in the
    output; with `attribute`, also the names of torch.nn.Module's attributes
    (an input or a dimension becomes one of the generated Module)."""
    if not name.isidentifier() or not name.isascii():
        raise SpecError(location, f"{what} '{name}' is not an identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(location, f"{what} '{name}' is a Python keyword")
    if name.startswith("_") or name.startswith("grad_") or name.startswith("needs_"):
        raise SpecError(
            location,
            f"{what} '{name}' is reserved",
            "names may not start with '_', 'grad_' or 'needs_'",
        )
    if name in GENERATED_CODE_BUILTINS:
        raise SpecError(
            location,
            f"{what} '{name}' is reserved",
            f"it would hide Python's {name}(), which the generated code calls",
        )
    if name in RESERVED_NAMES:
        raise SpecError(
            location,
            f"{what} '{name}' is reserved",
            "it would shadow a name the generated code uses",
        )
    if attribute and name in MODULE_ATTRIBUTES:
        raise SpecError(
            location,
            f"{what} '{name}' is reserved",
            f"it would overwrite torch.nn.Module.{name} in the generated Module",
        )


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Functions a user reaches for that fngen has no name for yet, and how to
# write them: the written forms are recognised (log(sum(exp(u))) is one
# stable logsumexp).
WRITTEN_FORMS = {
    "swish": "silu(x)",
    "softsign": "x/(1 + abs(x))",
    "celu": "max(0, x) + min(0, alpha*(exp(x/alpha) - 1))",
    "elu": "where(x > 0, x, alpha*(exp(x) - 1))",
    "selu": "scale*where(x > 0, x, alpha*(exp(x) - 1))",
    "leaky_relu": "where(x > 0, x, slope*x)",
    "hardtanh": "clamp(x, -1, 1)",
    "square": "x**2",
}


def _did_you_mean(name: str, candidates: list[str]) -> str | None:
    if name in WRITTEN_FORMS:
        return f"write it out: {name}(...) is {WRITTEN_FORMS[name]}"
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"did you mean '{close[0]}'?" if close else None


def _describe(node: ast.AST) -> str:
    descriptions = {
        ast.Constant: "this constant",
        ast.Lambda: "a lambda",
        ast.Subscript: "indexing",
        ast.List: "a list",
        ast.Dict: "a dict",
        ast.Tuple: "a tuple",
        ast.BoolOp: "'and'/'or'",
        ast.IfExp: "'if ... else'",
        ast.Starred: "'*'",
        ast.Await: "'await'",
        ast.NamedExpr: "':='",
        ast.JoinedStr: "an f-string",
        ast.Set: "a set",
        ast.ListComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
    }
    return descriptions.get(type(node), f"'{type(node).__name__}'")
