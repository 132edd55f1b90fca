"""The generated ops under the whole of PyTorch autograd: torch.func
transforms, forward-mode AD, double backward and torch.compile on Modules."""

from pathlib import Path

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import fngen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def ops():
    return fngen.load(EXAMPLES / "ops.yaml")


@pytest.fixture(scope="module")
def tensors():
    return fngen.load(EXAMPLES / "tensors.yaml")


def test_hessian_and_jacfwd_match_autograd(ops):
    x = torch.rand(5, dtype=torch.float64) + 0.5
    y = torch.rand(5, dtype=torch.float64)

    def generated(x):
        return ops.sqrt_and_inverse(x, y).sum()

    def composed(x):
        return (torch.sqrt(x) + 1 / x + 2 * y**2).sum()

    torch.testing.assert_close(
        torch.func.hessian(generated)(x), torch.func.hessian(composed)(x)
    )
    jac = torch.func.jacfwd(lambda x: ops.legendre3(x))(x)
    torch.testing.assert_close(jac, torch.diag(1.5 * (5 * x**2 - 1)))


def test_forward_ad_dual_tensors(ops):
    x = torch.randn(4, dtype=torch.float64)
    tangent = torch.randn(4, dtype=torch.float64)
    with fwAD.dual_level():
        out = ops.exp(fwAD.make_dual(x, tangent))
        result = fwAD.unpack_dual(out).tangent
    torch.testing.assert_close(result, torch.exp(x) * tangent)


def test_jvp_of_a_reduction_and_a_matrix_product(tensors):
    x = torch.randn(5, 4, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    _, generated = torch.func.jvp(tensors.linear, (x, w, b), tangents)
    _, expected = torch.func.jvp(torch.nn.functional.linear, (x, w, b), tangents)
    torch.testing.assert_close(generated, expected)


def test_vmap_of_grad_gives_per_sample_gradients(ops):
    x = torch.randn(6, 3, dtype=torch.float64)
    grads = torch.func.vmap(torch.func.grad(lambda v: ops.legendre3(v).sum()))(x)
    torch.testing.assert_close(grads, 1.5 * (5 * x**2 - 1))


@pytest.mark.parametrize("module_name", ["Prelu", "MyRelu", "Exp"])
def test_compiled_module_equals_eager(ops, module_name):
    torch.manual_seed(0)
    module = getattr(ops, module_name)()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 3, requires_grad=True)
    eager_out = module(x)
    (eager_grad,) = torch.autograd.grad(eager_out.sum(), x)
    compiled_out = compiled(x)
    (compiled_grad,) = torch.autograd.grad(compiled_out.sum(), x)
    torch.testing.assert_close(compiled_out, eager_out)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_compiled_linear_module_trains_like_eager(tensors):
    torch.manual_seed(0)
    eager = tensors.Linear(4, 3)
    compiled_module = tensors.Linear(4, 3)
    compiled_module.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_module, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 4)
    eager(x).square().sum().backward()
    compiled(x).square().sum().backward()
    for a, b in zip(eager.parameters(), compiled_module.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_once_differentiable_refuses_double_backward():
    spec = fngen.spec.parse_spec(
        "fngen: 1\nfunctions:\n  cube:\n    formula: y = x**3\n    once_differentiable: true\n",
        "ops.yaml",
    )
    module = fngen.load(spec)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(module.cube(x).sum(), x, create_graph=True)
    torch.testing.assert_close(grad, 3 * x**2)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), x)
