"""How `fngen build` scales: many functions, and formulas that share work.

Each case is built by ``fngen build`` in a fresh process; this prints its
wall time and the process's peak memory (max RSS), as a Markdown table:

* N trivial functions (``y = x*k + sin(x)``) for N = 250, 1000, 5000: the
  time per function and the memory should not grow with N (issue 14's
  targets: 1,000 in under 30 s, 5,000 in under 3 minutes);
* a chain of statements that reuse the one before twice
  (``a_i = a_{i-1}*a_{i-1} + a_{i-1}``), 5, 10 and 15 lines: a tree walk
  doubles with every line, a walk of the shared expression does not;
* a sum of 200 reductions (``sum(x0*x) + ... + sum(x199*x)``).

    python benchmarks/scale.py [--quick]

``--quick`` builds N = 250 and 1000 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURE = """\
import resource, sys
from fngen.cli import main
try:
    main(["build", sys.argv[1], "-o", sys.argv[2]])
except SystemExit as exit:
    if exit.code:
        raise
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def many(n: int) -> str:
    lines = ["fngen: 1", "functions:"]
    for i in range(n):
        lines += [f"  f{i}:", f"    formula: y = x*{i + 1} + sin(x)"]
    return "\n".join(lines) + "\n"


def chain(n: int) -> str:
    body = ["a0 = x*x + x"]
    body += [f"a{i} = a{i - 1}*a{i - 1} + a{i - 1}" for i in range(1, n)]
    body.append(f"y = a{n - 1}")
    text = "fngen: 1\nfunctions:\n  chain:\n    formula: |\n"
    return text + "".join(f"      {line}\n" for line in body)


def reductions(n: int) -> str:
    terms = " + ".join(f"sum(x{i}*x)" for i in range(n))
    return f"fngen: 1\nfunctions:\n  total:\n    formula: y = {terms}\n"


def build(text: str, work: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of building `text` in a fresh process."""
    spec, out = work / "spec.yaml", work / "out.py"
    spec.write_text(text)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(spec), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    kib = int(done.stdout.split()[-1])
    return seconds, kib / 1024


def main(argv: list[str]) -> None:
    counts = [250, 1000] if "--quick" in argv else [250, 1000, 5000]
    cases = [(f"{n} functions", n, many(n)) for n in counts]
    cases += [(f"chain of {n} statements", 1, chain(n)) for n in (5, 10, 15)]
    cases.append(("sum of 200 reductions", 1, reductions(200)))
    print(f"fngen build, one process each, {os.cpu_count()} CPUs\n")
    print("| case | seconds | ms per function | peak MiB |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for label, functions, text in cases:
            seconds, mib = build(text, Path(tmp))
            per = 1000 * seconds / functions
            print(f"| {label} | {seconds:.1f} | {per:.0f} | {mib:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
