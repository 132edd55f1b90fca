"""Benchmark the generated Functions and write benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py [--size N] [--repeats N] [--no-compile]

Runs `fngen.bench.bench_spec` over the example specs and
benchmarks/activations.yaml (a function already benchmarked under the same
name and formula in an earlier spec is skipped), prints the table, and writes
RESULTS.md: the date, the command, the machine, the ratio table, and the
geometric means against the team's targets.  Ratios only: absolute times
depend on the machine and are never compared across runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ("examples/ops.yaml", "examples/tensors.yaml", "benchmarks/activations.yaml")

# What the generated code aims for (ratios generated / plain autograd).
EAGER_TIME_GEOMEAN = 0.7
EAGER_SAVED_GEOMEAN = 0.5
COMPILED_TIME_GEOMEAN = 1.0


def targets(report) -> list[tuple[str, bool | None, str]]:
    """(target, met: True/False/None when not measured, what was measured)."""
    rows = [f for f in report.functions if f.comparable]
    means = report.geomeans()

    def above(attr):
        worse = [f for f in rows if (getattr(f, attr) or 0) > 1.0]
        return [f"{f.name} ({getattr(f, attr):.3f})" for f in worse]

    def geomean(name, limit):
        value = means[name]
        if value is None:
            return None, "not measured"
        return value <= limit, f"{value:.3f}"

    def none_above(attr):
        if attr.startswith("compiled") and not report.compile:
            return None, "not measured"
        worse = above(attr)
        return not worse, ("above 1: " + ", ".join(worse)) if worse else "none above 1"

    result = []
    for label, (ok, text) in (
        (
            f"eager time geomean <= {EAGER_TIME_GEOMEAN}",
            geomean("eager_time_ratio", EAGER_TIME_GEOMEAN),
        ),
        ("eager time: no function above 1.0", none_above("eager_time_ratio")),
        ("eager saved bytes: never above autograd's", none_above("eager_saved_ratio")),
        (
            f"eager saved bytes geomean <= {EAGER_SAVED_GEOMEAN}",
            geomean("eager_saved_ratio", EAGER_SAVED_GEOMEAN),
        ),
        (
            f"compiled time geomean <= {COMPILED_TIME_GEOMEAN}",
            geomean("compiled_time_ratio", COMPILED_TIME_GEOMEAN),
        ),
        (
            "compiled saved bytes: never above compiled autograd's",
            none_above("compiled_saved_ratio"),
        ),
    ):
        result.append((label, ok, text))
    return result


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = ", load average %.2f %.2f %.2f at the end" % os.getloadavg()
    except OSError:
        load = ""
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"
        f"{load}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"; {torch.cuda.get_device_name(torch.device(device))}"
    return ""


def run(args):
    import fngen
    from fngen.bench import BenchReport, bench_spec

    seen = set()
    reports = []
    for path in SPECS:
        spec = fngen.load_spec(path)
        names = []
        for fn in spec.functions:
            key = (fn.name, fn.formula.text.strip())
            if key not in seen:
                seen.add(key)
                names.append(fn.name)
        if not names:
            continue
        print(f"benchmarking {path}: {', '.join(names)}", file=sys.stderr, flush=True)
        reports.append(
            bench_spec(
                spec,
                only=names,
                size=args.size,
                device=args.device,
                dtype=args.dtype,
                repeats=args.repeats,
                compile=not args.no_compile,
                backend=args.backend,
                threads=args.threads,
            )
        )
    return BenchReport.combine(reports)


CPU_NOTE = {
    False: [],
    True: [
        "One torch thread by default (`--threads`): this machine has 2 cores shared",
        "with other jobs, and with 2 OpenMP threads every parallel kernel waits",
        "for a descheduled worker in steps of a scheduler slice (about 8 ms, seen",
        "for kernels that take 0.2 ms on one thread), which swamps the differences",
        "measured here.  Even so, ratios move from run to run by 0.1 to 0.3 here",
        "(identical code: `layer_norm` eager has read 0.40 to 0.72): only large or",
        "repeated differences mean anything.  A fresh 16 MB buffer page-faults",
        "(about 3 ms, more than most kernels here), so what a function allocates",
        "counts as much as what it computes; `fngen bench` settles glibc's mmap",
        "threshold first, so that the first function of a run is not the only",
        "one whose buffers are mapped afresh each round.",
        "",
        "Functions that are one kernel each way on both sides (`exp`, `softplus`,",
        "`linear`, `mul_constant`, relu, `sum_sqrt`'s five passes against",
        "autograd's five) read 1.0 to 1.15: the very kernels, plus what",
        "`Function.apply` costs over a plain op, about 0.1 ms at 4M floats here",
        "(`python benchmarks/function_overhead.py`; a `setup_context` Function,",
        "which `generate_vmap_rule` needs, costs more than an old-style one:",
        "its `apply` binds the arguments to `forward`'s signature with",
        "`inspect` on every call).  That costs about 10 us at 1,000 elements",
        "but 80-100 us at 4M, so most of it is not Python time; its cause is",
        "not pinned down (a profile of the kernels alone is dominated by which",
        "variant runs first).",
    ],
}


def results_markdown(report, command: str, seconds: float) -> str:
    marks = {True: "met", False: "NOT met", None: "not measured"}
    lines = [
        "# Benchmark results",
        "",
        "Ratios of the generated `torch.autograd.Function` to the same formula",
        "written as plain torch ops under autograd (`composed_source`: each",
        "repeated subexpression computed once, none of fngen's rewrites such as",
        "fused activation kernels or Horner form), both eager and both under",
        "`torch.compile`: forward + backward time (median of interleaved rounds)",
        "and the bytes autograd saves for backward (distinct storages seen by",
        "`saved_tensors_hooks`, saved inputs and outputs included).  Below 1",
        "favours the generated op.  Ratios only: absolute times are not",
        "comparable across machines or runs.",
        "",
        *CPU_NOTE[report.device == "cpu"],
        "Functions with a `grad:` override (marked `*`) are not comparable:",
        "autograd of the plain formula computes another gradient.",
        "",
        "Compiled saved bytes count what passes `saved_tensors_hooks`; AOTAutograd",
        "can stash a view of an input without them (`linear` compiled: the",
        "transposed input its weight gradient reads), so a compiled ratio below",
        "1 may hold as many bytes as autograd does.",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- command: `{command}` ({seconds / 60:.1f} minutes)",
        f"- machine: {machine()}{device_name(report.device)}",
        "",
        "```",
        report.table(),
        "```",
        "",
        "## Targets (comparable functions only)",
        "",
        "| target | | measured |",
        "| --- | --- | --- |",
    ]
    for label, ok, text in targets(report):
        lines.append(f"| {label} | {marks[ok]} | {text} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from fngen.bench import DEFAULT_SIZE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1; 0: torch's default), see RESULTS.md",
    )
    parser.add_argument(
        "--output",
        default=str(ROOT / "benchmarks" / "RESULTS.md"),
        help="where to write the results (- for none)",
    )
    parser.add_argument(
        "--json", default=None, help="also write the report as JSON here"
    )
    args = parser.parse_args(argv)
    args.threads = args.threads or None
    os.chdir(ROOT)  # spec paths in the report are relative to the repository
    command = shlex.join(
        ["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
    )
    start = time.perf_counter()
    report = run(args)
    seconds = time.perf_counter() - start
    print(report.table())
    for label, ok, text in targets(report):
        print(f"{label}: {ok} ({text})")
    if args.json:
        Path(args.json).write_text(report.to_json() + "\n", encoding="utf-8")
    if args.output != "-":
        Path(args.output).write_text(
            results_markdown(report, command, seconds), encoding="utf-8"
        )
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
