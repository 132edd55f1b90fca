"""Fuzzing the front door: `parse_spec` and `generate` on hostile input.

Random text, random bytes, YAML-ish documents whose formulas are drawn from a
token alphabet (names, numbers, operators, keywords, dunders, quotes,
``__import__``, ``os.system`` ...), and random mutations of the committed
examples.  For every input:

* only `SpecError` may escape (or success), and its message is located,
  ``fuzz.yaml:LINE:COL: error: ...``;
* nothing hangs (a per-example time guard);
* nothing runs: ``eval``, ``exec``, ``compile`` of anything but an AST or
  fngen's own Jinja2 template, ``sympify`` and ``parse_expr`` of a string all
  raise while `parse_spec` and `generate` run, and no file appears;
* whatever is generated compiles, and executing it defines only the
  generated names.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import linecache
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import sympy
import sympy.parsing.sympy_parser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fngen
import fngen.api  # noqa: F401  (fngen imports lazily; importing compiles code)
import fngen.codegen
import fngen.spec
from fngen import SpecError
from fngen.spec import parse_spec
from fngen.triton_printer import HELPERS as TRITON_HELPERS
from yamltext import yaml_quoted as quoted

# `sympy.core.sympify` is the function; the module has the same name.
SYMPIFY_MODULE = sys.modules["sympy.core.sympify"]
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TEXTS = [
    p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("examples/*.yaml"))
]
PWNED = Path(tempfile.gettempdir()) / f"fngen_PWNED_fuzz_{os.getpid()}"
PAYLOAD = f"__import__('os').system('touch {PWNED}')"
TIME_LIMIT_S = 10.0
LOCATED = re.compile(r"^fuzz\.yaml:\d+:\d+: error: .+", re.S)


def fuzz_settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- guards ---------------------------------------------------------------------


class Hang(Exception):
    """An example ran past the time guard."""


class CodeExecuted(AssertionError):
    """Something tried to run or evaluate text during parse_spec/generate."""


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S):
    def expire(signum, frame):
        raise Hang(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _may_exec(code) -> bool:
    """Code objects of fngen's own Jinja2 template, or of a module file being
    imported lazily; never a string (and `compile` is guarded too)."""
    if isinstance(code, (str, bytes)):
        return False
    return _trusted_filename(getattr(code, "co_filename", ""))


def _sympy_monomial_code(caller) -> bool:
    """SymPy's polynomials (Horner form) build their monomial arithmetic,
    once per number of variables, by exec of code SymPy writes itself from
    that number (``(a0, a1,) = A``...): no spec text can reach it."""
    code = caller.f_code
    return code.co_name == "_build" and code.co_filename.endswith(
        os.path.join("sympy", "polys", "monomials.py")
    )


def _trusted_filename(filename) -> bool:
    """Jinja2 compiles fngen's template as "<template>"; imports compile files."""
    filename = os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)
    return filename == "<template>" or (
        filename.endswith(".py") and os.path.isfile(filename)
    )


@contextlib.contextmanager
def no_code_execution():
    """eval/exec/compile/sympify/parse_expr refuse to run text meanwhile."""
    real_compile = builtins.compile
    real_sympify = SYMPIFY_MODULE.sympify

    def refuse(what):
        def guard(*args, **kwargs):
            raise CodeExecuted(f"{what} called with {str(args)[:200]}")

        return guard

    def guarded_exec(code, *args, **kwargs):
        if _may_exec(code) or _sympy_monomial_code(sys._getframe(1)):
            return exec_(code, *args, **kwargs)
        raise CodeExecuted(f"exec called with {str(code)[:200]}")

    def guarded_compile(source, filename, mode, flags=0, *args, **kwargs):
        if flags & ast.PyCF_ONLY_AST or _trusted_filename(filename):
            return real_compile(source, filename, mode, flags, *args, **kwargs)
        raise CodeExecuted(f"compile called on {str(source)[:200]}")

    def guarded_sympify(a, *args, **kwargs):
        if isinstance(a, (str, bytes)):
            raise CodeExecuted(f"sympify called on the string {a[:200]!r}")
        return real_sympify(a, *args, **kwargs)

    exec_ = builtins.exec
    patches = [
        (builtins, "eval", refuse("eval")),
        (builtins, "exec", guarded_exec),
        (builtins, "compile", guarded_compile),
        (sympy, "sympify", guarded_sympify),
        (SYMPIFY_MODULE, "sympify", guarded_sympify),
        (sympy, "parse_expr", refuse("parse_expr")),
        (sympy.parsing.sympy_parser, "parse_expr", refuse("parse_expr")),
    ]
    # fngen's own modules, in case one imported these names directly.
    for name, module in list(sys.modules.items()):
        if name == "fngen" or name.startswith("fngen."):
            for attr in ("eval", "exec", "sympify", "parse_expr"):
                if attr in vars(module):
                    patches.append((module, attr, refuse(f"{name}.{attr}")))
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def front_door(text: str | bytes) -> str | None:
    """parse_spec + generate under the guards: the source, or None after a
    located SpecError.  Any other exception fails the test."""
    assert not PWNED.exists()
    try:
        with time_limit(), no_code_execution():
            spec = parse_spec(text, "fuzz.yaml")
            source = fngen.generate(spec)
    except SpecError as error:
        message = str(error)
        assert LOCATED.match(message), message
        assert error.location is not None and error.location.file == "fuzz.yaml"
        return None
    finally:
        assert not PWNED.exists(), "the spec ran code"
    check_generated(spec, source)
    return source


def check_generated(spec, source: str) -> None:
    """The generated module compiles and defines only the generated names."""
    # A file name linecache knows, as for `fngen.load`: Triton reads a
    # kernel's source (`inspect.getsource`) when it defines it.
    filename = f"<fuzz {hash(source)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    code = compile(source, filename, "exec")
    namespace: dict = {"__name__": "fngen_fuzz_generated"}
    exec(code, namespace)
    assert not PWNED.exists(), "the generated module ran code"
    # The module's helpers (templates/module.py.j2) and the generated names.
    expected = {
        "torch",
        "math",
        "_silu_backward",
        "_mish",
        "_mish_backward",
        "_without_jvp",
        "_accumulated",
    }
    expected |= {"_matmul_grad_a", "_matmul_grad_b", "_autocast_cast", "_has_tangent"}
    expected |= {"_autocasting"}
    if spec.export == "custom_op":
        expected |= {"_custom_op", "_unaliased", "_pointwise_vmap", "_looped_vmap"}
        expected |= {"DECOMPOSITIONS"} | {f"_{fn.name}_op" for fn in spec.functions}
    kernels = [fn for fn in spec.functions if f"_{fn.name}_fwd_kernel" in namespace]
    if kernels:
        expected |= {"triton", "tl", "libdevice", "_KERNEL_DEVICE", "_KERNEL_DTYPES"}
        expected |= {"_BLOCK_SIZE", "_kernels_take", "_compute_dtype"}
        expected |= set(TRITON_HELPERS)
    for fn in kernels:
        fwd, bwd = fngen.codegen.kernel_names(fn.name)
        expected |= {fwd, bwd, f"{fwd}_kernel", f"{bwd}_kernel"}
    for fn in spec.functions:
        cls = fngen.spec.class_name(fn.name)
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


# -- the guards have teeth ------------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [
        lambda: eval("1 + 1"),
        lambda: exec("x = 1"),
        lambda: compile("x = 1", "<spec>", "exec"),
        lambda: sympy.sympify("x + 1"),
        lambda: sympy.parse_expr("x + 1"),
        lambda: sympy.parsing.sympy_parser.parse_expr("x + 1"),
    ],
    ids=["eval", "exec", "compile", "sympify", "parse_expr", "sympy_parser"],
)
def test_guard_refuses_to_run_text(run):
    with pytest.raises(CodeExecuted), no_code_execution():
        run()


def test_guard_lets_parsing_and_generation_through():
    with no_code_execution():
        ast.parse("x = 1")
        sympy.sympify(sympy.Integer(1))
        source = fngen.generate(parse_spec(EXAMPLE_TEXTS[0], "fuzz.yaml"))
    assert source.startswith("# Generated by fngen")


def test_time_guard_fires():
    with pytest.raises(Hang), time_limit(0.05):
        while True:
            pass


# -- tokens and documents -------------------------------------------------------

TOKENS = [
    # names, functions, keywords of the grammar
    "x",
    "y",
    "z",
    "w",
    "out",
    "t",
    "foo",
    "pi",
    "grad",
    "grad_x",
    "ctx",
    "torch",
    "math",
    "self",
    "None",
    "True",
    "true",
    "false",
    "sin",
    "exp",
    "log",
    "sqrt",
    "relu",
    "where",
    "clamp",
    "max",
    "pow",
    "atan2",
    "erfinv",
    "heaviside",
    "sum",
    "mean",
    "dim",
    "keepdim",
    "T",
    # numbers
    "0",
    "1",
    "2",
    "0.5",
    "1e308",
    "1e-320",
    "10",
    "1024",
    "1025",
    "100000",
    "0x10",
    "1_000",
    "1j",
    "007",
    "inf",
    "nan",
    "9" * 40,
    # operators and punctuation
    "+",
    "-",
    "*",
    "/",
    "**",
    "^",
    "@",
    "//",
    "%",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ":",
    ";",
    "\n",
    " ",
    "\t",
    "\\",
    "#",
    "&",
    "|",
    "~",
    "...",
    ":=",
    "->",
    # Python keywords and code
    "lambda",
    "import",
    "from",
    "def",
    "class",
    "if",
    "else",
    "for",
    "in",
    "not",
    "and",
    "or",
    "yield",
    "await",
    "return",
    "with",
    "global",
    "del",
    "assert",
    "async",
    "match",
    "case",
    "type",
    "print",
    # dunders and escapes
    "__import__",
    "__class__",
    "__builtins__",
    "__subclasses__",
    "__globals__",
    "__dict__",
    "__init__",
    "_",
    "os",
    "os.system",
    "os.system('touch /tmp/x')",
    "'",
    '"',
    '"""',
    "'''",
    "f'",
    "b'",
    "r'",
    "{{",
    "}}",
    "{%",
    "%}",
    PAYLOAD,
]

formula_text = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=20).flatmap(
    lambda tokens: st.sampled_from(["", " "]).map(lambda sep: sep.join(tokens))
)
# Formulas that mostly parse: `name = <tokens>`.
statement_text = formula_text.map(lambda text: f"out = {text}")
scalar = st.one_of(
    st.sampled_from(
        ["tensor", "float", "int", "bool", "1", "-2.5", "true", "null", "~", "[]", "{}"]
    ),
    st.text(max_size=12),
)


def block(text: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "".join(f"{pad}{line}\n" for line in text.split("\n"))


@st.composite
def input_entry(draw):
    kind = draw(st.sampled_from(["tensor", "float", "int", "bool", "map", "junk"]))
    if kind == "map":
        fields = []
        if draw(st.booleans()):
            fields.append(f"type: {draw(st.sampled_from(['tensor', 'float', 'int']))}")
        if draw(st.booleans()):
            lo = draw(st.sampled_from(["-2", "0.5", "1e308", "-.inf", "3"]))
            fields.append(
                f"domain: [{lo}, {draw(st.sampled_from(['2', '4', '.nan']))}]"
            )
        if draw(st.booleans()):
            fields.append(f"param: [{draw(st.sampled_from(['3', 'n', 'n, m', '-1']))}]")
        if draw(st.booleans()):
            fields.append(f"init: {quoted(draw(formula_text))}")
        if draw(st.booleans()):
            fields.append(f"default: {draw(st.sampled_from(['1.0', '2', 'true']))}")
        if draw(st.booleans()):
            fields.append(f"optional: {draw(st.sampled_from(['true', 'false', '1']))}")
        return "{" + ", ".join(fields) + "}"
    if kind == "junk":
        return quoted(draw(st.text(max_size=10)))
    return kind


VALID_FORMULAS = [
    "out = x*2",
    "out = sin(x) + y",
    "out = sum(x*y, dim=-1)",
    "t = x*y; out = t + 1",
    "out = where(x > 0, x, 0.5*x)",
    "out = x @ y.T",
    "out = max(x, 0) + a*min(x, 0)",
]


def sometimes(draw) -> bool:
    """True one time in four (not 0: Hypothesis favours small integers)."""
    return draw(st.integers(0, 3)) == 3


@st.composite
def spec_documents(draw, broken_structure: bool = True):
    """A valid-looking spec with random formula strings and random fields;
    most fields are usually left out, so that many documents are valid.
    Without `broken_structure`, the version and function names are right."""
    version = "1"
    if broken_structure and sometimes(draw):
        version = draw(st.sampled_from(["2", "1.0", "x", "true", "01"]))
    lines = [f"fngen: {version}"]
    if sometimes(draw):
        lines.append(f"doc: {quoted(draw(st.text(max_size=30)))}")
    lines.append("functions:")
    for n in range(draw(st.integers(1, 2))):
        name = f"f{n}"
        if broken_structure and sometimes(draw):
            name = draw(st.sampled_from(["Bad", "class", "f_", "sum", "f0", "x"]))
        lines.append(f"  {name}:")
        formula = draw(
            st.one_of(st.sampled_from(VALID_FORMULAS), statement_text, formula_text)
        )
        if draw(st.booleans()):
            lines.append(f"    formula: {quoted(formula)}")
        else:
            lines.append(f"    formula: {block(formula, 6)}".rstrip("\n"))
        if sometimes(draw):
            lines.append(f"    doc: {quoted(draw(st.text(max_size=30)))}")
        if sometimes(draw):
            names = draw(
                st.lists(
                    st.sampled_from(["x", "y", "w", "a", "x_t"]),
                    max_size=3,
                    unique=True,
                )
            )
            if names:
                lines.append("    inputs:")
                lines += [f"      {n}: {draw(input_entry())}" for n in names]
        if sometimes(draw):
            outputs = draw(
                st.lists(st.sampled_from(["out", "t", "x", "z"]), max_size=2)
            )
            lines.append(f"    outputs: [{', '.join(outputs)}]")
        if sometimes(draw):
            lines.append("    grad:")
            target = draw(st.sampled_from(["x", "y", "out"]))
            grad = draw(st.one_of(st.just("grad*2"), formula_text))
            lines.append(f"      {target}: {quoted(grad)}")
        if sometimes(draw):
            check = draw(st.sampled_from(["vmap", "compile", "nope"]))
            reason = quoted(draw(st.text(max_size=10)))
            lines.append(f"    check: {{skip: {{{check}: {reason}}}}}")
        if sometimes(draw):
            flag = draw(st.sampled_from(["true", "yes"]))
            lines.append(f"    once_differentiable: {flag}")
    return "\n".join(lines) + "\n"


@st.composite
def mutated_examples(draw):
    """A committed example with a few random edits: deep code paths."""
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(st.sampled_from(TOKENS))
        end = position + draw(st.integers(0, 8)) if edit != "insert" else position
        text = text[:position] + ("" if edit == "delete" else token) + text[end:]
    return text


# -- the fuzz tests ---------------------------------------------------------------


@fuzz_settings(300)
@given(st.text(max_size=300))
def test_random_text(text):
    front_door(text)


@fuzz_settings(200)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    front_door(data)


@fuzz_settings(200)
@given(st.text(alphabet="fngen:1 \n-{}[],'\"|>&*!%@`#?\\\t", max_size=120))
def test_yaml_punctuation(text):
    front_door("fngen: 1\n" + text)


@fuzz_settings(100)
@given(spec_documents())
def test_random_spec_documents(text):
    front_door(text)


@fuzz_settings(150)
@given(spec_documents(broken_structure=False))
def test_random_functions(text):
    front_door(text)


@fuzz_settings(60)
@given(mutated_examples())
def test_mutated_examples(text):
    front_door(text)


@fuzz_settings(150)
@given(statement_text)
def test_random_formulas(formula):
    front_door(f"fngen: 1\nfunctions:\n  f:\n    formula: {quoted(formula)}\n")


@fuzz_settings(100)
@given(st.text(st.characters(exclude_categories=()), max_size=20))
def test_random_doc_text_of_any_code_point(doc):
    front_door(
        f"fngen: 1\ndoc: {quoted(doc)}\nfunctions:\n  f:\n"
        f"    doc: {quoted(doc)}\n    formula: y = x\n"
    )


@pytest.mark.parametrize("formula", VALID_FORMULAS)
def test_front_door_builds_the_valid_formulas_the_fuzzers_use(formula):
    """The structured strategies reach `generate`: their valid formulas build."""
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {quoted(formula)}\n"
    assert front_door(text) is not None


def test_front_door_builds_the_examples():
    for text in EXAMPLE_TEXTS:
        assert front_door(text) is not None


PAYLOAD_SPECS = {
    "formula": "fngen: 1\nfunctions:\n  f:\n    formula: {p}\n",
    "statement": "fngen: 1\nfunctions:\n  f:\n    formula: {s}\n",
    "call": "fngen: 1\nfunctions:\n  f:\n    formula: {c}\n",
    "grad": "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n    grad: {{x: {p}}}\n",
    "init": "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
    "    inputs: {{x: tensor, a: {{param: [3], init: {p}}}}}\n",
    "outputs": "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n    outputs: [{p}]\n",
    "input name": "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n"
    "    inputs: {{{p}: tensor}}\n",
    "function name": "fngen: 1\nfunctions:\n  {p}:\n    formula: y = x\n",
    "dim": "fngen: 1\nfunctions:\n  f:\n    formula: {d}\n",
    "lambda": "fngen: 1\nfunctions:\n  f:\n    formula: {lam}\n",
}


@pytest.mark.parametrize("where", list(PAYLOAD_SPECS))
def test_code_in_a_spec_never_runs(where):
    text = PAYLOAD_SPECS[where].format(
        p=quoted(PAYLOAD),
        s=quoted(f"y = {PAYLOAD}"),
        c=quoted(f"y = x + getattr(x, '__class__')({PAYLOAD})"),
        d=quoted(f"y = sum(x, dim={PAYLOAD})"),
        lam=quoted(f"y = (lambda: {PAYLOAD})() + x"),
    )
    with pytest.raises(SpecError):
        front_door_strict(text)
    assert not PWNED.exists()


def front_door_strict(text):
    """Like front_door, but lets the SpecError through."""
    try:
        with time_limit(), no_code_execution():
            fngen.generate(parse_spec(text, "fuzz.yaml"))
    finally:
        assert not PWNED.exists()
