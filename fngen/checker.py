"""`fngen check`: prove the generated gradients right.

For each function: build the module in memory, sample inputs from each
declared domain on the chosen device, and run

* ``reference``       forward and every gradient (a ``grad:`` override
                      evaluated as written) against plain torch autograd
                      on the same formula, an independent interpreter; at
                      the ends of each domain, and at large magnitudes on
                      the default one, finite wherever the reference is,
* ``gradcheck``       `torch.autograd.gradcheck` (float64),
* ``double_backward`` `torch.autograd.gradgradcheck` (float64); for an
                      override that reads an output, against autograd of
                      the override,
* ``forward_ad``      gradcheck of the jvp, with batched tangents; for an
                      override, the jvp against the overridden backward,
* ``batched``         batched gradients (``is_grads_batched=True``,
                      ``vmap`` of ``torch.func.vjp``, ``jacobian(...,
                      vectorize=True)`` in forward mode, ``jacfwd`` under
                      ``no_grad``) against one gradient at a time,
* ``vmap``            `torch.func.vmap` against a loop, ``torch.func.grad``
                      and ``jacrev`` against autograd,
* ``compile``         `torch.compile(fullgraph=True)` against eager,
* ``float32``         a float32 run: close to float64 on the samples, and
                      finite wherever the float64 reference is (and fits a
                      float32) at the ends of each domain and large
                      magnitudes.

Before them, the formula itself must be finite on the sampled domain: a
NaN or inf there is reported as a domain problem, with the subexpression
and the input to narrow, and the other checks are skipped.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import warnings
from dataclasses import dataclass, field

from fngen.errors import DeviceError
from fngen.importing import load
from fngen.derive import grad_symbols, nonlinear_overrides
from fngen.formula import is_condition
from fngen.model import DEFAULT_DOMAIN, FunctionSpec, InputKind, Spec
from fngen.spec import CHECK_NAMES, EXPORT_CHECKS, KERNEL_CHECKS

FLOAT64_TOL = dict(rtol=1e-7, atol=1e-9)
FLOAT32_TOL = dict(rtol=2e-3, atol=2e-4)
# A Triton kernel computes in float32 and rounds once to its dtype, against
# the torch code in float64; atol is relative to the largest value (see
# `_scaled`): cancellation in a sum costs absolute accuracy.
KERNEL_TOL = {
    "float32": dict(rtol=1e-4, atol=1e-5),
    "bfloat16": dict(rtol=1.6e-2, atol=1e-2),
}
DEFAULT_SCALARS = {InputKind.FLOAT: 1.5, InputKind.INT: 2, InputKind.BOOL: True}
DEFAULT_SIZE = 3
# Where an input on the default domain is also probed (each sign), in the
# order tried: exp(x) overflows in float32 past 89, exp(-x/2) past 177, a
# square past 1.8e19; one overflowing where float64 does not is a NaN's
# usual way in (inf - inf, 0 * inf).
LARGE_MAGNITUDES = (5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 1e3, 1e4)
SPECIAL_VALUES = (0.0, 1.0)
# Gradients computed at once by the `batched` check.
BATCH = 3
FINITE_DIFFERENCE_STEP = 1e-6


class UnknownFunctionError(KeyError):
    """A function named in ``only`` is not in the spec."""

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_functions_message(unknown, known, where: str) -> str:
    """``no function named 'mihs' (did you mean 'mish'?) in ops.yaml``: the
    words of `fngen check --only` and `fngen bench --only` alike."""
    clauses = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        clauses.append(repr(name) + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"no function named {' or '.join(clauses)} in {where}"


@dataclass
class Outcome:
    ok: bool | None  # None: skipped
    reason: str = ""


@dataclass
class FunctionReport:
    name: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok is not False for o in self.outcomes.values())


@dataclass
class Report:
    device: str
    dtype: str
    functions: list[FunctionReport]
    # The checks run: CHECK_NAMES, `export` for ``export: custom_op``, and
    # `kernel` for ``kernels: triton``.
    columns: tuple[str, ...] = CHECK_NAMES

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.functions)

    def table(self) -> str:
        """One row per function and a column per check; reasons below."""
        marks = {True: "✓", False: "✗", None: "-"}
        width = max([len("function")] + [len(f.name) for f in self.functions])
        header = "function".ljust(width) + "  " + "  ".join(self.columns)
        lines = [f"fngen check on {self.device} ({self.dtype})", header]
        for f in self.functions:
            cells = [
                marks[f.outcomes[c].ok if c in f.outcomes else None].center(len(c))
                for c in self.columns
            ]
            lines.append(f.name.ljust(width) + "  " + "  ".join(cells).rstrip())
        notes = []
        for f in self.functions:
            for name, outcome in f.outcomes.items():
                if outcome.ok is not True and outcome.reason:
                    mark = "skipped" if outcome.ok is None else "FAILED"
                    notes.append(f"  {f.name} {name} {mark}: {outcome.reason}")
        if notes:
            lines += [""] + notes
        passed = sum(f.ok for f in self.functions)
        lines += ["", f"{passed} passed, {len(self.functions) - passed} failed"]
        return "\n".join(lines)


def resolve_device(device: str):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device '{device}': {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{device}' is not available: torch.cuda.is_available() is False"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device '{device}' is not available: {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"device '{device}' is not available")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device '{device}'")
    return dev


def _differentiable(value) -> bool:
    """Whether an argument is a tensor the checks differentiate: a float
    one, not a long tensor of class indices (passed as it is, like a
    scalar)."""
    import torch

    return torch.is_tensor(value) and value.is_floating_point()


def sample_inputs(
    fn: FunctionSpec, dtype, device, generator, batch: tuple[int, ...] = ()
):
    """Inputs for `fn`: tensors uniform in their domain, scalars their default."""
    import torch

    shapes = dict(fn.check.shapes)
    args = []
    for spec in fn.inputs:
        if not spec.is_tensor:
            args.append(
                spec.default if spec.has_default else DEFAULT_SCALARS[spec.kind]
            )
            continue
        if spec.name in shapes:
            shape = shapes[spec.name]
        elif spec.param is not None:
            shape = tuple(d if isinstance(d, int) else DEFAULT_SIZE for d in spec.param)
        else:
            shape = (3, 4)
        if not spec.is_differentiable:
            # Class indices, the same in every batch element (vmap's
            # in_dims None).
            args.append(
                torch.randint(
                    spec.classes, tuple(shape), generator=generator, device="cpu"
                ).to(device)
            )
            continue
        lo, hi = spec.domain
        value = torch.rand(
            batch + tuple(shape), generator=generator, dtype=torch.float64
        )
        value = (value * (hi - lo) + lo).to(dtype=dtype, device=device)
        args.append(value.requires_grad_())
    return args


# -- comparisons, in whole sentences -----------------------------------------


def _number(value: float) -> str:
    return f"{value:.6g}"


def _index(flat: int, shape) -> str:
    """The index of element `flat` of a tensor of `shape`, as ``[1, 2]``."""
    index = []
    for size in reversed(tuple(shape)):
        index.append(flat % size)
        flat //= size
    return "[" + ", ".join(str(i) for i in reversed(index)) + "]"


def _compare(
    actual,
    expected,
    tol,
    what: str,
    other: str = "the reference",
    label: str | None = None,
    values=None,
) -> str | None:
    """None where `actual` is close to `expected`, else a sentence: the
    element that is NaN or inf where `other` is finite, or the largest
    difference, where it is (``label[i, j] = v`` when `values` holds what
    the index points at) and the two values."""
    import torch

    if actual is None and expected is None:
        return None
    if actual is None or expected is None:
        zero = expected if actual is None else actual
        if torch.count_nonzero(zero) == 0:
            return None
        side = "None" if actual is None else "not None"
        return f"{what} is {side}, and {other} is not zero where the other is None"
    if actual.shape != expected.shape:
        return (
            f"{what} has shape {tuple(actual.shape)}, {other} "
            f"{tuple(expected.shape)}"
        )
    actual = actual.detach().to(expected.dtype)
    expected = expected.detach()
    if torch.allclose(actual, expected, equal_nan=True, **tol):
        return None

    def where(flat: int) -> str:
        text = _index(flat, actual.shape) if actual.dim() else ""
        if values is not None and tuple(values.shape) == tuple(actual.shape):
            value = values.detach().reshape(-1)[flat].item()
            return f"at {label}{text} = {_number(value)}"
        return f"at {text}" if text else ""

    a, e = actual.reshape(-1), expected.reshape(-1)
    # Where the reference is NaN it holds no value (autograd of a `where`
    # whose untaken branch is NaN): nothing to compare with there.
    known = ~torch.isnan(e)
    if torch.allclose(a[known], e[known], equal_nan=True, **tol):
        return None
    broken = _first_broken(a, e)
    if broken:
        flat, kind = broken
        return (
            f"{what} is {kind} {where(flat)}, where {other} is "
            f"{_number(e[flat].item())}"
        ).replace("  ", " ")
    excess = (a - e).abs() - (tol["atol"] + tol["rtol"] * e.abs())
    excess = excess.nan_to_num(nan=float("inf")).masked_fill(~known, -float("inf"))
    flat = int(torch.argmax(excess))
    difference = (a[flat] - e[flat]).abs().item()
    return (
        f"{what} differs from {other} by {_number(difference)} {where(flat)}: "
        f"{_number(a[flat].item())} against {_number(e[flat].item())} "
        f"(rtol {tol['rtol']:g}, atol {tol['atol']:g})"
    ).replace("  ", " ")


def _first_broken(actual, expected, where=True):
    """The first element (flat index, "NaN" or "inf") that is not finite
    in `actual` where `expected` is finite (and `where`); None if none."""
    import torch

    broken = ~torch.isfinite(actual) & torch.isfinite(expected) & where
    if not broken.any():
        return None
    flat = int(torch.nonzero(broken)[0])
    return flat, "NaN" if torch.isnan(actual[flat]) else "inf"


def _outputs(value):
    return value if isinstance(value, tuple) else (value,)


def _as_in_its_dtype(kernel, wide, same, tol):
    """`wide` (the torch code in float64) where the kernel differs from it,
    and the kernel's own value where it is what the torch code gives in the
    kernel's dtype (`same`): a step whose argument rounds across its
    threshold in that dtype.  A NaN is never taken so."""
    import torch

    tol = _scaled(tol, wide)
    close = torch.isclose(
        kernel.double(), same.double(), rtol=tol["rtol"], atol=tol["atol"]
    )
    return torch.where(close, kernel.double(), wide)


def _scaled(tol: dict, expected) -> dict:
    """`tol` with its atol relative to the largest finite value of
    `expected` (at least 1)."""
    import torch

    if expected is None or not expected.is_floating_point() or not expected.numel():
        return tol
    finite = expected.detach()[torch.isfinite(expected.detach())]
    scale = max(finite.abs().max().item() if finite.numel() else 0.0, 1.0)
    return dict(tol, atol=tol["atol"] * scale)


def _floating(value):
    """The floating point outputs of `value`, a tensor or a tuple of them."""
    return tuple(o for o in _outputs(value) if o.is_floating_point())


def _leaves(tensors):
    return [t.detach().requires_grad_() for t in tensors]


def _single(outputs):
    return outputs[0] if len(outputs) == 1 else outputs


# -- where a formula is not defined ----------------------------------------


def _natural_domain(expr, nan: bool) -> str:
    """Where `expr`, a call of a function with a restricted domain, is NaN
    (`nan`) or infinite: ``for x < 0``, ``at x = 0``; "" when unknown."""
    import sympy as sp
    from sympy.codegen.cfunctions import log1p, log2, log10

    from fngen import functions as F
    from fngen.printer import math_text

    if isinstance(expr, sp.Pow):
        base, exponent = expr.args
        u = math_text(base)
        if exponent.is_number and not exponent.is_integer and nan:
            return f"for {u} < 0"
        if exponent.is_number and exponent.is_negative and not nan:
            return f"at {u} = 0"
        return ""
    if not expr.args:
        return ""
    u = math_text(expr.args[0])
    cls = type(expr)
    if cls in (sp.log, log2, log10):
        return f"for {u} < 0" if nan else f"at {u} = 0"
    if cls is log1p:
        return f"for {u} < -1" if nan else f"at {u} = -1"
    if cls in (sp.asin, sp.acos):
        return f"for |{u}| > 1" if nan else ""
    if cls in (sp.atanh, sp.erfinv):
        return f"for |{u}| > 1" if nan else f"at {u} = -1 and 1"
    if cls is sp.acosh:
        return f"for {u} < 1" if nan else ""
    if cls in (F.LogGamma, sp.loggamma, sp.polygamma) and not nan:
        return f"at {u} = 0, -1, -2, ..."
    return ""


def _culprit(interpret, expr):
    """The innermost subexpression of `expr` that is NaN or inf somewhere
    while its arguments are finite, with its value; None if `expr` is
    finite.  A `where` counts as one: a NaN in a branch it does not take is
    no problem of the formula's."""
    import sympy as sp
    import torch

    if not isinstance(expr, (sp.Piecewise, sp.logic.boolalg.ITE)):
        for arg in expr.args:
            if isinstance(arg, sp.Expr) and not arg.is_number:
                found = _culprit(interpret, arg)
                if found is not None:
                    return found
    if not isinstance(expr, sp.Expr):
        return None
    value = interpret(expr)
    if (
        torch.is_tensor(value)
        and value.is_floating_point()
        and not torch.isfinite(value).all()
    ):
        return expr, value
    return None


# -- the checks -----------------------------------------------------------------


def probe_values(spec) -> list[float]:
    """The values an input is probed at: the ends of its domain, and on
    the default domain large magnitudes too."""
    lo, hi = spec.domain
    values = [lo, hi]
    # Where formulas most often have a removable singularity: a base
    # that is 0 there ((1 - exp(x))**g, x*log(x)) divided out.
    values += [v for v in SPECIAL_VALUES if lo < v < hi]
    if spec.domain == DEFAULT_DOMAIN:
        values += [sign * m for m in LARGE_MAGNITUDES for sign in (1.0, -1.0)]
    return values


def _each_alone(names, seeds):
    """("", `seeds`), then, with several outputs that take a gradient,
    for each (", with only NAME receiving a gradient", the seeds with only
    that output's left)."""
    yield "", seeds
    taking = [i for i, s in enumerate(seeds) if s is not None]
    if len(taking) > 1:
        for i in taking:
            only = [s if j == i else None for j, s in enumerate(seeds)]
            yield f", with only {names[i]} receiving a gradient", only


def broadcast_inputs(fn: FunctionSpec, args) -> list[tuple[str, list]]:
    """For a function of several float tensors, the inputs with each of
    them in turn one row of what it was (its last dimension only), then
    with each in turn the only one left whole: a gradient must be summed
    back over the rows its input was broadcast to, which inputs of one
    shape never test.  Params and the inputs that ``check: shapes`` sizes
    keep theirs."""
    given = dict(fn.check.shapes)
    floats = [
        n
        for n, spec in enumerate(fn.inputs)
        if spec.is_differentiable
        and not spec.is_param
        and spec.name not in given
        and args[n] is not None
        and args[n].dim() >= 2
    ]
    if len(floats) < 2:
        return []

    def row(value):
        return value.detach()[(0,) * (value.dim() - 1)].clone().requires_grad_()

    groups = [[n] for n in floats]
    if len(floats) > 2:
        groups += [[m for m in floats if m != n] for n in floats]
    cases = []
    for group in groups:
        narrowed = [row(a) if n in group else a for n, a in enumerate(args)]
        names = " and ".join(fn.inputs[n].name for n in group)
        cases.append((names, narrowed))
    return cases


def _against_reference_by_subset(checker, args, seeds) -> str | None:
    """`checker`'s comparison with the reference for all outputs with a
    gradient, then for each subset of them: a backward has a branch for
    each, reading only the gradients it receives."""
    floating = [i for i, s in enumerate(seeds) if s is not None]
    subsets = [tuple(floating)]
    if len(floating) > 1:
        sizes = range(1, len(floating)) if len(floating) <= 3 else [1]
        subsets += [c for n in sizes for c in itertools.combinations(floating, n)]
    for subset in subsets:
        chosen = [s if i in subset else None for i, s in enumerate(seeds)]
        try:
            problem = checker._against_reference(args, chosen)
        except Exception as err:  # a backward branch that crashes
            problem = _reason(err)
        if problem:
            if subset != tuple(floating):
                names = checker.output_names()
                only = " and ".join(names[i] for i in subset)
                problem = f"with a gradient for {only} alone: {problem}"
            return problem
    return None


def _narrow_values(checker, args, seeds) -> str | None:
    """The first operation of `checker`'s function, forward or backward,
    that computes a floating tensor narrower than the dtype under check
    (``torch.where(mask, 1/3, 0)`` is float32, whatever its neighbours):
    its error is under the float64 tolerance, so the comparison with the
    reference does not see it.  The 0-dim tensors torch wraps Python
    numbers in are no values of their own."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    bits = torch.finfo(checker.dtype).bits
    found = []

    class Narrow(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is not torch.ops.aten.scalar_tensor.default and not found:
                for value in torch.utils._pytree.tree_leaves(out):
                    if (
                        torch.is_tensor(value)
                        and value.is_floating_point()
                        and torch.finfo(value.dtype).bits < bits
                    ):
                        found.append(f"{func} in {str(value.dtype)[6:]}")
            return out

    with Narrow():
        outputs = _outputs(checker.func(*args))
    where = "forward"
    if not found:
        with Narrow():
            checker.grads(lambda *a: outputs, args, seeds)
        where = "backward"
    if not found:
        return None
    return (
        f"the {where} computes {found[0]} for {str(checker.dtype)[6:]} inputs, "
        "losing precision (a tensor of Python numbers alone has the default dtype)"
    )


class FunctionChecker:
    def __init__(
        self, fn: FunctionSpec, module, device, dtype, namespace=None, kernels="none"
    ):
        import torch

        self.torch = torch
        self.fn = fn
        # The spec's ``kernels:`` (a function's own wins).
        self.kernels = kernels
        # Of ``export: custom_op``: the op is torch.ops.<namespace>.<name>.
        self.namespace = namespace
        self.module = module
        self.device = device
        self.dtype = dtype
        self.func = getattr(module, fn.name)
        # gradcheck differentiates every output it is given: a bool output
        # (a comparison) is non-differentiable and left out.
        self.float_func = lambda *args: _single(_floating(self.func(*args)))
        self.seed = 0
        self.tol = dict(FLOAT64_TOL)
        if fn.check.atol is not None:
            self.tol["atol"] = fn.check.atol
        if fn.check.rtol is not None:
            self.tol["rtol"] = fn.check.rtol
        self.overrides = dict(fn.grads)
        self.nonlinear = nonlinear_overrides(fn)

        # The optional tensors left out (None) in the variant under check.
        self.absent: frozenset[str] = frozenset()

    # -- inputs and names ---------------------------------------------------

    def inputs(self, dtype=None, batch=()):
        generator = self.torch.Generator().manual_seed(self.seed)
        args = sample_inputs(
            self.fn, dtype or self.dtype, self.device, generator, batch
        )
        return [
            None if spec.name in self.absent else arg
            for spec, arg in zip(self.fn.inputs, args)
        ]

    def differentiable(self, args):
        return [a for a in args if _differentiable(a)]

    def tensor_names(self) -> list[str]:
        """The names of the tensor arguments present, in order."""
        return [
            s.name
            for s in self.fn.inputs
            if s.is_differentiable and s.name not in self.absent
        ]

    def output_names(self) -> list[str]:
        return [out.name for out, _ in self.fn.formula.outputs]

    def float_output_names(self) -> list[str]:
        """The names of the outputs `float_func` returns."""
        return [
            out.name for out, expr in self.fn.formula.outputs if not is_condition(expr)
        ]

    def seeds(self, outputs, dtype=None, generator=None):
        """A random incoming gradient for each floating point output; None
        for the others (a comparison)."""
        torch = self.torch
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed + 1)
        return [
            (
                torch.randn(o.shape, generator=generator, dtype=torch.float64).to(
                    dtype=dtype or o.dtype, device=o.device
                )
                if o.is_floating_point()
                else None
            )
            for o in _outputs(outputs)
        ]

    def grads(self, function, args, seeds):
        """Outputs and input gradients; a gradient that autograd does not
        reach (a step function in the reference) is None, that is zero."""
        outputs = list(_outputs(function(*args)))
        tensors = self.differentiable(args)
        pairs = [
            (o, g)
            for o, g in zip(outputs, seeds)
            if g is not None and o.is_floating_point() and o.requires_grad
        ]
        grads = [None] * len(tensors)
        if pairs and tensors:
            grads = self.torch.autograd.grad(
                [o for o, _ in pairs], tensors, [g for _, g in pairs], allow_unused=True
            )
        floats = [o.detach() for o in outputs if o.is_floating_point()]
        return floats, list(grads)

    # -- the reference ----------------------------------------------------------

    def reference_env(self, args):
        """The formula of the function evaluated by the independent
        interpreter: the environment (inputs, tensor operations, outputs)
        and the interpreter."""
        from fngen.reference import Interpreter

        fn = self.fn
        env = {
            fn.symbol(spec.name): 0 if value is None else value
            for spec, value in zip(fn.inputs, args)
        }
        like = next(a for a in args if _differentiable(a))
        interpret = Interpreter(env, like)
        for op in fn.formula.ops:
            env[op.result] = interpret(op.expr)
        return env, interpret

    def reference_grads(self, args, seeds):
        """Outputs and gradients of the reference: autograd of the formula,
        and for an input with a ``grad:`` override the override as written,
        its incoming gradients the seeds (zero for an output without one)."""
        torch = self.torch
        env, interpret = self.reference_env(args)
        outputs = [interpret(expr) for _, expr in self.fn.formula.outputs]
        tensors = self.differentiable(args)
        pairs = [
            (o, g)
            for o, g in zip(outputs, seeds)
            if g is not None and torch.is_tensor(o) and o.requires_grad
        ]
        grads = [None] * len(tensors)
        if pairs and tensors:
            grads = list(
                torch.autograd.grad(
                    [o for o, _ in pairs],
                    tensors,
                    [g for _, g in pairs],
                    allow_unused=True,
                    retain_graph=bool(self.overrides),
                )
            )
        names = self.tensor_names()
        for (out, _), value in zip(self.fn.formula.outputs, outputs):
            env[out] = value.detach() if torch.is_tensor(value) else value
        for symbol, seed, value in zip(grad_symbols(self.fn), seeds, outputs):
            env[symbol] = torch.zeros_like(value) if seed is None else seed
        for index, name in enumerate(names):
            if name in self.overrides:
                value = interpret(self.overrides[name])
                arg = tensors[index]
                if not torch.is_tensor(value):
                    value = torch.as_tensor(value, dtype=arg.dtype, device=arg.device)
                shape = torch.broadcast_shapes(value.shape, arg.shape)
                grads[index] = value.expand(shape).sum_to_size(arg.shape)
        floats = [
            o.detach() for o in outputs if torch.is_tensor(o) and o.is_floating_point()
        ]
        return floats, grads

    def domain_problem(self) -> str | None:
        """Where the formula itself is NaN or inf on the sampled inputs (in
        float64): the subexpression, where, and the input to narrow."""
        import sympy as sp

        from fngen.printer import math_text

        torch = self.torch
        args = [
            a.detach() if _differentiable(a) else a for a in self.inputs(torch.float64)
        ]
        with torch.no_grad():
            env, interpret = self.reference_env(args)
            exprs = [op.expr for op in self.fn.formula.ops]
            exprs += [expr for _, expr in self.fn.formula.outputs]
            found = None
            for expr in exprs:
                found = _culprit(interpret, expr)
                if found is not None:
                    break
        if found is None:
            return None
        expr, value = found
        nan = bool(torch.isnan(value).any())
        kind = "NaN" if nan else "infinite"
        # The inputs it reads, through the tensor operations it reads.
        sources = {op.result: op.expr.free_symbols for op in self.fn.formula.ops}
        symbols, pending = set(), set(expr.free_symbols)
        while pending:
            symbol = pending.pop()
            if symbol in sources:
                pending |= sources[symbol] - symbols
            symbols.add(symbol)
        specs = [
            s
            for s in self.fn.inputs
            if s.is_differentiable
            and s.name not in self.absent
            and self.fn.symbol(s.name) in symbols
        ]
        flat = int(torch.nonzero(~torch.isfinite(value.reshape(-1)))[0])
        at = []
        for spec in specs:
            arg = env[self.fn.symbol(spec.name)]
            try:
                element = torch.broadcast_to(arg, value.shape).reshape(-1)[flat]
            except RuntimeError:  # a reduction: no element to point at
                continue
            at.append(f"{spec.name} = {_number(element.item())}")
        rule = _natural_domain(expr, nan) if isinstance(expr, sp.Expr) else ""
        text = f"{math_text(expr)} is {kind}"
        if rule:
            text += f" {rule}"
        if at:
            text += f" (at {', '.join(at)})"
        default = [s for s in specs if s.domain == DEFAULT_DOMAIN]
        declared = [s for s in specs if s.domain != DEFAULT_DOMAIN]
        where = []
        if default:
            lo, hi = DEFAULT_DOMAIN
            names = " and ".join(s.name for s in default)
            where.append(f"the default domain [{lo:g}, {hi:g}] of {names}")
        for s in declared:
            lo, hi = s.domain
            where.append(f"the declared domain [{lo:g}, {hi:g}] of {s.name}")
        if where:
            text += " on " + " and ".join(where)
        hints = " or ".join(f"`inputs.{s.name}.domain`" for s in specs)
        if hints:
            text += f": set {hints} to where the formula is defined"
        return text

    probe_values = staticmethod(probe_values)

    def probe(self, dtype) -> str | None:
        """Forward and gradients in `dtype` at each probe value (one input
        filled with it, the others sampled) must be finite wherever the
        float64 reference is finite and fits `dtype`: the first value where
        one is not, as a sentence.  With several outputs, also with each
        alone receiving a gradient: the others' part of the backward must
        not run (a zero gradient times an overflowing partial is NaN)."""
        torch = self.torch
        base = [
            a.detach().to(dtype) if _differentiable(a) else a
            for a in self.inputs(torch.float64)
        ]
        for i, spec in enumerate(self.fn.inputs):
            if not _differentiable(base[i]):
                continue
            for value in self.probe_values(spec):
                narrow = list(base)
                narrow[i] = torch.full_like(base[i], value)
                narrow = [
                    a.clone().requires_grad_() if _differentiable(a) else a
                    for a in narrow
                ]
                wide = [
                    a.detach().double().requires_grad_() if _differentiable(a) else a
                    for a in narrow
                ]
                with torch.no_grad():
                    shapes = _outputs(self.func(*narrow))
                seeds64 = self.seeds(shapes, dtype=torch.float64)
                for alone, seeds64 in _each_alone(self.output_names(), seeds64):
                    where = f" at {spec.name} = {_number(value)}{alone}"
                    problem = self._probe_at(narrow, wide, seeds64, dtype, where)
                    if problem:
                        return problem
        return None

    def _probe_at(self, narrow, wide, seeds64, dtype, where: str) -> str | None:
        """The probe's first value not finite where the reference is."""
        seeds = [s if s is None else s.to(dtype) for s in seeds64]
        try:
            out_ref, grads_ref = self.reference_grads(wide, seeds64)
        except Exception:  # the reference fails: nothing to hold to
            return None
        out_gen, grads_gen = self.grads(self.func, narrow, seeds)
        labels = [f"the output {n}" for n in self.output_names()[: len(out_gen)]]
        labels += [f"the gradient of {n}" for n in self.tensor_names()]
        largest = self.torch.finfo(dtype).max
        for label, gen, ref in zip(labels, out_gen + grads_gen, out_ref + grads_ref):
            if gen is None or ref is None or gen.shape != ref.shape:
                continue
            g, r = gen.detach().reshape(-1), ref.detach().reshape(-1)
            broken = _first_broken(g, r, r.abs() <= largest)
            if broken:
                flat, kind = broken
                return (
                    f"{label} is {kind} in {str(dtype)[6:]}{where}, where the "
                    f"float64 reference is finite ({_number(r[flat].item())})"
                )
        return None

    @property
    def run_tol(self):
        """Tolerances for comparisons in the dtype under check."""
        return self.tol if self.dtype == self.torch.float64 else FLOAT32_TOL

    def check_reference(self):
        torch = self.torch
        args = self.inputs()
        generated = _outputs(self.func(*args))
        seeds = self.seeds(generated)
        env, interpret = self.reference_env(args)
        expected = [interpret(expr) for _, expr in self.fn.formula.outputs]
        for name, a, b in zip(self.output_names(), generated, expected):
            if torch.is_tensor(b) and a.is_floating_point() != b.is_floating_point():
                return (
                    f"the output {name} is {str(a.dtype)[6:]}, where the formula "
                    f"gives {str(b.dtype)[6:]}"
                )
        problem = _narrow_values(self, args, seeds)
        problem = problem or _against_reference_by_subset(self, args, seeds)
        for name, narrowed in broadcast_inputs(self.fn, args):
            if problem:
                break
            try:
                _, interpret = self.reference_env(narrowed)
                outs = [interpret(e) for _, e in self.fn.formula.outputs]
            except (RuntimeError, IndexError, ValueError):
                continue  # a formula that does not take these shapes (x @ y)
            seeds = self.seeds(tuple(torch.as_tensor(o) for o in outs))
            problem = _against_reference_by_subset(self, narrowed, seeds)
            if problem:
                problem = f"with {name} one row of the others: {problem}"
        return problem or self.probe(self.dtype)

    def _against_reference(self, args, seeds) -> str | None:
        out_gen, grads_gen = self.grads(self.func, args, seeds)
        out_ref, grads_ref = self.reference_grads(args, seeds)
        tol = self.run_tol
        for name, a, b in zip(self.output_names(), out_gen, out_ref):
            problem = _compare(a, b, tol, f"the output {name}")
            if problem:
                return problem
        for name, a, b, arg in zip(
            self.tensor_names(), grads_gen, grads_ref, self.differentiable(args)
        ):
            what = f"the gradient of {name}"
            if name in self.overrides:
                what += " (grad: override)"
            if a is None and b is not None and name not in self.overrides:
                # Autograd of the formula reaches the input (its gradient
                # may be zeros): a backward must not drop it to None.
                return (
                    f"{what} is None, where autograd of the formula gives a "
                    "tensor: the backward must return zeros, not None, for an "
                    "input that requires grad"
                )
            problem = _compare(a, b, tol, what, label=name, values=arg)
            if problem:
                return problem
        return None

    # -- gradcheck and gradgradcheck ------------------------------------------

    def _gradcheck_options(self):
        return dict(atol=max(self.tol["atol"], 1e-6), rtol=max(self.tol["rtol"], 1e-4))

    def check_gradcheck(self):
        from torch.autograd.gradcheck import GradcheckError

        torch = self.torch
        args = self.inputs(torch.float64)
        try:
            torch.autograd.gradcheck(self.float_func, args, **self._gradcheck_options())
        except GradcheckError as err:
            return self._explain(err, self.float_func, args, self.float_output_names())

    def backward_function(self, args):
        """The backward as a function of the tensor inputs and the incoming
        gradients, as gradgradcheck differentiates it; and its arguments."""
        torch = self.torch
        tensors = self.differentiable(args)
        with torch.no_grad():
            outputs = _outputs(self.func(*args))
        seeds = [
            s.requires_grad_()
            for s in self.seeds(outputs, dtype=torch.float64)
            if s is not None
        ]

        def backward(*values):
            inputs, incoming = values[: len(tensors)], values[len(tensors) :]
            it = iter(inputs)
            full = [next(it) if _differentiable(a) else a for a in args]
            outs = [o for o in _outputs(self.func(*full)) if o.is_floating_point()]
            pairs = [(o, g) for o, g in zip(outs, incoming) if o.requires_grad]
            grads = torch.autograd.grad(
                [o for o, _ in pairs],
                inputs,
                [g for _, g in pairs],
                create_graph=True,
                allow_unused=True,
            )
            return tuple(
                torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)
            )

        return backward, tensors + seeds

    def check_double_backward(self):
        from torch.autograd.gradcheck import GradcheckError

        torch = self.torch
        args = self.inputs(torch.float64)
        if self.reads_outputs():
            return self._double_backward_of_override(args)
        try:
            torch.autograd.gradgradcheck(self.float_func, args, atol=1e-5, rtol=1e-4)
        except GradcheckError as err:
            backward, values = self.backward_function(args)
            names = [f"grad_{n}" for n in self.tensor_names()]
            return self._explain(
                err,
                backward,
                values,
                names,
                second=True,
                tol=dict(atol=1e-5, rtol=1e-4),
            )

    def reads_outputs(self) -> list[str]:
        """The overridden inputs whose override reads an output: the
        derivative of that output inside the backward is the override
        itself, not what finite differences of the forward measure."""
        outputs = {out for out, _ in self.fn.formula.outputs}
        return [
            name
            for name, expr in self.overrides.items()
            if expr.free_symbols & outputs and name in self.tensor_names()
        ]

    def _double_backward_of_override(self, args):
        """The derivative of the backward (with respect to the inputs and
        the incoming gradients) against autograd of the override as written,
        its outputs those of the generated Function, so that their
        derivative is the override too; autograd of the formula for the
        inputs without one."""
        torch = self.torch
        backward, values = self.backward_function(args)
        tensors = values[: len(self.differentiable(args))]

        def reference(*values):
            inputs, grads_in = values[: len(tensors)], values[len(tensors) :]
            it = iter(inputs)
            full = [next(it) if _differentiable(a) else a for a in args]
            env, interpret = self.reference_env(full)
            generated = _floating(self.func(*full))
            seeds = iter(grads_in)
            for (out, expr), value in zip(self.fn.formula.outputs, generated):
                env[out] = value
            for symbol, value in zip(grad_symbols(self.fn), generated):
                env[symbol] = next(seeds)
            outputs = [interpret(expr) for _, expr in self.fn.formula.outputs]
            results = []
            for name, x in zip(self.tensor_names(), inputs):
                if name in self.overrides:
                    value = interpret(self.overrides[name])
                    if not torch.is_tensor(value):
                        value = torch.as_tensor(value).to(x).expand(x.shape)
                    shape = torch.broadcast_shapes(value.shape, x.shape)
                    results.append(value.expand(shape).sum_to_size(x.shape))
                    continue
                pairs = [
                    (o, g)
                    for o, g in zip(outputs, grads_in)
                    if torch.is_tensor(o) and o.requires_grad
                ]
                (grad,) = torch.autograd.grad(
                    [o for o, _ in pairs],
                    [x],
                    [g for _, g in pairs],
                    create_graph=True,
                    allow_unused=True,
                )
                results.append(torch.zeros_like(x) if grad is None else grad)
            return tuple(results)

        generator = torch.Generator().manual_seed(self.seed + 2)
        first_gen = backward(*values)
        first_ref = reference(*values)
        weights = [
            torch.randn(g.shape, generator=generator, dtype=torch.float64).to(g)
            for g in first_gen
        ]
        tol = dict(atol=1e-5, rtol=1e-4)
        tensor_names = self.tensor_names()
        names = tensor_names + [f"grad_{n}" for n in self.output_names()]
        for name, a, b in zip(tensor_names, first_gen, first_ref):
            problem = _compare(a, b, tol, f"the gradient of {name}")
            if problem:
                return problem
        # The gradients of the overridden inputs, differentiated with respect
        # to everything; those of the others with respect to all but the
        # overridden inputs, through which the generated backward may read
        # an output whose derivative is the override (a choice of the code,
        # not of the math).
        overridden = [name in self.overrides for name in tensor_names]
        free = [
            i
            for i, name in enumerate(names)
            if i >= len(tensor_names) or not overridden[i]
        ]
        for which, respect in [(True, list(range(len(values)))), (False, free)]:
            chosen = [k for k, o in enumerate(overridden) if o == which]
            if not chosen or not respect:
                continue
            wrt = [values[i] for i in respect]
            second = []
            for first in (first_gen, first_ref):
                total = sum((first[k] * weights[k]).sum() for k in chosen)
                second.append(torch.autograd.grad(total, wrt, allow_unused=True))
            of = " and ".join(f"grad_{tensor_names[k]}" for k in chosen)
            for i, a, b in zip(respect, *second):
                x = values[i]
                a = torch.zeros_like(x) if a is None else a
                b = torch.zeros_like(x) if b is None else b
                problem = _compare(
                    a,
                    b,
                    tol,
                    f"the derivative of {of} with respect to {names[i]}",
                    other="autograd of the grad: override",
                    label=names[i],
                    values=x,
                )
                if problem:
                    return problem
        return None

    def _explain(self, err, function, args, out_names, second=False, tol=None):
        """A gradcheck failure as a sentence: for a Jacobian mismatch the
        largest difference between the analytical and the numerical
        derivative, where, and the two values; else the whole message."""
        message = str(err)
        if "mismatch for output" not in message:
            return _reason(err)
        forward = "computed with forward mode" in message
        found = self._jacobian_mismatch(
            function, args, out_names, forward, tol or self._gradcheck_options()
        )
        if found is None:
            return _reason(err)
        kind = "second derivative" if second else "derivative"
        mode = " (forward mode)" if forward else ""
        return f"the {kind}{mode} {found}"

    def _jacobian_mismatch(self, function, args, out_names, forward, tol):
        """Analytical (autograd) against numerical (central differences)
        Jacobians of `function`: the worst element, as a phrase."""
        torch = self.torch
        tensors = [a for a in args if _differentiable(a)]
        in_names = self.tensor_names()
        if len(tensors) > len(in_names):  # the backward: gradients too
            in_names = in_names + [f"grad_{n}" for n in self.output_names()]

        def call(*values):
            it = iter(values)
            full = [next(it) if _differentiable(a) else a for a in args]
            return _floating(function(*full))

        strategy = "forward-mode" if forward else "reverse-mode"
        detached = [t.detach() for t in tensors]
        analytical = torch.autograd.functional.jacobian(
            call, tuple(detached), strategy=strategy, vectorize=forward
        )
        worst = None
        for j, x in enumerate(detached):
            flat = x.reshape(-1)
            for k in range(flat.numel()):
                step = torch.zeros_like(flat)
                step[k] = FINITE_DIFFERENCE_STEP
                plus = list(detached)
                minus = list(detached)
                plus[j] = (flat + step).reshape(x.shape)
                minus[j] = (flat - step).reshape(x.shape)
                # In grad mode with fresh leaves: `function` may be a
                # backward, which differentiates its arguments itself.
                high = [h.detach() for h in call(*_leaves(plus))]
                low = [v.detach() for v in call(*_leaves(minus))]
                for i, (h, lo) in enumerate(zip(high, low)):
                    numerical = ((h - lo) / (2 * FINITE_DIFFERENCE_STEP)).reshape(-1)
                    column = analytical[i][j].reshape(numerical.numel(), -1)[:, k]
                    excess = (column - numerical).abs() - (
                        tol["atol"] + tol["rtol"] * numerical.abs()
                    )
                    excess = excess.nan_to_num(nan=float("inf"))
                    m = int(torch.argmax(excess))
                    if excess[m] > 0 and (worst is None or excess[m] > worst[0]):
                        worst = (
                            excess[m].item(),
                            i,
                            j,
                            m,
                            k,
                            column[m].item(),
                            numerical[m].item(),
                            flat[k].item(),
                        )
        if worst is None:
            return None
        _, i, j, m, k, a, n, v = worst
        out_shape = high[i].shape
        out = out_names[i] if i < len(out_names) else f"output {i}"
        name = in_names[j] if j < len(in_names) else f"input {j}"
        out_index = _index(m, out_shape) if len(out_shape) else ""
        in_index = _index(k, detached[j].shape) if detached[j].dim() else ""
        return (
            f"d{out}{out_index}/d{name}{in_index} is {_number(a)}, finite differences "
            f"give {_number(n)} (a difference of {_number(abs(a - n))}, at "
            f"{name}{in_index} = {_number(v)})"
        )

    # -- forward mode ---------------------------------------------------------

    def check_forward_ad(self):
        from torch.autograd.gradcheck import GradcheckError

        torch = self.torch
        if self.fn.grads:
            return self._forward_matches_backward()
        args = self.inputs(torch.float64)
        try:
            torch.autograd.gradcheck(
                self.float_func,
                args,
                check_forward_ad=True,
                check_backward_ad=False,
                check_undefined_grad=False,
                check_batched_forward_grad=True,
                **self._gradcheck_options(),
            )
        except GradcheckError as err:
            return self._explain(err, self.float_func, args, self.float_output_names())

    def along(self, args, i):
        """`self.func` as a function of its argument `i` alone, returning
        its floating point outputs."""

        def function(x):
            return _single(_floating(self.func(*args[:i], x, *args[i + 1 :])))

        return function

    def _forward_matches_backward(self):
        """With a `grad:` override there is no true derivative to compare
        with: the jvp must be the transpose of the overridden vjp."""
        torch = self.torch
        args = [
            a.detach() if _differentiable(a) else a for a in self.inputs(torch.float64)
        ]
        for i, arg in enumerate(args):
            if not _differentiable(arg):
                continue
            along = self.along(args, i)
            forward = torch.autograd.functional.jacobian(
                along, arg, strategy="forward-mode", vectorize=True
            )
            backward = torch.autograd.functional.jacobian(along, arg)
            name = self.fn.inputs[i].name
            for out, f, b in zip(
                self.output_names(), _outputs(forward), _outputs(backward)
            ):
                problem = _compare(
                    f,
                    b,
                    self.tol,
                    f"the jvp of {name} (d{out}/d{name})",
                    other="the overridden vjp",
                )
                if problem:
                    return problem
        return None

    # -- batched gradients --------------------------------------------------------

    def check_batched(self):
        """Gradients of a batch of incoming gradients at once, as
        ``is_grads_batched=True``, ``jacobian(vectorize=True)``, ``vmap``
        of a vjp and ``gradcheck(check_batched_grad=True)`` compute them
        (a backward that writes in place into a batched tensor fails),
        against one at a time; forward mode likewise, unless there is no
        jvp."""
        torch = self.torch
        args = self.inputs()
        tensors = self.differentiable(args)
        outputs = [o for o in _floating(self.func(*args)) if o.requires_grad]
        if not outputs:
            return None
        generator = torch.Generator().manual_seed(self.seed + 3)
        batches = [
            torch.randn((BATCH,) + tuple(o.shape), generator=generator).to(o)
            for o in outputs
        ]
        tol = self.run_tol
        for stage, run in [
            ("is_grads_batched=True", self._batched_reverse),
            ("vmap of torch.func.vjp", self._batched_vjp),
            ("forward mode", self._batched_forward),
        ]:
            try:
                problem = run(args, tensors, outputs, batches, generator, tol)
            except Exception as err:
                problem = f"{stage}: {_reason(err)}"
            if problem:
                return problem
        return None

    def _batched_reverse(self, args, tensors, outputs, batches, generator, tol):
        torch = self.torch
        names = self.tensor_names()
        batched = torch.autograd.grad(
            outputs,
            tensors,
            batches,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
        )
        for b in range(BATCH):
            single = torch.autograd.grad(
                outputs,
                tensors,
                [g[b] for g in batches],
                retain_graph=True,
                allow_unused=True,
            )
            for name, many, one, x in zip(names, batched, single, tensors):
                problem = _compare(
                    None if many is None else many[b],
                    one,
                    tol,
                    f"the batched gradient of {name} (is_grads_batched=True, "
                    f"gradient {b})",
                    other="one gradient at a time",
                    label=name,
                    values=x,
                )
                if problem:
                    return problem
        return None

    def _batched_vjp(self, args, tensors, outputs, batches, generator, tol):
        torch = self.torch
        names = self.tensor_names()
        detached = [a.detach() if _differentiable(a) else a for a in args]
        indices = [i for i, a in enumerate(detached) if _differentiable(a)]

        def of_tensors(*values):
            full = list(detached)
            for i, v in zip(indices, values):
                full[i] = v
            return tuple(o for o in _floating(self.func(*full)))

        primals = [detached[i] for i in indices]
        values, vjp = torch.func.vjp(of_tensors, *primals)
        differentiable = [
            torch.randn((BATCH,) + tuple(v.shape), generator=generator).to(v)
            for v in values
        ]
        mapped = torch.func.vmap(vjp)(tuple(differentiable))
        for b in range(BATCH):
            single = vjp(tuple(g[b] for g in differentiable))
            for name, many, one, x in zip(names, mapped, single, primals):
                problem = _compare(
                    many[b],
                    one,
                    tol,
                    f"the gradient of {name} from vmap of torch.func.vjp (gradient {b})",
                    other="one vjp at a time",
                    label=name,
                    values=x,
                )
                if problem:
                    return problem
        return None

    def _batched_forward(self, args, tensors, outputs, batches, generator, tol):
        torch = self.torch
        if self.nonlinear:
            return None  # no jvp
        detached = [a.detach() if _differentiable(a) else a for a in args]
        indices = [i for i, a in enumerate(detached) if _differentiable(a)]
        for i in indices:
            along = self.along(detached, i)
            x = detached[i]
            name = self.fn.inputs[i].name
            reverse = torch.autograd.functional.jacobian(along, x)
            forward = torch.autograd.functional.jacobian(
                along, x, strategy="forward-mode", vectorize=True
            )
            with torch.no_grad():
                jacfwd = torch.func.jacfwd(along)(x)
            for how, jacobian in [
                ("jacobian(strategy='forward-mode', vectorize=True)", forward),
                ("torch.func.jacfwd under no_grad", jacfwd),
            ]:
                for out, f, r in zip(
                    self.output_names(), _outputs(jacobian), _outputs(reverse)
                ):
                    problem = _compare(
                        f,
                        r,
                        tol,
                        f"d{out}/d{name} from {how}",
                        other="the reverse-mode Jacobian",
                    )
                    if problem:
                        return problem
        return None

    # -- torch.func ------------------------------------------------------------

    def check_vmap(self):
        torch = self.torch
        batch = 2
        args = self.inputs(batch=(batch,))
        in_dims = tuple(0 if _differentiable(a) else None for a in args)
        detached = [a.detach() if _differentiable(a) else a for a in args]
        mapped = _outputs(torch.func.vmap(self.func, in_dims=in_dims)(*detached))
        for i in range(batch):
            single = _outputs(
                self.func(*[a[i] if _differentiable(a) else a for a in detached])
            )
            for name, a, b in zip(self.output_names(), mapped, single):
                problem = _compare(
                    a[i],
                    b,
                    self.run_tol,
                    f"the output {name} of vmap (sample {i})",
                    other="the function on the sample alone",
                )
                if problem:
                    return problem
        # torch.func.grad and jacrev through the Function, against autograd.
        first = [a[0] if _differentiable(a) else a for a in detached]
        tensors = [i for i, a in enumerate(first) if _differentiable(a)]
        names = self.tensor_names()

        def total(*a):
            return sum(o.sum() for o in _floating(self.func(*a)))

        if any(o.requires_grad for o in _floating(self.func(*self.inputs()))):
            grads = torch.func.grad(total, argnums=tuple(tensors))(*first)
            leaves = [
                a.clone().requires_grad_() if _differentiable(a) else a for a in first
            ]
            expected = torch.autograd.grad(
                total(*leaves), [leaves[i] for i in tensors], allow_unused=True
            )
            for name, a, b, i in zip(names, grads, expected, tensors):
                problem = _compare(
                    a,
                    b,
                    self.run_tol,
                    f"torch.func.grad of {name}",
                    other="autograd",
                    label=name,
                    values=first[i],
                )
                if problem:
                    return problem
        for i, name in zip(tensors, names):
            along = self.along(first, i)
            jacrev = torch.func.jacrev(along)(first[i])
            expected = torch.autograd.functional.jacobian(along, first[i])
            for out, a, b in zip(
                self.output_names(), _outputs(jacrev), _outputs(expected)
            ):
                problem = _compare(
                    a,
                    b,
                    self.run_tol,
                    f"torch.func.jacrev d{out}/d{name}",
                    other="torch.autograd.functional.jacobian",
                )
                if problem:
                    return problem
        return None

    def check_compile(self):
        torch = self.torch
        torch._dynamo.reset()
        compiled = torch.compile(
            self.func,
            fullgraph=True,
            backend="aot_eager" if self.device.type != "cuda" else "inductor",
        )
        return self._against_eager("compiled", compiled, self.inputs())

    def _against_eager(self, what: str, function, args) -> str | None:
        """Outputs and gradients of `function` against the eager ones."""
        seeds = self.seeds(self.func(*args))
        out_eager, grads_eager = self.grads(self.func, args, seeds)
        out_other, grads_other = self.grads(function, args, seeds)
        problem = self._outputs_against_eager(what, out_other, out_eager)
        if problem:
            return problem
        tol = self.run_tol
        for name, a, b, x in zip(
            self.tensor_names(), grads_other, grads_eager, self.differentiable(args)
        ):
            if (a is None) != (b is None):
                return (
                    f"the {what} gradient of {name} is "
                    f"{'None' if a is None else 'a tensor'}, the eager one "
                    f"{'None' if b is None else 'a tensor'}"
                )
            problem = a is not None and _compare(
                a, b, tol, f"the {what} gradient of {name}", "eager", name, x
            )
            if problem:
                return problem
        return None

    def _outputs_against_eager(self, what: str, outputs, eager) -> str | None:
        for name, a, b in zip(self.output_names(), outputs, eager):
            problem = _compare(
                a, b, self.run_tol, f"the {what} output {name}", other="eager"
            )
            if problem:
                return problem
        return None

    def check_export(self):
        """With ``export: custom_op``: the op passes torch.library.opcheck;
        torch.export keeps it, and the exported program's outputs and
        gradients are the eager ones; with `DECOMPOSITIONS` run, the
        program has no custom op left and its outputs are the same."""
        torch = self.torch
        op = getattr(getattr(torch.ops, self.namespace), self.fn.name)
        args = self.inputs()
        torch.library.opcheck(op, args)
        positions = [i for i, a in enumerate(args) if torch.is_tensor(a)]

        class Program(torch.nn.Module):
            def forward(inner, *tensors):
                full = list(args)
                for i, tensor in zip(positions, tensors):
                    full[i] = tensor
                return self.func(*full)

        tensors = tuple(args[i].detach() for i in positions)
        exported = torch.export.export(Program(), tensors)
        targets = {node.target for node in exported.graph.nodes}
        if op.default not in targets:
            return f"torch.export did not keep {self.namespace}::{self.fn.name}"
        fresh = self.inputs()
        program = exported.module()
        problem = self._against_eager(
            "exported", lambda *full: program(*[full[i] for i in positions]), fresh
        )
        if problem:
            return problem
        # Keyed by the ops registered now: a later import of the same spec
        # (a test's) re-registers them, and this module's keys are stale.
        table = {}
        for key, forward in self.module.DECOMPOSITIONS.items():
            namespace, name = key._schema.name.split("::")
            table[getattr(getattr(torch.ops, namespace), name).default] = forward
        inlined = exported.run_decompositions(table)
        if op.default in {node.target for node in inlined.graph.nodes}:
            return "DECOMPOSITIONS left the custom op in the exported program"
        with torch.no_grad():
            outputs = _outputs(inlined.module()(*[fresh[i] for i in positions]))
            out_eager = _outputs(self.func(*fresh))
        return self._outputs_against_eager("decomposed", outputs, out_eager)

    # -- the Triton kernels -------------------------------------------------

    def kernel_skip(self) -> str | None:
        """Why the kernel check cannot run here, or None."""
        from fngen.codegen import kernel_status

        reason = kernel_status(self.fn, self.kernels)
        if reason:
            return f"no Triton kernel: {reason}"
        if self.device.type not in ("cuda", "cpu"):
            return f"the kernels run on CUDA, not {self.device.type}"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
        return None

    def kernel_module(self):
        """The module whose kernels run on this device: the checked one on
        CUDA; on a CPU, a copy of it whose kernels Triton's interpreter runs
        (made once per module)."""
        if self.device.type == "cuda":
            return self.module
        copy = getattr(self.module, "__fngen_interpreted__", None)
        if copy is None:
            from fngen.kernels import load_kernel_module

            copy = load_kernel_module(
                self.module.__fngen_source__,
                f"{self.module.__name__}_interpreted",
                interpret=True,
            )
            self.module.__fngen_interpreted__ = copy
        return copy

    def check_kernel(self):
        """The Triton kernels against the torch code they stand for: the
        outputs and every input gradient, for each combination of needed
        gradients, in the check's dtype, float32 and bfloat16, on a size
        that is not a multiple of the kernels' block, a 0-dim and an empty
        tensor, each against the torch code in float64 on the same values;
        each kernel must have run.  With broadcast inputs, the torch code
        runs and gives the same gradients."""
        import numpy as np

        torch = self.torch
        module = self.kernel_module()
        forward, backward = (f"_{self.fn.name}_{part}" for part in ("fwd", "bwd"))
        from fngen.kernels import launches_counted

        present = [n for n in (forward, backward) if hasattr(module, n)]
        block = module._BLOCK_SIZE
        dtypes = list(dict.fromkeys([self.dtype, torch.float32, torch.bfloat16]))
        cases = [((2 * block + 52,), dtype) for dtype in dtypes]
        cases += [((), torch.float32), ((0,), torch.float32)]
        with launches_counted(module, present) as launched:
            with np.errstate(all="ignore"):  # the interpreter's masked lanes
                for shape, dtype in cases:
                    for needed in self._needed_combinations():
                        launched.clear()
                        problem = self._kernel_case(module, shape, dtype, needed)
                        if problem:
                            return problem
                        expected = [n for n in present if n == forward or any(needed)]
                        missing = [n for n in expected if n not in launched]
                        if missing:
                            return (
                                f"the kernel {missing[0]} did not run on "
                                f"{dtype} tensors of shape {shape}"
                            )
                if len(self.fn.float_inputs) > 1:
                    return self._kernel_case(
                        module, (3, block - 300), torch.float32, None, broadcast=True
                    )
        return None

    def _needed_combinations(self):
        """Which float inputs require grad: each combination of up to three
        inputs, else each alone and all."""
        n = len(self.fn.float_inputs)
        if n > 3:
            return [tuple(i == j for j in range(n)) for i in range(n)] + [(True,) * n]
        return [c for c in itertools.product((False, True), repeat=n) if any(c)]

    def _kernel_case(self, module, shape, dtype, needed, broadcast=False):
        torch = self.torch
        floats = [s.name for s in self.fn.float_inputs]
        shapes = {name: shape for name in floats}
        if broadcast:  # the last input along the last dimension only
            shapes[floats[-1]] = shape[-1:]
        fn = dataclasses.replace(
            self.fn,
            check=dataclasses.replace(self.fn.check, shapes=tuple(shapes.items())),
        )
        generator = torch.Generator().manual_seed(self.seed)
        values = sample_inputs(fn, torch.float64, self.device, generator)
        if needed is None:
            needed = (True,) * len(floats)
        flags = dict(zip(floats, needed))
        low = [
            (
                v.detach().to(dtype).requires_grad_(flags[s.name])
                if s.is_differentiable
                else v
            )
            for s, v in zip(self.fn.inputs, values)
        ]
        # The same values in float64, for the torch code.
        wide = [
            (
                v.detach().double().requires_grad_(flags[s.name])
                if s.is_differentiable
                else v
            )
            for s, v in zip(self.fn.inputs, low)
        ]
        label = f"{str(dtype).replace('torch.', '')} {tuple(shape)}"
        if broadcast:
            label += " broadcast"
        # The same values in the kernel's dtype, for the torch code there
        # too: where the float64 torch code and the kernel part across a
        # step (heaviside(lgamma(2 + x**2)) at x = 1e-4, whose argument is
        # 0 in float32), the kernel passes if it is what the torch code
        # gives in its own dtype.
        same = [
            v.detach().requires_grad_(flags[s.name]) if s.is_differentiable else v
            for s, v in zip(self.fn.inputs, low)
        ]
        kernel_out = _outputs(getattr(module, self.fn.name)(*low))
        device = module._KERNEL_DEVICE
        module._KERNEL_DEVICE = None
        try:
            torch_out = _outputs(getattr(module, self.fn.name)(*wide))
            same_out = _outputs(getattr(module, self.fn.name)(*same))
        finally:
            module._KERNEL_DEVICE = device
        if dtype == torch.float64:
            tol = self.tol
        else:
            tol = KERNEL_TOL[str(dtype).removeprefix("torch.")]
        names = self.output_names()
        for name, a, b in zip(names, kernel_out, torch_out):
            if a.dtype != (b.dtype if not b.is_floating_point() else dtype):
                return f"the kernel's output {name} is {a.dtype} for {label} inputs"
            if not b.is_floating_point():  # a comparison
                if a.shape != b.shape or not torch.equal(a, b):
                    return (
                        f"the kernel's output {name} ({label}) is not the torch code's"
                    )
                continue
            problem = _compare(
                a.double(),
                _as_in_its_dtype(a, b, same_out[names.index(name)], tol),
                _scaled(tol, b),
                f"the kernel's output {name} ({label})",
                "the torch code",
            )
            if problem:
                return problem
        pairs = [
            (a, b)
            for a, b in zip(kernel_out, torch_out)
            if a.is_floating_point() and a.requires_grad
        ]
        if not pairs:
            return None
        generator = torch.Generator().manual_seed(self.seed + 1)
        seeds = [
            torch.randn(b.shape, generator=generator, dtype=torch.float64)
            .to(dtype)
            .to(device=b.device)
            for _, b in pairs
        ]
        tensors_low = [v for v in low if _differentiable(v) and v.requires_grad]
        tensors_wide = [v for v in wide if _differentiable(v) and v.requires_grad]
        grads_low = torch.autograd.grad(
            [a for a, _ in pairs], tensors_low, seeds, allow_unused=True
        )
        tensors_same = [v for v in same if _differentiable(v) and v.requires_grad]
        same_pairs = [
            c
            for a, c in zip(kernel_out, same_out)
            if a.is_floating_point() and a.requires_grad
        ]
        module._KERNEL_DEVICE = None
        try:
            grads_wide = torch.autograd.grad(
                [b for _, b in pairs],
                tensors_wide,
                [s.double() for s in seeds],
                allow_unused=True,
            )
            grads_same = torch.autograd.grad(
                same_pairs, tensors_same, seeds, allow_unused=True
            )
        finally:
            module._KERNEL_DEVICE = device
        needed_names = [n for n, need in zip(floats, needed) if need]
        for name, a, b, c in zip(needed_names, grads_low, grads_wide, grads_same):
            if a is not None and a.dtype != dtype:
                return (
                    f"the kernel's gradient of {name} is {a.dtype} for {label} inputs"
                )
            problem = _compare(
                None if a is None else a.double(),
                (
                    b
                    if a is None or b is None or c is None
                    else _as_in_its_dtype(a, b, c, tol)
                ),
                _scaled(tol, b),
                f"the kernel's gradient of {name} ({label}, needed: "
                f"{', '.join(needed_names)})",
                "the torch code",
            )
            if problem:
                return problem
        return None

    def check_float32(self):
        torch = self.torch
        wide = self.inputs(torch.float64)
        narrow = [
            a.detach().float().requires_grad_() if _differentiable(a) else a
            for a in wide
        ]
        seeds = self.seeds(self.func(*wide))
        out64, grads64 = self.grads(self.func, wide, seeds)
        out32, grads32 = self.grads(
            self.func, narrow, [s if s is None else s.float() for s in seeds]
        )
        labels = [f"the output {n}" for n in self.output_names()[: len(out32)]]
        labels += [f"the gradient of {n}" for n in self.tensor_names()]
        values = [None] * len(out32) + self.differentiable(narrow)
        for label, a, b, x, name in zip(
            labels,
            out32 + grads32,
            out64 + grads64,
            values,
            [None] * len(out32) + self.tensor_names(),
        ):
            if a is None or b is None:
                continue
            if a.dtype != torch.float32:
                return f"{label} is {a.dtype} for float32 inputs"
            problem = _compare(
                a.double(), b, FLOAT32_TOL, f"{label} in float32", "float64", name, x
            )
            if problem:
                return problem
        return self.probe(torch.float32)

    # -- running ----------------------------------------------------------------

    def run(self, checks) -> FunctionReport:
        report = FunctionReport(self.fn.name)
        skips = dict(self.fn.check.skip)
        if self.fn.grads:
            overridden = ", ".join(name for name, _ in self.fn.grads)
            skips.setdefault(
                "gradcheck", f"the gradient of {overridden} is overridden by grad:"
            )
        if self.nonlinear:
            skips.setdefault(
                "forward_ad",
                f"the grad: override of {', '.join(self.nonlinear)} is not linear in grad",
            )
        if self.fn.once_differentiable:
            skips.setdefault("double_backward", "once_differentiable")
            skips.setdefault("vmap", "once_differentiable")
        if "kernel" in checks and "kernel" not in skips:
            reason = self.kernel_skip()
            if reason:
                skips["kernel"] = reason
        for absent in self.variants():
            self.absent = absent
            problem = self._domain_problem()
            self.absent = frozenset()
            if problem is None:
                continue
            if absent:
                nones = ", ".join(f"{n}=None" for n in sorted(absent))
                problem = f"with {nones}: {problem}"
            failing = "reference" if "reference" in checks else checks[0]
            for name in checks:
                if name == failing:
                    report.outcomes[name] = Outcome(False, problem)
                else:  # skipped, for the reason given there
                    report.outcomes[name] = Outcome(None)
            return report
        for name in checks:
            if name in skips:
                report.outcomes[name] = Outcome(None, skips[name])
                continue
            problem = None
            for absent in self.variants():
                self.absent = absent
                problem = self._run_one(name)
                if problem is not None:
                    if absent:
                        nones = ", ".join(f"{n}=None" for n in sorted(absent))
                        problem = f"with {nones}: {problem}"
                    break
            self.absent = frozenset()
            report.outcomes[name] = Outcome(problem is None, problem or "")
        return report

    def _domain_problem(self) -> str | None:
        try:
            return self.domain_problem()
        except Exception:  # the reference check reports what it cannot run
            return None

    def variants(self) -> list[frozenset[str]]:
        """The sets of optional tensors to leave out, each a branch of the
        generated code: none first, then every combination (with more than
        three optional tensors, each alone and all of them)."""
        optional = [s.name for s in self.fn.inputs if s.optional]
        if len(optional) > 3:
            subsets = [(name,) for name in optional] + [tuple(optional)]
        else:
            subsets = [
                combination
                for count in range(1, len(optional) + 1)
                for combination in itertools.combinations(optional, count)
            ]
        return [frozenset()] + [frozenset(subset) for subset in subsets]

    def _run_one(self, name: str) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return getattr(self, f"check_{name}")()
        except Exception as err:  # a failing check is a row, not a crash
            return _reason(err)


# Where a message stops being a sentence: a tensor dump, a traceback.
_DUMP = re.compile(r"\n\s*\n|\n(numerical|analytical|Traceback|tensor\()")
MAX_REASON = 400


def _reason(err: Exception) -> str:
    """An exception as one sentence: its message up to the first blank line
    or tensor dump, lines joined, never cut inside a sentence unless it is
    longer than `MAX_REASON` characters."""
    text = str(err).strip()
    text = _DUMP.split(text, maxsplit=1)[0]
    text = " ".join(text.split())
    if not text:
        text = type(err).__name__
    if len(text) > MAX_REASON:
        cut = text.rfind(". ", 0, MAX_REASON)
        text = text[: cut + 1] if cut > 0 else text[: MAX_REASON - 3] + "..."
    name = type(err).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def check_spec(
    spec: Spec,
    device: str | None = None,
    dtype: str | None = None,
    only: str | list[str] | None = None,
    checks: list[str] | None = None,
) -> Report:
    """Run the checks on every function of `spec` (or those named in `only`)."""
    import torch

    device_name = device or spec.check_device or "cpu"
    dtype_name = dtype or spec.check_dtype or "float64"
    dev = resolve_device(device_name)
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    names = [only] if isinstance(only, str) else list(only or [])
    known = {fn.name for fn in spec.functions}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownFunctionError(unknown_functions_message(unknown, known, spec.path))
    module = load(spec)
    kernels = spec.kernels == "triton" or any(
        fn.kernels == "triton" for fn in spec.functions
    )
    columns = CHECK_NAMES + (EXPORT_CHECKS if spec.export else ())
    columns += KERNEL_CHECKS if kernels else ()
    reports = []
    for fn in spec.functions:
        if names and fn.name not in names:
            continue
        checker = FunctionChecker(
            fn, module, dev, torch_dtype, spec.namespace, spec.kernels
        )
        reports.append(checker.run(checks or list(columns)))
    return Report(device_name, dtype_name, reports, columns)


__all__ = [
    "check_spec",
    "Report",
    "DeviceError",
    "UnknownFunctionError",
    "sample_inputs",
    "unknown_functions_message",
]
