"""Reductions kept for the backward (`derive.keep_reductions`).

A backward that needs a fractional power of a reduction of the forward
(layer_norm's and rms_norm's ``1/sqrt(var + eps)``) gets it as an extra
output of the Function instead of reading a whole input again.  These tests
pin what is kept and check every branch of the backward: the declared
output's gradient alone, the kept outputs' alone (double backward), and
both, in float64, forward mode included.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import fngen
from fngen.spec import parse_spec

SPEC = """\
fngen: 1
functions:
  ln:
    doc: layer_norm, its root written as a power.
    formula: |
      mu = mean(x, dim=-1, keepdim=true)
      d = x - mu
      var = mean(d*d, dim=-1, keepdim=true)
      y = d * (var + eps)**-0.5
    inputs:
      x: tensor
      eps: {type: float, default: 1.0e-5}
  rms:
    formula: y = x / sqrt(mean(x**2, dim=-1, keepdim=true) + eps) * weight
    inputs:
      x: tensor
      weight: tensor
      eps: {type: float, default: 1.0e-6}
  by_sum:
    doc: A whole power of the reduction, and no keepdim.
    formula: y = x / sum(x**2, dim=0)
    inputs:
      x: {domain: [0.5, 2.0]}
  with_log:
    doc: The reduction is read under log as well as under a root.
    formula: |
      s = mean(x**2, dim=-1, keepdim=true)
      y = x / sqrt(s + 1) + log(s)
    inputs:
      x: {domain: [0.5, 2.0]}
  two:
    doc: Two reductions, each read through a root.
    formula: |
      a = mean(x**2, dim=-1, keepdim=true)
      b = mean(x**4, dim=-1, keepdim=true)
      y = x / sqrt(a + 1) + x**2 / sqrt(b + 2)
  with_eps:
    doc: A scalar the backward reads.
    formula: y = log(x*x + eps)
    inputs:
      x: tensor
      eps: {type: float, default: 1.0}
  plain:
    doc: The backward needs no reduction.
    formula: y = x - mean(x, dim=-1, keepdim=true)
"""


@pytest.fixture(scope="module")
def mod():
    return fngen.load(parse_spec(SPEC, "keep.yaml"))


def _lines(method) -> list[str]:
    return [line.strip() for line in inspect.getsource(method).splitlines()]


def test_layer_norm_keeps_its_rstd_and_recomputes_its_mean(mod):
    forward = _lines(mod.LnFunction.forward)
    # The shared root is computed once, under the kept output's name.
    assert "rstd = torch.rsqrt(eps + var)" in forward
    assert "y = rstd * t0" in forward
    assert "return y, rstd" in forward
    setup = _lines(mod.LnFunction.setup_context)
    # x and one value a row: the bytes autograd saves for the formula (x - mu
    # and sqrt(var + eps)), where keeping mu as well would be more.
    assert "ctx.save_for_backward(x, rstd)" in setup
    # eps is read only through rstd: not kept on ctx either.
    assert "ctx.eps = eps" not in setup
    assert "ctx.eps = eps" in _lines(mod.WithEpsFunction.setup_context)
    backward = inspect.getsource(mod.LnFunction.backward)
    # The mean again (in each of the two parts: through y, and through rstd
    # in double backward), but not the variance, and no root per element.
    means = [line for line in _lines(mod.LnFunction.backward) if ".mean(" in line]
    assert means == ["mu = x.mean(dim=-1, keepdim=True)"] * 2
    assert "sqrt" not in backward
    assert "grad_var = -(rstd**3) * (grad_y * t0).sum_to_size(mu.shape) / 2" in (
        " ".join(backward.split())
    )


def test_rms_norm_keeps_the_reciprocal_root(mod):
    forward = _lines(mod.RmsFunction.forward)
    assert forward[-3:] == [
        "rstd = torch.rsqrt(eps + y_mean)",
        "y = rstd * weight * x",
        "return y, rstd",
    ]
    assert ".mean(" not in inspect.getsource(mod.RmsFunction.backward)


def test_a_whole_power_keeps_nothing(mod):
    # 1/s**2 from 1/s is no cheaper than from s: s is recomputed.
    assert "return y" in _lines(mod.BySumFunction.forward)
    assert ".sum(dim=0" in inspect.getsource(mod.BySumFunction.backward)


def test_a_reduction_read_under_log_keeps_nothing(mod):
    # log(s) from 1/sqrt(s + 1) would be log(kept**-2 - 1), losing precision.
    assert "return y" in _lines(mod.WithLogFunction.forward)
    assert ".mean(" in inspect.getsource(mod.WithLogFunction.backward)


def test_two_kept_values_each_add_their_part_where_they_have_a_gradient(mod):
    assert "return y, kept_a, kept_b" in _lines(mod.TwoFunction.forward)
    backward = _lines(mod.TwoFunction.backward)
    # No zeros stand in for a missing gradient: each part runs alone.
    assert (
        "if grad_kept_a is not None:  # double backward through the kept output"
        in backward
    )
    assert (
        "if grad_kept_b is not None:  # double backward through the kept output"
        in backward
    )
    assert not any("zeros_like" in line for line in backward)
    assert ".mean(" not in inspect.getsource(mod.TwoFunction.backward)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(mod.two, (x,))


def test_nothing_is_kept_when_the_backward_needs_no_reduction(mod):
    assert "return y" in _lines(mod.PlainFunction.forward)
    assert "also returns" not in mod.PlainFunction.__doc__


def test_the_wrapper_returns_only_the_declared_output(mod):
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.is_tensor(mod.ln(x))
    assert torch.is_tensor(mod.Ln()(x))


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_layer_norm_matches_torch(mod, shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape, dtype=torch.float64)
    ours = mod.ln(x, 1e-5)
    ref = F.layer_norm(x, shape[-1:], eps=1e-5)
    torch.testing.assert_close(ours, ref)
    (a,) = torch.autograd.grad(ours, x, g)
    (b,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(a, b)


def test_rms_norm_matches_torch(mod):
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 6, dtype=torch.float64)
    ours = mod.rms(x, w, 1e-6)
    ref = F.rms_norm(x, (6,), w, eps=1e-6)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(
        torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(ref, (x, w), g)
    ):
        torch.testing.assert_close(a, b)


def _inputs(name):
    def t(*shape, lo=-2.0, hi=2.0):
        x = torch.empty(*shape, dtype=torch.float64).uniform_(lo, hi)
        return x.requires_grad_()

    return {
        "ln": lambda: (t(3, 5), 1e-5),
        "rms": lambda: (t(3, 5), t(5), 1e-6),
        "by_sum": lambda: (t(3, 4, lo=0.5, hi=2.0),),
        "with_log": lambda: (t(3, 4, lo=0.5, hi=2.0),),
        "two": lambda: (t(3, 4),),
    }[name]()


CLASSES = {"ln": "Ln", "rms": "Rms", "two": "Two"}


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("outputs", ["declared", "kept", "first_kept", "all"])
def test_every_branch_of_the_backward_is_right(mod, name, outputs):
    """gradcheck of apply through the declared output, the kept ones, or
    all: each a different branch of the backward (None gradients for the
    others), and gradgradcheck, which differentiates through the kept."""
    torch.manual_seed(0)
    function = getattr(mod, f"{CLASSES[name]}Function")
    args = _inputs(name)

    def f(*args):
        results = function.apply(*args)
        chosen = {
            "declared": results[:1],
            "kept": results[1:],
            "first_kept": results[1:2],
            "all": results,
        }[outputs]
        return tuple(r * (n + 1) for n, r in enumerate(chosen))

    assert gradcheck(f, args, check_forward_ad=True)
    assert gradgradcheck(f, args)


@pytest.mark.parametrize("name", [*CLASSES, "by_sum", "with_log"])
def test_a_second_derivative_through_the_wrapper(mod, name):
    torch.manual_seed(1)
    args = _inputs(name)
    assert gradgradcheck(getattr(mod, name), args)


def test_the_branches_share_one_setup(mod):
    lines = _lines(mod.LnFunction.backward)
    # Read from ctx once, after the all-None return and before the branches.
    first_branch = lines.index("if grad_y is not None:")
    assert lines.index("x, rstd = ctx.saved_tensors") < first_branch
    assert lines.count("x, rstd = ctx.saved_tensors") == 1
    assert lines.count("needs_x, _ = ctx.needs_input_grad") == 1
    assert lines.index("return None, None") < lines.index("grad_x = None")
    # eps is read only through rstd: not taken from ctx at all.
    assert "eps = ctx.eps" not in lines
    assert "eps = ctx.eps" not in _lines(mod.LnFunction.jvp)


def test_a_scalar_still_read_is_still_taken_from_ctx(mod):
    # Without a kept value for it, the backward reads eps itself.
    lines = _lines(mod.WithEpsFunction.backward)
    assert "eps = ctx.eps" in lines
    assert any("eps" in line for line in lines if line != "eps = ctx.eps")


MORE = {
    "y = x * (mean(x**2, dim=-1, keepdim=true) + 1)**-1.5": lambda x: x
    * ((x**2).mean(-1, keepdim=True) + 1) ** -1.5,
    "y = sin(x) / sqrt(sum(exp(x), dim=0) + 2)": lambda x: torch.sin(x)
    / torch.sqrt(torch.exp(x).sum(0) + 2),
    "y = x**2 * (mean(x, dim=-1, keepdim=true)**2 + 1)**0.25": lambda x: x**2
    * (x.mean(-1, keepdim=True) ** 2 + 1) ** 0.25,
    "y = x / sqrt(log(sum(exp(x), dim=-1, keepdim=true)) + 10) + sqrt(2*mean(x*x, dim=-1, keepdim=true) + 3)": lambda x: x
    / torch.sqrt(torch.logsumexp(x, -1, keepdim=True) + 10)
    + torch.sqrt(2 * (x * x).mean(-1, keepdim=True) + 3),
}


@pytest.mark.parametrize("formula", list(MORE))
def test_kept_powers_of_reductions_agree_with_autograd(formula):
    module = fngen.load(
        parse_spec(f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n", "more.yaml")
    )
    torch.manual_seed(0)
    x = torch.empty(3, 5, dtype=torch.float64).uniform_(-1.5, 1.5).requires_grad_()
    g = torch.randn(3, 5, dtype=torch.float64)
    ours, ref = module.f(x), MORE[formula](x)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(
        torch.autograd.grad(ours, x, g, create_graph=True),
        torch.autograd.grad(ref, x, g, create_graph=True),
    ):
        torch.testing.assert_close(a, b)
    assert gradcheck(module.f, (x,), check_forward_ad=True)
    assert gradgradcheck(module.f, (x,))


def test_a_reduction_without_keepdim_is_kept_with_its_shape():
    formula = list(MORE)[1]  # sin(x) / sqrt(sum(exp(x), dim=0) + 2)
    module = fngen.load(
        parse_spec(f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n", "m.yaml")
    )
    backward = inspect.getsource(module.FFunction.backward)
    # Its gradient is summed to the kept value's shape, not the sum's.
    assert ".sum(dim=0" not in backward
    assert not re.search(r"\by_sum\.shape", backward)
    assert ".sum_to_size(rstd.shape)" in "".join(backward.split())
