"""The bodies of a generated ``torch.autograd.Function``, from its plan.

`FunctionWriter` writes ``forward``, ``setup_context`` and ``jvp``;
`BackwardWriter` writes ``backward``.  Both only read a `FunctionPlan`
(`fngen.plan`): every derivation they print was made before they start,
and what the code keeps on ctx is read from the derivations, never from
the printed text.  What the printed code needs from the module (runtime
helpers, ``import math``) is collected in `Needs`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy as sp

from fngen import names as N
from fngen import tensorops as T
from fngen.merge import guarded, merge, statements
from fngen.printer import PrintError, TorchPrinter

if TYPE_CHECKING:  # the types of what the writer reads, never called
    from fngen.derive import Derivation
    from fngen.plan import Branch, FunctionPlan
    from fngen.schedule import Block


@dataclass
class Needs:
    """What the printed code of a module needs besides torch: its runtime
    helpers (`fngen/templates/runtime.py`) and ``import math``."""

    helpers: set[str] = field(default_factory=set)
    uses_math: bool = False


def _trailing(items) -> str:
    """The comma of a one-element tuple: ``(grad_x,)``."""
    return "," if len(items) == 1 else ""


class _Writer:
    def __init__(self, plan: FunctionPlan, needs: Needs | None = None):
        self.plan = plan
        self.fn = plan.fn
        self.d = plan.d
        self.needs = needs if needs is not None else Needs()
        self.optional = [i.name for i in self.fn.inputs if i.optional]
        self.first_tensor = plan.first_tensor

    def printer(self, dtype_of: str, shape_names=None, fused=False) -> TorchPrinter:
        """The printer of one method's code.  `fused`: ``a + u*v`` as
        ``torch.addcmul`` (one pass, not two), for the backward only,
        where it was measured to pay; the forward and the jvp read as
        the math does (``b + w * x``)."""
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
            select_then_scale=not self.plan.tuple_outputs,
            fused_arithmetic=fused,
        )

    def emit(
        self,
        blocks: tuple[Block, ...],
        printer: TorchPrinter,
        needs: dict[int, str],
        accumulate=frozenset(),
    ) -> list[str]:
        """The statements of `blocks`, each guarded block behind ``if
        needs_x or needs_y:`` (`needs`: input index -> its flag); a target
        in `accumulate` is added to (``grad_x = _accumulated(grad_x,
        ...)``), not assigned."""
        lines = []
        for block in blocks:
            indent = ""
            if block.guard:
                lines.append(
                    f"if {' or '.join(needs[i] for i in sorted(block.guard))}:"
                )
                indent = "    "
            for target, text in printer.statements(block.assignments):
                if target in accumulate:
                    text = f"_accumulated({target.name}, {text})"
                lines.append(f"{indent}{target.name} = {text}")
        if accumulate:
            self.needs.helpers.add("_accumulated")
        self.needs.uses_math |= printer.uses_math
        self.needs.helpers |= printer.helpers
        return lines

    def branches(self, body, in_ctx: bool) -> list[str]:
        """`body(branch)` for each branch of the plan, merged into one
        block (`fngen.merge`): a statement that not all branches share
        behind ``if bias is not None:`` (or ``not ctx.bias_is_none``)."""
        branches = self.plan.branches
        if len(branches) == 1:
            return body(branches[0])
        programs = [
            (b.absent, [s for s in statements(body(b)) if s != ("pass",)])
            for b in reversed(branches)  # the one with all present first
        ]
        every = frozenset(b.absent for b in branches)
        merged = []
        for keys, statement in merge(programs):
            # ``if needs_bias:`` runs nothing where bias is None (its needs
            # flag is False): no test of its own for that.
            for name in self.optional:
                if statement[0] == f"if {N.needs(name)}:":
                    keys |= {k for k in every if name in k}
            merged.append((keys, statement))
        lines = guarded(merged, every, lambda keys: self._test(keys, every, in_ctx))
        return lines or ["pass"]

    def _test(self, keys: frozenset, every: frozenset, in_ctx: bool) -> str:
        """The test that holds in the branches (sets of absent tensors) of
        `keys` among those of `every`: the fewest presence tests that tell
        them apart, or one conjunction per branch."""

        def one(name, absent):
            if in_ctx:
                return N.ctx_is_none(name) if absent else f"not {N.ctx_is_none(name)}"
            return f"{name} is None" if absent else f"{name} is not None"

        for size in range(1, len(self.optional) + 1):
            for names in itertools.combinations(self.optional, size):
                for values in itertools.product([False, True], repeat=size):
                    holds = {
                        k
                        for k in every
                        if all((n in k) == v for n, v in zip(names, values))
                    }
                    if holds == keys:
                        return " and ".join(map(one, names, values))
        return " or ".join(
            "(" + " and ".join(one(n, n in k) for n in self.optional) + ")"
            for k in sorted(keys, key=sorted)
        )

    def _saved(self, branch: Branch, which: str) -> list[str]:
        """The names of the tensors `branch` saves (`which`: ``saved`` or
        ``saved_for_jvp`` of its derivation): those of the branch with all
        present where they are the same less the absent ones (saved as
        None), so that every branch saves and unpacks alike."""
        own = [s.name for s in getattr(branch.derivation, which)]
        full = [s.name for s in getattr(self.plan.d, which)]
        if [name for name in full if name not in branch.absent] == own:
            return full
        return own

    def _unpack(self, saved: list[str]) -> list[str]:
        if not saved:
            return []
        return [f"{', '.join(saved)}{_trailing(saved)} = ctx.saved_tensors"]

    def _scalars(self, read: frozenset[str]) -> list[str]:
        """``eps = ctx.eps`` for the non-tensor inputs in `read`."""
        return [
            f"{i.name} = ctx.{i.name}"
            for i in self.fn.inputs
            if not i.is_tensor and i.name in read
        ]


class FunctionWriter(_Writer):
    """The forward, setup_context and jvp of one Function."""

    def forward(self) -> list[str]:
        kernel = []
        launches = self.plan.launches
        if launches:
            forward = launches[0]
            tensors = ", ".join(i.name for i in self.fn.float_inputs)
            kernel = [
                f"if _kernels_take({tensors}):",
                f"    return {forward.name}({', '.join(forward.args)})",
            ]

        def body(branch: Branch):
            d = branch.derivation
            lines = kernel + self.emit(d.forward, self.printer(self.first_tensor), {})
            lines += self._unaliased_outputs(d)
            return lines + [f"return {', '.join(o.name for o in d.outputs)}"]

        return self.branches(body, in_ctx=False)

    def _unaliased_outputs(self, d: Derivation) -> list[str]:
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

    def setup_context(self, scalars: frozenset[str]) -> list[str]:
        """The setup_context body; `scalars`: the non-tensor inputs to keep
        on ctx (those the backward and jvp read)."""
        fn, d = self.fn, self.d
        inputs = [i.name for i in fn.inputs]
        # The inputs the lines below read: unpacked only if there are any.
        read = set()
        lines = []
        kept = set()
        for branch in self.plan.branches:
            v = branch.derivation
            kept |= set(v.saved) | set(branch.shapes) | set(v.saved_for_jvp)
        if any(o in kept for o in d.outputs) or not all(d.differentiable_outputs):
            lines.append(f"{', '.join(o.name for o in d.outputs)} = output")
        for out, differentiable in zip(d.outputs, d.differentiable_outputs):
            if not differentiable:
                lines.append(f"ctx.mark_non_differentiable({out.name})")
        for spec in fn.inputs:
            if not spec.is_tensor and spec.name in scalars:
                lines.append(f"ctx.{spec.name} = {spec.name}")
                read.add(spec.name)
        for name in self.optional:
            lines.append(f"{N.ctx_is_none(name)} = {name} is None")
            read.add(name)
        if self.plan.by_presence:
            lines.append("ctx.set_materialize_grads(False)")
        zero = self.plan.zero_tangents
        for name in zero:
            shape = f"{name}.shape"
            if name in self.optional:
                shape = f"None if {name} is None else {shape}"
            lines.append(f"{N.ctx_shape(name)} = {shape}")
            read.add(name)

        def body(branch: Branch):
            v = branch.derivation
            saves = []
            saved = self._saved(branch, "saved")
            if saved:
                saves.append(f"ctx.save_for_backward({', '.join(saved)})")
            saved = self._saved(branch, "saved_for_jvp")
            if saved:
                saves.append(f"ctx.save_for_forward({', '.join(saved)})")
            for symbol in branch.shapes:
                if symbol.name not in zero:  # kept above for the jvp
                    saves.append(f"{N.ctx_shape(symbol.name)} = {symbol.name}.shape")
            read.update(s.name for s in [*v.saved, *v.saved_for_jvp, *branch.shapes])
            return saves or ["pass"]

        body_lines = self.branches(body, in_ctx=False)
        lines += [] if body_lines == ["pass"] else body_lines
        if not read & set(inputs):
            return lines or ["pass"]  # nothing of the inputs is kept
        return [f"{', '.join(inputs)}{_trailing(inputs)} = inputs"] + lines

    def _fill_tangents(self) -> list[str]:
        zero = self.plan.zero_tangents
        if not zero:
            return []
        tangents = dict(zip([i.name for i in self.fn.inputs], self.d.tangent_symbols))
        names = [tangents[name].name for name in zero]
        lines = [f"like = next(t for t in ({', '.join(names)}) if t is not None)"]
        for input_name, name in zip(zero, names):
            test = f"{name} is None"
            if input_name in self.optional:
                test += f" and not {N.ctx_is_none(input_name)}"
            lines += [
                f"if {test}:",
                f"    {name} = like.new_zeros({N.ctx_shape(input_name)})",
            ]
        return lines

    def jvp(self) -> list[str]:
        if self.d.jvp_error:
            return [f"raise NotImplementedError({self.d.jvp_error!r})"]
        scalars = self.plan.jvp_scalars

        def body(branch: Branch):
            d = branch.derivation
            lines = self._unpack(self._saved(branch, "saved_for_jvp"))
            lines += self._scalars(scalars)
            tangent = next(t for t in d.tangent_symbols if t is not None)
            lines += self.emit(d.jvp, self.printer(tangent.name), {})
            names = [t.name if t is not None else "None" for t in d.output_tangents]
            return lines + [f"return {', '.join(names)}"]

        return self._fill_tangents() + self.branches(body, in_ctx=True)

    def jvp_params(self) -> str:
        return ", ".join(
            t.name if t is not None else f"_{i.name}"
            for i, t in zip(self.fn.inputs, self.d.tangent_symbols)
        )


@dataclass
class _Body:
    """One backward: `setup` (unpacking ctx, the needs flags, the kernel
    launch, the gradients set to None), then `body`."""

    setup: list[str]
    body: list[str]

    @property
    def lines(self) -> list[str]:
        return self.setup + self.body


class BackwardWriter(_Writer):
    """The backward of one Function: a branch per combination of absent
    optional tensors, and within it per set of None incoming gradients."""

    def lines(self) -> list[str]:
        return self.branches(self._by_presence, in_ctx=True)

    def _by_presence(self, branch: Branch) -> list[str]:
        d = branch.derivation
        if not branch.by_presence:
            return self._backward(d, branch).lines
        grads = {
            i: g.name
            for i, (g, diff) in enumerate(zip(d.grad_symbols, d.differentiable_outputs))
            if diff
        }
        results = [name for name, _ in d.grads]
        lines = [
            f"if {' and '.join(f'{g} is None' for g in grads.values())}:",
            f"    return {', '.join('None' for _ in results)}{_trailing(results)}",
        ]
        if branch.additive:
            return lines + self._additive(branch, grads)
        branches = []
        for present, variant in branch.by_presence:
            tests = [
                f"{g} is not None" if i in present else f"{g} is None"
                for i, g in grads.items()
            ]
            branches.append((" and ".join(tests), (), self._backward(variant, branch)))
        return lines + _hoisted(branches, self._backward(d, branch))

    def _additive(self, branch: Branch, grads: dict[int, str]) -> list[str]:
        """The backward as a sum of parts, one per set of outputs of
        `branch.by_presence` (the declared outputs, then each kept one:
        double backward through it; or each output alone), each run where
        its gradients came.  The backward is linear in its incoming
        gradients, so the parts sum to the whole."""
        full = self._backward(branch.derivation, branch)
        lines = list(full.setup)
        kept = self.plan.kept_groups()[1]
        for n, (group, variant) in enumerate(branch.by_presence):
            part = self._backward(variant, branch, accumulate=n > 0)
            body = part.body[:-1]  # without its return
            if not body:
                continue
            test = " or ".join(f"{grads[i]} is not None" for i in sorted(group))
            if group <= kept:
                test += ":  # double backward through the kept output"
            else:
                test += ":"
            lines.append(f"if {test}")
            lines += [f"    {line}" for line in body]
        return lines + full.body[-1:]

    def _backward(
        self, d: Derivation, branch: Branch, accumulate: bool = False
    ) -> _Body:
        """The backward of `d`; saved tensors and shapes are `branch`'s.
        With `accumulate`, each input gradient is added to what an earlier
        part of the backward left in it (``_accumulated``)."""
        setup = self._unpack(self._saved(branch, "saved"))
        setup += self._scalars(self.plan.backward_scalars)
        derived = [name for name, symbol in d.grads if symbol is not None]
        needs = {i: N.needs(name) for i, name in enumerate(derived)}
        # An absent optional tensor keeps its names (its needs flag is
        # False, its gradient None), so that the branches share the lines.
        named = set(derived)
        named |= branch.absent & {n for n, s in self.plan.d.grads if s is not None}
        grad_names = [name for name, _ in d.grads if name in named]
        if grad_names:
            flags = [N.needs(name) if name in named else "_" for name, _ in d.grads]
            if len(flags) == 1:
                setup.append(f"{flags[0]} = ctx.needs_input_grad[0]")
            else:
                setup.append(f"{', '.join(flags)} = ctx.needs_input_grad")
            setup += self._backward_kernel(d, branch)
            setup.append(" = ".join(N.grad(n) for n in grad_names) + " = None")
        shape_names = {s: N.ctx_shape(s.name) for s in branch.shapes}
        # Dtypes and devices come from an incoming gradient this branch has:
        # in a branch for some outputs only, the others' are None.
        like = (d.present_grads or d.grad_symbols)[0].name
        grads = {symbol for _, symbol in d.grads if symbol is not None}
        body = self.emit(
            d.backward,
            self.printer(like, shape_names, fused=True),
            needs,
            accumulate=grads if accumulate else frozenset(),
        )
        results = [N.grad(name) if name in named else "None" for name, _ in d.grads]
        body.append(f"return {', '.join(results)}{_trailing(results)}")
        return _Body(setup, body)

    def _backward_kernel(self, d: Derivation, branch: Branch) -> list[str]:
        """The backward kernel's launch, where its tensors qualify and the
        backward is not itself differentiated (the torch code is)."""
        launches = self.plan.launches
        if not launches or launches[1] is None:
            return []
        backward = launches[1]
        tests = [
            "not torch.is_grad_enabled()",
            f"_kernels_take({', '.join(backward.tensors)})",
        ]
        # A tensor whose shape alone the backward keeps: the kernel does
        # not reduce a gradient to it, so it must have the others' shape.
        tests += [
            f"{N.ctx_shape(s.name)} == {backward.tensors[0]}.shape"
            for s in branch.shapes
        ]
        flags = [
            f"{kw}={N.needs(n)}" for kw, n in zip(backward.keywords, backward.needs)
        ]
        grads = [N.grad(n) for n in backward.needs]
        results = [
            N.grad(name) if symbol is not None else "None" for name, symbol in d.grads
        ]
        return [
            f"if {' and '.join(tests)}:",
            f"    {', '.join(grads)}{_trailing(grads)} = "
            f"{backward.name}({', '.join([*backward.args, *flags])})",
            f"    return {', '.join(results)}{_trailing(results)}",
        ]


def _hoisted(branches: list[tuple], final: _Body, fill=()) -> list[str]:
    """``if test:`` branches, then `final`, with the setup lines they all
    start with written once before them.  A branch is (test, lines to run
    after the setup, its `_Body`); `fill` is those of `final`."""
    bodies = [body for _, _, body in branches] + [final]
    common = 0
    while all(len(b.setup) > common for b in bodies) and (
        len({b.setup[common] for b in bodies}) == 1
    ):
        common += 1
    lines = list(final.setup[:common])
    for test, after_setup, body in branches:
        lines.append(f"if {test}:")
        rest = [*after_setup, *body.lines[common:]]
        lines += [f"    {line}" for line in rest]
    return lines + list(fill) + final.lines[common:]


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
