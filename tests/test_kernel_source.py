"""The kernels `fngen.kernels` makes, as source: which functions get them,
the golden modules, names, guards and the `Kernel` interface.  No Triton
needed: running them is tests/test_kernels.py's."""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

import pytest
import sympy as sp

from fngen import kernels as K
from fngen.derive import derive
from fngen.schedule import Block
from fngen.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import regen_kernel_goldens  # noqa: E402

x, y, t0, grad, grad_x, grad_y = sp.symbols("x y t0 grad grad_x grad_y", real=True)


def _kernels(spec):
    found, refused = {}, {}
    for fn in spec.functions:
        try:
            found[fn.name] = K.function_kernels(fn)
        except K.NotPointwise as err:
            refused[fn.name] = str(err)
    return found, refused


# Every function of the repository's specs gets kernels, except these.
NOT_POINTWISE = {
    "examples/ops.yaml": set(),
    "examples/tensors.yaml": {
        "sum_sqrt",
        "linear",
        "mse_loss",
        "huber_loss",
        "log_softmax",
        "layer_norm",
        "rms_norm",
    },
    "benchmarks/activations.yaml": {"layer_norm"},
    "benchmarks/formulas.yaml": set(),
    "tests/specs/activations.yaml": set(),
}


@pytest.mark.parametrize("path", sorted(NOT_POINTWISE))
def test_which_functions_get_kernels(path):
    spec = load_spec(ROOT / path)
    found, refused = _kernels(spec)
    assert set(refused) == NOT_POINTWISE[path], refused
    assert set(found) | set(refused) == {fn.name for fn in spec.functions}
    for name, reason in refused.items():
        assert "is not pointwise" in reason, (name, reason)


@pytest.mark.parametrize("spec, golden", sorted(regen_kernel_goldens.GOLDENS.items()))
def test_golden_kernel_modules_are_up_to_date(spec, golden):
    expected = (ROOT / golden).read_text(encoding="utf-8")
    generated = regen_kernel_goldens.kernel_module(spec)
    if generated != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), generated.splitlines(True), golden, "now"
            )
        )
        pytest.fail(
            f"{golden} is stale: python scripts/regen_kernel_goldens.py\n{diff}"
        )


def _module(text: str):
    spec = parse_spec(text, "kernels.yaml")
    found, refused = _kernels(spec)
    assert not refused, refused
    kernels = [k for pair in found.values() for k in pair if k]
    return K.module_source(kernels), found


def _function(source: str, name: str) -> str:
    tree = ast.parse(source)
    node = next(n for n in tree.body if getattr(n, "name", None) == name)
    return ast.get_source_segment(source, node)


def test_a_kernel_reads_like_a_hand_written_one():
    source, _ = _module(
        "fngen: 1\nfunctions:\n  gate:\n    formula: y = x*sigmoid(beta*x)\n"
        "    inputs:\n      x: tensor\n      beta: {type: float, default: 1.5}\n"
    )
    assert _function(source, "gate_forward_kernel") == '''\
def gate_forward_kernel(
    x_ptr,
    y_ptr,
    beta: tl.float64,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of gate: y = x*sigmoid(beta*x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    beta = tl.full((), beta, COMPUTE_DTYPE)
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = x / (1 + libdevice.exp(-beta * x))
    tl.store(y_ptr + offsets, y, mask=mask)'''
    assert _function(source, "gate_forward") == '''\
def gate_forward(x, beta):
    """Forward of gate: y = x*sigmoid(beta*x).

    Launches gate_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("gate_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        gate_forward_kernel[grid](
            x,
            y,
            float(beta),
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(x),
        )
    return y'''


def test_each_gradient_and_its_loads_under_its_flag():
    source, _ = _module(
        "fngen: 1\nfunctions:\n  f:\n    formula: z = exp(x)*y + y**2\n"
    )
    body = _function(source, "f_backward_kernel").split('"""')[-1]
    assert body == """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    t0 = libdevice.exp(x)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if NEEDS_X:
        grad_x = grad * t0 * y
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)
    if NEEDS_Y:
        grad_y = grad * (t0 + 2 * y)
        tl.store(grad_y_ptr + offsets, grad_y, mask=mask)""", body
    launcher = _function(source, "f_backward")
    assert "def f_backward(grad, x, y, needs_x=True, needs_y=True):" in launcher
    assert "grad_x = torch.empty_like(grad) if needs_x else None" in launcher
    assert "if n_elements > 0 and (needs_x or needs_y):" in launcher
    assert "NEEDS_X=needs_x," in launcher and "return grad_x, grad_y" in launcher


def test_a_load_under_its_readers_flags():
    # x is read by grad_y's block alone, y by grad_x's; grad by both: always.
    source, _ = _module("fngen: 1\nfunctions:\n  f:\n    formula: z = x*y + y\n")
    body = _function(source, "f_backward_kernel").split('"""')[-1]
    lines = [
        line.strip() for line in body.splitlines() if "tl.load" in line or "if" in line
    ]
    assert lines == [
        "grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)",
        "if NEEDS_X:",
        "y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)",
        "if NEEDS_Y:",
        "x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)",
    ], body


def test_names_the_kernel_reserves_are_renamed():
    source, found = _module(
        "fngen: 1\nfunctions:\n  f:\n    formula: y = mask*offsets + tl*x_ptr + x\n"
    )
    kernel = _function(source, "f_forward_kernel")
    assert (
        "def f_forward_kernel(\n    mask_ptr,\n    offsets_ptr,\n    tl_ptr,\n"
        in kernel
    )
    assert "    x_ptr_ptr,\n    x_ptr_,\n" in kernel  # x's pointer is not x_ptr
    assert "mask_ = tl.load(mask_ptr + offsets, mask=mask)" in kernel
    assert "tl_ = tl.load(tl_ptr + offsets" in kernel
    assert "y = mask_ * offsets_ + tl_ * x_ptr + x" in kernel
    launcher = _function(source, "f_forward")
    assert launcher.startswith("def f_forward(mask_, offsets_, tl_, x_ptr, x):")


def test_a_step_has_no_backward_kernel():
    spec = parse_spec("fngen: 1\nfunctions:\n  f:\n    formula: y = round(x)\n")
    forward, backward = K.function_kernels(spec.functions[0])
    assert forward.name == "f_forward" and backward is None


def test_a_surrogate_gradient_reads_the_scalars():
    spec = load_spec(ROOT / "examples/tensors.yaml")
    fn = next(f for f in spec.functions if f.name == "spike")
    forward, backward = K.function_kernels(fn)
    assert [(a.symbol.name, a.kind) for a in forward.args] == [
        ("v", "tensor"),
        ("threshold", "float"),
    ]
    assert [(a.symbol.name, a.kind) for a in backward.args] == [
        ("grad", "tensor"),
        ("v", "tensor"),
        ("threshold", "float"),
        ("alpha", "float"),
    ]


def test_a_comparison_is_a_bool_output():
    # As the torch path has it: y = x > 0 is a bool output.
    spec = parse_spec("fngen: 1\nfunctions:\n  f:\n    formula: y = x > 0\n")
    forward, _ = K.function_kernels(spec.functions[0])
    assert forward.outputs == (K.KernelOutput(sp.Symbol("y", real=True), dtype="bool"),)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("z = sum(x)", r"not pointwise \(sum\)"),
        ("z = x @ y", r"not pointwise \(matmul\)"),
        ("z = x - mean(x, dim=-1, keepdim=true)", r"not pointwise \(mean\)"),
    ],
)
def test_what_is_not_pointwise_is_refused(text, reason):
    source = f"fngen: 1\nfunctions:\n  f:\n    formula: {text}\n"
    with pytest.raises(K.NotPointwise, match=reason):
        K.function_kernels(parse_spec(source).functions[0])


def test_a_print_error_refuses_the_function():
    # digamma's derivative is trigamma, its second derivative polygamma(2),
    # which no kernel computes: a backward of digamma' cannot be printed.
    fn = parse_spec(
        "fngen: 1\nfunctions:\n  f:\n    formula: y = digamma(x)\n"
    ).functions[0]
    d = derive(fn)
    bad = Block(frozenset({0}), ((grad_x, grad * sp.polygamma(2, x)),))
    with pytest.raises(K.NotPointwise, match="polygamma"):
        K.backward_kernel(fn, d.__class__(**{**d.__dict__, "backward": (bad,)}))


def test_the_fused_functions_are_expanded_and_shared():
    # mish's forward and backward, fused, are computed from one tanh(softplus(x)).
    spec = load_spec(ROOT / "benchmarks/activations.yaml")
    fn = next(f for f in spec.functions if f.name == "mish")
    _, backward = K.function_kernels(fn)
    (shared,), (gradient,) = [b.assignments for b in backward.program]
    assert shared[0].name == "t0" and "tanh" in str(shared[1])
    assert gradient[0].name == "grad_x" and "tanh" not in str(gradient[1])


# The Kernel interface: its invariants ---------------------------------------


def _kernel(**changes):
    fields = dict(
        name="k",
        doc="A kernel.",
        args=(K.KernelArg(x), K.KernelArg(grad)),
        outputs=(K.KernelOutput(grad_x, 0),),
        program=(Block(frozenset({0}), ((grad_x, grad * x),)),),
        needs=("x",),
    )
    fields.update(changes)
    return K.Kernel(**fields)


def test_a_valid_kernel():
    assert _kernel().tensors == (x, grad)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "not a name"}, "not an identifier"),
        ({"args": (K.KernelArg(x, "float"),)}, "needs a tensor argument"),
        ({"outputs": ()}, "needs an output"),
        ({"outputs": (K.KernelOutput(y),)}, "output y is not assigned"),
        ({"outputs": (K.KernelOutput(grad_x),)}, "stored under set()"),
        ({"needs": ()}, "has no flag"),
        ({"args": (K.KernelArg(x),)}, "reads unknown grad"),
        (
            {"program": (Block(frozenset({0}), ((x, grad),)),)},
            "x is assigned twice",
        ),
    ],
)
def test_kernel_invariants(changes, message):
    with pytest.raises(ValueError, match=message):
        _kernel(**changes)


def test_argument_kinds():
    with pytest.raises(ValueError, match="is not one of"):
        K.KernelArg(x, "complex")


def test_output_dtype_is_like_or_bool():
    with pytest.raises(ValueError, match="'like' or 'bool'"):
        K.KernelOutput(y, None, "float16")


def test_one_gradient_loads_under_its_flag():
    source, _ = _module("fngen: 1\nfunctions:\n  f:\n    formula: y = exp(x)\n")
    body = _function(source, "f_backward_kernel").split('"""')[-1]
    assert body.endswith("""
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * y
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)"""), body
