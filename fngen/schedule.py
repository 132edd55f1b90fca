"""Common subexpressions and guarded straight-line programs.

A program is a list of `Step`s, each assigning one SymPy expression to a
symbol and carrying a *guard*: the indices of the gradients that need it.
`schedule` shares common subexpressions across all steps, computes each one
just before its first use, under the union of its users' guards, and groups
consecutive assignments with the same guard into `Block`s, which the
templates write as ``if needs_x or needs_y:`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from fngen import tensorops as T
from fngen.stable import guard_branch_domains, select_zero_branches


@dataclass(frozen=True)
class Step:
    target: sp.Symbol
    expr: sp.Expr
    guard: frozenset[int]


@dataclass(frozen=True)
class Block:
    """Assignments that run together; `guard` empty means always."""

    guard: frozenset[int]
    assignments: tuple[tuple[sp.Symbol, sp.Expr], ...]


def _temporaries(taken: set[str]):
    n = 0
    while True:
        name = f"t{n}"
        n += 1
        if name not in taken:
            yield sp.Symbol(name, real=True)


def _worth_a_name(expr: sp.Expr) -> bool:
    """Keep a shared subexpression only if it is real work (not a shape, a
    dims tuple, a bare negation or the transpose of a name, a view) worth
    a line of its own."""
    if (
        isinstance(expr, (sp.Tuple, T.ShapeOf, sp.logic.boolalg.BooleanAtom))
        or expr.is_Atom
    ):
        return False
    if isinstance(expr, T.TensorMT) and expr.args[0].is_Atom:
        return False
    if getattr(expr, "is_number", False):
        return False  # printed as one literal, never as a tensor op
    if (
        isinstance(expr, sp.Mul)
        and len(expr.args) == 2
        and expr.args[0] == -1
        and expr.args[1].is_Atom
    ):
        return False
    return True


def share_subexpressions(exprs: list[sp.Expr], taken: set[str]) -> tuple[list, list]:
    replacements, reduced = sp.cse(exprs, symbols=_temporaries(taken), order="none")
    kept, inline = [], {}
    for symbol, value in replacements:
        value = value.xreplace(inline)
        if _worth_a_name(value):
            kept.append((symbol, value))
        else:
            inline[symbol] = value
    reduced = [e.xreplace(inline) for e in reduced]
    return _renumbered(kept, reduced, {symbol for symbol, _ in kept}, taken)


def _renumbered(
    pairs: list, exprs: list[sp.Expr], temps: set[sp.Symbol], taken: set[str]
) -> tuple[list, list]:
    """`pairs` (symbol, value) and `exprs` with the temporaries among the
    symbols renamed t0, t1, ... in the order of `pairs` (the order of use)."""
    fresh = _temporaries(taken)
    renames = {symbol: next(fresh) for symbol, _ in pairs if symbol in temps}
    pairs = [(renames.get(s, s), v.xreplace(renames)) for s, v in pairs]
    return pairs, [e.xreplace(renames) for e in exprs]


def schedule(
    steps: list[Step],
    everyone: frozenset[int],
    taken: set[str],
    keep_guards=frozenset(),
) -> tuple[Block, ...]:
    """`everyone`: the guard that always holds once the program runs; steps
    whose target is in `keep_guards` keep their guard even then, so that a
    gradient is visibly computed only when ``needs_input_grad`` asks for it."""
    # A where's 0 branch selected, before naming could take a factor out.
    exprs = [guard_branch_domains(select_zero_branches(s.expr)) for s in steps]
    replacements, reduced = share_subexpressions(exprs, taken)
    steps = [Step(s.target, e, s.guard) for s, e in zip(steps, reduced)]
    named, steps = _named_by_target(replacements, steps)
    if named != replacements:
        # Renumber what is left: t0, t1, ... with no gap where one was named.
        temps = {symbol for symbol, _ in replacements}
        taken = taken | {target.name for target, _ in named if target not in temps}
        named, exprs = _renumbered(named, [s.expr for s in steps], temps, taken)
        steps = [Step(s.target, e, s.guard) for s, e in zip(steps, exprs)]
    replacements = named
    temp_value = dict(replacements)
    order = {symbol: i for i, (symbol, _) in enumerate(replacements)}

    # A temporary serves every step that uses it, directly or through another.
    guards: dict[sp.Symbol, frozenset[int]] = {s: frozenset() for s in temp_value}
    for step in steps:
        for symbol in _uses(step.expr, temp_value):
            guards[symbol] |= step.guard

    emitted: set[sp.Symbol] = set()
    lines: list[tuple[frozenset[int], sp.Symbol, sp.Expr]] = []
    for step in steps:
        needed = sorted(_uses(step.expr, temp_value) - emitted, key=order.get)
        for symbol in needed:
            lines.append((guards[symbol], symbol, temp_value[symbol]))
            emitted.add(symbol)
        lines.append((step.guard, step.target, step.expr))

    blocks: list[Block] = []
    for guard, target, expr in lines:
        if guard == everyone and target not in keep_guards:
            guard = frozenset()
        if blocks and blocks[-1].guard == guard:
            blocks[-1] = Block(guard, blocks[-1].assignments + ((target, expr),))
        else:
            blocks.append(Block(guard, ((target, expr),)))
    return tuple(blocks)


def _named_by_target(replacements: list, steps: list[Step]) -> tuple[list, list]:
    """A temporary that an unguarded step assigns as it is (``rstd =
    t1``) takes that step's name: ``rstd = torch.rsqrt(eps + var)``,
    then ``y = t0 * rstd``.  Only without guards: a guarded gradient
    must stay None where its guard does not hold."""
    temps = {symbol for symbol, _ in replacements}
    renames: dict[sp.Symbol, sp.Symbol] = {}
    for step in steps:
        if step.expr in temps and step.expr not in renames and not step.guard:
            renames[step.expr] = step.target
    if not renames:
        return replacements, steps
    replacements = [(renames.get(t, t), v.xreplace(renames)) for t, v in replacements]
    steps = [
        Step(s.target, s.expr.xreplace(renames), s.guard)
        for s in steps
        if not (s.expr in renames and renames[s.expr] == s.target)
    ]
    return replacements, steps


def _uses(expr: sp.Expr, temp_value: dict) -> set[sp.Symbol]:
    """The temporaries `expr` needs, transitively."""
    found: set[sp.Symbol] = set()
    frontier = [s for s in expr.free_symbols if s in temp_value]
    while frontier:
        symbol = frontier.pop()
        if symbol not in found:
            found.add(symbol)
            frontier.extend(
                s for s in temp_value[symbol].free_symbols if s in temp_value
            )
    return found
