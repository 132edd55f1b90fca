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
from fngen.spec import parse_spec

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
