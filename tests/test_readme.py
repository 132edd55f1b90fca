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


DOCS = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}


def _code_block(text: str, marker: str, language: str) -> str:
    start = text.index(marker)
    opening = text.index(f"```{language}\n", start) + len(f"```{language}\n")
    return text[opening : text.index("```", opening)]


def test_the_readme_is_short():
    assert len(README.encode("utf-8")) < 15_000


def test_the_check_tables_list_every_column():
    from fngen.spec import EXPORT_CHECKS, KERNEL_CHECKS

    columns = CHECK_NAMES + EXPORT_CHECKS + KERNEL_CHECKS
    for name, text in (("README.md", README), ("check.md", DOCS["check.md"])):
        rows = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
        assert tuple(r for r in rows if r in columns) == columns, name


def test_the_readme_commands_are_the_ci_commands():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    setup = _code_block(README, "set up a development environment", "sh").strip()
    assert (
        setup
        == "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e '.[test]'"
    )
    assert "run python3 -m venv .venv\n" in ci
    assert "run .venv/bin/pip install torch==2.13.0 -e '.[test]'\n" in ci
    tests = _code_block(README, "Run the tests", "sh").strip()
    assert f"run {tests}\n" in ci


def test_every_relative_link_resolves():
    pages = {ROOT / "README.md": README}
    pages.update({ROOT / "docs" / name: text for name, text in DOCS.items()})
    for page, text in pages.items():
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_kernel_shown_is_what_fngen_generates():
    shown = _code_block(DOCS["kernels.md"], "Its backward kernel for", "python")
    spiking = (ROOT / "examples" / "spiking.py").read_text(encoding="utf-8")
    assert shown in spiking
    source = fngen.generate(fngen.load_spec(ROOT / "examples" / "spiking.yaml"))
    assert shown in source


def test_the_kernel_spec_shown_builds_with_kernels():
    from fngen.codegen import kernel_status
    from fngen.spec import parse_spec

    shown = _code_block(DOCS["kernels.md"], "# Triton kernels", "yaml")
    spec = parse_spec(shown, "kernels.yaml")
    assert spec.kernels == "triton"
    assert kernel_status(spec.functions[0], spec.kernels) is None
