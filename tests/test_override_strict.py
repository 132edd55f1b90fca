"""`grad:` overrides that are vector-Jacobian products, and only those
(issue 13, item 6): an override that reads no incoming gradient is refused,
a `where` of the gradient is linear and gets a jvp, and the double backward
of an override that reads the output is judged against autograd of the
override, not against finite differences of a step function."""

from __future__ import annotations

import pytest
import torch

import fngen
from fngen.checker import check_spec
from fngen.derive import nonlinear_overrides
from fngen.errors import SpecError
from fngen.spec import parse_spec


def _spec(body: str):
    return parse_spec("fngen: 1\nfunctions:\n" + body, "ops.yaml")


def test_an_override_without_the_incoming_gradient_is_refused():
    with pytest.raises(SpecError) as info:
        _spec(
            "  spike:\n"
            "    formula: y = heaviside(v)\n"
            "    grad:\n"
            "      v: 1/(1 + (pi*v)**2)\n"
        )
    assert str(info.value) == (
        "ops.yaml:6:10: error: the grad: override of 'v' reads no incoming "
        "gradient (grad): it is not a vector-Jacobian product, and the gradient "
        "would ignore everything after 'spike' (multiply by grad: 'v: grad * (...)')"
    )


def test_with_several_outputs_the_hint_names_their_gradients():
    with pytest.raises(SpecError) as info:
        _spec(
            "  two:\n"
            "    formula: |\n"
            "      a = round(x)\n"
            "      b = x * x\n"
            "    outputs: [a, b]\n"
            "    grad:\n"
            "      x: 2 * x\n"
        )
    assert str(info.value) == (
        "ops.yaml:9:10: error: the grad: override of 'x' reads no incoming "
        "gradient (grad_a or grad_b): it is not a vector-Jacobian product, and "
        "the gradient would ignore everything after 'two' (multiply by grad_a: "
        "'x: grad_a * (...)')"
    )


def test_a_zero_override_is_the_zero_product_and_builds():
    spec = _spec('  stop:\n    formula: y = x * 2\n    grad:\n      x: "0"\n')
    module = fngen.load(spec)
    x = torch.randn(3, requires_grad=True)
    module.stop(x).sum().backward()
    assert x.grad is None or torch.count_nonzero(x.grad) == 0
    assert check_spec(spec).ok


MASKED = """\
  masked:
    formula: y = round(x)
    grad:
      x: where(x > 1, 0, grad * x)
  mixed:
    formula: y = heaviside(v)
    grad:
      v: where(abs(v) < 0.5, grad, 0) + 2*where(v > 1, grad * v, grad)
  relu_of_grad:
    formula: y = x * 1
    grad:
      x: where(grad > 0, grad, 0)
"""


def test_a_where_of_the_gradient_is_linear():
    spec = _spec(MASKED)
    by_name = {fn.name: fn for fn in spec.functions}
    assert nonlinear_overrides(by_name["masked"]) == []
    assert nonlinear_overrides(by_name["mixed"]) == []
    assert nonlinear_overrides(by_name["relu_of_grad"]) == ["x"]


def test_the_jvp_of_a_where_override_is_its_transpose():
    module = fngen.load(_spec(MASKED))
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    t = torch.randn(9, dtype=torch.float64)
    tangent = torch.func.jvp(module.masked, (x,), (t,))[1]
    torch.testing.assert_close(tangent, torch.where(x > 1, 0, x * t))
    v = torch.linspace(-2, 2, 9, dtype=torch.float64)
    tangent = torch.func.jvp(module.mixed, (v,), (t,))[1]
    expected = t * ((v.abs() < 0.5).double() + 2 * torch.where(v > 1, v, 1))
    torch.testing.assert_close(tangent, expected)


def test_check_proves_the_jvp_of_a_where_override():
    report = check_spec(_spec(MASKED), only=["masked", "mixed"])
    for row in report.functions:
        assert row.outcomes["forward_ad"].ok is True, report.table()


READS_OUTPUT = """\
  scaled_step:
    doc: A step whose surrogate gradient reads the output.
    formula: y = heaviside(x) + 1
    grad:
      x: grad * y
  gated_exp:
    formula: |
      y = sin(x) * round(w)
    inputs:
      x: tensor
      w: tensor
    grad:
      w: grad * y
"""


def test_double_backward_of_an_override_reading_the_output_passes():
    """Finite differences of the step y = heaviside(x) + 1 are zero, the
    override's derivative through y is not: gradgradcheck failed falsely."""
    report = check_spec(_spec(READS_OUTPUT))
    for row in report.functions:
        assert row.outcomes["double_backward"].ok is True, report.table()


def test_double_backward_of_an_override_reading_the_output_still_fails_when_wrong(
    monkeypatch,
):
    """The comparison is a real one: a backward whose derivative through
    the output is wrong fails it."""
    spec = _spec(READS_OUTPUT)
    module = fngen.load(spec)
    original = module.ScaledStepFunction.backward

    def backward(ctx, grad):
        (grad_x,) = original(ctx, grad)
        # Right first derivative, wrong second: the extra term is zero in
        # value but not in its derivative.
        (y,) = ctx.saved_tensors
        return (grad_x + grad * (y - y.detach()) * 3,)

    monkeypatch.setattr(module.ScaledStepFunction, "backward", staticmethod(backward))
    monkeypatch.setattr(fngen.checker, "load", lambda spec: module)
    report = check_spec(spec, only="scaled_step", checks=["double_backward"])
    (row,) = report.functions
    assert row.outcomes["double_backward"].ok is False, report.table()
