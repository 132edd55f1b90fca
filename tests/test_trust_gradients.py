"""Regression tests of issue 13's classes of wrong gradients in the
generator's derivation and printing: boolean outputs, inputs whose
derivative is zero, operator precedence, several outputs with tensor
operations, broadcasting through tensor operations, and code the legacy
exporters take."""

from __future__ import annotations

import inspect
import io
import re
import warnings

import pytest
import torch

import fngen
from fngen.spec import parse_spec

D = torch.float64


def load(formula: str, extra: str = ""):
    body = "".join(f"      {line}\n" for line in formula.splitlines())
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: |\n{body}{extra}"
    return fngen.load(parse_spec(text, "trust.yaml"))


def rand(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed + len(shape))
    return torch.randn(shape, generator=generator, dtype=D).requires_grad_()


# -- 1. boolean outputs ---------------------------------------------------------


@pytest.fixture(scope="module")
def boolean():
    return load("y = x * x\nm = x > 0", "    outputs: [y, m]\n")


def test_a_comparison_output_is_a_bool_tensor_marked_non_differentiable(boolean):
    x = rand(3, 4)
    y, m = boolean.f(x)
    assert m.dtype == torch.bool and not m.requires_grad
    torch.testing.assert_close(m, x > 0)
    assert y.requires_grad
    setup = inspect.getsource(boolean.FFunction.setup_context)
    assert "ctx.mark_non_differentiable(m)" in setup
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, 2 * x.detach())


def test_the_backward_reads_no_gradient_of_the_boolean_output(boolean):
    source = inspect.getsource(boolean.FFunction.backward)
    assert "grad_m" not in source.split(":", 1)[1]  # only in the signature
    assert "new_full" not in source and "torch.where" not in source


def test_the_jvp_gives_no_tangent_for_the_boolean_output(boolean):
    assert "return y_t, None" in inspect.getsource(boolean.FFunction.jvp)
    x, tangent = rand(3, 4).detach(), rand(3, 4, seed=1).detach()
    (y, m), (y_t, m_t) = torch.func.jvp(boolean.f, (x,), (tangent,))
    torch.testing.assert_close(y_t, 2 * x * tangent)
    assert m.dtype == torch.bool


def test_the_derivative_of_a_comparison_is_a_zero():
    """where(x > 0, c, 1) has a zero derivative in x: zeros of x's shape,
    not torch.where(x > 0, 0, grad.new_full((), 0))."""
    module = load("y = where(x > 0, c, 1)")
    source = inspect.getsource(module.FFunction.backward)
    assert "grad_x = torch.zeros_like(x)" in source
    assert "new_full" not in source
    x, c = rand(3, 4), rand(3, 4, seed=1)
    grad_x, grad_c = torch.autograd.grad(module.f(x, c).sum(), (x, c))
    torch.testing.assert_close(grad_x, torch.zeros_like(x))
    torch.testing.assert_close(grad_c, (x > 0).to(D))


def test_a_comparison_inside_a_formula_is_still_a_number():
    module = load("m = x > 0\ny = m * x")
    x = rand(3, 4)
    y = module.f(x)
    assert y.dtype == D
    torch.testing.assert_close(y, (x > 0) * x)


# -- 7. inputs whose derivative is zero ---------------------------------------


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("y = c * floor(x)", lambda c, x: c * torch.floor(x)),
        ("y = sign(x) + c", lambda c, x: torch.sign(x) + c),
        ("y = c * round(x)**2", lambda c, x: c * torch.round(x) ** 2),
    ],
)
def test_an_input_with_a_zero_derivative_gets_zeros_not_none(formula, expected):
    module = load(formula, "    inputs: {c: tensor, x: tensor}\n")
    c, x = rand(4), rand(3, 4, seed=1)
    # Without allow_unused: a None for x would raise here.
    grads = torch.autograd.grad(module.f(c, x).sum(), (c, x))
    want = torch.autograd.grad(expected(c, x).sum(), (c, x))
    for got, wanted in zip(grads, want):
        assert got is not None and got.shape == wanted.shape
        torch.testing.assert_close(got, wanted)


def test_an_input_no_output_with_a_gradient_reads_gets_none():
    """Like autograd: b = 2*y does not read x, so with only b's gradient
    x's is None (and y's when only a receives one)."""
    module = load("a = sum(x)\nb = 2*y", "    outputs: [a, b]\n")
    x, y = rand(3, 4), rand(3, 4, seed=1)
    a, b = module.f(x, y)
    grads = torch.autograd.grad(b.sum(), (x, y), allow_unused=True, retain_graph=True)
    assert grads[0] is None
    torch.testing.assert_close(grads[1], torch.full_like(y, 2))
    grads = torch.autograd.grad(a, (x, y), allow_unused=True)
    assert grads[1] is None


# -- 10. operator precedence --------------------------------------------------


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("y = a @ (a * b)", lambda a, b: a @ (a * b)),
        ("y = a @ (2 * b)", lambda a, b: a @ (2 * b)),
        ("y = a @ (b / (1 + a**2))", lambda a, b: a @ (b / (1 + a**2))),
        ("y = (a @ b) * (a @ (a @ b))", lambda a, b: (a @ b) * (a @ (a @ b))),
        ("y = 1 / (a @ b + 3)", lambda a, b: 1 / (a @ b + 3)),
    ],
)
def test_products_keep_their_parentheses(formula, expected):
    module = load(formula)
    source = module.__fngen_source__
    assert "a @ a * b" not in source and "a @ 2 * b" not in source
    a, b = rand(3, 3), rand(3, 3, seed=1)
    torch.testing.assert_close(module.f(a, b), expected(a, b))
    grad_out = rand(3, 3, seed=2).detach()
    got = torch.autograd.grad(module.f(a, b), (a, b), grad_out)
    want = torch.autograd.grad(expected(a, b), (a, b), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    tangents = (rand(3, 3, seed=3).detach(), rand(3, 3, seed=4).detach())
    primals = (a.detach(), b.detach())
    _, got_t = torch.func.jvp(module.f, primals, tangents)
    _, want_t = torch.func.jvp(expected, primals, tangents)
    torch.testing.assert_close(got_t, want_t)


def test_the_printed_forward_of_a_product_of_a_product():
    module = load("y = a @ (a * b)")
    assert "y = a @ (a * b)" in inspect.getsource(module.FFunction.forward)
    jvp = inspect.getsource(module.FFunction.jvp)
    assert "a_t @ (a * b)" in jvp


# -- 11. several outputs with tensor operations ---------------------------------


def test_only_some_outputs_of_tensor_operations_receive_a_gradient():
    module = load("a = sum(x)\nb = relu(x) @ x.T", "    outputs: [a, b]\n")
    x = rand(3, 4)
    a, b = module.f(x)
    want_a, want_b = x.sum(), torch.relu(x) @ x.mT
    grad_b = rand(3, 3, seed=1).detach()
    for got_out, want_out, grad_out in ((b, want_b, grad_b), (a, want_a, None)):
        (got,) = torch.autograd.grad(got_out, x, grad_out, retain_graph=True)
        (want,) = torch.autograd.grad(want_out, x, grad_out, retain_graph=True)
        torch.testing.assert_close(got, want)
    backward = inspect.getsource(module.FFunction.backward)
    branch = backward.split("if grad_a is None and grad_b is not None:")[1]
    branch = branch.split("return")[0]
    assert not re.search(r"\bgrad_a\b", branch.replace("grad_a is None", ""))


# -- 12. broadcasting through tensor operations ----------------------------------


def test_a_product_broadcast_by_a_later_operation():
    module = load("h = a @ b\ny = d - h")
    a, b, d = rand(1, 3), rand(3, 1, seed=1), rand(3, 4, seed=2)
    y = module.f(a, b, d)
    torch.testing.assert_close(y, d - a @ b)
    grad_out = rand(3, 4, seed=3).detach()
    got = torch.autograd.grad(y, (a, b, d), grad_out)
    want = torch.autograd.grad(d - a @ b, (a, b, d), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_term_of_a_broadcast_transpose_is_counted_once():
    module = load("h = k.T\ny = sum(h * d) + sum(h.T)")
    k, d = rand(1, 1), rand(3, 4, seed=1)
    (grad_k,) = torch.autograd.grad(module.f(k, d), k)
    torch.testing.assert_close(grad_k, d.detach().sum().reshape(1, 1) + 1)


@pytest.mark.parametrize(
    "shapes",
    [((1, 3), (3, 1), (3, 4)), ((1, 3), (3, 4), (5, 1, 1)), ((3,), (3, 1), (2, 4))],
)
def test_products_of_every_rank_broadcast_by_a_sum(shapes):
    module = load("y = sum((a @ b) * d, dim=-1) + sum(a @ b)")
    a, b, d = (rand(*s, seed=n) for n, s in enumerate(shapes))

    def expected(a, b, d):
        return ((a @ b) * d).sum(-1) + (a @ b).sum()

    y = module.f(a, b, d)
    grad_out = torch.randn(y.shape, dtype=D)
    got = torch.autograd.grad(y, (a, b, d), grad_out)
    want = torch.autograd.grad(expected(a, b, d), (a, b, d), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# -- 9. code the legacy exporters take ---------------------------------------------


def _graph_kinds(graph) -> set[str]:
    """Node kinds of a traced graph, inside custom Functions' subgraphs too."""
    kinds = set()
    for node in graph.nodes():
        kinds.add(node.kind())
        if node.kind() == "prim::PythonOp" and node.hasAttribute("Subgraph"):
            kinds |= _graph_kinds(node.g("Subgraph"))
        for block in node.blocks():
            kinds |= _graph_kinds(block)
    return kinds


@pytest.fixture(scope="module")
def exported():
    tensors = fngen.load("examples/tensors.yaml")
    ops = fngen.load("examples/ops.yaml")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = tensors.Linear(4, 3)

        def forward(self, x, y):
            return ops.sqrt_and_inverse(self.linear(x).abs() + 1, y)

    return Model(), (torch.rand(5, 4), torch.rand(5, 3))


def test_traced_code_has_no_mT(exported):
    model, args = exported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, args)
    kinds = _graph_kinds(traced.inlined_graph)
    assert "aten::transpose" in kinds and "aten::reciprocal" in kinds
    assert "aten::mT" not in kinds
    torch.testing.assert_close(traced(*args), model(*args))


def test_the_legacy_onnx_exporter_exports_linear_and_a_reciprocal(exported):
    pytest.importorskip("onnx")
    model, args = exported
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, buffer, dynamo=False)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(buffer.getvalue())
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    (out,) = session.run(None, feeds)
    torch.testing.assert_close(torch.from_numpy(out), model(*args).detach())


# -- 6. an output without a gradient takes no part in the backward -----------------
# A zero gradient materialised for it, times a partial that overflows,
# is a NaN where autograd, which skips the output, has none.


def test_a_kept_intermediate_without_a_gradient_adds_no_nan():
    # The kept 2*expm1(-x/2) is inf at x = -200 in float32 (min() takes 0
    # there), and its partial exp(-x/2) too.
    module = load(
        "z = sigmoid(x)*(max(0, -x) + min(0, 2*(exp(-x/2) - 1))) + x*y/7919",
        "    save: speed\n",
    )
    x = torch.tensor([-200.0, -50.0, 0.5, 3.0], requires_grad=True)
    y = torch.linspace(-1, 1, 4, requires_grad=True)
    wide = x.detach().double().requires_grad_()
    (grad,) = torch.autograd.grad(module.f(x, y).sum(), x)
    (expected,) = torch.autograd.grad(module.f(wide, y.double()).sum(), wide)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-6)
    assert "zeros_like" not in inspect.getsource(module.FFunction.backward)


def test_past_three_outputs_only_those_with_a_gradient_are_read():
    module = load("a = x\nb = 2*x\nc = 3*x\nd = exp(x)", "    outputs: [a, b, c, d]\n")
    x = torch.tensor([1.0, 100.0], requires_grad=True)  # exp(100): inf
    a, b, c, d = module.f(x)
    (grad,) = torch.autograd.grad(a.sum() + c.sum(), x)
    torch.testing.assert_close(grad, torch.full_like(x, 4.0))
    xd = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(module.f, (xd,))
    assert torch.autograd.gradgradcheck(module.f, (xd,))
