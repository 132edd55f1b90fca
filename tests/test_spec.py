"""`parse_spec` on inline YAML: the model it builds, and one exact, located
message per bad spec."""

from __future__ import annotations

import sys
import textwrap

import pytest
import sympy as sp
import torch

from fngen.api import load
from fngen.errors import Location, SpecError
from fngen.model import DEFAULT_DOMAIN, InputKind
from fngen.spec import generated_names, parse_spec


def spec_of(text: str | bytes):
    if isinstance(text, str):
        text = textwrap.dedent(text)
    return parse_spec(text, "ops.yaml")


def error(text: str | bytes) -> str:
    with pytest.raises(SpecError) as excinfo:
        spec_of(text)
    return str(excinfo.value)


def one_function(body: str) -> str:
    """A spec with one function `f` whose fields are `body` (4-space indented)."""
    return "fngen: 1\nfunctions:\n  f:\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


def with_input(name: str) -> str:
    """A spec whose function `f` declares a second input `name`, on line 7."""
    return one_function(f"""\
        formula: y = x + {name}
        inputs:
          x: tensor
          {name}: tensor
        """)


# Valid specs ------------------------------------------------------------------


def test_minimal_spec():
    spec = spec_of("""\
        fngen: 1
        functions:
          square:
            formula: y = x*x
        """)
    assert spec.path == "ops.yaml"
    assert spec.doc is None
    assert (spec.check_device, spec.check_dtype) == (None, None)
    (fn,) = spec.functions
    assert fn.name == "square"
    assert fn.location == Location("ops.yaml", 3, 3)
    assert fn.doc is None
    assert [(i.name, i.kind) for i in fn.inputs] == [("x", InputKind.TENSOR)]
    x = sp.Symbol("x", real=True)
    assert fn.formula.outputs == ((sp.Symbol("y", real=True), x**2),)
    assert fn.once_differentiable is False
    assert fn.grads == ()


def test_top_level_fields():
    spec = spec_of("""\
        fngen: 1
        doc: My ops.
        check:
          device: cuda:1
          dtype: float32
        functions:
          square:
            doc: The square.
            formula: y = x*x
            once_differentiable: true
        """)
    assert spec.doc == "My ops."
    assert (spec.check_device, spec.check_dtype) == ("cuda:1", "float32")
    (fn,) = spec.functions
    assert fn.doc == "The square."
    assert fn.once_differentiable is True


def test_functions_keep_their_order():
    spec = spec_of("""\
        fngen: 1
        functions:
          zeta_op: {formula: y = x}
          alpha_op: {formula: y = 2*x}
          mid_op: {formula: y = 3*x}
        """)
    assert [fn.name for fn in spec.functions] == ["zeta_op", "alpha_op", "mid_op"]


def test_inputs_default_to_tensors_in_order_of_first_appearance():
    spec = spec_of(one_function("formula: t = b*a; z = t + c + a\n"))
    (fn,) = spec.functions
    assert [i.name for i in fn.inputs] == ["b", "a", "c"]
    assert all(i.kind is InputKind.TENSOR for i in fn.inputs)
    assert all(i.domain == DEFAULT_DOMAIN == (-2.0, 2.0) for i in fn.inputs)
    assert all(not i.has_default and not i.is_param for i in fn.inputs)


def test_declared_inputs_keep_the_declared_order():
    spec = spec_of(one_function("""\
            formula: z = sqrt(x) + 1/x + 2*y**2
            inputs:
              y: tensor
              x: {domain: [0.5, 4.0]}
            """))
    (fn,) = spec.functions
    assert [(i.name, i.kind, i.domain) for i in fn.inputs] == [
        ("y", InputKind.TENSOR, (-2.0, 2.0)),
        ("x", InputKind.TENSOR, (0.5, 4.0)),
    ]
    assert fn.inputs[1].location == Location("ops.yaml", 7, 7)


def test_float_input_and_defaults():
    spec = spec_of(one_function("""\
            formula: s = heaviside(v - threshold) * alpha * n + where(flag > 0, v, 0)
            inputs:
              v: tensor
              threshold: {type: float, default: 1}
              alpha: {type: float, default: 4.0}
              n: {type: int, default: 3}
              flag: {type: bool, default: false}
            """))
    (fn,) = spec.functions
    inputs = {i.name: i for i in fn.inputs}
    assert [i.name for i in fn.inputs] == ["v", "threshold", "alpha", "n", "flag"]
    assert inputs["v"].kind is InputKind.TENSOR
    assert (inputs["threshold"].kind, inputs["threshold"].default) == (
        InputKind.FLOAT,
        1.0,
    )
    assert type(inputs["threshold"].default) is float
    assert inputs["threshold"].has_default
    assert (inputs["alpha"].kind, inputs["alpha"].default) == (InputKind.FLOAT, 4.0)
    assert (inputs["n"].kind, inputs["n"].default) == (InputKind.INT, 3)
    assert (inputs["flag"].kind, inputs["flag"].default) == (InputKind.BOOL, False)
    assert inputs["flag"].has_default
    assert [i.name for i in fn.tensor_inputs] == ["v"]


def test_float_input_without_default():
    spec = spec_of(one_function("""\
            formula: out = tensor * constant
            inputs:
              tensor: tensor
              constant: float
            """))
    (fn,) = spec.functions
    constant = fn.input("constant")
    assert constant.kind is InputKind.FLOAT
    assert not constant.has_default
    assert not constant.is_tensor


def test_param_dims_names_and_init():
    spec = spec_of(one_function("""\
            formula: y = input @ weight.T + bias
            inputs:
              input: tensor
              weight: {param: [out_features, in_features], init: "uniform(-1/sqrt(in_features), 1/sqrt(in_features))"}
              bias: {param: [out_features], init: zeros}
              scale: {param: [1], init: constant(0.25)}
            check:
              shapes: {input: [5, 4], weight: [3, 4], bias: [3]}
              atol: 1e-6
              skip: {compile: slow here}
            """).replace("+ bias\n", "+ bias*scale\n"))
    (fn,) = spec.functions
    weight, bias, scale = fn.input("weight"), fn.input("bias"), fn.input("scale")
    assert weight.param == ("out_features", "in_features")
    assert weight.init == "uniform(-1/sqrt(in_features), 1/sqrt(in_features))"
    assert weight.is_param and weight.is_tensor
    assert (bias.param, bias.init) == (("out_features",), "zeros")
    assert (scale.param, scale.init) == ((1,), "constant(0.25)")
    assert not fn.input("input").is_param
    assert fn.check.shapes == (("input", (5, 4)), ("weight", (3, 4)), ("bias", (3,)))
    assert (fn.check.atol, fn.check.rtol) == (1e-6, None)
    assert fn.check.skip == (("compile", "slow here"),)


def test_grad_override():
    spec = spec_of(one_function("""\
            formula: s = heaviside(v - threshold)
            inputs:
              v: tensor
              threshold: {type: float, default: 1.0}
            grad:
              v: grad * sigmoid(v - threshold)
            """))
    (fn,) = spec.functions
    ((name, expr),) = fn.grads
    assert name == "v"
    assert {s.name for s in expr.free_symbols} == {"grad", "v", "threshold"}


def test_bytes_with_bom_and_crlf():
    spec = spec_of(
        b"\xef\xbb\xbffngen: 1\r\nfunctions:\r\n  f:\r\n    formula: y = x\r\n"
    )
    assert [fn.name for fn in spec.functions] == ["f"]


def test_generated_names():
    assert generated_names("sqrt_and_inverse") == (
        "SqrtAndInverseFunction",
        "sqrt_and_inverse",
        "SqrtAndInverse",
    )


# Bad specs: the file and the top level -----------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "ops.yaml:1:1: error: spec file is empty"),
        ("# only a comment\n", "ops.yaml:1:1: error: spec file is empty"),
        (
            b"\x00\x01\x02",
            "ops.yaml:1:1: error: spec file is not UTF-8 text (it has a NUL byte)",
        ),
        (
            b"fngen: 1\n\xff\xfe",
            "ops.yaml:1:1: error: spec file is not UTF-8 text (byte 0xff at offset 9)",
        ),
        (
            "fngen: 1\nfunctions: {\n",
            "ops.yaml:3:1: error: invalid YAML: while parsing a flow node, "
            "expected the node content, but found '<stream end>'",
        ),
        (
            "fngen: 1\nfunctions:\n  f:\n    formula: [y = x\n",
            "ops.yaml:5:1: error: invalid YAML: while parsing a flow sequence at line 4, "
            "expected ',' or ']', but got '<stream end>'",
        ),
        (
            "fngen: 1\nfunctions:\n\tf:\n\t\tformula: y = x\n",
            "ops.yaml:3:1: error: invalid YAML: while scanning for the next token, "
            "found character '\\t' that cannot start any token",
        ),
        (
            "- 1\n",
            "ops.yaml:1:1: error: the top level of a spec file must be a mapping",
        ),
        (
            "functions:\n  f:\n    formula: y = x\n",
            "ops.yaml:1:1: error: missing key 'fngen' (the first line should be 'fngen: 1')",
        ),
        (
            "fngen: 2\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:1:8: error: unsupported format version 2 (expected 1)",
        ),
        (
            "fngen: '1'\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:1:8: error: unsupported format version '1' (expected 1)",
        ),
        (
            "fngen: true\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:1:8: error: unsupported format version True (expected 1)",
        ),
        (
            "fngen: 1\nfunction:\n  f:\n    formula: y = x\n",
            "ops.yaml:2:1: error: unknown key 'function' in the spec (did you mean 'functions'?)",
        ),
        (
            "fngen: 1\nfoo: 1\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:2:1: error: unknown key 'foo' in the spec "
            "(expected one of: fngen, doc, check, export, namespace, kernels, functions)",
        ),
        ("fngen: 1\n", "ops.yaml:1:1: error: missing key 'functions'"),
        ("fngen: 1\nfunctions: {}\n", "ops.yaml:2:12: error: 'functions' is empty"),
        (
            "fngen: 1\ncheck: {device: gpu}\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:2:17: error: unknown device 'gpu' (cpu, cuda, cuda:N or mps)",
        ),
        (
            "fngen: 1\ncheck: {dtype: float16}\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:2:16: error: unknown dtype 'float16' (expected one of: float64, float32)",
        ),
        (
            "fngen: 1\ncheck: {devise: cpu}\nfunctions:\n  f:\n    formula: y = x\n",
            "ops.yaml:2:9: error: unknown key 'devise' in check (did you mean 'device'?)",
        ),
    ],
)
def test_bad_file(text, message):
    assert error(text) == message


def test_float_version_is_refused():
    assert error("fngen: 1.0\nfunctions:\n  f:\n    formula: y = x\n") == (
        "ops.yaml:1:8: error: unsupported format version 1.0 (expected 1)"
    )


# Bad specs: functions ---------------------------------------------------------

H = "fngen: 1\nfunctions:\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            H + "  f:\n    formula: y = x\n    input: {x: tensor}\n",
            "ops.yaml:5:5: error: unknown key 'input' in function 'f' (did you mean 'inputs'?)",
        ),
        (
            H + "  f:\n    formula: y = x\n    formula: y = 2*x\n",
            "ops.yaml:5:5: error: duplicate key 'formula' (first defined at line 4)",
        ),
        (
            H + "  f:\n    formula: y = x\n  f:\n    formula: y = 2*x\n",
            "ops.yaml:5:3: error: duplicate key 'f' (first defined at line 3)",
        ),
        (
            H + "  MyOp:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'MyOp' is not a snake_case identifier",
        ),
        (
            H + "  my-op:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'my-op' is not a snake_case identifier",
        ),
        (
            H + "  foo__bar:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'foo__bar' is not a snake_case identifier",
        ),
        (
            H + "  lambda:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'lambda' is a Python keyword",
        ),
        (
            H + "  class:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'class' is a Python keyword",
        ),
        (
            H + "  torch:\n    formula: y = x\n",
            "ops.yaml:3:3: error: function name 'torch' is reserved "
            "(it would shadow a name the generated code uses)",
        ),
        (
            H + "  foo_2:\n    formula: y = x\n  foo2:\n    formula: y = x\n",
            "ops.yaml:5:3: error: function 'foo2' generates 'Foo2Function', "
            "which function 'foo_2' also generates",
        ),
        (
            H + "  foo:\n    formula: y = x\n  foo_function:\n    formula: y = x\n",
            "ops.yaml:5:3: error: function 'foo_function' generates 'FooFunction', "
            "which function 'foo' also generates",
        ),
        (
            H + "  f:\n    doc: hi\n",
            "ops.yaml:4:5: error: function 'f' has no 'formula'",
        ),
        (
            H + "  f:\n    formula: 3\n",
            "ops.yaml:4:14: error: formula must be a string",
        ),
        (
            H + "  f:\n    formula: y = x\n    once_differentiable: yes\n",
            "ops.yaml:5:26: error: once_differentiable must be true or false",
        ),
    ],
)
def test_bad_function(text, message):
    assert error(text) == message


def test_input_named_like_a_generated_name():
    text = one_function("formula: y = x + F\ninputs: {x: tensor, F: tensor}\n")
    assert error(text) == (
        "ops.yaml:5:25: error: input 'F' has the name of a generated class or function"
    )
    text = (
        H
        + "  foo:\n    formula: y = x*FooFunction\n    inputs:\n      x: tensor\n      FooFunction: tensor\n"
    )
    assert error(text) == (
        "ops.yaml:7:7: error: input 'FooFunction' has the name of a generated class or function"
    )


# Bad specs: inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("torch", "is reserved (it would shadow a name the generated code uses)"),
        ("ctx", "is reserved (it would shadow a name the generated code uses)"),
        ("grad", "is reserved (it would shadow a name the generated code uses)"),
        ("math", "is reserved (it would shadow a name the generated code uses)"),
        ("self", "is reserved (it would shadow a name the generated code uses)"),
        # Locals of the wrapper (function = FFunction) and of the jvp.
        ("function", "is reserved (it would shadow a name the generated code uses)"),
        ("dtype", "is reserved (it would shadow a name the generated code uses)"),
        ("device_type", "is reserved (it would shadow a name the generated code uses)"),
        ("like", "is reserved (it would shadow a name the generated code uses)"),
        ("lambda", "is a Python keyword"),
        ("None", "is a Python keyword"),
        ("match", "is a Python keyword"),
        ("grad_x", "is reserved (names may not start with '_', 'grad_' or 'needs_')"),
        ("needs_x", "is reserved (names may not start with '_', 'grad_' or 'needs_')"),
        ("_private", "is reserved (names may not start with '_', 'grad_' or 'needs_')"),
    ],
)
def test_reserved_input_names(name, problem):
    assert (
        error(with_input(name)) == f"ops.yaml:7:7: error: input name '{name}' {problem}"
    )


@pytest.mark.parametrize("name", ["torch", "ctx", "grad"])
def test_reserved_names_in_an_undeclared_formula(name):
    assert error(one_function(f"formula: y = x + {name}\n")) == (
        f"ops.yaml:4:22: error: name '{name}' is reserved "
        "(it would shadow a name the generated code uses)"
    )


def input_spec(entry: str, formula: str = "y = x*a") -> str:
    """Function `f` with tensor input x and a second input `a: entry` on line 7."""
    return one_function(f"formula: {formula}\ninputs:\n  x: tensor\n  a: {entry}\n")


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "tensr",
            "ops.yaml:7:10: error: unknown input type 'tensr' (did you mean 'tensor'?)",
        ),
        (
            "{type: double}",
            "ops.yaml:7:17: error: unknown input type 'double' "
            "(expected one of: tensor, float, int, bool, long)",
        ),
        ("{domain: [2, 1]}", "ops.yaml:7:19: error: domain must have lo < hi"),
        ("{domain: [1, 1]}", "ops.yaml:7:19: error: domain must have lo < hi"),
        ("{domain: [0, 1, 2]}", "ops.yaml:7:19: error: domain must be a list [lo, hi]"),
        (
            "{domain: [.nan, 1]}",
            "ops.yaml:7:20: error: domain bound must be a finite number",
        ),
        (
            "{type: float, domain: [0, 1]}",
            "ops.yaml:7:32: error: only tensor inputs have a domain",
        ),
        (
            "{default: 1.0}",
            "ops.yaml:7:20: error: only float, int and bool inputs take a default",
        ),
        (
            "{type: tensor, default: 1.0}",
            "ops.yaml:7:34: error: only float, int and bool inputs take a default",
        ),
        ("{type: int, default: 2.5}", "ops.yaml:7:31: error: default must be an int"),
        (
            "{type: bool, default: 2}",
            "ops.yaml:7:32: error: default must be true or false",
        ),
        (
            "{type: float, default: abc}",
            "ops.yaml:7:33: error: default must be a finite number",
        ),
        ("{param: [2.5]}", "ops.yaml:7:19: error: a size must be an integer or a name"),
        (
            "{param: [true]}",
            "ops.yaml:7:19: error: a size must be an integer or a name",
        ),
        ("{param: [-1]}", "ops.yaml:7:19: error: a size must not be negative"),
        ("{param: 3}", "ops.yaml:7:18: error: a shape must be a list of sizes"),
        (
            "{param: [ctx]}",
            "ops.yaml:7:19: error: dimension name 'ctx' is reserved "
            "(it would shadow a name the generated code uses)",
        ),
        (
            "{type: float, param: [3]}",
            "ops.yaml:7:31: error: a param must be a float tensor",
        ),
        ("{init: zeros}", "ops.yaml:7:17: error: 'init' needs 'param'"),
        (
            "{param: [3], init: foo()}",
            "ops.yaml:7:29: error: unknown init 'foo()' (expected one of: zeros, ones, "
            "constant, uniform, normal, kaiming_uniform, xavier_uniform)",
        ),
        (
            "{param: [3], init: zero}",
            "ops.yaml:7:29: error: unknown init 'zero' (did you mean 'zeros'?)",
        ),
        (
            "{param: [3], init: uniform(1)}",
            "ops.yaml:7:29: error: init uniform() takes 2 argument(s)",
        ),
        ("{param: [n], init: constant(m)}", "ops.yaml:7:29: error: unknown name 'm'"),
        (
            "{param: [3], init: \"constant(__import__('os').getpid())\"}",
            "ops.yaml:7:30: error: only calls of named functions are allowed",
        ),
        (
            "{param: [3], init: os.system}",
            "ops.yaml:7:29: error: unknown init 'os.system' (did you mean 'ones'?)",
        ),
        ("{optional: maybe}", "ops.yaml:7:21: error: optional must be true or false"),
        (
            "{type: float, optional: true}",
            "ops.yaml:7:34: error: only tensors can be optional",
        ),
        (
            "{tipe: float}",
            "ops.yaml:7:11: error: unknown key 'tipe' in input 'a' (did you mean 'type'?)",
        ),
    ],
)
def test_bad_input(entry, message):
    assert error(input_spec(entry)) == message


def test_unused_and_unknown_inputs():
    spec = parse_spec(input_spec("float", "y = x"), "ops.yaml")
    assert [str(w) for w in spec.warnings] == [
        "ops.yaml:7:7: warning: input 'a' is not used by the formula "
        "(it is accepted and ignored; its gradient is None)"
    ]
    assert (
        error(input_spec("float", "y = x*a*c"))
        == "ops.yaml:4:22: error: unknown name 'c'"
    )
    assert error(one_function("formula: y = b\ninputs: {b: float}\n")) == (
        "ops.yaml:4:14: error: function 'f' has no tensor input"
    )
    assert error(one_function("formula: y = x\ninputs: {}\n")) == (
        "ops.yaml:5:13: error: 'inputs' is empty"
    )


# Bad specs: formula, outputs, grad, check -------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "formula: y = __import__('os').system('x')\n",
            "ops.yaml:4:18: error: only calls of named functions are allowed",
        ),
        (
            "formula: \"y = __import__('os').system('x')\"\n",
            "ops.yaml:4:19: error: only calls of named functions are allowed",
        ),
        (
            "formula: |\n  t = x*x\n  y = sqr(t)\n",
            "ops.yaml:6:11: error: unknown function 'sqr' (did you mean 'sqrt'?)",
        ),
        (
            "formula: y = sqrt(x\n",
            "ops.yaml:4:22: error: invalid formula syntax: '(' was never closed",
        ),
        (
            "formula: ''\n",
            "ops.yaml:4:14: error: formula is empty (write 'name = expression')",
        ),
        (
            "formula: x = 2*y\ninputs: {x: tensor, y: tensor}\n",
            "ops.yaml:4:14: error: 'x' is an input and cannot be assigned",
        ),
        (
            "formula: y = x\noutputs: [z]\n",
            "ops.yaml:4:14: error: output 'z' is not assigned by the formula",
        ),
        (
            "formula: y = x\noutputs: [x]\n",
            "ops.yaml:4:14: error: output 'x' is not assigned by the formula",
        ),
        (
            "formula: y = x\noutputs: []\n",
            "ops.yaml:5:14: error: 'outputs' must be a non-empty list of names",
        ),
        (
            "formula: y = x; z = 2*x\noutputs: [y, y]\n",
            "ops.yaml:5:18: error: output 'y' is listed twice",
        ),
        (
            "formula: y = x*a\ngrad:\n  z: grad\n",
            "ops.yaml:6:7: error: 'z' is not an input",
        ),
        (
            "formula: y = x*a\ngrad:\n  xx: grad\n",
            "ops.yaml:6:7: error: 'xx' is not an input (did you mean 'x'?)",
        ),
        (
            "formula: y = x*a\ninputs: {x: tensor, a: float}\ngrad:\n  a: grad\n",
            "ops.yaml:7:7: error: 'a' is not a tensor input: its gradient is always None",
        ),
        (
            "formula: y = heaviside(x)\ngrad:\n  x: grd\n",
            "ops.yaml:6:10: error: unknown name 'grd' (did you mean 'grad'?)",
        ),
        (
            "formula: y = heaviside(x)\ngrad:\n  x: __import__('os')\n",
            "ops.yaml:6:10: error: unknown function '__import__'",
        ),
        (
            "formula: y = x\ncheck:\n  skip: {double_backwards: nope}\n",
            "ops.yaml:6:14: error: unknown key 'double_backwards' in skip "
            "(did you mean 'double_backward'?)",
        ),
        (
            "formula: y = x\ncheck:\n  skip: {foo: nope}\n",
            "ops.yaml:6:14: error: unknown key 'foo' in skip (expected one of: reference, "
            "gradcheck, double_backward, forward_ad, batched, vmap, compile, float32, export, "
            "kernel)",
        ),
        (
            "formula: y = x\ncheck:\n  skip: {vmap: 3}\n",
            "ops.yaml:6:20: error: skip reason must be a string",
        ),
        (
            "formula: y = x\ncheck: {shapes: {z: [3]}}\n",
            "ops.yaml:5:22: error: 'z' is not a tensor input",
        ),
        (
            "formula: y = x\ncheck: {shapes: {x: [n]}}\n",
            "ops.yaml:5:25: error: check shapes must be integers",
        ),
        (
            "formula: y = x\ncheck: {atol: -1}\n",
            "ops.yaml:5:19: error: atol must be positive",
        ),
        (
            "formula: y = x\ncheck: {tol: 1}\n",
            "ops.yaml:5:13: error: unknown key 'tol' in check (did you mean 'rtol'?)",
        ),
    ],
)
def test_bad_formula_outputs_grad_check(body, message):
    assert error(one_function(body)) == message


@pytest.mark.parametrize("constant", ["log(0)", "digamma(-1)", "lgamma(-1)"])
def test_infinite_constant_is_reported_as_such(constant):
    message = error(one_function(f"formula: y = x + {constant}\n"))
    assert message.startswith("ops.yaml:4:")
    assert "not used" not in message


def test_formula_and_init_text_never_run(tmp_path):
    marker = tmp_path / "ran"
    command = f"__import__('os').system('touch {marker}')"
    text = one_function(f'formula: "y = x + {command}"\n')
    assert (
        error(text) == "ops.yaml:4:23: error: only calls of named functions are allowed"
    )
    text = input_spec(f'{{param: [3], init: "constant({command})"}}')
    assert (
        error(text) == "ops.yaml:7:30: error: only calls of named functions are allowed"
    )
    assert not marker.exists()


# Names the generated module would get wrong -----------------------------------


def gradcheck(function, *args):
    return torch.autograd.gradcheck(
        function, args, check_forward_ad=True, fast_mode=True
    )


def refused_or_correct(text: str, check) -> None:
    """A spec whose names collide with generated names must be refused with a
    SpecError, or else generate a module that still computes the right thing."""
    try:
        spec = spec_of(text)
    except SpecError:
        return
    module = load(spec, name="fngen_test_collision")
    try:
        check(module)
    finally:
        sys.modules.pop("fngen_test_collision", None)


def tensor(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.rand(*shape, dtype=torch.float64, generator=generator)
        .add(0.5)
        .requires_grad_()
    )


def test_inferred_input_named_like_the_function():
    def check(module):
        x = tensor(3)
        assert torch.allclose(module.Foo()(x), 2 * x)

    refused_or_correct(H + "  foo:\n    formula: y = foo*2\n", check)


def test_inferred_input_named_like_the_function_class():
    def check(module):
        x = tensor(3)
        assert torch.allclose(module.foo(x), 2 * x)

    refused_or_correct(H + "  foo:\n    formula: y = FooFunction*2\n", check)


def test_input_named_like_a_tangent():
    def check(module):
        assert gradcheck(module.f, tensor(3, seed=1), tensor(3, seed=2))

    refused_or_correct(one_function("formula: y = x * x_t\n"), check)


def test_input_named_like_a_saved_shape():
    text = one_function(
        "formula: y = x + b*x_shape\ninputs: {x: tensor, b: tensor, x_shape: float}\n"
    )

    def check(module):
        x, b = tensor(4, seed=1), tensor(3, 4, seed=2)
        y = module.f(x, b, 2.0)
        assert torch.allclose(y, x + 2 * b)
        y.sum().backward()
        assert torch.allclose(x.grad, torch.full_like(x, 3.0))

    refused_or_correct(text, check)


def test_function_named_like_a_builtin_the_module_uses():
    text = H + "  staticmethod:\n    formula: y = 2*x\n  foo:\n    formula: y = 3*x\n"

    def check(module):
        x = tensor(3)
        assert torch.allclose(module.foo(x), 3 * x)

    refused_or_correct(text, check)
