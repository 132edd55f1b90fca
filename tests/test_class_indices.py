"""Class-index targets (issue 17): long tensor inputs, `gather` and
`one_hot`, and the losses of examples/losses.yaml against
torch.nn.functional; with the located errors of what is not allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as nnf

import fngen
from fngen.checker import sample_inputs
from fngen.errors import SpecError
from fngen.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def losses():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return fngen.load("examples/losses.yaml")
    finally:
        os.chdir(cwd)


def spec_of(formula: str, inputs: str, extra: str = ""):
    text = (
        "fngen: 1\nfunctions:\n  f:\n"
        f"    formula: {formula}\n    inputs:\n{inputs}{extra}"
    )
    return parse_spec(text, "idx.yaml")


def error(formula: str, inputs: str, extra: str = "") -> str:
    with pytest.raises(SpecError) as info:
        spec_of(formula, inputs, extra)
    return str(info.value)


LOGITS_TARGET = "      x: tensor\n      t: {type: long, classes: 4}\n"


# -- the losses against PyTorch --------------------------------------------


def _logits(*shape, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    return (3 * torch.randn(*shape, generator=generator, dtype=dtype)).requires_grad_()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
def test_cross_entropy_agrees_with_torch(losses, smoothing):
    x = _logits(7, 5)
    target = torch.tensor([0, 4, -100, 2, 3, -100, 1])
    got = losses.cross_entropy(x, target, 5, smoothing)
    want = nnf.cross_entropy(x, target, label_smoothing=smoothing)
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got, x)
    (g_want,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(g_got, g_want)
    # The ignored rows get no gradient at all.
    assert g_got[2].abs().max() == 0 and g_got[5].abs().max() == 0


def test_cross_entropy_is_finite_at_large_logits_in_float32(losses):
    x = _logits(6, 5, dtype=torch.float32)
    with torch.no_grad():
        x[0, 0] = 1e4
        x[1] *= 1e3
        x[2, 3] = -1e4
    target = torch.tensor([0, 1, 3, 2, 4, 0])
    got = losses.cross_entropy(x, target, 5, 0.1)
    want = nnf.cross_entropy(x, target, label_smoothing=0.1)
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got, x)
    (g_want,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(g_got, g_want)


def test_cross_entropy_module_takes_the_target(losses):
    module = losses.CrossEntropy(smoothing=0.2)
    x = _logits(3, 5)
    target = torch.tensor([1, 0, 4])
    torch.testing.assert_close(
        module(x, target), nnf.cross_entropy(x, target, label_smoothing=0.2)
    )


def _focal(logits, target, gamma):
    logpt = torch.log_softmax(logits, dim=-1).gather(-1, target)
    return -((1 - logpt.exp()) ** gamma * logpt).mean()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_agrees_with_the_written_loss(losses, gamma):
    x = _logits(6, 5)
    target = torch.tensor([[0], [4], [2], [2], [1], [3]])
    got = losses.focal_loss(x, target, gamma)
    want = _focal(x, target, gamma)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0]
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_focal_loss_gradient_is_finite_where_the_target_is_certain(losses, dtype):
    # A regression: (1 - exp(l))**gamma differentiated by SymPy is
    # gamma*(1 - exp(l))**gamma*exp(l)/(1 - exp(l)), 0/0 where p_t = 1
    # (l = 0 exactly), which the generated backward computed as NaN.
    x = torch.tensor([[100.0, 0, 0, 0, 0], [1, 2, 3, 4, 5]], dtype=dtype)
    x.requires_grad_()
    target = torch.tensor([[0], [4]])
    (got,) = torch.autograd.grad(losses.focal_loss(x, target, 2.0), x)
    (want,) = torch.autograd.grad(_focal(x, target, 2.0), x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_nll_by_gather_agrees_with_torch():
    fn = fngen.load(
        spec_of(
            "loss = -mean(gather(logp, 1, t))",
            "      logp: tensor\n" "      t: {type: long, classes: 4}\n",
        )
    ).f
    logp = torch.log_softmax(_logits(5, 4), dim=1).detach().requires_grad_()
    target = torch.tensor([3, 0, 1, 1, 2])
    got = fn(logp, target.unsqueeze(1))
    want = nnf.nll_loss(logp, target)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        torch.autograd.grad(got, logp)[0], torch.autograd.grad(want, logp)[0]
    )


def test_gather_keeps_torch_gathers_semantics_in_three_dims():
    fn = fngen.load(spec_of("y = gather(x**2, 1, t)", LOGITS_TARGET)).f
    x = _logits(2, 3, 4)
    index = torch.randint(3, (2, 2, 4), generator=torch.Generator().manual_seed(1))
    got = fn(x, index)
    want = torch.gather(x**2, 1, index)
    torch.testing.assert_close(got, want)
    seed = torch.randn_like(want)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, seed)[0], torch.autograd.grad(want, x, seed)[0]
    )
    torch.autograd.gradcheck(lambda x: fn(x, index), (x,))
    torch.autograd.gradgradcheck(lambda x: fn(x, index), (x,))


def test_one_hot_of_an_index_outside_the_classes_is_a_row_of_zeros():
    fn = fngen.load(spec_of("y = x * one_hot(t, 3)", LOGITS_TARGET)).f
    x = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    got = fn(x, torch.tensor([0, 2, -100, 3]))
    assert got.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert got.dtype == torch.float64


def test_one_hot_takes_an_int_input_for_the_count():
    inputs = LOGITS_TARGET + "      n: {type: int, default: 4}\n"
    fn = fngen.load(spec_of("y = x * one_hot(t, n)", inputs)).f
    x = torch.ones(2, 4, dtype=torch.float64)
    assert fn(x, torch.tensor([3, 1])).tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    assert fn(x[:, :2], torch.tensor([1, 0]), 2).tolist() == [[0, 1], [1, 0]]


def test_a_long_input_gets_no_gradient_and_the_backward_saves_no_logits():
    fn_spec = spec_of(
        "loss = -mean(gather(logp, -1, t))", LOGITS_TARGET.replace("x:", "logp:")
    )
    source = fngen.generate(fn_spec)
    backward = source.split("def backward")[1].split("def jvp")[0]
    # The gather's result has its index's shape: the backward needs only
    # the index and logp's shape.
    assert "(t,) = ctx.saved_tensors" in backward
    assert "return grad_logp, None" in backward
    fn = fngen.load(fn_spec).f
    logp = _logits(3, 4)
    t = torch.tensor([[1], [0], [3]])
    fn(logp, t).backward()
    assert logp.grad is not None and not t.requires_grad


def test_forward_ad_and_vmap_through_gather():
    fn = fngen.load(spec_of("y = exp(gather(x, -1, t))", LOGITS_TARGET)).f
    x = _logits(3, 4).detach()
    t = torch.tensor([[1, 1], [0, 3], [2, 2]])
    tangent = torch.randn_like(x)
    _, got = torch.func.jvp(lambda x: fn(x, t), (x,), (tangent,))
    _, want = torch.func.jvp(lambda x: torch.gather(x, -1, t).exp(), (x,), (tangent,))
    torch.testing.assert_close(got, want)
    batched = torch.func.vmap(lambda x: fn(x, t))(torch.stack([x, 2 * x]))
    torch.testing.assert_close(batched[1], fn(2 * x, t))


# -- fngen check --------------------------------------------------------------


def test_check_samples_valid_class_indices():
    spec = spec_of(
        "y = gather(x, -1, t)",
        "      x: tensor\n" "      t: {type: long, classes: 3}\n",
        "    check:\n      shapes: {x: [50, 3], t: [50, 1]}\n",
    )
    fn = spec.functions[0]
    x, t = sample_inputs(fn, torch.float64, torch.device("cpu"), torch.Generator())
    assert t.dtype == torch.int64 and not t.requires_grad
    assert t.min() >= 0 and t.max() <= 2 and len(set(t.flatten().tolist())) == 3
    # Batched checks batch the float inputs; the indices stay as they are.
    _, t2 = sample_inputs(
        fn, torch.float64, torch.device("cpu"), torch.Generator(), batch=(2,)
    )
    assert t2.shape == (50, 1)


def test_the_example_losses_pass_fngen_check():
    report = fngen.check(ROOT / "examples" / "losses.yaml")
    assert report.ok, report.table()


def test_check_fails_a_wrong_gradient_of_a_function_with_indices(monkeypatch):
    # The checks must still differentiate the float input beside the
    # indices: a backward that scatters the gradient wrongly fails them.
    from fngen.printer import TorchPrinter

    def wrong(self, expr):
        grad, dim, index, shape = expr.args
        return f"{self._print(grad)}.new_zeros({self._print(shape)}).scatter_add(-1, {self._print(index)}.flip(0), {self._print(grad)})"

    monkeypatch.setattr(TorchPrinter, "_print_ScatterAdd", wrong)
    spec = spec_of(
        "y = gather(x, -1, t)**2",
        LOGITS_TARGET,
        "    check:\n      shapes: {x: [5, 4], t: [5, 2]}\n",
    )
    report = fngen.check(spec)
    assert not report.ok
    outcomes = report.functions[0].outcomes
    assert outcomes["reference"].ok is False and outcomes["gradcheck"].ok is False


# -- what is refused, located ----------------------------------------------------


@pytest.mark.parametrize(
    "inputs, message",
    [
        (
            "      x: tensor\n      t: long\n",
            "idx.yaml:7:7: error: long input 't' needs 'classes: n' "
            "(fngen check samples it in 0 .. n - 1, as class indices)",
        ),
        (
            "      x: tensor\n      t: {type: long, classes: 0}\n",
            "idx.yaml:7:32: error: classes must be a positive integer",
        ),
        (
            "      x: tensor\n      t: {type: long, classes: 2, domain: [0, 1]}\n",
            "idx.yaml:7:43: error: a long input takes no 'domain' ('classes: n' "
            "says which values fngen check samples: 0 to n - 1)",
        ),
        (
            "      x: tensor\n      t: {type: long, classes: 2, optional: true}\n",
            "idx.yaml:7:45: error: a long input takes no 'optional'",
        ),
        (
            "      x: tensor\n      t: {type: float, classes: 2}\n",
            "idx.yaml:7:33: error: only long inputs take 'classes'",
        ),
        (
            "      x: tensor\n      t: {type: long, classes: 2, param: [3]}\n",
            "idx.yaml:7:42: error: a param must be a float tensor",
        ),
    ],
)
def test_long_inputs_are_declared_with_their_classes(inputs, message):
    assert error("y = gather(x, -1, t)", inputs) == message


@pytest.mark.parametrize(
    "formula, message",
    [
        ("y = gather(x, -1, x)", "4:32: error: gather()'s index must be a long input"),
        (
            "y = gather(x, -1, t + 1)",
            "4:32: error: gather()'s index must be a long input",
        ),
        ("y = gather(x, (0, 1), t)", "4:28: error: gather()'s dim must be one int"),
        (
            "y = gather(x, t)",
            "4:18: error: gather() takes (e, dim, index), positionally",
        ),
        (
            "y = x * one_hot(t, x)",
            "4:33: error: one_hot()'s number of classes must be an int or an int input",
        ),
        ("y = x * one_hot(t, 0)", "4:33: error: one_hot() needs at least one class"),
        (
            "y = x * one_hot(x, 3)",
            "4:30: error: one_hot()'s index must be a long input",
        ),
        (
            "gather = x",
            "4:14: error: 'gather' is a function or constant and cannot be assigned",
        ),
    ],
)
def test_gather_and_one_hot_errors_are_located(formula, message):
    got = error(formula, LOGITS_TARGET)
    assert got.startswith("idx.yaml:" + message), got


def test_a_long_input_has_no_grad_override():
    got = error("y = gather(x, -1, t)", LOGITS_TARGET, "    grad:\n      t: grad\n")
    assert got == (
        "idx.yaml:9:7: error: 't' is not a float tensor input: its gradient is always None"
    )


def test_a_function_of_long_inputs_alone_is_refused():
    got = error("y = one_hot(t, 3)", "      t: {type: long, classes: 3}\n")
    assert got == (
        "idx.yaml:4:14: error: function 'f' has no tensor input "
        "(a long input is not differentiated)"
    )


def test_several_outputs_beside_a_long_input_have_tangents():
    # A regression (found by tests/test_tensor_differential.py): with
    # several outputs the jvp fills absent tangents of the tensor inputs
    # with zeros, and took the long input for one (no tangent: a crash).
    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: |\n      a = x * one_hot(t, 4)\n"
        "      b = abs(x)\n    inputs:\n      x: tensor\n"
        "      t: {type: long, classes: 4}\n    outputs: [a, b]\n"
        "    check:\n      shapes: {x: [3, 4], t: [3]}\n"
    )
    report = fngen.check(parse_spec(text, "idx.yaml"))
    assert report.ok, report.table()


def test_a_zero_tangent_of_the_shape_of_a_long_input_is_float():
    # A regression (tests/test_tensor_differential.py): floor(gather(...))
    # has a zero tangent of the index's shape, made as zeros_like(index):
    # a long tangent, which forward-mode AD refuses.
    fn = fngen.load(
        spec_of(
            "y = floor(gather(x, 0, t))",
            "      x: tensor\n" "      t: {type: long, classes: 3}\n",
        )
    ).f
    x = _logits(3, 4).detach()
    t = torch.randint(3, (2, 4), generator=torch.Generator().manual_seed(0))
    _, tangent = torch.func.jvp(lambda x: fn(x, t), (x,), (torch.ones_like(x),))
    assert tangent.dtype == torch.float64 and tangent.shape == (2, 4)
    assert not tangent.any()
