"""The command line.  Only this module prints or exits.

Exit codes: 0 ok; 1 a check failed or an output is stale; 2 a usage or spec
error.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from fngen import __version__
from fngen.errors import SpecError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

EPILOG = """\b
Exit codes:
  0  success
  1  a check failed, or (build --check) the output is stale
  2  usage error, or an error in a spec file
"""


def _one_line(message: str) -> str:
    """`message` with a newline or another control character (of a device
    string, a file name) written as its escape."""
    return "".join(
        ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message.strip()
    )


def _fail(message: str) -> None:
    """One line on stderr, exit 2."""
    click.echo(_one_line(message), err=True)
    sys.exit(EXIT_ERROR)


def _warn(spec) -> None:
    """The spec's warnings on stderr, one line each, escaped as errors are."""
    for warning in spec.warnings:
        click.echo(_one_line(str(warning)), err=True)


class _Group(click.Group):
    """Click's group, with its errors as fngen's: one line on stderr
    (``error: No such option: --frobnicate (see 'fngen build --help')``),
    exit 2; no usage block, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, **extra):
        if not extra.pop("standalone_mode", True):
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
            if isinstance(err, no_args) and err.ctx is not None:
                click.echo(err.ctx.get_help())  # a bare `fngen`: the help
                sys.exit(EXIT_ERROR)
            command = err.ctx.command_path if err.ctx is not None else "fngen"
            _fail(f"error: {err.format_message()} (see '{command} --help')")
        except click.ClickException as err:
            _fail(f"error: {err.format_message()}")
        except (click.Abort, KeyboardInterrupt, EOFError):
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(
    cls=_Group,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="fngen")
def main():
    """fngen: formulas in, verified torch.autograd.Function modules out."""


@main.command(epilog=EPILOG)
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    help="The module to write, or - for stdout.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 if OUTPUT is stale.",
)
@click.option(
    "--diff", is_flag=True, help="Write nothing; show how OUTPUT would change."
)
def build(spec, output, check_only, diff):
    """Generate the module for SPEC into OUTPUT (atomically)."""
    from fngen.api import OutputError, generate, load_spec, output_target
    from fngen.api import read_regular
    from fngen.api import write_if_changed

    to_stdout = output == "-" and not (check_only or diff)
    if not to_stdout:
        try:
            path = output_target(output, spec)
        except OutputError as err:
            _fail(f"error: {err}")
    try:
        loaded = load_spec(spec)
        _warn(loaded)
        source = generate(loaded)
    except SpecError as err:
        _fail(str(err))
    if to_stdout:
        click.echo(source, nl=False)
        return
    try:
        raw = read_regular(path)
    except OSError as err:
        _fail(f"error: cannot read {output}: {err.strerror or err}")
    # Compare bytes: a stale output that is not UTF-8 is still just stale.
    stale = raw != source.encode("utf-8")
    current = "" if raw is None else raw.decode("utf-8", errors="replace")
    if diff:
        lines = difflib.unified_diff(
            current.splitlines(keepends=True),
            source.splitlines(keepends=True),
            fromfile=f"{output} (current)",
            tofile=f"{output} (generated)",
        )
        click.echo("".join(lines), nl=False)
    if check_only or diff:
        if stale:
            if check_only:
                click.echo(
                    f"{output} is stale: run 'fngen build {spec} -o {output}'", err=True
                )
            sys.exit(EXIT_FAILED)
        return
    try:
        changed = write_if_changed(path, source)
    except OSError as err:
        _fail(f"error: cannot write {output}: {err.strerror or err}")
    click.echo(f"{'wrote' if changed else 'unchanged'} {output}", err=True)


@main.command(epilog=EPILOG)
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--device",
    default=None,
    help="cpu, cuda, cuda:N or mps (default: the spec's, else cpu).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float64", "float32"]),
    default=None,
    help="Default: the spec's, else float64.",
)
@click.option(
    "--only", "only", multiple=True, help="Check only this function (repeatable)."
)
def check(specs, device, dtype, only):
    """Verify the generated gradients of each SPEC with gradcheck and more."""
    from fngen.api import load_spec
    from fngen.checker import DeviceError, check_spec, unknown_functions_message

    loaded = []
    for spec_path in specs:
        try:
            loaded.append((spec_path, load_spec(spec_path)))
        except SpecError as err:
            _fail(str(err))
        _warn(loaded[-1][1])
    # Every name must be in some spec, before anything runs.
    found = {fn.name for _, spec in loaded for fn in spec.functions}
    missing = [name for name in only if name not in found]
    if missing:
        _fail("error: " + unknown_functions_message(missing, found, ", ".join(specs)))
    ok = True
    for spec_path, spec in loaded:
        names = [n for n in only if n in {f.name for f in spec.functions}]
        if only and not names:
            continue
        try:
            report = check_spec(spec, device=device, dtype=dtype, only=names or None)
        except SpecError as err:
            _fail(str(err))
        except DeviceError as err:
            _fail(f"error: {err}")
        click.echo(f"{spec_path}: " + report.table())
        ok &= report.ok
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@main.command(epilog=EPILOG)
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--only", "only", multiple=True, help="Benchmark only this function (repeatable)."
)
@click.option(
    "--size",
    type=click.IntRange(min=1),
    default=4_000_000,
    show_default=True,
    help="Elements of the largest input (formulas with @ stop at 262,144).",
)
@click.option(
    "--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps."
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float64", "bfloat16"]),
    default="float32",
    show_default=True,
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Interleaved timing rounds; the median is reported.",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=True,
    show_default=True,
    help="Also compare both under torch.compile.",
)
@click.option(
    "--backend",
    default="inductor",
    show_default=True,
    help="The torch.compile backend.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch's CPU thread count for the run (default: torch's own).",
)
@click.option(
    "--interpret",
    is_flag=True,
    help="Run the Triton kernels under Triton's interpreter on a CPU (tests "
    "the kernel variant; its times mean nothing).",
)
@click.option(
    "--kernels",
    type=click.Choice(["triton", "none"]),
    default=None,
    help="The spec's `kernels:` for this run (default: the spec's own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    spec,
    only,
    size,
    device,
    dtype,
    repeats,
    compile_,
    backend,
    threads,
    interpret,
    kernels,
    as_json,
):
    """Time each function of SPEC against the same formula under plain autograd.

    For the generated op and the formula as plain torch ops, eager and under
    torch.compile: forward + backward time (median of interleaved rounds) and
    the bytes saved for backward.  Prints ratios generated / plain (below 1
    is better); with ``kernels: triton``, on CUDA, the Triton kernels too.  A
    benchmark, not a check: it exits 0 whatever the ratios.
    """
    from fngen.api import load_spec
    from fngen.bench import BenchError, bench_spec
    from fngen.checker import DeviceError

    try:
        report = bench_spec(
            load_spec(spec),
            only=list(only) or None,
            size=size,
            device=device,
            dtype=dtype,
            repeats=repeats,
            compile=compile_,
            backend=backend,
            threads=threads,
            interpret=interpret,
            kernels=kernels,
        )
    except SpecError as err:
        _fail(str(err))
    except (BenchError, DeviceError) as err:
        _fail(f"error: {err}")
    click.echo(report.to_json() if as_json else report.table())
