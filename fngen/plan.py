"""The plan of one generated Function: every derivation its code is made of.

`plan_function` derives, once and up front, each variant the writer
prints: one derivation per combination of absent optional tensors, and
for each the backward of every combination of incoming gradients that
may be None (several differentiable outputs), with the facts the code
needs that span them (the shapes kept on ctx, the non-tensor inputs the
backward and jvp read, the tangents made zeros).  The writer
(`fngen.writer`) only reads the plan: it derives nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import sympy as sp

from fngen import dag
from fngen.derive import Derivation, derive, derive_backward
from fngen.model import FunctionSpec

# Up to this many differentiable outputs, the backward has a branch for
# each combination of None incoming gradients; past it, one part per
# output, added up (`Branch.additive`).
MAX_PRESENCE_OUTPUTS = 3


class PlanError(ValueError):
    """A derivation the generated code cannot be made from."""


@dataclass(frozen=True)
class Branch:
    """The code of one combination of absent optional tensors: `absent`,
    its `derivation`, and `by_presence`, the backward for each set of
    outputs that receive a gradient when some may be None (empty where
    the backward does not branch on that).  With `additive`, those sets
    part the outputs instead, and the backward is the sum of the parts
    whose gradients came (it is linear in them)."""

    absent: frozenset[str]
    derivation: Derivation
    by_presence: tuple[tuple[frozenset[int], Derivation], ...]
    # The tensors whose shapes the backward keeps on ctx: its own, and
    # those its branches for some outputs only read, less the saved ones.
    shapes: tuple[sp.Symbol, ...]
    additive: bool = False


@dataclass(frozen=True)
class Launch:
    """How the Function calls one of its Triton kernels' launchers:
    `name` with the arguments `args`; `tensors`, those that must qualify
    (``_kernels_take``); for a backward, the keyword flags `keywords`
    saying which of the gradients of `needs` to write."""

    name: str
    args: tuple[str, ...]
    tensors: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionPlan:
    """What one Function class is made of.

    `fn` is what the class computes (the user's function, or one with
    kept intermediates as extra outputs, `fn.kept` of them); `branches`
    end with the one where every optional tensor is present, which
    describes the class's signature.  `tuple_outputs`: the class for
    ``torch.compile`` and tracing (its code is printed for inductor).
    `kernels`: its Triton kernels (forward, backward or None) or None,
    and `launches`, how the class calls them; `save_note`: the save
    policy's sentence for its docstring."""

    fn: FunctionSpec
    branches: tuple[Branch, ...]
    tuple_outputs: bool = False
    kernels: tuple | None = None
    launches: tuple[Launch, Launch | None] | None = None
    save_note: str = ""

    @property
    def first_tensor(self) -> str:
        """The first float tensor input that is always given: where the
        code takes its dtype and device from."""
        return next(i.name for i in self.fn.float_inputs if not i.optional)

    @property
    def full(self) -> Branch:
        return self.branches[-1]

    @property
    def d(self) -> Derivation:
        return self.full.derivation

    @property
    def by_presence(self) -> bool:
        """Whether the backward branches on None incoming gradients (and
        sets ``ctx.set_materialize_grads(False)``)."""
        return bool(self.full.by_presence)

    @property
    def declared_count(self) -> int:
        return len(self.d.outputs) - self.fn.kept

    def kept_groups(self) -> tuple[frozenset[int], frozenset[int]]:
        """The indices of the differentiable declared outputs, then of the
        kept ones."""
        return kept_groups(self.fn, self.d)

    @property
    def zero_tangents(self) -> tuple[str, ...]:
        """Tensor inputs whose tangent may come as None: without
        materialized gradients (several outputs), forward-mode AD passes
        None for an input without a tangent, and the jvp makes it zeros."""
        if not self.by_presence:
            return ()
        tensors = [i.name for i in self.fn.float_inputs]  # a long input: none
        return tuple(tensors) if len(tensors) > 1 else ()

    @property
    def backward_scalars(self) -> frozenset[str]:
        """The non-tensor inputs some backward branch reads."""
        return self._scalars_in(
            block
            for branch in self.branches
            for d in [branch.derivation, *(v for _, v in branch.by_presence)]
            for block in d.backward
        )

    @property
    def jvp_scalars(self) -> frozenset[str]:
        """The non-tensor inputs the jvp reads."""
        if self.d.jvp_error:
            return frozenset()
        return self._scalars_in(
            block for branch in self.branches for block in branch.derivation.jvp
        )

    def _scalars_in(self, blocks) -> frozenset[str]:
        scalars = {i.name for i in self.fn.inputs if not i.is_tensor}
        read = set()
        for block in blocks:
            for _, expr in block.assignments:
                read |= {s.name for s in dag.free_symbols(expr)}
        return frozenset(read & scalars)

    def with_choices(self, kernels, launches, save_note: str) -> "FunctionPlan":
        """The plan with its kernels and their launches (or None) and its
        save note."""
        return replace(self, kernels=kernels, launches=launches, save_note=save_note)


def kept_groups(fn: FunctionSpec, d: Derivation) -> tuple[frozenset[int], ...]:
    declared = len(d.outputs) - fn.kept
    indices = [i for i, diff in enumerate(d.differentiable_outputs) if diff]
    return (
        frozenset(i for i in indices if i < declared),
        frozenset(i for i in indices if i >= declared),
    )


def variants(fn: FunctionSpec) -> list[tuple[frozenset[str], Derivation]]:
    """A derivation for each combination of absent optional tensors, the
    one with all present last."""
    optional = [i.name for i in fn.inputs if i.optional]
    found = []
    for combo in itertools.product([True, False], repeat=len(optional)):
        absent = frozenset(n for n, a in zip(optional, combo) if a)
        found.append((absent, derive(fn, absent)))
    return found


def presence_variants(
    fn: FunctionSpec, absent: frozenset[str], d: Derivation
) -> tuple[tuple[tuple[frozenset[int], Derivation], ...], bool]:
    """With several differentiable outputs, the backward for each set of
    outputs that may be alone in receiving a gradient (the others' are
    None, and no zeros are materialised), and whether those sets part
    the outputs (additive) rather than list their combinations.

    Up to `MAX_PRESENCE_OUTPUTS` outputs, every combination.  With kept
    outputs, or past that many, the parts: the declared outputs, then
    each kept one (double backward through it), or each output alone.  A
    materialised zero gradient would not do: times a partial that
    overflows (``exp(-x/2)`` of a kept ``expm1`` at x = -200 in
    float32) it makes a NaN where autograd, which skips an output without
    a gradient, makes none."""
    differentiable = [i for i, diff in enumerate(d.differentiable_outputs) if diff]
    if len(differentiable) < 2:
        return (), False
    if fn.kept:
        declared, kept = kept_groups(fn, d)
        if len(declared) > 1:
            raise PlanError("kept outputs beside several differentiable outputs")
        subsets = [declared] if declared else []
        subsets += [frozenset({i}) for i in sorted(kept)]
        additive = True
    elif len(differentiable) > MAX_PRESENCE_OUTPUTS:
        subsets = [frozenset({i}) for i in differentiable]
        additive = True
    else:
        subsets = [
            frozenset(c)
            for size in range(1, len(differentiable))
            for c in itertools.combinations(differentiable, size)
        ]
        additive = False
    found = tuple(
        (present, derive_backward(fn, absent, present, d.option)) for present in subsets
    )
    return found, additive


def _shapes(d: Derivation, by_presence) -> tuple[sp.Symbol, ...]:
    shapes = list(d.shapes)
    for _, variant in by_presence:
        missing = set(variant.saved) - set(d.saved)
        if missing:
            names = ", ".join(sorted(t.name for t in missing))
            raise PlanError(f"a backward branch reads unsaved tensors: {names}")
        shapes += [t for t in variant.shapes if t not in shapes and t not in d.saved]
    return tuple(shapes)


def plan_function(fn: FunctionSpec, tuple_outputs: bool = False) -> FunctionPlan:
    """Every derivation of `fn`'s Function class (see the module)."""
    branches = []
    for absent, d in variants(fn):
        by_presence, additive = presence_variants(fn, absent, d)
        shapes = _shapes(d, by_presence)
        branches.append(Branch(absent, d, by_presence, shapes, additive))
    return FunctionPlan(fn, tuple(branches), tuple_outputs)
