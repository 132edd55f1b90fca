"""Numerical trust (issue 13): no in-place write into a tensor that a
transform may have wrapped, no NaN from a branch that is not taken, no
division by the base of a power, and the stable forms of rational
functions of exp(u), each in float32 at large magnitudes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as nnf

import fngen
from fngen.reference import reference_forward
from fngen.spec import parse_spec
from float32_bar import LARGE, assert_float32_bar

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(
    [*ROOT.glob("examples/*.yaml"), *ROOT.glob("benchmarks/*.yaml")]
    + sorted(ROOT.glob("tests/specs/*.yaml"))
)


def load(body: str, name: str = "numerics.yaml"):
    """The module generated for the functions in `body` (YAML text)."""
    return fngen.load(parse_spec(f"fngen: 1\nfunctions:\n{body}", name))


MISH = """\
  mish:
    formula: y = x * tanh(softplus(x))
  scaled:
    formula: y = x * b * tanh(softplus(b))
    check:
      shapes: {x: [3, 4], b: [4]}
"""


@pytest.fixture(scope="module")
def mish_module():
    return load(MISH)


# -- item 2: in place only where no transform can have wrapped the target ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mish_backward_with_batched_gradients(mish_module, dtype):
    """The README's tutorial mish: torch.autograd.grad with a batch of
    gradients runs the backward under vmap with grad batched and x not."""
    x = torch.linspace(-5, 5, 12, dtype=dtype).requires_grad_()
    grads = torch.randn(3, 12, dtype=dtype)
    (got,) = torch.autograd.grad(mish_module.mish(x), x, grads, is_grads_batched=True)
    (want,) = torch.autograd.grad(nnf.mish(x), x, grads, is_grads_batched=True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mish_under_every_batching_transform(mish_module, dtype):
    x = torch.linspace(-5, 5, 6, dtype=dtype)
    want = torch.func.jacrev(nnf.mish)(x)
    f = mish_module.mish
    torch.testing.assert_close(
        torch.autograd.functional.jacobian(f, x, vectorize=True), want
    )
    with torch.no_grad():  # the helpers' in-place branch: grad mode off
        torch.testing.assert_close(torch.func.jacfwd(f)(x), want)
        torch.testing.assert_close(torch.func.jacrev(f)(x), want)
        torch.testing.assert_close(
            torch.func.vmap(torch.func.jacfwd(f))(x[None]), want[None]
        )


def test_mish_gradcheck_with_batched_gradients(mish_module):
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        mish_module.mish, (x,), check_batched_grad=True, check_forward_ad=True
    )
    assert torch.autograd.gradcheck(
        mish_module.mish, (x,), check_batched_forward_grad=True, check_forward_ad=True
    )


def test_mish_backward_of_a_broadcast_input(mish_module):
    """grad has x's shape [3, 4], mish's argument b is [4]: the helper's
    temporaries are b's size and cannot take the product in place."""
    x = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    got = torch.autograd.grad(mish_module.scaled(x, b).sum(), (x, b))
    want = torch.autograd.grad((x * b * torch.tanh(nnf.softplus(b))).sum(), (x, b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


INPLACE_HELPERS = {"_mish", "_mish_backward"}


def _inplace_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr.endswith("_")
            and not node.func.attr.startswith("_")
            and node.func.attr != "requires_grad_"
        ):
            yield node


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_generated_code_writes_in_place_only_in_the_audited_helpers(path):
    """Every spec in the repository: outside the mish helpers (tested under
    every transform above), no method call writes in place."""
    source = fngen.generate(fngen.load_spec(path))
    tree = ast.parse(source)
    for function in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
        if function.name in INPLACE_HELPERS:
            continue
        assert not list(_inplace_calls(function)), function.name
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        for method in cls.body:
            if isinstance(method, ast.FunctionDef) and method.name not in (
                "__init__",
                "reset_parameters",  # nn.init on the Module's own parameters
            ):
                calls = [ast.unparse(c) for c in _inplace_calls(method)]
                assert not calls, (cls.name, method.name, calls)


def test_mish_helpers_write_in_place_only_into_temporaries_of_x():
    """The helpers' in-place calls write into sigmoid(x) or what is computed
    from it and x alone; grad is read only by an out-of-place product."""
    source = fngen.generate(parse_spec(f"fngen: 1\nfunctions:\n{MISH}", "m.yaml"))
    tree = ast.parse(source)
    assert INPLACE_HELPERS <= {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef)
    }
    for function in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
        if function.name not in INPLACE_HELPERS:
            continue
        for call in _inplace_calls(function):
            names = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)}
            assert "grad" not in names, ast.unparse(call)


# -- item 3: a branch that is not taken gives no NaN -------------------------


def one(formula: str, inputs: str = ""):
    """(the generated function, its FunctionSpec) of a one-function spec."""
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n{inputs}"
    spec = parse_spec(text, "f.yaml")
    return getattr(fngen.load(spec), "f"), spec.functions[0]


def one_of(body: str):
    """(the generated function, its FunctionSpec) of a function's YAML body."""
    spec = parse_spec(f"fngen: 1\nfunctions:\n  f:\n{body}", "f.yaml")
    return getattr(fngen.load(spec), "f"), spec.functions[0]


def reference_of(fn):
    return lambda *args: reference_forward(fn, *args)


LARGE_X = torch.tensor(LARGE, dtype=torch.float64)
# Every pair of large values, y nonzero: exp(x)*0 is NaN in float32 as
# written, whatever the generator does.
GRID = torch.cartesian_prod(LARGE_X, LARGE_X[LARGE_X != 0]).T

# Formulas whose derivative multiplies a where with a 0 branch by a factor
# that overflows float32 exactly where that branch is taken.
NOT_TAKEN = {
    # celu written by hand: min's derivative times exp(x/alpha)
    "max(0, x) + min(0, alpha*(exp(x/alpha) - 1))": "alpha",
    # the same, as cse would have named the where times grad (grad_b = exp(a)*where)
    "max(0, exp(x)*y)": "",
    "clamp(exp(x), 0, 10)": "",
    "relu(-x*exp(x))": "",
    # a factor of the sum of two wheres
    "max(0, -x*exp(x)) + 2*min(0, x*exp(x))": "",
    # heaviside is a where too, in the forward
    "heaviside(-x)*exp(x) + x": "",
    "where(x > 0, x, exp(x*x))": "",
    "where(x < 0, exp(-x)*x, 0)*sinh(x)": "",
    "where(x < 0, x, 0)*exp(x)": "",
}


@pytest.mark.parametrize("formula", list(NOT_TAKEN))
def test_a_branch_not_taken_gives_no_nan_in_float32(formula):
    scalar = NOT_TAKEN[formula]
    inputs = f"    inputs:\n      x: tensor\n      y: tensor\n      {scalar}: float\n"
    if "y" not in formula:
        inputs = f"    inputs:\n      x: tensor\n      {scalar}: float\n"
    if not scalar:
        inputs = ""
    function, fn = one(f"y_ = {formula}", inputs)
    names = [i.name for i in fn.tensor_inputs]
    values = dict(zip(names, GRID)) if len(names) == 2 else {"x": LARGE_X}
    scalars = (1.5,) if scalar else ()
    assert_float32_bar(function, reference_of(fn), values, scalars)


def test_celu_by_hand_agrees_with_pytorch_celu_in_float32():
    function, fn = one(
        "y = max(0, x) + min(0, alpha*(exp(x/alpha) - 1))",
        "    inputs:\n      x: tensor\n      alpha: float\n",
    )
    x = LARGE_X.float().requires_grad_()
    for alpha in (0.5, 1.0, 2.0):
        got = torch.autograd.grad(function(x, alpha).sum(), x)[0]
        want = torch.autograd.grad(nnf.celu(x, alpha).sum(), x)[0]
        torch.testing.assert_close(got, want)


# -- item 4: a power's derivative never divides by its base -----------------

FOCAL = """\
    formula: |
      p = sigmoid(z)
      loss = -(1 - p)**gamma * log(p)
    inputs:
      z: tensor
      gamma: float
"""


@pytest.mark.parametrize("gamma", [2.0, 0.5, 1.5, 0.0])
def test_focal_loss_has_finite_gradients_in_float32(gamma):
    """(1 - p)**gamma is exactly 0 in float32 for logits from 17 on: its
    derivative as SymPy writes it, gamma*(1 - p)**gamma/(1 - p), was NaN."""
    function, fn = one_of(FOCAL)
    out, (grad,) = assert_float32_bar(
        function, reference_of(fn), {"z": LARGE_X}, (gamma,)
    )
    if gamma >= 1:
        # autograd of the same formula in float32: agree where it is finite
        z = LARGE_X.float().requires_grad_()
        p = torch.sigmoid(z)
        want = torch.autograd.grad((-((1 - p) ** gamma) * torch.log(p)).sum(), z)[0]
        finite = torch.isfinite(want)  # log(p) is -inf at z = -200 as written
        assert finite.sum() >= len(LARGE) - 3
        torch.testing.assert_close(grad[finite], want[finite], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "formula, inputs",
    [
        ("y = x**gamma", "    inputs:\n      x: tensor\n      gamma: float\n"),
        ("y = x**e", ""),
    ],
)
def test_a_zero_exponent_has_a_zero_derivative_at_a_zero_base(formula, inputs):
    """d/dx x**0 is 0, also at x = 0, as PyTorch's pow gives, not 0*0**-1."""
    function, fn = one(formula, inputs)
    x = torch.tensor([0.0, 0.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    e = torch.tensor([0.0, 2.0, 0.0, 0.5], dtype=torch.float64)
    for exponent in (0.0, 2.0) if "gamma" in inputs else (e,):
        args = (x, exponent)
        got = torch.autograd.grad(function(*args).sum(), x)[0]
        want = torch.autograd.grad(torch.pow(x, exponent).sum(), x)[0]
        torch.testing.assert_close(got, want, equal_nan=True)


# -- item 5: rational functions of exp(u), and softplus, stay finite ---------

STABLE_FORMS = {
    "log1p(exp(x))": "",
    "log(1 + exp(beta*x))/beta": "beta",
    "log(2 + exp(x))": "",
    "exp(-beta*x)/(1 + exp(-beta*x))**2": "beta",  # snnTorch's sigmoid surrogate
    "exp(x)/(1 + exp(x))**2": "",
    "exp(2*x)/(1 + exp(x))": "",
    "(1 - exp(x))/(1 + exp(x))": "",
    "exp(x)/(1 + exp(x) + exp(2*x))": "",
    "(exp(x) - 1)/(exp(x) + 1)": "",
    "x*exp(x)/(1 + exp(x))": "",
    "1/(1 + exp(-x))*(1 - 1/(1 + exp(-x)))": "",
    "exp(-x*y)/(1 + exp(-x*y))**2": "",
}


@pytest.mark.parametrize("formula", list(STABLE_FORMS))
def test_stable_forms_are_finite_in_float32(formula):
    scalar = STABLE_FORMS[formula]
    inputs = f"    inputs:\n      x: tensor\n      {scalar}: float\n" if scalar else ""
    function, fn = one(f"out = {formula}", inputs)
    names = [i.name for i in fn.tensor_inputs]
    if len(names) == 2:
        values = dict(zip(names, GRID))
        values["y"] = values["y"].clamp(-2, 2)  # x*y: large products
    else:
        values = {"x": LARGE_X}
    for scalars in [(0.5,), (5.0,)] if scalar else [()]:
        assert_float32_bar(function, reference_of(fn), values, scalars)


def test_the_sigmoid_surrogate_agrees_with_pytorch_sigmoid():
    function, fn = one(
        "out = exp(-k*x)/(1 + exp(-k*x))**2",
        "    inputs:\n      x: tensor\n      k: float\n",
    )
    x = LARGE_X.float().requires_grad_()
    got, (grad,) = function(x, 5.0), torch.autograd.grad(function(x, 5.0).sum(), x)
    s = torch.sigmoid(5 * x.double())
    want = s * torch.sigmoid(-5 * x.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(
        grad.double(), 5 * want * (1 - 2 * s), rtol=1e-4, atol=1e-7
    )


def test_pow_of_two_tensors_agrees_with_torch_pow_at_a_zero_base():
    """d/dy x**y is x**y*log(x): 0*-inf at x = 0, where torch.pow gives 0."""
    function, fn = one("out = x**y")
    x = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    y = torch.tensor([0.0, 0.5, 2.0, 1.5, -1.0], dtype=torch.float64)
    x, y = x.requires_grad_(), y.requires_grad_()
    got = torch.autograd.grad(function(x, y).sum(), (x, y))
    want = torch.autograd.grad(torch.pow(x, y).sum(), (x, y))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# -- an exp that overflows times a derivative that underflows to 0 ----------

# Formulas whose derivative multiplies exp(u), inf in float32 from u = 88.7,
# by the derivative of a saturating function of it, exactly 0 there:
# 0*inf = NaN unless the product is taken as one exp of the sum of logs.
EXP_TIMES_DECAY = [
    "x*tanh(exp(x))",  # TanhExp (Liu and Di 2020)
    "x*sigmoid(exp(x))",
    "erf(exp(x))",  # exp(x)*exp(-exp(2*x))
    "tanh(exp(x))*y",
    "exp(x)*tanh(x)",
]


@pytest.mark.parametrize("formula", EXP_TIMES_DECAY)
def test_an_overflowing_exp_times_a_vanishing_derivative_is_finite(formula):
    function, fn = one(f"out = {formula}")
    names = [i.name for i in fn.tensor_inputs]
    values = dict(zip(names, GRID)) if len(names) == 2 else {"x": LARGE_X}
    assert_float32_bar(function, reference_of(fn), values)


def test_tanh_exp_agrees_with_autograd_where_autograd_is_finite():
    function, _ = one("out = x*tanh(exp(x))")
    x = torch.linspace(-30, 100, 261, dtype=torch.float32, requires_grad=True)
    got = torch.autograd.grad(function(x).sum(), x)[0]
    want = torch.autograd.grad((x * torch.tanh(torch.exp(x))).sum(), x)[0]
    finite = torch.isfinite(want)
    assert not torch.isfinite(want).all()  # autograd's own 0*inf, from x = 89
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[finite], want[finite])
    torch.testing.assert_close(got[~finite], torch.ones_like(got[~finite]))


# -- a branch not taken is not differentiated into NaN either ---------------

PARTIAL_BRANCHES = [
    "where(x > 0, sqrt(x), 0)",
    "where(x > 0, x*log(x), 0)",
    "where(x <= 0, 0, x**1.5)",
    "where(x < 1, 1/(x - 1)**2, 0)",
    "where(x > -1, log1p(x), x)",
    "where(x > -1, where(x < 1, asin(x)*x, 0), 0)",
]


@pytest.mark.parametrize("formula", PARTIAL_BRANCHES)
def test_double_backward_of_a_partial_branch_is_finite(formula):
    """The backward of ``where(x > 0, sqrt(x), 0)`` is ``where(x > 0,
    grad/(2*sqrt(x)), 0)``; differentiated again, the branch not taken
    (NaN at x < 0) was multiplied by 0: 0*nan.  The argument is guarded."""
    function, _ = one(f"y = {formula}")
    x = torch.linspace(-3, 3, 25, dtype=torch.float64).requires_grad_()
    (g,) = torch.autograd.grad(function(x).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()
    # ...and the same as autograd of the formula with the guard by hand
    assert torch.autograd.gradgradcheck(
        function, (x.detach()[x.detach() != 1][:6].clone().requires_grad_(),)
    )


def test_a_guard_leaves_a_condition_it_cannot_read_as_written():
    """Found by the long fuzz run: a where whose condition is itself a
    product of a comparison (an ITE to SymPy) has no interval to guard."""
    function, fn = one(
        "out = acos(tanh(where((x > 0.5) * (x) < 0.5, (x > 0.5) * (x), x))/2) + x*y/7919"
    )
    # away from the kink at x = 0.5
    x = torch.linspace(-1.9, 1.9, 9, dtype=torch.float64) + 0.013
    y = torch.linspace(1, 2, 9, dtype=torch.float64, requires_grad=True)
    x.requires_grad_()
    torch.testing.assert_close(function(x, y), reference_of(fn)(x, y))
    assert torch.autograd.gradcheck(function, (x, y))
