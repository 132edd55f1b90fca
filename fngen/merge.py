"""One block of code from several variants of it, each statement guarded
only as far as the variants differ.

A Function with an optional tensor has a program for each combination of
absent ones.  Printed whole behind ``if bias is None: ... else: ...``
they repeat every statement they share.  `merge` interleaves them into
one sequence instead (a common supersequence of their statements), each
statement marked with the variants it belongs to, and `guarded` prints
that with ``if bias is not None:`` around the runs that are not shared:

    y = input @ weight.transpose(-2, -1)
    if bias is not None:
        y = bias + y

Each variant, run through the guards, executes exactly its own
statements in its own order, so the merge changes no value: a statement
shared in text is the same statement in each (it reads the names it
reads, whatever statement of its own variant set them).

Statements are lines of Python source; one with an indented block
(``if needs_x:`` and its body) is one statement with it.  Nothing here
reads what the code means: it compares text.
"""

from __future__ import annotations

import difflib
from typing import Callable, Hashable, Sequence

Statement = tuple[str, ...]


def statements(lines: Sequence[str]) -> list[Statement]:
    """`lines` cut into statements: a line and the more indented lines
    after it."""
    found: list[list[str]] = []
    for line in lines:
        if found and line.startswith((" ", "\t")):
            found[-1].append(line)
        else:
            found.append([line])
    return [tuple(s) for s in found]


def merge(
    programs: Sequence[tuple[Hashable, Sequence[Statement]]],
) -> list[tuple[frozenset, Statement]]:
    """The statements of `programs` ((key, statements) each) in one
    sequence that contains each program's in its order, each with the keys
    of the programs it belongs to.  Programs are taken in turn, each
    matched against what the earlier ones made (longest matching runs)."""
    merged: list[tuple[frozenset, Statement]] = []
    for key, program in programs:
        program = list(program)
        texts = [s for _, s in merged]
        matcher = difflib.SequenceMatcher(None, texts, program, autojunk=False)
        out = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                out += [(keys | {key}, s) for keys, s in merged[i1:i2]]
            else:
                out += merged[i1:i2]
                out += [(frozenset({key}), s) for s in program[j1:j2]]
        merged = out
    return merged


def guarded(
    merged: Sequence[tuple[frozenset, Statement]],
    every: frozenset,
    test: Callable[[frozenset], str],
) -> list[str]:
    """The lines of `merged`: a run of statements of all the keys in
    `every` as it is, another behind ``if test(keys):``; runs of keys
    apart from those of the runs just before them continue the chain with
    ``elif``, or ``else:`` for the keys left."""
    runs: list[tuple[frozenset, list[str]]] = []
    for keys, statement in merged:
        if runs and runs[-1][0] == keys:
            runs[-1][1].extend(statement)
        else:
            runs.append((keys, list(statement)))
    lines: list[str] = []
    chain = None  # the keys of the if/elif chain open before this run
    for keys, body in runs:
        if keys == every:
            lines += body
            chain = None
            continue
        if chain is not None and not keys & chain:
            if keys == every - chain:
                lines.append("else:")
                chain = None
            else:
                lines.append(f"elif {test(keys)}:")
                chain |= keys
        else:
            lines.append(f"if {test(keys)}:")
            chain = keys
        lines += [f"    {line}" for line in body]
    return lines
