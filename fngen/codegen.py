"""Render a validated spec into a formatted Python module.

All logic lives here; the Jinja2 template only places the precomputed strings.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import textwrap
from dataclasses import dataclass
import sys
from importlib import resources

import black
import jinja2
import sympy as sp
from sympy.printing.pycode import pycode

from fngen import __version__
from fngen import dag
from fngen import kernels as K
from fngen import tensorops as T
from fngen.derive import (
    Derivation,
    SaveChoice,
    choose_save,
    derive,
    derive_backward,
    forward_program,
    keep_intermediate,
    keep_reductions,
)
from fngen.model import FunctionSpec, InputKind, InputSpec, Spec
from fngen.errors import SpecError
from fngen.fuse import fuse_function
from fngen.printer import PrintError, TorchPrinter, math_text
from fngen.schedule import Block
from fngen.spec import class_name, dimension_names, module_init_arguments, parse_init

MAX_PRESENCE_OUTPUTS = 3
BLACK_MODE = black.Mode(target_versions={black.TargetVersion.PY310}, line_length=88)


def make_env() -> jinja2.Environment:
    """The one Jinja2 environment, used by the generator and the tests alike."""
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def _load_template(name: str) -> str:
    return resources.files("fngen.templates").joinpath(name).read_text(encoding="utf-8")


# A helper the generated code calls, and the helpers it brings along.
RUNTIME_COMPANIONS = {
    "_matmul_grad_a": ("_matmul_grad_b",),
    "_custom_op": ("_unaliased", "_pointwise_vmap", "_looped_vmap"),
}


@functools.lru_cache(maxsize=1)
def _runtime_functions() -> dict[str, str]:
    """Each function of fngen/templates/runtime.py, by name, as its source
    text (read as text: the generator never runs it)."""
    text = _load_template("runtime.py")
    lines = text.splitlines()
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef)
    }


def runtime_source(helpers: set[str]) -> str:
    """The source of the runtime helpers named in `helpers` and their
    companions, in the order of fngen/templates/runtime.py."""
    wanted = set(helpers)
    for name in helpers:
        wanted |= set(RUNTIME_COMPANIONS.get(name, ()))
    functions = _runtime_functions()
    unknown = wanted - set(functions)
    if unknown:
        raise KeyError(f"no runtime helper named {', '.join(sorted(unknown))}")
    return "\n\n\n".join(source for name, source in functions.items() if name in wanted)


def _escape_unprintable(text: str, keep: str = "") -> str:
    """Every character Python source cannot carry as itself, as an escape.

    Carriage returns, NULs, lone surrogates, line and paragraph separators
    and the other non-printable characters become `\\r`, `\\x00`, `\\ud800`...
    so that they can neither end a comment nor break the module's encoding.
    """
    return "".join(
        ch if ch.isprintable() or ch in keep else ascii(ch)[1:-1] for ch in text
    )


def comment_text(text: str) -> str:
    """`text` made safe inside a one-line `#` comment."""
    return _escape_unprintable(text)


def docstring(text: str) -> str:
    """`text` made safe inside triple double quotes, carried faithfully."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    text = _escape_unprintable(text, keep="\n\t")
    if text.endswith('"'):
        text += " "
    return text


def _reads(lines: list[str] | None, name: str) -> bool:
    """Whether one of `lines` reads `name` (all do when `lines` is None)."""
    if lines is None:
        return True
    word = re.compile(rf"\b{re.escape(name)}\b")
    return any(word.search(line) for line in lines)


def _join_guard(guard, needs) -> str:
    return " or ".join(needs[i] for i in sorted(guard))


class FunctionWriter:
    """Computes every string the template needs for one function."""

    def __init__(
        self,
        fn: FunctionSpec,
        variants: list[tuple[frozenset[str], Derivation]],
        tuple_outputs: bool = False,
    ):
        self.fn = fn
        # The class for torch.compile (see `traceable`): its code is printed
        # for inductor.
        self.tuple_outputs = tuple_outputs
        # One derivation per combination of absent optional tensors; the
        # one with every tensor present comes last and describes the API.
        self.variants = variants
        self.d = variants[-1][1]
        self.optional = [i.name for i in fn.inputs if i.optional]
        self.uses_math = False
        self.helpers: set[str] = set()
        # presence_variants, derived once per set of absent optional tensors.
        self._presence: dict[frozenset[str], list] = {}
        self.first_tensor = next(i.name for i in fn.float_inputs if not i.optional)
        # The function's Triton kernels (forward, backward or None), set by
        # `render_function` where it has them.
        self.kernels: tuple[K.Kernel, K.Kernel | None] | None = None
        # The save policy's sentence for the class docstring
        # (`derive.SaveChoice.note`), set by `function_choices`.
        self.save_note = ""

    def printer(self, dtype_of: str, shape_names=None) -> TorchPrinter:
        safe = {sp.Symbol(g.name, real=True) for g in self.d.grad_symbols}
        safe |= {t for t in self.d.tangent_symbols if t is not None}
        tensors = {self.fn.symbol(i.name) for i in self.fn.tensor_inputs}
        tensors |= set(self.d.outputs) | {op.result for op in self.fn.formula.ops}
        scalars = {self.fn.symbol(i.name) for i in self.fn.inputs if not i.is_tensor}
        return TorchPrinter(
            shape_names=shape_names,
            dtype_of=dtype_of,
            mask_safe=safe,
            tensors=tensors,
            scalars=scalars,
            select_then_scale=not self.tuple_outputs,
        )

    def emit(
        self, blocks: tuple[Block, ...], printer: TorchPrinter, needs: dict[int, str]
    ) -> list[str]:
        lines = []
        for block in blocks:
            indent = ""
            if block.guard:
                lines.append(f"if {_join_guard(block.guard, needs)}:")
                indent = "    "
            for target, expr in block.assignments:
                lines.append(f"{indent}{target.name} = {printer.doprint(expr)}")
                if printer.is_tensor(expr) or printer.is_scalar(expr):
                    # A number run through a torch function is a 0-dim tensor.
                    if not printer.is_math(expr):
                        printer.tensors |= {target}
                    else:
                        printer.scalars |= {target}
        self.uses_math |= printer.uses_math
        self.helpers |= printer.helpers
        return lines

    def branches(self, body, in_ctx: bool) -> list[str]:
        """`body(derivation)` for each variant, behind ``if bias is None:``
        (or ``ctx.bias_is_none``) tests when there are optional tensors."""
        if len(self.variants) == 1:
            return body(self.d)
        lines = []
        for n, (absent, d) in enumerate(self.variants):
            tests = []
            for name in self.optional:
                test = f"ctx.{name}_is_none" if in_ctx else f"{name} is None"
                if name not in absent:
                    test = f"not {test}" if in_ctx else f"{name} is not None"
                tests.append(test)
            head = (
                "else:"
                if n == len(self.variants) - 1
                else f"{'if' if n == 0 else 'elif'} {' and '.join(tests)}:"
            )
            lines.append(head)
            lines += [f"    {line}" for line in body(d)]
        return lines

    # -- the Function -----------------------------------------------------

    def _arg_names(self, kernel: K.Kernel) -> list[str]:
        return [a.symbol.name for a in kernel.args]

    def forward(self) -> list[str]:
        kernel = []
        if self.kernels:
            forward = self.kernels[0]
            tensors = ", ".join(i.name for i in self.fn.float_inputs)
            kernel = [
                f"if _kernels_take({tensors}):",
                f"    return {forward.name}({', '.join(self._arg_names(forward))})",
            ]

        def body(d):
            lines = kernel + self.emit(d.forward, self.printer(self.first_tensor), {})
            lines += self._unaliased_outputs(d)
            names = ", ".join(o.name for o in d.outputs)
            return lines + [f"return {names}"]

        return self.branches(body, in_ctx=False)

    def _unaliased_outputs(self, d) -> list[str]:
        """Copy an output that is an input itself (``a = x`` beside ``b =
        x**2``, or ``x**2 if use > 0 else x``), or the very tensor of an
        earlier output (``a = abs(x)`` beside ``b = abs(x)``): autograd
        refuses an input both returned as it is and saved for backward,
        forward-mode AD one returned as it is whose tangent is not a view
        of the input's, and one tensor returned twice."""
        inputs = {self.fn.symbol(i.name) for i in self.fn.tensor_inputs}
        values = {t: e for block in d.forward for t, e in block.assignments}
        lines = []
        returned = set()
        for out in d.outputs:
            value = values.get(out)
            # The tensor it is: t3 = t2; o0 = t3 makes o0 the tensor t2.
            tensor = out
            while isinstance(values.get(tensor), sp.Symbol):
                tensor = values[tensor]
            if value in inputs:
                lines.append(f"{out.name} = {out.name}.clone()  # an input")
            elif _view_of(value, values) in inputs:
                # Forward-mode AD drops the other outputs' tangents when
                # one is a view of an input without a tangent.
                lines.append(f"{out.name} = {out.name}.clone()  # a view of an input")
            elif tensor in returned:
                lines.append(f"{out.name} = {out.name}.clone()  # returned already")
            elif isinstance(value, sp.Piecewise):
                for branch, _ in value.args:
                    if branch in inputs:
                        lines += [
                            f"if {out.name} is {branch.name}:  # an input",
                            f"    {out.name} = {out.name}.clone()",
                        ]
            returned.add(tensor)
        return lines

    def setup_context(self, reads: list[str] | None = None) -> list[str]:
        """The setup_context body; a non-tensor argument is kept on ctx
        only where `reads` (the backward and jvp lines) reads it."""
        fn = self.fn
        lines = [
            f"{', '.join(i.name for i in fn.inputs)}{',' if len(fn.inputs) == 1 else ''} = inputs"
        ]
        outputs = [o.name for o in self.d.outputs]
        kept = set()
        for _, d in self.variants:
            kept |= set(d.saved) | set(self.backward_shapes(d)) | set(d.saved_for_jvp)
        if any(o in kept for o in self.d.outputs) or not all(
            self.d.differentiable_outputs
        ):
            lines.append(f"{', '.join(outputs)} = output")
        for out, differentiable in zip(self.d.outputs, self.d.differentiable_outputs):
            if not differentiable:
                lines.append(f"ctx.mark_non_differentiable({out.name})")
        for spec in fn.inputs:
            if not spec.is_tensor and _reads(reads, f"ctx.{spec.name}"):
                lines.append(f"ctx.{spec.name} = {spec.name}")
        for name in self.optional:
            lines.append(f"ctx.{name}_is_none = {name} is None")
        if self.presence_variants(self.d):
            lines.append("ctx.set_materialize_grads(False)")
        zero = self.zero_tangents()  # only with presence variants
        for spec in zero:
            shape = f"{spec.name}.shape"
            if spec.optional:
                shape = f"None if {spec.name} is None else {shape}"
            lines.append(f"ctx.{spec.name}_shape = {shape}")
        filled = {spec.name for spec in zero}

        def body(d):
            saves = []
            if d.saved:
                saves.append(
                    f"ctx.save_for_backward({', '.join(s.name for s in d.saved)})"
                )
            if d.saved_for_jvp:
                saves.append(
                    f"ctx.save_for_forward({', '.join(s.name for s in d.saved_for_jvp)})"
                )
            for symbol in self.backward_shapes(d):
                if symbol.name not in filled:  # saved above for the jvp
                    saves.append(f"ctx.{symbol.name}_shape = {symbol.name}.shape")
            return saves or ["pass"]

        body_lines = self.branches(body, in_ctx=False)
        rest = lines[1:] + ([] if body_lines == ["pass"] else body_lines)
        if not any(_reads(rest, i.name) for i in fn.inputs):
            return rest or ["pass"]  # nothing of the inputs is kept
        return lines[:1] + rest

    def _unpack(self, saved) -> list[str]:
        if not saved:
            return []
        names = ", ".join(s.name for s in saved)
        return [f"{names}{',' if len(saved) == 1 else ''} = ctx.saved_tensors"]

    def _scalars(self) -> list[str]:
        return [f"{i.name} = ctx.{i.name}" for i in self.fn.inputs if not i.is_tensor]

    def backward(self) -> list[str]:
        return self._used_scalars(
            self.branches(self._backward_by_presence, in_ctx=True)
        )

    def _used_scalars(self, lines: list[str]) -> list[str]:
        """`lines` without ``eps = ctx.eps`` where eps is not read (a kept
        value may stand for the only expression that read it)."""
        for spec in self.fn.inputs:
            if spec.is_tensor:
                continue
            read = f"{spec.name} = ctx.{spec.name}"
            others = [line for line in lines if line.strip() != read]
            if not _reads(others, spec.name):
                lines = others
        return lines

    def presence_variants(
        self, d: Derivation
    ) -> list[tuple[frozenset[int], Derivation]]:
        """With several differentiable outputs, the backward has a branch for
        each combination of incoming gradients that are None (treated as
        zero, with ``ctx.set_materialize_grads(False)``).  Past three
        outputs, zero gradients are materialised instead."""
        differentiable = [i for i, diff in enumerate(d.differentiable_outputs) if diff]
        if not 2 <= len(differentiable) <= MAX_PRESENCE_OUTPUTS:
            return []
        absent = next(a for a, v in self.variants if v is d)
        if absent not in self._presence:
            subsets = []
            for size in range(1, len(differentiable)):
                subsets += [
                    frozenset(c) for c in itertools.combinations(differentiable, size)
                ]
            if self.fn.kept:
                # The declared output alone (the usual backward), or the
                # kept outputs alone (double backward through them).
                subsets = [s for s in self.kept_groups(d) if s in subsets]
            self._presence[absent] = [
                (present, derive_backward(self.fn, absent, present, d.option))
                for present in subsets
            ]
        return self._presence[absent]

    def _backward_by_presence(self, d: Derivation) -> list[str]:
        variants = self.presence_variants(d)
        if not variants:
            return self._backward(d, d)
        grads = {
            i: g.name
            for i, (g, diff) in enumerate(zip(d.grad_symbols, d.differentiable_outputs))
            if diff
        }
        results = [name for name, _ in d.grads]
        lines = [
            f"if {' and '.join(f'{g} is None' for g in grads.values())}:",
            f"    return {', '.join('None' for _ in results)}{',' if len(results) == 1 else ''}",
        ]
        if self.fn.kept:
            return lines + self._backward_by_kept(d, variants, grads)
        branches = []
        for present, variant in variants:
            tests = [
                f"{g} is not None" if i in present else f"{g} is None"
                for i, g in grads.items()
            ]
            branches.append((" and ".join(tests), (), self._backward(variant, d)))
        return lines + _hoisted(branches, self._backward(d, d))

    def kept_groups(self, d: Derivation) -> list[frozenset[int]]:
        """The indices of the declared outputs, then of the kept ones."""
        declared = len(self.declared_outputs)
        indices = [i for i, diff in enumerate(d.differentiable_outputs) if diff]
        return [
            frozenset(i for i in indices if i < declared),
            frozenset(i for i in indices if i >= declared),
        ]

    def _backward_by_kept(self, d: Derivation, variants, grads) -> list[str]:
        """Branches of a Function with kept outputs: gradients for the
        declared outputs only (the usual backward), for the kept ones only,
        and for both.  Among several kept outputs, one without a gradient
        gets zeros: kept reductions are small."""
        declared, kept = self.kept_groups(d)
        fill = []
        if len(kept) > 1:
            for i in sorted(kept):
                if d.outputs[i] not in d.saved:
                    raise PrintError(f"kept output '{d.outputs[i].name}' is not saved")
                fill += [
                    f"if {grads[i]} is None:",
                    f"    {grads[i]} = torch.zeros_like({d.outputs[i].name})",
                ]
        by_present = dict(variants)
        branches = []
        if declared in by_present:
            tests = [
                f"{g} is not None" if i in declared else f"{g} is None"
                for i, g in grads.items()
            ]
            branches.append(
                (" and ".join(tests), (), self._backward(by_present[declared], d))
            )
        if kept in by_present:
            tests = [f"{grads[i]} is None" for i in sorted(declared)]
            branches.append(
                (" and ".join(tests), fill, self._backward(by_present[kept], d))
            )
        return _hoisted(branches, self._backward(d, d), fill)

    def backward_shapes(self, d: Derivation) -> list[sp.Symbol]:
        """The tensors whose shapes the backward of `d` keeps on ctx: its
        own, and those its branches for some outputs only read (zeros for
        an input ``floor(x)`` alone reaches), less the saved tensors."""
        shapes = list(d.shapes)
        for _, variant in self.presence_variants(d):
            missing = set(variant.saved) - set(d.saved)
            if missing:
                names = ", ".join(sorted(t.name for t in missing))
                raise PrintError(f"a backward branch reads unsaved tensors: {names}")
            shapes += [
                t for t in variant.shapes if t not in shapes and t not in d.saved
            ]
        return shapes

    def _backward(self, d: Derivation, full: Derivation) -> list[str]:
        """The backward of `d`; saved tensors and shapes are those of `full`."""
        lines = self._unpack(full.saved) + self._scalars()
        grad_names = [name for name, symbol in d.grads if symbol is not None]
        needs = {i: f"needs_{name}" for i, name in enumerate(grad_names)}
        if grad_names:
            flags = [
                f"needs_{name}" if symbol is not None else "_"
                for name, symbol in d.grads
            ]
            if len(flags) == 1:
                lines.append(f"{flags[0]} = ctx.needs_input_grad[0]")
            else:
                lines.append(f"{', '.join(flags)} = ctx.needs_input_grad")
            lines += self._backward_kernel(d)
            lines.append(" = ".join(f"grad_{n}" for n in grad_names) + " = None")
        shape_names = {s: f"ctx.{s.name}_shape" for s in self.backward_shapes(full)}
        # Dtypes and devices come from an incoming gradient this branch has:
        # in a branch for some outputs only, the others' are None.
        like = (d.present_grads or d.grad_symbols)[0].name
        lines += self.emit(d.backward, self.printer(like, shape_names), needs)
        results = [
            f"grad_{name}" if symbol is not None else "None" for name, symbol in d.grads
        ]
        lines.append(f"return {', '.join(results)}{',' if len(results) == 1 else ''}")
        return lines

    def _backward_kernel(self, d: Derivation) -> list[str]:
        """The backward kernel's launch, where its tensors qualify and the
        backward is not itself differentiated (the torch code is)."""
        if not self.kernels or self.kernels[1] is None:
            return []
        backward = self.kernels[1]
        names = self._arg_names(backward)
        tensors = [s.name for s in backward.tensors]
        tests = ["not torch.is_grad_enabled()", f"_kernels_take({', '.join(tensors)})"]
        # A tensor whose shape alone the backward keeps: the kernel does
        # not reduce a gradient to it, so it must have the others' shape.
        tests += [
            f"ctx.{s.name}_shape == {tensors[0]}.shape" for s in self.backward_shapes(d)
        ]
        keywords = K.KernelWriter(backward).keywords
        flags = [f"{kw}=needs_{n}" for kw, n in zip(keywords, backward.needs)]
        grads = [f"grad_{n}" for n in backward.needs]
        results = [
            f"grad_{name}" if symbol is not None else "None" for name, symbol in d.grads
        ]
        trailing = "," if len(results) == 1 else ""
        return [
            f"if {' and '.join(tests)}:",
            f"    {', '.join(grads)}{',' if len(grads) == 1 else ''} = "
            f"{backward.name}({', '.join(names + flags)})",
            f"    return {', '.join(results)}{trailing}",
        ]

    def zero_tangents(self) -> list:
        """Tensor inputs whose tangent may come as None: without materialized
        gradients (several outputs), forward-mode AD passes None for an
        input without a tangent, and the jvp makes it zeros."""
        if not self.presence_variants(self.d):
            return []
        tensors = list(self.fn.float_inputs)  # a long input has no tangent
        return tensors if len(tensors) > 1 else []

    def _fill_tangents(self) -> list[str]:
        specs = self.zero_tangents()
        if not specs:
            return []
        tangents = dict(zip([i.name for i in self.fn.inputs], self.d.tangent_symbols))
        names = [tangents[i.name].name for i in specs]
        lines = [f"like = next(t for t in ({', '.join(names)}) if t is not None)"]
        for spec, name in zip(specs, names):
            test = f"{name} is None"
            if spec.optional:
                test += f" and not ctx.{spec.name}_is_none"
            lines += [
                f"if {test}:",
                f"    {name} = like.new_zeros(ctx.{spec.name}_shape)",
            ]
        return lines

    def jvp(self) -> list[str]:
        if self.d.jvp_error:
            return [f"raise NotImplementedError({self.d.jvp_error!r})"]

        def body(d):
            lines = self._unpack(d.saved_for_jvp) + self._scalars()
            tangent = next(t for t in d.tangent_symbols if t is not None)
            lines += self.emit(d.jvp, self.printer(tangent.name), {})
            names = [t.name if t is not None else "None" for t in d.output_tangents]
            return lines + [f"return {', '.join(names)}"]

        return self._used_scalars(
            self._fill_tangents() + self.branches(body, in_ctx=True)
        )

    def autocast_lines(self) -> list[str]:
        """Under autocast, cast the tensor inputs the way a built-in op
        would: matrix products to the autocast dtype, ``autocast: float32``
        functions to float32; then the function runs again with autocast
        off.  Only the tensors ``torch.amp`` casts are cast (floating point
        but float64, on the autocast device: `_autocast_cast`); float64 and
        integer tensors stay as they are, as for ``torch.matmul``.  A device
        type without autocast (``meta``) has nothing to cast."""
        if self.fn.autocast == "float32":
            comment = "# Declared autocast: float32: run in full precision."
            dtype = "torch.float32"
        elif self.fn.formula.ops and any(
            isinstance(op.expr, T.TensorMatmul) for op in self.fn.formula.ops
        ):
            comment = "# Like a built-in matrix product: run in the autocast dtype."
            dtype = "torch.get_autocast_dtype(device_type)"
        else:
            return []
        self.helpers.add("_autocast_cast")
        names = [spec.name for spec in self.fn.tensor_inputs]
        lines = [
            f"device_type = {self.first_tensor}.device.type",
            "if torch.amp.is_autocast_available(device_type) and "
            "torch.is_autocast_enabled(device_type):",
            f"    {comment}",
            f"    dtype = {dtype}",
        ]
        lines += [
            f"    {name} = _autocast_cast({name}, device_type, dtype)" for name in names
        ]
        call = ", ".join(i.name for i in self.fn.inputs)
        lines += [
            "    with torch.autocast(device_type, enabled=False):",
            f"        return {self.fn.name}({call})",
        ]
        return lines

    def wrapper_body(self, classes: dict, op: str | None = None) -> list[str]:
        """The functional wrapper after its docstring: refuse complex
        tensors, pick the class (`classes`: ``eager``, ``compile``,
        ``trace`` and ``script``, each a class name and the indexing of
        its result that leaves the declared outputs, or None), cast under
        autocast, apply.  With a custom op `op`, exported and traced code
        calls it instead."""
        fn = self.fn
        call = ", ".join(i.name for i in fn.inputs)
        tests = [
            (
                f"({i.name} is not None and {i.name}.is_complex())"
                if i.optional
                else f"{i.name}.is_complex()"
            )
            for i in fn.tensor_inputs
        ]
        message = f"{fn.name} is a real function: complex tensors are not supported"
        lines = [f"if {' or '.join(tests)}:", f"    raise TypeError({message!r})"]

        def apply(which: str) -> str:
            name, suffix = classes[which]
            return f"{name}.apply({call}){suffix}"

        lines.append("if torch.jit.is_scripting():")
        if classes["script"] is None:
            count = len(self.declared_outputs)
            message = (
                f"torch.jit.script cannot call {fn.name}, which returns {count} "
                "tensors: use torch.jit.trace or torch.compile"
            )
            lines.append(f"    raise RuntimeError({message!r})")
        else:
            lines.append(f"    return {apply('script')}")
        lines += self.autocast_lines()
        if op is not None:
            lines += [
                "if torch.compiler.is_exporting() or torch.jit.is_tracing():",
                f"    return {op}({call})",
            ]
            classes = dict(classes, trace=None)
        guard = []
        if fn.grads:
            self.helpers.add("_has_tangent")
            names = ", ".join(i.name for i in fn.tensor_inputs)
            message = (
                f"{fn.name}: torch.compile would ignore its grad: override in "
                "forward-mode AD (jvp, jacfwd): call it outside the compiled region"
            )
            guard = [
                f"    if _has_tangent({names}):",
                f"        raise RuntimeError({message!r})",
            ]
        if classes["trace"] == classes["compile"]:
            lines += [
                "if torch.compiler.is_compiling() or torch.jit.is_tracing():",
                *guard,
                f"    return {apply('compile')}",
            ]
        else:
            if classes["trace"] is not None:
                lines += ["if torch.jit.is_tracing():", f"    return {apply('trace')}"]
            lines += [
                "if torch.compiler.is_compiling():",
                *guard,
                f"    return {apply('compile')}",
            ]
        return lines + [f"return {apply('eager')}"]

    def jvp_params(self) -> str:
        return ", ".join(
            t.name if t is not None else f"_{i.name}"
            for i, t in zip(self.fn.inputs, self.d.tangent_symbols)
        )

    # -- the wrappers -------------------------------------------------------

    def signature(self) -> str:
        return _parameters(self.fn.inputs, annotated=True)

    def returns(self) -> str:
        """The wrapper's return annotation."""
        count = len(self.declared_outputs)
        if count == 1:
            return "torch.Tensor"
        return f"tuple[{', '.join(['torch.Tensor'] * count)}]"

    def module_parts(self) -> dict:
        fn = self.fn
        dim_names = dimension_names(fn.inputs)
        scalars = [i for i in fn.inputs if not i.is_tensor]
        params = [i for i in fn.inputs if i.is_param]
        flags = [i for i in params if i.optional]
        arguments = {d: f"{d}: int" for d in dim_names}
        for spec in scalars:
            annotation = _ANNOTATIONS[spec.kind]
            default = f" = {_literal(spec.default)}" if spec.has_default else ""
            arguments[spec.name] = f"{spec.name}: {annotation}{default}"
        arguments.update({spec.name: f"{spec.name}: bool = True" for spec in flags})
        order = list(fn.module_args)
        order += [n for n in module_init_arguments(fn.inputs) if n not in order]
        init_args = [arguments[name] for name in order]
        if params:
            # torch.nn's factory arguments: Linear(3, 4, device="meta").
            init_args += ["device=None", "dtype=None"]
        body = [f"self.{d} = {d}" for d in dim_names] + [
            f"self.{s.name} = {s.name}" for s in scalars
        ]
        reset = []
        for spec in params:
            shape = ", ".join(str(d) for d in spec.param)
            parameter = (
                f"torch.nn.Parameter(torch.empty({shape}, device=device, dtype=dtype))"
            )
            if spec.optional:
                body += [
                    f"if {spec.name}:",
                    f"    self.{spec.name} = {parameter}",
                    "else:",
                    f'    self.register_parameter("{spec.name}", None)',
                ]
                reset += [
                    f"if self.{spec.name} is not None:",
                    f"    {self.init_line(spec)}",
                ]
            else:
                body.append(f"self.{spec.name} = {parameter}")
                reset.append(self.init_line(spec))
        if reset:
            body.append("self.reset_parameters()")
        call = []
        forward = []
        for spec in fn.inputs:
            if spec.is_param or not spec.is_tensor:
                call.append(f"self.{spec.name}")
            else:
                call.append(spec.name)
                forward.append(spec)
        flag_names = {s.name for s in flags}
        shown = [
            f"{n}={{self.{n} is not None}}" if n in flag_names else f"{n}={{self.{n}}}"
            for n in order
        ]
        extra = 'f"' + ", ".join(shown) + '"' if shown else None
        return dict(
            init_params="".join(f", {a}" for a in init_args),
            init_body=body,
            reset_body=reset,
            module_forward_params="".join(
                f", {p}" for p in [_parameters(forward)] if p
            ),
            module_call_args=", ".join(call),
            extra_repr=extra,
        )

    def init_line(self, spec: InputSpec) -> str:
        target = f"self.{spec.name}"
        text = spec.init
        if text is None:
            text = "kaiming_uniform(a=sqrt(5))" if len(spec.param) >= 2 else "zeros"
        dims = dimension_names(self.fn.inputs)
        name, args, kwargs = parse_init(text, lambda line, col: spec.location, dims)
        # The dimension sizes are attributes of the Module.
        on_self = {
            sp.Symbol(d, integer=True, positive=True): sp.Symbol(f"self.{d}")
            for d in dims
        }
        args = [a.xreplace(on_self) for a in args]
        kwargs = {k: v.xreplace(on_self) for k, v in kwargs.items()}
        printed = [_python(a) for a in args] + [
            f"{k}={_python(v)}" for k, v in kwargs.items()
        ]
        if any("math." in p for p in printed):
            self.uses_math = True
        return f"torch.nn.init.{name}_({', '.join([target] + printed)})"

    # -- docs ---------------------------------------------------------------

    def docs(self) -> dict:
        fn = self.fn
        formula = fn.formula.text.strip()
        lines = [
            fn.doc.strip() if fn.doc else f"``{fn.name}``, generated by fngen.",
            "",
            "Formula::",
            "",
        ]
        lines += [f"    {line.strip()}" for line in formula.splitlines()]
        declared = {out.name for out in self.declared_outputs}
        derivatives = [d for d in self.d.derivatives if d[0] in declared]
        if derivatives:
            lines += ["", "Derivatives::", ""]
            for out, leaf, expr in derivatives:
                lines.append(f"    d{out}/d{leaf} = {_shown(expr)}")
        for name, expr in fn.grads:
            lines += ["", f"Gradient of ``{name}`` overridden: ``{math_text(expr)}``."]
        function_doc = docstring("\n".join(lines))
        return dict(
            function_doc=function_doc,
            class_doc=docstring(
                self.class_summary(formula)
                + self.kept_note()
                + (
                    "\n\n" + textwrap.fill(self.save_note, width=72)
                    if self.save_note
                    else ""
                )
            ),
            module_doc=docstring(f"Module form of :func:`{fn.name}`."),
        )

    def class_summary(self, formula: str) -> str:
        """The Function's first docstring lines: the whole formula, on the
        line itself when it is one statement, else as a literal block."""
        lines = [line.strip() for line in formula.splitlines() if line.strip()]
        head = f"Autograd Function of :func:`{self.fn.name}`"
        if len(lines) == 1:
            return f"{head}: {lines[0]}"
        return f"{head}::\n\n" + "\n".join(f"    {line}" for line in lines)

    @property
    def declared_outputs(self) -> tuple[sp.Symbol, ...]:
        return self.d.outputs[: len(self.d.outputs) - self.fn.kept]

    def kept_note(self) -> str:
        if not self.fn.kept:
            return ""
        kept = self.d.outputs[len(self.declared_outputs) :]
        exprs = dict(self.fn.formula.outputs)
        listed = ", ".join(
            (
                f"``{k.name}``"
                if exprs[k] == k
                else f"``{k.name} = {math_text(exprs[k])}``"
            )
            for k in kept
        )
        if len(kept) == 1:
            kept_as = "kept for the backward as an output, so that double backward differentiates through it"
        else:
            kept_as = "kept for the backward as outputs, so that double backward differentiates through them"
        note = (
            f"``apply`` also returns {listed}, {kept_as}; "
            f":func:`{self.fn.name}` returns only the declared outputs."
        )
        return "\n\n" + textwrap.fill(note, width=72)

    def apply_suffix(self) -> str:
        """Indexing that drops the kept intermediates from apply's result."""
        if not self.fn.kept:
            return ""
        declared = len(self.declared_outputs)
        return "[0]" if declared == 1 else f"[:{declared}]"

    def context(self) -> dict:
        fn = self.fn
        name = class_name(fn.name)
        backward, jvp = self.backward(), self.jvp()
        return dict(
            name=fn.name,
            function_class=f"{name}Function",
            traceable_class=f"_{name}Traceable",
            traceable=None,  # a subclass without the jvp (see `traceable`)
            traced=None,  # the class for jit.trace and script, where it differs
            custom_op=None,  # with export: custom_op, its registration
            module_class=name,
            forward_params=", ".join(i.name for i in fn.inputs),
            forward_body=self.forward(),
            setup_body=self.setup_context(reads=backward + jvp),
            backward_params=", ".join(g.name for g in self.d.grad_symbols),
            backward_body=backward,
            jvp_params=self.jvp_params(),
            jvp_body=jvp,
            once_differentiable=fn.once_differentiable,
            signature=self.signature(),
            returns=self.returns(),
            **self.module_parts(),
            **self.docs(),
        )


# Lines a backward starts with that read the context, the same in every
# branch by presence of incoming gradients: written once, before them.
_SETUP_LINE = re.compile(
    r"(.* = ctx\.saved_tensors|\w+ = ctx\.\w+|.* = ctx\.needs_input_grad(\[0\])?|"
    r"grad_\w+( = grad_\w+)* = None)$"
)


def _hoisted(branches: list[tuple], final: list[str], fill=()) -> list[str]:
    """``if test:`` branches, then `final`, with the setup lines they all
    start with written once before them.  A branch is (test, lines to run
    after the setup, body); `fill` is those of `final`."""
    bodies = [body for _, _, body in branches] + [final]
    common = 0
    while (
        all(len(body) > common for body in bodies)
        and len({body[common] for body in bodies}) == 1
        and _SETUP_LINE.match(bodies[0][common])
    ):
        common += 1
    lines = list(final[:common])
    for test, after_setup, body in branches:
        lines.append(f"if {test}:")
        lines += [f"    {line}" for line in [*after_setup, *body[common:]]]
    return lines + list(fill) + final[common:]


# A derivative in the docstring is printed as a tree: a statement used
# twice is written out twice, and fifteen such ones make megabytes.
MAX_SHOWN_TREE = 2000


def _shown(expr: sp.Expr) -> str:
    """`expr` in the formula language, or a note where its text would be
    too long to read (see `MAX_SHOWN_TREE`)."""
    if dag.tree_size(expr, MAX_SHOWN_TREE) > MAX_SHOWN_TREE:
        return f"(not shown: more than {MAX_SHOWN_TREE} operations written out)"
    return math_text(expr)


def _view_of(expr, values: dict):
    """What `expr`, a transpose of a transpose ... of a forward value, is a
    view of (None when it is no transpose)."""
    transposed = False
    while True:
        if isinstance(expr, T.TensorMT):
            expr, transposed = expr.args[0], True
        elif isinstance(expr, sp.Symbol) and expr in values and values[expr] != expr:
            expr = values[expr]
        else:
            return expr if transposed else None


def _literal(value) -> str:
    return repr(value)


_ANNOTATIONS = {
    InputKind.TENSOR: "torch.Tensor",
    InputKind.LONG: "torch.Tensor",
    InputKind.FLOAT: "float",
    InputKind.INT: "int",
    InputKind.BOOL: "bool",
}


_SCHEMA_TYPES = {
    InputKind.TENSOR: "Tensor",
    InputKind.LONG: "Tensor",
    InputKind.FLOAT: "float",
    InputKind.INT: "int",
    InputKind.BOOL: "bool",
}


def custom_op_schema(fn: FunctionSpec, outputs: int) -> str:
    """The torch.library schema of `fn`: ``(Tensor x, float alpha) -> Tensor``."""
    arguments = ", ".join(
        f"{_SCHEMA_TYPES[i.kind]}{'?' if i.optional else ''} {i.name}"
        for i in fn.inputs
    )
    results = "Tensor" if outputs == 1 else f"({', '.join(['Tensor'] * outputs)})"
    return f"({arguments}) -> {results}"


def _parameters(inputs, annotated: bool = False) -> str:
    """Parameters in the declared order, with the declared defaults; an
    optional tensor defaults to None where no argument without a default
    follows it (else it is passed, None to leave it out, as
    ``F.batch_norm``'s ``running_mean``).  The spec refuses a declared
    default before an argument without one.  `annotated`: with types, as
    torch.jit.script reads an unannotated argument as a tensor."""
    parts = []
    defaults_from_here = True
    for spec in reversed(inputs):
        name = spec.name
        if annotated:
            name += (
                ": " + _ANNOTATIONS[spec.kind] + (" | None" if spec.optional else "")
            )
        equals = " = " if annotated else "="
        if spec.has_default:
            parts.append(f"{name}{equals}{_literal(spec.default)}")
        elif spec.optional and defaults_from_here:
            parts.append(f"{name}{equals}None")
        else:
            parts.append(name)
            defaults_from_here = False
    return ", ".join(reversed(parts))


def _python(expr: sp.Expr) -> str:
    """An init argument (an expression of dimension names) as Python."""
    if expr.is_number:
        return repr(float(expr))
    return pycode(expr, fully_qualified_modules=True)


def variants(fn: FunctionSpec) -> list[tuple[frozenset[str], Derivation]]:
    """A derivation for each combination of absent optional tensors, the
    one with all present last."""
    optional = [i.name for i in fn.inputs if i.optional]
    combos = list(itertools.product([True, False], repeat=len(optional)))
    return [
        (
            frozenset(n for n, a in zip(optional, combo) if a),
            derive(fn, frozenset(n for n, a in zip(optional, combo) if a)),
        )
        for combo in combos
    ]


def traceable(
    plain: FunctionSpec, function_class: str, traced: bool = False
) -> tuple[dict, FunctionWriter]:
    """The class ``torch.compile`` applies when the eager Function keeps an
    intermediate (`keep_intermediate`): `plain`, the function without it.
    Compiled, the partitioner recomputes ``input - target`` in the backward
    for nothing, where returning it from the forward costs a write of the
    whole tensor (huber_loss 1.4 times the composed formula's time).

    With `traced`, the class ``torch.jit.trace``, ``torch.jit.script`` and
    the legacy ONNX exporter apply when the eager Function and the compile
    class both return kept outputs (kept reductions): those take the first
    outputs of a Function for its results, so its outputs must be only the
    declared ones."""
    writer = FunctionWriter(plain, variants(plain), tuple_outputs=True)
    if traced:
        text = (
            f"{function_class} without its kept outputs and its jvp, for "
            "torch.jit.trace, torch.jit.script and the legacy ONNX exporter, "
            "which must see only the declared outputs."
        )
    else:
        text = (
            f"{function_class} without its kept intermediate and its jvp, for "
            "torch.compile, torch.jit.trace and torch.jit.script: compiled, "
            "recomputing the intermediate in the backward costs nothing, and "
            "returning it costs a write (torch.compile cannot trace a custom "
            "jvp either); traced or scripted, only the declared outputs may "
            "be outputs."
        )
    doc = docstring(textwrap.fill(text, width=72))
    backward = writer.backward()
    return (
        dict(
            doc=doc,
            forward_body=writer.forward(),
            setup_body=writer.setup_context(reads=backward),
            backward_params=", ".join(g.name for g in writer.d.grad_symbols),
            backward_body=backward,
        ),
        writer,
    )


def kernel_names(name: str) -> tuple[str, str]:
    """The launchers of function `name`'s Triton kernels, forward and
    backward; each kernel is its launcher's name and ``_kernel``."""
    return f"_{name}_fwd", f"_{name}_bwd"


def function_kernels(writer: FunctionWriter) -> tuple | str:
    """The Triton kernels (forward, backward or None) of the function
    `writer` writes, or why it has none."""
    fn = writer.fn
    try:
        found = K.function_kernels(fn, writer.d, kernel_names(fn.name))
    except K.NotPointwise as err:
        return str(err)
    except ValueError as err:  # a kernel that reads no tensor
        return str(err)
    optional = [i.name for i in fn.inputs if i.optional]
    if optional:
        return f"the optional tensor {optional[0]} (not yet supported)"
    if fn.kept:
        return "it keeps an intermediate for its backward (not yet supported)"
    if writer.presence_variants(writer.d):
        return "several differentiable outputs (not yet supported)"
    return found


@dataclass
class FunctionChoices:
    """What the generated code of one function is made from: `fused` (the
    user's function with PyTorch's fused activations), `kept` (with the
    intermediates its backward keeps), `fn` (with kept reductions too: what
    the eager class computes), its `writer`, its Triton `kernels` or why it
    has none, and its save policy."""

    fused: FunctionSpec
    kept: FunctionSpec
    fn: FunctionSpec
    writer: "FunctionWriter"
    kernels: tuple | str
    save: SaveChoice


def function_choices(fn: FunctionSpec, kernels: str = "none") -> FunctionChoices:
    """The choices of `fn` in a spec whose ``kernels:`` is `kernels`: the
    kernels first (a function that has them saves for memory: its fused
    backward recomputes for free), then the save policy (`choose_save`).
    A function that asks for kernels itself and cannot have them is a
    `SpecError`."""
    fused = fuse_function(fn)
    kept = keep_intermediate(fused)
    plain = keep_reductions(kept)
    # The memory writer is built first only where its kernels decide the
    # save policy.
    writer = None
    found: tuple | str = "kernels: none"
    if (fn.kernels or kernels) == "triton":
        writer = FunctionWriter(plain, variants(plain))
        found = function_kernels(writer)
    save = choose_save(fused, kernels=not isinstance(found, str))
    if save.policy == "speed":
        kept = save.fn
        plain = keep_reductions(kept)
        writer = None
        if not isinstance(found, str) or fn.kernels == "triton":
            found = "its backward keeps intermediates (save: speed; not yet supported)"
    if writer is None:
        writer = FunctionWriter(plain, variants(plain))
    if isinstance(found, str) and fn.kernels == "triton":
        raise SpecError(
            fn.location,
            f"function '{fn.name}' cannot have Triton kernels: {found}",
            "only a pointwise function can; remove 'kernels: triton'",
        )
    if not isinstance(found, str):
        writer.kernels = found
    writer.save_note = save.note()
    return FunctionChoices(fused, kept, plain, writer, found, save)


def kernels_of(fn: FunctionSpec, kernels: str = "none") -> tuple | str:
    """The Triton kernels (forward, backward or None) the generated module
    has for `fn` (of a spec whose ``kernels:`` is `kernels`), or why it has
    none."""
    if (fn.kernels or kernels) != "triton":
        return "kernels: none"
    return function_choices(fn, kernels).kernels


def kernel_status(fn: FunctionSpec, kernels: str = "none") -> str | None:
    """None where the generated module has Triton kernels for `fn`, else
    why it has none (see `kernels_of`)."""
    found = kernels_of(fn, kernels)
    return found if isinstance(found, str) else None


def render_function(
    fn: FunctionSpec, namespace: str | None = None, kernels: str = "none"
) -> tuple[dict, list[FunctionWriter]]:
    """The template context of one function, and its writers (the eager
    class's, and those of the compiled and traced classes when it has
    them).  With a `namespace` (``export: custom_op``) the function is also
    the custom op ``torch.ops.<namespace>.<name>``.  With `kernels`
    ``"triton"`` (the spec's; the function's own ``kernels:`` wins), a
    pointwise function gets Triton kernels (the writer's `kernels`); one
    that asks for them itself and cannot have them is an error."""
    writers = []
    try:
        choices = function_choices(fn, kernels)
        fused, kept, fn, writer = (
            choices.fused,
            choices.kept,
            choices.fn,
            choices.writer,
        )
        context = writer.context()
        name = class_name(fn.name)
        eager = (context["function_class"], writer.apply_suffix())
        compiled = (context["traceable_class"], writer.apply_suffix())
        if kept is not fused:
            context["traceable"], compiled_writer = traceable(
                keep_reductions(fused), f"{name}Function"
            )
            writers.append(compiled_writer)
            compiled = (compiled[0], compiled_writer.apply_suffix())
        # Traced (jit.trace, the legacy ONNX exporter) or scripted, a
        # Function's first outputs are taken for its results: a class
        # whose outputs are only the declared ones.
        traced = None
        if fn.kept:
            traced = compiled
            if compiled[1]:
                context["traced"], traced_writer = traceable(
                    fused, f"{name}Function", traced=True
                )
                context["traced_class"] = f"_{name}Traced"
                writers.append(traced_writer)
                traced = (context["traced_class"], "")
        script = None
        if len(writer.declared_outputs) == 1:
            # The jvp-less subclass cannot be scripted; the eager class
            # can, when it returns only the declared output.
            script = traced or eager
        op = None
        if namespace is not None:
            # The class whose outputs are the declared ones.
            op_class, suffix = traced or eager
            assert not suffix, suffix
            op = f"torch.ops.{namespace}.{fn.name}"
            context["custom_op"] = dict(
                variable=f"_{fn.name}_op",
                qualname=f"{namespace}::{fn.name}",
                schema=custom_op_schema(fn, len(writer.declared_outputs)),
                function_class=op_class,
                pointwise=not fn.formula.ops,
                call=op,
            )
            writer.helpers.update({"_custom_op", "_has_tangent"})
        context["wrapper_body"] = writer.wrapper_body(
            dict(eager=eager, compile=compiled, trace=traced, script=script), op
        )
    except PrintError as err:
        raise SpecError(fn.location, f"cannot generate '{fn.name}': {err}") from None
    except RecursionError:
        # SymPy differentiates, substitutes and prints by recursion: a
        # formula some 150 calls deep, or a 300-level power tower, is
        # past Python's stack.  Refuse it; never let the traceback out.
        raise SpecError(
            fn.location,
            f"cannot generate '{fn.name}': the formula is nested too deeply "
            "for SymPy to differentiate",
            "split it into separate functions, or nest fewer than about 100 calls",
        ) from None
    writers.append(writer)
    return context, writers


@functools.lru_cache(maxsize=1)
def _macros():
    """The template's macros (`module_head`, `function_chunk`), compiled once."""
    return make_env().get_template("module.py.j2").make_module()


def render(spec: Spec) -> str:
    """The formatted module: each function rendered and formatted on its
    own, as it is derived, then the head, which depends on them all.  The
    cost of a function does not depend on how many came before it, and
    nothing of one is kept once its text is (black on the whole module
    took most of the time of a big spec, and its memory)."""
    chunks = []
    uses_math, helpers, all_names = False, set(), []
    namespace = spec.namespace if spec.export == "custom_op" else None
    decompositions = []
    kernels = []
    for fn in spec.functions:
        context, writers = render_function(fn, namespace, spec.kernels)
        kernels += [k for k in writers[-1].kernels or () if k is not None]
        if namespace is not None:
            decompositions.append(context["custom_op"])
        chunk = format_source(_macros().function_chunk(context))
        check_calls(chunk, fn)
        chunks.append(chunk.strip("\n"))
        uses_math |= any(w.uses_math for w in writers)
        for w in writers:
            helpers |= w.helpers
        all_names += [
            context["function_class"],
            context["name"],
            context["module_class"],
        ]
    if decompositions:
        all_names.append("DECOMPOSITIONS")
    head = _macros().module_head(
        version=__version__,
        spec_file=comment_text(spec.path),
        module_doc=docstring(
            spec.doc or f"Autograd functions generated by fngen from {spec.path}."
        ),
        uses_math=uses_math,
        helper_source=runtime_source(helpers),
        all_names=all_names,
        kernel_imports=K.IMPORTS if kernels else "",
        kernel_section=K.embedded_source(kernels) if kernels else "",
    )
    if decompositions:
        chunks.append(
            format_source(_macros().decompositions(decompositions)).strip("\n")
        )
    # Black puts two blank lines between top-level definitions.
    return "\n\n\n".join([format_source(head).strip("\n")] + chunks) + "\n"


def check_calls(source: str, fn: FunctionSpec) -> None:
    """Refuse generated code that calls a name its own function defines:
    an input or a statement named like a builtin the code calls (``len``,
    ``abs``) would hide it, and the call would compute something else.
    The names of `RESERVED_NAMES` are refused at their place in the spec;
    this is the check that no other builtin the printer comes to call is
    hidden either."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise SpecError(
            fn.location,
            f"cannot generate '{fn.name}': the generated code does not compile "
            f"(line {err.lineno}: {err.msg}); this is a bug in fngen",
        ) from None
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.Lambda)):
            continue
        local = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        local |= {
            n.id
            for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in local
            ):
                name = call.func.id
                raise SpecError(
                    fn.location,
                    f"cannot generate '{fn.name}': '{name}' would hide "
                    f"Python's {name}(), which the generated code calls",
                    "rename it",
                )


def composed_source(fn: FunctionSpec) -> str:
    """The formula of `fn` as one plain function of torch ops, without
    fngen's rewrites (fused kernels, Horner form, kept intermediates), but
    with each repeated subexpression computed once as a user would write it
    by hand: what `fngen bench` measures the generated Function against."""
    printer = TorchPrinter(
        dtype_of=fn.symbol(fn.float_inputs[0].name).name,
        scalars={fn.symbol(i.name) for i in fn.inputs if not i.is_tensor},
        fused_arithmetic=False,
    )
    taken = {name for name, _ in fn.symbols} | {op.result.name for op in fn.formula.ops}
    taken |= {out.name for out, _ in fn.formula.outputs}
    lines = [f"def {fn.name}({', '.join(fn.symbol(i.name).name for i in fn.inputs)}):"]
    for block in forward_program(fn.formula, taken):
        for target, expr in block.assignments:
            lines.append(f"    {target.name} = {printer.doprint(expr)}")
    lines.append(f"    return {', '.join(o.name for o, _ in fn.formula.outputs)}")
    imports = "import math\nimport torch\n" if printer.uses_math else "import torch\n"
    return format_source(imports + "\n\n" + "\n".join(lines) + "\n")


def format_source(source: str) -> str:
    """Format with black under a fixed mode; a failure is a bug, and loud."""
    return black.format_str(source, mode=BLACK_MODE)


def generate(spec: Spec) -> str:
    """The formatted module source for `spec`."""
    return render(spec)


if sys.version_info < (3, 10):  # pragma: no cover
    raise RuntimeError("fngen needs Python 3.10 or newer")
