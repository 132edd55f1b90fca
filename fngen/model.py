"""The data model of a spec: frozen dataclasses, populated once by `spec.py`.

Nothing here does I/O.  Every entity keeps the `Location` it came from so
that later stages can still report errors against the spec file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import sympy as sp

from fngen.errors import Location


class InputKind(enum.Enum):
    TENSOR = "tensor"
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    # An integer tensor (class indices): an argument of `gather` and
    # `one_hot`, or compared; never differentiated (its gradient is None).
    LONG = "long"

    @property
    def is_tensor(self) -> bool:
        return self in (InputKind.TENSOR, InputKind.LONG)

    @property
    def is_differentiable(self) -> bool:
        return self is InputKind.TENSOR


DEFAULT_DOMAIN = (-2.0, 2.0)


@dataclass(frozen=True)
class InitCall:
    """A param's initialiser, parsed: ``torch.nn.init.<name>_`` with
    `args` and `kwargs` (name, value) pairs, expressions of the Module's
    dimension names."""

    name: str
    args: tuple[sp.Expr, ...] = ()
    kwargs: tuple[tuple[str, sp.Expr], ...] = ()


@dataclass(frozen=True)
class InputSpec:
    """One argument of a generated function, in signature order."""

    name: str
    kind: InputKind
    location: Location
    default: object = None
    has_default: bool = False
    domain: tuple[float, float] = DEFAULT_DOMAIN
    param: tuple[int | str, ...] | None = None
    init: str | None = None
    # `init` parsed, or the default initialiser (set by the loader).
    init_call: InitCall | None = None
    optional: bool = False
    # For a long input: fngen check samples it in [0, classes).
    classes: int | None = None

    @property
    def is_tensor(self) -> bool:
        return self.kind.is_tensor

    @property
    def is_differentiable(self) -> bool:
        return self.kind.is_differentiable

    @property
    def is_param(self) -> bool:
        return self.param is not None


@dataclass(frozen=True)
class OpNode:
    """A tensor-level operation of a formula: ``result = expr`` where expr is a
    `tensorops` call (a reduction, a matrix product, a transpose) whose
    arguments are pointwise expressions over earlier leaves."""

    result: sp.Symbol
    expr: sp.Expr
    location: Location


@dataclass(frozen=True)
class Formula:
    """A parsed formula as a graph.

    *Leaves* are the input symbols and the results of `ops`.  Every other
    statement is pointwise and has been inlined, so `outputs` and the
    arguments of `ops` are SymPy expressions over leaves only.
    """

    text: str
    ops: tuple[OpNode, ...]
    outputs: tuple[tuple[sp.Symbol, sp.Expr], ...]
    statements: tuple[tuple[str, sp.Expr], ...]
    location: Location


@dataclass(frozen=True)
class CheckSpec:
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    atol: float | None = None
    rtol: float | None = None
    skip: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    location: Location
    doc: str | None
    formula: Formula
    inputs: tuple[InputSpec, ...]
    symbols: tuple[tuple[str, sp.Symbol], ...]
    grads: tuple[tuple[str, sp.Expr], ...] = ()
    check: CheckSpec = field(default_factory=CheckSpec)
    once_differentiable: bool = False
    # None: like a built-in op (matrix products run in the autocast dtype);
    # "float32": always in full precision, like custom_fwd(cast_inputs=float32).
    autocast: str | None = None
    # How many of the formula's outputs, counted from the end, are not
    # declared outputs but intermediates the Function returns as well so
    # that its backward can keep them (see derive.keep_intermediate).
    kept: int = 0
    # The first arguments of the Module's __init__, in this order.
    module_args: tuple[str, ...] = ()
    # ``kernels:`` of the function itself ("triton" or "none"); None: the
    # spec's (`Spec.kernels`).
    kernels: str | None = None
    # ``save:`` of the function: "memory" (the backward recomputes from the
    # fewest saved tensors), "speed" (it also reads kept intermediates
    # where that spares it passes), None: chosen by counting passes (see
    # derive.choose_save).
    save: str | None = None

    def __post_init__(self):
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate input names in {self.name}")

    @property
    def tensor_inputs(self) -> tuple[InputSpec, ...]:
        return tuple(i for i in self.inputs if i.is_tensor)

    @property
    def float_inputs(self) -> tuple[InputSpec, ...]:
        """The differentiable tensor inputs (not the long ones)."""
        return tuple(i for i in self.inputs if i.is_differentiable)

    def symbol(self, name: str) -> sp.Symbol:
        return dict(self.symbols)[name]

    def input(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)


@dataclass(frozen=True)
class Spec:
    path: str
    doc: str | None
    functions: tuple[FunctionSpec, ...]
    check_device: str | None = None
    check_dtype: str | None = None
    # `SpecWarning`s: what builds but may not be what was meant.
    warnings: tuple = ()
    # "custom_op": each function is also a torch.library custom op
    # ``torch.ops.<namespace>.<name>``, which torch.export keeps.
    export: str | None = None
    namespace: str | None = None
    # "triton": pointwise functions get generated Triton kernels (see
    # fngen.kernels), unless a function says ``kernels: none``.
    kernels: str = "none"
