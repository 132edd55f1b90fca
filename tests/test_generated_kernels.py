"""Triton kernels in the generated modules (`kernels: triton`): the dispatch
between a Function's kernels and its torch code, run by Triton's
interpreter on CPU tensors, and `fngen check`'s `kernel` column, which
compares every kernel of every spec of the repository with the torch code
(tests/test_kernels.py tests the kernels and launchers on their own).
"""

from __future__ import annotations

import builtins
import dataclasses
import os
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

import fngen  # noqa: E402
from fngen import api  # noqa: E402
from fngen import kernels as K  # noqa: E402
from fngen.checker import check_spec  # noqa: E402
from fngen.errors import SpecError  # noqa: E402
from fngen.spec import load_spec, parse_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY_SPECS = sorted(
    p.relative_to(ROOT).as_posix()
    for folder in ("examples", "benchmarks", "tests/specs")
    for p in (ROOT / folder).glob("*.yaml")
)

SPEC = """\
fngen: 1
kernels: triton
functions:
  exp:
    formula: y = exp(x)
  gated:
    formula: y = x * sigmoid(beta * g) + shift
    inputs:
      x: tensor
      g: tensor
      shift: tensor
      beta: {type: float, default: 1.5}
  spike:
    formula: s = heaviside(v - 1.0)
    grad:
      v: grad / (1 + (pi*(v - 1.0))**2)
  total:
    formula: y = sum(x**2)
"""


def _interpreted(text: str, name: str):
    """The module of spec `text`, its kernels run by Triton's interpreter
    on CPU tensors, and a list of the launchers called, by name."""
    source = fngen.generate(parse_spec(text, f"{name}.yaml"))
    module = K.load_kernel_module(source, name, interpret=True)
    calls = []
    for attribute in list(vars(module)):
        if attribute.endswith(("_fwd", "_bwd")):
            launcher = getattr(module, attribute)

            def counted(*args, _launcher=launcher, _name=attribute, **kwargs):
                calls.append(_name)
                return _launcher(*args, **kwargs)

            setattr(module, attribute, counted)
    return module, calls


@pytest.fixture(scope="module")
def ops():
    return _interpreted(SPEC, "kernels_dispatch")


def _torch_code(module):
    """A context in which `module` runs its torch code only."""

    class Off:
        def __enter__(self):
            self.device = module._KERNEL_DEVICE
            module._KERNEL_DEVICE = None

        def __exit__(self, *exc):
            module._KERNEL_DEVICE = self.device

    return Off()


def test_only_pointwise_functions_get_kernels(ops):
    module, _ = ops
    assert {n for n in vars(module) if n.endswith(("_fwd", "_bwd"))} == {
        "_exp_fwd",
        "_exp_bwd",
        "_gated_fwd",
        "_gated_bwd",
        "_spike_fwd",
        "_spike_bwd",
    }


def test_forward_and_backward_run_the_kernels(ops):
    module, calls = ops
    x, g, shift = (torch.randn(3000, requires_grad=True) for _ in range(3))
    calls.clear()
    y = module.gated(x, g, shift, 0.5)
    grads = torch.autograd.grad(y, (x, g, shift), torch.ones_like(y))
    assert calls == ["_gated_fwd", "_gated_bwd"]
    with _torch_code(module):
        y_torch = module.gated(x, g, shift, 0.5)
        expected = torch.autograd.grad(y_torch, (x, g, shift), torch.ones_like(y))
    torch.testing.assert_close(y, y_torch)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_only_the_needed_gradients_are_computed(ops):
    module, calls = ops
    x, shift = torch.randn(100, requires_grad=True), torch.randn(100)
    g = torch.randn(100)
    calls.clear()
    (grad_x,) = torch.autograd.grad(module.gated(x, g, shift).sum(), x)
    # sum's gradient is an expanded 0-dim tensor: not contiguous, the
    # torch code's.
    assert calls == ["_gated_fwd"]
    calls.clear()
    y = module.gated(x, g, shift)
    (grad_x,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert calls == ["_gated_fwd", "_gated_bwd"]
    torch.testing.assert_close(grad_x, torch.sigmoid(1.5 * g))


def test_broadcast_inputs_take_the_torch_code(ops):
    module, calls = ops
    x = torch.randn(3, 5, requires_grad=True)
    g = torch.randn(5, requires_grad=True)
    shift = torch.randn(3, 5, requires_grad=True)
    calls.clear()
    y = module.gated(x, g, shift)
    grads = torch.autograd.grad(y, (x, g, shift), torch.ones_like(y))
    assert calls == []
    assert grads[1].shape == (5,)


def test_a_broadcast_input_whose_shape_alone_is_kept_stops_the_backward_kernel():
    # The backward of x + w keeps only the shapes of x and w: with w
    # broadcast the incoming gradient and nothing else reaches it, and the
    # kernel would not reduce w's gradient to w's shape.
    text = "fngen: 1\nkernels: triton\nfunctions:\n  add:\n    formula: z = x + 2*w\n"
    module, calls = _interpreted(text, "kernels_add")
    x, w = torch.randn(4, 6, requires_grad=True), torch.randn(6, requires_grad=True)
    z = module.add(x, w)
    grad_x, grad_w = torch.autograd.grad(z, (x, w), torch.ones_like(z))
    assert "_add_bwd" not in calls
    torch.testing.assert_close(grad_w, torch.full((6,), 8.0))


def test_non_contiguous_and_integer_tensors_take_the_torch_code(ops):
    module, calls = ops
    calls.clear()
    x = torch.randn(6, 4).t()
    module.exp(x)
    assert calls == []


def test_double_backward_differentiates_the_torch_code(ops):
    module, calls = ops
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    calls.clear()
    y = module.exp(x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)
    assert calls == ["_exp_fwd"]  # the backward ran with grad mode on
    (second,) = torch.autograd.grad(grad, x, torch.ones_like(grad))
    torch.testing.assert_close(second, torch.exp(x.detach()))
    assert torch.autograd.gradgradcheck(module.exp, (x,))


def test_torch_func_transforms_take_the_torch_code(ops):
    module, calls = ops
    x = torch.randn(4, 7, dtype=torch.float64)
    calls.clear()
    batched = torch.func.vmap(module.exp)(x)
    torch.testing.assert_close(batched, torch.exp(x))
    assert calls == []
    grad = torch.func.grad(lambda t: module.exp(t).sum())(x)
    torch.testing.assert_close(grad, torch.exp(x))
    assert "_exp_bwd" not in calls
    jac = torch.func.jacrev(module.exp)(x[0])
    torch.testing.assert_close(jac, torch.diag(torch.exp(x[0])))


def test_compiled_the_torch_code_is_fused(ops):
    module, calls = ops
    torch._dynamo.reset()
    compiled = torch.compile(module.exp, backend="aot_eager", fullgraph=True)
    x = torch.randn(40, requires_grad=True)
    calls.clear()
    y = compiled(x)
    y.backward(torch.ones_like(y))
    assert calls == []
    torch.testing.assert_close(x.grad, torch.exp(x.detach()))


def test_a_step_has_a_surrogate_backward_kernel(ops):
    module, calls = ops
    v = torch.linspace(0, 2, 2049, requires_grad=True)
    calls.clear()
    s = module.spike(v)
    (grad,) = torch.autograd.grad(s, v, torch.ones_like(s))
    assert calls == ["_spike_fwd", "_spike_bwd"]
    torch.testing.assert_close(s, (v > 1).float())
    torch.testing.assert_close(grad, 1 / (1 + (torch.pi * (v.detach() - 1)) ** 2))


def test_a_module_with_kernels_imports_and_runs_without_triton(monkeypatch):
    source = fngen.generate(parse_spec(SPEC, "no_triton.yaml"))
    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_triton)
    module = api.import_source(source, "kernels_no_triton", "<no triton>")
    assert module.triton is None
    x = torch.randn(10, requires_grad=True)
    y = module.exp(x)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, torch.exp(x.detach()))


def test_cuda_is_the_kernels_device_outside_the_tests():
    module = fngen.load(parse_spec(SPEC, "plain_load.yaml"))
    assert module._KERNEL_DEVICE == "cuda"
    x = torch.randn(10)  # a CPU tensor: the torch code, no launch
    torch.testing.assert_close(module.exp(x), torch.exp(x))


# -- the spec ---------------------------------------------------------------


def test_kernels_is_opt_in_and_per_function():
    text = (
        "fngen: 1\nfunctions:\n  a:\n    formula: y = exp(x)\n"
        "  b:\n    formula: y = exp(x)\n    kernels: triton\n"
    )
    source = fngen.generate(parse_spec(text, "opt_in.yaml"))
    assert "_b_fwd_kernel" in source and "_a_fwd" not in source
    everything = text.replace("functions:", "kernels: triton\nfunctions:", 1)
    text = everything.replace("kernels: triton\n", "kernels: none\n", 2)
    text = text.replace("kernels: none\n", "kernels: triton\n", 1)
    source = fngen.generate(parse_spec(text, "opt_out.yaml"))
    assert "_a_fwd_kernel" in source and "_b_fwd" not in source
    plain = fngen.generate(parse_spec(SPEC.replace("kernels: triton\n", ""), "p.yaml"))
    assert "triton" not in plain


def test_a_function_that_asks_for_kernels_and_cannot_have_them_is_an_error():
    text = (
        "fngen: 1\nfunctions:\n  total:\n    formula: y = sum(x)\n    kernels: triton\n"
    )
    with pytest.raises(SpecError) as err:
        fngen.generate(parse_spec(text, "ops.yaml"))
    assert str(err.value).startswith("ops.yaml:3:3: error: function 'total' cannot")
    assert "not pointwise (sum)" in str(err.value)


@pytest.mark.parametrize(
    "text, where",
    [
        ("fngen: 1\nkernels: cuda\nfunctions:\n  f:\n    formula: y = x\n", "2:10"),
        (
            "fngen: 1\nfunctions:\n  f:\n    formula: y = x\n    kernels: yes\n",
            "5:14",
        ),
    ],
)
def test_an_unknown_kernels_mode_is_a_located_error(text, where):
    with pytest.raises(SpecError, match=f"ops.yaml:{where}: error: .*kernels"):
        parse_spec(text, "ops.yaml")


# -- fngen check ------------------------------------------------------------


@pytest.mark.parametrize("path", REPOSITORY_SPECS)
def test_every_kernel_of_the_repository_passes_the_kernel_check(path):
    spec = dataclasses.replace(load_spec(ROOT / path), kernels="triton")
    report = check_spec(spec, checks=["kernel"])
    assert "kernel" in report.columns
    for function in report.functions:
        outcome = function.outcomes["kernel"]
        assert outcome.ok is not False, (function.name, outcome.reason)
        if outcome.ok is None:
            assert outcome.reason.startswith("no Triton kernel"), outcome.reason


def test_the_kernel_check_fails_a_wrong_kernel(monkeypatch):
    right = K.embedded_source

    def wrong(kernels):  # the backward off by 1% where exp's reads y
        return right(kernels).replace("grad_x = grad * y", "grad_x = grad * y * 1.01")

    monkeypatch.setattr(K, "embedded_source", wrong)
    report = check_spec(parse_spec(SPEC, "wrong.yaml"), checks=["kernel"])
    outcome = report.functions[0].outcomes["kernel"]
    assert outcome.ok is False
    assert "the kernel's gradient of x" in outcome.reason


def test_the_kernel_check_fails_a_kernel_that_gives_nan(monkeypatch):
    right = K.embedded_source

    def nan(kernels):  # NaN for x above 0.5, where exp is finite
        return right(kernels).replace(
            "y = libdevice.exp(x)", "y = tl.where(x > 0.5, x * float('nan'), x)"
        )

    monkeypatch.setattr(K, "embedded_source", nan)
    report = check_spec(parse_spec(SPEC, "nan.yaml"), checks=["kernel"])
    outcome = report.functions[0].outcomes["kernel"]
    assert outcome.ok is False
    assert "the kernel's output y" in outcome.reason and "is NaN" in outcome.reason


def test_the_kernel_check_fails_a_kernel_that_does_not_run(monkeypatch):
    idle = K.DISPATCH.replace(
        "    if triton is None", "    return False\n    if triton is None"
    )
    assert idle != K.DISPATCH
    monkeypatch.setattr(K, "DISPATCH", idle)
    report = check_spec(parse_spec(SPEC, "idle.yaml"), checks=["kernel"])
    outcome = report.functions[0].outcomes["kernel"]
    assert outcome.ok is False
    assert "did not run" in outcome.reason


def test_the_kernel_column_is_shown_only_for_specs_with_kernels():
    plain = check_spec(parse_spec("fngen: 1\nfunctions:\n  f:\n    formula: y = x*x\n"))
    assert "kernel" not in plain.columns
    report = check_spec(parse_spec(SPEC, "shown.yaml"), only="total")
    assert "kernel" in report.columns
    outcome = report.functions[0].outcomes["kernel"]
    assert outcome.ok is None and "not pointwise (sum)" in outcome.reason


def test_the_interpreter_is_left_off():
    _interpreted(SPEC, "kernels_env")
    assert os.environ.get("TRITON_INTERPRET") != "1"
