"""The functional wrapper across PyTorch: the class it applies when traced,
scripted or compiled, complex tensors, autocast of float64 and integer
tensors, the meta device (issue 13, items 8 and 9)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fngen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MULTI = """\
fngen: 1
functions:
  two:
    formula: |
      a = sin(x)
      b = x * x
    outputs: [a, b]
  ste_scaled:
    formula: y = round(x) * w
    inputs:
      x: tensor
      w: tensor
    grad:
      x: grad * w
  gated:
    formula: y = where(x > 0, x, 0) * b * scale + where(flag, steps, 1) * x
    inputs:
      x: tensor
      b: {type: tensor, optional: true}
      scale: {type: float, default: 2.0}
      steps: {type: int, default: 3}
      flag: {type: bool, default: true}
"""


@pytest.fixture(scope="module")
def tensors():
    return fngen.load(EXAMPLES / "tensors.yaml")


@pytest.fixture(scope="module")
def multi():
    return fngen.load(fngen.spec.parse_spec(MULTI))


def _kept_cases(tensors):
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    return {
        "mse_loss": (tensors.mse_loss, (a, b)),
        "huber_loss": (tensors.huber_loss, (a, b)),
        "layer_norm": (tensors.layer_norm, (a,)),
        "rms_norm": (tensors.rms_norm, (a, torch.randn(4))),
    }


class _Call(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, *args):
        return self.function(*args)


# -- traced: only the declared outputs --------------------------------------


@pytest.mark.parametrize("name", ["mse_loss", "huber_loss", "layer_norm", "rms_norm"])
def test_jit_trace_records_only_the_declared_output(tensors, name):
    """The traced graph's output is the loss, not the kept intermediate."""
    function, args = _kept_cases(tensors)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Call(function), args)
    outputs = list(traced.graph.outputs())
    assert len(outputs) == 1
    # The Function node in the graph returns one tensor, not a tuple.
    (node,) = [n for n in traced.graph.nodes() if n.kind() == "prim::PythonOp"]
    assert node.outputsSize() == 1
    assert node.output().type().kind() == "TensorType"
    torch.testing.assert_close(traced(*args), function(*args))
    # Backward through the traced model agrees with eager.
    leaves = [a.clone().requires_grad_() for a in args]
    traced(*leaves).sum().backward()
    eager = [a.clone().requires_grad_() for a in args]
    function(*eager).sum().backward()
    for x, y in zip(leaves, eager):
        torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or importlib.util.find_spec("onnx") is None,
    reason="needs onnx and onnxruntime",
)
@pytest.mark.parametrize("name", ["mse_loss", "huber_loss", "layer_norm", "rms_norm"])
def test_legacy_onnx_export_outputs_the_loss(tensors, name, tmp_path):
    import onnxruntime

    function, args = _kept_cases(tensors)[name]
    path = tmp_path / f"{name}.onnx"
    names = [f"input{i}" for i in range(len(args))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Call(function), args, str(path), dynamo=False, input_names=names
        )
    session = onnxruntime.InferenceSession(str(path))
    (out,) = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
    expected = function(*args)
    assert out.shape == tuple(expected.shape)
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-5, rtol=1e-5)


# -- scripted ---------------------------------------------------------------


def test_jit_script_of_models_using_generated_modules(tensors):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = tensors.Linear(4, 3)
            self.no_bias = tensors.Linear(3, 3, bias=False)
            self.norm = tensors.LayerNorm()
            self.rms = tensors.RmsNorm(3)
            self.spike = tensors.Spike(threshold=0.5)
            self.loss = tensors.MseLoss()

        def forward(self, x, target):
            h = self.rms(self.norm(self.no_bias(self.linear(x))))
            return self.loss(self.spike(h) + h, target)

    model = Model()
    scripted = torch.jit.script(model)
    x, target = torch.randn(5, 4), torch.randn(5, 3)
    torch.testing.assert_close(scripted(x, target), model(x, target))
    scripted(x, target).backward()
    grads = [p.grad.clone() for p in scripted.parameters()]
    model.zero_grad()
    model(x, target).backward()
    for scripted_grad, p in zip(grads, model.parameters()):
        torch.testing.assert_close(scripted_grad, p.grad)


def test_jit_script_of_scalar_and_optional_arguments(multi):
    scripted = torch.jit.script(multi.gated)
    x, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(scripted(x, b), multi.gated(x, b))
    torch.testing.assert_close(scripted(x, None), multi.gated(x, None))


def test_jit_script_of_several_outputs_fails_with_a_clear_message(multi):
    scripted = torch.jit.script(multi.Two())
    with pytest.raises(
        Exception, match="torch.jit.script cannot call two, which returns 2 tensors"
    ):
        scripted(torch.randn(3))


# -- compiled forward-mode AD of a grad: override -----------------------------


def test_compiled_jvp_of_an_override_is_right_or_raises(tensors):
    x, t = torch.randn(6), torch.randn(6)
    eager = torch.func.jvp(tensors.round_ste, (x,), (t,))[1]
    torch.testing.assert_close(eager, t)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda a, u: torch.func.jvp(tensors.round_ste, (a,), (u,))[1],
        backend="aot_eager",
    )
    # The wrapper refuses to be traced in forward mode, and Dynamo runs
    # the frame eagerly: the right tangent, not zeros.
    torch.testing.assert_close(compiled(x, t), t)
    torch._dynamo.reset()
    full = torch.compile(
        lambda a, u: torch.func.jvp(tensors.round_ste, (a,), (u,))[1],
        backend="aot_eager",
        fullgraph=True,
    )
    with pytest.raises(Exception, match="would ignore its grad: override"):
        full(x, t)


def test_compiled_jvp_of_an_override_of_two_inputs(multi):
    x, w = torch.randn(6), torch.randn(6)
    tx, tw = torch.randn(6), torch.randn(6)
    eager = torch.func.jvp(multi.ste_scaled, (x, w), (tx, tw))[1]
    torch.testing.assert_close(eager, tx * w + tw * torch.round(x))
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda *a: torch.func.jvp(multi.ste_scaled, a[:2], a[2:])[1],
        backend="aot_eager",
    )
    torch.testing.assert_close(compiled(x, w, tx, tw), eager)


def test_an_override_still_compiles_in_one_graph(tensors):
    """The forward-mode guard costs no graph break in a plain compile."""
    torch._dynamo.reset()
    x = torch.randn(6, requires_grad=True)
    compiled = torch.compile(
        lambda a: tensors.round_ste(a) * 2, backend="aot_eager", fullgraph=True
    )
    compiled(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


def test_compiled_jvp_without_override_is_the_derivative(tensors):
    x, t = torch.rand(6) + 1.5, torch.randn(6)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda a, u: torch.func.jvp(tensors.sum_sqrt, (a,), (u,))[1],
        backend="aot_eager",
        fullgraph=True,
    )
    torch.testing.assert_close(
        compiled(x, t), torch.func.jvp(tensors.sum_sqrt, (x,), (t,))[1]
    )


# -- complex tensors ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_inputs_are_refused(tensors, multi, dtype):
    z = torch.randn(3, 4, dtype=dtype)
    with pytest.raises(TypeError, match="sum_sqrt is a real function, not for complex"):
        tensors.sum_sqrt(z)
    with pytest.raises(TypeError, match="linear is a real function"):
        tensors.linear(torch.randn(5, 4), z, None)
    with pytest.raises(TypeError, match="linear is a real function"):
        tensors.linear(
            torch.randn(5, 4), torch.randn(3, 4), torch.randn(3, dtype=dtype)
        )
    with pytest.raises(TypeError, match="gated is a real function"):
        multi.gated(torch.randn(3, 4), z)
    # The Module too.
    with pytest.raises(TypeError):
        tensors.LogSoftmax()(z)


# -- autocast: cast what torch.amp casts ---------------------------------------


def test_autocast_keeps_float64_like_the_builtin_loss(tensors):
    a = torch.randn(5, 4, dtype=torch.float64)
    b = a + 1e-9
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = tensors.mse_loss(a, b)
        builtin = F.mse_loss(a, b)
    assert ours.dtype == builtin.dtype == torch.float64
    torch.testing.assert_close(ours, builtin, rtol=1e-6, atol=0)
    assert ours.item() > 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_autocast_keeps_float64_and_integer_matrix_products(tensors, dtype):
    x = torch.randint(-3, 4, (5, 4)).to(dtype)
    w = torch.randint(-3, 4, (3, 4)).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = tensors.linear(x, w)
        builtin = F.linear(x, w)
    assert ours.dtype == builtin.dtype == dtype
    torch.testing.assert_close(ours, builtin)


def test_autocast_still_casts_float32_and_half(tensors):
    x, w = torch.randn(5, 4), torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tensors.linear(x, w).dtype == F.linear(x, w).dtype == torch.bfloat16
        h = x.bfloat16()
        assert tensors.mse_loss(h, h).dtype == F.mse_loss(h, h).dtype == torch.float32


# -- the meta device ------------------------------------------------------------


@pytest.mark.parametrize(
    "make, args",
    [
        (lambda t: t.Linear(4, 3), [(5, 4)]),
        (lambda t: t.MseLoss(), [(5, 4), (5, 4)]),
        (lambda t: t.LayerNorm(), [(5, 4)]),
        (lambda t: t.RmsNorm(4), [(5, 4)]),
        (lambda t: t.LogSoftmax(), [(5, 4)]),
    ],
)
def test_functions_that_handle_autocast_run_on_meta(tensors, make, args):
    module = make(tensors).to("meta")
    inputs = [torch.randn(shape, device="meta") for shape in args]
    out = module(*inputs)
    assert out.device.type == "meta"
    eager = make(tensors)(*[torch.randn(shape) for shape in args])
    assert out.shape == eager.shape
