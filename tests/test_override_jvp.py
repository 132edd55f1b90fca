"""`grad:` overrides beyond one pointwise output.

Forward mode must be the transpose of the overridden backward
(ops-format.md: the Function works with forward-mode AD): through a
reduction the override's coefficient is summed to the output's shape, with
several outputs each gets its own coefficient, and an override that is not
linear in the gradient has no transpose at all, so its jvp raises and
`fngen check` skips forward_ad with the reason.  The backward of several
outputs counts an output that got no gradient as zero in the override.
"""

from __future__ import annotations

import pytest
import torch

import fngen
from fngen.spec import parse_spec

SPEC = """\
fngen: 1
functions:
  ste_sum:
    doc: A straight-through round inside a reduction.
    formula: y = sum(round(x) * w, dim=-1, keepdim=true)
    grad:
      x: grad * w
    check:
      shapes: {x: [3, 4], w: [4]}
  two_outputs:
    formula: |
      a = round(x)
      b = x**2
    outputs: [a, b]
    grad:
      x: grad_a + 2 * x * grad_b
  broadcast:
    formula: y = round(x) * w
    grad:
      x: grad * w
    check:
      shapes: {x: [3, 1], w: [4]}
  clipped:
    formula: y = x * 1
    grad:
      x: clamp(grad, -1, 1)
"""

D = torch.float64


@pytest.fixture(scope="module")
def spec():
    return parse_spec(SPEC, "overrides.yaml")


@pytest.fixture(scope="module")
def mod(spec):
    return fngen.load(spec)


def test_check_passes_forward_mode_against_the_overridden_backward(spec):
    report = fngen.check(spec)
    assert report.ok, report.table()
    outcomes = {f.name: f.outcomes["forward_ad"] for f in report.functions}
    assert all(outcomes[n].ok for n in ("ste_sum", "two_outputs", "broadcast"))
    assert outcomes["clipped"].ok is None
    assert outcomes["clipped"].reason == "the grad: override of x is not linear in grad"


def _jvp(function, primals, tangents):
    return torch.func.jvp(function, primals, tangents)[1]


def test_reduction_jvp_is_the_transpose(mod):
    x, w = torch.randn(3, 4, dtype=D), torch.randn(4, dtype=D)
    x_t = torch.randn(3, 4, dtype=D)
    # vjp: grad_x = grad * w (grad of shape (3, 1)); its transpose sums.
    expected = (x_t * w).sum(-1, keepdim=True)
    got = _jvp(lambda x: mod.ste_sum(x, w), (x,), (x_t,))
    torch.testing.assert_close(got, expected)


def test_broadcast_jvp_is_the_transpose(mod):
    x, w = torch.randn(3, 1, dtype=D), torch.randn(4, dtype=D)
    x_t = torch.randn(3, 1, dtype=D)
    got = _jvp(lambda x: mod.broadcast(x, w), (x,), (x_t,))
    torch.testing.assert_close(got, x_t * w)


def test_each_output_gets_its_coefficient(mod):
    x, x_t = torch.randn(5, dtype=D), torch.randn(5, dtype=D)
    a_t, b_t = _jvp(mod.two_outputs, (x,), (x_t,))
    torch.testing.assert_close(a_t, x_t)
    torch.testing.assert_close(b_t, 2 * x * x_t)


@pytest.mark.parametrize("used", [0, 1], ids=["only_a", "only_b"])
def test_an_output_without_gradient_is_zero_in_the_override(mod, used):
    # This backward read `torch.addcmul(grad_a, grad_b, x)` with one of
    # them None, a TypeError when only one output was used.
    x = torch.randn(5, dtype=D, requires_grad=True)
    outputs = mod.two_outputs(x)
    g = torch.randn(5, dtype=D)
    (grad,) = torch.autograd.grad(outputs[used], x, g)
    torch.testing.assert_close(grad, g if used == 0 else 2 * x * g)


def test_a_nonlinear_override_has_no_jvp(mod):
    x = torch.randn(5, dtype=D)
    with pytest.raises(NotImplementedError, match="not linear in the incoming"):
        _jvp(mod.clipped, (x,), (torch.ones_like(x),))
    x.requires_grad_()
    (grad,) = torch.autograd.grad(mod.clipped(x), x, torch.full_like(x, 5.0))
    torch.testing.assert_close(grad, torch.ones_like(x))
