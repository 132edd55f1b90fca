"""Limits and determinism of the generator.

Big and deep inputs either build (correct code, in bounded time) or give a
located `SpecError`, never a crash (RecursionError, MemoryError ...) or a
hang: a 2000-term polynomial, deeply nested parentheses and calls, huge
exponents, a thousand functions, an extremely long name, a 5 MB spec.  The
output is byte-identical across runs and across PYTHONHASHSEED values, and
`fngen build --check` accepts a fresh build.

Timings are printed (`pytest -s`).  The two slowest scale tests (a thousand
functions, 2000 terms spread over statements) take about a minute each on a
2-core machine, so they run only with FNGEN_SLOW_TESTS=1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import fngen
from fngen import SpecError
from fngen.cli import main as cli_main
from fngen.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*.yaml"))
SLOW = pytest.mark.skipif(
    not os.environ.get("FNGEN_SLOW_TESTS"),
    reason="about a minute on 2 cores; run with FNGEN_SLOW_TESTS=1",
)


def spec_text(formula: str) -> str:
    return f"fngen: 1\nfunctions:\n  f:\n    formula: {json.dumps(formula)}\n"


def outcome(text: str) -> str:
    """'built' or 'refused'; any other exception propagates (and fails)."""
    try:
        spec = parse_spec(text, "limits.yaml")
        source = fngen.generate(spec)
    except SpecError as error:
        assert str(error).startswith("limits.yaml:"), str(error)
        return "refused"
    compile(source, "<limits>", "exec")
    return "built"


def run_python(code: str, timeout: float, env: dict | None = None):
    """Run `code` in a fresh interpreter: (seconds, completed process)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return time.perf_counter() - start, result


# -- big formulas ---------------------------------------------------------------

POLYNOMIAL_CHECK = """
    import json, sys, time, torch, fngen
    from fngen.spec import parse_spec
    coefficients = [(k % 7) - 3 for k in range(2001)]
    text = {text!r}
    start = time.perf_counter()
    module = fngen.load(parse_spec(text, "poly.yaml"))
    built = time.perf_counter() - start
    x = torch.tensor([-0.99, -0.5, 0.0, 0.25, 0.99], dtype=torch.float64,
                     requires_grad=True)
    y = module.f(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    want = sum(c * x.detach() ** k for k, c in enumerate(coefficients))
    want_grad = sum(k * c * x.detach() ** (k - 1) for k, c in enumerate(coefficients) if k)
    torch.testing.assert_close(y.detach(), want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-9)
    print(json.dumps({{"build_s": built}}))
"""


def polynomial_terms(lo: int, hi: int) -> list[str]:
    return [f"{(k % 7) - 3}*x**{k}" for k in range(lo, hi) if (k % 7) - 3]


def check_polynomial(text: str, timeout: float = 60):
    seconds, result = run_python(POLYNOMIAL_CHECK.format(text=text), timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    build_s = json.loads(result.stdout.strip().splitlines()[-1])["build_s"]
    print(f"\n  built in {build_s:.1f} s ({seconds:.1f} s with startup and checks)")


def test_polynomial_of_2000_terms_builds_in_bounded_time():
    terms = " + ".join(["-3"] + polynomial_terms(1, 2001))
    check_polynomial(spec_text(f"y = {terms}"))


def test_polynomial_of_300_terms_builds():
    """A flat sum builds to correct code (the 2000-term test checks time)."""
    coefficients = [(k % 7) - 3 for k in range(301)]
    terms = " + ".join(["-3"] + polynomial_terms(1, 301))
    module = fngen.load(parse_spec(spec_text(f"y = {terms}"), "limits.yaml"))
    x = torch.tensor([-0.9, 0.5], dtype=torch.float64)
    want = sum(c * x**k for k, c in enumerate(coefficients))
    torch.testing.assert_close(module.f(x), want, rtol=1e-9, atol=1e-9)


@SLOW
def test_polynomial_of_2000_terms_in_statements_builds_in_bounded_time():
    lines = ["p0 = -3"]
    for j in range(20):
        lines.append(
            f"p{j + 1} = p{j} + "
            + " + ".join(polynomial_terms(100 * j + 1, 100 * j + 101))
        )
    lines.append("y = p20 + 0*x")
    body = "".join(f"      {line}\n" for line in lines)
    check_polynomial(f"fngen: 1\nfunctions:\n  f:\n    formula: |\n{body}", 120)


def many_functions_text(count: int) -> str:
    return "fngen: 1\nfunctions:\n" + "".join(
        f"  f{i}:\n    formula: y = x*{i + 1} + sin(x)\n" for i in range(count)
    )


@SLOW
def test_thousand_small_functions_build_in_bounded_time():
    code = f"""
        import time, fngen
        from fngen.spec import parse_spec
        text = {many_functions_text(1000)!r}
        start = time.perf_counter()
        source = fngen.generate(parse_spec(text, "many.yaml"))
        print(time.perf_counter() - start, source.count("torch.autograd.Function)"))
    """
    seconds, result = run_python(code, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    build_s, classes = result.stdout.split()
    assert int(classes) == 1000
    print(f"\n  1000 functions: generated in {float(build_s):.1f} s")


def test_hundred_small_functions_build_in_bounded_time():
    text = many_functions_text(100)
    start = time.perf_counter()
    source = fngen.generate(parse_spec(text, "many.yaml"))
    seconds = time.perf_counter() - start
    print(f"\n  100 functions: generated in {seconds:.1f} s")
    assert source.count("(torch.autograd.Function):") == 100
    assert seconds < 60


# -- depth ------------------------------------------------------------------------

NESTED = {
    "parentheses 200": "y = " + "(" * 200 + "x" + ")" * 200,
    "parentheses 201": "y = " + "(" * 201 + "x" + ")" * 201,
    "parentheses 99000": "y = " + "(" * 99_000 + "x" + ")" * 99_000,
    "parentheses 100000": "y = " + "(" * 100_000 + "x" + ")" * 100_000,
    "unary minus 100000": "y = " + "-" * 100_000 + "x",
    "unary minus 1000": "y = " + "- " * 1000 + "x",
    "sum of 60000": "y = x" + " + x" * 60_000,
    "power tower 30000": "y = x" + "**x" * 30_000,
    "calls 50": "y = " + "sin(" * 50 + "x" + ")" * 50,
}
# Past Python's stack in SymPy's diff: refused with a located error.
TOO_DEEP_FOR_SYMPY = {
    "calls 199": "y = " + "sin(" * 199 + "x" + ")" * 199,
    "power tower 300": "y = x" + "**x" * 300,
    "statement chain 300": "\n".join(
        ["t0 = x"] + [f"t{i} = sin(t{i - 1})" for i in range(1, 300)]
    ),
}


@pytest.mark.parametrize(
    "formula",
    [pytest.param(f, id=k) for k, f in {**NESTED, **TOO_DEEP_FOR_SYMPY}.items()],
)
def test_deep_formulas_build_or_are_refused(formula):
    start = time.perf_counter()
    result = outcome(spec_text(formula))
    print(f"\n  {result} in {time.perf_counter() - start:.2f} s")
    assert time.perf_counter() - start < 30


def test_parentheses_200_deep_build_correct_code():
    module = fngen.load(parse_spec(spec_text(NESTED["parentheses 200"] + "*2")))
    x = torch.tensor([1.5], dtype=torch.float64)
    torch.testing.assert_close(module.f(x), 2 * x)


@pytest.mark.parametrize(
    "text",
    [
        "fngen: 1\nfunctions: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "fngen: 1\nfunctions: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
        "fngen: 1\nfunctions:\n"
        + "".join(" " * i + f"k{i}:\n" for i in range(1, 3000)),
    ],
    ids=["flow sequences", "flow mappings", "block mappings"],
)
def test_deep_yaml_is_refused(text):
    assert outcome(text) == "refused"


# -- huge numbers -----------------------------------------------------------------

X = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
HUGE = {
    "y = x**100000": lambda x: x**100000,
    "y = x**(10**10)": lambda x: x ** (10**10),
    "y = x**-100000": lambda x: x**-100000,
    "y = x**1e308": lambda x: x**1e308,
    "y = x*2**(10**10)": None,
    "y = x*(10**100)**1000": None,
    "y = x*1e308*10": None,
    "y = x*exp(1000)": None,
    "y = x*2**1024": None,
    "y = x*2**1023": lambda x: x * 2.0**1023,
    "y = x*10**400/10**399": lambda x: 10 * x,
    "y = 2**x*2**1000": lambda x: 2**x * 2.0**1000,
}


@pytest.mark.parametrize("formula", list(HUGE))
def test_huge_numbers_build_correct_code_or_are_refused(formula):
    """None: no float64 result exists, so fngen must refuse; otherwise if
    fngen builds it, forward and gradient are right (inf where IEEE says)."""
    try:
        module = fngen.load(parse_spec(spec_text(formula), "limits.yaml"))
    except SpecError as error:
        assert str(error).startswith("limits.yaml:")
        return
    want = HUGE[formula]
    assert want is not None, "built code for a constant out of the float range"
    x = X.clone().requires_grad_()
    (grad,) = torch.autograd.grad(module.f(x).sum(), x)
    xr = X.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(want(xr).sum(), xr)
    torch.testing.assert_close(module.f(X), want(X), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "init", ["constant(1e308*10)", "uniform(-10**400, 1)", "normal(0, exp(1000))"]
)
def test_huge_init_constants_are_refused_or_work(init):
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x*a\n"
        f"    inputs: {{x: tensor, a: {{param: [3], init: {json.dumps(init)}}}}}\n"
    )
    try:
        module = fngen.load(parse_spec(text, "limits.yaml"))
    except SpecError as error:
        assert str(error).startswith("limits.yaml:")
        return
    module.F()


# Constants near and past MAX_CONSTANT_BITS, through every function: each
# formula builds or is refused, located, within the guard (a hang was
# mpmath reducing the argument of sin(exp(exp(exp(5)))) at ~10**64 bits).
HUGE_CONSTANTS = [
    "exp(exp(exp(5)))",
    "-exp(exp(exp(5)))",
    "exp(exp(7))",
    "1/exp(-exp(exp(5)))",
    "10**400*10**400*10**400*10**400",
    "exp(2800)",
    "100000",  # digamma and lgamma of it were exact: a harmonic number, a factorial
]
CONSTANT_CHECK = """
    import json, sys
    import fngen
    from fngen import SpecError
    from fngen.functions import POINTWISE_FUNCTIONS
    from fngen.spec import parse_spec
    outcomes = {{}}
    for h in {constants!r}:
        for name, function in sorted(POINTWISE_FUNCTIONS.items()):
            if name == "where":
                calls = [f"where({{h}} > 3, x, 2*x)", f"where(x > 0, {{h}}, x)"]
            else:
                others = ["1"] * (max(function.arities) - 1)
                calls = [f"{{name}}({{', '.join([h] + others)}})"]
                if max(function.arities) > 1:
                    calls.append(f"{{name}}({{', '.join(others + [h])}})")
            for call in calls:
                text = f'fngen: 1\\nfunctions:\\n  f:\\n    formula: "y = x*{{call}}"\\n'
                try:
                    fngen.generate(parse_spec(text, "c.yaml"))
                    outcomes[call] = "built"
                except SpecError as error:
                    assert str(error).startswith("c.yaml:"), str(error)
                    outcomes[call] = str(error)
    print(json.dumps(outcomes))
"""


def test_huge_constants_in_every_function_build_or_are_refused_without_hanging():
    seconds, result = run_python(
        CONSTANT_CHECK.format(constants=HUGE_CONSTANTS), timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout)
    assert len(outcomes) > 7 * 40
    assert outcomes["digamma(100000)"] == outcomes["lgamma(100000)"] == "built"
    assert outcomes["sin(exp(exp(exp(5))))"] == (
        "c.yaml:4:25: error: constant too large to evaluate: exp(exp(exp(5))) "
        "(its magnitude passes 2**4096)"
    )
    print(f"\n  {len(outcomes)} formulas in {seconds:.1f} s")


PRECISE_CONSTANTS = {
    "sin(exp(1000))": lambda mp: mp.sin(mp.exp(1000)),
    "cos(exp(2000))": lambda mp: mp.cos(mp.exp(2000)),
    "tan(10**300 + 1/3)": lambda mp: mp.tan(mp.mpf(10) ** 300 + mp.mpf(1) / 3),
    "sigmoid(sin(exp(900)))": lambda mp: 1 / (1 + mp.exp(-mp.sin(mp.exp(900)))),
    "relu(cos(exp(800)))": lambda mp: max(mp.cos(mp.exp(800)), 0),
    "(exp(300) + 1/7) - exp(300)": lambda mp: mp.mpf(1) / 7,
}


@pytest.mark.parametrize("formula", list(PRECISE_CONSTANTS))
def test_constants_are_folded_to_their_value(formula):
    """Folded to float precision, also where a large argument needs far
    more than 40 digits (checked against mpmath at 3000)."""
    import mpmath

    module = fngen.load(parse_spec(spec_text(f"y = x*({formula})"), "limits.yaml"))
    with mpmath.workdps(3000):
        want = float(PRECISE_CONSTANTS[formula](mpmath))
    x = torch.tensor([1.0], dtype=torch.float64)
    torch.testing.assert_close(module.f(x), x * want, rtol=2e-16, atol=0)


def test_integer_with_too_many_digits_is_refused():
    assert outcome(spec_text("y = x*" + "9" * 5000)) == "refused"


# -- long names and big files -----------------------------------------------------


def test_extremely_long_names():
    name = "a" * 5000
    # An explicit key ('? '): PyYAML limits implicit keys to 1024 characters.
    text = f"fngen: 1\nfunctions:\n  ? {name}\n  : formula: {'o' * 5000} = {'i' * 5000}*2\n"
    module = fngen.load(parse_spec(text, "limits.yaml"))
    x = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    y = getattr(module, name)(x)
    torch.testing.assert_close(y, 2 * x)
    cls = "A" + "a" * 4999
    assert set(module.__all__) == {f"{cls}Function", name, cls}
    assert getattr(module, cls)()(x).shape == x.shape


def test_spec_of_5_mb_with_a_long_doc():
    doc = "".join(
        f"  line {i} of a long module doc, with some words\n" for i in range(100_000)
    )
    text = f"fngen: 1\ndoc: |\n{doc}functions:\n  f:\n    formula: y = sin(x)\n"
    assert len(text.encode()) > 5_000_000
    start = time.perf_counter()
    source = fngen.generate(parse_spec(text, "limits.yaml"))
    print(f"\n  5 MB doc: generated in {time.perf_counter() - start:.1f} s")
    namespace: dict = {}
    exec(compile(source, "<limits>", "exec"), namespace)
    assert namespace["__doc__"] == textwrap.dedent(doc).strip()


def test_spec_of_5_mb_of_comments():
    line = "# " + "padding " * 12 + "\n"
    text = (
        "fngen: 1\n"
        + line * (5_000_000 // len(line))
        + "functions:\n  f:\n    formula: y = x\n"
    )
    assert len(text.encode()) >= 4_999_000
    assert outcome(text) == "built"


def test_spec_over_10_mib_is_refused_quickly():
    text = (
        "fngen: 1\n"
        + "#" * (11 * 1024 * 1024)
        + "\nfunctions:\n  f:\n    formula: y = x\n"
    )
    start = time.perf_counter()
    assert outcome(text) == "refused"
    assert time.perf_counter() - start < 5


# -- determinism ------------------------------------------------------------------


def many_functions_spec(copies: int = 2) -> str:
    """Every example function, `copies` times under new names: outputs,
    grads, params, optional inputs, reductions and matmuls, many times over."""
    functions = {}
    for path in EXAMPLES:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for n in range(copies):
            for name, body in data["functions"].items():
                functions[f"{name}_v{n}"] = copy.deepcopy(body)  # no YAML anchors
    return yaml.safe_dump(
        {"fngen": 1, "doc": "Many functions.", "functions": functions},
        sort_keys=False,
        width=1000,
    )


HASH_SCRIPT = """
    import hashlib, json, sys, fngen
    out = {}
    for path in sys.argv[1:]:
        out[path] = hashlib.sha256(fngen.generate(path).encode()).hexdigest()
    print(json.dumps(out))
"""


def test_generate_is_byte_identical_across_runs_and_hash_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    many = tmp_path / "many.yaml"
    many.write_text(many_functions_spec(), encoding="utf-8")
    paths = [p.relative_to(ROOT).as_posix() for p in EXAMPLES] + [str(many)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HASH_SCRIPT), *paths],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1", "random")
    ]
    first = {p: fngen.generate(p) for p in paths}
    here = {p: hashlib.sha256(s.encode()).hexdigest() for p, s in first.items()}
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr[-3000:]
        assert json.loads(stdout) == here
    assert first[str(many)].count("(torch.autograd.Function):") >= 20


def test_build_check_accepts_a_fresh_build(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ops.py"
    runner = CliRunner()
    spec = "examples/ops.yaml"
    assert runner.invoke(cli_main, ["build", spec, "-o", str(out)]).exit_code == 0
    built = out.read_bytes()
    result = runner.invoke(cli_main, ["build", spec, "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == built
    out.write_bytes(built + b"# edited\n")
    result = runner.invoke(cli_main, ["build", spec, "-o", str(out), "--check"])
    assert result.exit_code == 1, result.output
    assert out.read_bytes() == built + b"# edited\n"
    # The real command line, in a fresh process, on a fresh build.
    out.write_bytes(built)
    check = subprocess.run(
        [sys.executable, "-m", "fngen", "build", spec, "-o", str(out), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert out.read_bytes() == built
