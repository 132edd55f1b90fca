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
    expected = {"torch", "math", "_has_tangent", "_autocast_cast"}
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


@pytest.mark.parametrize("name", ["print", "exec", "eval", "os", "sys", "open"])
def test_builtin_names_build_a_working_module(name):
    """Names that shadow builtins the generated code does not use."""
    spec, source = build(NAME_FIELDS["function"].format(n=name))
    namespace = import_module(spec, source)
    import torch

    x = torch.tensor([1.0, -2.0], requires_grad=True)
    assert namespace[name](x).tolist() == [1.0, -2.0]
    assert namespace[class_name(name)]()(x).tolist() == [1.0, -2.0]


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
