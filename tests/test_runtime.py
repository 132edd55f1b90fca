"""The runtime helpers a generated module carries (fngen/templates/runtime.py),
imported and tested as the module they are, and their copying into the
generated code (`fngen.codegen.runtime_source`)."""

from __future__ import annotations

import ast

import pytest
import torch
import torch.nn.functional as F

from fngen import codegen
from fngen.templates import runtime as R


def _x(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 4 * torch.rand(shape, generator=generator, dtype=torch.float64) - 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_silu_and_mish_helpers_agree_with_torch(dtype):
    x, grad = _x(1000).to(dtype), _x(1000, seed=1).to(dtype)
    leaf = x.clone().requires_grad_()
    (want_silu,) = torch.autograd.grad(F.silu(leaf), leaf, grad)
    (want_mish,) = torch.autograd.grad(F.mish(leaf), leaf, grad)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    with torch.no_grad():  # the fused kernels and the one-sigmoid forms
        torch.testing.assert_close(R._silu_backward(grad, x), want_silu, **tol)
        torch.testing.assert_close(R._mish(x), F.mish(x), **tol)
        torch.testing.assert_close(R._mish_backward(grad, x), want_mish, **tol)
    # With grad mode on, the composed, differentiable forms.
    torch.testing.assert_close(R._silu_backward(grad, x), want_silu, **tol)
    torch.testing.assert_close(R._mish_backward(grad, x), want_mish, **tol)


def test_mish_backward_is_twice_differentiable():
    x = _x(50).requires_grad_()
    grad = _x(50, seed=1)
    assert torch.autograd.gradcheck(lambda x: R._mish_backward(grad, x), (x,))


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((3, 4), (4, 5)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((2, 3, 4), (4, 5)),
        ((4,), (4,)),
    ],
)
def test_matmul_gradients_agree_with_autograd(a_shape, b_shape):
    a = _x(*a_shape).requires_grad_()
    b = _x(*b_shape, seed=1).requires_grad_()
    out = a @ b
    grad = _x(*out.shape, seed=2)
    want_a, want_b = torch.autograd.grad(out, (a, b), grad)
    torch.testing.assert_close(R._matmul_grad_a(grad, b, a.shape), want_a)
    torch.testing.assert_close(R._matmul_grad_b(a, grad, b.shape), want_b)


def test_autocast_cast_casts_only_what_autocast_would():
    half = torch.bfloat16
    x = torch.ones(2)
    assert R._autocast_cast(x, "cpu", half).dtype == half
    assert R._autocast_cast(x.double(), "cpu", half).dtype == torch.float64
    assert R._autocast_cast(torch.ones(2, dtype=torch.long), "cpu", half).dtype == (
        torch.long
    )
    assert R._autocast_cast(x, "cuda", half) is x
    assert R._autocast_cast(None, "cpu", half) is None


def test_has_tangent_sees_forward_mode_ad():
    x = torch.ones(2)
    assert not R._has_tangent(x, None)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones(2))
        assert R._has_tangent(None, dual)


def test_runtime_source_copies_helpers_with_their_companions():
    source = codegen.runtime_source({"_matmul_grad_a", "_silu_backward"})
    names = [n.name for n in ast.parse(source).body]
    assert names == ["_silu_backward", "_matmul_grad_a", "_matmul_grad_b"]
    assert codegen.runtime_source(set()) == ""
    with pytest.raises(KeyError, match="_nope"):
        codegen.runtime_source({"_nope"})


def test_the_repository_specs_use_every_runtime_function_as_it_is_written():
    """Each function of runtime.py reaches some generated module of the
    repository, and reaches it as runtime.py has it: no dead helper, and
    no helper of a generated module written anywhere else."""
    from pathlib import Path

    import fngen
    from fngen.spec import load_spec

    root = Path(__file__).resolve().parent.parent
    specs = [
        p
        for d in ("examples", "benchmarks", "tests/specs")
        for p in sorted((root / d).glob("*.yaml"))
    ]
    functions = codegen._runtime_functions()
    runtime_names = set(functions)
    used = set()
    for path in specs:
        source = fngen.generate(load_spec(path))
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name in runtime_names:
                used.add(node.name)
                written = ast.unparse(node)
                assert written == ast.unparse(ast.parse(functions[node.name]).body[0])
    assert used == runtime_names
