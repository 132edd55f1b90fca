"""Mixed precision: a generated op behaves like a built-in one under autocast."""

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fngen
from fngen.checker import sample_inputs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def ops():
    return fngen.load(EXAMPLES / "ops.yaml")


@pytest.fixture(scope="module")
def tensors():
    return fngen.load(EXAMPLES / "tensors.yaml")


@functools.lru_cache(maxsize=None)
def _loaded(spec_name):
    spec = fngen.load_spec(EXAMPLES / spec_name)
    return spec, fngen.load(spec)


def _inputs(fn, dtype, generator):
    return sample_inputs(fn, dtype, torch.device("cpu"), generator)


def _all_functions():
    for name in ("ops.yaml", "tensors.yaml"):
        spec = fngen.load_spec(EXAMPLES / name)
        for fn in spec.functions:
            yield pytest.param(name, fn.name, id=f"{name}::{fn.name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spec_name, name", list(_all_functions()))
def test_low_precision_inputs_keep_their_dtype(spec_name, name, dtype):
    """Python constants are weak scalars: nothing promotes to float64, and
    half inputs stay half in the forward and in every gradient."""
    spec, module = _loaded(spec_name)
    fn = next(f for f in spec.functions if f.name == name)
    args = _inputs(fn, dtype, torch.Generator().manual_seed(0))
    outputs = getattr(module, name)(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    floats = [o for o in outputs if o.is_floating_point()]
    assert all(o.dtype == dtype for o in floats)
    tensors = [a for a in args if torch.is_tensor(a)]
    grads = torch.autograd.grad(
        [o.sum() for o in floats if o.requires_grad], tensors, allow_unused=True
    )
    for arg, grad in zip(tensors, grads):
        if grad is not None:
            assert grad.dtype == dtype
            assert grad.shape == arg.shape


def test_matrix_product_runs_in_the_autocast_dtype_like_f_linear(tensors):
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tensors.linear(x, w, b)
        expected = F.linear(x, w, b)
    assert y.dtype == expected.dtype == torch.bfloat16
    # addmm rounds once where matmul + add rounds twice: bfloat16 tolerances.
    torch.testing.assert_close(y, expected, atol=2e-2, rtol=2e-2)
    y.float().sum().backward()
    # The leaves stay float32 and receive float32 gradients, as with F.linear.
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float32
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.linear(x2, w2, b2).float().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


def test_linear_without_bias_under_autocast(tensors):
    x = torch.randn(5, 4)
    w = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tensors.linear(x, w).dtype == torch.bfloat16


def test_pointwise_op_runs_in_its_input_dtype_under_autocast(ops):
    """Pointwise built-ins are not cast by autocast; neither are generated ones."""
    x = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.exp(x).dtype == torch.exp(x).dtype == torch.float32
        assert ops.legendre3(x.bfloat16()).dtype == torch.bfloat16


def test_declared_float32_runs_in_full_precision(tensors):
    x = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tensors.log_softmax(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.log_softmax(x.float(), -1))
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16
    # Outside autocast the declaration changes nothing.
    assert tensors.log_softmax(x.detach()).dtype == torch.bfloat16


def test_autocast_under_compile_has_no_graph_break(tensors):
    compiled = torch.compile(tensors.linear, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = compiled(x, w)
        expected = tensors.linear(x, w)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected)
