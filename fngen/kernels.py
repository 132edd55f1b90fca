"""One fused Triton kernel each way for a pointwise function.

A `Kernel` describes one ``@triton.jit`` kernel and its launcher: a
straight-line program (`fngen.schedule.Block`s, as the derivation's forward
and backward are) over tensor and scalar arguments, and the outputs it
stores.  It knows nothing of specs: `forward_kernel` and `backward_kernel`
make one from a `Derivation`, and a plan stage can make one from its own
plan.  `module_source` prints kernels and launchers as a Python module.

What a kernel does:

* Every tensor argument and output is contiguous, of one shape and one dtype
  (float16, bfloat16, float32 or float64) on one device; `_can_launch` says
  whether tensors qualify, and a launcher raises ValueError on others.
  Broadcasting is left to the torch path: the dispatch calls a kernel only
  for tensors of one shape (so the program's ``SumToSize``, the reduction of
  a broadcast gradient, is the identity here).
* One program instance per ``BLOCK_SIZE`` elements, with masked loads and
  stores for the last partial block; int64 offsets, for tensors past 2**31
  elements.  An empty tensor launches nothing; a 0-dim one is one element.
* Values are loaded and computed in ``COMPUTE_DTYPE``: float32, or float64
  for float64 tensors (float16 and bfloat16 are upcast, computed in float32
  and stored in their own dtype, as inductor does); float and int scalar
  arguments are made the compute dtype too (a float argument reaches the
  kernel as a float64, as Python has it).  Bool scalars stay bools.
* A backward kernel has one ``tl.constexpr`` flag per input gradient
  (``NEEDS_X``); each guarded block of the program runs under ``if
  NEEDS_X or ...:``, as do the loads only it reads, so a gradient that is
  not needed costs nothing: its code is not compiled and its output is not
  allocated (its pointer is None).
"""

from __future__ import annotations

import contextlib
import itertools
import textwrap
from dataclasses import dataclass, field

import black
import sympy as sp

from fngen import functions as F
from fngen import tensorops as T
from fngen.formula import is_condition
from fngen.printer import math_text
from fngen.schedule import Block, Step, schedule
from fngen.triton_printer import HELPERS, PrintError, TritonPrinter

KINDS = ("tensor", "float", "int", "bool")

# The launchers' block: 1024 elements and Triton's default of 4 warps, the
# usual choice for a memory-bound elementwise kernel.
BLOCK_SIZE = 1024

_BLACK_MODE = black.Mode(target_versions={black.TargetVersion.PY310}, line_length=88)


class NotPointwise(Exception):
    """A program that no elementwise kernel computes (a reduction, a matrix
    product, a broadcast that is not a gradient's reduction), or that the
    Triton printer cannot print: the function keeps its torch code."""


@dataclass(frozen=True)
class KernelArg:
    """An argument of a kernel: a tensor (a pointer the kernel loads from)
    or a Python number (a scalar argument of the kernel)."""

    symbol: sp.Symbol
    kind: str = "tensor"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"argument kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class KernelOutput:
    """A tensor the kernel stores: the value of `symbol` in the program.

    `guard`: the index of the flag (in `Kernel.needs`) without which it is
    neither computed nor allocated (the launcher returns None); None when it
    always is.  `dtype`: ``"like"`` the tensor arguments, or ``"bool"``."""

    symbol: sp.Symbol
    guard: int | None = None
    dtype: str = "like"

    def __post_init__(self):
        if self.dtype not in ("like", "bool"):
            raise ValueError(f"output dtype {self.dtype!r} is not 'like' or 'bool'")


@dataclass(frozen=True)
class Kernel:
    """One elementwise kernel and its launcher.

    name: the launcher's name; the kernel is ``{name}_kernel``.
    doc: what it computes, the first lines of both docstrings.
    args: the launcher's arguments in order; tensors are loaded, numbers
        passed as kernel scalars.
    outputs: what it stores, in the order the launcher returns them.
    program: the assignments, in order; a block's guard is a set of indices
        into `needs`.
    needs: the names of the flags (an input's name: ``x`` gives the kernel's
        ``NEEDS_X`` and the launcher's ``needs_x=True``); empty for a
        forward kernel.
    """

    name: str
    doc: str
    args: tuple[KernelArg, ...]
    outputs: tuple[KernelOutput, ...]
    program: tuple[Block, ...]
    needs: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"kernel name {self.name!r} is not an identifier")
        if not any(a.kind == "tensor" for a in self.args):
            raise ValueError(f"{self.name}: a kernel needs a tensor argument")
        if not self.outputs:
            raise ValueError(f"{self.name}: a kernel needs an output")
        known = {a.symbol for a in self.args}
        assigned: dict[sp.Symbol, frozenset[int]] = {}
        for block in self.program:
            if any(not 0 <= i < len(self.needs) for i in block.guard):
                raise ValueError(f"{self.name}: guard {set(block.guard)} has no flag")
            for target, expr in block.assignments:
                unknown = expr.free_symbols - known - set(assigned)
                if unknown:
                    names = ", ".join(sorted(s.name for s in unknown))
                    raise ValueError(f"{self.name}: {target} reads unknown {names}")
                if target in assigned or target in known:
                    raise ValueError(f"{self.name}: {target} is assigned twice")
                assigned[target] = block.guard
        for out in self.outputs:
            if out.symbol not in assigned:
                raise ValueError(f"{self.name}: output {out.symbol} is not assigned")
            guard = frozenset() if out.guard is None else frozenset({out.guard})
            if assigned[out.symbol] != guard:
                raise ValueError(
                    f"{self.name}: output {out.symbol} is computed under guard "
                    f"{set(assigned[out.symbol])}, stored under {set(guard)}"
                )

    @property
    def tensors(self) -> tuple[sp.Symbol, ...]:
        return tuple(a.symbol for a in self.args if a.kind == "tensor")

    @property
    def scalars(self) -> tuple[KernelArg, ...]:
        return tuple(a for a in self.args if a.kind != "tensor")


# -- from a derivation ------------------------------------------------------


def _pointwise(expr: sp.Basic) -> sp.Basic:
    """`expr` as an elementwise kernel computes it: a gradient's reduction to
    its input's shape, or its expansion to it (zeros of an input's shape,
    the gradient of a step), is the identity (every tensor has one shape), and a
    fused function (silu, mish, gelu, elu, their derivatives) is its formula,
    which the kernel computes in the same pass anyway."""

    def lower(e):
        if isinstance(e, (T.SumToSize, T.Expand)) and isinstance(e.args[1], T.ShapeOf):
            return lower(e.args[0])
        if isinstance(e, T.TensorOp):
            name = type(e).__name__.removeprefix("Tensor").lower()
            raise NotPointwise(f"it is not pointwise ({name})")
        if not e.args:
            return e
        args = [lower(a) for a in e.args]
        if isinstance(e, F._Fused):
            return lower(type(e).formula(*args))
        return e.func(*args) if args != list(e.args) else e

    return lower(expr)


def lower_program(
    program: tuple[Block, ...], everyone: frozenset[int], finals=frozenset()
) -> tuple[Block, ...]:
    """`program` made elementwise (see `_pointwise`); where that expanded a
    fused function, scheduled again so that what the expansions share is
    computed once.  `everyone` and `finals` as `fngen.schedule.schedule`
    takes them."""
    steps, changed, taken = [], False, set()
    for block in program:
        guard = block.guard or everyone
        for target, expr in block.assignments:
            lowered = _pointwise(expr)
            changed |= lowered != expr
            steps.append(Step(target, lowered, guard))
            taken |= {target.name} | {s.name for s in expr.free_symbols}
    if changed:
        program = schedule(steps, everyone, taken, keep_guards=frozenset(finals))
    return _name_squared_bases(program, taken)


def _name_squared_bases(program: tuple[Block, ...], taken: set[str]):
    """`program` with the compound base of each square or cube named on a
    line of its own, in the block that uses it: the printer writes ``b**2``
    as ``b * b`` (exact, as torch.pow is), which would print a compound `b`
    twice."""
    taken = set(taken) | {t.name for b in program for t, _ in b.assignments}
    fresh = (f"t{n}" for n in itertools.count())
    changed = False
    blocks = []
    for block in program:
        names: dict[sp.Expr, sp.Symbol] = {}

        def named(expr: sp.Expr) -> sp.Expr:
            return expr.xreplace(
                {
                    sp.Pow(b, n): sp.Pow(t, n)
                    for b, t in names.items()
                    for n in (2, 3, -2, -3)
                }
            )

        assignments = []
        for target, expr in block.assignments:
            bases = {
                p.base
                for p in sp.preorder_traversal(expr)
                if isinstance(p, sp.Pow)
                and p.exp in (2, 3, -2, -3)
                and not p.base.is_Atom
                and not p.base.is_number  # a constant: folded, not a variable
                and p.base not in names
            }
            # Inner bases first: a base may hold another's square.
            for base in sorted(bases, key=lambda b: (sp.count_ops(b), sp.srepr(b))):
                value = named(base)
                name = next(n for n in fresh if n not in taken)
                taken.add(name)
                names[base] = sp.Symbol(name, real=True)
                assignments.append((names[base], value))
            assignments.append((target, named(expr)))
        changed |= bool(names)
        blocks.append(Block(block.guard, tuple(assignments)))
    return tuple(blocks) if changed else program


def _input_args(fn, symbols: set[sp.Symbol]) -> list[KernelArg]:
    args = []
    for spec in fn.inputs:
        symbol = fn.symbol(spec.name)
        if symbol in symbols:
            if spec.kind.value not in KINDS:  # a long tensor of class indices
                raise NotPointwise(f"{spec.name} is a {spec.kind.value} input")
            args.append(KernelArg(symbol, spec.kind.value))
    return args


def _formula_text(fn) -> str:
    """The formula as the user wrote it, its statements joined by ``;``."""
    text = getattr(fn.formula, "text", None)
    if text:
        return "; ".join(
            line.strip() for line in text.strip().splitlines() if line.strip()
        )
    return "; ".join(f"{out} = {math_text(expr)}" for out, expr in fn.formula.outputs)


def _read(program: tuple[Block, ...]) -> set[sp.Symbol]:
    return set().union(*(e.free_symbols for b in program for _, e in b.assignments))


def forward_kernel(fn, d, name: str | None = None) -> Kernel:
    """The forward kernel of `fn` from its derivation `d`: the outputs from
    the inputs.  Raises `NotPointwise`."""
    program = lower_program(d.forward, frozenset())
    args = _input_args(fn, _read(program))
    if not any(a.kind == "tensor" for a in args):
        raise NotPointwise(f"{fn.name}: no output reads a tensor")
    outputs = tuple(
        KernelOutput(out, None, "bool" if is_condition(expr) else "like")
        for out, expr in zip(d.outputs, _output_exprs(fn, d))
    )
    doc = f"Forward of {fn.name}: {_formula_text(fn)}."
    name = name or f"{fn.name}_forward"
    return _checked(Kernel(name, doc, tuple(args), outputs, program))


def _output_exprs(fn, d) -> list[sp.Expr]:
    exprs = dict(fn.formula.outputs)
    return [exprs.get(out, out) for out in d.outputs]


def backward_kernel(fn, d, name: str | None = None) -> Kernel:
    """The backward kernel of `fn` from its derivation `d`: every needed
    input gradient from the incoming gradients and the saved tensors, in
    one pass.  Raises `NotPointwise`."""
    grads = [(name, symbol) for name, symbol in d.grads if symbol is not None]
    if not grads:
        raise ValueError(f"{fn.name} has no input gradient: no backward kernel")
    everyone = frozenset(range(len(grads)))
    finals = {symbol for _, symbol in grads}
    program = lower_program(d.backward, everyone, finals)
    read = _read(program)
    args = [KernelArg(g) for g in d.grad_symbols if g in read]
    args += [KernelArg(s) for s in d.saved if s in read]
    args += [a for a in _input_args(fn, read) if a.kind != "tensor"]
    outputs = tuple(KernelOutput(symbol, i) for i, (_, symbol) in enumerate(grads))
    doc = f"Backward of {fn.name}: {_formula_text(fn)}."
    needs = tuple(name for name, _ in grads)
    return _checked(
        Kernel(name or f"{fn.name}_backward", doc, tuple(args), outputs, program, needs)
    )


def _checked(kernel: Kernel) -> Kernel:
    """`kernel`, once its body prints: what the printer cannot print makes
    the function keep its torch code, at generation time."""
    try:
        KernelWriter(kernel).kernel_lines()
    except PrintError as err:
        raise NotPointwise(str(err)) from err
    return kernel


# -- printing ----------------------------------------------------------------

# Names the module and the kernels use; a formula's name that is one of them
# is renamed in the kernel (``mask`` -> ``mask_``).
RESERVED = frozenset(
    {
        "tl",
        "triton",
        "libdevice",
        "torch",
        "offsets",
        "mask",
        "n_elements",
        "grid",
        "BLOCK_SIZE",
        "COMPUTE_DTYPE",
        "float",
        "int",
        "bool",
        "_BLOCK_SIZE",
        "_KERNEL_DTYPES",
        "_compute_dtype",
        "_can_launch",
        "_check_launch",
        *HELPERS,
    }
)


class _Names:
    def __init__(self, taken):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        name = base
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name


@dataclass
class KernelWriter:
    """Prints one `Kernel` as its ``@triton.jit`` function and launcher."""

    kernel: Kernel
    # Whether the launcher checks its tensors (`_check_launch`): not in a
    # generated module, whose Function calls it only where `_kernels_take`
    # said yes.
    checked: bool = True
    names: dict = field(init=False)

    def __post_init__(self):
        k = self.kernel
        symbols = [a.symbol for a in k.args]
        symbols += [t for b in k.program for t, _ in b.assignments]
        pool = _Names(RESERVED | {f"{k.name}_kernel", k.name})
        self.names = {s: pool.fresh(s.name) for s in dict.fromkeys(symbols)}
        self.pointers = {
            s: pool.fresh(f"{s.name}_ptr")
            for s in [*k.tensors, *(o.symbol for o in k.outputs)]
        }
        self.flags = [pool.fresh(f"NEEDS_{name.upper()}") for name in k.needs]
        self.keywords = [pool.fresh(f"needs_{name}") for name in k.needs]
        self.printer = TritonPrinter(self.names)

    # The kernel -------------------------------------------------------------

    def _condition(self, guard) -> str:
        return " or ".join(self.flags[i] for i in sorted(guard))

    def _load_guards(self) -> dict[sp.Symbol, frozenset[int]]:
        """Each tensor argument that the program reads, with the guard it
        is loaded under: the union of its readers' guards, or always."""
        guards: dict[sp.Symbol, frozenset[int] | None] = {}
        for block in self.kernel.program:
            for _, expr in block.assignments:
                for s in expr.free_symbols & set(self.kernel.tensors):
                    if not block.guard or guards.get(s, ()) == frozenset():
                        guards[s] = frozenset()
                    else:
                        guards[s] = guards.get(s, frozenset()) | block.guard
        # Under every flag of several is always: the launcher launches for
        # one at least.
        everyone = frozenset(range(len(self.kernel.needs)))
        return {
            s: frozenset() if guards[s] == everyone and len(everyone) > 1 else guards[s]
            for s in self.kernel.tensors
            if s in guards
        }

    def _load(self, symbol) -> str:
        return (
            f"{self.names[symbol]} = tl.load({self.pointers[symbol]} + offsets,"
            " mask=mask).to(COMPUTE_DTYPE)"
        )

    def kernel_lines(self) -> list[str]:
        k = self.kernel
        lines = [
            "offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE"
            " + tl.arange(0, BLOCK_SIZE)",
            "mask = offsets < n_elements",
        ]
        read = _read(k.program)
        for a in k.scalars:
            if a.kind in ("float", "int") and a.symbol in read:
                name = self.names[a.symbol]
                lines.append(f"{name} = tl.full((), {name}, COMPUTE_DTYPE)")
        # Each tensor is loaded just before the first block that reads it:
        # inside that block when their guards agree, else under its own.
        load_guards = self._load_guards()
        loaded: set[sp.Symbol] = set()
        stored = {o.symbol: o for o in k.outputs}
        for block in k.program:
            reads = set().union(*(e.free_symbols for _, e in block.assignments))
            inside, before = [], {}
            for s in load_guards:
                if s in reads and s not in loaded:
                    loaded.add(s)
                    if load_guards[s] == block.guard:
                        inside.append(s)
                    else:
                        before.setdefault(load_guards[s], []).append(s)
            for guard, symbols in before.items():
                indent = ""
                if guard:
                    lines.append(f"if {self._condition(guard)}:")
                    indent = "    "
                lines += [indent + self._load(s) for s in symbols]
            indent = ""
            if block.guard:
                lines.append(f"if {self._condition(block.guard)}:")
                indent = "    "
            lines += [indent + self._load(s) for s in inside]
            for target, expr in block.assignments:
                name = self.names[target]
                lines.append(f"{indent}{name} = {self.printer.doprint(expr)}")
                if target in stored:
                    # tl.store casts to the pointer's dtype: bfloat16 stays so.
                    pointer = self.pointers[target]
                    lines.append(
                        f"{indent}tl.store({pointer} + offsets, {name}, mask=mask)"
                    )
        return lines

    def kernel_source(self) -> str:
        k = self.kernel
        params = [self.pointers[s] for s in k.tensors]
        params += [self.pointers[o.symbol] for o in k.outputs]
        for a in k.scalars:
            # A Python float is a float32 argument unless annotated: float64,
            # then made the compute dtype in the body.
            annotation = ": tl.float64" if a.kind == "float" else ""
            params.append(f"{self.names[a.symbol]}{annotation}")
        params += [
            "n_elements",
            "BLOCK_SIZE: tl.constexpr",
            "COMPUTE_DTYPE: tl.constexpr",
        ]
        params += [f"{flag}: tl.constexpr" for flag in self.flags]
        body = self.kernel_lines()
        return "\n".join(
            [
                "@triton.jit",
                f"def {k.name}_kernel({', '.join(params)}):",
                _indent(_docstring(self._kernel_doc())),
                *(f"    {line}" for line in body),
            ]
        )

    def _kernel_doc(self) -> str:
        k = self.kernel
        reads = _and([self.names[s] for s in k.tensors])
        writes = _and(
            [
                self.names[o.symbol]
                + ("" if o.guard is None else f" (if {self.flags[o.guard]})")
                for o in k.outputs
            ]
        )
        return (
            f"{k.doc}\n\nReads {reads} and writes {writes}, BLOCK_SIZE elements"
            " a program, computed in COMPUTE_DTYPE and stored in the tensors' dtype."
        )

    # The launcher -----------------------------------------------------------

    def launcher_source(self) -> str:
        k = self.kernel
        params = [self.names[a.symbol] for a in k.args]
        params += [f"{kw}=True" for kw in self.keywords]
        tensors = [self.names[s] for s in k.tensors]
        like = tensors[0]
        lines = []
        if self.checked:
            lines.append(f"_check_launch({k.name!r}, {', '.join(tensors)})")
        for o in k.outputs:
            dtype = ", dtype=torch.bool" if o.dtype == "bool" else ""
            allocate = f"torch.empty_like({like}{dtype})"
            if o.guard is not None:
                allocate += f" if {self.keywords[o.guard]} else None"
            lines.append(f"{self.names[o.symbol]} = {allocate}")
        lines.append(f"n_elements = {like}.numel()")
        launch = "n_elements > 0"
        if len(self.keywords) == 1:
            launch += f" and {self.keywords[0]}"
        elif self.keywords:
            launch += f" and ({' or '.join(self.keywords)})"
        convert = {"float": "float", "int": "int", "bool": "bool"}
        args = tensors + [self.names[o.symbol] for o in k.outputs]
        args += [f"{convert[a.kind]}({self.names[a.symbol]})" for a in k.scalars]
        args += [
            "n_elements",
            "BLOCK_SIZE=_BLOCK_SIZE",
            f"COMPUTE_DTYPE=_compute_dtype({like})",
        ]
        args += [f"{flag}={kw}" for flag, kw in zip(self.flags, self.keywords)]
        lines += [
            f"if {launch}:",
            "    grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)",
            f"    {k.name}_kernel[grid]({', '.join(args)})",
        ]
        results = [self.names[o.symbol] for o in k.outputs]
        if k.needs or len(results) > 1:
            lines.append(
                f"return {', '.join(results)}{',' if len(results) == 1 else ''}"
            )
        else:
            lines.append(f"return {results[0]}")
        return "\n".join(
            [
                f"def {k.name}({', '.join(params)}):",
                _indent(_docstring(self._launcher_doc())),
                *(f"    {line}" for line in lines),
            ]
        )

    def _launcher_doc(self) -> str:
        k = self.kernel
        which = "`_can_launch`" if self.checked else "`_kernels_take`"
        text = (
            f"{k.doc}\n\nLaunches {k.name}_kernel on contiguous tensors of one"
            f" shape, dtype and device ({which}); broadcasting is the torch"
            " path's."
        )
        if k.needs:
            names = ", ".join(self.names[o.symbol] for o in k.outputs)
            text += f" Returns ({names}{',' if len(k.outputs) == 1 else ''}), None"
            text += " for a gradient not needed."
        return text


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _docstring(text: str, width: int = 76) -> str:
    """`text` as a docstring: paragraphs wrapped, quotes escaped."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    paragraphs = [
        textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False)
        for p in text.split("\n\n")
    ]
    body = "\n\n".join(paragraphs)
    return f'"""{body}\n"""' if "\n" in body else f'"""{body}"""'


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


# The module's own helpers, before the kernels.
RUNTIME = f'''\
_BLOCK_SIZE = {BLOCK_SIZE}
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _compute_dtype(tensor):
    """float64 stays float64; float32, float16 and bfloat16 compute in float32."""
    return tl.float64 if tensor.dtype == torch.float64 else tl.float32


def _can_launch(*tensors):
    """Whether the kernels take these tensors: contiguous, of one shape,
    dtype (a floating one) and device."""
    first = tensors[0]
    return first.dtype in _KERNEL_DTYPES and all(
        t.shape == first.shape
        and t.dtype == first.dtype
        and t.device == first.device
        and t.is_contiguous()
        for t in tensors
    )


def _check_launch(name, *tensors):
    if not _can_launch(*tensors):
        described = ", ".join(
            f"{{tuple(t.shape)}} {{t.dtype}} on {{t.device}}"
            + ("" if t.is_contiguous() else " (not contiguous)")
            for t in tensors
        )
        raise ValueError(
            f"{{name}} takes contiguous tensors of one shape, floating dtype and"
            f" device; got {{described}}"
        )
'''


# A generated module's kernel section, before its functions: the dispatch
# (defined with or without Triton), then the kernels under ``if triton is
# not None:``.  Its import of Triton is `IMPORTS`, with the module's.
IMPORTS = """\
try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # without Triton, every function runs its torch code
    triton = None
"""

DISPATCH = f'''\
# The device type the Triton kernels run on; None turns them off.
_KERNEL_DEVICE = "cuda"
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BLOCK_SIZE = {BLOCK_SIZE}


def _kernels_take(*tensors):
    """Whether a Function runs its Triton kernel on `tensors` rather than its
    torch code: Triton is installed; nothing compiles or traces (compiled,
    inductor fuses the torch code with its neighbours); the tensors are
    plain ones (not fake, nor a torch.func transform's) on the current
    `_KERNEL_DEVICE`, contiguous, of one shape and one floating dtype.
    Broadcasting is the torch code's."""
    first = tensors[0]
    device = first.device
    if triton is None or device.type != _KERNEL_DEVICE:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return (
        (device.index is None or device.index == torch.cuda.current_device())
        and first.dtype in _KERNEL_DTYPES
        and all(
            type(t) in (torch.Tensor, torch.nn.Parameter)
            and not torch._C._functorch.is_functorch_wrapped_tensor(t)
            and t.shape == first.shape
            and t.dtype == first.dtype
            and t.device == device
            and t.is_contiguous()
            for t in tensors
        )
    )
'''

_COMPUTE_DTYPE = '''\
def _compute_dtype(tensor):
    """float64 computes in float64; float32, float16 and bfloat16 in float32."""
    return tl.float64 if tensor.dtype == torch.float64 else tl.float32
'''


@contextlib.contextmanager
def launches_counted(module, names):
    """Meanwhile, each launcher of `module` named in `names` (those it has)
    appends its name to the list this yields when it is called: which
    kernels ran (`fngen check`'s kernel column, `fngen bench`)."""
    launched: list[str] = []
    originals = {n: getattr(module, n) for n in names if hasattr(module, n)}

    def counted(name, launcher):
        def launch(*args, **kwargs):
            launched.append(name)
            return launcher(*args, **kwargs)

        return launch

    try:
        for name, launcher in originals.items():
            setattr(module, name, counted(name, launcher))
        yield launched
    finally:
        for name, launcher in originals.items():
            setattr(module, name, launcher)


def embedded_source(kernels: list[Kernel]) -> str:
    """The kernel section of a generated module (unformatted): `DISPATCH`,
    then the kernels and launchers of `kernels` (unchecked: see
    `KernelWriter.checked`) under ``if triton is not None:``.  The module
    imports `IMPORTS`."""
    writers = [KernelWriter(k, checked=False) for k in kernels]
    parts = [_COMPUTE_DTYPE]
    helpers: set[str] = set()
    for w in writers:
        parts += [w.kernel_source(), w.launcher_source()]
        helpers |= w.printer.helpers
    parts[1:1] = [HELPERS[name] for name in sorted(helpers)]
    block = "\n\n".join(_indent(part.strip("\n")) for part in parts)
    return DISPATCH + "\n\nif triton is not None:\n" + block + "\n"


def module_source(
    kernels: list[Kernel], doc: str = "Generated by fngen.", formatted: bool = True
) -> str:
    """The kernels and their launchers as one module, formatted by black
    (`formatted`: the same code, unformatted, is faster to make for a
    test)."""
    writers = [KernelWriter(k) for k in kernels]
    helpers: set[str] = set()
    parts = []
    for w in writers:
        parts.append(w.kernel_source())
        parts.append(w.launcher_source())
        helpers |= w.printer.helpers
    header = [
        _docstring(doc),
        "",
        "import torch",
        "import triton",
        "import triton.language as tl",
        "from triton.language.extra import libdevice",
        "",
        RUNTIME,
    ]
    header += [HELPERS[name] for name in sorted(helpers)]
    source = "\n".join(header) + "\n\n" + "\n\n\n".join(parts) + "\n"
    return black.format_str(source, mode=_BLACK_MODE) if formatted else source


def function_kernels(
    fn, d=None, names: tuple[str, str] | None = None
) -> tuple[Kernel, Kernel | None]:
    """The forward and backward kernels of `fn` (from `d`, by default its
    derivation with PyTorch's fused functions recognized, as the generated
    module's), named `names` (by default ``NAME_forward`` and
    ``NAME_backward``); no backward kernel where no input has a gradient (a
    step: the backward returns None).  Raises `NotPointwise`."""
    if d is None:
        from fngen.derive import derive
        from fngen.fuse import fuse_function

        d = derive(fuse_function(fn))
    forward_name, backward_name = names or (f"{fn.name}_forward", f"{fn.name}_backward")
    forward = forward_kernel(fn, d, forward_name)
    if not any(symbol is not None for _, symbol in d.grads) or _all_zero(d):
        return forward, None
    return forward, backward_kernel(fn, d, backward_name)


def _all_zero(d) -> bool:
    """Whether every input gradient of `d` is zero elementwise (a step's:
    zeros of the input's shape), which the torch path writes alone."""
    grads = {symbol for _, symbol in d.grads if symbol is not None}
    values = [
        expr
        for block in d.backward
        for target, expr in block.assignments
        if target in grads
    ]
    try:
        return all(_pointwise(expr) == 0 for expr in values)
    except NotPointwise:
        return False


def load_kernel_module(source: str, name: str = "fngen_kernels", interpret=None):
    """Import a module of kernels from its `source`.

    `interpret`: define the kernels for Triton's interpreter, which runs them
    on CPU tensors (``TRITON_INTERPRET=1`` while the ``@triton.jit``
    decorators run, and only then); None: as the environment says.  Under the
    interpreter the module's ``libdevice`` is `fngen.triton_interpret`'s,
    which it can run, and a generated module's kernels run on CPU tensors
    (its ``_KERNEL_DEVICE``)."""
    import os

    from fngen.importing import import_source

    if interpret is None:
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if interpret:
        # Triton itself imported as it would be without the interpreter:
        # imported under it, its standard library is made of interpreted
        # functions, and the first launch (which imports Triton's gluon,
        # asserting them compiled) fails once the variable is unset.
        import triton  # noqa: F401
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        module = import_source(source, name, f"<fngen kernels {name}>")
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    if interpret:
        from fngen.triton_interpret import libdevice

        module.libdevice = libdevice
        if hasattr(module, "_KERNEL_DEVICE"):  # a generated module's kernels
            module._KERNEL_DEVICE = "cpu"
    return module
