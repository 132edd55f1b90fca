"""Generated functions agree with PyTorch's own, forward and gradient.

`tests/specs/activations.yaml` defines activations and pointwise functions
that PyTorch also implements; each generated function is compared with
PyTorch's in float64 (kinks included: PyTorch's conventions are the contract),
then checked with gradcheck and gradgradcheck, and, for the activations that
saturate, in float32 over [-200, 200] for numerical stability.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import fngen

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "activations.yaml"
DEFAULT_DOMAIN = (-2.0, 2.0)
TOL64 = dict(rtol=1e-10, atol=1e-12)

# PyTorch's own function for each generated one.
REFERENCES = {
    "relu": torch.relu,
    "absolute": torch.abs,
    "mish": F.mish,
    "silu": F.silu,
    "softplus": F.softplus,
    "logsigmoid": F.logsigmoid,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "elu": F.elu,
    "selu": F.selu,
    "softplus_beta": lambda x: F.softplus(x, beta=2),
    "gelu": F.gelu,
    "erfinv": torch.special.erfinv,
    "lgamma": torch.lgamma,
    "digamma": torch.digamma,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "clamp": lambda x: torch.clamp(x, -1, 1),
    "hardtanh": F.hardtanh,
    "atan2": torch.atan2,
    "hypot": torch.hypot,
    "expm1": torch.expm1,
    "log1p": torch.log1p,
    "softplus_naive": F.softplus,
    "sigmoid_naive": torch.sigmoid,
    "swish_naive": F.silu,
    "logsigmoid_naive": F.logsigmoid,
    "mish_naive": F.mish,
}

STABILITY_CASES = [
    "mish",
    "silu",
    "softplus",
    "logsigmoid",
    "gelu_tanh",
    "elu",
    "selu",
    "softplus_beta",
    "gelu",
    "expm1",
    # The contract: log(1 + exp(x)) is computed as softplus, exp(x)/(1 + exp(x))
    # as sigmoid, "and so on, in the forward and in every derivative".
    "softplus_naive",
    "sigmoid_naive",
    "swish_naive",
    "logsigmoid_naive",
    "mish_naive",
]


@pytest.fixture(scope="module")
def ops():
    return fngen.load(SPEC_PATH)


def _domains() -> dict[str, list[tuple[float, float]]]:
    """Each function's input domains, in signature order, read from the spec."""
    functions = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))["functions"]
    domains = {}
    for name, body in functions.items():
        inputs = body.get("inputs") or {}
        domains[name] = {
            key: tuple(value["domain"])
            for key, value in inputs.items()
            if isinstance(value, dict) and "domain" in value
        }
    return domains


DOMAINS = _domains()


def test_spec_and_references_cover_the_same_functions():
    assert set(DOMAINS) == set(REFERENCES)


def _inputs(ops, name, shapes, seed=0, dtype=torch.float64):
    """Tensors uniform in each input's declared domain."""
    generator = torch.Generator().manual_seed(seed)
    params = list(inspect.signature(getattr(ops, name)).parameters)
    assert len(params) == len(shapes), params
    tensors = []
    for param, shape in zip(params, shapes):
        lo, hi = DOMAINS[name].get(param, DEFAULT_DOMAIN)
        value = torch.rand(shape, generator=generator, dtype=torch.float64)
        tensors.append((value * (hi - lo) + lo).to(dtype))
    return tensors


def _arity(ops, name):
    return len(inspect.signature(getattr(ops, name)).parameters)


def _forward_and_grads(function, tensors, grad_output=None):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    output = function(*leaves)
    if grad_output is None:
        grad_output = torch.randn(output.shape, dtype=output.dtype)
    grads = torch.autograd.grad(output, leaves, grad_output)
    return output.detach(), grads


def _assert_agree(ops, name, tensors, grad_output=None, **tol):
    tol = tol or TOL64
    generated = getattr(ops, name)
    reference = REFERENCES[name]
    if grad_output is None:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors))
        grad_output = torch.randn(shape, dtype=tensors[0].dtype)
    out, grads = _forward_and_grads(generated, tensors, grad_output)
    ref_out, ref_grads = _forward_and_grads(reference, tensors, grad_output)
    torch.testing.assert_close(
        out, ref_out, **tol, msg=lambda m: f"{name} forward: {m}"
    )
    for i, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        assert grad.shape == tensors[i].shape
        torch.testing.assert_close(
            grad, ref_grad, **tol, msg=lambda m: f"{name} gradient {i}: {m}"
        )
    return grads


# -- agreement in float64 -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_agrees_with_pytorch(ops, name):
    torch.manual_seed(1)
    # A second input of shape [7] broadcasts against [5, 7]: its gradient must
    # be reduced back to [7].
    shapes = [(5, 7), (7,)][: _arity(ops, name)]
    tensors = _inputs(ops, name, shapes)
    _assert_agree(ops, name, tensors)


def test_relu_and_abs_at_zero(ops):
    x = torch.tensor([-1.5, -0.0, 0.0, 0.0, 1e-300, -1e-300, 2.0], dtype=torch.float64)
    zeros = x == 0
    for name in ("relu", "absolute"):
        grad_output = torch.randn(x.shape, dtype=torch.float64)
        (grad,) = _assert_agree(ops, name, [x], grad_output, rtol=0, atol=0)
        assert torch.equal(grad[zeros], torch.zeros(3, dtype=torch.float64)), name
        assert (grad[x > 0] == grad_output[x > 0]).all(), name


def test_elu_at_zero(ops):
    x = torch.tensor([-1.0, 0.0, -0.0, 1.0], dtype=torch.float64)
    grad_output = torch.ones_like(x)
    (grad,) = _assert_agree(ops, "elu", [x], grad_output)
    torch.testing.assert_close(grad[1:3], torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_ties_split_the_gradient_in_half(ops, name):
    a = torch.tensor(
        [[1.0, 2.0, -3.0, 0.5], [0.0, -1.0, 4.0, 0.25]], dtype=torch.float64
    )
    b = torch.tensor(
        [[1.0, 1.0, -3.0, 0.75], [0.0, -2.0, 4.0, 0.25]], dtype=torch.float64
    )
    grad_output = torch.randn(a.shape, dtype=torch.float64)
    grad_a, grad_b = _assert_agree(ops, name, [a, b], grad_output)
    ties = a == b
    torch.testing.assert_close(grad_a[ties], grad_output[ties] / 2)
    torch.testing.assert_close(grad_b[ties], grad_output[ties] / 2)
    torch.testing.assert_close(grad_a + grad_b, grad_output)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_ties_with_broadcasting(ops, name):
    a = torch.tensor([[1.0, 2.0, -3.0], [0.0, 2.0, 5.0]], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64)
    _assert_agree(ops, name, [a, b])


def test_clamp_at_its_bounds(ops):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.5], dtype=torch.float64)
    grad_output = torch.ones_like(x)
    (grad,) = _assert_agree(ops, "clamp", [x], grad_output)
    # torch.clamp passes the gradient on its closed interval.
    expected = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.equal(grad, expected)


def test_hardtanh_at_its_bounds(ops):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 1.5], dtype=torch.float64)
    grad_output = torch.ones_like(x)
    (grad,) = _assert_agree(ops, "hardtanh", [x], grad_output)
    # F.hardtanh passes it on the open interval only.
    expected = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(grad, expected)


# -- gradcheck and gradgradcheck ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_gradcheck_and_gradgradcheck(ops, name):
    tensors = [
        t.requires_grad_()
        for t in _inputs(ops, name, [(3, 4)] * _arity(ops, name), seed=2)
    ]
    function = getattr(ops, name)
    assert torch.autograd.gradcheck(function, tensors)
    assert torch.autograd.gradgradcheck(function, tensors)


# -- float32 stability --------------------------------------------------------------


@pytest.mark.parametrize("name", STABILITY_CASES)
def test_float32_stable_at_large_inputs(ops, name):
    x = torch.linspace(-200, 200, 4001, dtype=torch.float32)
    grad_output = torch.ones_like(x)
    out, (grad,) = _forward_and_grads(getattr(ops, name), [x], grad_output)
    ref_out, (ref_grad,) = _forward_and_grads(REFERENCES[name], [x], grad_output)
    assert out.dtype == grad.dtype == torch.float32
    for what, value, expected in (
        ("forward", out, ref_out),
        ("gradient", grad, ref_grad),
    ):
        bad = torch.isfinite(expected) & ~torch.isfinite(value)
        assert not bad.any(), (
            f"{name} {what} is not finite at {bad.sum().item()} points where "
            f"PyTorch's is, e.g. x = {x[bad][:5].tolist()}"
        )
        finite = torch.isfinite(expected)
        torch.testing.assert_close(
            value[finite],
            expected[finite],
            rtol=1e-4,
            atol=1e-5,
            msg=lambda m: f"{name} {what}: {m}",
        )
