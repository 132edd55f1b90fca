"""Render a validated spec into a formatted Python module.

All logic lives here; the Jinja2 template only places the precomputed strings.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from dataclasses import dataclass
import sys
from importlib import resources

import black
import jinja2

from fngen import __version__
from fngen import kernels as K
from fngen import names as N
from fngen.derive import (
    SaveChoice,
    choose_save,
    forward_program,
    keep_intermediate,
    keep_reductions,
)
from fngen.model import FunctionSpec, Spec
from fngen.errors import SpecError
from fngen.fuse import fuse_function
from fngen.plan import FunctionPlan, Launch, PlanError, plan_function
from fngen.printer import PrintError, TorchPrinter
from fngen.pysource import comment_text, custom_op_schema, docstring
from fngen.wrapper import WrapperWriter
from fngen.writer import BackwardWriter, FunctionWriter, Needs

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


def class_context(
    plan: FunctionPlan, needs: Needs, wrapper: WrapperWriter | None = None
) -> dict:
    """The template context of the eager Function class of `plan`, its
    wrapper and its Module (written by `wrapper`, or a new one)."""
    fn = plan.fn
    writer = FunctionWriter(plan, needs)
    wrapper = wrapper or WrapperWriter(plan, needs)
    return dict(
        name=fn.name,
        function_class=N.function_class(fn.name),
        traceable_class=N.traceable_class(fn.name),
        traceable=None,  # a subclass without the jvp (see `traceable`)
        traced=None,  # the class for jit.trace and script, where it differs
        custom_op=None,  # with export: custom_op, its registration
        module_class=N.class_name(fn.name),
        forward_params=", ".join(i.name for i in fn.inputs),
        forward_body=writer.forward(),
        setup_body=writer.setup_context(plan.backward_scalars | plan.jvp_scalars),
        backward_params=", ".join(g.name for g in plan.d.grad_symbols),
        backward_body=BackwardWriter(plan, needs).lines(),
        jvp_params=writer.jvp_params(),
        jvp_body=writer.jvp(),
        once_differentiable=fn.once_differentiable,
        signature=wrapper.signature(),
        returns=wrapper.returns(),
        **wrapper.module_parts(),
        **wrapper.docs(),
    )


def traceable(
    plain: FunctionSpec, function_class: str, needs: Needs, traced: bool = False
) -> tuple[dict, WrapperWriter]:
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
    plan = plan_function(plain, tuple_outputs=True)
    writer = FunctionWriter(plan, needs)
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
    return (
        dict(
            doc=docstring(textwrap.fill(text, width=72)),
            forward_body=writer.forward(),
            setup_body=writer.setup_context(plan.backward_scalars),
            backward_params=", ".join(g.name for g in plan.d.grad_symbols),
            backward_body=BackwardWriter(plan, needs).lines(),
        ),
        WrapperWriter(plan, needs),
    )


kernel_names = N.kernel_names


def function_kernels(plan: FunctionPlan) -> tuple | str:
    """The Triton kernels (forward, backward or None) of the function of
    `plan`, or why it has none."""
    fn = plan.fn
    try:
        found = K.function_kernels(fn, plan.d, N.kernel_names(fn.name))
    except K.NotPointwise as err:
        return str(err)
    except ValueError as err:  # a kernel that reads no tensor
        return str(err)
    optional = [i.name for i in fn.inputs if i.optional]
    if optional:
        return f"the optional tensor {optional[0]} (not yet supported)"
    if fn.kept:
        return "it keeps an intermediate for its backward (not yet supported)"
    if plan.by_presence:
        return "several differentiable outputs (not yet supported)"
    return found


def kernel_launches(kernels) -> tuple[Launch, Launch | None]:
    """The launches of (forward, backward or None) `fngen.kernels.Kernel`s."""

    def launch(kernel, backward: bool):
        return Launch(
            kernel.name,
            tuple(a.symbol.name for a in kernel.args),
            tuple(s.name for s in kernel.tensors),
            tuple(K.KernelWriter(kernel).keywords) if backward else (),
            tuple(kernel.needs) if backward else (),
        )

    forward, backward = kernels
    return launch(forward, False), (
        launch(backward, True) if backward is not None else None
    )


@dataclass
class FunctionChoices:
    """What the generated code of one function is made from: `fused` (the
    user's function with PyTorch's fused activations), `kept` (with the
    intermediates its backward keeps), `fn` (with kept reductions too: what
    the eager class computes), its `plan`, its Triton `kernels` or why it
    has none, and its save policy."""

    fused: FunctionSpec
    kept: FunctionSpec
    fn: FunctionSpec
    plan: FunctionPlan
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
    # The memory plan is made first only where its kernels decide the
    # save policy.
    plan = None
    found: tuple | str = "kernels: none"
    if (fn.kernels or kernels) == "triton":
        plan = plan_function(plain)
        found = function_kernels(plan)
    save = choose_save(fused, kernels=not isinstance(found, str))
    if save.policy == "speed":
        kept = save.fn
        plain = keep_reductions(kept)
        plan = None
        if not isinstance(found, str) or fn.kernels == "triton":
            found = "its backward keeps intermediates (save: speed; not yet supported)"
    if plan is None:
        plan = plan_function(plain)
    if isinstance(found, str) and fn.kernels == "triton":
        raise SpecError(
            fn.location,
            f"function '{fn.name}' cannot have Triton kernels: {found}",
            "only a pointwise function can; remove 'kernels: triton'",
        )
    if isinstance(found, str):
        plan = plan.with_choices(None, None, save.note())
    else:
        plan = plan.with_choices(found, kernel_launches(found), save.note())
    return FunctionChoices(fused, kept, plain, plan, found, save)


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
    fn: FunctionSpec,
    namespace: str | None = None,
    kernels: str = "none",
    needs: Needs | None = None,
) -> tuple[dict, FunctionPlan]:
    """The template context of one function, and the plan of its eager
    class; what its code needs from the module is added to `needs`.  With
    a `namespace` (``export: custom_op``) the function is also the custom
    op ``torch.ops.<namespace>.<name>``.  With `kernels` ``"triton"`` (the
    spec's; the function's own ``kernels:`` wins), a pointwise function
    gets Triton kernels (the plan's `kernels`); one that asks for them
    itself and cannot have them is an error."""
    needs = needs if needs is not None else Needs()
    try:
        choices = function_choices(fn, kernels)
        fused, kept, fn, plan = choices.fused, choices.kept, choices.fn, choices.plan
        wrapper = WrapperWriter(plan, needs)
        context = class_context(plan, needs, wrapper)
        function_class = N.function_class(fn.name)
        eager = (context["function_class"], wrapper.apply_suffix())
        compiled = (context["traceable_class"], wrapper.apply_suffix())
        if kept is not fused:
            context["traceable"], compiled_wrapper = traceable(
                keep_reductions(fused), function_class, needs
            )
            compiled = (compiled[0], compiled_wrapper.apply_suffix())
        else:
            needs.helpers.add("_without_jvp")
        # Traced (jit.trace, the legacy ONNX exporter) or scripted, a
        # Function's first outputs are taken for its results: a class
        # whose outputs are only the declared ones.
        traced = None
        if fn.kept:
            traced = compiled
            if compiled[1]:
                context["traced"], _ = traceable(
                    fused, function_class, needs, traced=True
                )
                context["traced_class"] = N.traced_class(fn.name)
                traced = (context["traced_class"], "")
        script = None
        if plan.declared_count == 1:
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
                schema=custom_op_schema(fn, plan.declared_count),
                function_class=op_class,
                pointwise=not fn.formula.ops,
                call=op,
            )
            needs.helpers.update({"_custom_op", "_has_tangent"})
        context["wrapper_body"] = wrapper.wrapper_body(
            dict(eager=eager, compile=compiled, trace=traced, script=script), op
        )
    except (PrintError, PlanError) as err:
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
    return context, plan


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
    needs, all_names = Needs(), []
    namespace = spec.namespace if spec.export == "custom_op" else None
    decompositions = []
    kernels = []
    for fn in spec.functions:
        context, plan = render_function(fn, namespace, spec.kernels, needs)
        kernels += [k for k in plan.kernels or () if k is not None]
        if namespace is not None:
            decompositions.append(context["custom_op"])
        chunk = format_source(_macros().function_chunk(context))
        check_calls(chunk, fn)
        chunks.append(chunk.strip("\n"))
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
        uses_math=needs.uses_math,
        helper_source=runtime_source(needs.helpers),
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
