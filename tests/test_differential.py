"""Differential testing: random formulas, generated Function vs torch autograd.

Hypothesis draws formulas from a grammar over every function in
`fngen.functions.POINTWISE_FUNCTIONS`, each wrapped in a form that keeps its
argument inside the function's domain (``log(1 + e**2)``, ``acosh(2 + e**2)``
...), plus arithmetic, comparisons, reductions with dims and two-input
broadcasting.  Each formula goes through the front door (spec text ->
`fngen.load`) and its generated forward and gradients (float64, random
grad_outputs) are compared with torch autograd of the same formula evaluated by
`fngen.reference.reference_forward`, an interpreter that does not share the
printer.  The reference itself is validated against hand-written torch code for
a handful of fixed formulas.
"""

from __future__ import annotations

import math
import os
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fngen
from fngen import functions as F
from fngen.functions import POINTWISE_FUNCTIONS
from fngen.reference import reference_forward
from fngen.spec import parse_spec
from float32_bar import LARGE, assert_float32_bar, representable
from formula_eval import evaluate

TOL = dict(rtol=1e-7, atol=1e-9)
# A term that no draw can cancel (no product of the drawn constants is 1/7919):
# it keeps both inputs used and every reduction operand a [3, 4] tensor.
ANCHOR = "x*y/7919"

# Every pointwise function with a form that stays inside its domain on any
# real argument {0}, {1}, ... (each slot gets its own random subexpression).
SAFE_FORMS = {
    "abs": "abs({0})",
    "sign": "sign({0})",
    "sqrt": "sqrt(2 + sin({0}))",
    "rsqrt": "rsqrt(2 + sin({0}))",
    "exp": "exp(sin({0}))",
    "expm1": "expm1(sin({0}))",
    "log": "log(1 + ({0})**2)",
    "log2": "log2(1 + ({0})**2)",
    "log10": "log10(1 + ({0})**2)",
    "log1p": "log1p(({0})**2)",
    "sin": "sin({0})",
    "cos": "cos({0})",
    "tan": "tan(tanh({0}))",
    "asin": "asin(tanh({0})/2)",
    "acos": "acos(tanh({0})/2)",
    "atan": "atan({0})",
    "atan2": "atan2({0}, 2 + sin({1}))",
    "sinh": "sinh(sin({0}))",
    "cosh": "cosh(sin({0}))",
    "tanh": "tanh({0})",
    "asinh": "asinh({0})",
    "acosh": "acosh(2 + ({0})**2)",
    "atanh": "atanh(tanh({0})/2)",
    "sigmoid": "sigmoid({0})",
    "logsigmoid": "logsigmoid({0})",
    "softplus": "softplus({0})",
    "relu": "relu({0})",
    "silu": "silu({0})",
    "mish": "mish({0})",
    "gelu": "gelu({0})",
    "gelu_tanh": "gelu_tanh({0})",
    "erf": "erf({0})",
    "erfc": "erfc({0})",
    "erfinv": "erfinv(tanh({0})/2)",
    "lgamma": "lgamma(2 + ({0})**2)",
    "digamma": "digamma(2 + ({0})**2)",
    "heaviside": "heaviside({0}, {1})",
    "floor": "floor({0})",
    "ceil": "ceil({0})",
    "round": "round({0})",
    "pow": "pow(2 + sin({0}), tanh({1}))",
    "hypot": "hypot({0}, 1 + ({1})**2)",
    "min": "min({0}, {1})",
    "max": "max({0}, {1})",
    "clamp": "clamp({0}, {1} - 1, {1} + 1)",
    "where": "where({0} < {c}, {0}, {1})",
}
# Smooth everywhere: the only ones numerical differentiation (gradgradcheck)
# can be trusted on at random points.
NOT_SMOOTH = {
    "abs",
    "sign",
    "relu",
    "heaviside",
    "floor",
    "ceil",
    "round",
    "min",
    "max",
    "clamp",
    "where",
}
# Operands that could cancel (x - x, x + -(x), x <= x) are kept apart by a
# factor no draw can produce (1/7) or by comparing with a constant {c}: a
# subexpression with a tensor in its first slot stays a tensor expression.
OPERATORS = [
    "({0}) + ({1})/7",
    "({0}) - ({1})/7",
    "({0}) * ({1})",
    "({0}) / (1 + ({1})**2)",
    "({0})**2",
    "(({0})^3)",  # parenthesized: see test_caret_binds_like_power
    "-({0})",
    "(1 + ({0})**2)**0.5",
    "({0} > {c}) * ({1})",
    "({0} <= {c}) + ({0} != {c})",
]
# A float input as an exponent (gamma in GAMMAS, 0 included): drawn by this
# file's differential tests, not by the grammars other files import.
EXPONENTS = ["(2 + sin({0}))**gamma", "sigmoid({0})**gamma"]
REDUCTIONS = ["sum", "mean"]
DIMS = [
    "",
    ", dim=-1",
    ", dim=0",
    ", dim=(0, 1)",
    ", dim=-1, keepdim=true",
    ", dim=(0, 1), keepdim=true",
]  # keepdim=true without dim: see test_full_reduction_with_keepdim (a bug)
SHAPES = [
    {"x": (3, 4), "y": (3, 4)},
    {"x": (3, 4), "y": (4,)},
    {"x": (4,), "y": (3, 4)},
]


def _slots(template: str) -> int:
    return len({m for m in re.findall(r"\{(\d)\}", template)})


def test_every_pointwise_function_has_a_safe_form():
    """The grammar covers exactly the supported functions, with their arity:
    a new function fails here until the differential test draws it."""
    assert set(SAFE_FORMS) == set(POINTWISE_FUNCTIONS)
    for name, template in SAFE_FORMS.items():
        parsed = re.findall(r"\b([a-z0-9_]+)\(", template)
        assert name in parsed, template
        call = re.search(rf"\b{name}\((.*)\)", template).group(1)
        depth, commas = 0, 0
        for char in call:
            depth += char == "("
            depth -= char == ")"
            commas += char == "," and depth == 0
        assert commas + 1 in POINTWISE_FUNCTIONS[name].arities, template


TENSOR_LEAVES = ["x", "y"]
CONSTANTS = ["0.5", "2", "3", "1.5", "pi"]


def expressions(
    functions: dict[str, str],
    operators: list[str],
    constant_calls: bool,
    bounded: bool = False,
):
    """Random expression text over x, y and constants, at most 3 levels deep.

    With `constant_calls` false, every call and operator has a tensor
    subexpression in its first slot and constants only as bare leaves
    elsewhere; with it true, any slot may hold any subexpression, so calls of
    constants (``relu(0.5)``, ``sin(0.5)**x``) are drawn too."""
    templates = sorted(functions.values()) + operators

    @st.composite
    def expression(draw, depth=3, tensor=True):
        leaves = TENSOR_LEAVES if tensor else TENSOR_LEAVES + CONSTANTS
        if depth == 0 or draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(leaves))
        template = draw(st.sampled_from(templates))
        args = []
        for slot in range(_slots(template)):
            if constant_calls:
                args.append(draw(expression(depth - 1, tensor=False)))
            elif slot == 0 or draw(st.booleans()):
                args.append(draw(expression(depth - 1, tensor=True)))
            else:
                args.append(draw(st.sampled_from(CONSTANTS)))
        if bounded:
            args = [f"tanh({a})" for a in args]
        return template.format(*args, c=draw(st.sampled_from(CONSTANTS)))

    return expression(tensor=not constant_calls)


SMOOTH_FORMS = {k: v for k, v in SAFE_FORMS.items() if k not in NOT_SMOOTH}
SMOOTH_OPERATORS = [op for op in OPERATORS if not re.search("[<>!]", op)]
EXPRESSIONS = expressions(SAFE_FORMS, OPERATORS, constant_calls=False)
SMOOTH_EXPRESSIONS = expressions(
    SMOOTH_FORMS, SMOOTH_OPERATORS, constant_calls=False, bounded=True
)
ANY_EXPRESSIONS = expressions(SAFE_FORMS, OPERATORS + EXPONENTS, constant_calls=True)
GAMMA_EXPRESSIONS = expressions(SAFE_FORMS, OPERATORS + EXPONENTS, constant_calls=False)


@st.composite
def formulas(draw, expressions=EXPRESSIONS):
    """A formula: pointwise, reduced at the end, or with a reduction in an
    intermediate statement that is broadcast back."""
    mode = draw(st.sampled_from(["pointwise", "reduce", "intermediate"]))
    first = draw(expressions)
    if mode == "pointwise":
        return f"out = {first} + {ANCHOR}"
    reduce = draw(st.sampled_from(REDUCTIONS))
    if mode == "reduce":
        dims = draw(st.sampled_from(DIMS))
        return f"out = {reduce}({first} + {ANCHOR}{dims})"
    second = draw(expressions)
    dims = draw(
        st.sampled_from(
            [", dim=-1, keepdim=true", ", dim=0", ", dim=(0, 1), keepdim=true"]
        )
    )
    return f"r = {reduce}({first} + {ANCHOR}{dims})\nout = ({second}) * r + {ANCHOR}"


# The values of the float input gamma (an exponent): 0 makes a power a
# constant, whose derivative is 0 even where its base is 0.
GAMMAS = [0.0, 0.5, 1.5, 2.0, 2.5]


def build(formula: str):
    """(generated module, parsed FunctionSpec) for `formula`, via spec text;
    a formula that reads gamma gets it as a float input after the tensors
    (in the order they first appear)."""
    body = "".join(f"      {line}\n" for line in formula.splitlines())
    inputs = ""
    if re.search(r"\bgamma\b", formula):
        targets = set(re.findall(r"^\s*([a-z_]\w*)\s*=", formula, re.M))
        names = re.findall(r"\b([a-z_]\w*)\b(?!\s*\()", formula)
        skip = targets | {"pi", "true", "false", "dim", "keepdim", "gamma", "T"}
        tensors = [n for n in dict.fromkeys(names) if n not in skip]
        inputs = "    inputs:\n" + "".join(f"      {n}: tensor\n" for n in tensors)
        inputs += "      gamma: float\n"
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: |\n{body}{inputs}"
    spec = parse_spec(text, "differential.yaml")
    return fngen.load(spec), spec.functions[0]


def make_inputs(fn, shapes, seed, gamma=1.5):
    generator = torch.Generator().manual_seed(seed)
    args = []
    for spec in fn.inputs:
        if not spec.is_tensor:
            args.append(gamma)
            continue
        value = torch.rand(shapes[spec.name], generator=generator, dtype=torch.float64)
        args.append((4 * value - 2).requires_grad_())
    return args, generator


def tensors_of(args):
    return [a for a in args if torch.is_tensor(a)]


def forward_and_grads(function, args, grad_output, batched=False):
    out = function(*args)
    grads = torch.autograd.grad(
        out,
        tensors_of(args),
        grad_output,
        allow_unused=True,
        materialize_grads=True,
        is_grads_batched=batched,
    )
    return out.detach(), [g.detach() for g in grads]


def as_written(fn, formula):
    """The formula text evaluated by torch, as written (`formula_eval`)."""
    names = [i.name for i in fn.inputs]
    return lambda *args: evaluate(formula, dict(zip(names, args)), "out")


def compare(module, fn, args, generator, formula=None):
    """The generated forward, gradients (one incoming gradient and a batch
    of them, `is_grads_batched`) and forward-mode tangents against torch
    autograd of fngen's reference interpreter and, given `formula`, of the
    formula as written."""
    expected = reference_forward(fn, *args)
    assert torch.isfinite(expected).all(), "the grammar left a domain"
    grad_output = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    references = [lambda *a: reference_forward(fn, *a)]
    if formula is not None:
        references.append(as_written(fn, formula))
    out, grads = forward_and_grads(module.f, args, grad_output)
    tensor_inputs = [i for i in fn.inputs if i.is_tensor]
    for reference in references:
        out_ref, grads_ref = forward_and_grads(reference, args, grad_output)
        assert out.shape == out_ref.shape
        torch.testing.assert_close(out, out_ref, **TOL)
        for spec, arg, grad, grad_ref in zip(tensor_inputs, args, grads, grads_ref):
            assert grad.shape == arg.shape
            torch.testing.assert_close(
                grad, grad_ref, **TOL, msg=lambda m: f"d/d{spec.name}: {m}"
            )
    # A batch of incoming gradients: the backward under vmap.
    batch = torch.stack([grad_output, -2 * grad_output])
    _, batched = forward_and_grads(module.f, args, batch, batched=True)
    for spec, grad, one in zip(tensor_inputs, batched, grads):
        want = torch.stack([one, -2 * one])
        # A gradient of None (no path to the input) is materialized unbatched.
        torch.testing.assert_close(
            grad.expand_as(want),
            want,
            **TOL,
            msg=lambda m: f"batched d/d{spec.name}: {m}",
        )
    # Forward mode: the jvp along random tangents.
    tangents = [
        torch.randn(a.shape, generator=generator, dtype=a.dtype)
        for a in tensors_of(args)
    ]
    for reference in references[-1:]:
        _, got = _jvp(module.f, args, tangents)
        _, want = _jvp(reference, args, tangents)
        torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"jvp: {m}")


def _jvp(function, args, tangents):
    scalars = {n: a for n, a in enumerate(args) if not torch.is_tensor(a)}

    def of_tensors(*tensors):
        it = iter(tensors)
        return function(
            *[scalars[n] if n in scalars else next(it) for n in range(len(args))]
        )

    primals = tuple(a.detach() for a in tensors_of(args))
    return torch.func.jvp(of_tensors, primals, tuple(tangents))


# FNGEN_FUZZ=N runs N examples of each fuzz test with fresh seeds (the
# long run before a release); unset, CI runs a few, derandomized.
LONG_FUZZ = os.environ.get("FNGEN_FUZZ")


def fuzz_settings(max_examples: int):
    """Reproducible in CI: derandomized, no example database."""
    return settings(
        max_examples=int(LONG_FUZZ) if LONG_FUZZ else max_examples,
        deadline=None,
        derandomize=not LONG_FUZZ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@fuzz_settings(40)
@given(
    formula=formulas(GAMMA_EXPRESSIONS),
    shapes=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.sampled_from(GAMMAS),
)
def test_generated_function_agrees_with_torch_autograd(formula, shapes, seed, gamma):
    module, fn = build(formula)
    args, generator = make_inputs(fn, shapes, seed, gamma)
    compare(module, fn, args, generator, formula)


@fuzz_settings(5)
@given(
    formula=formulas(SMOOTH_EXPRESSIONS),
    shapes=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_gradcheck_and_gradgradcheck_on_random_smooth_formulas(formula, shapes, seed):
    module, fn = build(formula)
    args, _ = make_inputs(fn, shapes, seed)
    assert torch.autograd.gradcheck(module.f, args, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(module.f, args)


@fuzz_settings(30)
@given(
    formula=formulas(ANY_EXPRESSIONS),
    shapes=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    gamma=st.sampled_from(GAMMAS),
)
def test_formulas_with_constant_subexpressions_agree_with_torch_autograd(
    formula, shapes, seed, gamma
):
    module, fn = build(formula)
    args, generator = make_inputs(fn, shapes, seed, gamma)
    compare(module, fn, args, generator, formula)


CUSTOM_FUNCTIONS_OF_CONSTANTS = {
    "out = relu(0.5)*x": lambda x: 0.5 * x,
    "out = sigmoid(1)*x": lambda x: x / (1 + math.exp(-1)),
    "out = softplus(0) + x": lambda x: math.log(2) + x,
    "out = floor(1.5)*x": lambda x: 1.0 * x,
    "out = sign(-1)*x": lambda x: -x,
    "out = max(1, 2)*x": lambda x: 2 * x,
    "out = clamp(2, 0, 1)*x": lambda x: x,
    "out = hypot(3, 4)*x": lambda x: 5 * x,
}


@pytest.mark.parametrize("formula", list(CUSTOM_FUNCTIONS_OF_CONSTANTS))
def test_custom_function_of_a_constant(formula):
    module, fn = build(formula)
    x = torch.linspace(-2, 2, 7, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(module.f(x), CUSTOM_FUNCTIONS_OF_CONSTANTS[formula](x))


def test_constant_base_with_a_tensor_exponent():
    module, fn = build("out = sin(0.5)**sin(x)")
    x = torch.linspace(-2, 2, 7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(module.f(x).sum(), x)
    want = math.sin(0.5) ** torch.sin(x) * math.log(math.sin(0.5)) * torch.cos(x)
    torch.testing.assert_close(grad, want.detach())


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_full_reduction_with_keepdim(reduce):
    module, fn = build(f"out = {reduce}(x*y, keepdim=true)")
    args, generator = make_inputs(fn, SHAPES[1], seed=3)
    compare(module, fn, args, generator)
    assert module.f(*args).shape == (1, 1)


CARET_FORMULAS = {
    "out = x^2 + 1": lambda x: x**2 + 1,
    "out = 2*x^2": lambda x: 2 * x**2,
    "out = -x^2": lambda x: -(x**2),
    "out = x^2*3": lambda x: x**2 * 3,
}


@pytest.mark.parametrize("formula", list(CARET_FORMULAS))
def test_caret_binds_like_power(formula):
    module, fn = build(formula)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(module.f(x), CARET_FORMULAS[formula](x))


# Minimal formulas for the bugs the random draws found, each fixed: a
# constant step times a constant printed as threshold_backward; lgamma of an
# integer-valued argument rewritten as log(gamma(...)); clamp of a constant;
# heaviside of a positive argument folded to an int inside sin; SymPy's
# True/False inside where() unknown to the reference; SymPy's Piecewise
# recursing without end on min's derivative; relu(2) left unevaluated.
FOUND_BY_FUZZING = [
    "out = (x > 0.5)*0.5 + x",
    "out = lgamma(2 + where(x > 0, 1, 2)) + x",
    "out = clamp(3, x - 1, x + 1)",
    "out = clamp(x, y, 2)",
    "out = sin(heaviside(x**2 + 1)) + x",
    "out = (where(x < 2, x, 2) > pi)*x",
    "out = where(where(x > 2, x, 0) < pi, x, 1)",
    "out = min(asinh(y) - x/7, sin(rsqrt(2 + sin(y))))",
    # relu of a piecewise constant: SymPy folds it into relu(2) <= 1/2,
    # which neither SymPy's N nor the reference could evaluate.
    "out = (relu((x <= 0.5) + (x != 0.5)) <= 0.5) + x*y/7919",
    "out = (softplus(where(x > 0, 1, 2)) > 1.5) + x",
]


@pytest.mark.parametrize("formula", FOUND_BY_FUZZING)
def test_formulas_found_by_fuzzing(formula):
    module, fn = build(formula)
    args, generator = make_inputs(fn, SHAPES[0], seed=11)
    compare(module, fn, args, generator)


# -- the reference itself, against hand-written torch -------------------------

HAND_WRITTEN = {
    "out = sin(x)*log(1 + y**2)": lambda x, y: torch.sin(x) * torch.log(1 + y**2),
    "out = sum(exp(x)*y, dim=-1)": lambda x, y: (torch.exp(x) * y).sum(-1),
    "out = mean(sigmoid(x) - softplus(y), dim=(0, 1), keepdim=true)": lambda x, y: (
        torch.sigmoid(x) - torch.nn.functional.softplus(y)
    ).mean(dim=(0, 1), keepdim=True),
    "out = where(x < y, relu(x), abs(y))": lambda x, y: torch.where(
        x < y, torch.relu(x), torch.abs(y)
    ),
    "out = max(x, y) + min(x, 0.5)*clamp(y, -0.5, 0.5)": lambda x, y: torch.maximum(
        x, y
    )
    + torch.minimum(x, torch.tensor(0.5, dtype=x.dtype)) * torch.clamp(y, -0.5, 0.5),
    "out = atan2(x, 2 + sin(y)) + hypot(x, y) - logsigmoid(x*y)": lambda x, y: (
        torch.atan2(x, 2 + torch.sin(y))
        + torch.hypot(x, y)
        - torch.nn.functional.logsigmoid(x * y)
    ),
    "out = erfinv(tanh(x)/2) + lgamma(2 + y**2)*digamma(2 + x**2)": lambda x, y: (
        torch.erfinv(torch.tanh(x) / 2)
        + torch.lgamma(2 + y**2) * torch.digamma(2 + x**2)
    ),
    "out = acosh(2 + x**2)*atanh(tanh(y)/2) + floor(x) + heaviside(y)*x": lambda x, y: (
        torch.acosh(2 + x**2) * torch.atanh(torch.tanh(y) / 2)
        + torch.floor(x)
        + (y > 0).to(x.dtype) * x
    ),
    "r = sum(x*y, dim=-1, keepdim=true)\nout = r*x**2 + rsqrt(2 + cos(y))": lambda x, y: (
        (x * y).sum(-1, keepdim=True) * x**2 + torch.rsqrt(2 + torch.cos(y))
    ),
    "out = pow(2 + sin(x), y) + log2(1 + x**2)*log10(3 + y) - expm1(x)/log1p(y**2 + 1)": lambda x, y: (
        torch.pow(2 + torch.sin(x), y)
        + torch.log2(1 + x**2) * torch.log10(3 + y)
        - torch.expm1(x) / torch.log1p(y**2 + 1)
    ),
}


@pytest.mark.parametrize("formula", list(HAND_WRITTEN), ids=range(len(HAND_WRITTEN)))
def test_reference_and_generated_agree_with_hand_written_torch(formula):
    module, fn = build(formula)
    assert [i.name for i in fn.inputs] == ["x", "y"]
    shapes = {"x": (3, 4), "y": (4,)}
    args, generator = make_inputs(fn, shapes, seed=len(formula))
    expected = HAND_WRITTEN[formula](*args)
    grad_output = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    want, want_grads = forward_and_grads(HAND_WRITTEN[formula], args, grad_output)
    for function in (lambda *a: reference_forward(fn, *a), module.f):
        out, grads = forward_and_grads(function, args, grad_output)
        torch.testing.assert_close(out, want, **TOL)
        for grad, want_grad in zip(grads, want_grads):
            torch.testing.assert_close(grad, want_grad, **TOL)


def test_reference_and_generated_agree_on_matmul_and_transpose():
    module, fn = build("out = tanh(x @ y.T) + sum(x, dim=-1, keepdim=true)")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64).requires_grad_()
    y = torch.randn(5, 4, generator=generator, dtype=torch.float64).requires_grad_()
    grad_output = torch.randn(3, 5, generator=generator, dtype=torch.float64)

    def by_hand(x, y):
        return torch.tanh(x @ y.mT) + x.sum(-1, keepdim=True)

    want, want_grads = forward_and_grads(by_hand, [x, y], grad_output)
    for function in (lambda *a: reference_forward(fn, *a), module.f):
        out, grads = forward_and_grads(function, [x, y], grad_output)
        torch.testing.assert_close(out, want, **TOL)
        for grad, want_grad in zip(grads, want_grads):
            torch.testing.assert_close(grad, want_grad, **TOL)


def test_differential_harness_can_fail():
    """A deliberately wrong reference is caught: the comparison has teeth."""
    module, fn = build("out = sin(x)*y + " + ANCHOR)
    args, generator = make_inputs(fn, SHAPES[0], seed=1)
    grad_output = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    out, grads = forward_and_grads(module.f, args, grad_output)
    wrong, wrong_grads = forward_and_grads(
        lambda x, y: torch.cos(x) * y + x * y / 7919, args, grad_output
    )
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out, wrong, **TOL)


def test_the_as_written_reference_catches_a_wrong_rewrite(monkeypatch):
    """fngen's reference interprets the stabilized formula: only the formula
    as written can tell a wrong stable rewrite."""
    import fngen.stable as stable

    monkeypatch.setattr(
        stable, "_softplus_of", lambda arg: F.Softplus(2 * arg.args[-1].args[0])
    )
    formula = "out = log(1 + exp(x)) + " + ANCHOR
    module, fn = build(formula)
    args, generator = make_inputs(fn, SHAPES[0], seed=2)
    with pytest.raises(AssertionError):
        compare(module, fn, args, generator, formula)
    compare(module, fn, args, torch.Generator().manual_seed(2))  # fngen's agrees


# -- float32 at large magnitudes ------------------------------------------------
#
# Random sums and products of pieces that are finite for every real input
# (wheres, min, max and clamp whose branch not taken overflows; rational
# functions of one exp, softplus forms, powers of sigmoids with a float
# exponent), at every pair of values in float32_bar.LARGE: the forward, the
# gradients (one incoming gradient and a batch) and the forward-mode tangents
# must be finite wherever float64 of the formula as written is, and close.

LINEAR = ["x", "-x", "2*x", "x/2", "x + 1", "y", "-y"]
BOUNDED = ["sin(y)", "tanh(y)", "0.5", "sigmoid(x)"]
LARGE_PIECES = [
    # rational functions of one exp, softplus, powers of a sigmoid
    "log1p(exp({u}))",
    "log(1 + exp({u}))",
    "log(2 + 3*exp({u}))",
    "exp({u})/(1 + exp({u}))**2",
    "exp(2*{u})/(1 + exp({u}))**2",
    "(1 - exp({u}))/(1 + exp({u}))",
    "1/(1 + exp(-{u}))",
    "exp({u})/(1 + exp({u}) + exp(2*{u}))",
    "(exp({u}) - 1)/(exp({u}) + 1)",
    "(1 - sigmoid({u}))**gamma",
    "sigmoid({u})**gamma",
    "-(1 - sigmoid({u}))**gamma*log(sigmoid({u}))",
    # a where, min, max or clamp whose branch not taken overflows
    "where({u} < {c}, exp({u}), {b})",
    "where({u} > -{c}, {b}, exp({u}))",
    "min({c}, exp({u}))",
    "max(-{c}, -exp({u}))",
    "clamp(exp({u}), -1, {c})",
    "max(0, {u}) + min(0, 2*(exp({u}/2) - 1))",
    "relu(-({u})*exp({u}))",
    "heaviside(-({u}))*exp({u})",
    "where({u} < 0, ({u})*exp({u}), 0)",
    # PyTorch's own stable functions
    "softplus({u})",
    "logsigmoid({u})",
    "tanh({u})",
]
LARGE_FORMS = ["{0}", "{b}*({0})", "tanh({0})", "({0})*({1})", "sin({0})/2"]


@st.composite
def large_formulas(draw):
    def piece():
        return draw(st.sampled_from(LARGE_PIECES)).format(
            u=draw(st.sampled_from(LINEAR)),
            c=draw(st.sampled_from(["1", "2", "3"])),
            b=draw(st.sampled_from(BOUNDED)),
        )

    terms = []
    for _ in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(LARGE_FORMS))
        terms.append(form.format(piece(), piece(), b=draw(st.sampled_from(BOUNDED))))
    return "out = " + " + ".join(terms) + " + " + ANCHOR


LARGE_GRID = torch.cartesian_prod(
    torch.tensor(LARGE, dtype=torch.float64), torch.tensor(LARGE, dtype=torch.float64)
).T


def assert_large_magnitudes(formula, gamma):
    module, fn = build(formula)
    values = dict(zip(["x", "y"], LARGE_GRID))
    values = {i.name: values[i.name] for i in fn.inputs if i.is_tensor}
    scalars = (gamma,) if not all(i.is_tensor for i in fn.inputs) else ()
    reference = as_written(fn, formula)
    out32, grads32 = assert_float32_bar(module.f, reference, values, scalars)
    # And close to float64 where that is representable.
    args64 = [v.clone().requires_grad_() for v in values.values()]
    ones = torch.ones_like(reference(*args64, *scalars))
    out64, grads64 = forward_and_grads(reference, [*args64, *scalars], ones)
    for what, got, want in [("forward", out32, out64), *zip(values, grads32, grads64)]:
        got, want = got.detach().double(), want.detach()
        keep = representable(want) & torch.isfinite(got)
        scale = 1 + want[keep].abs().max().item() if keep.any() else 1
        torch.testing.assert_close(
            got[keep],
            want[keep],
            rtol=1e-3,
            atol=1e-4 * scale,
            msg=lambda m: f"{what}: {m}",
        )


@fuzz_settings(25)
@given(formula=large_formulas(), gamma=st.sampled_from(GAMMAS))
def test_float32_at_large_magnitudes_is_finite_where_float64_is(formula, gamma):
    assert_large_magnitudes(formula, gamma)


# Minimal formulas for the bugs of issue 13 this test finds on the code before
# it: a where's 0 times an overflowing factor (celu by hand, heaviside),
# rational functions of exp (the sigmoid surrogate), a power's derivative
# divided by its base (a focal loss).
LARGE_FOUND = [
    "out = max(0, x) + min(0, 2*(exp(x/2) - 1))",
    "out = heaviside(-x)*exp(x)",
    "out = exp(-x)/(1 + exp(-x))**2",
    "out = log1p(exp(2*x))",
    # exp(x/2) and exp(x + 1) of one argument x/2 (a wrong gcd of the ratios)
    "out = (1 - exp(x/2))/(1 + exp(x/2))*exp(x + 1)/(1 + exp(x + 1) + exp(2*x + 1))"
    " + x*y/7919",
    "out = -(1 - sigmoid(x))**gamma*log(sigmoid(x)) + x*y/7919",
]


@pytest.mark.parametrize("formula", LARGE_FOUND)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_float32_at_large_magnitudes_found(formula, gamma):
    assert_large_magnitudes(formula, gamma)
