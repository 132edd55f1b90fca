"""Render a validated spec into a formatted Python module.

All logic lives here; the Jinja2 template only places the precomputed strings.
"""

from __future__ import annotations

import sys
from importlib import resources

import black
import jinja2
import sympy as sp
from sympy.printing.pycode import pycode

from fngen import __version__
from fngen.derive import Derivation, derive
from fngen.model import FunctionSpec, InputKind, InputSpec, Spec
from fngen.printer import TorchPrinter
from fngen.schedule import Block
from fngen.spec import class_name, parse_init

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


def docstring(text: str) -> str:
    """`text` made safe inside triple double quotes."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    if text.endswith('"'):
        text += " "
    return text


def _join_guard(guard, needs) -> str:
    return " or ".join(needs[i] for i in sorted(guard))


class FunctionWriter:
    """Computes every string the template needs for one function."""

    def __init__(self, fn: FunctionSpec, derivation: Derivation):
        self.fn = fn
        self.d = derivation
        self.uses_math = False
        self.names = {sym: name for name, sym in fn.symbols}
        self.first_tensor = fn.tensor_inputs[0].name

    def printer(self, dtype_of: str, shape_names=None) -> TorchPrinter:
        return TorchPrinter(shape_names=shape_names, dtype_of=dtype_of)

    def emit(self, blocks: tuple[Block, ...], printer: TorchPrinter, needs: dict[int, str]) -> list[str]:
        lines = []
        for block in blocks:
            indent = ""
            if block.guard:
                lines.append(f"if {_join_guard(block.guard, needs)}:")
                indent = "    "
            for target, expr in block.assignments:
                lines.append(f"{indent}{target.name} = {printer.doprint(expr)}")
        self.uses_math |= printer.uses_math
        return lines

    # -- the Function -----------------------------------------------------

    def forward(self) -> list[str]:
        lines = self.emit(self.d.forward, self.printer(self.first_tensor), {})
        lines.append(f"return {', '.join(o.name for o in self.d.outputs)}")
        return lines

    def setup_context(self) -> list[str]:
        fn, d = self.fn, self.d
        lines = [f"{', '.join(i.name for i in fn.inputs)}{',' if len(fn.inputs) == 1 else ''} = inputs"]
        outputs = ", ".join(o.name for o in d.outputs)
        kept = set(d.saved) | set(d.shapes) | set(self.jvp_saved)
        needs_outputs = any(o in kept for o in d.outputs)
        needs_outputs |= not all(d.differentiable_outputs)
        if needs_outputs:
            lines.append(f"{outputs}{',' if len(d.outputs) == 1 else ''} = output" if len(d.outputs) > 1 else f"{outputs} = output")
        for out, differentiable in zip(d.outputs, d.differentiable_outputs):
            if not differentiable:
                lines.append(f"ctx.mark_non_differentiable({out.name})")
        if d.saved:
            lines.append(f"ctx.save_for_backward({', '.join(s.name for s in d.saved)})")
        if self.jvp_saved:
            lines.append(f"ctx.save_for_forward({', '.join(s.name for s in self.jvp_saved)})")
        for symbol in d.shapes:
            lines.append(f"ctx.{symbol.name}_shape = {symbol.name}.shape")
        for spec in fn.inputs:
            if not spec.is_tensor:
                lines.append(f"ctx.{spec.name} = {spec.name}")
        return lines

    def _unpack(self, saved) -> list[str]:
        if not saved:
            return []
        names = ", ".join(s.name for s in saved)
        return [f"{names}{',' if len(saved) == 1 else ''} = ctx.saved_tensors"]

    def _scalars(self) -> list[str]:
        return [f"{i.name} = ctx.{i.name}" for i in self.fn.inputs if not i.is_tensor]

    def backward(self) -> list[str]:
        fn, d = self.fn, self.d
        lines = self._unpack(d.saved) + self._scalars()
        needs = {}
        grad_names = [name for name, symbol in d.grads if symbol is not None]
        index = 0
        for spec, (name, symbol) in zip(fn.inputs, d.grads):
            if symbol is not None:
                needs[index] = f"needs_{name}"
                index += 1
        if grad_names:
            flags = [f"needs_{name}" if symbol is not None else "_" for name, symbol in d.grads]
            if len(flags) == 1:
                lines.append(f"{flags[0]} = ctx.needs_input_grad[0]")
            else:
                lines.append(f"{', '.join(flags)} = ctx.needs_input_grad")
            lines.append(" = ".join(f"grad_{n}" for n in grad_names) + " = None")
        shape_names = {s: f"ctx.{s.name}_shape" for s in d.shapes}
        lines += self.emit(d.backward, self.printer("grad" if len(d.outputs) == 1 else d.grad_symbols[0].name, shape_names), needs)
        results = [f"grad_{name}" if symbol is not None else "None" for name, symbol in d.grads]
        lines.append(f"return {', '.join(results)}{',' if len(results) == 1 else ''}")
        return lines

    @property
    def jvp_saved(self):
        return self.d.saved_for_jvp

    def jvp(self) -> list[str]:
        d = self.d
        lines = self._unpack(self.jvp_saved) + self._scalars()
        tangent = next(t for t in d.tangent_symbols if t is not None)
        lines += self.emit(d.jvp, self.printer(tangent.name), {})
        lines.append(f"return {', '.join(t.name for t in d.output_tangents)}")
        return lines

    def jvp_params(self) -> str:
        return ", ".join(t.name if t is not None else f"_{i.name}" for i, t in zip(self.fn.inputs, self.d.tangent_symbols))

    # -- the wrappers -------------------------------------------------------

    def signature(self) -> str:
        parts = []
        for spec in self.fn.inputs:
            if spec.has_default:
                parts.append(f"{spec.name}={_literal(spec.default)}")
            else:
                parts.append(spec.name)
        return ", ".join(parts)

    def module_parts(self) -> dict:
        fn = self.fn
        dim_names: list[str] = []
        for spec in fn.inputs:
            for dim in spec.param or ():
                if isinstance(dim, str) and dim not in dim_names:
                    dim_names.append(dim)
        scalars = [i for i in fn.inputs if not i.is_tensor]
        params = [i for i in fn.inputs if i.is_param]
        init_args = [f"{d}: int" for d in dim_names]
        ordered = sorted(scalars, key=lambda i: i.has_default)
        for spec in ordered:
            annotation = {InputKind.FLOAT: "float", InputKind.INT: "int", InputKind.BOOL: "bool"}[spec.kind]
            default = f" = {_literal(spec.default)}" if spec.has_default else ""
            init_args.append(f"{spec.name}: {annotation}{default}")
        body = [f"self.{d} = {d}" for d in dim_names] + [f"self.{s.name} = {s.name}" for s in scalars]
        for spec in params:
            shape = ", ".join(str(d) for d in spec.param)
            body.append(f"self.{spec.name} = torch.nn.Parameter(torch.empty({shape}))")
        reset = [self.init_line(spec) for spec in params]
        if reset:
            body.append("self.reset_parameters()")
        call = []
        forward = []
        for spec in fn.inputs:
            if spec.is_param or not spec.is_tensor:
                call.append(f"self.{spec.name}")
            else:
                call.append(spec.name)
                forward.append(spec.name)
        shown = dim_names + [s.name for s in scalars]
        extra = None
        if shown:
            extra = 'f"' + ", ".join(f"{n}={{self.{n}}}" for n in shown) + '"'
        return dict(
            init_params="".join(f", {a}" for a in init_args),
            init_body=body,
            reset_body=reset,
            module_forward_params="".join(f", {n}" for n in forward),
            module_call_args=", ".join(call),
            extra_repr=extra,
        )

    def init_line(self, spec: InputSpec) -> str:
        target = f"self.{spec.name}"
        text = spec.init
        if text is None:
            text = "kaiming_uniform(a=sqrt(5))" if len(spec.param) >= 2 else "zeros"
        dims = [d for d in spec.param if isinstance(d, str)]
        name, args, kwargs = parse_init(text, lambda line, col: spec.location, dims)
        printed = [_python(a) for a in args] + [f"{k}={_python(v)}" for k, v in kwargs.items()]
        if any("math." in p for p in printed):
            self.uses_math = True
        return f"torch.nn.init.{name}_({', '.join([target] + printed)})"

    # -- docs ---------------------------------------------------------------

    def docs(self) -> dict:
        fn = self.fn
        formula = fn.formula.text.strip()
        lines = [fn.doc.strip() if fn.doc else f"``{fn.name}``, generated by fngen.", "", "Formula::", ""]
        lines += [f"    {line.strip()}" for line in formula.splitlines()]
        if self.d.derivatives:
            lines += ["", "Derivatives::", ""]
            for out, leaf, expr in self.d.derivatives:
                lines.append(f"    d{out}/d{leaf} = {sp.sstr(expr)}")
        for name, expr in fn.grads:
            lines += ["", f"Gradient of ``{name}`` overridden: ``{sp.sstr(expr)}``."]
        function_doc = docstring("\n".join(lines))
        return dict(
            function_doc=function_doc,
            class_doc=docstring(f"Autograd Function of :func:`{fn.name}`: {formula.splitlines()[0]}"),
            module_doc=docstring(f"Module form of :func:`{fn.name}`."),
        )

    def context(self) -> dict:
        fn = self.fn
        name = class_name(fn.name)
        backward = self.backward()
        return dict(
            name=fn.name,
            function_class=f"{name}Function",
            traceable_class=f"_{name}Traceable",
            module_class=name,
            forward_params=", ".join(i.name for i in fn.inputs),
            forward_body=self.forward(),
            setup_body=self.setup_context(),
            backward_params=", ".join(g.name for g in self.d.grad_symbols),
            backward_body=backward,
            jvp_params=self.jvp_params(),
            jvp_body=self.jvp(),
            once_differentiable=fn.once_differentiable,
            signature=self.signature(),
            apply_args=", ".join(i.name for i in fn.inputs),
            **self.module_parts(),
            **self.docs(),
        )


def _literal(value) -> str:
    return repr(value)


def _python(expr: sp.Expr) -> str:
    """An init argument (an expression of dimension names) as Python."""
    return pycode(expr, fully_qualified_modules=True)


def render(spec: Spec) -> str:
    writers = [FunctionWriter(fn, derive(fn)) for fn in spec.functions]
    contexts = [w.context() for w in writers]
    all_names = []
    for c in contexts:
        all_names += [c["function_class"], c["name"], c["module_class"]]
    template = make_env().get_template("module.py.j2")
    return template.render(
        version=__version__,
        spec_file=spec.path.replace("\n", " "),
        module_doc=docstring(spec.doc or f"Autograd functions generated by fngen from {spec.path}."),
        uses_math=any(w.uses_math for w in writers),
        all_names=all_names,
        functions=contexts,
    )


def format_source(source: str) -> str:
    """Format with black under a fixed mode; a failure is a bug, and loud."""
    return black.format_str(source, mode=BLACK_MODE)


def generate(spec: Spec) -> str:
    """The formatted module source for `spec`."""
    return format_source(render(spec))


if sys.version_info < (3, 10):  # pragma: no cover
    raise RuntimeError("fngen needs Python 3.10 or newer")
