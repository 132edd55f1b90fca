"""`fngen check`: prove the generated gradients right.

For each function: build the module in memory, sample inputs from each
declared domain on the chosen device, and run

* ``reference``       forward and gradients against plain torch autograd on
                      the same formula (an independent interpreter),
* ``gradcheck``       `torch.autograd.gradcheck` (float64),
* ``double_backward`` `torch.autograd.gradgradcheck` (float64),
* ``forward_ad``      gradcheck of the jvp, with batched gradients,
* ``vmap``            `torch.func.vmap` against a loop,
* ``compile``         `torch.compile(fullgraph=True)` against eager,
* ``float32``         a float32 run: finite where float64 is, and close to it.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

from fngen.api import load
from fngen.derive import nonlinear_overrides
from fngen.model import FunctionSpec, InputKind, Spec
from fngen.spec import CHECK_NAMES

FLOAT64_TOL = dict(rtol=1e-7, atol=1e-9)
FLOAT32_TOL = dict(rtol=2e-3, atol=2e-4)
DEFAULT_SCALARS = {InputKind.FLOAT: 1.5, InputKind.INT: 2, InputKind.BOOL: True}
DEFAULT_SIZE = 3


class DeviceError(Exception):
    """The requested device does not exist on this machine."""


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

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.functions)

    def table(self) -> str:
        """One row per function and a column per check; reasons below."""
        marks = {True: "✓", False: "✗", None: "-"}
        width = max([len("function")] + [len(f.name) for f in self.functions])
        header = "function".ljust(width) + "  " + "  ".join(CHECK_NAMES)
        lines = [f"fngen check on {self.device} ({self.dtype})", header]
        for f in self.functions:
            cells = [
                marks[f.outcomes[c].ok if c in f.outcomes else None].center(len(c))
                for c in CHECK_NAMES
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
        lo, hi = spec.domain
        value = torch.rand(
            batch + tuple(shape), generator=generator, dtype=torch.float64
        )
        value = (value * (hi - lo) + lo).to(dtype=dtype, device=device)
        args.append(value.requires_grad_())
    return args


def _compare(actual, expected, tol) -> str | None:
    import torch

    if actual is None and expected is None:
        return None
    if actual is None or expected is None:
        zero = expected if actual is None else actual
        if torch.count_nonzero(zero) == 0:
            return None
        return "one side is None, the other is not zero"
    if actual.shape != expected.shape:
        return f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if not torch.allclose(actual, expected, equal_nan=True, **tol):
        diff = (actual - expected).abs().nan_to_num(nan=float("inf")).max().item()
        return f"max abs difference {diff:.3g}"
    return None


def _outputs(value):
    return value if isinstance(value, tuple) else (value,)


class FunctionChecker:
    def __init__(self, fn: FunctionSpec, module, device, dtype):
        import torch

        self.torch = torch
        self.fn = fn
        self.module = module
        self.device = device
        self.dtype = dtype
        self.func = getattr(module, fn.name)
        self.seed = 0
        self.tol = dict(FLOAT64_TOL)
        if fn.check.atol is not None:
            self.tol["atol"] = fn.check.atol
        if fn.check.rtol is not None:
            self.tol["rtol"] = fn.check.rtol

        # The optional tensors left out (None) in the variant under check.
        self.absent: frozenset[str] = frozenset()

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
        return [a for a in args if self.torch.is_tensor(a)]

    def grads(self, function, args, seed_grads):
        """Outputs and input gradients; a gradient that autograd does not
        reach (a step function in the reference) is None, that is zero."""
        outputs = [o for o in _outputs(function(*args)) if o.is_floating_point()]
        tensors = self.differentiable(args)
        pairs = [(o, g) for o, g in zip(outputs, seed_grads) if o.requires_grad]
        grads = [None] * len(tensors)
        if pairs:
            grads = self.torch.autograd.grad(
                [o for o, _ in pairs], tensors, [g for _, g in pairs], allow_unused=True
            )
        return [o.detach() for o in outputs], list(grads)

    @property
    def run_tol(self):
        """Tolerances for comparisons in the dtype under check."""
        return self.tol if self.dtype == self.torch.float64 else FLOAT32_TOL

    def check_reference(self):
        from fngen.reference import reference_forward

        args = self.inputs()
        generated = _outputs(self.func(*args))
        seeds = [
            self.torch.randn(o.shape, dtype=o.dtype, device=o.device)
            for o in generated
            if o.is_floating_point()
        ]
        out_gen, grads_gen = self.grads(self.func, args, seeds)
        out_ref, grads_ref = self.grads(
            lambda *a: reference_forward(self.fn, *a), args, seeds
        )
        tol = self.run_tol
        for i, (a, b) in enumerate(zip(out_gen, out_ref)):
            problem = _compare(a, b, tol)
            if problem:
                return f"forward output {i}: {problem}"
        overridden = {name for name, _ in self.fn.grads}
        names = [
            s.name for s in self.fn.inputs if s.is_tensor and s.name not in self.absent
        ]
        for name, a, b in zip(names, grads_gen, grads_ref):
            if name in overridden:
                continue
            problem = _compare(a, b, tol)
            if problem:
                return f"gradient of {name}: {problem}"
        return None

    def _gradcheck(self, **options):
        args = self.inputs(self.torch.float64)
        tol = {k: v for k, v in self.tol.items()}
        return self.torch.autograd.gradcheck(
            self.func,
            args,
            atol=max(tol["atol"], 1e-6),
            rtol=max(tol["rtol"], 1e-4),
            **options,
        )

    def check_gradcheck(self):
        self._gradcheck()

    def check_double_backward(self):
        args = self.inputs(self.torch.float64)
        self.torch.autograd.gradgradcheck(self.func, args, atol=1e-5, rtol=1e-4)

    def check_forward_ad(self):
        if self.fn.grads:
            return self._forward_matches_backward()
        self._gradcheck(
            check_forward_ad=True,
            check_backward_ad=False,
            check_undefined_grad=False,
            check_batched_forward_grad=True,
        )
        self._gradcheck(check_batched_grad=True)

    def _forward_matches_backward(self):
        """With a `grad:` override there is no true derivative to compare
        with: the jvp must be the transpose of the overridden vjp."""
        torch = self.torch
        args = [
            a.detach() if torch.is_tensor(a) else a for a in self.inputs(torch.float64)
        ]
        for i, arg in enumerate(args):
            if not torch.is_tensor(arg):
                continue

            def along(x, i=i):
                return self.func(*args[:i], x, *args[i + 1 :])

            forward = torch.autograd.functional.jacobian(
                along, arg, strategy="forward-mode", vectorize=True
            )
            backward = torch.autograd.functional.jacobian(along, arg)
            # One Jacobian an output (a tuple of them for several).
            for out, (f, b) in enumerate(zip(_outputs(forward), _outputs(backward))):
                problem = _compare(f, b, self.tol)
                if problem:
                    name = self.fn.inputs[i].name
                    return f"jvp and vjp of {name} disagree (output {out}): {problem}"
        return None

    def check_vmap(self):
        torch = self.torch
        batch = 2
        args = self.inputs(batch=(batch,))
        in_dims = tuple(0 if torch.is_tensor(a) else None for a in args)
        detached = [a.detach() if torch.is_tensor(a) else a for a in args]
        mapped = _outputs(torch.func.vmap(self.func, in_dims=in_dims)(*detached))
        for i in range(batch):
            single = _outputs(
                self.func(*[a[i] if torch.is_tensor(a) else a for a in detached])
            )
            for a, b in zip(mapped, single):
                problem = _compare(a[i], b, self.run_tol)
                if problem:
                    return f"sample {i}: {problem}"
        # torch.func.grad and jacrev through the Function too.
        tensors = [i for i, a in enumerate(detached) if torch.is_tensor(a)]

        def total(*a):
            return sum(
                o.sum() for o in _outputs(self.func(*a)) if o.is_floating_point()
            )

        torch.func.grad(total, argnums=tuple(tensors))(
            *[a[0] if torch.is_tensor(a) else a for a in detached]
        )
        return None

    def check_compile(self):
        torch = self.torch
        torch._dynamo.reset()
        compiled = torch.compile(
            self.func,
            fullgraph=True,
            backend="aot_eager" if self.device.type != "cuda" else "inductor",
        )
        args = self.inputs()
        seeds = [
            torch.randn(o.shape, dtype=o.dtype, device=o.device)
            for o in _outputs(self.func(*args))
            if o.is_floating_point()
        ]
        out_eager, grads_eager = self.grads(self.func, args, seeds)
        out_comp, grads_comp = self.grads(compiled, args, seeds)
        tol = self.run_tol
        for a, b in zip(out_comp + grads_comp, out_eager + grads_eager):
            problem = _compare(a, b, tol)
            if problem:
                return problem
        return None

    def check_float32(self):
        torch = self.torch
        wide = self.inputs(torch.float64)
        narrow = [
            a.detach().float().requires_grad_() if torch.is_tensor(a) else a
            for a in wide
        ]
        seeds = [
            torch.randn(o.shape, dtype=torch.float64, device=o.device)
            for o in _outputs(self.func(*wide))
            if o.is_floating_point()
        ]
        out64, grads64 = self.grads(self.func, wide, seeds)
        out32, grads32 = self.grads(self.func, narrow, [s.float() for s in seeds])
        for a, b in zip(out32 + grads32, out64 + grads64):
            if a is None or b is None:
                continue
            if a.dtype != torch.float32:
                return f"a float32 input gave a {a.dtype} result"
            problem = _compare(a.double(), b, FLOAT32_TOL)
            if problem:
                return problem
        return None

    def run(self, checks) -> FunctionReport:
        report = FunctionReport(self.fn.name)
        skips = dict(self.fn.check.skip)
        if self.fn.grads:
            overridden = ", ".join(name for name, _ in self.fn.grads)
            skips.setdefault(
                "gradcheck", f"the gradient of {overridden} is overridden by grad:"
            )
        nonlinear = nonlinear_overrides(self.fn)
        if nonlinear:
            skips.setdefault(
                "forward_ad",
                f"the grad: override of {', '.join(nonlinear)} is not linear in grad",
            )
        if self.fn.once_differentiable:
            skips.setdefault("double_backward", "once_differentiable")
            skips.setdefault("vmap", "once_differentiable")
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


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    if len(first) > 160:
        first = first[:157] + "..."
    return (
        f"{type(err).__name__}: {first}"
        if not first.startswith(type(err).__name__)
        else first
    )


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
    for name in names:
        if name not in known:
            raise KeyError(f"no function '{name}' in {spec.path}")
    module = load(spec)
    reports = []
    for fn in spec.functions:
        if names and fn.name not in names:
            continue
        checker = FunctionChecker(fn, module, dev, torch_dtype)
        reports.append(checker.run(checks or list(CHECK_NAMES)))
    return Report(device_name, dtype_name, reports)


__all__ = ["check_spec", "Report", "DeviceError", "sample_inputs"]
