"""`fngen bench`: what a generated Function costs against plain autograd.

For each function of a spec, four variants run forward + backward on the same
inputs and the same incoming gradient:

* ``generated``           the functional wrapper ``module.<name>``, that is
                          ``<Name>Function.apply``: the generated backward;
* ``composed``            the formula as one plain function of torch ops
                          (`fngen.codegen.composed_source`): each repeated
                          subexpression computed once, but none of fngen's
                          rewrites (fused kernels, Horner form), as a user
                          would write it by hand; autograd differentiates it;
* ``generated_compiled``  ``torch.compile`` of the first (fullgraph, static shapes);
* ``composed_compiled``   ``torch.compile`` of the second;
* ``kernel``              with ``kernels: triton``, the wrapper again with
                          the function's Triton kernels on (``generated``
                          then runs the module's torch code): on CUDA, or
                          under Triton's interpreter with `interpret` (to
                          test the plumbing; its times mean nothing).  A
                          kernel that did not run on the benchmark's inputs
                          (broadcast shapes) is an error of its cell.

Two numbers per variant:

* **time**: the median over `repeats` rounds of one forward plus one
  ``torch.autograd.grad`` of the outputs against every tensor input, with a
  fixed random incoming gradient.  Each round runs every variant once, in
  an order drawn afresh (seeded), so drifts of the machine hit all of them
  alike and none always follows the same other.  Compilation and warm-up
  happen before the first round.
* **saved bytes**: while one forward runs, a
  ``torch.autograd.graph.saved_tensors_hooks`` pack hook sees every tensor
  that autograd keeps for backward; the bytes of their distinct storages
  (deduplicated by device and data pointer) are summed.  An input or an
  output that is saved counts too: that is what autograd keeps alive until
  backward, even if the caller happens to hold it as well.  The part that is
  neither an input nor an output (intermediates kept only for backward) is
  reported separately as ``saved_extra_bytes``.  Compiled variants are
  measured the same way: AOTAutograd's runtime saves its residuals through
  ``ctx.save_for_backward``, which the hooks see.

Ratios are generated / composed (eager against eager, compiled against
compiled), and kernel / composed, kernel / composed_compiled: below 1 the
generated op is faster or saves less.  For the kernel, also its time over
the memory roofline: the bytes its two kernels must move (each tensor they
read or write once, all gradients needed), over the copy bandwidth measured
in the same run (on CUDA only).  Benchmarks
report ratios measured in the same run, never absolute times across runs.

A function with a ``grad:`` override is benchmarked but not *comparable*: the
composed formula's autograd gradient is a different one (or none at all), so
its ratios are shown but left out of the geometric means.

torch is imported lazily, only here at run time; building never imports it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field

from fngen.importing import import_source, load
from fngen.codegen import composed_source, kernel_names, kernels_of
from fngen.model import FunctionSpec, InputKind, Spec
from fngen.spec import KERNEL_MODES, generated_names, load_spec
from fngen.tensorops import TensorMatmul

__all__ = [
    "BenchError",
    "BenchReport",
    "FunctionBench",
    "VariantResult",
    "bench_shapes",
    "bench_spec",
    "geometric_mean",
]

VARIANTS = (
    "generated",
    "composed",
    "generated_compiled",
    "composed_compiled",
    "kernel",
)
DEFAULT_SIZE = 4_000_000
DEFAULT_REPEATS = 20
DEFAULT_WARMUP = 3
# A matrix product's work grows faster than its inputs: inputs of the full
# `size` would make one round take seconds, so formulas with `@` scale their
# declared shapes only up to this many elements for the largest input.
MATMUL_SIZE = 1 << 18
_BASE_DIM = 3  # a param's named dim, as `fngen check` samples it
_SCALARS = {InputKind.FLOAT: 1.5, InputKind.INT: 2, InputKind.BOOL: True}


class BenchError(ValueError):
    """A request that cannot be benchmarked (unknown function, bad size)."""


@dataclass
class VariantResult:
    """Raw numbers of one variant; None where it did not run."""

    time_s: float | None = None  # median forward + backward, seconds
    time_iqr_s: float | None = None  # its interquartile range: the noise
    saved_bytes: int | None = None  # distinct storages saved for backward
    saved_tensors: int | None = None  # how many distinct storages
    saved_extra_bytes: int | None = None  # of those, neither input nor output
    backward: bool = True  # False: no output required grad, forward only
    error: str | None = None


@dataclass
class FunctionBench:
    name: str
    spec: str
    shapes: dict[str, list[int]]
    variants: dict[str, VariantResult] = field(default_factory=dict)
    comparable: bool = True
    note: str = ""
    # The bytes the kernels must move, and the time that takes at the copy
    # bandwidth measured in the run (None: no kernel, or not on CUDA).
    kernel_bytes: int | None = None
    roofline_s: float | None = None

    def _ratio(self, numerator: str, denominator: str, attr: str) -> float | None:
        """numerator / denominator of `attr`: None where either did not run
        or both are 0 (nothing saved), inf where only the numerator is 0."""
        a, b = self.variants.get(numerator), self.variants.get(denominator)
        if a is None or b is None:
            return None
        x, y = getattr(a, attr), getattr(b, attr)
        if x is None or y is None or x == y == 0:
            return None
        return x / y if y else math.inf

    @property
    def eager_time_ratio(self) -> float | None:
        return self._ratio("generated", "composed", "time_s")

    @property
    def eager_saved_ratio(self) -> float | None:
        return self._ratio("generated", "composed", "saved_bytes")

    @property
    def compiled_time_ratio(self) -> float | None:
        return self._ratio("generated_compiled", "composed_compiled", "time_s")

    @property
    def compiled_saved_ratio(self) -> float | None:
        return self._ratio("generated_compiled", "composed_compiled", "saved_bytes")

    @property
    def kernel_time_ratio(self) -> float | None:
        return self._ratio("kernel", "composed", "time_s")

    @property
    def kernel_saved_ratio(self) -> float | None:
        return self._ratio("kernel", "composed", "saved_bytes")

    @property
    def kernel_compiled_ratio(self) -> float | None:
        return self._ratio("kernel", "composed_compiled", "time_s")

    @property
    def kernel_roofline_ratio(self) -> float | None:
        kernel = self.variants.get("kernel")
        if kernel is None or kernel.time_s is None or not self.roofline_s:
            return None
        return kernel.time_s / self.roofline_s

    def ratios(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in RATIOS + KERNEL_RATIOS}

    def to_dict(self) -> dict:
        """Plain data for JSON; an infinite ratio becomes None (strict JSON
        has no infinity): the raw numbers next to it tell which."""
        data = asdict(self)
        data["ratios"] = {k: _finite(v) for k, v in self.ratios().items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FunctionBench:
        return cls(
            name=data["name"],
            spec=data["spec"],
            shapes={k: list(v) for k, v in data["shapes"].items()},
            variants={k: VariantResult(**v) for k, v in data["variants"].items()},
            comparable=data["comparable"],
            note=data["note"],
            kernel_bytes=data.get("kernel_bytes"),
            roofline_s=data.get("roofline_s"),
        )


RATIOS = (
    "eager_time_ratio",
    "eager_saved_ratio",
    "compiled_time_ratio",
    "compiled_saved_ratio",
)
# Shown where some function has a kernel variant.
KERNEL_RATIOS = (
    "kernel_time_ratio",
    "kernel_saved_ratio",
    "kernel_compiled_ratio",
    "kernel_roofline_ratio",
)


def geometric_mean(values) -> float | None:
    """Over the finite positive values; None when there are none.  An
    infinite ratio (bytes saved where autograd saves none) shows in its row."""
    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class BenchReport:
    device: str
    dtype: str
    size: int
    repeats: int
    compile: bool
    backend: str | None
    torch_version: str
    threads: int
    functions: list[FunctionBench]

    @property
    def has_kernels(self) -> bool:
        return any("kernel" in f.variants for f in self.functions)

    def geomeans(self) -> dict[str, float | None]:
        """Geometric mean of each ratio over the comparable functions."""
        rows = [f for f in self.functions if f.comparable]
        return {
            name: geometric_mean(getattr(f, name) for f in rows)
            for name in RATIOS + KERNEL_RATIOS
        }

    def table(self) -> str:
        """Ratios generated / composed, one row per function, geometric means last."""
        width = max([len("geometric mean")] + [len(f.name) + 1 for f in self.functions])
        ratios = RATIOS + (KERNEL_RATIOS if self.has_kernels else ())
        cells = ("time", "saved", "time", "saved")
        groups = "eager".center(14) + "  " + "compiled".center(14)
        if self.has_kernels:
            cells += ("time", "saved", "/comp", "/roof")
            groups += "  " + "kernel".center(30)
        lines = [
            f"fngen bench on {self.device} ({self.dtype}, {self.size:,} elements, "
            f"median of {self.repeats} interleaved rounds, {self.threads} threads, "
            f"torch {self.torch_version}"
            + (f", compiled with {self.backend})" if self.compile else ", no compile)"),
            "ratio generated / plain autograd on the same formula; below 1 is better",
        ]
        if self.has_kernels:
            lines.append(
                "kernel: the Triton kernels / plain autograd, / its torch.compile"
                " (/comp), / the memory roofline (/roof)"
            )
        lines += [
            "".ljust(width) + "  " + groups,
            "function".ljust(width) + "  " + "  ".join(c.rjust(6) for c in cells),
        ]
        for f in self.functions:
            name = f.name + ("" if f.comparable else "*")
            values = [_format(getattr(f, r)) for r in ratios]
            lines.append(
                name.ljust(width) + "  " + "  ".join(v.rjust(6) for v in values)
            )
        means = self.geomeans()
        lines.append(
            "geometric mean".ljust(width)
            + "  "
            + "  ".join(_format(means[r]).rjust(6) for r in ratios)
        )
        notes = []
        for f in self.functions:
            if f.note:
                notes.append(f"  {f.name}: {f.note}")
            for name, v in f.variants.items():
                if v.error:
                    notes.append(f"  {f.name} {name}: {v.error}")
        if any(not f.comparable for f in self.functions):
            notes.insert(0, "* not comparable, left out of the geometric means:")
        if notes:
            lines += ["", *notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["functions"] = [f.to_dict() for f in self.functions]
        data["geomeans"] = {k: _finite(v) for k, v in self.geomeans().items()}
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> BenchReport:
        fields = {k: v for k, v in data.items() if k not in ("functions", "geomeans")}
        return cls(
            **fields, functions=[FunctionBench.from_dict(f) for f in data["functions"]]
        )

    @classmethod
    def from_json(cls, text: str) -> BenchReport:
        return cls.from_dict(json.loads(text))

    @classmethod
    def combine(cls, reports: list[BenchReport]) -> BenchReport:
        """One report with the rows of several (same settings)."""
        first = reports[0]
        return cls(
            **{
                k: getattr(first, k)
                for k in first.__dataclass_fields__
                if k != "functions"
            },
            functions=[f for r in reports for f in r.functions],
        )


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- inputs -----------------------------------------------------------------


def _declared_shape(fn: FunctionSpec, spec) -> tuple[int, ...]:
    shapes = dict(fn.check.shapes)
    if spec.name in shapes:
        return tuple(shapes[spec.name])
    if spec.param is not None:
        return tuple(d if isinstance(d, int) else _BASE_DIM for d in spec.param)
    return (3, 4)


def _has_matmul(fn: FunctionSpec) -> bool:
    return any(op.expr.has(TensorMatmul) for op in fn.formula.ops)


def bench_shapes(fn: FunctionSpec, size: int) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor input for a benchmark of about `size` elements.

    Every dimension d > 1 of the declared check shapes becomes d*k, with one
    integer k for the whole function, the largest such that no input exceeds
    `size` elements.  One factor keeps every relation of the declared shapes:
    equal dims stay equal (matrix products), dims of 1 stay 1 and a
    broadcast bias of [4] against [3, 4] becomes [4k] against [3k, 4k].
    Formulas with `@` stop at `MATMUL_SIZE` elements (see there).
    """
    if size < 1:
        raise BenchError(f"size must be at least 1, not {size}")
    declared = {s.name: _declared_shape(fn, s) for s in fn.inputs if s.is_tensor}
    target = min(size, MATMUL_SIZE) if _has_matmul(fn) else size

    def numel(shape, k):
        return math.prod(d * k if d > 1 else d for d in shape)

    k = None
    for shape in declared.values():
        grows = sum(d > 1 for d in shape)
        if not grows:
            continue
        base = math.prod(shape)
        guess = max(1, int((target / base) ** (1 / grows)))
        while guess > 1 and numel(shape, guess) > target:
            guess -= 1
        while numel(shape, guess + 1) <= target:
            guess += 1
        k = guess if k is None else min(k, guess)
    k = k or 1
    return {
        name: tuple(d * k if d > 1 else d for d in shape)
        for name, shape in declared.items()
    }


def bench_inputs(fn: FunctionSpec, size: int, dtype, device, generator) -> list:
    """Arguments for `fn`: tensors uniform in their domain, of `bench_shapes`,
    requiring grad; non-tensor arguments their default."""
    import torch

    shapes = bench_shapes(fn, size)
    args = []
    for spec in fn.inputs:
        if not spec.is_tensor:
            args.append(spec.default if spec.has_default else _SCALARS[spec.kind])
            continue
        lo, hi = spec.domain
        value = torch.rand(shapes[spec.name], generator=generator, dtype=dtype)
        value = (value * (hi - lo) + lo).to(device)
        args.append(value.requires_grad_())
    return args


# -- measuring ----------------------------------------------------------------


def composed_function(fn: FunctionSpec):
    """The formula of `fn` as plain torch ops (see `composed_source`)."""
    source = composed_source(fn)
    module = import_source(source, f"fngen_composed_{fn.name}", f"<composed {fn.name}>")
    return getattr(module, fn.name)


def _outputs(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _storage_key(t) -> tuple:
    storage = t.untyped_storage()
    return (str(t.device), storage.data_ptr())


def saved_for_backward(function, args) -> tuple[int, int, int]:
    """(bytes, distinct storages, bytes neither input nor output) that
    autograd saves for backward during one forward of `function(*args)`."""
    import torch

    saved: dict[tuple, int] = {}

    def pack(t):
        saved.setdefault(_storage_key(t), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = _outputs(function(*args))
    visible = {_storage_key(t) for t in (*args, *outputs) if torch.is_tensor(t)}
    extra = sum(n for key, n in saved.items() if key not in visible)
    return sum(saved.values()), len(saved), extra


class _Step:
    """One forward and backward of a variant, ready to be timed."""

    def __init__(self, function, args, seeds, sync):
        import torch

        self.torch = torch
        self.function = function
        self.args = args
        self.seeds = seeds
        self.tensors = [a for a in args if torch.is_tensor(a) and a.requires_grad]
        self.sync = sync
        self.backward = True

    def __call__(self):
        outputs = _outputs(self.function(*self.args))
        pairs = [
            (o, g)
            for o, g in zip(outputs, self.seeds)
            if g is not None and o.requires_grad
        ]
        self.backward = bool(pairs) and bool(self.tensors)
        if self.backward:
            self.torch.autograd.grad(
                [o for o, _ in pairs],
                self.tensors,
                [g for _, g in pairs],
                allow_unused=True,
            )

    def timed(self) -> float:
        self.sync()
        start = time.perf_counter()
        self()
        self.sync()
        return time.perf_counter() - start


def _reason(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _bench_function(
    spec_path,
    fn,
    module,
    device,
    dtype,
    size,
    repeats,
    warmup,
    compile,
    backend,
    kernel_module=None,
    bandwidth=None,
) -> FunctionBench:
    import torch

    generator = torch.Generator().manual_seed(0)
    args = bench_inputs(fn, size, dtype, device, generator)
    _, wrapper, _ = generated_names(fn.name)
    functions = {
        "generated": getattr(module, wrapper),
        "composed": composed_function(fn),
    }
    launchers = []
    if kernel_module is not None and hasattr(kernel_module, f"_{fn.name}_fwd"):
        functions["kernel"] = getattr(kernel_module, wrapper)
        launchers = [n for n in kernel_names(fn.name) if hasattr(kernel_module, n)]
    if compile:
        torch._dynamo.reset()
        for name in ("generated", "composed"):
            functions[f"{name}_compiled"] = torch.compile(
                functions[name], backend=backend, fullgraph=True, dynamic=False
            )
    with torch.no_grad():
        reference = _outputs(functions["generated"](*args))
    seeds = [
        (
            torch.randn(o.shape, generator=generator, dtype=o.dtype).to(device)
            if o.is_floating_point()
            else None
        )
        for o in reference
    ]
    del reference
    if device.type == "cuda":
        sync = torch.cuda.synchronize
    elif device.type == "mps":
        sync = torch.mps.synchronize
    else:

        def sync():
            pass

    row = FunctionBench(
        fn.name,
        str(spec_path),
        {s.name: list(a.shape) for s, a in zip(fn.inputs, args) if torch.is_tensor(a)},
    )
    if fn.grads:
        row.comparable = False
        overridden = ", ".join(name for name, _ in fn.grads)
        row.note = (
            f"grad: overrides the gradient of {overridden}; autograd of the "
            "composed formula computes a different one"
        )
    if launchers and bandwidth:
        row.kernel_bytes = _kernel_bytes(fn, args)
        row.roofline_s = row.kernel_bytes / bandwidth
    steps = {}
    for name, function in functions.items():
        result = VariantResult()
        row.variants[name] = result
        step = _Step(function, args, seeds, sync)
        try:
            if name == "kernel":
                _check_launched(kernel_module, launchers, step)
            for _ in range(max(1, warmup)):  # compiles first, for compiled variants
                step()
            result.saved_bytes, result.saved_tensors, result.saved_extra_bytes = (
                saved_for_backward(function, args)
            )
        except Exception as err:  # a variant that fails is a cell, not a crash
            result.error = _reason(err)
            continue
        result.backward = step.backward
        steps[name] = step
    forward_only = [name for name, step in steps.items() if not step.backward]
    if forward_only and len(forward_only) < len(steps):
        row.comparable = False
        why = f"{', '.join(forward_only)}: no output requires grad, forward only"
        row.note = f"{row.note}; {why}" if row.note else why
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(0).shuffle
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            # A fresh order each round: no variant always runs after the
            # same one (whose freed memory or warm caches it would inherit).
            shuffle(order)
            for name in order:
                times[name].append(steps[name].timed())
    finally:
        if enabled:
            gc.enable()
    for name, samples in times.items():
        row.variants[name].time_s = statistics.median(samples)
        if len(samples) > 1:
            low, _, high = statistics.quantiles(samples, n=4)
            row.variants[name].time_iqr_s = high - low
    return row


def _check_launched(module, launchers, step) -> None:
    """Run `step` once; raise unless every launcher of `launchers` ran."""
    from fngen.kernels import launches_counted

    with launches_counted(module, launchers) as launched:
        step()
    missing = [name for name in launchers if name not in launched]
    if missing:
        raise RuntimeError(
            f"the kernel {missing[0]} did not run on these inputs (broadcast "
            "shapes take the torch code)"
        )


def _kernel_bytes(fn: FunctionSpec, args) -> int:
    """The bytes the forward and backward kernels of `fn` must move on
    `args`: each tensor they read or write, once (every gradient needed)."""
    import torch

    forward, backward = kernels_of(fn, "triton")
    tensor = next(a for a in args if torch.is_tensor(a))
    each = tensor.numel() * tensor.element_size()
    moved = len(forward.tensors) + len(forward.outputs)
    if backward is not None:
        moved += len(backward.tensors) + len(backward.outputs)
    return moved * each


def copy_bandwidth(size: int, dtype, device, repeats: int = 20) -> float:
    """Bytes a second of ``y.copy_(x)`` for `size` elements: the median of
    `repeats`, after a warm-up (the memory roofline's bandwidth)."""
    import torch

    x = torch.rand(size, dtype=dtype, device=device)
    y = torch.empty_like(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(repeats + 3):
        sync()
        start = time.perf_counter()
        y.copy_(x)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2 * x.numel() * x.element_size() / statistics.median(times)


# glibc raises its mmap threshold to the size of a mapped block when one is
# freed, up to this; larger blocks are always mapped afresh.
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def _settle_allocator(torch, nbytes: int) -> None:
    """Allocate and free one block larger than any tensor of the run.

    glibc maps each block above its mmap threshold afresh and unmaps it
    when freed, so every use page-faults it again; freeing a mapped block
    raises the threshold to that block's size.  Without this, whichever
    function runs first (and only it) sees its 16 MB tensors mapped and
    faulted on every round until the threshold happens to rise, and its
    ratios swing (exp has read 0.48 and 1.46 as the first function, 1.0
    elsewhere).  After it, every function runs with the allocator as a
    long-running process has it.  A block past the maximum threshold is
    always mapped, for every function alike."""
    block = torch.empty(
        min(2 * nbytes, GLIBC_MMAP_THRESHOLD_MAX - (1 << 20)), dtype=torch.uint8
    )
    del block


# The tensors a round keeps alive, in inputs of the largest size: inputs,
# their gradients, outputs, saved tensors and temporaries.
_LIVE_TENSORS_PER_INPUT = 2
_LIVE_TENSORS_MORE = 6


def _available_bytes(dev) -> int | None:
    import torch

    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return free
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _check_memory(spec: Spec, names, size: int, dev, itemsize: int) -> None:
    """Refuse a size whose tensors cannot fit in the device's free memory,
    before allocating anything (an allocation that fails raises deep in
    torch, one that the kernel overcommits is killed later)."""
    need = 0
    for fn in spec.functions:
        if names is not None and fn.name not in names:
            continue
        shapes = bench_shapes(fn, size)
        largest = max((math.prod(s) for s in shapes.values()), default=0)
        live = _LIVE_TENSORS_PER_INPUT * sum(math.prod(s) for s in shapes.values())
        need = max(need, (live + _LIVE_TENSORS_MORE * largest) * itemsize)
    available = _available_bytes(dev)
    if available is not None and need > available:
        raise BenchError(
            f"size {size:,} needs about {need / 2**30:,.1f} GiB on {dev}, "
            f"more than the {available / 2**30:,.1f} GiB free"
        )


def _resolve_names(spec: Spec, only) -> set[str] | None:
    if only is None:
        return None
    names = {only} if isinstance(only, str) else set(only)
    known = {fn.name for fn in spec.functions}
    unknown = sorted(names - known)
    if unknown:
        from fngen.checker import unknown_functions_message

        raise BenchError(unknown_functions_message(unknown, known, spec.path))
    return names


def _kernel_module(spec: Spec, module, dev, interpret: bool):
    """(a copy of `module` whose kernels run on `dev`, None) where the spec
    has kernels and they can run there; `module` itself then runs its torch
    code only.  (None, None) otherwise."""
    if not hasattr(module, "_KERNEL_DEVICE"):
        return None, None
    module._KERNEL_DEVICE = None
    if dev.type == "cuda":
        copy = load(spec, name=f"{module.__name__}_kernels")
        return copy, None
    if interpret:
        from fngen.kernels import load_kernel_module

        source = module.__fngen_source__
        return load_kernel_module(source, f"{module.__name__}_kernels", True), None
    return None, None


def bench_spec(
    spec: Spec | str | os.PathLike,
    only: str | list[str] | None = None,
    size: int = DEFAULT_SIZE,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = DEFAULT_REPEATS,
    compile: bool = True,
    backend: str = "inductor",
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    interpret: bool = False,
    kernels: str | None = None,
) -> BenchReport:
    """Benchmark every function of `spec` (or those named in `only`).

    `size` is the number of elements of the largest input (see
    `bench_shapes`); `repeats` the number of interleaved timing rounds;
    `compile` adds the two torch.compile variants with `backend`;
    `threads`, when given, is torch's CPU thread count for the run (restored
    afterwards): on a small machine shared with other jobs, one thread
    avoids parallel kernels that wait for a descheduled worker.  With
    ``kernels: triton``, the ``kernel`` variant runs on CUDA, or under
    Triton's interpreter on a CPU with `interpret` (a test of the plumbing:
    its times mean nothing).  `kernels`, when given, is the spec's
    ``kernels:`` for the run ("triton" measures a spec's kernels before it
    opts in; a function's own ``kernels: none`` still holds)."""
    import torch

    from fngen.checker import resolve_device

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if kernels is not None:
        if kernels not in KERNEL_MODES:
            raise BenchError(
                f"kernels must be one of {', '.join(KERNEL_MODES)}, not {kernels!r}"
            )
        spec = dataclasses.replace(spec, kernels=kernels)
    if repeats < 1:
        raise BenchError(f"repeats must be at least 1, not {repeats}")
    dtypes = {
        "float32": torch.float32,
        "float64": torch.float64,
        "bfloat16": torch.bfloat16,
    }
    if dtype not in dtypes:
        raise BenchError(f"dtype must be one of {', '.join(dtypes)}, not {dtype!r}")
    names = _resolve_names(spec, only)
    if size < 1:
        raise BenchError(f"size must be at least 1, not {size}")
    if threads is not None and threads < 1:
        raise BenchError(f"threads must be at least 1, not {threads}")
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        # torch takes any number, and crashes at exit past some thousands.
        raise BenchError(f"threads must be at most the {cpus} CPUs, not {threads}")
    if compile:
        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise BenchError(
                f"unknown torch.compile backend {backend!r} (expected one of: "
                f"{', '.join(torch._dynamo.list_backends())})"
            )
    dev = resolve_device(device)
    _check_memory(spec, names, size, dev, dtypes[dtype].itemsize)
    module = load(spec)
    kernel_module, bandwidth = _kernel_module(spec, module, dev, interpret)
    if dev.type == "cuda" and kernel_module is not None:
        bandwidth = copy_bandwidth(size, dtypes[dtype], dev)
    if dev.type == "cpu":
        _settle_allocator(torch, size * dtypes[dtype].itemsize)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows = [
            _bench_function(
                spec.path,
                fn,
                module,
                dev,
                dtypes[dtype],
                size,
                repeats,
                warmup,
                compile,
                backend,
                kernel_module,
                bandwidth,
            )
            for fn in spec.functions
            if names is None or fn.name in names
        ]
        used_threads = torch.get_num_threads()
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise BenchError(
            f"out of memory at size {size:,} on {dev}: {_reason(err)}"
        ) from None
    except RuntimeError as err:
        if "alloc" not in str(err) and "out of memory" not in str(err):
            raise
        raise BenchError(
            f"out of memory at size {size:,} on {dev}: {_reason(err)}"
        ) from None
    finally:
        torch.set_num_threads(previous_threads)
    return BenchReport(
        device=str(dev),
        dtype=dtype,
        size=size,
        repeats=repeats,
        compile=compile,
        backend=backend if compile else None,
        torch_version=torch.__version__,
        threads=used_threads,
        functions=rows,
    )
