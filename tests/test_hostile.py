"""Hostile text in every free-text field of a spec.

Module and function docs, formulas (their comments), check skip reasons, init
and grad strings, names, and the spec's file name are tried with quotes,
triple quotes, backslashes, a trailing backslash, newlines, carriage
returns, NUL, unicode, line separators, lone surrogates, Jinja2 syntax and
code meant to break out of a docstring or a comment.  Either the spec is
refused with a located `SpecError`, or the generated module

* compiles and is black-clean,
* imports without running anything (no file appears) and defines only the
  generated names,
* carries the text faithfully in its docstrings.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

import black
import pytest

import fngen
from fngen import SpecError
from fngen.codegen import BLACK_MODE
from fngen.spec import class_name, parse_spec
from yamltext import yaml_quoted

PWNED = Path(tempfile.gettempdir()) / f"fngen_PWNED_hostile_{os.getpid()}"
RUN = f"import os; os.system('touch {PWNED}')"

# Text a docstring must carry as is (whitespace at line ends aside).
PRINTABLE = {
    "single quotes": "it's 'quoted'",
    "double quotes": 'say "hi" to "them"',
    "ends with a quote": 'ends with "',
    "ends with two quotes": 'ends with ""',
    "starts with a quote": '"starts',
    "triple double quotes": 'a """ b',
    "only triple quotes": '"""',
    "four quotes": '""""',
    "triple single quotes": "a ''' b",
    "backslashes": r"a\b\\c \n \t \x41 \N{BULLET} \u0041 \"",
    "trailing backslash": "ends with \\",
    "backslash before quote": 'a \\" b \\""" c',
    "newlines": "line one\nline two\n\nline four",
    "unicode": "héllo wörld: π ≈ 3.14, 🎉 中文, non\u00a0breaking",
    "jinja": "{{ 7*7 }} {% if true %}x{% endif %} {# comment #} {{ version }} {%- raw %}",
    "code in triple double": f'"""; {RUN}; """',
    "code in triple single": f"'''; {RUN}; '''",
    "code on its own line": f'\n"""\n{RUN}\n"""\n',
    "escaped quote code": f'\\"""; {RUN}; #',
    "tabs": "tab\tseparated\tvalues",
}
# Control characters: refused, or carried faithfully.
CONTROL = {
    "carriage return": "one\rtwo\r\nthree",
    "code after a carriage return": f"x\r{RUN} #",
    "vertical tab and form feed": "a\x0bb\x0cc",
    "escape sequence": "\x1b[31mred\x1b[0m",
    "unicode line separators": "a\u2028b\u2029c\x85d",
    "bell and backspace": "a\x07b\x08c",
}
# Refused: a NUL cannot be in Python source, a lone surrogate in UTF-8.
REFUSED = {
    "NUL": "a\0b",
    "lone surrogate": "a\ud800b",
}
PAYLOADS = {**PRINTABLE, **CONTROL, **REFUSED}


def check_not_pwned(what: str) -> None:
    """Fail if a payload ran; remove its trace so later tests start clean."""
    if PWNED.exists():
        PWNED.unlink()
        raise AssertionError(what)


def normalized(doc: str) -> str:
    """Docstring text up to what black and Python may change: indentation
    and whitespace at the ends of lines."""
    lines = inspect.cleandoc(doc.expandtabs()).split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def build(text: str, filename: str = "hostile.yaml"):
    """(spec, source) or SpecError; the source compiles and is black-clean,
    and nothing ran while building."""
    check_not_pwned("a payload ran before this test")
    try:
        spec = parse_spec(text, filename)
        source = fngen.generate(spec)
    finally:
        check_not_pwned("building ran code")
    compile(source, "<hostile>", "exec")
    assert black.format_str(source, mode=BLACK_MODE) == source
    return spec, source


def import_module(spec, source: str) -> dict:
    """Execute the module; it runs nothing and defines only what it should."""
    namespace: dict = {"__name__": "fngen_hostile_generated"}
    exec(compile(source, "<hostile>", "exec"), namespace)
    check_not_pwned("importing the generated module ran code")
    expected = {
        "torch",
        "math",
        "_has_tangent",
        "_autocast_cast",
        "_without_jvp",
        "_accumulated",
    }
    for fn in spec.functions:
        cls = class_name(fn.name)
        expected |= {
            f"{cls}Function",
            fn.name,
            cls,
            f"_{cls}Traceable",
            f"_{cls}Traced",
        }
    defined = {n for n in namespace if not (n.startswith("__") and n.endswith("__"))}
    assert defined <= expected, defined - expected
    assert set(namespace["__all__"]) <= defined
    return namespace


def refused_cleanly(text: str, filename: str = "hostile.yaml") -> bool:
    try:
        build(text, filename)
    except SpecError as error:
        assert str(error).startswith(f"{filename}:"), str(error)
        return True
    return False


def doc_spec(module_doc: str | None = None, function_doc: str | None = None) -> str:
    lines = ["fngen: 1"]
    if module_doc is not None:
        lines.append(f"doc: {yaml_quoted(module_doc)}")
    lines += ["functions:", "  f:", "    formula: y = x"]
    if function_doc is not None:
        lines.append(f"    doc: {yaml_quoted(function_doc)}")
    return "\n".join(lines) + "\n"


def doc_cases():
    for key, payload in PAYLOADS.items():
        yield pytest.param(payload, id=key)


@pytest.mark.parametrize("where", ["module", "function"])
@pytest.mark.parametrize("payload", list(doc_cases()))
def test_doc(payload, where):
    text = doc_spec(**{f"{where}_doc": payload})
    if payload in REFUSED.values():
        assert refused_cleanly(text)
        return
    spec, source = build(text)
    namespace = import_module(spec, source)
    if where == "module":
        assert normalized(namespace["__doc__"]) == normalized(payload)
    else:
        doc = normalized(namespace["f"].__doc__)
        assert doc.startswith(normalized(payload) + "\n\nFormula::"), doc


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_formula_comment(payload):
    """A comment in a formula reaches the docstrings: it must not escape."""
    formula = f"y = 2*x  # {payload}"
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {yaml_quoted(formula)}\n"
    try:
        spec, source = build(text)
    except SpecError as error:
        assert str(error).startswith("hostile.yaml:")
        return
    namespace = import_module(spec, source)
    doc = namespace["f"].__doc__
    for line in formula.splitlines():
        assert line.strip() in doc
    assert namespace["FFunction"].__doc__


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_formula_itself(payload):
    """The payload as the formula: refused (it is no formula), never run."""
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {yaml_quoted(payload)}\n"
    assert refused_cleanly(text)


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_skip_reason(payload):
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n"
        f"    check: {{skip: {{vmap: {yaml_quoted(payload)}}}}}\n"
    )
    try:
        spec, source = build(text)
    except SpecError as error:
        assert str(error).startswith("hostile.yaml:")
        return
    import_module(spec, source)
    assert dict(spec.functions[0].check.skip)["vmap"] == payload


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_init_and_grad_strings(payload):
    for text in [
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
        f"    inputs: {{x: tensor, a: {{param: [3], init: {yaml_quoted('zeros  # ' + payload)}}}}}\n",
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n"
        f"    grad: {{x: {yaml_quoted('grad  # ' + payload)}}}\n",
    ]:
        try:
            spec, source = build(text)
        except SpecError as error:
            assert str(error).startswith("hostile.yaml:")
            continue
        namespace = import_module(spec, source)
        namespace["F"]()  # the Module's __init__ runs the init


NAME_FIELDS = {
    "function": "fngen: 1\nfunctions:\n  {n}:\n    formula: y = x\n",
    "input": "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n    inputs: {{{n}: tensor, x: tensor}}\n",
    "output": "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n    outputs: [{n}]\n",
    "dimension": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
    "    inputs: {{x: tensor, a: {{param: [{n}]}}}}\n",
    "statement": "fngen: 1\nfunctions:\n  f:\n    formula: {n} = x\n",
}


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_hostile_names_are_refused(field, payload):
    assert refused_cleanly(NAME_FIELDS[field].format(n=yaml_quoted(payload)))


@pytest.mark.parametrize(
    "name", ["__import__", "import", "None", "torch", "_private", "grad_x", "ctx"]
)
def test_names_the_generated_code_needs_are_refused(name):
    for template in NAME_FIELDS.values():
        assert refused_cleanly(template.format(n=yaml_quoted(name)))


@pytest.mark.parametrize("name", ["os", "sys", "maximum", "absolute", "lenient"])
def test_names_that_are_not_builtins_build_a_working_module(name):
    spec, source = build(NAME_FIELDS["function"].format(n=name))
    namespace = import_module(spec, source)
    import torch

    x = torch.tensor([1.0, -2.0], requires_grad=True)
    assert namespace[name](x).tolist() == [1.0, -2.0]
    assert namespace[class_name(name)]()(x).tolist() == [1.0, -2.0]


# Function names whose wrapper or classes would be a builtin's name.
BUILTIN_FUNCTION_NAMES = [
    "max",
    "abs",
    "len",
    "next",
    "min",
    "sum",
    "round",
    "pow",
    "staticmethod",
    "super",
    "print",
    "open",
    "exec",
    "eval",
    "input",
    "float",
    "range",
    "not_implemented_error",  # its Module class: NotImplementedError
    "value_error",
]


@pytest.mark.parametrize("name", BUILTIN_FUNCTION_NAMES)
def test_function_named_like_a_builtin_is_refused(name):
    """Its wrapper or class would be a global of the generated module of a
    builtin's name: every call of that builtin in the module (and in a
    module that imports * from it) would call it instead."""
    text = NAME_FIELDS["function"].format(n=name)
    with pytest.raises(SpecError) as error:
        build(text)
    assert str(error.value).startswith("hostile.yaml:3:3: error: function name ")
    assert "would shadow Python's builtin" in str(error.value)


def test_a_function_named_abs_does_not_change_another_functions_abs():
    """The bug: ``abs`` defined by the spec was what ``abs(c)`` in g called."""
    text = (
        "fngen: 1\nfunctions:\n"
        "  g:\n    formula: y = x * abs(c)\n    inputs: {x: tensor, c: float}\n"
        "  abs:\n    formula: y = 2*x\n"
    )
    with pytest.raises(SpecError, match="hostile.yaml:6:3: error: function name 'abs'"):
        build(text)


def name_cases(names, fields):
    for name in sorted(names):
        for field in fields:
            yield pytest.param(name, field, id=f"{field}-{name}")


# Where a name stands: every kind of input, a dimension, a statement, an output.
INPUT_FIELDS = {
    "tensor input": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*{n}\n"
    "    inputs: {{x: tensor, {n}: tensor}}\n",
    "float input": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*{n}\n"
    "    inputs: {{x: tensor, {n}: float}}\n",
    "bool input": "fngen: 1\nfunctions:\n  f:\n    formula: y = where({n}, x, 2*x)\n"
    "    inputs: {{x: tensor, {n}: bool}}\n",
    "param": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*{n}\n"
    "    inputs: {{x: tensor, {n}: {{param: [4]}}}}\n",
    "optional param": "fngen: 1\nfunctions:\n  f:\n    formula: y = x + {n}\n"
    "    inputs: {{x: tensor, {n}: {{param: [4], optional: true}}}}\n",
    "inferred input": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*{n}\n",
    "dimension": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
    "    inputs: {{x: tensor, a: {{param: [{n}]}}}}\n",
}
LOCAL_FIELDS = {
    **INPUT_FIELDS,
    "statement": "fngen: 1\nfunctions:\n  f:\n    formula: |\n"
    "      {n} = sin(x)\n      y = {n}*x\n",
    "output": "fngen: 1\nfunctions:\n  f:\n    formula: |\n"
    "      {n} = sin(x)\n      y = x*x\n    outputs: [{n}, y]\n",
}


def refused_with(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as error:
        build(text)
    message = str(error.value)
    assert message.startswith("hostile.yaml:") and ": error: " in message, message
    assert fragment in message, message


@pytest.mark.parametrize(
    "name, field",
    list(
        name_cases(
            [
                "training",
                "forward",
                "eval",
                "parameters",
                "state_dict",
                "to",
                "cuda",
                "half",
                "type",
                "apply",
                "extra_repr",
                "reset_parameters",
            ],
            INPUT_FIELDS,
        )
    ),
)
def test_inputs_named_like_module_attributes_are_refused(name, field):
    """A float input ``training`` was overwritten by ``.eval()`` (the op then
    returned zeros), ``forward`` broke the Module."""
    refused_with(INPUT_FIELDS[field].format(n=name), f"'{name}' is reserved")


def test_module_attributes_match_the_installed_torch():
    """Building never imports torch: the list is a constant, kept true here."""
    import torch

    from fngen.formula import MODULE_ATTRIBUTES

    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")}
    public |= {n for n in vars(torch.nn.Module()) if not n.startswith("_")}
    assert MODULE_ATTRIBUTES == public | {"reset_parameters"}


def test_every_module_attribute_is_refused_as_an_input():
    from fngen.formula import MODULE_ATTRIBUTES

    for name in sorted(MODULE_ATTRIBUTES):
        refused_with(INPUT_FIELDS["float input"].format(n=name), "is reserved")


@pytest.mark.parametrize(
    "name, field",
    list(
        name_cases(
            [
                "next",
                "like",
                "function",
                "device_type",
                "dtype",
                "len",
                "abs",
                "min",
                "max",
                "super",
                "staticmethod",
            ],
            LOCAL_FIELDS,
        )
    ),
)
def test_names_of_the_generated_codes_locals_and_builtins_are_refused(name, field):
    """``next`` broke a multi-output jvp, ``abs`` would be what ``abs(c)``
    calls in the function's forward."""
    # abs, min, max are formula functions too: an inferred input or a
    # statement of that name is refused as one.
    refused_with(LOCAL_FIELDS[field].format(n=name), f"'{name}' is ")


def test_a_float_input_next_with_several_outputs_is_refused():
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: |\n"
        "      a = x*next\n      b = x*y\n    inputs: {x: tensor, y: tensor, next: float}\n"
        "    outputs: [a, b]\n"
    )
    refused_with(text, "hostile.yaml:7:36: error: input name 'next' is reserved")


def test_generated_calls_of_hidden_builtins_are_refused(monkeypatch):
    """Past the list: codegen refuses code that calls a name its function
    defines, whatever builtin the printer comes to call."""
    import fngen.formula

    monkeypatch.setattr(fngen.formula, "GENERATED_CODE_BUILTINS", frozenset())
    monkeypatch.setattr(
        fngen.formula, "RESERVED_NAMES", fngen.formula.RESERVED_NAMES - {"abs"}
    )
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x*abs + x*abs(c)\n"
        "    inputs: {x: tensor, abs: float, c: float}\n"
    )
    refused_with(
        text,
        "hostile.yaml:3:3: error: cannot generate 'f': 'abs' would hide "
        "Python's abs(), which the generated code calls",
    )


# Formulas whose code calls builtins: numbers (abs, min, max, where),
# several outputs (next), shapes of kept reductions, params (super).
CALLING_BUILTINS = [
    ("y = x * abs(c) + x*min(c, 1) + x*max(c, 2)", "{x: tensor, c: float}"),
    ("y = x * clamp(c, 0, 1)", "{x: tensor, c: float}"),
    ("y = x * where(c > 0, c, -c)", "{x: tensor, c: float}"),
    ("a = x*x\nb = x*y", "{x: tensor, y: tensor}"),
    (
        "m = mean(x, dim=-1, keepdim=true)\ny = (x - m)/sqrt(mean((x - m)**2, dim=-1, keepdim=true) + 1e-5)",
        None,
    ),
    ("s = sum(x, keepdim=true)\ny = x/s", None),
    (
        "y = x @ w.T + b",
        "{x: tensor, w: {param: [3, 4]}, b: {param: [3], optional: true}}",
    ),
    ("y = x @ w", None),
]


def calling_builtins_specs():
    root = Path(__file__).resolve().parent.parent
    texts = [
        p.read_text(encoding="utf-8") for p in sorted(root.glob("examples/*.yaml"))
    ]
    texts += [
        p.read_text(encoding="utf-8") for p in sorted(root.glob("benchmarks/*.yaml"))
    ]
    for n, (formula, inputs) in enumerate(CALLING_BUILTINS):
        body = "".join(f"      {line}\n" for line in formula.split("\n"))
        text = f"fngen: 1\nfunctions:\n  f{n}:\n    formula: |\n{body}"
        if inputs:
            text += f"    inputs: {inputs}\n"
        if formula.startswith("a = "):
            text += "    outputs: [a, b]\n"
        texts.append(text)
    return texts


def _without_helpers(body):
    """`body` without its `_`-named functions, at its top level and in its
    top-level `if` blocks."""
    import ast

    kept = []
    for node in body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            continue
        if isinstance(node, ast.If):
            node.body = _without_helpers(node.body)
            node.orelse = _without_helpers(node.orelse)
        kept.append(node)
    return kept


def test_the_builtins_generated_code_calls_are_reserved():
    """Every builtin a generated function calls by name is in
    GENERATED_CODE_BUILTINS, so that no input or statement can hide it."""
    import ast
    import builtins

    from fngen.formula import GENERATED_CODE_BUILTINS

    called = set()
    for text in calling_builtins_specs():
        source = fngen.generate(parse_spec(text, "calls.yaml"))
        tree = ast.parse(source)
        # Not the module's helpers (`_mish`, `_custom_op`, the kernel
        # launchers under `if triton is not None:`...): their locals are
        # their own, never a name of the spec.
        tree.body = _without_helpers(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
            if isinstance(node, ast.FunctionDef):
                called |= {d.id for d in node.decorator_list if isinstance(d, ast.Name)}
    used = {name for name in called if hasattr(builtins, name)}
    assert {"abs", "min", "max", "next", "super", "staticmethod"} <= used
    # Annotations (float, int, bool) are read where no input is defined.
    assert used <= GENERATED_CODE_BUILTINS, used


# -- signatures ---------------------------------------------------------------


def _signature(source: str, name: str) -> str:
    """The parameters of the top-level function `name`, without annotations."""
    import ast

    (node,) = [
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef) and n.name == name
    ]
    names = [a.arg for a in node.args.args]
    defaults = [None] * (len(names) - len(node.args.defaults)) + node.args.defaults
    return ", ".join(
        n if d is None else f"{n}={ast.unparse(d)}" for n, d in zip(names, defaults)
    )


def test_an_optional_tensor_before_a_required_one_is_passed_positionally():
    """Like ``F.batch_norm``'s ``running_mean``: Optional, without a default
    where a required argument follows (the SyntaxError ``b=None, x``)."""
    import torch

    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x + b\n"
        "    inputs: {b: {optional: true}, x: tensor}\n"
    )
    spec, source = build(text)
    namespace = import_module(spec, source)
    assert _signature(source, "f") == "b, x"
    assert "def forward(self, b, x):" in source
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    assert namespace["f"](None, x).tolist() == [1.0, 2.0]
    assert namespace["F"]()(b, x).tolist() == [1.5, 2.5]
    assert namespace["F"]()(None, x=x).tolist() == [1.0, 2.0]
    torch.autograd.gradcheck(namespace["f"], (b, x))


def test_a_trailing_optional_tensor_defaults_to_none():
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x + b + w\n"
        "    inputs: {x: tensor, b: {optional: true}, w: {param: [2], optional: true}}\n"
    )
    spec, source = build(text)
    assert _signature(source, "f") == "x, b=None, w=None"
    assert "def forward(self, x, b=None):" in source
    import_module(spec, source)


def test_a_default_before_an_input_without_one_is_refused():
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = s*x\n"
        "    inputs: {s: {type: float, default: 2.0}, x: tensor}\n"
    )
    refused_with(
        text,
        "hostile.yaml:5:14: error: input 's' has a default, but input 'x' declared "
        "after it has none",
    )


def filename_cases():
    for key, payload in PAYLOADS.items():
        yield pytest.param(f"ops{payload}.yaml", id=key)


@pytest.mark.parametrize("filename", list(filename_cases()))
def test_spec_file_name(filename):
    """The name lands in the header comment and the default module doc."""
    text = "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n"
    try:
        spec, source = build(text, filename)
    except SpecError as error:
        assert error.location is not None
        return
    namespace = import_module(spec, source)
    assert source.startswith("# Generated by fngen")
    assert namespace["__doc__"]


def test_hostile_module_imports_through_fngen_load():
    """All printable payloads at once, through the public loader."""
    doc = "\n".join(PRINTABLE.values())
    comment = " ".join(p for p in PRINTABLE.values() if "\n" not in p)
    text = (
        f"fngen: 1\ndoc: {yaml_quoted(doc)}\nfunctions:\n  f:\n"
        f"    doc: {yaml_quoted(doc)}\n"
        f"    formula: {yaml_quoted('y = 2*x  # ' + comment)}\n"
    )
    module = fngen.load(parse_spec(text, "hostile.yaml"))
    check_not_pwned("fngen.load ran code")
    assert normalized(module.__doc__) == normalized(doc)
    assert normalized(module.f.__doc__).startswith(normalized(doc))
    assert set(module.__all__) == {"FFunction", "f", "F"}


def test_pwned_check_has_teeth():
    """The PWNED file is where the payloads would put it."""
    namespace: dict = {}
    try:
        exec(RUN, namespace)
        assert PWNED.exists()
    finally:
        PWNED.unlink(missing_ok=True)


# -- values that were accepted and then failed ---------------------------------


def param_spec(param: str, init: str | None = None) -> str:
    extra = f", init: {yaml_quoted(init)}" if init else ""
    return (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
        f"    inputs: {{x: tensor, a: {{param: {param}{extra}}}}}\n"
    )


@pytest.mark.parametrize(
    "param, init, message",
    [
        ("[]", None, "5:36: error: a param needs at least one dimension"),
        ("[3]", "normal(0, -1)", "5:47: error: init normal(mean, std) needs std >= 0"),
        ("[3]", "uniform(1, -1)", "5:47: error: init uniform(a, b) needs a <= b"),
        (
            "[n]",
            "uniform(1/sqrt(n), -1/sqrt(n))",
            "5:47: error: init uniform(a, b) needs a <= b",
        ),
        ("[3]", "kaiming_uniform", "needs a param of at least 2 dimensions"),
        ("[3]", "xavier_uniform", "needs a param of at least 2 dimensions"),
        ("[3, 4]", "xavier_uniform(gain=-1)", "needs gain >= 0"),
        ("[99999999999999999999]", None, "5:37: error: a size must be below 2**63"),
    ],
)
def test_values_the_module_would_refuse_are_refused_at_build_time(param, init, message):
    refused_with(param_spec(param, init), message)


@pytest.mark.parametrize(
    "param, init",
    [
        ("[3]", "normal(0, 0)"),
        ("[3]", "uniform(1, 1)"),
        ("[n]", "uniform(-1/sqrt(n), 1/sqrt(n))"),
        ("[n]", "normal(1, 1/n)"),
        ("[3, 4]", "xavier_uniform(gain=2)"),
        ("[3, 4]", "kaiming_uniform(a=-1)"),
        ("[1]", None),
    ],
)
def test_the_values_next_to_them_make_a_working_module(param, init):
    spec, source = build(param_spec(param, init))
    namespace = import_module(spec, source)
    module = namespace["F"](3) if "n" in param else namespace["F"]()
    assert module.a.dim() == len(param.split(","))


@pytest.mark.parametrize(
    "device", ["cpu\n", "cuda:\u0661", "cuda:\uff11", "cuda:", "cpu ", "CPU", "cuda:-1"]
)
def test_a_device_that_is_no_device_is_refused(device):
    text = (
        f"fngen: 1\ncheck: {{device: {yaml_quoted(device)}}}\n"
        "functions:\n  f:\n    formula: y = x\n"
    )
    refused_with(text, f"hostile.yaml:2:17: error: unknown device {device!r}")


@pytest.mark.parametrize("device", ["cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_devices_are_accepted(device):
    text = (
        f"fngen: 1\ncheck: {{device: {device}}}\nfunctions:\n  f:\n    formula: y = x\n"
    )
    assert parse_spec(text, "hostile.yaml").check_device == device
