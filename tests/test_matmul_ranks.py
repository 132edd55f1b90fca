"""`@` with torch.matmul's rules for every number of dimensions.

A vector operand (a 1-D tensor, as `F.linear`'s input may be) drops its
dimension from the product, so the matrix rules ``grad @ b.mT`` and
``a.mT @ grad`` are wrong for it: they fail, or, worse, give a gradient of
the wrong value that sums to the right shape (a vector times a batch of
matrices).  Where an operand is not surely a matrix, the backward calls the
module's `_matmul_grad_a` / `_matmul_grad_b`, which branch on the ranks and
sum to the operand's shape.  These tests compare every gradient with
autograd through `torch.matmul`, in float64, double backward included.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import fngen
from fngen.spec import parse_spec
from test_differential import (
    EXPRESSIONS,
    build,
    compare,
    fuzz_settings,
    make_inputs,
)

SPEC = """\
fngen: 1
functions:
  mm:
    formula: y = a @ b
  scaled:
    doc: A pointwise operand, b given transposed.
    formula: y = tanh((2*a) @ b.T)
  chain:
    formula: y = sum((a @ b) @ c)
  spread:
    doc: The product broadcast by a larger tensor after it.
    formula: y = (a @ b) * c
  transposed:
    doc: Both operands surely matrices; the plain rules.
    formula: y = a.T @ b.T
  linear:
    formula: y = input @ weight.T + bias
    inputs:
      input: tensor
      weight: {param: [out_features, in_features]}
      bias: {param: [out_features], optional: true}
"""

D = torch.float64
K, N, M = 4, 3, 5
# Shapes of a (.., N, K) and b (.., K, M): vectors, matrices, batches that
# broadcast against each other or against nothing.
A_SHAPES = [(K,), (N, K), (2, N, K), (1, N, K)]
B_SHAPES = [(K,), (K, M), (2, K, M), (3, 1, K, M)]
PAIRS = [(sa, sb) for sa in A_SHAPES for sb in B_SHAPES]


@pytest.fixture(scope="module")
def mod():
    return fngen.load(parse_spec(SPEC, "matmul.yaml"))


def _name(shape) -> str:
    return "x".join(map(str, shape))


def _assert_grads_match(function, reference, shapes, needs=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    needs = needs or [True] * len(shapes)
    args = [
        torch.randn(shape, dtype=D, generator=generator).requires_grad_(need)
        for shape, need in zip(shapes, needs)
    ]
    out, expected = function(*args), reference(*args)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)
    seed_grad = torch.randn(expected.shape, dtype=D, generator=generator)
    wrt = [a for a in args if a.requires_grad]
    got = torch.autograd.grad(out, wrt, seed_grad)
    want = torch.autograd.grad(expected, wrt, seed_grad)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w)
    return args


@pytest.mark.parametrize(
    "sa, sb", PAIRS, ids=[f"{_name(a)}@{_name(b)}" for a, b in PAIRS]
)
def test_product_gradients_match_torch_matmul(mod, sa, sb):
    args = _assert_grads_match(mod.mm, torch.matmul, [sa, sb])
    assert gradcheck(mod.mm, args)
    assert gradgradcheck(mod.mm, args)


def test_vector_times_batch_for_the_vector_alone(mod):
    # The case that read a wrong gradient of the right size: grad @ b.mT is
    # (2, 2, K) for a vector a and b of (2, K, M), and summed to K it is not
    # the gradient.  Only a requires grad, so nothing else failed instead.
    _assert_grads_match(mod.mm, torch.matmul, [(K,), (2, K, M)], needs=[True, False])


@pytest.mark.parametrize(
    "sa, sb", [((K,), (M, K)), ((N, K), (M, K)), ((2, N, K), (K,))], ids=_name
)
def test_pointwise_operand_and_transposed_b(mod, sa, sb):
    if len(sb) == 1:
        # .T is transpose(-2, -1): a vector has no dimension -2.
        with pytest.raises(IndexError, match="Dimension out of range"):
            mod.scaled(torch.randn(sa, dtype=D), torch.randn(sb, dtype=D))
        return
    args = _assert_grads_match(
        mod.scaled, lambda a, b: torch.tanh((2 * a) @ b.mT), [sa, sb]
    )
    assert gradgradcheck(mod.scaled, args)


@pytest.mark.parametrize(
    "shapes",
    [
        [(K,), (K, M), (M,)],  # a scalar in the middle of the chain
        [(K,), (K, M), (M, 2)],
        [(K,), (2, K, M), (3, 1, M, 2)],
        [(N, K), (K,), (N, 2)],
        [(2, N, K), (K, M), (M,)],
    ],
    ids=lambda shapes: "-".join(map(_name, shapes)),
)
def test_chained_products(mod, shapes):
    args = _assert_grads_match(mod.chain, lambda a, b, c: ((a @ b) @ c).sum(), shapes)
    assert gradgradcheck(mod.chain, args)


@pytest.mark.parametrize(
    "shapes",
    [
        [(K,), (K, M), (3, 1, M)],
        [(K,), (K,), (2, 3)],
        [(N, K), (K,), (M, N)],
        [(K,), (2, K, M), (N, 2, M)],
    ],
    ids=lambda shapes: "-".join(map(_name, shapes)),
)
def test_product_broadcast_after_it(mod, shapes):
    # The product's gradient arrives with dimensions in front that its own
    # shape does not have: the helpers must not take them for its own.
    _assert_grads_match(mod.spread, lambda a, b, c: (a @ b) * c, shapes)


def test_surely_matrices_keep_the_plain_rules(mod):
    source = inspect.getsource(mod.TransposedFunction.backward)
    assert "_matmul_grad" not in source
    assert (
        "grad_a = (b.transpose(-2, -1) @ grad.transpose(-2, -1)).sum_to_size(a.shape)"
        in source
    )
    assert (
        "grad_b = (grad.transpose(-2, -1) @ a.transpose(-2, -1)).sum_to_size(b.shape)"
        in source
    )
    _assert_grads_match(mod.transposed, lambda a, b: a.mT @ b.mT, [(2, K, N), (M, K)])


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("input_shape", [(K,), (N, K), (2, N, K)], ids=_name)
def test_linear_takes_what_f_linear_takes(mod, input_shape, bias):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(input_shape, dtype=D, generator=generator, requires_grad=True)
    w = torch.randn(M, K, dtype=D, generator=generator, requires_grad=True)
    b = torch.randn(M, dtype=D, generator=generator, requires_grad=True)
    args = (x, w, b if bias else None)
    out, expected = mod.linear(*args), F.linear(*args)
    torch.testing.assert_close(out, expected)
    wrt = [t for t in args if t is not None]
    g = torch.randn(expected.shape, dtype=D, generator=generator)
    for got, want in zip(
        torch.autograd.grad(out, wrt, g), torch.autograd.grad(expected, wrt, g)
    ):
        torch.testing.assert_close(got, want)
    assert gradgradcheck(mod.linear, args)


def test_vector_products_under_torch_func(mod):
    a = torch.randn(K, dtype=D)
    b = torch.randn(2, K, M, dtype=D)
    jac = torch.func.jacrev(mod.mm, argnums=(0, 1))(a, b)
    want = torch.func.jacrev(torch.matmul, argnums=(0, 1))(a, b)
    for got, expected in zip(jac, want):
        torch.testing.assert_close(got, expected)
    batch = torch.randn(6, K, dtype=D)
    torch.testing.assert_close(
        torch.func.vmap(torch.func.grad(lambda v: mod.mm(v, b).sum()))(batch),
        torch.func.vmap(torch.func.grad(lambda v: (v @ b).sum()))(batch),
    )
    _, tangent = torch.func.jvp(mod.mm, (a, b), (torch.ones_like(a), b))
    _, expected = torch.func.jvp(torch.matmul, (a, b), (torch.ones_like(a), b))
    torch.testing.assert_close(tangent, expected)


# -- differential: random pointwise operands, random ranks -------------------

# Operand a is a pointwise expression of x and y, operand b of w and v; the
# product is returned, reduced, or broadcast by a third factor.
A_INPUTS = [
    {"x": (K,), "y": (K,)},
    {"x": (N, K), "y": (K,)},
    {"x": (K,), "y": (2, 1, K)},
]
B_INPUTS = [
    {"w": (K,), "v": (K,)},
    {"w": (K, M), "v": (M,)},
    {"w": (2, K, M), "v": (K, 1)},
]
SHAPINGS = ["out = {p}", "out = sum({p}, dim=-1)"]


def _renamed(expression: str, names: dict[str, str]) -> str:
    return re.sub(r"\b[xy]\b", lambda m: names[m.group()], expression)


@fuzz_settings(25)
@given(
    first=EXPRESSIONS,
    second=EXPRESSIONS,
    a_inputs=st.sampled_from(A_INPUTS),
    b_inputs=st.sampled_from(B_INPUTS),
    shaping=st.sampled_from(SHAPINGS),
    seed=st.integers(0, 2**16),
)
def test_products_of_random_operands_agree_with_torch_autograd(
    first, second, a_inputs, b_inputs, shaping, seed
):
    a_shape = torch.broadcast_shapes(*a_inputs.values())
    b_shape = torch.broadcast_shapes(*b_inputs.values())
    try:
        product = torch.empty(a_shape) @ torch.empty(b_shape)
    except RuntimeError:
        assume(False)  # the operands do not multiply
    assume(product.dim() > 0 or "dim=" not in shaping)
    a = f"({first} + x*y/7919)"
    b = f"({_renamed(second, {'x': 'w', 'y': 'v'})} + w*v/7919)"
    module, fn = build(shaping.format(p=f"{a} @ {b}"))
    shapes = {**a_inputs, **b_inputs}
    args, generator = make_inputs(fn, shapes, seed)
    compare(module, fn, args, generator)
