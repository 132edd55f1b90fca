"""The merge of a Function's branches into one block (`fngen.merge`)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fngen.merge import guarded, merge, statements

P, A = frozenset(), frozenset({"bias"})


def _test(keys):
    return "bias is not None" if keys == {P} else "bias is None"


def test_a_statement_is_a_line_and_its_indented_block():
    lines = ["a = 1", "if needs_x:", "    t0 = a", "    grad_x = t0", "return a"]
    assert statements(lines) == [
        ("a = 1",),
        ("if needs_x:", "    t0 = a", "    grad_x = t0"),
        ("return a",),
    ]


def test_shared_statements_are_written_once_and_the_rest_guarded():
    present = statements(["y = x @ w", "y = bias + y", "return y"])
    absent = statements(["y = x @ w", "return y"])
    merged = merge([(P, present), (A, absent)])
    assert guarded(merged, frozenset({P, A}), _test) == [
        "y = x @ w",
        "if bias is not None:",
        "    y = bias + y",
        "return y",
    ]


def test_two_versions_of_a_statement_are_if_and_else():
    present = statements(["t = x * w", "y = bias + t", "return y"])
    absent = statements(["t = x * w", "y = t", "return y"])
    merged = merge([(P, present), (A, absent)])
    assert guarded(merged, frozenset({P, A}), _test) == [
        "t = x * w",
        "if bias is not None:",
        "    y = bias + t",
        "else:",
        "    y = t",
        "return y",
    ]


_STATEMENT = st.sampled_from(["a", "b", "c", "d", "e"])
_KEYS = [frozenset(), frozenset({"u"}), frozenset({"v"}), frozenset({"u", "v"})]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_STATEMENT, max_size=8), min_size=2, max_size=4))
def test_each_branch_runs_exactly_its_statements_in_order(programs):
    keys = _KEYS[: len(programs)]
    every = frozenset(keys)
    named = {k: f"k{i}" for i, k in enumerate(keys)}
    merged = merge(
        [(k, [(f"ran.append({s!r})",) for s in p]) for k, p in zip(keys, programs)]
    )
    for key, program in zip(keys, programs):
        assert [s for ks, s in merged if key in ks] == [
            (f"ran.append({s!r})",) for s in program
        ]
    lines = guarded(
        merged, every, lambda ks: " or ".join(f"key == {named[k]!r}" for k in ks)
    )
    source = "def run(key):\n    ran = []\n"
    source += "".join(f"    {line}\n" for line in lines) + "    return ran\n"
    scope = {}
    exec(compile(source, "<merged>", "exec"), scope)  # the test's own code
    for key, program in zip(keys, programs):
        assert scope["run"](named[key]) == program


def test_branches_apart_continue_the_chain_with_elif_and_else():
    keys = [frozenset(), frozenset({"a"}), frozenset({"b"})]
    programs = [(k, [(f"y = {i}",), ("return y",)]) for i, k in enumerate(keys)]
    test = {k: f"case_{i}" for i, k in enumerate(keys)}
    lines = guarded(merge(programs), frozenset(keys), lambda ks: test[min(ks, key=len)])
    assert lines == [
        "if case_0:",
        "    y = 0",
        "elif case_1:",
        "    y = 1",
        "else:",
        "    y = 2",
        "return y",
    ]
