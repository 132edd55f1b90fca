"""Shape facts: which expressions of a backward have the same shape.

A shape is known here as the set of tensors it is the broadcast of (its
*atoms*): ``input - target`` and the kept ``d = input - target`` both have
the shape of ``{input, target}``; ``grad_y * rstd`` has x's when ``y`` has
x's and ``rstd`` is a ``keepdim=True`` reduction of x (a reduced shape adds
nothing to a broadcast of the tensors it was reduced from).  With them,
`tidy` drops the bookkeeping that broadcasting already does:

=====================================  =================================
``expand(g, S) * f``, f of shape S     ``g * f``
``expand(g, S) + f``, f of shape S     ``g + f``
``sum_to_size(e, S)``, e of shape S    ``e``
``ShapeOf(input, target)``             ``ShapeOf(d)``, d a tensor the
                                       backward reads anyway that has it
``sum_to_size(a, S) + sum_to_size(b,   ``sum_to_size(a + b, S)``, a
S)``                                   and b of one shape
=====================================  =================================

(f: the other operands of the product or sum, together).  Each is exact: the values, and the shape of every result, stay what they
were (``expand`` and ``sum_to_size`` to a tensor's own shape are
identities; a product or sum with an operand of the full shape broadcasts
the others to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from fngen import tensorops as T

# A shape: the tensors it is the broadcast of; None where it is not known.
Atoms = frozenset


@dataclass
class ShapeFacts:
    """What the shapes of a function's symbols are.

    `leaves`: tensor inputs and tensor-op results (each its own shape);
    `reductions`: op result -> (its argument, dims, keepdim) for the
    reductions among them; `values`: symbols that stand for an expression
    of the same shape (an output for its formula, an incoming gradient for
    its output, a tensor op's gradient for its result); `scalars`: Python
    numbers.  `named`: tensors whose shape may stand for a broadcast shape
    (read by the backward anyway)."""

    leaves: frozenset
    reductions: dict
    values: dict
    scalars: frozenset
    named: tuple = ()
    _memo: dict = field(default_factory=dict, repr=False)

    # -- the shape of an expression ----------------------------------------

    def atoms(self, expr: sp.Basic) -> Atoms | None:
        """The tensors whose broadcast `expr`'s shape is; None if unknown."""
        if expr in self._memo:
            return self._memo[expr]
        self._memo[expr] = None  # a cycle through `values` is unknown
        found = self._atoms(expr)
        if found is not None:
            found = self._canonical(found)
        self._memo[expr] = found
        return found

    def _atoms(self, expr: sp.Basic) -> Atoms | None:
        if expr.is_number or isinstance(expr, sp.logic.boolalg.BooleanAtom):
            return Atoms()
        if isinstance(expr, sp.Symbol):
            if expr in self.scalars:
                return Atoms()
            if expr in self.leaves:
                return Atoms({expr})
            if expr in self.values:
                return self.atoms(self.values[expr])
            return None
        if isinstance(expr, T.SCALAR_OPS):
            return Atoms()  # a number: a count or a shape
        if isinstance(expr, (T.Expand, T.SumToSize)):
            return self.shape_atoms(expr.args[1])
        if isinstance(expr, T.TensorOp):
            return None
        return self._union(expr.args)

    def _union(self, exprs) -> Atoms | None:
        found = Atoms()
        for e in exprs:
            inner = self.atoms(e)
            if inner is None:
                return None
            found |= inner
        return found

    def shape_atoms(self, shape: sp.Basic) -> Atoms | None:
        """The atoms of a shape expression (``ShapeOf(x, y)``)."""
        if not isinstance(shape, T.ShapeOf):
            return None
        found = self._union(shape.args)
        return None if found is None else self._canonical(found)

    def _canonical(self, atoms: Atoms) -> Atoms:
        """`atoms` less the reductions whose shape broadcasts into the
        others': a ``keepdim=True`` reduction of tensors among them, and a
        reduction to a 0-dim tensor."""
        kept = set(atoms)
        for atom in atoms:
            if atom not in self.reductions:
                continue
            arg, dims, keepdim = self.reductions[atom]
            if not len(dims) and not keepdim:
                kept.discard(atom)  # 0-dim
                continue
            inner = self.atoms(arg)
            if keepdim and inner is not None and inner <= kept - {atom}:
                kept.discard(atom)
        return Atoms(kept)

    # -- rewrites ------------------------------------------------------------

    def tidy(self, expr: sp.Expr) -> sp.Expr:
        """`expr` without the expands, sums to size and broadcast shapes that
        the shapes of its operands make unnecessary (see the module)."""
        memo: dict = {}

        def visit(e):
            if e in memo:
                return memo[e]
            if not e.args:
                result = e
            else:
                args = [visit(a) for a in e.args]
                result = e.func(*args) if args != list(e.args) else e
                result = self._rule(result)
            memo[e] = result
            return result

        return visit(expr)

    def _rule(self, e: sp.Expr) -> sp.Expr:
        if isinstance(e, T.ShapeOf):
            return self._named(e)
        if isinstance(e, T.SumToSize):
            arg, shape = e.args
            target = self.shape_atoms(shape)
            if target is not None and self.atoms(arg) == target:
                return arg
            return e
        if isinstance(e, sp.Add):
            merged = self._sums_merged(e)
            if merged is not e:
                return self._rule(merged)
        if isinstance(e, (sp.Mul, sp.Add)):
            return self._unexpanded(e)
        return e

    def _sums_merged(self, e: sp.Add) -> sp.Expr:
        """``sum_to_size(a, S) + c*sum_to_size(b, S)`` as ``sum_to_size(a +
        c*b, S)`` (c a number) where a and b have one known shape: one
        reduction, and the grad_input of a kept intermediate reads
        ``(grad_d + t0).sum_to_size(...)``.  Of different shapes, the sum
        would broadcast the smaller before summing it: counted again."""
        groups: dict = {}
        for term in e.args:
            coefficient, factor = term.as_coeff_Mul()
            if isinstance(factor, T.SumToSize):
                arg, shape = factor.args
                key = (shape, self.atoms(arg))
                groups.setdefault(key, []).append((term, coefficient * arg))
        merged = {
            key: members
            for key, members in groups.items()
            if len(members) > 1 and key[1] is not None
        }
        if not merged:
            return e
        taken = {term for members in merged.values() for term, _ in members}
        rest = [term for term in e.args if term not in taken]
        sums = [
            T.SumToSize(sp.Add(*[arg for _, arg in members]), key[0])
            for key, members in merged.items()
        ]
        return sp.Add(*rest, *sums)

    def _unexpanded(self, e: sp.Expr) -> sp.Expr:
        """A product or sum without ``expand(g, S)`` operands where the
        other operands have the shape S together."""
        operands = list(e.args)
        changed = False
        for n, operand in enumerate(operands):
            if not isinstance(operand, T.Expand) or operand.args[0] == 0:
                continue
            target = self.shape_atoms(operand.args[1])
            if target is None:
                continue
            # The other operands together broadcast to S.
            rest = [self.atoms(o) for m, o in enumerate(operands) if m != n]
            if None not in rest and self._canonical(Atoms().union(*rest)) == target:
                operands[n] = operand.args[0]
                changed = True
        return e.func(*operands) if changed else e

    def _named(self, shape: T.ShapeOf) -> sp.Expr:
        """A broadcast shape as the shape of one tensor that has it."""
        if len(shape.args) < 2:
            return shape
        target = self.shape_atoms(shape)
        if target is None:
            return shape
        for tensor in self.named:
            if self.atoms(tensor) == target:
                return T.ShapeOf(tensor)
        return shape
