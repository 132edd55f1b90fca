"""Exact-string tests of the formula parser (`fngen.formula`).

The locator maps a formula's (line, column) to where it would sit in a spec
file: the text of ``    formula: ...`` on line 3 starts at column 14.
"""

from __future__ import annotations

import builtins
import subprocess
import sys

import pytest
import sympy as sp
import sympy.parsing.sympy_parser

from fngen import functions as F
from fngen import tensorops as T
from fngen.errors import Location, SpecError
from fngen.formula import FormulaParser

FORMULA_AT = Location("ops.yaml", 3, 14)


def locate(line: int, column: int) -> Location:
    return Location("ops.yaml", 3 + line, 14 + column)


def real(names: str):
    return sp.symbols(names, real=True, seq=True)


def parser_for(inputs=None, tensors=None, extra=None) -> FormulaParser:
    """A parser; `inputs` declares names (None: every unknown name is a tensor)."""
    symbols = None if inputs is None else {n: sp.Symbol(n, real=True) for n in inputs}
    return FormulaParser(locate, symbols, tensors, extra)


def parse(text, inputs=None, tensors=None, outputs=None):
    parser = parser_for(inputs, tensors)
    formula = parser.parse_statements(text, FORMULA_AT, outputs)
    return parser, formula


def output(text, **options):
    """The single output's expression."""
    _, formula = parse(text, **options)
    ((_, expr),) = formula.outputs
    return expr


def error(text, inputs=None, tensors=None, outputs=None) -> str:
    with pytest.raises(SpecError) as excinfo:
        parse(text, inputs, tensors, outputs)
    return str(excinfo.value)


# Expressions ------------------------------------------------------------------


def test_scalar_example_expression_and_input_order():
    parser, formula = parse("z = sqrt(x) + 1/x + 2*y**2")
    x, y = real("x y")
    ((out, expr),) = formula.outputs
    assert out == sp.Symbol("z", real=True)
    assert expr == sp.sqrt(x) + 1 / x + 2 * y**2
    assert str(expr) == "sqrt(x) + 2*y**2 + 1/x"
    assert list(parser.symbols) == ["x", "y"]
    assert formula.ops == ()
    assert formula.statements == (("z", expr),)


def test_inputs_are_in_order_of_first_appearance():
    parser, _ = parse("t = b*a\nz = t + c + a + b")
    assert list(parser.symbols) == ["b", "a", "c"]


def test_caret_is_power():
    (x,) = real("x")
    assert output("z = x^2") == x**2
    assert str(output("z = x^2")) == "x**2"
    assert output("z = x^3") == output("z = x**3")


def test_numbers_are_exact():
    (x,) = real("x")
    # The decimal text, not the nearest double: 0.1 is exactly 1/10.
    assert output("z = 0.1*x") == sp.Rational(1, 10) * x
    assert output("z = x**0.5") == sp.sqrt(x)
    assert (
        output("z = 0.5*(5*x**3 - 3*x)")
        == sp.Rational(5, 2) * x**3 - sp.Rational(3, 2) * x
    )


def test_unary_operators_and_pi():
    (x,) = real("x")
    assert output("z = -x") == -x
    assert output("z = +x") == x
    assert output("z = pi*x") == sp.pi * x


def test_intermediates_are_inlined():
    parser, formula = parse("t = x*x\nz = t + 1; w = z*2")
    (x,) = real("x")
    ((out, expr),) = formula.outputs
    assert out.name == "w"
    assert expr == 2 * (x**2 + 1)
    assert [name for name, _ in formula.statements] == ["t", "z", "w"]
    assert list(parser.symbols) == ["x"]


def test_outputs_select_a_statement():
    _, formula = parse("z = x; y = z*2; w = y + 1", outputs=["y"])
    (x,) = real("x")
    assert formula.outputs == ((sp.Symbol("y", real=True), 2 * x),)


def test_where_and_comparisons():
    x, y = real("x y")
    # fngen's Piecewise: SymPy's, without the collapsing that can recurse.
    assert output("z = where(x > 0, x, 2*x)") == F.Piecewise((x, x > 0), (2 * x, True))
    assert (
        str(output("z = where(x > 0, x, 2*x)")) == "Piecewise((x, x > 0), (2*x, True))"
    )
    # A comparison used as a number is 1 where it holds, else 0.
    assert output("z = 2*(x > y)") == 2 * F.Piecewise((1, x > y), (0, True))
    assert output("m = x > y; z = m + x") == F.Piecewise((1, x > y), (0, True)) + x
    # As an output, a comparison is itself: a bool tensor.
    assert output("z = x > y") == (x > y)
    assert output("z = x <= y") == (x <= y)
    assert output("z = x == y") == sp.Eq(x, y)
    assert output("z = x != y") == sp.Ne(x, y)
    assert output("z = (x > y)") == (x > y)


def test_pointwise_functions():
    x, y = real("x y")
    expr = output(
        "z = pow(x, 2) + hypot(x, y) + atan2(y, x) + clamp(x, -1, 1) + min(x, y)"
    )
    assert expr == x**2 + F.Hypot(x, y) + sp.atan2(y, x) + F.Clamp(
        x, -1, 1
    ) + F.Minimum(x, y)
    assert output("z = relu(x)") == F.Relu(x)
    assert output("z = max(x, 0)") == F.Maximum(x, 0)
    assert output("z = softplus(x) + logsigmoid(x) + sigmoid(x)") == (
        F.Softplus(x) + F.LogSigmoid(x) + F.Sigmoid(x)
    )
    assert output("z = rsqrt(x)") == 1 / sp.sqrt(x)
    assert output("z = lgamma(x) + digamma(x)") == F.LogGamma(x) + sp.digamma(x)


def test_names_sympify_would_misread_are_plain_inputs():
    # Under sympify, I is the imaginary unit, E Euler's number, N and S
    # functions, gamma and beta special functions: here they are inputs.
    parser, formula = parse("z = I*x + E + N + S + Q + O + beta + gamma + zeta")
    assert list(parser.symbols) == [
        "I",
        "x",
        "E",
        "N",
        "S",
        "Q",
        "O",
        "beta",
        "gamma",
        "zeta",
    ]
    ((_, expr),) = formula.outputs
    assert all(isinstance(s, sp.Symbol) for s in expr.free_symbols)
    assert expr.free_symbols == set(parser.symbols.values())
    assert expr.is_Add and len(expr.args) == 9


# Tensor operations ------------------------------------------------------------


def test_whole_reduction_is_one_op_named_after_its_statement():
    _, formula = parse("z = sum(sqrt(x*x - 1))")
    (x,) = real("x")
    z = sp.Symbol("z", real=True)
    (op,) = formula.ops
    assert op.result == z
    assert op.expr == T.TensorSum(sp.sqrt(x**2 - 1), sp.Tuple(), sp.false)
    assert str(op.expr) == "TensorSum(sqrt(x**2 - 1), (), False)"
    assert op.location == Location("ops.yaml", 3, 18)
    assert formula.outputs == ((z, z),)


def test_reduction_dims_and_keepdim():
    (x,) = real("x")
    _, formula = parse("z = sum(x, dim=(0, 1), keepdim=true)")
    assert formula.ops[0].expr == T.TensorSum(x, sp.Tuple(0, 1), sp.true)
    _, formula = parse("z = mean(x, -1)")
    assert formula.ops[0].expr == T.TensorMean(x, sp.Tuple(-1), sp.false)
    _, formula = parse("z = mean(x*x, dim=1, keepdim=True)")
    assert formula.ops[0].expr == T.TensorMean(x**2, sp.Tuple(1), sp.true)


def test_reduction_inside_an_expression_gets_a_derived_name():
    _, formula = parse("z = sum(x) + sum(x)")
    (x,) = real("x")
    assert [op.result.name for op in formula.ops] == ["z_sum", "z_sum1"]
    assert [op.location for op in formula.ops] == [
        Location("ops.yaml", 3, 18),
        Location("ops.yaml", 3, 27),
    ]
    ((_, expr),) = formula.outputs
    assert expr == sp.Symbol("z_sum", real=True) + sp.Symbol("z_sum1", real=True)


def test_matmul_and_transpose():
    parser, formula = parse("y = input @ weight.T + bias")
    inp, weight, bias = real("input weight bias")
    assert list(parser.symbols) == ["input", "weight", "bias"]
    (op,) = formula.ops
    assert op.result.name == "y_matmul"
    assert op.expr == T.TensorMatmul(inp, T.TensorMT(weight))
    ((_, expr),) = formula.outputs
    assert expr == bias + op.result


def test_transpose_alone_is_an_op():
    _, formula = parse("z = x.T")
    (x,) = real("x")
    (op,) = formula.ops
    assert (op.result.name, op.expr) == ("z", T.TensorMT(x))


def test_chained_matmul_keeps_operand_order():
    _, formula = parse("z = x @ y @ w")
    x, y, w = real("x y w")
    first, second = formula.ops
    assert first.expr == T.TensorMatmul(x, y)
    assert second.expr == T.TensorMatmul(first.result, w)
    assert second.result.name == "z"


def test_reduction_of_an_intermediate_op_location():
    _, formula = parse("y = x\nz = y @ y")
    (op,) = formula.ops
    assert op.location == Location("ops.yaml", 4, 18)


# Grad expressions -------------------------------------------------------------


def test_parse_expression_with_extra_names():
    x, grad = real("x grad")
    parser = parser_for({"x"}, {"x"}, {"grad": grad})
    assert parser.parse_expression("grad * sigmoid(x)") == grad * F.Sigmoid(x)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a = 1", "ops.yaml:3:14: error: expected a single expression"),
        ("x; x", "ops.yaml:3:14: error: expected a single expression"),
        ("y", "ops.yaml:3:14: error: unknown name 'y'"),
        (
            "grad_x",
            "ops.yaml:3:14: error: unknown name 'grad_x' (did you mean 'grad'?)",
        ),
    ],
)
def test_parse_expression_errors(text, message):
    (grad,) = real("grad")
    parser = parser_for({"x"}, {"x"}, {"grad": grad})
    with pytest.raises(SpecError) as excinfo:
        parser.parse_expression(text)
    assert str(excinfo.value) == message


# Errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        # unknown functions, arity, misuse of names
        (
            "z = sqr(x)",
            "ops.yaml:3:18: error: unknown function 'sqr' (did you mean 'sqrt'?)",
        ),
        (
            "z = expp(x)",
            "ops.yaml:3:18: error: unknown function 'expp' (did you mean 'exp'?)",
        ),
        ("z = sqrt(x, y)", "ops.yaml:3:18: error: sqrt() takes 1 argument, got 2"),
        (
            "z = where(x > 0, x)",
            "ops.yaml:3:18: error: where() takes 3 arguments, got 2",
        ),
        ("z = exp(x=1)", "ops.yaml:3:22: error: exp() takes no keyword arguments"),
        (
            "z = sqrt(*x)",
            "ops.yaml:3:18: error: '*' arguments are not allowed in a formula",
        ),
        (
            "z = exp",
            "ops.yaml:3:18: error: 'exp' is a function: call it with arguments",
        ),
        ("z = true", "ops.yaml:3:18: error: 'true' is only allowed as keepdim="),
        (
            "z = where(x, 1, 2)",
            "ops.yaml:3:24: error: where() needs a comparison as its first argument",
        ),
        # tensor operations
        (
            "z = 2 @ x",
            "ops.yaml:3:18: error: '@' needs a tensor operand, got a scalar expression",
        ),
        (
            "z = (2).T",
            "ops.yaml:3:19: error: '.T' needs a tensor operand, got a scalar expression",
        ),
        (
            "z = sum(2)",
            "ops.yaml:3:22: error: sum() needs a tensor operand, got a scalar expression",
        ),
        (
            "z = sum(x, dim=1.5)",
            "ops.yaml:3:29: error: dim must be an int or a tuple of ints",
        ),
        (
            "z = sum(x, dim=x)",
            "ops.yaml:3:29: error: dim must be an int or a tuple of ints",
        ),
        (
            "z = sum(x, dim=(0, 0))",
            "ops.yaml:3:29: error: dim must name distinct dimensions",
        ),
        (
            "z = sum(x, keepdim=maybe)",
            "ops.yaml:3:33: error: keepdim must be true or false",
        ),
        (
            "z = sum(x, foo=1)",
            "ops.yaml:3:29: error: sum() got an unexpected argument 'foo' (expected dim= or keepdim=)",
        ),
        (
            "z = sum(x, 1, 2)",
            "ops.yaml:3:18: error: sum() takes an expression and an optional dim, got 3 arguments",
        ),
        # code, not formulas
        ("import os", "ops.yaml:3:14: error: expected a statement 'name = expression'"),
        ('z = __import__("os")', "ops.yaml:3:18: error: unknown function '__import__'"),
        (
            "z = __import__('os').system('x')",
            "ops.yaml:3:18: error: only calls of named functions are allowed",
        ),
        (
            "z = os.system('x')",
            "ops.yaml:3:18: error: only calls of named functions are allowed",
        ),
        (
            "z = (lambda: 1)()",
            "ops.yaml:3:18: error: only calls of named functions are allowed",
        ),
        (
            "z = x.__class__",
            "ops.yaml:3:18: error: attribute '.__class__' is not supported (only '.T' is)",
        ),
        ("z = lambda: 1", "ops.yaml:3:18: error: a lambda is not allowed in a formula"),
        ("z = x[0]", "ops.yaml:3:18: error: indexing is not allowed in a formula"),
        ("z = [x]", "ops.yaml:3:18: error: a list is not allowed in a formula"),
        ("z = (x, y)", "ops.yaml:3:18: error: a tuple is not allowed in a formula"),
        (
            "z = x if c else y",
            "ops.yaml:3:18: error: 'if ... else' is not allowed in a formula",
        ),
        ("z = x and y", "ops.yaml:3:18: error: 'and'/'or' is not allowed in a formula"),
        (
            "z = 'abc'",
            "ops.yaml:3:18: error: this constant is not allowed in a formula (expected a number)",
        ),
        (
            "z = x + None",
            "ops.yaml:3:22: error: this constant is not allowed in a formula (expected a number)",
        ),
        (
            "z = a < b < c",
            "ops.yaml:3:18: error: chained comparisons are not supported (use where() twice)",
        ),
        ("z = x // y", "ops.yaml:3:18: error: operator '//' is not supported"),
        ("z = x % 2", "ops.yaml:3:18: error: operator '%' is not supported"),
        # statements
        ("z = y = x", "ops.yaml:3:14: error: expected a statement 'name = expression'"),
        ("z += x", "ops.yaml:3:14: error: expected a statement 'name = expression'"),
        ("z = x; z = 2*x", "ops.yaml:3:21: error: 'z' is already assigned at line 1"),
        (
            "y = x; x = 2",
            "ops.yaml:3:21: error: 'x' is an input and cannot be assigned",
        ),
        (
            "sqrt = x",
            "ops.yaml:3:14: error: 'sqrt' is a function or constant and cannot be assigned",
        ),
        (
            "pi = x",
            "ops.yaml:3:14: error: 'pi' is a function or constant and cannot be assigned",
        ),
        # keywords and reserved names
        (
            "z = x + class",
            "ops.yaml:3:22: error: invalid formula syntax: invalid syntax",
        ),
        ("class = x", "ops.yaml:3:20: error: invalid formula syntax: invalid syntax"),
        (
            "z = torch",
            "ops.yaml:3:18: error: name 'torch' is reserved (it would shadow a name the generated code uses)",
        ),
        (
            "z = ctx*2",
            "ops.yaml:3:18: error: name 'ctx' is reserved (it would shadow a name the generated code uses)",
        ),
        (
            "z = _x",
            "ops.yaml:3:18: error: name '_x' is reserved (names may not start with '_', 'grad_' or 'needs_')",
        ),
        # numbers
        (
            "z = 2**100000",
            "ops.yaml:3:18: error: constant power is too large (exponents up to 1024)",
        ),
        (
            "z = x * 10**10**10",
            "ops.yaml:3:22: error: constant power is too large (exponents up to 1024)",
        ),
        (
            "z = x * 2**-2000",
            "ops.yaml:3:22: error: constant power is too large (exponents up to 1024)",
        ),
        ("z = x/0", "ops.yaml:3:20: error: division by zero"),
        ("z = 0**-1", "ops.yaml:3:18: error: division by zero"),
        ("z = 1e400", "ops.yaml:3:18: error: the number is not finite"),
        # syntax
        (
            "z = (x + 1",
            "ops.yaml:3:18: error: invalid formula syntax: '(' was never closed",
        ),
        ("z = x)", "ops.yaml:3:19: error: invalid formula syntax: unmatched ')'"),
        (
            "z = x\n\ny = z +\n",
            "ops.yaml:5:21: error: invalid formula syntax: invalid syntax",
        ),
        (
            "y = x\nz = sqr(y)",
            "ops.yaml:4:18: error: unknown function 'sqr' (did you mean 'sqrt'?)",
        ),
        # empty
        ("", "ops.yaml:3:14: error: formula is empty (write 'name = expression')"),
        ("   \n", "ops.yaml:3:14: error: formula is empty (write 'name = expression')"),
    ],
)
def test_error_messages(text, message):
    assert error(text) == message


def test_f_string_is_refused():
    message = error("z = f'{x}'")
    assert message.startswith("ops.yaml:3:18: error: ")
    assert message.endswith("is not allowed in a formula")


def test_declared_inputs():
    c_float = dict(inputs={"x", "c"}, tensors={"x"})
    assert (
        error("x = 2", inputs={"x"})
        == "ops.yaml:3:14: error: 'x' is an input and cannot be assigned"
    )
    assert error("z = x*q", inputs={"x"}) == "ops.yaml:3:20: error: unknown name 'q'"
    assert error("z = x*xx", inputs={"x", "xy"}) == (
        "ops.yaml:3:20: error: unknown name 'xx' (did you mean 'x'?)"
    )
    assert error("z = c @ x", **c_float) == (
        "ops.yaml:3:18: error: '@' needs a tensor operand, got a scalar expression"
    )
    assert error("z = x @ c", **c_float) == (
        "ops.yaml:3:22: error: '@' needs a tensor operand, got a scalar expression"
    )
    assert error("z = c.T", **c_float) == (
        "ops.yaml:3:18: error: '.T' needs a tensor operand, got a scalar expression"
    )
    assert error("z = mean(c)", **c_float) == (
        "ops.yaml:3:23: error: mean() needs a tensor operand, got a scalar expression"
    )


def test_output_not_assigned():
    assert error("z = x", outputs=["w"]) == (
        "ops.yaml:3:14: error: output 'w' is not assigned by the formula"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("a = x*2; b = 3", "output 'b' is the constant 3"),
        ("a = x*2; b = sin(pi)*2", "output 'b' is a constant: sin(pi) * 2 is 0"),
        (
            "a = x*2; b = -exp(x) > 0.5",
            "output 'b' is always false: SymPy proves -exp(x) > 0.5 false for every input",
        ),
    ],
)
def test_an_output_that_folds_to_a_constant_is_refused(text, message):
    """It would have no shape (and a comparison no bool tensor): refused
    where it is written, naming what SymPy decided."""
    assert error(text, outputs=["a", "b"]) == (
        f"ops.yaml:3:23: error: {message} (an output must depend on a tensor input)"
    )


def test_nested_huge_constant_power_is_refused():
    with pytest.raises(SpecError, match="constant power is too large"):
        parse("z = x * (10**100)**1000")


def test_error_line_after_a_leading_blank_line():
    assert error("\nz = sqr(x)") == (
        "ops.yaml:4:18: error: unknown function 'sqr' (did you mean 'sqrt'?)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "z = where(x < asin(3), x, 0)",
        "z = where(x > pow(0, -1), x, 0)",
    ],
)
def test_invalid_constant_is_a_located_error(text):
    assert error(text).startswith("ops.yaml:3:")


def test_constant_condition_parses_quickly(tmp_path):
    script = (
        "from fngen.errors import Location, SpecError\n"
        "from fngen.formula import FormulaParser\n"
        "parser = FormulaParser(lambda line, col: Location('ops.yaml', line, col), None)\n"
        "try:\n"
        "    parser.parse_statements("
        "'z = where(2 >= relu(1), y, 7) + x', Location('ops.yaml', 3, 14), None)\n"
        "except SpecError:\n"
        "    pass\n"
    )
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("parsing did not finish in 5 s")


# No evaluation of spec text ---------------------------------------------------


def test_parsing_never_evaluates_text(monkeypatch):
    calls = []

    def refuse(name):
        def refused(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called while parsing a formula")

        return refused

    real_sympify = sp.sympify

    def sympify_no_strings(value, *args, **kwargs):
        if isinstance(value, str):
            calls.append("sympify")
            raise AssertionError("sympify of a string while parsing a formula")
        return real_sympify(value, *args, **kwargs)

    text = "t = sum(x*x, dim=-1, keepdim=true)\nz = where(x > 0, sqrt(t) + 1/x, 2*y^2) @ y.T"
    with monkeypatch.context() as patch:
        patch.setattr(builtins, "eval", refuse("eval"))
        patch.setattr(builtins, "exec", refuse("exec"))
        patch.setattr(sympy.parsing.sympy_parser, "parse_expr", refuse("parse_expr"))
        patch.setattr(sympy.parsing.sympy_parser, "eval_expr", refuse("eval_expr"))
        patch.setattr(sp, "sympify", sympify_no_strings)
        patch.setattr(sp, "parse_expr", refuse("parse_expr"), raising=False)
        parser, formula = parse(text)
        expression = parser_for({"x"}, {"x"}).parse_expression("x**2 + pi")
    assert calls == []
    assert list(parser.symbols) == ["x", "y"]
    assert [op.result.name for op in formula.ops] == ["t", "z"]
    (x,) = real("x")
    assert expression == x**2 + sp.pi


def test_hostile_formula_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    text = f"z = __import__('os').system('touch {marker}')"
    assert (
        error(text) == "ops.yaml:3:18: error: only calls of named functions are allowed"
    )
    assert not marker.exists()
