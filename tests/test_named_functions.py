"""Named functions users reach for first (issue 17): silu, mish, gelu,
gelu_tanh and heaviside(x, v), each against PyTorch's own function, and
the written form fngen points to for a name it does not have."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import fngen
from fngen.errors import SpecError
from fngen.spec import parse_spec
from float32_bar import LARGE

NAMED = {
    "silu": nnf.silu,
    "mish": nnf.mish,
    "gelu": nnf.gelu,
    "gelu_tanh": lambda x: nnf.gelu(x, approximate="tanh"),
}


def one(formula: str, inputs: str = ""):
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n{inputs}"
    return fngen.load(parse_spec(text, "named.yaml")).f


def source(formula: str) -> str:
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n"
    return fngen.generate(parse_spec(text, "named.yaml"))


@pytest.mark.parametrize("name", list(NAMED))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_named_activation_agrees_with_torch(name, dtype):
    function = one(f"y = {name}(x)")
    values = LARGE + [-3.0, -0.5, -1e-8, 1e-8, 0.5, 3.0]
    x = torch.tensor(values, dtype=dtype, requires_grad=True)
    got = function(x)
    (grad,) = torch.autograd.grad(got.sum(), x)
    want = NAMED[name](x)
    (want_grad,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, want_grad)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(NAMED))
def test_a_named_activation_is_pytorchs_fused_kernel(name):
    text = source(f"y = {name}(x)")
    kernel = {"silu": "silu", "mish": "_mish", "gelu": "gelu", "gelu_tanh": "gelu"}
    assert f"{kernel[name]}(x" in text


@pytest.mark.parametrize("name", list(NAMED))
def test_a_named_activation_passes_gradgradcheck(name):
    function = one(f"y = {name}(x)")
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_heaviside_with_a_value_at_zero_is_torch_heaviside(value):
    function = one(f"y = heaviside(x, {value})")
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], dtype=torch.float64)
    want = torch.heaviside(x, torch.tensor(value, dtype=torch.float64))
    torch.testing.assert_close(function(x), want)


def test_heaviside_of_a_tensor_value_has_its_gradient_at_zero():
    function = one("y = heaviside(x, v)")
    x = torch.tensor([-1.0, 0.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([0.3, 0.7, 0.1, 0.2], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(function(x, v), torch.heaviside(x, v))
    gx, gv = torch.autograd.grad(function(x, v).sum(), (x, v))
    torch.testing.assert_close(gx, torch.zeros_like(x))
    torch.testing.assert_close(gv, (x == 0).double())


def test_a_spiking_step_with_a_surrogate_gradient():
    """spikingjelly's step is 1 at 0; the surrogate is its ATan gradient."""
    function = one("spike = heaviside(x, 1)\n    grad:\n      x: grad/(1 + (pi*x)**2)")
    x = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    assert function(x).tolist() == [0.0, 1.0, 1.0]
    (g,) = torch.autograd.grad(function(x).sum(), x)
    torch.testing.assert_close(g, 1 / (1 + (torch.pi * x.detach()) ** 2))


def _error(formula: str) -> str:
    text = f"fngen: 1\nfunctions:\n  f:\n    formula: {formula}\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, "named.yaml")
    return str(info.value)


def test_heaviside_takes_one_or_two_arguments():
    assert _error("y = heaviside(x, 1, 2)") == (
        "named.yaml:4:18: error: heaviside() takes 1 or 2 arguments, got 3"
    )
    assert "sin() takes 1 argument, got 2" in _error("y = sin(x, 1)")


def test_a_name_fngen_lacks_points_to_its_written_form():
    assert _error("y = softplus2(x)") == (
        "named.yaml:4:18: error: unknown function 'softplus2' "
        "(did you mean 'softplus'?)"
    )
    assert _error("y = leaky_relu(x)") == (
        "named.yaml:4:18: error: unknown function 'leaky_relu' (write it out: "
        "leaky_relu(...) is where(x > 0, x, slope*x))"
    )


# -- inputs an API takes and the formula ignores ------------------------------

UNUSED = """\
fngen: 1
functions:
  super_spike:
    formula: spike = heaviside(x)
    inputs:
      x: tensor
      alpha: float
      beta: tensor
    grad:
      x: grad/(100*abs(x) + 1)**2
  lin:
    formula: y = 2*x
    inputs: {x: tensor, w: {param: [3]}}
"""


def test_an_unused_input_is_accepted_with_a_none_gradient():
    spec = parse_spec(UNUSED, "unused.yaml")
    assert [w.location.line for w in spec.warnings] == [7, 8, 13]
    module = fngen.load(spec)
    x = torch.tensor([-0.5, 0.25], dtype=torch.float64, requires_grad=True)
    beta = torch.ones(2, dtype=torch.float64, requires_grad=True)
    spike = module.super_spike(x, 2.0, beta)
    assert spike.tolist() == [0.0, 1.0]
    gx, gb = torch.autograd.grad(spike.sum(), (x, beta), allow_unused=True)
    torch.testing.assert_close(gx, 1 / (100 * x.detach().abs() + 1) ** 2)
    assert gb is None
    layer = module.Lin()
    assert [name for name, _ in layer.named_parameters()] == ["w"]
    torch.testing.assert_close(layer(x), 2 * x)


def test_the_cli_warns_of_an_unused_input_and_the_library_does_not(tmp_path, capfd):
    from click.testing import CliRunner

    from fngen.cli import main

    path = tmp_path / "unused.yaml"
    path.write_text(UNUSED)
    fngen.build(path, tmp_path / "lib.py")
    assert capfd.readouterr().err == ""
    result = CliRunner().invoke(
        main, ["build", str(path), "-o", str(tmp_path / "o.py")]
    )
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"{path}:7:7: warning: input 'alpha' is not used by the formula "
        "(it is accepted and ignored; its gradient is None)",
        f"{path}:8:7: warning: input 'beta' is not used by the formula "
        "(it is accepted and ignored; its gradient is None)",
        f"{path}:13:25: warning: input 'w' is not used by the formula "
        "(it is accepted and ignored; its gradient is None)",
    ]


# -- softmax, log_softmax, logsumexp -----------------------------------------

NORMALIZED = {
    "softmax(x, dim=-1)": lambda x: torch.softmax(x, dim=-1),
    "log_softmax(x, dim=0)": lambda x: torch.log_softmax(x, dim=0),
    "logsumexp(x, dim=-1)": lambda x: torch.logsumexp(x, dim=-1),
    "logsumexp(x, dim=(0, 1), keepdim=true)": lambda x: torch.logsumexp(
        x, dim=(0, 1), keepdim=True
    ),
    "log_softmax(2*x, dim=1)*x": lambda x: torch.log_softmax(2 * x, dim=1) * x,
}


@pytest.mark.parametrize("formula", list(NORMALIZED))
@pytest.mark.parametrize("scale", [1.0, 100.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_softmax_family_agrees_with_torch(formula, scale, dtype):
    function = one(f"y = {formula}")
    generator = torch.Generator().manual_seed(3)
    x = (scale * torch.randn(4, 6, generator=generator, dtype=torch.float64)).to(dtype)
    x.requires_grad_()
    seed = torch.randn(NORMALIZED[formula](x).shape, generator=generator).to(dtype)
    got = function(x)
    want = NORMALIZED[formula](x)
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(got, x, seed)
    (want_grad,) = torch.autograd.grad(want, x, seed)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, want_grad)
    if dtype == torch.float64 and scale == 1.0:
        assert torch.autograd.gradcheck(
            function, (x[:2, :3].detach().requires_grad_(),)
        )
        assert torch.autograd.gradgradcheck(
            function, (x[:2, :3].detach().requires_grad_(),)
        )


def test_softmax_saves_only_its_output():
    text = source("y = softmax(x, dim=-1)")
    assert "ctx.save_for_backward(y)" in text


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_is_pytorchs_fused_kernel(name):
    text = source(f"y = {name}(x, dim=1)")
    forward = text.split("def forward")[1].split("def setup_context")[0]
    assert f"y = torch.{name}(x, dim=1)" in forward
    assert "logsumexp" not in text and "ctx.save_for_backward(y)" in text
    # Inside a formula, with an optional tensor that may be absent.
    inputs = "    inputs: {x: tensor, b: {optional: true}}\n"
    function = one(f"y = {name}(x + b, dim=0) * x", inputs)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(function, (x, b))
    torch.autograd.gradcheck(function, (x, None))
    torch.autograd.gradgradcheck(function, (x, b))


def test_softmax_family_errors():
    assert "logsumexp() needs dim=" in _error("y = logsumexp(x)")
    assert "softmax() takes an expression and one dim=, as torch.softmax" in _error(
        "y = softmax(x, dim=(0, 1))"
    )
    assert "is a function or constant" in _error("softmax = x*2")


# -- amax and amin: PyTorch's split of the gradient among ties ---------------

EXTREMA = {
    "amax(x, dim=-1)": lambda x: torch.amax(x, dim=-1),
    "amin(x, dim=0, keepdim=true)": lambda x: torch.amin(x, dim=0, keepdim=True),
    "amax(x)": lambda x: torch.amax(x),
    "amax(x, dim=(0, 1))*x": lambda x: torch.amax(x, dim=(0, 1)) * x,
    "amin(2*x, dim=1) + 1": lambda x: torch.amin(2 * x, dim=1) + 1,
}


@pytest.mark.parametrize("formula", list(EXTREMA))
def test_amax_and_amin_split_the_gradient_among_ties_as_torch(formula):
    function = one(f"y = {formula}")
    # Rows with two-way and three-way ties, and rows without.
    x = torch.tensor(
        [[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, -1.0], [0.0, -4.0, 1.0, -4.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    want = EXTREMA[formula](x)
    got = function(x)
    torch.testing.assert_close(got, want)
    seed = torch.randn(want.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(got, x, seed)
    (want_grad,) = torch.autograd.grad(want, x, seed)
    torch.testing.assert_close(grad, want_grad)
    # The jvp: torch.func.jvp of torch's own amax splits the tangent too.
    tangent = torch.randn_like(x)
    _, got_t = torch.func.jvp(function, (x.detach(),), (tangent,))
    _, want_t = torch.func.jvp(EXTREMA[formula], (x.detach(),), (tangent,))
    torch.testing.assert_close(got_t, want_t)


def test_amax_passes_gradcheck_without_ties():
    function = one("y = amax(x*x, dim=1)")
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))


@pytest.mark.parametrize(
    "formula, want",
    [
        # Found by the long fuzz run: silu of a where of pi was a kernel
        # call on a constant, with no value to print...
        (
            "out = (silu((x > 0.5) * (pi)) > 0.5) * (0.5) + x",
            lambda x: (nnf.silu((x > 0.5) * torch.pi) > 0.5) * 0.5 + x,
        ),
        # ... and gelu of a where with a 0 branch was divided by that where
        # (1/0), named or written out.
        ("out = gelu((x > 0.5) * (0.5)) + x", lambda x: nnf.gelu((x > 0.5) * 0.5) + x),
        (
            "u = where(x > 0.5, 0.5, 0); out = u*(1 + erf(u/sqrt(2)))/2 + x",
            lambda x: nnf.gelu(torch.where(x > 0.5, 0.5, 0.0)) + x,
        ),
    ],
)
def test_a_named_activation_of_a_where_of_constants(formula, want):
    function = one(formula)
    x = torch.linspace(-1, 2, 13, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(function(x), want(x).double())
    (g,) = torch.autograd.grad(function(x).sum(), x)
    torch.testing.assert_close(g, torch.ones_like(x))
