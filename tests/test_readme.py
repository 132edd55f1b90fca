"""The README shows what is true: its tutorial spec is `examples/tutorial.yaml`
(which CI checks), its generated `exp` is what fngen generates, and its
check table names the checks `fngen check` runs."""

from __future__ import annotations

import re
from pathlib import Path

import fngen
from fngen.spec import CHECK_NAMES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str, language: str) -> str:
    start = README.index(marker)
    opening = README.index(f"```{language}\n", start) + len(f"```{language}\n")
    return README[opening : README.index("```", opening)]


def test_the_tutorial_spec_is_the_file_ci_checks():
    shown = _block_after("**1. Write a spec**", "yaml")
    assert shown == (ROOT / "examples" / "tutorial.yaml").read_text(encoding="utf-8")


def test_the_generated_exp_shown_is_what_fngen_generates():
    shown = _block_after("This is the generated code for `exp`", "python")
    source = fngen.generate(fngen.load_spec(ROOT / "examples" / "ops.yaml"))
    start = source.index("class ExpFunction(")
    end = source.index("\n\n\n", source.index("class Exp(torch.nn.Module):"))
    assert shown == source[start:end] + "\n"


def test_the_check_table_lists_every_check():
    section = README[README.index("## `fngen check`") :]
    rows = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert tuple(rows[: len(CHECK_NAMES)]) == CHECK_NAMES


def test_the_console_tables_have_the_columns_of_today():
    """Every `fngen check` table in the README that is not a record of an
    older run has today's header."""
    header = "function" + "".join(f"  {c}" for c in CHECK_NAMES)
    tutorial = README[README.index("**4. Check** it:") :]
    lines = tutorial.splitlines()
    found = [line for line in lines[:8] if line.startswith("function")]
    assert found and found[0].split() == header.split()
