"""Tensor-level formulas of examples/tensors.yaml against PyTorch's own ops.

Every check compares the generated forward AND its gradients (with random
grad_outputs) to PyTorch's implementation, in float64 unless it says otherwise.
"""

from __future__ import annotations

import ast
import inspect
import math
import pathlib
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import fngen
from fngen.spec import parse_spec

SPEC = pathlib.Path(__file__).parent.parent / "examples" / "tensors.yaml"
DT = torch.float64


@pytest.fixture(scope="module")
def mod():
    return fngen.load(SPEC)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rand(*shape, lo=-2.0, hi=2.0, grad=True, dtype=DT):
    x = torch.empty(*shape, dtype=dtype).uniform_(lo, hi)
    return x.requires_grad_(grad)


def outputs_and_grads(fn, inputs, grad_outputs):
    """Call `fn(*inputs)`; return its outputs (a tuple) and the gradients of
    the inputs that require grad, for the given grad_outputs."""
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(outs, wrt, grad_outputs)
    return tuple(o.detach() for o in outs), grads


def assert_matches(ours, ref, inputs, *, rtol=1e-10, atol=1e-12):
    """Forward and random-grad_output gradients of `ours` equal those of `ref`."""
    with torch.no_grad():
        probe = ref(*inputs)
    probes = probe if isinstance(probe, tuple) else (probe,)
    grad_outputs = [torch.randn_like(p) for p in probes]
    out_a, grads_a = outputs_and_grads(ours, inputs, grad_outputs)
    out_b, grads_b = outputs_and_grads(ref, inputs, grad_outputs)
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("input_shape", [(5, 4), (2, 5, 4)], ids=["2d", "3d"])
def test_linear_matches_torch(mod, with_bias, input_shape):
    inputs = (rand(*input_shape), rand(3, 4), rand(3) if with_bias else None)
    assert_matches(mod.linear, F.linear, inputs)


def test_linear_bias_defaults_to_none(mod):
    x, w = rand(5, 4), rand(3, 4)
    assert_matches(lambda x, w: mod.linear(x, w), lambda x, w: F.linear(x, w), (x, w))
    assert inspect.signature(mod.linear).parameters["bias"].default is None


def test_linear_bias_broadcast_grad_is_reduced(mod):
    # bias of shape [3] is broadcast over [2, 5, 3]: its gradient sums it back.
    x, w, b = rand(2, 5, 4), rand(3, 4), rand(3)
    g = torch.randn(2, 5, 3, dtype=DT)
    (gb,) = torch.autograd.grad(mod.linear(x, w, b), b, g)
    assert gb.shape == (3,)
    torch.testing.assert_close(gb, g.sum(dim=(0, 1)))


def test_linear_module_params_like_nn_linear(mod):
    m = mod.Linear(out_features=3, in_features=4)
    ref = torch.nn.Linear(4, 3)
    assert isinstance(m.weight, torch.nn.Parameter) and isinstance(
        m.bias, torch.nn.Parameter
    )
    assert m.weight.shape == ref.weight.shape == (3, 4)
    assert m.bias.shape == ref.bias.shape == (3,)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    bound = 1 / math.sqrt(4)
    for p in (m.weight, m.bias):
        assert p.abs().max().item() <= bound
        assert p.std().item() > 0  # actually initialised, not left constant
    m = m.double()
    x = rand(2, 5, 4)
    assert_matches(m, lambda x: F.linear(x, m.weight, m.bias), (x,))


def test_linear_module_without_bias(mod):
    m = mod.Linear(4, 3, bias=False)
    assert m.bias is None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    assert m.weight.shape == (3, 4)
    assert m.weight.abs().max().item() <= 1 / math.sqrt(4)
    m = m.double()
    x = rand(5, 4)
    assert_matches(m, lambda x: F.linear(x, m.weight), (x,))


def _backward_ast(source: str) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "backward":
            return node
    raise AssertionError("no backward in the source")


# The gradients of input @ weight.T: input may be a vector, as F.linear's
# may, so each goes through a helper that follows torch.matmul's rules.
LINEAR_GRADS = {
    "_matmul_grad_a(grad, weight.transpose(-2, -1), input.shape)": "needs_input",
    "_matmul_grad_b(input, grad, weight.transpose(-2, -1).shape)": "needs_weight",
}


def _is_matmul(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id.startswith("_matmul_grad")
    )


def _assert_guarded_matmuls(source: str) -> None:
    """Each matrix product of linear's backward is computed only under its
    `if needs_...:` guard (in every variant of the optional bias)."""
    backward = _backward_ast(source)
    found = {text: 0 for text in LINEAR_GRADS}
    for node in ast.walk(backward):
        if _is_matmul(node):
            text = ast.unparse(node)
            assert text in LINEAR_GRADS, f"unexpected matmul {text!r} in backward"
            found[text] += 1
    assert all(found.values()), found
    guarded = {text: 0 for text in LINEAR_GRADS}
    for node in ast.walk(backward):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
            assert node.test.id.startswith("needs_")
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if _is_matmul(sub):
                        text = ast.unparse(sub)
                        assert node.test.id == LINEAR_GRADS[text], (text, node.test.id)
                        guarded[text] += 1
    # every matmul in backward sits under its own needs_ guard
    assert guarded == found


def _unparsed(source: str) -> str:
    """`source` as `ast.unparse` writes it: black's line breaks aside."""
    return ast.unparse(ast.parse(textwrap.dedent(source)))


def test_linear_backward_source_guards_via_inspect(mod):
    source = inspect.getsource(mod.LinearFunction.backward)
    assert all(text in _unparsed(source) for text in LINEAR_GRADS)
    _assert_guarded_matmuls(source)


def test_linear_backward_source_guards(mod):
    # Same check as above, on the source fngen keeps on the module.
    tree = ast.parse(mod.__fngen_source__)
    cls = next(
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and n.name == "LinearFunction"
    )
    backward = next(
        n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "backward"
    )
    source = ast.get_source_segment(mod.__fngen_source__, backward, padded=True)
    assert all(text in _unparsed(source) for text in LINEAR_GRADS)
    _assert_guarded_matmuls(source)


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    def count(self, *names):
        return sum(self.ops.count(n) for n in names)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_linear_only_weight_grad_skips_input_grad(mod, with_bias):
    x = rand(5, 4, grad=False)
    w = rand(3, 4)
    b = rand(3, grad=False) if with_bias else None
    y = mod.linear(x, w, b)
    g = torch.randn_like(y)
    with _OpCounter() as counter:
        y.backward(g)
    assert x.grad is None
    torch.testing.assert_close(w.grad, g.T @ x)
    if b is not None:
        assert b.grad is None
    # only `grad.mT @ input` ran in backward, not `grad @ weight`
    assert counter.count("mm", "bmm", "matmul") == 1, counter.ops

    # control: the counter does see both matmuls when both grads are needed
    x.requires_grad_(True)
    y = mod.linear(x, w, b)
    with _OpCounter() as counter:
        y.backward(g)
    assert counter.count("mm", "bmm", "matmul") == 2, counter.ops
    torch.testing.assert_close(x.grad, g @ w)


def test_linear_only_bias_grad_runs_no_matmul(mod):
    x, w, b = rand(5, 4, grad=False), rand(3, 4, grad=False), rand(3)
    y = mod.linear(x, w, b)
    g = torch.randn_like(y)
    with _OpCounter() as counter:
        y.backward(g)
    assert counter.count("mm", "bmm", "matmul") == 0, counter.ops
    torch.testing.assert_close(b.grad, g.sum(0))


# --------------------------------------------------------------------------
# reductions, several outputs, losses, normalisations


def test_sum_sqrt_matches_torch(mod):
    x = rand(3, 4, lo=1.5, hi=3.0)
    assert_matches(mod.sum_sqrt, lambda x: torch.sqrt(x * x - 1).sum(), (x,))


def _simple_ref(x):
    return torch.sin(x) * x, torch.cos(x) + x**2


def test_simple_func_matches_autograd(mod):
    assert_matches(mod.simple_func, _simple_ref, (rand(3, 4),))


@pytest.mark.parametrize("used", [0, 1], ids=["only_s", "only_c"])
def test_simple_func_one_output_unused(mod, used):
    x = rand(3, 4)
    outs = mod.simple_func(x)
    outs[used].sum().backward()  # the other output gets no gradient
    x_ref = x.detach().clone().requires_grad_(True)
    _simple_ref(x_ref)[used].sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)

    x.grad = None
    g = torch.randn(3, 4, dtype=DT)
    (gx,) = torch.autograd.grad(mod.simple_func(x)[used], x, g)
    (gx_ref,) = torch.autograd.grad(_simple_ref(x_ref)[used], x_ref, g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)


def test_simple_func_outputs(mod):
    x = rand(3, 4, grad=False)
    s, c = mod.simple_func(x)
    torch.testing.assert_close(s, torch.sin(x) * x)
    torch.testing.assert_close(c, torch.cos(x) + x**2)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (7,)])
def test_mse_loss_matches_torch(mod, shape):
    assert_matches(mod.mse_loss, F.mse_loss, (rand(*shape), rand(*shape)))


def _huber_inputs(delta):
    # |input - target| spans both regimes and stays away from the kink at delta
    d = torch.tensor(
        [-3.0, -2.2, -1.6, -0.7, -0.3, -0.05, 0.1, 0.35, 0.8, 1.4, 2.5, 3.1], dtype=DT
    )
    d = d.reshape(3, 4)
    assert (d.abs() < delta).any() and (d.abs() > delta).any()
    assert ((d.abs() - delta).abs() > 0.04).all()
    target = rand(3, 4)
    return (target + d).detach().requires_grad_(True), target


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_huber_loss_matches_torch(mod, delta):
    inputs = _huber_inputs(delta)
    assert_matches(
        lambda i, t: mod.huber_loss(i, t, delta),
        lambda i, t: F.huber_loss(i, t, delta=delta),
        inputs,
    )


def test_huber_loss_default_delta_is_one(mod):
    inputs = _huber_inputs(1.0)
    assert_matches(
        lambda i, t: mod.huber_loss(i, t), lambda i, t: F.huber_loss(i, t), inputs
    )


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5)], ids=["2d", "3d"])
def test_log_softmax_matches_torch(mod, shape):
    assert_matches(
        mod.log_softmax, lambda x: F.log_softmax(x, -1), (rand(*shape, lo=-5, hi=5),)
    )


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 6)], ids=["2d", "3d"])
def test_layer_norm_matches_torch(mod, shape):
    assert_matches(
        mod.layer_norm,
        lambda x: F.layer_norm(x, x.shape[-1:], eps=1e-5),
        (rand(*shape),),
        rtol=1e-9,
        atol=1e-10,
    )


def test_layer_norm_eps_is_used(mod):
    x = rand(3, 4)
    assert_matches(
        lambda x: mod.layer_norm(x, 0.5),
        lambda x: F.layer_norm(x, (4,), eps=0.5),
        (x,),
    )


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)], ids=["2d", "3d"])
def test_rms_norm_matches_torch_with_weight_grad(mod, shape):
    x, weight = rand(*shape), rand(4)
    assert_matches(
        mod.rms_norm,
        lambda x, w: F.rms_norm(x, (4,), w, eps=1e-6),
        (x, weight),
        rtol=1e-9,
        atol=1e-10,
    )


def test_rms_norm_module(mod):
    m = mod.RmsNorm(4).double()
    assert m.weight.shape == (4,)
    assert torch.equal(m.weight.detach(), torch.ones(4, dtype=DT))
    with torch.no_grad():
        m.weight.uniform_(0.5, 2.0)
    x = rand(3, 4)
    assert_matches(
        m,
        lambda x: F.rms_norm(x, (4,), m.weight, eps=1e-6),
        (x,),
        rtol=1e-9,
        atol=1e-10,
    )
    assert m.weight.grad is None  # autograd.grad does not accumulate
    m(x).sum().backward()
    assert m.weight.grad is not None and m.weight.grad.shape == (4,)


@pytest.mark.parametrize(
    "dtype, scale", [(torch.float32, 100.0), (torch.float64, 1000.0)]
)
def test_log_softmax_large_inputs_stay_finite(mod, dtype, scale):
    x = (
        torch.linspace(-scale, scale, 12, dtype=dtype)
        .reshape(3, 4)
        .requires_grad_(True)
    )
    g = torch.randn(3, 4, dtype=dtype)
    y = mod.log_softmax(x)
    (gx,) = torch.autograd.grad(y, x, g)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = F.log_softmax(x_ref, -1)
    (gx_ref,) = torch.autograd.grad(y_ref, x_ref, g)
    assert torch.isfinite(y_ref).all() and torch.isfinite(gx_ref).all()
    assert torch.isfinite(y).all() and torch.isfinite(gx).all()
    torch.testing.assert_close(y.detach(), y_ref.detach())
    torch.testing.assert_close(gx, gx_ref)


# --------------------------------------------------------------------------
# custom gradients


def _surrogate(v, threshold, alpha):
    sig = torch.sigmoid(alpha * (v - threshold))
    return alpha * sig * (1 - sig)


@pytest.mark.parametrize("args", [(), (1.0, 4.0), (0.5, 2.0), (-1.0, 10.0)])
def test_spike_forward_and_surrogate_grad(mod, args):
    threshold, alpha = args if args else (1.0, 4.0)
    v = torch.cat(
        [rand(20, lo=-3, hi=3, grad=False), torch.tensor([threshold], dtype=DT)]
    )
    v.requires_grad_(True)
    s = mod.spike(v, *args)
    assert s.dtype == DT
    assert torch.equal(s.detach(), (v > threshold).to(DT))
    assert s.detach()[-1].item() == 0.0  # exactly at the threshold: no spike
    g = torch.randn_like(v)
    (gv,) = torch.autograd.grad(s, v, g)
    torch.testing.assert_close(
        gv, _surrogate(v.detach(), threshold, alpha) * g, rtol=1e-12, atol=1e-14
    )


def test_spike_module_uses_its_settings(mod):
    m = mod.Spike(threshold=0.5, alpha=2.0)
    v = rand(10)
    s = m(v)
    assert torch.equal(s.detach(), (v > 0.5).to(DT))
    (gv,) = torch.autograd.grad(s.sum(), v)
    torch.testing.assert_close(gv, _surrogate(v.detach(), 0.5, 2.0))


def test_spike_float32_finite(mod):
    v = torch.linspace(-200, 200, 2001, dtype=torch.float32, requires_grad=True)
    s = mod.spike(v)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert torch.equal(s.detach(), (v > 1.0).float())
    g = torch.randn_like(v)
    (gv,) = torch.autograd.grad(s, v, g)
    assert torch.isfinite(gv).all()
    torch.testing.assert_close(gv, _surrogate(v.detach(), 1.0, 4.0) * g)


def test_round_ste(mod):
    x = torch.cat(
        [
            rand(30, lo=-5, hi=5, grad=False),
            torch.tensor([-2.5, -0.5, 0.5, 1.5, 2.5], dtype=DT),
        ]
    )
    x.requires_grad_(True)
    y = mod.round_ste(x)
    assert torch.equal(y.detach(), torch.round(x.detach()))
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, g)


# --------------------------------------------------------------------------
# gradcheck / gradgradcheck


def _gradcheck_cases():
    return {
        "sum_sqrt": lambda m: (m.sum_sqrt, (rand(3, 4, lo=1.5, hi=3.0),)),
        "linear": lambda m: (m.linear, (rand(2, 5, 4), rand(3, 4), rand(3))),
        "linear_no_bias": lambda m: (
            lambda x, w: m.linear(x, w),
            (rand(5, 4), rand(3, 4)),
        ),
        "simple_func": lambda m: (m.simple_func, (rand(3, 4),)),
        "mse_loss": lambda m: (m.mse_loss, (rand(3, 4), rand(3, 4))),
        "huber_loss_1": lambda m: (m.huber_loss, _huber_inputs(1.0)),
        "huber_loss_05": lambda m: (
            lambda i, t: m.huber_loss(i, t, 0.5),
            _huber_inputs(0.5),
        ),
        "huber_loss_target_grad": lambda m: (
            m.huber_loss,
            tuple(t.detach().requires_grad_(True) for t in _huber_inputs(1.0)),
        ),
        "log_softmax": lambda m: (m.log_softmax, (rand(2, 3, 4),)),
        "layer_norm": lambda m: (m.layer_norm, (rand(3, 4),)),
        "rms_norm": lambda m: (m.rms_norm, (rand(3, 4), rand(4))),
    }


@pytest.mark.parametrize("case", list(_gradcheck_cases()))
def test_gradcheck_and_gradgradcheck(mod, case):
    fn, inputs = _gradcheck_cases()[case](mod)
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


def test_gradgradcheck_spike(mod):
    v = rand(3, 4)
    assert gradgradcheck(mod.spike, (v,))
    assert gradgradcheck(lambda v: mod.spike(v, 0.3, 2.0), (v,))


def test_gradgradcheck_round_ste(mod):
    x = rand(3, 4)
    assert gradgradcheck(mod.round_ste, (x,))


def test_spike_second_derivative_is_derivative_of_surrogate(mod):
    # gradgradcheck is self-consistent; also compare with autograd of the formula
    v = rand(10)
    (gv,) = torch.autograd.grad(mod.spike(v).sum(), v, create_graph=True)
    (ggv,) = torch.autograd.grad(gv.sum(), v)
    v_ref = v.detach().clone().requires_grad_(True)
    (ggv_ref,) = torch.autograd.grad(_surrogate(v_ref, 1.0, 4.0).sum(), v_ref)
    torch.testing.assert_close(ggv, ggv_ref)


# --------------------------------------------------------------------------
# torch.func and torch.compile


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_vmap_linear_over_input_batch(mod, with_bias):
    xs, w = rand(6, 5, 4, grad=False), rand(3, 4, grad=False)
    b = rand(3, grad=False) if with_bias else None
    got = torch.func.vmap(mod.linear, in_dims=(0, None, None))(xs, w, b)
    want = torch.stack([mod.linear(x, w, b) for x in xs])
    assert got.shape == (6, 5, 3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, F.linear(xs, w, b))


def test_vmap_per_sample_weight_grads(mod):
    xs, w, b = rand(6, 5, 4, grad=False), rand(3, 4, grad=False), rand(3, grad=False)
    gs = torch.randn(6, 5, 3, dtype=DT)

    def loss(w, x, g):
        return (mod.linear(x, w, b) * g).sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(w, xs, gs)
    want = torch.stack([g.T @ x for x, g in zip(xs, gs)])
    torch.testing.assert_close(got, want)


def _jvp_cases():
    return {
        "sum_sqrt": lambda m: (
            m.sum_sqrt,
            lambda x: torch.sqrt(x * x - 1).sum(),
            (rand(3, 4, lo=1.5, hi=3.0),),
        ),
        "linear": lambda m: (m.linear, F.linear, (rand(2, 5, 4), rand(3, 4), rand(3))),
        "linear_no_bias": lambda m: (
            lambda x, w: m.linear(x, w),
            lambda x, w: F.linear(x, w),
            (rand(5, 4), rand(3, 4)),
        ),
        "simple_func": lambda m: (m.simple_func, _simple_ref, (rand(3, 4),)),
        "mse_loss": lambda m: (m.mse_loss, F.mse_loss, (rand(3, 4), rand(3, 4))),
        "huber_loss": lambda m: (
            lambda i, t: m.huber_loss(i, t, 0.5),
            lambda i, t: F.huber_loss(i, t, delta=0.5),
            _huber_inputs(0.5),
        ),
        "log_softmax": lambda m: (
            m.log_softmax,
            lambda x: F.log_softmax(x, -1),
            (rand(2, 3, 4),),
        ),
        "layer_norm": lambda m: (
            m.layer_norm,
            lambda x: F.layer_norm(x, x.shape[-1:], eps=1e-5),
            (rand(3, 4),),
        ),
        "rms_norm": lambda m: (
            m.rms_norm,
            lambda x, w: F.rms_norm(x, (4,), w, eps=1e-6),
            (rand(3, 4), rand(4)),
        ),
    }


@pytest.mark.parametrize("case", list(_jvp_cases()))
def test_forward_mode_jvp_matches_torch(mod, case):
    fn, ref, inputs = _jvp_cases()[case](mod)
    inputs = tuple(t.detach() for t in inputs)
    tangents = tuple(torch.randn_like(t) for t in inputs)
    out, tangent_out = torch.func.jvp(fn, inputs, tangents)
    out_ref, tangent_ref = torch.func.jvp(ref, inputs, tangents)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(tangent_out, tangent_ref)


def _compiled_matches_eager(fn, inputs):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    assert_matches(compiled, fn, inputs)


def test_compile_linear(mod):
    _compiled_matches_eager(mod.linear, (rand(2, 5, 4), rand(3, 4), rand(3)))


def test_compile_layer_norm(mod):
    _compiled_matches_eager(mod.layer_norm, (rand(3, 4),))


@pytest.mark.parametrize("name", ["mse_loss", "huber_loss"])
def test_compile_a_function_with_a_kept_intermediate(mod, name):
    # Compiled, these run a class of their own, without the kept input -
    # target (a subclass would keep it): check it against eager.
    traceable = getattr(mod, f"_{''.join(p.title() for p in name.split('_'))}Traceable")
    assert traceable.__mro__[1] is torch.autograd.Function
    _compiled_matches_eager(getattr(mod, name), (rand(3, 4), rand(3, 4)))


def test_the_compile_class_scales_each_branch_of_huber_loss(mod):
    # Eager: one select, then one multiply.  Compiled: the gradient inside
    # each branch, so that the partitioner saves input - target, not the
    # select (which inductor would compute in a second loop).
    eager = " ".join(inspect.getsource(mod.HuberLossFunction.backward).split())
    compiled = " ".join(inspect.getsource(mod._HuberLossTraceable.backward).split())
    assert "* torch.where( delta > torch.abs(d), d, delta * torch.sign(d) )" in eager
    assert "t1 = torch.where( delta > torch.abs(t0), grad * t0 /" in compiled


def test_compile_rms_norm(mod):
    # Its kept 1/sqrt(mean + eps) stays kept under compile: a subclass.
    assert mod._RmsNormTraceable.__mro__[1] is mod.RmsNormFunction
    _compiled_matches_eager(mod.rms_norm, (rand(3, 4), rand(4)))


# --------------------------------------------------------------------------
# malformed tensor formulas are refused at build time


def _spec_with(formula: str) -> str:
    return f"fngen: 1\nfunctions:\n  f:\n    formula: y = {formula}\n"


def spec_error(text: str) -> str:
    with pytest.raises(fngen.SpecError) as excinfo:
        parse_spec(text, "ops.yaml")
    message = str(excinfo.value)
    assert message.startswith("ops.yaml:")
    return message


# `y` of "    formula: y = " is column 14, its expression starts at column 18.
@pytest.mark.parametrize(
    "formula, expected",
    [
        (
            "sum(x, 1, 2)",
            "4:18: error: sum() takes an expression and an optional dim, got 3 arguments",
        ),
        (
            "mean(x, 0, 1)",
            "4:18: error: mean() takes an expression and an optional dim, got 3 arguments",
        ),
        (
            "sum()",
            "4:18: error: sum() takes an expression and an optional dim, got 0 arguments",
        ),
        ("sum(x, dim=1.5)", "4:29: error: dim must be an int or a tuple of ints"),
        ("sum(x, dim=x)", "4:29: error: dim must be an int or a tuple of ints"),
        ("sum(x, dim=[0, 1])", "4:29: error: dim must be an int or a tuple of ints"),
        ("sum(x, dim=(0, 1.5))", "4:33: error: dim must be an int or a tuple of ints"),
        ("sum(x, dim=(0, 0))", "4:29: error: dim must name distinct dimensions"),
        ("mean(x, keepdim=maybe)", "4:34: error: keepdim must be true or false"),
        ("mean(x, dim=1, keepdim=1)", "4:41: error: keepdim must be true or false"),
        (
            "sum(x, foo=1)",
            "4:29: error: sum() got an unexpected argument 'foo' (expected dim= or keepdim=)",
        ),
        (
            "sum(1)",
            "4:22: error: sum() needs a tensor operand, got a scalar expression",
        ),
        ("2 @ x", "4:18: error: '@' needs a tensor operand, got a scalar expression"),
        ("x @ 2", "4:22: error: '@' needs a tensor operand, got a scalar expression"),
        ("pi @ x", "4:18: error: '@' needs a tensor operand, got a scalar expression"),
        (
            "(1 + 2) @ x",
            "4:19: error: '@' needs a tensor operand, got a scalar expression",
        ),
        ("(2).T", "4:19: error: '.T' needs a tensor operand, got a scalar expression"),
        ("pi.T", "4:18: error: '.T' needs a tensor operand, got a scalar expression"),
        ("x.mT", "4:18: error: attribute '.mT' is not supported (only '.T' is)"),
        ("x.T(1)", "4:18: error: only calls of named functions are allowed"),
        ("sin(x, 1)", "4:18: error: sin() takes 1 argument, got 2"),
        ("clamp(x)", "4:18: error: clamp() takes 3 arguments, got 1"),
        ("x[0]", "4:18: error: indexing is not allowed in a formula"),
    ],
)
def test_malformed_tensor_formula_is_located(formula, expected):
    assert spec_error(_spec_with(formula)) == "ops.yaml:" + expected


def test_scalar_dot_T_literal_is_a_syntax_error():
    # `2.T` does not even tokenize as Python: the message comes from the parser
    message = spec_error(_spec_with("2.T"))
    assert message.startswith("ops.yaml:4:")
    assert ": error: invalid formula syntax:" in message


def test_malformed_formula_located_in_a_block_and_in_grad():
    text = "fngen: 1\nfunctions:\n  f:\n    formula: |\n      a = x + 1\n      y = sum(a, 1, 2)\n"
    assert spec_error(text) == (
        "ops.yaml:6:11: error: sum() takes an expression and an optional dim, got 3 arguments"
    )
    text = 'fngen: 1\nfunctions:\n  f:\n    formula: "y = 2 @ x"\n'
    assert (
        spec_error(text)
        == "ops.yaml:4:19: error: '@' needs a tensor operand, got a scalar expression"
    )
    text = "fngen: 1\nfunctions:\n  f:\n    formula: y = x * 2\n    grad:\n      x: sum(grad, 1, 2)\n"
    assert spec_error(text) == (
        "ops.yaml:6:10: error: sum() takes an expression and an optional dim, got 3 arguments"
    )


@pytest.mark.parametrize(
    "formula", ["(x + 1).T", "x.T.T", "sum(x, -1)", "sum(x, dim=(0,), keepdim=true)"]
)
def test_wellformed_tensor_formulas_are_accepted(formula):
    spec = parse_spec(_spec_with(formula), "ops.yaml")
    assert "torch" in fngen.generate(spec)


@pytest.mark.parametrize("formula", ["sum(x, dim=-1, dim=0)", "sum(x, -1, dim=0)"])
def test_repeated_dim_message(formula):
    message = spec_error(_spec_with(formula))
    assert message.startswith("ops.yaml:4:")
    assert "unexpected argument 'dim'" not in message
    assert "dim" in message and (
        "repeated" in message or "more than once" in message or "twice" in message
    )


def test_repeated_keepdim_is_refused():
    message = spec_error(_spec_with("sum(x, dim=0, keepdim=true, keepdim=false)"))
    assert message.startswith("ops.yaml:4:")
    assert "keepdim" in message


@pytest.mark.parametrize("formula", ["sum(x) @ x", "x @ mean(x)"])
def test_matmul_of_zero_dim_reduction_is_refused(formula):
    message = spec_error(_spec_with(formula))
    assert message.startswith("ops.yaml:4:")
    assert "'@'" in message


# --------------------------------------------------------------------------
# A reduction's shape without the reduction: log_softmax saves only its output

KEPT_SHAPE_SPEC = """\
fngen: 1
functions:
  log_softmax_dims:
    formula: y = x - log(sum(exp(x), dim=(0, 2), keepdim=true))
  log_softmax_middle:
    formula: y = x - log(sum(exp(x), dim=-2, keepdim=true))
  log_softmax_all:
    formula: y = x - log(sum(exp(x), keepdim=true))
  shifted:
    formula: y = z - log(sum(exp(x), dim=-1, keepdim=true))
"""


@pytest.fixture(scope="module")
def kept():
    return fngen.load(parse_spec(KEPT_SHAPE_SPEC, "kept.yaml"))


def test_log_softmax_saves_its_output_and_recomputes_nothing(kept):
    source = inspect.getsource(kept.LogSoftmaxDimsFunction.backward)
    assert "torch.logsumexp" not in source
    assert "sum_to_size((1, ctx.x_shape[1], 1, *ctx.x_shape[3:]))" in source
    source = inspect.getsource(kept.LogSoftmaxMiddleFunction.backward)
    assert "sum_to_size((*ctx.x_shape[:-2], 1, ctx.x_shape[-1]))" in source
    setup = inspect.getsource(kept.LogSoftmaxDimsFunction.setup_context)
    assert "ctx.save_for_backward(y)" in setup


@pytest.mark.parametrize(
    "name, want",
    [
        ("log_softmax_dims", lambda x: x - torch.logsumexp(x, (0, 2), keepdim=True)),
        ("log_softmax_middle", lambda x: F.log_softmax(x, -2)),
        ("log_softmax_all", lambda x: x - torch.logsumexp(x, (0, 1, 2, 3), True)),
    ],
)
def test_reductions_over_any_dims_match_torch(kept, name, want):
    x = rand(2, 3, 4, 2, lo=-3, hi=3)
    assert_matches(getattr(kept, name), want, (x,))
    assert gradcheck(getattr(kept, name), (x,))
    assert gradgradcheck(getattr(kept, name), (x,))


def test_reduction_shape_under_broadcasting(kept):
    # z is wider than x: the gradient of the logsumexp sums over z's rows.
    x, z = rand(1, 5, lo=-3, hi=3), rand(4, 1)
    assert gradcheck(kept.shifted, (x, z))
    assert gradgradcheck(kept.shifted, (x, z))


# --------------------------------------------------------------------------
# An intermediate kept as an extra output: mse_loss saves input - target only


def saved_storages(fn, *args) -> int:
    """Distinct storages autograd keeps for the backward of fn(*args)."""
    seen = set()

    def pack(tensor):
        seen.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return len(seen)


def test_mse_loss_keeps_the_difference_instead_of_both_inputs(mod):
    x, t = rand(3, 4), rand(3, 4)
    loss, kept = mod.MseLossFunction.apply(x, t)
    torch.testing.assert_close(kept, x - t)
    assert mod.mse_loss(x, t).shape == ()
    assert saved_storages(mod.mse_loss, x, t) == 1
    # Autograd on the composed formula keeps the difference too, no more.
    assert saved_storages(lambda a, b: ((a - b) ** 2).mean(), x, t) == 1
    source = inspect.getsource(mod.MseLossFunction.setup_context)
    assert "ctx.save_for_backward(kept)" in source
    assert "kept = input - target" in mod.MseLossFunction.__doc__


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((1, 4), (3, 1))])
def test_kept_difference_under_broadcasting_and_double_backward(mod, shapes):
    x, t = rand(*shapes[0]), rand(*shapes[1])
    assert_matches(
        mod.mse_loss, lambda a, b: F.mse_loss(*torch.broadcast_tensors(a, b)), (x, t)
    )
    assert gradcheck(mod.mse_loss, (x, t))
    assert gradgradcheck(mod.mse_loss, (x, t))
    hessian = torch.func.hessian(mod.mse_loss, argnums=(0, 1))(x, t)
    want = torch.func.hessian(lambda a, b: ((a - b) ** 2).mean(), argnums=(0, 1))(
        x.detach(), t.detach()
    )
    for row, want_row in zip(hessian, want):
        for h, w in zip(row, want_row):
            torch.testing.assert_close(h, w)


def test_forward_ad_with_a_tangent_for_one_input_only(mod):
    # Without materialized gradients forward-mode AD passes None for the
    # target's tangent: the jvp makes it zeros.
    import torch.autograd.forward_ad as fwAD

    x, t = rand(3, 4, grad=False), rand(3, 4, grad=False)
    x_t = torch.randn_like(x)
    with fwAD.dual_level():
        loss = mod.mse_loss(fwAD.make_dual(x, x_t), t)
        tangent = fwAD.unpack_dual(loss).tangent
    torch.testing.assert_close(tangent, (2 * (x - t) * x_t).mean())


def test_no_intermediate_is_kept_where_it_saves_nothing(mod):
    # Both tensors of the linear layer are needed: nothing extra is returned.
    x, w = rand(5, 4), rand(3, 4)
    assert isinstance(mod.LinearFunction.apply(x, w, None), torch.Tensor)
    assert "also returns" not in mod.LinearFunction.__doc__


def test_an_output_that_is_a_saved_input_is_returned_as_a_copy():
    # a = x is returned as it is while x is saved for b's gradient, which
    # autograd refuses under setup_context: the Function returns a copy.
    spec = parse_spec(
        "fngen: 1\nfunctions:\n  two:\n    formula: |\n      a = x\n      b = x**2\n"
        "    outputs: [a, b]\n",
        "alias.yaml",
    )
    module = fngen.load(spec)
    assert "a = a.clone()  # an input" in inspect.getsource(module.TwoFunction.forward)
    x = rand(3, 4)
    a, b = module.two(x)
    assert a is not x
    torch.testing.assert_close(a, x)
    assert gradcheck(module.two, (x,), check_forward_ad=True)
    assert gradgradcheck(module.two, (x,))
