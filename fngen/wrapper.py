"""The functional wrapper, the Module and the docstrings of a generated
function, from its plan (`fngen.plan`)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import sympy as sp

from fngen import dag
from fngen import tensorops as T
from fngen.model import InputSpec
from fngen.names import dimension_names, module_init_arguments
from fngen.printer import math_text
from fngen.pysource import (
    ANNOTATIONS,
    docstring,
    literal,
    parameters,
    python_value,
)
from fngen.writer import Needs

if TYPE_CHECKING:  # the type of what the writer reads, never called
    from fngen.plan import FunctionPlan


class WrapperWriter:
    """The strings of the wrapper, the Module and the docstrings."""

    def __init__(self, plan: FunctionPlan, needs: Needs):
        self.plan = plan
        self.fn = plan.fn
        self.d = plan.d
        self.needs = needs
        self.first_tensor = plan.first_tensor

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
            dtype, setup = "torch.float32", []
        elif self.fn.formula.ops and any(
            isinstance(op.expr, T.TensorMatmul) for op in self.fn.formula.ops
        ):
            comment = "# Like a built-in matrix product: run in the autocast dtype."
            dtype, setup = "dtype", [
                "    dtype = torch.get_autocast_dtype(device_type)"
            ]
        else:
            return []
        self.needs.helpers.update({"_autocast_cast", "_autocasting"})
        names = [spec.name for spec in self.fn.tensor_inputs]
        lines = [
            f"device_type = {self.first_tensor}.device.type",
            "if _autocasting(device_type):",
            f"    {comment}",
            *setup,
        ]
        lines += [
            f"    {name} = _autocast_cast({name}, device_type, {dtype})"
            for name in names
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
        message = f"{fn.name} is a real function, not for complex tensors"
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
            self.needs.helpers.add("_has_tangent")
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

    # -- the wrappers -------------------------------------------------------

    def signature(self) -> str:
        return parameters(self.fn.inputs, annotated=True)

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
            annotation = ANNOTATIONS[spec.kind]
            default = f" = {literal(spec.default)}" if spec.has_default else ""
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
            module_forward_params="".join(f", {p}" for p in [parameters(forward)] if p),
            module_call_args=", ".join(call),
            extra_repr=extra,
        )

    def init_line(self, spec: InputSpec) -> str:
        """``torch.nn.init.<name>_(self.weight, ...)`` of a param."""
        call = spec.init_call
        # The dimension sizes are attributes of the Module.
        on_self = {
            sp.Symbol(d, integer=True, positive=True): sp.Symbol(f"self.{d}")
            for d in dimension_names(self.fn.inputs)
        }
        printed = [python_value(a.xreplace(on_self)) for a in call.args] + [
            f"{k}={python_value(v.xreplace(on_self))}" for k, v in call.kwargs
        ]
        if any("math." in p for p in printed):
            self.needs.uses_math = True
        return (
            f"torch.nn.init.{call.name}_({', '.join([f'self.{spec.name}'] + printed)})"
        )

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
        # In the order of the outputs, then of the signature.
        outputs = [o.name for o in self.d.outputs]
        inputs = [i.name for i in fn.inputs]
        derivatives = sorted(
            (d for d in self.d.derivatives if d[0] in declared),
            key=lambda d: (_position(outputs, d[0]), _position(inputs, d[1])),
        )
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
                    "\n\n" + textwrap.fill(self.plan.save_note, width=72)
                    if self.plan.save_note
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
        # Not "{head}::": a docstring's first line keeps no indentation
        # (inspect.cleandoc, black), so the block would lose its own.
        return f"{head}.\n\nFormula::\n\n" + "\n".join(f"    {line}" for line in lines)

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


# A derivative in the docstring is printed as a tree: a statement used
# twice is written out twice, and fifteen such ones make megabytes.
MAX_SHOWN_TREE = 2000


def _shown(expr: sp.Expr) -> str:
    """`expr` in the formula language, or a note where its text would be
    too long to read (see `MAX_SHOWN_TREE`)."""
    if dag.tree_size(expr, MAX_SHOWN_TREE) > MAX_SHOWN_TREE:
        return f"(not shown: more than {MAX_SHOWN_TREE} operations written out)"
    return math_text(expr)


def _position(names: list[str], name: str) -> int:
    return names.index(name) if name in names else len(names)
