"""`fngen.schedule`: a shared subexpression that an output is takes the
output's name."""

from __future__ import annotations

import sympy as sp

from fngen.schedule import Step, schedule

x, y, a, b, out = sp.symbols("x y a b out", real=True)


def lines(blocks):
    return [(t.name, str(e)) for block in blocks for t, e in block.assignments]


def test_an_output_that_is_a_shared_subexpression_names_it():
    steps = [
        Step(a, sp.exp(x) * y, frozenset()),
        Step(b, sp.exp(x), frozenset()),
    ]
    assert lines(schedule(steps, frozenset(), {"x", "y", "a", "b"})) == [
        ("b", "exp(x)"),
        ("a", "b*y"),
    ]


def test_temporaries_left_are_numbered_without_a_gap():
    steps = [
        Step(a, sp.exp(x) * sp.sin(y) + sp.sin(y), frozenset()),
        Step(b, sp.exp(x) * sp.sin(y) * 2, frozenset()),
        Step(out, sp.exp(x), frozenset()),
    ]
    names = [name for name, _ in lines(schedule(steps, frozenset(), set()))]
    temps = sorted(n for n in names if n.startswith("t"))
    assert temps == [f"t{i}" for i in range(len(temps))]
    assert "out" in names and names.index("out") < names.index("a")


def test_a_guarded_step_keeps_its_own_line():
    # grad_x must stay None where its guard does not hold: no renaming.
    steps = [
        Step(a, sp.exp(x), frozenset({0})),
        Step(b, sp.exp(x) * y, frozenset({1})),
    ]
    got = lines(schedule(steps, frozenset({0, 1}), set()))
    assert ("a", "t0") in got and ("t0", "exp(x)") in got
