"""Optional tensors inside reductions and matrix products.

An absent optional tensor counts as zero (ops-format.md), inside a
reduction or `@` as in pointwise parts: ``sum((x @ w + b)**2, dim=-1)``
without ``b`` is ``sum((x @ w)**2, dim=-1)``.  Only where its absence
leaves an operation no tensor at all is the spec refused, at the operation.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fngen
from fngen.checker import FunctionChecker
from fngen.errors import SpecError
from fngen.spec import parse_spec

SPEC = """\
fngen: 1
functions:
  squares:
    formula: y = sum((x @ w + b)**2, dim=-1)
    inputs:
      x: tensor
      w: tensor
      b: {type: tensor, optional: true}
    check:
      shapes: {x: [3, 4], w: [4, 5], b: [5]}
  shifted_log_softmax:
    formula: |
      z = x * s + b
      y = z - log(sum(exp(z), dim=-1, keepdim=true))
    inputs:
      x: tensor
      s: tensor
      b: {type: tensor, optional: true}
  shifted_product:
    formula: y = (x + b) @ w
    inputs:
      x: tensor
      w: tensor
      b: {type: tensor, optional: true}
    check:
      shapes: {x: [3, 4], w: [4, 5], b: [4]}
  scores:
    doc: An optional param inside a reduction; the Module takes bias=False.
    formula: y = mean(tanh(x @ weight.T + bias), dim=-1)
    inputs:
      x: tensor
      weight: {param: [out_features, in_features]}
      bias: {param: [out_features], optional: true}
    check:
      shapes: {x: [3, 4], weight: [5, 4], bias: [5]}
"""

D = torch.float64


def _zero_if_none(b):
    return 0 if b is None else b


REFERENCES = {
    "squares": lambda x, w, b: ((x @ w + _zero_if_none(b)) ** 2).sum(-1),
    "shifted_log_softmax": lambda x, s, b: torch.log_softmax(
        x * s + _zero_if_none(b), -1
    ),
    "shifted_product": lambda x, w, b: (x + _zero_if_none(b)) @ w,
    "scores": lambda x, w, b: torch.tanh(x @ w.mT + _zero_if_none(b)).mean(-1),
}
SHAPES = {
    "squares": [(3, 4), (4, 5), (5,)],
    "shifted_log_softmax": [(3, 4), (3, 4), (4,)],
    "shifted_product": [(3, 4), (4, 5), (4,)],
    "scores": [(3, 4), (5, 4), (5,)],
}


@pytest.fixture(scope="module")
def mod():
    return fngen.load(parse_spec(SPEC, "optional.yaml"))


@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_gradients_with_and_without_the_optional_tensor(mod, name, present):
    generator = torch.Generator().manual_seed(len(name))
    args = [
        torch.randn(shape, dtype=D, generator=generator, requires_grad=True)
        for shape in SHAPES[name]
    ]
    if not present:
        args[-1] = None
    function, reference = getattr(mod, name), REFERENCES[name]
    out, expected = function(*args), reference(*args)
    torch.testing.assert_close(out, expected)
    tensors = [a for a in args if a is not None]
    seed = torch.randn(expected.shape, dtype=D, generator=generator)
    got = torch.autograd.grad(out, tensors, seed)
    want = torch.autograd.grad(expected, tensors, seed)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert gradcheck(function, args)
    assert gradgradcheck(function, args)


def test_module_without_its_optional_param(mod):
    with_bias, without = mod.Scores(5, 4), mod.Scores(5, 4, bias=False)
    assert without.bias is None and with_bias.bias is not None
    x = torch.randn(3, 4, dtype=D)
    without = without.double()
    torch.testing.assert_close(
        without(x), REFERENCES["scores"](x, without.weight, None)
    )
    without(x).sum().backward()
    assert without.weight.grad is not None


@pytest.mark.parametrize(
    "formula, error",
    [
        (
            "y = x + sum(x * b, dim=-1, keepdim=true)",
            "ops.yaml:4:22: error: sum() would have no tensor to work on when "
            "optional 'b' is None",
        ),
        (
            "y = x + mean(b, dim=0)",
            "ops.yaml:4:22: error: mean() would have no tensor to work on when "
            "optional 'b' is None",
        ),
        (
            "y = x + (b @ x.T)",
            "ops.yaml:4:23: error: '@' would have no tensor to work on when "
            "optional 'b' is None",
        ),
        (
            "y = x * log(sum(exp(b), dim=-1, keepdim=true))",
            "ops.yaml:4:22: error: log(sum(exp())) would have no tensor to work "
            "on when optional 'b' is None",
        ),
        (
            "y = x + sum(b * c, dim=-1, keepdim=true)",
            "ops.yaml:4:22: error: sum() would have no tensor to work on when "
            "optional 'b' is None",
        ),
    ],
)
def test_absence_that_leaves_an_operation_nothing_is_refused(formula, error):
    optional = [name for name in ("b", "c") if name in formula]
    text = "fngen: 1\nfunctions:\n  f:\n"
    text += f"    formula: {formula}\n    inputs:\n      x: tensor\n"
    text += "".join(f"      {n}: {{type: tensor, optional: true}}\n" for n in optional)
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "ops.yaml")
    assert str(caught.value) == (
        error + " (an absent tensor counts as zero: add it outside the reduction "
        "or matrix product, or make it required)"
    )


def test_check_runs_each_presence_variant(mod):
    # fngen check proves the `bias is None` branches too: every check runs
    # with the optional tensors present, then absent in each combination.
    spec = parse_spec(SPEC, "optional.yaml")
    report = fngen.check(spec)
    assert report.ok, report.table()
    fn = next(f for f in spec.functions if f.name == "squares")
    checker = FunctionChecker(fn, mod, torch.device("cpu"), D)
    assert checker.variants() == [frozenset(), frozenset({"b"})]


def test_check_reports_a_wrong_absent_branch(mod):
    spec = parse_spec(SPEC, "optional.yaml")
    fn = next(f for f in spec.functions if f.name == "squares")

    def wrong_without_b(x, w, b=None):
        # Right with b, off by a factor without it: only the variant sees it.
        out = mod.squares(x, w, b)
        return out if b is not None else 1.01 * out

    module = types.SimpleNamespace(squares=wrong_without_b)
    checker = FunctionChecker(fn, module, torch.device("cpu"), D)
    report = checker.run(["reference", "gradcheck"])
    outcome = report.outcomes["reference"]
    assert not outcome.ok
    assert outcome.reason.startswith(
        "with b=None: the output y differs from the reference by "
    )
    assert report.outcomes["gradcheck"].ok  # still a consistent gradient
