"""Differentiate a parsed formula: forward, backward and jvp programs.

Two levels, like PyTorch's own ``derivatives.yaml``: tensor operations
(reductions, matrix products, transposes) are differentiated by their
vector-Jacobian rules here, and the pointwise regions between them by SymPy.

The result is a `Derivation`: straight-line programs of SymPy assignments,
common subexpressions shared (`schedule.py`), ready for the printer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import sympy as sp

from fngen import dag
from fngen import functions as F
from fngen import tensorops as T
from fngen.formula import is_condition
from fngen.functions import Piecewise, has_zero_branch, indicator
from fngen.model import Formula, FunctionSpec, OpNode
from fngen.stable import bottom_up, stabilize
from fngen.shapes import ShapeFacts
from fngen.schedule import Block, Step, schedule


@dataclass(frozen=True)
class Derivation:
    """Everything the templates need to write one Function."""

    forward: tuple[Block, ...]
    outputs: tuple[sp.Symbol, ...]
    differentiable_outputs: tuple[bool, ...]
    grad_symbols: tuple[sp.Symbol, ...]
    saved: tuple[sp.Symbol, ...]
    saved_for_jvp: tuple[sp.Symbol, ...]
    shapes: tuple[sp.Symbol, ...]
    backward: tuple[Block, ...]
    grads: tuple[tuple[str, sp.Symbol | None], ...]
    tangent_symbols: tuple[sp.Symbol | None, ...]
    jvp: tuple[Block, ...]
    # None for a non-differentiable (bool) output.
    output_tangents: tuple[sp.Symbol | None, ...]
    derivatives: tuple[tuple[str, str, sp.Expr], ...]
    option: int = 0
    # Why there is no jvp (a `grad:` override not linear in the gradient).
    jvp_error: str | None = None
    # The outputs whose incoming gradient the backward reads (None: all).
    present: frozenset[int] | None = None

    @property
    def present_grads(self) -> tuple[sp.Symbol, ...]:
        """The incoming gradients this backward has: of differentiable
        outputs, and of those in `present`."""
        return tuple(
            g
            for i, (g, diff) in enumerate(
                zip(self.grad_symbols, self.differentiable_outputs)
            )
            if diff and (self.present is None or i in self.present)
        )


def mt(expr: sp.Expr) -> sp.Expr:
    """``expr.mT``, undoing a transpose rather than stacking two."""
    return expr.args[0] if isinstance(expr, T.TensorMT) else T.TensorMT(expr)


def _transposed(expr: sp.Expr) -> sp.Expr:
    """``expr.mT``, of a matrix product ``p @ q`` as ``q.mT @ p.mT``."""
    if isinstance(expr, T.TensorMatmul):
        return T.TensorMatmul(mt(expr.args[1]), mt(expr.args[0]))
    return mt(expr)


class Deriver:
    def __init__(
        self,
        fn: FunctionSpec,
        absent: frozenset[str] = frozenset(),
        present: frozenset[int] | None = None,
    ):
        self.fn = fn
        # False: the derivation is only counted (`counted`), no jvp.
        self.with_jvp = True
        # The outputs whose incoming gradient is not None (all when None).
        self.present = present
        self.inputs = {i.name: fn.symbol(i.name) for i in fn.inputs}
        # An absent optional tensor counts as zero.
        zero = {self.inputs[name]: sp.Integer(0) for name in absent}
        self.formula = Formula(
            fn.formula.text,
            tuple(
                OpNode(op.result, op.expr.xreplace(zero), op.location)
                for op in fn.formula.ops
            ),
            tuple((out, expr.xreplace(zero)) for out, expr in fn.formula.outputs),
            fn.formula.statements,
            fn.formula.location,
        )
        self.overrides = {
            name: expr.xreplace(zero) for name, expr in fn.grads if name not in absent
        }
        self.tensor_inputs = [
            fn.symbol(i.name) for i in fn.tensor_inputs if i.name not in absent
        ]
        # Long inputs (class indices) are leaves, never differentiated.
        self.indices = {
            fn.symbol(i.name)
            for i in fn.tensor_inputs
            if not i.is_differentiable and i.name not in absent
        }
        self.op_results = [op.result for op in self.formula.ops]
        self.leaves = set(self.tensor_inputs) | set(self.op_results)
        self.op_by_result = {op.result: op for op in self.formula.ops}
        # KeptShape -> the reduction result whose shape it stands for.
        self.kept_shapes: dict[sp.Expr, sp.Symbol] = {}
        # The gradient symbol of an intermediate (grad_mu) -> its shape.
        self.reduced_grads: dict[sp.Symbol, sp.Expr] = {}
        # The same gradient symbol -> the op result it is the gradient of.
        self.grad_results: dict[sp.Symbol, sp.Symbol] = {}
        self.scalars = {fn.symbol(i.name) for i in fn.inputs if not i.is_tensor}
        outputs = self.formula.outputs
        self.outputs = [name for name, _ in outputs]
        self.output_exprs = dict(outputs)
        self.differentiable = [not is_condition(expr) for _, expr in outputs]
        # Kept functions of reductions (``rstd = 1/sqrt(var + eps)``):
        # the reduction, solved from the kept value (``var = rstd**-2 -
        # eps``), for a backward that reads the kept value instead.
        self.inverses = {}
        self.kept_powers = set()
        self.same_shape = {}
        for out, expr in outputs:
            solved = _solve_kept(out, expr, self.op_by_result)
            if solved is not None:
                self.inverses[solved[0]] = solved[1]
                self.kept_powers.add(out)
                # The kept value has the reduction's shape.
                self.same_shape[T.ShapeOf(solved[0])] = T.ShapeOf(out)
        self.small = {out for out, expr in outputs if self._reduced_only(expr)}
        self.grad_symbols = grad_symbols(fn)

    # -- helpers ------------------------------------------------------

    def _reduced_only(self, expr: sp.Expr) -> bool:
        """Whether `expr` reads tensors only through reductions: a value as
        small as they are."""
        leaves = expr.free_symbols & self.leaves
        return bool(leaves) and all(
            isinstance(
                getattr(self.op_by_result.get(leaf), "expr", None),
                T.REDUCTIONS,
            )
            for leaf in leaves
        )

    def through_kept(self, expr: sp.Expr) -> sp.Expr:
        """`expr` reading kept functions of reductions instead of the
        reductions, where that costs no more operations: ``(var +
        eps)**1.5`` is ``rstd**-3``, but ``log(var)`` stays, as
        ``log(rstd**-2 - eps)`` would lose precision."""
        if not self.inverses or not expr.free_symbols & set(self.inverses):
            return expr
        # A shape is read from the kept value (sum_to_size(y_sum.shape) is
        # sum_to_size(rstd.shape)), and not solved for.
        expr = expr.xreplace(self.same_shape)
        shapes = {
            shape: sp.Dummy(f"shape{n}")
            for n, shape in enumerate(expr.atoms(T.ShapeOf, T.KeptShape))
        }
        solved = expr.xreplace(shapes).xreplace(self.inverses)
        solved = solved.xreplace({d: shape for shape, d in shapes.items()})
        for add in solved.atoms(sp.Add):
            # ``rstd**-2 - eps``: the reduction, recovered by a subtraction.
            if add.free_symbols & self.kept_powers and any(
                term.free_symbols <= self.scalars for term in add.args
            ):
                return expr
        return solved if op_count(solved) <= op_count(expr) else expr

    def leaves_of(self, expr: sp.Expr) -> list[sp.Symbol]:
        found = dag.free_symbols(expr) & self.leaves
        return sorted(found, key=lambda s: s.name)

    def shape_of(self, expr: sp.Expr) -> sp.Expr:
        """The broadcast shape of the leaves of `expr`, leaving out a
        ``keepdim`` reduction of the others (``x - mu`` has x's shape)."""
        leaves = self.leaves_of(expr)
        shaped = []
        for leaf in leaves:
            if self._within(leaf, leaves):
                continue
            op = self.op_by_result.get(leaf)
            if op is not None and isinstance(op.expr, T.TensorGather):
                leaf = op.expr.args[2]  # a gather has its index's shape
            if leaf not in shaped:
                shaped.append(leaf)
        return T.ShapeOf(*shaped)

    def _within(self, leaf: sp.Symbol, leaves: list[sp.Symbol]) -> bool:
        """Whether `leaf` is a ``keepdim=True`` reduction of an argument all
        of whose leaves are among `leaves`: its shape then broadcasts into
        theirs, and adds nothing to it."""
        op = self.op_by_result.get(leaf)
        if op is None or not isinstance(op.expr, T.REDUCTIONS):
            return False
        arg, _, keepdim = op.expr.args
        inner = self.leaves_of(arg)
        return bool(keepdim) and bool(inner) and set(inner) <= set(leaves) - {leaf}

    def pullback(
        self, upstream: sp.Expr, expr: sp.Expr, exact: bool, into: dict
    ) -> None:
        """Add the contributions of `upstream`, the gradient of the value of
        pointwise `expr`, to the gradients of the leaves of `expr`.  `exact`:
        `upstream` has exactly the broadcast shape of `expr`."""
        leaves = self.leaves_of(expr)
        for leaf in leaves:
            derivative = simplest(stabilize(dag.derivative(expr, leaf)))
            if derivative == 0:
                continue
            contribution = upstream * derivative
            # Each term is reduced to its leaf's shape where it is formed: a
            # term of another shape added to it would be counted once per
            # broadcast element.  (A matmul's or transpose's only term is
            # unreduced again, see `gradient_expressions`.)
            if not (exact and leaves == [leaf]):
                contribution = self.sum_to_shape(contribution, self.leaf_shape(leaf))
            into.setdefault(leaf, []).append(contribution)

    def sum_to_shape(self, expr: sp.Expr, shape: sp.Expr) -> sp.Expr:
        """``SumToSize(expr, shape)``, with the factors that already have
        `shape` (or are scalars) multiplied after the sum: rms_norm's
        ``sum(grad*x*w/(2*(eps + ms)**1.5))`` over a row is
        ``sum(grad*x*w)/(2*(eps + ms)**1.5)``, one pass less over the
        tensor.  An expanded factor of that shape goes out unexpanded.  Only
        for the shape of a reduction, which surely is smaller: the shape of
        an input is most often already the gradient's."""
        if not isinstance(shape, T.KeptShape):
            return T.SumToSize(expr, shape)
        outside, inside = [], []
        for factor in sp.Mul.make_args(expr):
            if isinstance(factor, T.Expand) and self.has_shape(factor.args[0], shape):
                outside.append(factor.args[0])
            elif self.has_shape(factor, shape):
                outside.append(factor)
            else:
                inside.append(factor)
        if self.sums_to_zero(sp.Mul(*inside), shape):
            return sp.Integer(0)
        if not outside or not inside:
            return T.SumToSize(expr, shape)
        return sp.Mul(*outside) * T.SumToSize(sp.Mul(*inside), shape)

    def sums_to_zero(self, expr: sp.Expr, shape: sp.Expr) -> bool:
        """Whether `expr` is ``e - mu`` (or ``mu - e``) with ``mu = mean(e,
        dims, keepdim=True)`` and `shape` mu's: deviations from a mean sum
        to zero over the dimensions it was taken on (exactly; in floating
        point to rounding, which PyTorch's own layer_norm backward also
        leaves out)."""
        terms = sp.Add.make_args(expr)
        if len(terms) != 2:
            return False
        for mean, other in (terms, terms[::-1]):
            if mean.could_extract_minus_sign():
                mean, other = -mean, -other
            op = self.op_by_result.get(mean)
            if (
                op is not None
                and isinstance(op.expr, T.TensorMean)
                and bool(op.expr.args[2])
                and other == -op.expr.args[0]
                and self.pure_leaf_shape(mean) == shape
            ):
                return True
        return False

    def has_shape(self, expr: sp.Expr, shape: sp.Expr) -> bool:
        """Whether `expr` is a scalar or, elementwise of leaves and reduced
        gradients that all have `shape`, has exactly `shape`."""
        if any(not isinstance(op, T.SCALAR_OPS) for op in expr.atoms(T.TensorOp)):
            return False
        for symbol in _without_shapes(expr).free_symbols:  # x.shape[-1] is a number
            if symbol in self.leaves:
                if self.pure_leaf_shape(symbol) != shape:
                    return False
            elif symbol in self.reduced_grads:
                if self.reduced_grads[symbol] != shape:
                    return False
            elif symbol not in self.scalars:
                return False  # an incoming gradient: the output's shape
        return True

    def leaf_shape(self, leaf: sp.Symbol) -> sp.Expr:
        """The shape of `leaf`; for the result of a ``keepdim=True``
        reduction, from its argument's shape, so that a backward that needs
        only the shape (``log_softmax``'s ``logsumexp``) does not recompute it."""
        shape = self.pure_leaf_shape(leaf)
        if isinstance(shape, T.KeptShape):
            self.kept_shapes[shape] = leaf
        return shape

    def pure_leaf_shape(self, leaf: sp.Symbol) -> sp.Expr:
        """`leaf_shape`, without noting the reduction it stands for."""
        op = self.op_by_result.get(leaf)
        if op is not None and isinstance(op.expr, T.TensorGather):
            return T.ShapeOf(op.expr.args[2])  # the index's
        if op is not None and isinstance(op.expr, T.NORMALIZATIONS):
            return self.shape_of(op.expr.args[0])  # its argument's
        if op is not None and isinstance(op.expr, T.REDUCTIONS):
            arg, dims, keepdim = op.expr.args
            signs = {int(d) < 0 for d in dims}
            if keepdim and len(signs) <= 1:
                return T.KeptShape(self.shape_of(arg), dims)
        return T.ShapeOf(leaf)

    def surely_matrix(self, expr: sp.Expr) -> bool:
        """Whether `expr` has at least two dimensions whatever the inputs:
        a ``.T`` (which fails on fewer), and what is computed from such.
        Not a tensor input, nor a param: the functional form takes any
        tensor, and a vector there would make ``grad @ b.mT`` a wrong
        gradient of the right size."""
        if isinstance(expr, T.TensorMT):
            return True
        if isinstance(expr, T.TensorMatmul):
            return all(map(self.surely_matrix, expr.args))
        if isinstance(expr, T.REDUCTIONS):
            arg, _, keepdim = expr.args
            return bool(keepdim) and self.surely_matrix(arg)
        if isinstance(expr, sp.Symbol):
            op = self.op_by_result.get(expr)
            return op is not None and self.surely_matrix(op.expr)
        # Pointwise: broadcast to the most dimensions of its arguments.
        return any(self.surely_matrix(arg) for arg in expr.args)

    def operand_shape(self, expr: sp.Expr) -> sp.Expr:
        """The shape of a matrix product's operand (``x.mT.shape``)."""
        if isinstance(expr, T.TensorMT) or expr in self.leaves:
            return T.ShapeOf(expr)
        return self.shape_of(expr)

    def sums_own_broadcast(self, leaf: sp.Symbol) -> bool:
        """Whether the VJP of the op that makes `leaf` reduces a broadcast
        gradient to its operands' shapes itself: a transpose (whose
        operand's gradient is summed to its shape), and a matrix product
        (whose helpers sum the gradient to the product's shape first).  Its
        gradient need not be reduced to its shape, which would need the
        result (recomputed, for a product) or its shape."""
        op = self.op_by_result.get(leaf)
        return op is not None and isinstance(op.expr, (T.TensorMatmul, T.TensorMT))

    def vjp(
        self, op, upstream: sp.Symbol, exact: bool = True
    ) -> list[tuple[sp.Expr, sp.Expr, bool]]:
        """(argument, its gradient, exact) for each argument of a tensor op.
        `exact`: `upstream` has exactly the shape of the op's result; else
        it may be broadcast beyond it (a matmul's or transpose's)."""
        expr = op.expr
        if isinstance(expr, (T.TensorSum, T.TensorMean)):
            arg, dims, keepdim = expr.args
            grad = upstream
            if isinstance(expr, T.TensorMean):
                # Divide the small reduced gradient, before it is expanded.
                grad = grad / T.Numel(self.shape_of(arg), dims)
            if len(dims) and not keepdim:
                grad = T.Unsqueeze(grad, dims)
            grad = T.Expand(grad, self.shape_of(arg))
            return [(arg, grad, True)]
        if isinstance(expr, T.EXTREMA):
            # PyTorch's rule: the gradient split evenly among the ties.
            grad, mask = self._extremum_mask(expr, upstream, op.result)
            count = T.TensorSum(mask, expr.args[1], sp.true)
            shape = self.shape_of(expr.args[0])
            return [(expr.args[0], T.Expand(grad / count, shape) * mask, True)]
        if isinstance(expr, T.TensorLogSumExp):
            arg, dims, keepdim = expr.args
            grad, result = upstream, op.result
            if not keepdim:
                grad, result = T.Unsqueeze(grad, dims), T.Unsqueeze(result, dims)
            # The softmax of the argument, from the (recomputed) result.
            return [
                (arg, T.Expand(grad, self.shape_of(arg)) * sp.exp(arg - result), True)
            ]
        if isinstance(expr, T.NORMALIZATIONS):
            arg, dims = expr.args
            result, total = op.result, T.TensorSum(upstream, dims, sp.true)
            if isinstance(expr, T.TensorLogSoftmax):
                # grad - softmax * sum(grad), softmax = exp(result)
                grad = upstream - sp.exp(result) * total
            else:
                # softmax * (grad - sum(grad * softmax))
                grad = result * (
                    upstream - T.TensorSum(upstream * result, dims, sp.true)
                )
            return [(arg, grad, True)]
        if isinstance(expr, T.TensorGather):
            arg, dim, index = expr.args
            return [(arg, T.ScatterAdd(upstream, dim, index, self.shape_of(arg)), True)]
        if isinstance(expr, T.TensorOneHot):
            return []
        if isinstance(expr, T.TensorMT):
            return [(expr.args[0], T.TensorMT(upstream), exact)]
        if isinstance(expr, T.TensorMatmul):
            a, b = expr.args
            # With a vector operand (torch.matmul's rules) ``grad @ b.mT`` is
            # wrong, or a wrong gradient of the right size once summed: a
            # helper of the generated module branches on the ranks and sums
            # to the operand's shape, unless both are surely matrices.  So
            # does a gradient broadcast beyond the product (``d - a @ b``
            # with a product of one column), which the helper sums first.
            if exact and self.surely_matrix(a) and self.surely_matrix(b):
                grad_a = (T.TensorMatmul(upstream, mt(b)), False)
                grad_b = (T.TensorMatmul(mt(a), upstream), False)
            else:
                grad_a = (T.MatmulGradA(upstream, b, self.operand_shape(a)), True)
                grad_b = (T.MatmulGradB(a, upstream, self.operand_shape(b)), True)
            # An operand x.mT gets the transposed gradient: b @ grad.mT.
            return [
                (
                    (operand.args[0], _transposed(grad), exact)
                    if isinstance(operand, T.TensorMT)
                    else (operand, grad, exact)
                )
                for operand, (grad, exact) in ((a, grad_a), (b, grad_b))
            ]
        raise TypeError(f"no VJP rule for {type(expr).__name__}")

    def _extremum_mask(self, expr, upstream, result):
        """(upstream with the reduced dims kept, the 0/1 mask of the
        elements equal to the extremum `result`) of an amax or amin."""
        arg, dims, keepdim = expr.args
        if not keepdim:
            if len(dims):
                upstream, result = T.Unsqueeze(upstream, dims), T.Unsqueeze(
                    result, dims
                )
        return upstream, indicator(sp.Eq(arg, result))

    def jvp_rule(self, expr: sp.Expr, tangent_of, result_symbol=None) -> sp.Expr:
        """The tangent of a tensor op's result, given `tangent_of(arg)`;
        0 where the argument's is (``sum(floor(x))``)."""
        if isinstance(expr, (T.TensorSum, T.TensorMean)):
            arg, dims, keepdim = expr.args
            inner = tangent_of(arg)
            return type(expr)(inner, dims, keepdim) if inner != 0 else inner
        if isinstance(expr, T.EXTREMA):
            arg, dims, keepdim = expr.args
            inner = tangent_of(arg)
            if inner == 0:
                return inner
            _, mask = self._extremum_mask(expr, sp.S.One, result_symbol)
            count = T.TensorSum(mask, dims, keepdim)
            return T.TensorSum(inner * mask, dims, keepdim) / count
        if isinstance(expr, T.TensorLogSumExp):
            arg, dims, keepdim = expr.args
            inner = tangent_of(arg)
            if inner == 0:
                return inner
            result = result_symbol if keepdim else T.Unsqueeze(result_symbol, dims)
            return T.TensorSum(sp.exp(arg - result) * inner, dims, keepdim)
        if isinstance(expr, T.NORMALIZATIONS):
            arg, dims = expr.args
            inner = tangent_of(arg)
            if inner == 0:
                return inner
            inner = self.full_tangent(arg, inner)
            result = result_symbol
            if isinstance(expr, T.TensorLogSoftmax):
                return inner - T.TensorSum(sp.exp(result) * inner, dims, sp.true)
            return result * (inner - T.TensorSum(result * inner, dims, sp.true))
        if isinstance(expr, T.TensorGather):
            arg, dim, index = expr.args
            inner = tangent_of(arg)
            if inner == 0:
                return inner
            # Gathered from the argument's shape, not the tangent's.
            return T.TensorGather(self.full_tangent(arg, inner), dim, index)
        if isinstance(expr, T.TensorOneHot):
            return sp.Integer(0)
        if isinstance(expr, T.TensorMT):
            inner = tangent_of(expr.args[0])
            return T.TensorMT(inner) if inner != 0 else inner
        if isinstance(expr, T.TensorMatmul):
            a, b = expr.args
            a_t, b_t = tangent_of(a), tangent_of(b)
            terms = [
                T.TensorMatmul(a_t, b) if a_t != 0 else 0,
                T.TensorMatmul(a, b_t) if b_t != 0 else 0,
            ]
            return sp.Add(*terms)
        raise TypeError(f"no JVP rule for {type(expr).__name__}")

    def full_tangent(self, expr: sp.Expr, tangent: sp.Expr) -> sp.Expr:
        """`tangent`, the tangent of `expr`, expanded to expr's shape where
        its terms do not have it already."""
        if self.covers(expr, tangent):
            return tangent
        return T.Expand(tangent, self.shape_of(expr))

    def covers(self, expr: sp.Expr, tangent: sp.Expr) -> bool:
        """Whether `tangent`, a sum of terms, has the broadcast shape of
        `expr` already: each leaf of `expr` appears in some term."""
        if tangent.is_number:
            return False
        terms = tangent.args if isinstance(tangent, sp.Add) else (tangent,)
        covered = set()
        for term in terms:
            covered |= term.free_symbols
        tangents = {
            sp.Symbol(f"{leaf.name}_t", real=True): leaf for leaf in self.leaves
        }
        covered |= {tangents[s] for s in covered if s in tangents}
        return set(self.leaves_of(expr)) <= covered

    # -- backward -----------------------------------------------------

    def gradient_expressions(self) -> dict[sp.Symbol, sp.Expr]:
        """Each tensor input's gradient as an expression over leaves, inputs
        and incoming gradients; `grad:` overrides replace derived ones."""
        contributions: dict[sp.Symbol, list[sp.Expr]] = {}
        for index, ((out, expr), grad, diff) in enumerate(
            zip(self.formula.outputs, self.grad_symbols, self.differentiable)
        ):
            if not diff or (self.present is not None and index not in self.present):
                continue
            self.pullback(grad, expr, exact=True, into=contributions)
        self.op_grads: list[tuple[sp.Symbol, sp.Expr]] = []
        for op in reversed(self.formula.ops):
            terms = contributions.pop(op.result, [])
            if isinstance(op.expr, T.TensorOneHot):
                continue  # constant in every differentiable input
            exact = True
            if (
                len(terms) == 1
                and self.sums_own_broadcast(op.result)
                and isinstance(terms[0], T.SumToSize)
                and terms[0].args[1] == T.ShapeOf(op.result)
            ):
                # Its only term: the VJP reduces the broadcast itself.
                terms, exact = [terms[0].args[0]], False
            total = sp.Add(*terms)
            if total == 0:  # no path, or deviations from a mean that sum to 0
                continue
            upstream = total
            if not total.is_Symbol:
                upstream = sp.Symbol(f"grad_{op.result.name}", real=True)
                self.op_grads.append((upstream, total))
                if exact:
                    self.reduced_grads[upstream] = self.pure_leaf_shape(op.result)
                    self.grad_results[upstream] = op.result
            for arg, grad, arg_exact in self.vjp(op, upstream, exact):
                self.pullback(grad, arg, arg_exact, contributions)
        # Contributions through several paths share factors: x*sigmoid(x)
        # feeding two outputs gets grad_a*D + grad_b*D*cos(...), which is
        # D*(grad_a + grad_b*cos(...)), D printed as one fused kernel.
        grads = {
            leaf: (
                _sum_simplest(contributions.get(leaf, []))
                if leaf not in self.indices
                else sp.Integer(0)
            )
            for leaf in self.tensor_inputs
        }
        # An output that got no gradient (None) counts as zero in overrides.
        absent = {
            g: sp.Integer(0)
            for index, g in enumerate(self.grad_symbols)
            if self.present is not None and index not in self.present
        }
        for name, expr in self.overrides.items():
            leaf = self.inputs[name]
            expr = expr.xreplace(absent)
            if (
                set(self.leaves_of(expr)) | {leaf} != {leaf}
                or len(self.tensor_inputs) > 1
            ):
                expr = T.SumToSize(expr, T.ShapeOf(leaf))
            grads[leaf] = expr
        # An input whose derivative is zero (floor(x), or one SymPy proves
        # has no effect, as x in max(max(c, pi), cos(x))) gets zeros, as
        # autograd of the formula gives: a None would tell autograd the
        # input was not used.  None stays for an input that no output
        # receiving a gradient reads at all (autograd's None too).
        reached = self.reached_inputs()
        for leaf in self.tensor_inputs:
            if grads[leaf] == 0 and leaf in reached and leaf not in self.indices:
                grads[leaf] = T.Expand(sp.Integer(0), T.ShapeOf(leaf))
        return grads

    def reached_inputs(self) -> set[sp.Symbol]:
        """The tensor inputs read by the differentiable outputs that receive
        a gradient, directly or through tensor ops."""
        frontier = set()
        for index, ((_, expr), diff) in enumerate(
            zip(self.formula.outputs, self.differentiable)
        ):
            if diff and (self.present is None or index in self.present):
                frontier |= expr.free_symbols
        seen = set()
        while frontier:
            symbol = frontier.pop()
            if symbol in seen:
                continue
            seen.add(symbol)
            if symbol in self.op_by_result:
                frontier |= self.op_by_result[symbol].expr.free_symbols
        return seen & set(self.tensor_inputs)

    def substitute_outputs(self, exprs: list[sp.Expr]) -> list[sp.Expr]:
        """Express derivatives through the outputs where they contain them
        (``exp'(x) = exp(x)`` becomes the saved output)."""
        result = []
        for expr in exprs:
            for out, out_expr in self.output_exprs.items():
                if (
                    out_expr != out
                    and not is_condition(out_expr)
                    and out_expr.free_symbols
                ):
                    expr = self.eliminate(_subs(expr, out_expr, out), out, out_expr)
            result.append(expr)
        return result

    def eliminate(self, expr: sp.Expr, out: sp.Symbol, out_expr: sp.Expr) -> sp.Expr:
        """`expr` with a leaf solved from ``out = out_expr`` when that leaves
        it fewer tensors to read.  SymPy distributes ``2*(x - y)`` into
        ``2*x - 2*y``, where ``subs(x - y, d)`` finds nothing; ``x = d + y``
        gives ``2*d``."""
        if not isinstance(out_expr, sp.Add):
            return expr
        # Shapes stay as they are: a shape is kept on ctx, never recomputed.
        shapes = {
            shape: sp.Dummy(f"shape{n}")
            for n, shape in enumerate(dag.atoms(expr, T.ShapeOf))
        }
        masked = dag.xreplace(expr, shapes)
        tensors = set(self.tensor_inputs) | set(self.op_results) | set(self.outputs)
        masked_symbols = dag.free_symbols(masked)
        before = len(masked_symbols & tensors)
        for leaf in sorted(
            dag.free_symbols(out_expr) & masked_symbols & self.leaves, key=str
        ):
            slope = dag.derivative(out_expr, leaf)
            if not slope.is_number or slope == 0:
                continue
            solved = _subs(masked, leaf, leaf + (out - out_expr) / slope)
            if len(dag.free_symbols(solved) & tensors) < before:
                return dag.xreplace(solved, {d: shape for shape, d in shapes.items()})
        return expr

    def needed_recomputation(self, exprs) -> list:
        """Tensor ops whose results the backward needs but are not outputs:
        they are recomputed from saved tensors (saving an intermediate would
        break double backward)."""
        outputs = set(self.outputs)
        needed: set[sp.Symbol] = set()
        frontier = (
            set().union(*(dag.free_symbols(e) for e in exprs)) if exprs else set()
        )
        while frontier:
            symbol = frontier.pop()
            if (
                symbol in self.op_by_result
                and symbol not in outputs
                and symbol not in needed
            ):
                needed.add(symbol)
                frontier |= self.op_by_result[symbol].expr.free_symbols
        return [op for op in self.formula.ops if op.result in needed]

    def referenced(self, exprs) -> tuple[set, set]:
        """(tensors, shapes) the expressions use from the forward."""
        tensors, shapes = set(), set()
        available = set(self.tensor_inputs) | set(self.outputs)
        for expr in exprs:
            for shape in dag.atoms(expr, T.ShapeOf):
                shapes |= set(shape.args)
            tensors |= dag.free_symbols(_without_shapes(expr)) & available
        return tensors, shapes - tensors

    def backward_expressions(self) -> list[sp.Expr]:
        """The tensor ops' gradients, then each nonzero input gradient: what
        the backward computes, before the save policy."""
        grads = self.gradient_expressions()
        exprs = [e for _, e in self.op_grads]
        exprs += [grads[leaf] for leaf in self.tensor_inputs if grads[leaf] != 0]
        return [self.through_kept(e) for e in exprs]

    def saved_count(self, exprs: list[sp.Expr] | None = None) -> int:
        """How many tensors `derive` would save for `exprs` (by default the
        backward's own), without the rest of its work (scheduling, the
        forward and the jvp)."""
        if exprs is None:
            exprs = self.backward_expressions()
        counts = []
        for choice in (exprs, self.substitute_outputs(exprs)):
            recompute = self.needed_recomputation(choice)
            tensors, _ = self.referenced([op.expr for op in recompute] + choice)
            counts.append(len(tensors))
        return min(counts)

    def derive(self, option: int | None = None):
        """`option` forces the save policy (0: inputs, 1: outputs where
        they help); by default the cheaper one is chosen."""
        grads = self.gradient_expressions()
        order = [g for g in self.tensor_inputs if grads[g] != 0]
        grad_names = {leaf: sp.Symbol(f"grad_{leaf.name}", real=True) for leaf in order}
        op_grads = self.op_grads
        exprs = [e for _, e in op_grads] + [grads[leaf] for leaf in order]
        exprs = [self.through_kept(e) for e in exprs]
        candidates = list(enumerate([exprs, self.substitute_outputs(exprs)]))
        if option is not None:
            candidates = [candidates[option]]
        best = None
        for number, choice in candidates:
            recompute = self.needed_recomputation(choice)
            # A result recomputed or saved anyway reads best as its own shape.
            recomputed = {op.result for op in recompute}
            tensors, _ = self.referenced([op.expr for op in recompute] + choice)
            plain = {
                shape: T.ShapeOf(result)
                for shape, result in self.kept_shapes.items()
                if result in recomputed or result in tensors
            }
            facts = shape_facts(
                self,
                [s for s in self.outputs if s in tensors] + sorted(recomputed, key=str),
            )
            choice = [facts.tidy(expr.xreplace(plain)) for expr in choice]
            all_exprs = [op.expr for op in recompute] + choice
            tensors, shapes = self.referenced(all_exprs)
            # Tensors kept alive first, then work; a shape on ctx is a few
            # ints, a reduction kept a few bytes a row.  With ``save:
            # speed``, work first (see `choose_save`).
            cost = (
                len(tensors - self.small),
                op_count(*all_exprs),
                len(tensors & self.small),
                len(shapes),
            )
            if self.fn.save == "speed":
                cost = (cost[1], cost[0], *cost[2:])
            if best is None or cost < best[0]:
                best = (cost, number, choice, recompute, tensors, shapes)
        _, self.option, option, recompute, tensors, shapes = best

        # Guards: which inputs' gradients each step serves.
        index = {leaf: i for i, leaf in enumerate(order)}
        op_grad_targets = [target for target, _ in op_grads]
        steps: list[Step] = []
        final = []
        for leaf, expr in zip(order, option[len(op_grads) :]):
            final.append(Step(grad_names[leaf], expr, frozenset({index[leaf]})))
        later = list(final)
        middle = []
        for target, expr in reversed(
            list(zip(op_grad_targets, option[: len(op_grads)]))
        ):
            guard = frozenset().union(
                *(s.guard for s in later if target in s.expr.free_symbols)
            )
            step = Step(target, expr, guard)
            middle.insert(0, step)
            later.append(step)
        for op in reversed(recompute):
            guard = frozenset().union(
                *(s.guard for s in later if op.result in s.expr.free_symbols)
            )
            step = Step(op.result, op.expr, guard)
            steps.insert(0, step)
            later.append(step)
        steps += middle + final
        everyone = frozenset(index.values())
        finals = {step.target for step in final}
        backward = schedule(steps, everyone, self.taken_names(), keep_guards=finals)
        saved = tuple(s for s in self.tensor_inputs + self.outputs if s in tensors)
        shape_syms = tuple(s for s in self.tensor_inputs + self.outputs if s in shapes)
        grads_out = tuple(
            (name, grad_names.get(self.inputs[name])) for name in self.inputs
        )
        return self._finish(backward, saved, shape_syms, grads_out, grads)

    def taken_names(self) -> set[str]:
        names = (
            set(self.inputs)
            | {o.name for o in self.outputs}
            | {r.name for r in self.op_results}
        )
        return names | {g.name for g in self.grad_symbols}

    # -- forward and jvp ------------------------------------------------

    def forward_program(self) -> tuple[Block, ...]:
        return forward_program(self.formula, self.taken_names(), horner)

    def jvp_program(self):
        tangents = {
            leaf: sp.Symbol(f"{leaf.name}_t", real=True)
            for leaf in self.tensor_inputs
            if leaf not in self.indices
        }
        steps = []

        # With a `grad:` override the jvp must be the transpose of the
        # overridden vjp: for ``x: grad * h`` the partial derivative is h.
        # Of one pointwise output, in place of the derived derivative; else
        # the overridden inputs reach each output only through their
        # coefficients, summed to the output's shape (the transpose of the
        # broadcast), and not through the formula.
        overridden, transposed = {}, {}
        for name, expr in self.overrides.items():
            coefficients = override_coefficients(expr, self.grad_symbols)
            if coefficients is None:
                raise NotLinear(name)
            if len(self.outputs) == 1 and not self.formula.ops:
                overridden[self.inputs[name]] = coefficients[0]
            else:
                transposed[self.inputs[name]] = coefficients
        tangents_in = dict(tangents)
        for leaf in transposed:
            del tangents[leaf]

        def tangent_of(expr):
            if isinstance(expr, T.TensorMT):
                inner = tangent_of(expr.args[0])
                return T.TensorMT(inner) if inner != 0 else inner
            terms = []
            for leaf in self.leaves_of(expr):
                derivative = overridden.get(leaf, None)
                if derivative is None:
                    derivative = simplest(stabilize(dag.derivative(expr, leaf)))
                if derivative != 0 and leaf in tangents:
                    terms.append(derivative * tangents[leaf])
            # (x_t + b_t)*mish'(x + b), one fused kernel, not two products.
            return _sum_simplest(terms)

        for op in self.formula.ops:
            tangent = self.jvp_rule(op.expr, tangent_of, op.result)
            if tangent == 0:  # counts as 0 where it is read
                tangents[op.result] = tangent
                continue
            tangents[op.result] = sp.Symbol(f"{op.result.name}_t", real=True)
            steps.append(Step(tangents[op.result], tangent, frozenset()))
        output_tangents = []
        for index, ((out, expr), diff) in enumerate(
            zip(self.formula.outputs, self.differentiable)
        ):
            if not diff:
                # A bool output, marked non-differentiable: no tangent.
                output_tangents.append(None)
                continue
            symbol = sp.Symbol(f"{out.name}_t", real=True)
            extra = sp.Add(
                *[
                    coefficients[index] * tangents_in[leaf]
                    for leaf, coefficients in transposed.items()
                ]
            )
            if out in tangents and tangents[out] == 0:
                # A tensor op's result with no tangent: zeros of its shape.
                shape = self.leaf_shape(out)
                value = T.SumToSize(extra, shape) if extra != 0 else T.Expand(0, shape)
                steps.append(Step(symbol, value, frozenset()))
            elif out in tangents:
                # A reduction's result: the override sums to its shape.
                symbol = tangents[out]
                if extra != 0:
                    extra = T.SumToSize(extra, self.leaf_shape(out))
                    steps = [
                        (
                            Step(s.target, s.expr + extra, s.guard)
                            if s.target == symbol
                            else s
                        )
                        for s in steps
                    ]
            else:
                tangent = tangent_of(expr) + extra
                tangent = self.full_tangent(expr, tangent)
                steps.append(Step(symbol, tangent, frozenset()))
            output_tangents.append(symbol)
        exprs = self.substitute_outputs([self.through_kept(s.expr) for s in steps])
        steps = [Step(s.target, e, s.guard) for s, e in zip(steps, exprs)]
        recompute = self.needed_recomputation([s.expr for s in steps])
        steps = [Step(op.result, op.expr, frozenset()) for op in recompute] + steps
        taken = self.taken_names() | {
            t.name
            for t in [*tangents.values(), *output_tangents]
            if t is not None and t.is_Symbol
        }
        blocks = schedule(steps, frozenset(), taken)
        tensors, shapes = self.referenced([s.expr for s in steps])
        tensors |= shapes
        tangent_symbols = tuple(
            tangents_in.get(self.inputs[i.name]) for i in self.fn.inputs
        )
        return blocks, tuple(output_tangents), tensors, tangent_symbols

    def _finish(self, backward, saved, shapes, grads_out, grads):
        forward = self.forward_program()
        jvp_error = None
        try:
            if not self.with_jvp:
                raise NotLinear("")  # not asked for: see `counted`
            jvp, output_tangents, jvp_tensors, tangent_symbols = self.jvp_program()
        except NotLinear as error:
            jvp_error = (
                f"forward-mode AD: the grad: override of {error.name} is not "
                "linear in the incoming gradient, so no jvp is its transpose"
            )
            jvp, output_tangents, jvp_tensors = (), (), set()
            tangent_symbols = tuple(
                sp.Symbol(f"{i.name}_t", real=True) if i.is_tensor else None
                for i in self.fn.inputs
            )
        derivatives = tuple(
            (out.name, leaf.name, dag.derivative(expr, leaf))
            for out, expr in self.formula.outputs
            for leaf in self.leaves_of(expr)
            if not self.formula.ops and not is_condition(expr) and self.with_jvp
        )
        saved_for_jvp = tuple(
            s for s in self.tensor_inputs + self.outputs if s in jvp_tensors
        )
        return Derivation(
            forward=forward,
            outputs=tuple(self.outputs),
            differentiable_outputs=tuple(self.differentiable),
            grad_symbols=tuple(self.grad_symbols),
            saved=saved,
            saved_for_jvp=saved_for_jvp,
            shapes=shapes,
            backward=backward,
            grads=grads_out,
            tangent_symbols=tangent_symbols,
            jvp=jvp,
            output_tangents=output_tangents,
            derivatives=derivatives,
            option=self.option,
            jvp_error=jvp_error,
            present=self.present,
        )


# The simplification budget, in distinct subexpressions: past it a derivative
# is kept as SymPy's diff gives it.  A size, not seconds, so that the output
# stays the same on every machine; factor_terms grows faster than linearly.
SIMPLIFY_LIMIT = 300
# SymPy's factor_terms, piecewise_fold and expand walk an expression as a
# tree: through every repetition of a shared subexpression again, 2**15
# times the leaves of fifteen statements ``a_i = a_{i-1}*a_{i-1} +
# a_{i-1}``.  Their budget is the tree's size (counted on the DAG, in time
# linear in it), and horner's the number of terms the expansion it starts
# with would make (counted so too) and of its variables (its polynomials
# are dense in them: a sum of 200 names took half a minute).
TREE_LIMIT = 20_000
MAX_HORNER_GENERATORS = 8


def forward_program(
    formula: Formula, taken: set[str], rewrite=None
) -> tuple[Block, ...]:
    """The formula's statements, then its outputs (through `rewrite`, when
    given), with repeated subexpressions computed once."""
    steps = [Step(op.result, op.expr, frozenset()) for op in formula.ops]
    for out, expr in formula.outputs:
        if expr != out:
            steps.append(Step(out, rewrite(expr) if rewrite else expr, frozenset()))
    return schedule(steps, frozenset(), taken)


def dag_size(*exprs: sp.Basic) -> int:
    """Distinct compound subexpressions of `exprs`: the operations left once
    common subexpressions are shared.  Linear in that size, where
    ``sp.count_ops`` walks every repetition of a shared subtree."""
    seen = set()
    stack = list(exprs)
    while stack:
        expr = stack.pop()
        if expr.is_Atom or expr in seen:
            continue
        seen.add(expr)
        stack.extend(expr.args)
    return len(seen)


def _sum_simplest(terms: list[sp.Expr]) -> sp.Expr:
    """The sum of `terms`, simplified when there are several (each term is
    already as simple as it gets)."""
    total = sp.Add(*terms)
    return simplest(total) if len(terms) > 1 else total


def simplest(expr: sp.Expr) -> sp.Expr:
    """`expr` with common factors pulled out when that saves operations
    (``t*x + t*y + t*z`` becomes ``t*(x + y + z)``), within the budget."""
    if dag_size(expr) > SIMPLIFY_LIMIT or dag.tree_size(expr, TREE_LIMIT) > TREE_LIMIT:
        return expr
    expr = factor_piecewise(expr)
    candidates = [horner(expr), sp.factor_terms(expr), fold_piecewise(expr)]
    best = min(candidates, key=op_count)
    return best if op_count(best) < op_count(expr) else expr


# At most this many ``where`` terms are folded into one (the branches
# multiply).
MAX_FOLDED = 3


def fold_piecewise(expr: sp.Expr) -> sp.Expr:
    """A sum of ``where`` terms on conditions of one variable as one
    ``where``: prelu's derivative ``a*where(x < 0, 1, where(x == 0, 1/2, 0))
    + where(x > 0, 1, where(x == 0, 1/2, 0))`` is ``where(x < 0, a,
    where(x == 0, a/2 + 1/2, 1))``.  Branches whose condition can never
    hold are dropped, and the last one that remains covers the rest."""
    pieces = expr.atoms(sp.Piecewise)
    if not isinstance(expr, sp.Add) or not 2 <= len(pieces) <= MAX_FOLDED:
        return expr
    if any(op.atoms(sp.Piecewise) for op in expr.atoms(T.TensorOp)):
        # A where inside a sum_to_size tests each element before the sum:
        # it is no where of the sum (SymPy's fold would make it one).
        return expr
    conditions = [c for p in pieces for _, c in p.args if c != sp.true]
    variables = set().union(*(c.free_symbols for c in conditions))
    if len(variables) != 1 or any(p.atoms(sp.Piecewise) != {p} for p in pieces):
        return expr
    # Only comparisons of a linear function of the variable, whose sets are
    # intervals at once (``sin(x) < 0.3`` would send SymPy into solveset).
    (variable,) = variables
    for condition in conditions:
        for relation in condition.atoms(sp.core.relational.Relational):
            side = relation.lhs - relation.rhs
            if not (side.is_polynomial(variable) and sp.degree(side, variable) <= 1):
                return expr
    try:
        folded = sp.piecewise_fold(expr)
        if not isinstance(folded, sp.Piecewise):
            return expr
        branches, covered = [], sp.S.EmptySet
        for value, condition in folded.args:
            region = sp.S.Reals if condition == sp.true else condition.as_set()
            if (region - covered).is_empty:
                continue  # never taken: impossible, or earlier branches cover it
            covered = covered | region
            branches.append((value, condition))
            if covered == sp.S.Reals:
                break
    except (NotImplementedError, TypeError, ValueError):
        return expr
    if covered != sp.S.Reals:
        return expr
    branches[-1] = (branches[-1][0], sp.true)
    if len(branches) == 1:
        return branches[0][0]
    return Piecewise(*branches)


def factor_piecewise(expr: sp.Basic) -> sp.Basic:
    """Each ``where`` with a factor common to all its branches as that
    factor times the ``where``: ``where(c, -d, -delta*sign(d))`` is
    ``-where(c, d, delta*sign(d))``, one multiply instead of one a branch,
    and the same ``where`` as the other input's gradient, computed once.
    Not when a branch is 0, which must stay 0 where the factor is inf."""
    return bottom_up(expr, ((sp.Piecewise, _common_factor_out),))


def _common_factor_out(expr: sp.Piecewise) -> sp.Expr | None:
    values = [value for value, _ in expr.args]
    if has_zero_branch(expr) or any(
        not isinstance(v, sp.Expr) or is_condition(v) for v in values
    ):
        return None
    # -input + target counts as -(input - target).
    negated = all(v.could_extract_minus_sign() for v in values)
    splits = [(-v if negated else v).as_coeff_mul() for v in values]
    coefficients = {c for c, _ in splits}
    common = coefficients.pop() if len(coefficients) == 1 else sp.S.One
    shared = set(splits[0][1]).intersection(*(set(f) for _, f in splits[1:]))
    common = (-1 if negated else 1) * common * sp.Mul(*shared)
    if common == 1:
        return None
    return common * Piecewise(*[(v / common, c) for v, c in expr.args])


def horner(expr: sp.Expr) -> sp.Expr:
    """A polynomial in Horner form when that saves operations:
    ``x**3 + 3*x**2*y - 2*x*y**2 - x*y + y**3`` becomes
    ``x*(x*(x + 3*y) + y*(-2*y - 1)) + y**3``, 9 operations instead of 13."""
    if (
        not isinstance(expr, sp.Add)
        or dag_size(expr) > SIMPLIFY_LIMIT
        or not _small_polynomial(expr)
    ):
        return expr
    nested = sp.horner(expr)
    return nested if op_count(nested) < op_count(expr) else expr


def _small_polynomial(expr: sp.Expr) -> bool:
    """Whether `expr` is a polynomial in its symbols (as
    ``expr.is_polynomial(*expr.free_symbols)``) of at most
    `MAX_HORNER_GENERATORS` of them, whose expansion has at most
    `SIMPLIFY_LIMIT` terms: a bound, counted on the DAG (a product's terms
    multiply, a power's are the multinomial count)."""
    limit = SIMPLIFY_LIMIT
    terms: dict = {}
    variable: dict = {}  # whether a symbol is below
    symbols = set()
    for node in dag.postorder(expr):
        variable[node] = node.is_Symbol or any(
            variable.get(a, False) for a in node.args
        )
        if node.is_Symbol:
            symbols.add(node)
            count = 1
        elif not variable[node]:
            count = 1  # a coefficient: 3, sqrt(2), pi
        elif isinstance(node, sp.Add):
            count = sum(terms[a] for a in node.args)
        elif isinstance(node, sp.Mul):
            count = 1
            for a in node.args:
                count = min(count * terms[a], limit + 1)
        elif (
            isinstance(node, sp.Pow)
            and node.exp.is_Integer
            and node.exp >= 0
            and terms[node.base] <= limit
        ):
            k = terms[node.base]
            count = math.comb(int(node.exp) + k - 1, k - 1)
        else:
            return False  # a function of a symbol, or a root, or a quotient
        if count > limit or len(symbols) > MAX_HORNER_GENERATORS:
            return False
        terms[node] = count
    return True


def op_count(*exprs: sp.Basic) -> int:
    """Arithmetic operations and calls in `exprs`, each distinct subexpression
    counted once, as the printed code computes it once.

    Like ``sp.count_ops`` otherwise: ``x - y`` is one operation, not an
    addition and a negation; but linear in the number of distinct
    subexpressions, where ``sp.count_ops`` walks every repetition of a
    shared subtree (exponential for ``sin(e)*exp(e/2)`` nested ten deep).
    """
    seen: set = set()
    negated_alone: set = set()  # -a used other than as a term of a sum
    stack = [(expr, False) for expr in exprs]
    while stack:
        expr, in_sum = stack.pop()
        if expr.is_Atom:
            continue
        if not in_sum and _is_negation(expr):
            negated_alone.add(expr)
        if expr in seen:
            continue
        seen.add(expr)
        stack.extend((arg, isinstance(expr, sp.Add)) for arg in expr.args)
    count = 0
    for expr in seen:
        if isinstance(expr, (sp.Add, sp.Mul)):
            factors = [a for a in expr.args if a != -1]
            count += max(len(factors) - 1, 0)
        else:
            count += 1
    return count + len(negated_alone)


def _is_negation(expr: sp.Basic) -> bool:
    return isinstance(expr, sp.Mul) and -1 in expr.args


def _without_shapes(expr: sp.Expr) -> sp.Expr:
    """`expr` with its shapes as 0: what is left reads tensors' values."""
    shapes = dag.atoms(expr, T.ShapeOf)
    return dag.xreplace(expr, dict.fromkeys(shapes, sp.Integer(0)))


def _subs(expr: sp.Expr, old: sp.Expr, new: sp.Expr) -> sp.Expr:
    """``expr.subs(old, new)``; past `TREE_LIMIT` (subs walks the tree, and
    matches parts of sums and products along the way) only where `old`
    stands as it is, replaced on the DAG."""
    if dag.tree_size(expr, TREE_LIMIT) > TREE_LIMIT:
        return dag.xreplace(expr, {old: new})
    return expr.subs(old, new)


class NotLinear(Exception):
    """A `grad:` override that is not linear in the incoming gradients
    (``clamp(grad, -1, 1)``): no jvp is its transpose."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def shape_facts(deriver: Deriver, named=()) -> ShapeFacts:
    """The shapes of `deriver`'s function's symbols (see `fngen.shapes`);
    `named`: tensors the backward reads, whose shapes may stand for a
    broadcast shape."""
    values = {
        out: expr
        for out, expr in deriver.output_exprs.items()
        if expr != out and not is_condition(expr)
    }
    values.update(zip(deriver.grad_symbols, deriver.outputs))
    values.update(deriver.grad_results)
    reductions = {
        op.result: tuple(op.expr.args)
        for op in deriver.formula.ops
        if isinstance(op.expr, T.REDUCTIONS)
    }
    return ShapeFacts(
        leaves=frozenset(deriver.leaves),
        reductions=reductions,
        values=values,
        scalars=frozenset(deriver.scalars),
        named=tuple(named),
    )


def grad_symbols(fn: FunctionSpec) -> list[sp.Symbol]:
    """The incoming gradients of `fn`'s outputs: ``grad``, or ``grad_<output>``
    for each of several."""
    outputs = [out for out, _ in fn.formula.outputs]
    single = len(outputs) == 1
    return [
        sp.Symbol("grad" if single else f"grad_{o.name}", real=True) for o in outputs
    ]


def nonlinear_overrides(fn: FunctionSpec) -> list[str]:
    """The inputs whose `grad:` override is not linear in the incoming
    gradients: their Function has no jvp."""
    symbols = grad_symbols(fn)
    return [
        name for name, expr in fn.grads if override_coefficients(expr, symbols) is None
    ]


def override_coefficients(
    expr: sp.Expr, grad_symbols: list[sp.Symbol]
) -> list[sp.Expr] | None:
    """The coefficient of each incoming gradient in the `grad:` override
    `expr` (``grad_a + 2*x*grad_b``: 1 and 2*x), or None where the
    override is not linear in them."""
    body = _strip_sum_to_size(expr)
    try:
        coefficients = [sp.diff(body, g) for g in grad_symbols]
    except TypeError:  # a tensor operation of the gradient
        return None
    grads = set(grad_symbols)
    if any(c.free_symbols & grads for c in coefficients):
        return None
    rest = body - sp.Add(*[c * g for c, g in zip(coefficients, grad_symbols)])
    if not _is_zero(rest):
        return None
    return coefficients


def _is_zero(expr: sp.Expr) -> bool:
    """Whether `expr` is zero, branch by branch for a ``where``:
    ``where(c, 0, grad*f) - grad*where(c, 0, f)`` is, though SymPy keeps
    the difference of two Piecewise as it is."""
    expr = sp.piecewise_fold(expr)
    if isinstance(expr, sp.Piecewise):
        return all(_is_zero(value) for value, _ in expr.args)
    return sp.expand(expr) == 0


def _strip_sum_to_size(expr: sp.Expr) -> sp.Expr:
    return expr.args[0] if isinstance(expr, T.SumToSize) else expr


# Intermediates tried as a kept output: the largest first.
MAX_KEPT_CANDIDATES = 6


def keep_intermediate(fn: FunctionSpec) -> FunctionSpec:
    """`fn`, or `fn` returning one intermediate as an extra output, when
    keeping it lets the backward save fewer tensors.

    ``mean((input - target)**2)`` needs only ``input - target`` for its
    gradient: keep that one tensor instead of both inputs.  It is kept as an
    output of the Function, not as a tensor made under no_grad, so that its
    history survives and double backward through it stays right (the way
    ``native_layer_norm`` returns its mean and rstd).  The wrapper and the
    Module return only the declared outputs.
    """
    if fn.kept or fn.grads or len(fn.formula.outputs) != 1:
        return fn
    if any(i.optional for i in fn.inputs) or is_condition(fn.formula.outputs[0][1]):
        return fn
    candidates = _kept_candidates(fn)
    if not candidates:
        return fn
    base = Deriver(fn)
    exprs = base.backward_expressions()
    fewest = base.saved_count(exprs)
    if fewest < 2:
        return fn
    chosen = fn
    tensors = set(base.tensor_inputs) | set(base.op_results) | set(base.outputs)
    for candidate in candidates:
        # A quick look first: the gradients, rewritten through the candidate,
        # must read fewer tensors before a whole derivation is worth it.
        kept = sp.Dummy("kept")
        reads = set()
        for expr in exprs:
            rewritten = base.eliminate(expr.subs(candidate, kept), kept, candidate)
            reads |= _without_shapes(rewritten).free_symbols & (tensors | {kept})
        if len(reads) >= fewest:
            continue
        trial = _with_kept(fn, candidate)
        count = Deriver(trial).saved_count()
        if count < fewest:
            chosen, fewest = trial, count
    return chosen


def keep_reductions(fn: FunctionSpec) -> FunctionSpec:
    """`fn` returning, as extra outputs, the powers of reductions its
    backward would otherwise compute again.

    layer_norm's and rms_norm's backwards need ``1/sqrt(var + eps)``: read
    from `x` again it costs a pass over x, and under ``torch.compile`` a root
    taken on every element; kept, it costs a few bytes a row (like
    ``native_layer_norm``'s rstd), and the backward reads ``(var +
    eps)**1.5`` as ``rstd**-3``.  A reduction read only as itself (a
    mean) is left to recompute: keeping it too would save more bytes than
    autograd does for the same formula, and one more pass over a row is
    what the backward's own row sums cost anyway.  Like
    `keep_intermediate`'s, the kept values are outputs of the Function, so
    double backward differentiates through them.
    """
    if fn.grads or len(fn.formula.outputs) - fn.kept != 1:
        return fn
    if any(i.optional for i in fn.inputs) or not any(
        isinstance(op.expr, T.REDUCTIONS) for op in fn.formula.ops
    ):
        return fn
    recomputed = _recomputed(Deriver(fn))
    taken = _names_in(fn)
    values = {}
    for op in recomputed:
        if isinstance(op.expr, T.REDUCTIONS):
            value = _kept_value(fn, op.result)
            if value is not None:
                values[op.result] = value
    roots = [v for v in values.values() if _is_rstd(v)]
    kept = {}
    for reduction, value in values.items():
        # One kept reciprocal root reads as native_layer_norm's ``rstd``.
        base = "rstd" if roots == [value] else f"kept_{reduction.name}"
        kept[reduction] = (sp.Symbol(_free_name(base, taken), positive=True), value)
    if not kept:
        return fn
    # A kept value that does not spare the backward its reduction (it
    # reads the reduction some other way too) is no use.
    trial = Deriver(_with_outputs(fn, list(kept.values())))
    still = {op.result for op in _recomputed(trial)}
    useful = [pair for reduction, pair in kept.items() if reduction not in still]
    return _with_outputs(fn, useful) if useful else fn


def _recomputed(base: "Deriver") -> list[OpNode]:
    """The tensor ops the backward of `base` would compute again, with the
    save policy that recomputes fewest."""
    exprs = base.backward_expressions()
    return min(
        (
            base.needed_recomputation(choice)
            for choice in (exprs, base.substitute_outputs(exprs))
        ),
        key=len,
    )


def _with_outputs(fn: FunctionSpec, kept: list) -> FunctionSpec:
    formula = fn.formula
    return replace(
        fn,
        formula=Formula(
            formula.text,
            formula.ops,
            formula.outputs + tuple(kept),
            formula.statements,
            formula.location,
        ),
        kept=fn.kept + len(kept),
    )


def _is_rstd(value: sp.Expr) -> bool:
    """Whether a kept value is ``1/sqrt(...)``."""
    return isinstance(value, sp.Pow) and value.exp == sp.Rational(-1, 2)


def _kept_value(fn: FunctionSpec, reduction: sp.Symbol) -> sp.Expr | None:
    """The power of a reduction that an output reads it through, as in
    ``(x - mu)/sqrt(var + eps)``: ``1/sqrt(var + eps)``, which a backward
    can read for both ``1/sqrt(var + eps)`` and ``(var + eps)**1.5`` (like
    ``native_layer_norm``'s rstd), where a kept ``var`` would leave a root
    to take on every element."""
    for _, expr in fn.formula.outputs:
        for sub in sp.preorder_traversal(expr):
            if reduction in getattr(sub, "free_symbols", ()) and _solve_power(
                sub, reduction
            ):
                return sub
    return None


def _solve_power(expr: sp.Expr, reduction: sp.Symbol) -> sp.Lambda | None:
    """For ``(a + c*r)**p`` with p a fraction, not a whole number (the base
    is then positive, as the value is real, and so is the value): r as a
    function of the value."""
    if not isinstance(expr, sp.Pow):
        return None
    base, power = expr.args
    if not power.is_number or power.is_integer or power == 0:
        return None
    slope = base.diff(reduction)
    if not slope.is_number or slope == 0:
        return None
    rest = base - slope * reduction
    if reduction in rest.free_symbols:
        return None
    value = sp.Dummy("value", positive=True)
    return sp.Lambda(value, (value ** (1 / power) - rest) / slope)


def _solve_kept(out: sp.Symbol, expr: sp.Expr, ops: dict) -> tuple | None:
    """(reduction, reduction in terms of `out`) for a kept power of a
    reduction (see `_kept_value`); None for any other output."""
    if not out.is_positive or not isinstance(expr, sp.Pow):
        return None
    leaves = [s for s in expr.free_symbols if s in ops]
    if len(leaves) != 1:
        return None
    solved = _solve_power(expr, leaves[0])
    return None if solved is None else (leaves[0], solved(out))


def _kept_candidates(fn: FunctionSpec) -> list[sp.Expr]:
    """Pointwise subexpressions of two or more tensor inputs: the arguments
    of reductions and the outputs' expressions."""
    tensors = {fn.symbol(i.name) for i in fn.tensor_inputs}
    scalars = {fn.symbol(i.name) for i in fn.inputs if not i.is_tensor}
    roots = [
        op.expr.args[0] for op in fn.formula.ops if isinstance(op.expr, T.REDUCTIONS)
    ]
    roots += [expr for _, expr in fn.formula.outputs]
    found = []
    for root in roots:
        # On the DAG: each distinct subexpression once, in preorder.
        below = dag.symbols_below(root)
        has_op = {}
        for node in dag.postorder(root):
            has_op[node] = isinstance(node, T.TensorOp) or any(
                has_op.get(a, False) for a in node.args
            )
        for sub in dag.preorder(root):
            if (
                sub.is_Atom
                or sub in found
                or is_condition(sub)
                or isinstance(sub, (sp.Piecewise, T.TensorOp))
                or has_op[sub]
                or not below[sub] <= tensors | scalars
                or len(below[sub] & tensors) < 2
            ):
                continue
            found.append(sub)
            if len(found) == MAX_KEPT_CANDIDATES:
                return found
    return found


def _with_kept(fn: FunctionSpec, expr: sp.Expr) -> FunctionSpec:
    name = _statement_name(fn, expr, _names_in(fn))
    return _with_outputs(fn, [(sp.Symbol(name, real=True), expr)])


def _names_in(fn: FunctionSpec) -> set[str]:
    """The names a function's code already uses: inputs, statements, tensor
    ops and outputs."""
    taken = {i.name for i in fn.inputs} | {name for name, _ in fn.formula.statements}
    taken |= {op.result.name for op in fn.formula.ops}
    return taken | {out.name for out, _ in fn.formula.outputs}


def _free_name(base: str, taken: set[str]) -> str:
    """`base`, with underscores added until neither it nor its gradient's
    name (``grad_`` + it) is in `taken`; added to `taken`."""
    name = base
    while name in taken or f"grad_{name}" in taken:
        name += "_"
    taken.add(name)
    return name


def derive_backward(
    fn: FunctionSpec, absent: frozenset[str], present: frozenset[int], option: int
) -> Derivation:
    """The derivation when only the outputs in `present` receive a gradient,
    with the save policy `option` of the derivation where all do."""
    return Deriver(fn, absent, present).derive(option)


def derive(fn: FunctionSpec, absent: frozenset[str] = frozenset()) -> Derivation:
    """The programs of `fn`, with the optional tensors in `absent` left out."""
    return Deriver(fn, absent).derive()


# ``save:`` chosen by counting passes (`choose_save`): keeping
# intermediates for the backward must spare it at least this share of the
# passes over memory that the forward and the recomputing backward make.
SPEED_GAIN = 0.1
# Intermediates tried for ``save: speed``, and how many may be kept.
MAX_SPEED_CANDIDATES = 8
MAX_SPEED_KEPT = 3
# Formulas of more operations than this are not searched (a polynomial of
# 2000 terms): each candidate costs a derivation.
MAX_SPEED_FORWARD = 60


@dataclass(frozen=True)
class SaveChoice:
    """What `choose_save` chose for a function: its `fn` (with the kept
    intermediates of ``save: speed`` as extra outputs), the policy, and the
    backward's passes under each policy (None where not counted)."""

    fn: FunctionSpec
    policy: str
    memory_passes: int | None = None
    speed_passes: int | None = None
    forward_passes: int | None = None
    reason: str = ""

    def note(self) -> str:
        """The sentence the class docstring carries."""
        if self.policy == "speed":
            counts = ""
            if self.memory_passes is not None:
                counts = (
                    f" ({self.speed_passes} operations in the backward instead "
                    f"of {self.memory_passes}, with {self.forward_passes} in the "
                    "forward)"
                )
            return f"save: speed{self.reason}: its backward reads kept intermediates{counts}."
        if self.memory_passes is None:
            return ""
        return (
            f"save: memory{self.reason}: its backward recomputes from the tensors "
            f"it saves ({self.memory_passes} operations; keeping intermediates "
            f"would spare {self.memory_passes - self.speed_passes})."
        )


def counted(fn: FunctionSpec, present=frozenset({0})) -> Derivation:
    """`fn`'s derivation where only the outputs in `present` receive a
    gradient, without its jvp and derivatives (what `choose_save` counts)."""
    deriver = Deriver(fn, frozenset(), present)
    deriver.with_jvp = False
    return deriver.derive()


def _passes(fn: FunctionSpec) -> tuple[int, int, int]:
    """(forward operations, backward operations, saved tensors) of `fn`'s
    derivation where only its first output receives a gradient (the usual
    backward of a function with kept outputs)."""
    d = counted(fn)
    forward = op_count(*[e for b in d.forward for _, e in b.assignments])
    backward = op_count(*[e for b in d.backward for _, e in b.assignments])
    return forward, backward, len(d.saved)


# Functions whose autograd backward reads their result, not their argument.
_SAVE_RESULT = (sp.exp, F.Sigmoid, F.Tanh, sp.tanh)


def _divisor(expr: sp.Expr) -> sp.Expr | None:
    if isinstance(expr, sp.Pow) and expr.args[1] == -1:
        return expr.args[0]
    return None


def autograd_saved(fn: FunctionSpec) -> int:
    """How many tensors autograd saves for `fn`'s pointwise output as
    written (an estimate, by PyTorch's derivatives.yaml): a product of
    tensors saves its factors (and the partial products of more than two),
    a power its base (and its result for a tensor exponent), exp, sigmoid,
    tanh and a square root their result, other functions their tensor
    arguments; sums save nothing, and a where only its bool mask."""
    tensors = {fn.symbol(i.name) for i in fn.tensor_inputs}
    (_, root), *_ = fn.formula.outputs
    below = dag.symbols_below(root)
    saved: set = set()
    partial = 0
    for node in dag.postorder(root):
        if node.is_Atom or not below[node] & tensors:
            continue
        args = [
            a
            for a in node.args
            if isinstance(a, sp.Expr) and below.get(a, set()) & tensors
        ]
        if isinstance(node, sp.Mul):
            if len(args) >= 2:
                # a/d divides by d: the division saves d, not 1/d.
                saved |= {_divisor(a) or a for a in args}
                partial += len(args) - 2
        elif isinstance(node, sp.Pow):
            base, exponent = node.args
            if exponent == -1:
                continue  # a division (above), or a reciprocal of its own
            if exponent == sp.S.Half:
                saved.add(node)
            else:
                saved |= set(args)
                if below.get(exponent, set()) & tensors:
                    saved.add(node)
        elif isinstance(node, _SAVE_RESULT):
            saved.add(node)
        elif isinstance(node, sp.Function) and not isinstance(node, sp.Piecewise):
            saved |= set(args)
    return len(saved) + partial


def _speed_candidates(fn: FunctionSpec) -> list[sp.Expr]:
    """Intermediates of the output worth keeping: calls, and sums or
    products of two tensors or around a call (not ``2*x``), largest first."""
    tensors = {fn.symbol(i.name) for i in fn.tensor_inputs}
    (_, root), *_ = fn.formula.outputs
    found = []
    for sub in dag.preorder(root):
        if (
            sub is root
            or not isinstance(sub, sp.Expr)  # a where's (value, condition)
            or sub.is_Atom
            or sub in found
            or is_condition(sub)
            or isinstance(sub, (sp.Piecewise, T.TensorOp))
            or not dag.free_symbols(sub) & tensors
        ):
            continue
        if (
            isinstance(sub, (sp.Add, sp.Mul))
            and len(dag.free_symbols(sub) & tensors) < 2
        ):
            if not any(isinstance(a, sp.Function) for a in sub.args):
                continue
        if isinstance(sub, sp.Pow) and sub.args[0].is_Symbol and sub.args[1].is_Integer:
            continue  # x**3: as cheap to compute again as to read
        found.append(sub)
        if len(found) == MAX_SPEED_CANDIDATES:
            break
    return found


def _statement_name(fn: FunctionSpec, expr: sp.Expr, taken: set[str]) -> str:
    """The user's name for `expr` (``d`` of ``d = input - target``) where it
    has one, else ``kept``; free in `taken`."""
    for name, value in fn.formula.statements:
        if value == expr and name not in {o.name for o, _ in fn.formula.outputs}:
            return _free_name(name, taken - {name})
    return _free_name("kept", taken)


def _gradients(d: Derivation, kept: dict) -> dict[str, sp.Expr]:
    """Each input gradient of `d`'s backward as one expression: its
    temporaries inlined, the kept outputs of `kept` (symbol -> expression)
    replaced by what they keep, the incoming gradient named ``grad``."""
    values: dict = {}
    for block in d.backward:
        for target, expr in block.assignments:
            values[target] = dag.xreplace(expr, values) if values else expr
    grad = {d.grad_symbols[0]: sp.Symbol("grad", real=True)}
    return {
        name: dag.xreplace(dag.xreplace(values[g], kept), grad)
        for name, g in d.grads
        if g is not None and g in values
    }


def _kept_values(fn: FunctionSpec) -> dict:
    declared = len(fn.formula.outputs) - fn.kept
    return dict(fn.formula.outputs[declared:])


def keep_for_speed(
    fn: FunctionSpec, gain: float = 0.0
) -> tuple[FunctionSpec, int, tuple] | None:
    """`fn` with ``save: speed`` and, as extra outputs, intermediates of
    its forward that its backward reads instead of computing them again
    (greedily, at most `MAX_SPEED_KEPT`), its backward's operations, and
    the (forward, backward) operations of ``save: memory``; None where
    keeping none spares an operation (or, by a first count, `gain` of the
    operations of the forward and the memory backward).

    The backward computes the very expression of ``save: memory``, only
    reading some subexpressions from memory (a test of each choice: the
    gradients with the kept values put back are the memory backward's), so
    the kept values change no number: in particular no stable form of
    `fngen.stable` is undone (``exp(x)*exp(u)`` is not ``exp(x + u)``),
    and never more tensors are saved than autograd would save."""
    if op_count(*[expr for _, expr in fn.formula.outputs]) > MAX_SPEED_FORWARD:
        return None  # a long formula: the search would cost more than it finds
    candidates = _speed_candidates(fn)
    if not candidates:
        return None
    memory_fn = keep_intermediate(fn)
    memory = counted(memory_fn)
    want = _gradients(memory, _kept_values(memory_fn))
    read = set()
    for expr in want.values():
        read |= set(dag.preorder(expr))
    candidates = [c for c in candidates if c in read]
    if not candidates:
        return None
    # A quick look first: the memory backward's gradients with every
    # candidate read as a name must spare `gain` of the operations before
    # a derivation per candidate is worth it.
    forward = op_count(*[e for b in memory.forward for _, e in b.assignments])
    names = {c: sp.Dummy() for c in candidates}
    estimate = op_count(*[dag.xreplace(e, names) for e in want.values()])
    plain = op_count(*want.values())
    if plain - estimate < max(1, gain * (forward + plain)):
        return None
    current = replace(fn, save="speed")
    best = op_count(*[e for b in memory.backward for _, e in b.assignments])
    memory_passes = (
        op_count(*[e for b in memory.forward for _, e in b.assignments]),
        best,
    )
    most = max(autograd_saved(fn), 1)
    taken = _names_in(fn)
    chosen = []
    for _ in range(MAX_SPEED_KEPT):
        pick = None
        for candidate in candidates:
            if candidate in chosen:
                continue
            name = _statement_name(fn, candidate, set(taken))
            trial = _with_outputs(current, [(sp.Symbol(name, real=True), candidate)])
            try:
                d = counted(trial)
            except (ValueError, TypeError, KeyError, NotImplementedError):
                continue  # a candidate the derivation cannot read through
            passes = op_count(*[e for b in d.backward for _, e in b.assignments])
            # One tensor over on the way: a later keep may free an input.
            if (
                passes < best
                and len(d.saved) <= most + 1
                and _gradients(d, _kept_values(trial)) == want
            ):
                best, pick = passes, (candidate, trial, name)
        if pick is None:
            break
        chosen.append(pick[0])
        current = pick[1]
        taken.add(pick[2])
    if not chosen:
        return None
    # A kept output that a later one made useless is not saved: dropped
    # (a Function's kept outputs are each saved, see codegen).
    declared = len(fn.formula.outputs)
    pruned = False
    while True:
        saved = set(counted(current, None).saved)
        extra = current.formula.outputs[declared:]
        useful = [(out, expr) for out, expr in extra if out in saved]
        if len(useful) == len(extra):
            break
        if not useful:
            return None
        current = _with_outputs(replace(fn, save="speed"), useful)
        pruned = True
    if pruned:
        _, best, _ = _passes(current)
    if len(saved) > most:
        return None
    return current, best, memory_passes


@functools.lru_cache(maxsize=4096)
def choose_save(fn: FunctionSpec, kernels: bool = False) -> SaveChoice:
    """The save policy of `fn` (`fn.save`, or chosen): ``memory`` saves the
    fewest tensors and recomputes the rest in the backward; ``speed`` also
    keeps intermediates (as autograd keeps each operation's) where that
    spares the backward operations.  Chosen, ``speed`` where it spares at
    least `SPEED_GAIN` of the operations of the forward and the
    recomputing backward; ``memory`` for a function with Triton kernels
    (`kernels`: its fused backward recomputes for free), and for what
    cannot keep intermediates (a reduction, several outputs, an optional
    tensor, a ``grad:`` override)."""
    (_, expr), *more = fn.formula.outputs
    if (
        fn.save == "memory"
        or fn.grads
        or fn.kept
        or more
        or fn.formula.ops
        or any(i.optional for i in fn.inputs)
        or is_condition(expr)
    ):
        return SaveChoice(fn, "memory")
    if fn.save is None and kernels:
        return SaveChoice(fn, "memory")
    found = keep_for_speed(fn, 0.0 if fn.save == "speed" else SPEED_GAIN)
    if fn.save == "speed":
        return SaveChoice(found[0], "speed") if found else SaveChoice(fn, "memory")
    if found is None:
        return SaveChoice(fn, "memory")
    speed_fn, speed, (forward, memory) = found
    if memory - speed >= SPEED_GAIN * (forward + memory):
        return SaveChoice(speed_fn, "speed", memory, speed, forward, " (chosen)")
    return SaveChoice(fn, "memory", memory, speed, forward, " (chosen)")
