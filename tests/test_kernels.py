"""The generated Triton kernels, run by Triton's interpreter on CPU tensors
against the torch path of the same spec (``fngen.load(spec)``'s function and
its autograd gradients, in float64 on the same values).

Every function of the repository's specs whose forward and backward are
pointwise, forward and every input gradient, float32 and bfloat16, a size
that is not a multiple of the block, 0-dim and empty tensors, every
combination of needed gradients; every pointwise function of the formula
language, of tensors and of a float argument; then every kernel compiled for
a CUDA GPU (sm_90) by Triton itself, which checks what the interpreter does
not (types, constexpr control flow, libdevice signatures), no GPU needed.

The kernels are defined with ``TRITON_INTERPRET=1`` set only while their
module is imported (`fngen.kernels.load_kernel_module`), so nothing else in
the test session runs under the interpreter.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch

triton = pytest.importorskip("triton")

import fngen  # noqa: E402
from fngen import kernels as K  # noqa: E402
from fngen.derive import derive, derive_backward  # noqa: E402
from fngen.formula import is_condition  # noqa: E402
from fngen.functions import POINTWISE_FUNCTIONS  # noqa: E402
from fngen.schedule import Block  # noqa: E402
from fngen.spec import load_spec, parse_spec  # noqa: E402
from test_differential import SAFE_FORMS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPO_SPECS = [
    "examples/ops.yaml",
    "examples/tensors.yaml",
    "benchmarks/activations.yaml",
    "benchmarks/formulas.yaml",
    "tests/specs/activations.yaml",
]
SCALARS = {"float": 0.7, "int": 3, "bool": True}

# Every pointwise function of the formula language, of tensors x and y; and
# some of a float d scaling a tensor, a part of the program that reads
# numbers alone (0-dim values through libdevice, tl.where of a 0-dim test).
EVERY_FUNCTION = "fngen: 1\nfunctions:\n" + "".join(
    f"  of_{name}:\n    formula: z = {form.format('x', 'y', c='0.5')}\n"
    for name, form in SAFE_FORMS.items()
)
OF_A_SCALAR = (
    "sigmoid",
    "tanh",
    "erfinv",
    "digamma",
    "lgamma",
    "pow",
    "atan2",
    "clamp",
    "where",
)
SCALAR_FUNCTIONS = "fngen: 1\nfunctions:\n" + "".join(
    f"  scalar_{name}:\n"
    f"    formula: z = x * ({SAFE_FORMS[name].format('d', 'd', c='0.5')}) + x\n"
    "    inputs:\n      x: tensor\n      d: {type: float, default: 0.7}\n"
    for name in OF_A_SCALAR
)

# Kernel scalars of each kind, and formula names that the kernel reserves.
SCALARS_AND_NAMES = """\
fngen: 1
functions:
  kinds:
    formula: y = where(flag, x**n, alpha*x) + n*x
    inputs:
      x: tensor
      n: {type: int, default: 3}
      alpha: {type: float, default: 0.1}
      flag: {type: bool, default: true}
  reserved:
    formula: y = mask*offsets + tl*sigmoid(x_ptr)
    inputs:
      mask: tensor
      offsets: tensor
      tl: tensor
      x_ptr: tensor
  constant_where:
    doc: A where of numbers alone, in float64 as well.
    formula: y = x * where(x > 0, 0.1, 0.3)
"""


@functools.lru_cache(maxsize=None)
def _spec(source_or_path: str):
    """(spec, kernel module under the interpreter, {name: (forward, backward)})."""
    if source_or_path.endswith(".yaml"):
        spec = load_spec(ROOT / source_or_path)
    else:
        spec = parse_spec(source_or_path, "kernels.yaml")
    kernels = {}
    for fn in spec.functions:
        try:
            kernels[fn.name] = K.function_kernels(fn)
        except K.NotPointwise:
            pass
    name = f"kernels_{abs(hash(source_or_path))}"
    source = K.module_source(
        [k for pair in kernels.values() for k in pair if k], formatted=False
    )
    return spec, K.load_kernel_module(source, name, interpret=True), kernels


@functools.lru_cache(maxsize=None)
def _torch_path(source_or_path: str):
    spec = _spec(source_or_path)[0]
    return fngen.load(spec, name=f"torch_{abs(hash(source_or_path))}")


def _loaded(source_or_path: str):
    """(spec, torch path module, kernel module, {name: (forward, backward)})."""
    spec, module, kernels = _spec(source_or_path)
    return spec, _torch_path(source_or_path), module, kernels


def _cases(sources):
    for source in sources:
        spec, _, kernels = _spec(source)
        for fn in spec.functions:
            if fn.name in kernels:
                yield pytest.param(source, fn.name, id=f"{Path(source).stem}-{fn.name}")


REPO_CASES = list(_cases(REPO_SPECS))


def _inputs(fn, shape, dtype, seed=0):
    """The inputs by name: tensors in their domain, with values that `dtype`
    holds exactly (as float64, for the reference), and the scalars."""
    generator = torch.Generator().manual_seed(seed)
    values = {}
    for spec in fn.inputs:
        if spec.is_tensor:
            lo, hi = spec.domain
            t = torch.rand(shape, generator=generator, dtype=torch.float64)
            values[spec.name] = (t * (hi - lo) + lo).to(dtype).to(torch.float64)
        else:
            values[spec.name] = (
                spec.default if spec.has_default else SCALARS[spec.kind.value]
            )
    return values


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _reference(ops, fn, values, seed=1):
    """The torch path in float64: its outputs, random incoming gradients (of
    ones for `seed` None) and the input gradients by name (None where the
    formula gives none)."""
    args = [
        values[i.name].clone().requires_grad_() if i.is_tensor else values[i.name]
        for i in fn.inputs
    ]
    outs = _as_tuple(getattr(ops, fn.name)(*args))
    generator = torch.Generator().manual_seed(seed or 0)
    differentiable = [
        (
            o,
            (
                torch.ones_like(o)
                if seed is None
                else torch.randn(o.shape, generator=generator, dtype=torch.float64)
            ),
        )
        for o in outs
        if o.dtype.is_floating_point and o.requires_grad
    ]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    grads = torch.autograd.grad(
        [o for o, _ in differentiable],
        tensors,
        [g for _, g in differentiable],
        allow_unused=True,
    )
    names = [i.name for i in fn.inputs if i.is_tensor]
    return outs, [g for _, g in differentiable], dict(zip(names, grads))


def _assert_close(actual, expected, dtype, what):
    """Within a few roundings of `dtype` of the float64 torch path, relative
    to the largest value (cancellation in a sum costs absolute accuracy)."""
    assert actual.dtype == dtype, what
    assert actual.shape == expected.shape, what
    if expected.numel() == 0:
        return
    finite = expected[torch.isfinite(expected)]
    scale = max(finite.abs().max().item() if finite.numel() else 0.0, 1.0)
    tol = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(
        actual.to(torch.float64),
        expected,
        rtol=tol,
        atol=tol * scale,
        equal_nan=True,
        msg=lambda m: f"{what}: {m}",
    )


def _run(source, name, shape, dtype, combinations=None, kernels=None):
    """Runs `name`'s kernels (`kernels`: a module, forward and backward other
    than the spec's) on inputs of `shape` and `dtype` and checks them against
    the torch path: the outputs, then the gradients for each combination of
    needed ones (all of them, by default)."""
    spec, ops, module, found = _loaded(source)
    fn = next(f for f in spec.functions if f.name == name)
    module, forward, backward = kernels or (module, *found[name])
    values = _inputs(fn, shape, dtype)
    outs, grad_outputs, grads = _reference(ops, fn, values)

    symbols = {fn.symbol(i.name): values[i.name] for i in fn.inputs}
    launch = getattr(module, forward.name)
    args = [
        symbols[a.symbol].to(dtype) if a.kind == "tensor" else symbols[a.symbol]
        for a in forward.args
    ]
    with np.errstate(all="ignore"):  # masked lanes and untaken branches
        results = _as_tuple(launch(*args))
    for out, result, expected in zip(forward.outputs, results, outs):
        _assert_close(result, expected.detach(), dtype, f"{name} {out.symbol}")

    if backward is None:
        # The torch path's gradient of a step: zeros of the input's shape.
        assert all(
            g is None or not torch.count_nonzero(g) for g in grads.values()
        ), name
        return
    d = derive(fn)
    symbols.update(zip(d.outputs, results))
    symbols.update(zip(d.grad_symbols, grad_outputs))
    launch = getattr(module, backward.name)
    args = [
        symbols[a.symbol].to(dtype) if a.kind == "tensor" else symbols[a.symbol]
        for a in backward.args
    ]
    n = len(backward.needs)
    for needs in combinations or [(True,) * n]:
        flags = {f"needs_{g}": need for g, need in zip(backward.needs, needs)}
        with np.errstate(all="ignore"):
            results = launch(*args, **flags)
        assert len(results) == n
        for g, need, result in zip(backward.needs, needs, results):
            if not need:
                assert result is None, (name, g, needs)
            else:
                _assert_close(result, grads[g], dtype, f"{name} grad_{g} {needs}")


def _every_combination(source, name):
    _, _, kernels = _spec(source)
    backward = kernels[name][1]
    n = len(backward.needs) if backward else 0
    return list(itertools.product((False, True), repeat=n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("source, name", REPO_CASES)
def test_kernels_agree_with_the_torch_path(source, name, dtype):
    # 2100 elements: two full blocks of 1024 and a masked one of 52.
    _run(source, name, (3, 700), dtype, _every_combination(source, name))


@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3)], ids=str)
@pytest.mark.parametrize("source, name", REPO_CASES)
def test_zero_dim_and_empty_tensors(source, name, shape):
    _run(source, name, shape, torch.float32, _every_combination(source, name))


@pytest.mark.parametrize(
    "source, name", list(_cases([EVERY_FUNCTION, SCALAR_FUNCTIONS, SCALARS_AND_NAMES]))
)
def test_every_pointwise_function(source, name):
    _run(source, name, (1100,), torch.float32)


def test_every_function_of_the_language_gets_a_kernel():
    _, _, kernels = _spec(EVERY_FUNCTION)
    assert set(kernels) == {f"of_{name}" for name in POINTWISE_FUNCTIONS}
    assert len(_spec(SCALAR_FUNCTIONS)[2]) == len(OF_A_SCALAR)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_scalars_and_constants_in_the_compute_dtype(dtype):
    # float64 stays float64 (a float argument and 0.1 to the last bit);
    # bfloat16 is computed in float32 and stored as bfloat16.
    for name in ("kinds", "constant_where"):
        _run(SCALARS_AND_NAMES, name, (1100,), dtype)


@pytest.mark.parametrize(
    "source, name",
    [
        ("benchmarks/activations.yaml", "mish"),
        ("benchmarks/activations.yaml", "swish"),
        ("tests/specs/activations.yaml", "gelu"),
        ("tests/specs/activations.yaml", "selu"),
        ("tests/specs/activations.yaml", "softplus"),
        ("tests/specs/activations.yaml", "logsigmoid"),
        ("examples/tensors.yaml", "spike"),
    ],
)
def test_the_derivation_without_fused_functions(source, name):
    # Sigmoid, tanh and softplus as they come from the formula, not as
    # PyTorch's fused silu/mish/gelu/elu.
    fn = next(f for f in _spec(source)[0].functions if f.name == name)
    forward, backward = K.function_kernels(fn, derive(fn))
    text = K.module_source([forward, backward], formatted=False)
    module = K.load_kernel_module(text, f"plain_{name}", interpret=True)
    _run(source, name, (1100,), torch.float32, kernels=(module, forward, backward))


@pytest.mark.parametrize("present", [0, 1], ids=["only_grad_s", "only_grad_c"])
def test_a_backward_for_one_output_of_two(present):
    # simple_func has outputs s and c; when only one receives a gradient the
    # torch path derives the backward of that one, and so does the kernel.
    spec, ops, _, _ = _loaded("examples/tensors.yaml")
    fn = next(f for f in spec.functions if f.name == "simple_func")
    full = derive(fn)
    d = derive_backward(fn, frozenset(), frozenset({present}), full.option)
    backward = K.backward_kernel(fn, d)
    module = K.load_kernel_module(
        K.module_source([backward]), f"present_{present}", interpret=True
    )
    x = torch.rand(1100, dtype=torch.float64) * 4 - 2
    grad = torch.randn(1100, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    outs = ops.simple_func(xr)
    (expected,) = torch.autograd.grad(outs[present], xr, grad)
    symbols = {fn.symbol("x"): x, d.grad_symbols[present]: grad}
    assert [a.symbol for a in backward.args if a.symbol not in symbols] == []
    args = [symbols[a.symbol].float() for a in backward.args]
    (result,) = getattr(module, backward.name)(*args)
    _assert_close(result, expected, torch.float32, "simple_func")


LARGE = torch.tensor(
    [-1000.0, -88.0, -50.0, -30.0, -20.5, -20.0, 20.0, 20.5, 30.0, 50.0, 88.0, 100.0]
)


def _undeclared_domains(sources):
    """The functions whose inputs may be any real number."""
    for case in _cases(sources):
        source, name = case.values
        fn = next(f for f in _spec(source)[0].functions if f.name == name)
        if all(i.domain == (-2.0, 2.0) for i in fn.inputs if i.is_tensor):
            yield case


@pytest.mark.parametrize(
    "source, name",
    list(
        _undeclared_domains(
            ["tests/specs/activations.yaml", "benchmarks/activations.yaml"]
        )
    ),
)
def test_float32_finite_at_large_magnitudes(source, name):
    # Where the torch path is finite in float64, the kernel is in float32:
    # the stable forms (softplus's threshold, logsigmoid, sigmoid at its
    # ends) and where's selection (an overflowing untaken branch).
    spec, ops, module, kernels = _loaded(source)
    fn = next(f for f in spec.functions if f.name == name)
    forward, backward = kernels[name]
    values = {i.name: LARGE.double().roll(k) for k, i in enumerate(fn.inputs)}
    outs, grad_outputs, grads = _reference(ops, fn, values, seed=None)
    symbols = {fn.symbol(i.name): values[i.name].float() for i in fn.inputs}
    with np.errstate(all="ignore"):
        ys = _as_tuple(
            getattr(module, forward.name)(*[symbols[a.symbol] for a in forward.args])
        )
    d = derive(fn)
    symbols.update(zip(d.outputs, ys))
    symbols.update(zip(d.grad_symbols, [g.float() for g in grad_outputs]))
    with np.errstate(all="ignore"):
        results = getattr(module, backward.name)(
            *[symbols[a.symbol] for a in backward.args]
        )
    checks = [(y, out.detach()) for y, out in zip(ys, outs)]
    checks += [(r, grads[g]) for g, r in zip(backward.needs, results)]
    for actual, expected in checks:
        finite = torch.isfinite(expected) & (expected.abs() < 3e38)
        assert torch.isfinite(actual[finite]).all(), (name, actual, expected)
        torch.testing.assert_close(
            actual[finite].double(), expected[finite], rtol=1e-5, atol=1e-5
        )


def test_a_zero_branch_stays_zero_where_the_gradient_is_inf():
    # relu's gradient at x < 0 is 0 even for an inf incoming gradient, as
    # PyTorch's threshold_backward: the kernel selects, it does not multiply
    # by a mask.
    _, module, kernels = _spec("tests/specs/activations.yaml")
    _, backward = kernels["relu"]
    x = torch.tensor([-1.0, 2.0, -3.0])
    grad = torch.tensor([float("inf"), 1.0, float("nan")])
    (grad_x,) = getattr(module, backward.name)(grad, x)
    assert grad_x.tolist() == [0.0, 1.0, 0.0]


def test_launchers_refuse_what_the_kernel_cannot_index():
    _, module, _ = _spec("examples/ops.yaml")
    x, y = torch.rand(4, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match="one shape"):
        module.sqrt_and_inverse_forward(x, torch.rand(3))  # a broadcast
    with pytest.raises(ValueError, match="not contiguous"):
        module.sqrt_and_inverse_forward(x.t(), y.t().contiguous())
    with pytest.raises(ValueError, match="torch.float64"):
        module.sqrt_and_inverse_forward(x, y.double())
    with pytest.raises(ValueError, match="torch.int64"):
        module.exp_forward(torch.arange(3))
    assert module._can_launch(x, y) and not module._can_launch(x, y[:, :2])


def test_no_gradient_needed_launches_nothing(monkeypatch):
    _, module, kernels = _spec("examples/ops.yaml")
    _, backward = kernels["sqrt_and_inverse"]

    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("launched")

    monkeypatch.setattr(module, f"{backward.name}_kernel", NoLaunch())
    grads = getattr(module, backward.name)(
        torch.rand(5), torch.rand(5), torch.rand(5), needs_x=False, needs_y=False
    )
    assert grads == (None, None)


def test_the_interpreter_is_not_left_on():
    _spec("examples/ops.yaml")
    assert os.environ.get("TRITON_INTERPRET") != "1"


def test_libdevice_under_the_interpreter():
    # Every function the printer calls through libdevice has a stand-in.
    from fngen.triton_interpret import libdevice
    from fngen.triton_printer import TRITON_BINARY, TRITON_FUNCTIONS

    called = {
        text.split(".")[1]
        for text in [*TRITON_FUNCTIONS.values(), *TRITON_BINARY.values()]
        if text.startswith("libdevice.")
    }
    called |= {"exp", "exp2", "expm1", "log1p", "pow", "trunc", "tan"}
    assert called <= set(vars(libdevice))


# -- compiled for a GPU --------------------------------------------------------
#
# Triton compiles for a CUDA target with no GPU present: the front end (the
# code generator's types, constexpr control flow, libdevice's signatures)
# for every kernel, in about a second; and the whole way to a cubin (LLVM
# and ptxas, some 0.3 s a kernel) for the kernels of examples/ops.yaml.


def _target():
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:  # pragma: no cover - another Triton
        pytest.skip("this Triton has no ASTSource or GPUTarget")
    return ASTSource, GPUTarget("cuda", 90, 32)


@functools.lru_cache(maxsize=None)
def _compiled_module(source_or_path: str):
    """The kernels for the compiler (not the interpreter), and the pairs."""
    _, _, kernels = _spec(source_or_path)
    kernels = [k for pair in kernels.values() for k in pair if k]
    source = K.module_source(kernels, formatted=False)
    name = f"compiled_{abs(hash(source_or_path))}"
    return K.load_kernel_module(source, name, interpret=False), kernels


def _source(module, kernel, dtype="bf16", needs=None):
    """The kernel with the signature and constants a launch would give it:
    tensors of `dtype`, the gradients in `needs` (all by default)."""
    import triton.language as tl

    ASTSource, _ = _target()
    writer = K.KernelWriter(kernel)
    needs = needs if needs is not None else (True,) * len(kernel.needs)
    signature, constants = {}, {}
    for s in kernel.tensors:
        signature[writer.pointers[s]] = f"*{dtype}"
    for out in kernel.outputs:
        pointer = writer.pointers[out.symbol]
        if out.guard is not None and not needs[out.guard]:
            constants[pointer] = None
        else:
            signature[pointer] = "*i1" if out.dtype == "bool" else f"*{dtype}"
    kinds = {"float": "fp64", "int": "i32", "bool": "u1"}
    for a in kernel.scalars:
        signature[writer.names[a.symbol]] = kinds[a.kind]
    signature["n_elements"] = "i32"
    constants["BLOCK_SIZE"] = K.BLOCK_SIZE
    constants["COMPUTE_DTYPE"] = tl.float64 if dtype == "fp64" else tl.float32
    constants.update(zip(writer.flags, needs))
    signature.update({name: "constexpr" for name in constants})
    function = getattr(module, f"{kernel.name}_kernel")
    return ASTSource(function, signature, constants)


def _front_end(source):
    """The kernel through Triton's code generator to TTIR, as
    triton.compile starts (internals of Triton 3.x)."""
    _, target = _target()
    try:
        from triton._C.libtriton import ir
        from triton.compiler.compiler import make_backend
    except ImportError:  # pragma: no cover - another Triton
        pytest.skip("this Triton's compiler stages are not where 3.x has them")
    backend = make_backend(target)
    options = backend.parse_options({})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    try:
        module_map = backend.get_module_map()
        module = source.make_ir(target, options, codegen, module_map, context)
    except (AttributeError, TypeError) as err:
        if "make_ir" in str(err) or "get_module_map" in str(err):
            pytest.skip(f"this Triton's compiler stages differ from 3.x's: {err}")
        raise
    return backend.make_ttir(module, {}, options, target.arch)


ALL_SOURCES = REPO_SPECS + [EVERY_FUNCTION, SCALAR_FUNCTIONS, SCALARS_AND_NAMES]


@pytest.mark.parametrize(
    "source", ALL_SOURCES, ids=lambda s: Path(s).stem if s.endswith(".yaml") else None
)
def test_every_kernel_compiles_for_a_gpu(source):
    module, kernels = _compiled_module(source)
    for kernel in kernels:
        _front_end(_source(module, kernel, "bf16"))
        _front_end(_source(module, kernel, "fp64"))
        if kernel.needs:
            # The first gradient alone: the others' pointers are None.
            only = (True,) + (False,) * (len(kernel.needs) - 1)
            _front_end(_source(module, kernel, "fp32", only))


def _ptx(module, kernel, dtype="fp32", needs=None):
    _, target = _target()
    return triton.compile(_source(module, kernel, dtype, needs), target=target).asm[
        "ptx"
    ]


def test_kernels_compile_to_a_cubin():
    module, kernels = _compiled_module("examples/ops.yaml")
    for kernel in kernels:
        assert ".entry" in _ptx(module, kernel, "bf16")


def test_unneeded_gradients_are_not_compiled():
    module, kernels = _compiled_module("examples/ops.yaml")
    backward = next(k for k in kernels if k.name == "sqrt_and_inverse_backward")
    both = _ptx(module, backward, "fp32", (True, True))
    only_y = _ptx(module, backward, "fp32", (False, True))
    # grad_x reads grad and x, grad_y grad and y: a load and a store fewer,
    # and no square root.
    assert both.count("ld.global") > only_y.count("ld.global")
    assert both.count("st.global") > only_y.count("st.global")
    assert "sqrt.approx" in both and "sqrt.approx" not in only_y
    assert "cvt.f32.bf16" in _ptx(module, backward, "bf16")  # upcast on load
    fp64 = _ptx(module, backward, "fp64")
    assert "sqrt.rn.f64" in fp64 and "div.rn.f64" in fp64  # float64 stays exact


def test_a_bool_output():
    # The interface's bool outputs (a comparison a plan keeps as one).
    x, y = (sp.Symbol(n, real=True) for n in "xy")
    kernel = K.Kernel(
        "positive",
        "y = x > 0.",
        (K.KernelArg(x),),
        (K.KernelOutput(y, None, "bool"),),
        (Block(frozenset(), ((y, x > 0),)),),
    )
    module = K.load_kernel_module(K.module_source([kernel]), "bools", interpret=True)
    values = torch.tensor([-1.0, 0.0, 2.0, float("nan")])
    result = module.positive(values)
    assert result.dtype == torch.bool and result.tolist() == [False, False, True, False]


def test_a_kept_intermediate():
    # The torch path keeps d = input - target of log_cosh_loss for its
    # backward (derive.keep_intermediate): a derivation the kernels take
    # as well, writing kept in the forward and reading it alone after.
    from fngen.derive import keep_intermediate
    from fngen.fuse import fuse_function

    spec, ops, _, _ = _loaded("benchmarks/formulas.yaml")
    fn = next(f for f in spec.functions if f.name == "log_cosh_loss")
    kept = keep_intermediate(fuse_function(fn))
    forward, backward = K.function_kernels(kept, derive(kept))
    assert [o.symbol.name for o in forward.outputs] == ["loss", "kept"]
    assert [a.symbol.name for a in backward.args] == ["grad_loss", "grad_kept", "kept"]
    text = K.module_source([forward, backward], formatted=False)
    module = K.load_kernel_module(text, "kept", interpret=True)
    values = _inputs(fn, (1100,), torch.float32)
    outs, (grad_loss,), grads = _reference(ops, fn, values)
    loss, d = module.log_cosh_loss_forward(
        values["input"].float(), values["target"].float()
    )
    _assert_close(loss, outs[0].detach(), torch.float32, "loss")
    _assert_close(d, values["input"] - values["target"], torch.float32, "kept")
    grad_input, grad_target = module.log_cosh_loss_backward(
        grad_loss.float(), torch.zeros_like(d), d
    )
    _assert_close(grad_input, grads["input"], torch.float32, "grad_input")
    _assert_close(grad_target, grads["target"], torch.float32, "grad_target")


SQUARES = """\
fngen: 1
functions:
  squares:
    formula: y = x/(1 + abs(x*w))**2 + sin(x*w + (1 + x)**2)**3 + x*(2 + sin(0.5))**2
    inputs: {x: tensor, w: tensor}
"""


def test_a_compound_base_of_a_square_is_named_once():
    """`b**2` prints as ``b * b``: a compound `b` gets a line of its own in
    the block that uses it, so the kernel reads like a hand-written one,
    and the kernels still agree with the torch path."""
    spec = parse_spec(SQUARES, "squares.yaml")
    forward, backward = K.function_kernels(spec.functions[0])
    text = K.module_source([forward, backward], formatted=False)
    lines = [line.strip() for line in text.splitlines()]
    # A parenthesized factor times itself: `(b) * (b)`.
    repeated = re.compile(r"(\([^()]*(?:\([^()]*\))*[^()]*\)) \* \1")
    assert not any(repeated.search(line) for line in lines), text
    assert any(re.fullmatch(r"t\d+ = tl\.abs\(t\d+\) \+ 1", line) for line in lines)
    # A constant is never a variable of its own: Triton would make it a
    # float32 scalar, whatever the compute dtype.
    assert not any(re.fullmatch(r"t\d+ = -?[\d.e+-]+", line) for line in lines), text
    _run(SQUARES, "squares", (1100,), torch.float32)
