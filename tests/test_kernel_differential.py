"""Differential test of the generated Triton kernels on random pointwise
formulas: `fngen check`'s kernel column (the kernels under Triton's
interpreter against the module's torch code, forward and every input
gradient, float32 and bfloat16, every combination of needed gradients,
0-dim and empty tensors, broadcast inputs) on formulas nobody wrote by hand.

The torch code itself is tested against torch autograd on the same grammar
by tests/test_differential.py.  CI runs a few derandomized examples;
``FNGEN_FUZZ=N`` runs N with fresh seeds.
"""

from __future__ import annotations

import pytest
from hypothesis import given

pytest.importorskip("triton")

from fngen.checker import check_spec  # noqa: E402
from fngen.spec import parse_spec  # noqa: E402

from test_differential import ANCHOR, GAMMA_EXPRESSIONS, fuzz_settings  # noqa: E402


def kernel_outcome(formula: str):
    text = (
        "fngen: 1\nkernels: triton\nfunctions:\n  f:\n"
        f"    formula: out = {formula} + {ANCHOR}\n"
    )
    if "gamma" in formula:
        text += "    inputs: {x: tensor, y: tensor, gamma: float}\n"
    spec = parse_spec(text, "kernel_fuzz.yaml")
    (function,) = check_spec(spec, checks=["kernel"]).functions
    return function.outcomes["kernel"]


@fuzz_settings(8)
@given(formula=GAMMA_EXPRESSIONS)
def test_random_pointwise_kernels_agree_with_the_torch_code(formula):
    outcome = kernel_outcome(formula)
    # Every pointwise formula of the grammar gets a kernel and passes.
    assert outcome.ok is True, (formula, outcome.reason)


def test_the_harness_sees_a_kernel():
    """A test that cannot fail is a defect: the formula must get a kernel
    (not be skipped as not pointwise) for the check to mean anything."""
    outcome = kernel_outcome("x*sin(y)")
    assert outcome.ok is True
    assert outcome.reason in (None, "")


# Found by fresh seeds: at x = 1e-4 the argument of the step is 0 in
# float32 (2 + x**2 rounds to 2) and 4e-9 in float64; the kernel gives
# what the torch code gives in float32, which the check accepts.
# A constant base of a square was once named on a line of its own
# (t2 = 2.479...), a float32 scalar in Triton: 6e-7 off in float64.
FOUND = [
    "heaviside(lgamma(2 + (x)**2), 0.5)",
    "(acosh(2 + (atan2(y, 2 + sin(0.5)))**2)) - (y)/7",
]


@pytest.mark.parametrize("formula", FOUND)
def test_kernels_found_by_fuzzing(formula):
    outcome = kernel_outcome(formula)
    assert outcome.ok is True, (formula, outcome.reason)


def test_a_kernel_off_at_a_step_still_fails(monkeypatch):
    """The float32 torch code is accepted as a reference only where the
    kernel agrees with it: a kernel that moves the step fails."""
    from fngen import kernels as K

    right = K.embedded_source

    def wrong(kernels):
        return right(kernels).replace("libdevice.lgamma(", "-0.001 + libdevice.lgamma(")

    monkeypatch.setattr(K, "embedded_source", wrong)
    outcome = kernel_outcome(FOUND[0])
    assert outcome.ok is False and "kernel's output out" in outcome.reason
