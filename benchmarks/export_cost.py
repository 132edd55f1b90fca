"""What `export: custom_op` costs, measured (issue 17).

    python benchmarks/export_cost.py

Eager code and torch.compile never call the custom op (the wrapper applies
the autograd.Function, as without the mode); only exported and traced
programs do.  This measures, in one run: the time of one call of the op
against the Function (small tensors, where the call dominates), the time of
a compiled exported program (the op opaque to inductor) against the compiled
wrapper (fused with its neighbours), and what torch.func transforms do
through an exported program.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fngen  # noqa: E402


def median_time(function, repeat=7, number=200):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def interleaved(functions, rounds=5, number=200):
    """Median seconds per call of each function, run in turn."""
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            times[name].append(median_time(function, repeat=1, number=number))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    torch.set_num_threads(1)
    os.chdir(ROOT)
    ops = fngen.load("examples/export.yaml")
    op = torch.ops.fngen_examples.soft_clip
    small = torch.randn(16, requires_grad=True)
    calls = interleaved(
        {
            "Function (eager wrapper)": lambda: ops.soft_clip(small, 2.0),
            "custom op (torch.ops)": lambda: op(small, 2.0),
        },
        number=2000,
    )

    class Chain(torch.nn.Module):
        def forward(self, x):
            return ops.soft_clip(x * 1.5 + 0.5, 2.0).exp()

    x = torch.randn(1 << 20)
    compiled = torch.compile(Chain())
    program = torch.export.export(Chain(), (x,)).module()
    compiled_program = torch.compile(program)
    for f in (compiled, compiled_program):
        f(x)
    fusion = interleaved(
        {
            "compiled wrapper (fused)": lambda: compiled(x),
            "compiled exported program (op opaque)": lambda: compiled_program(x),
        },
        number=20,
    )

    print(f"torch {torch.__version__}, one thread\n")
    print("| call, 16 elements, forward | us |\n| --- | ---: |")
    for name, seconds in calls.items():
        print(f"| {name} | {seconds * 1e6:.1f} |")
    print("\n| torch.compile, 1M elements, forward | ms |\n| --- | ---: |")
    for name, seconds in fusion.items():
        print(f"| {name} | {seconds * 1e3:.3f} |")

    print("\n| through an exported program | result |\n| --- | --- |")
    ste = torch.export.export(
        type("M", (torch.nn.Module,), {"forward": lambda s, v: ops.round_ste(v)})(),
        (torch.randn(3),),
    ).module()
    v, t = torch.randn(3), torch.ones(3)
    try:
        torch.func.grad(lambda v: ste(v).sum())(v)
        grad = "works"
    except RuntimeError as err:
        grad = f"raises {type(err).__name__} (PyTorch: custom ops do not support torch.func.grad)"
    _, tangent = torch.func.jvp(ste, (v,), (t,))
    _, eager_tangent = torch.func.jvp(ops.round_ste, (v,), (t,))
    print(f"| torch.func.grad | {grad} |")
    print(
        f"| torch.func.jvp of the STE (tangent 1) | {tangent.tolist()} "
        f"(eager wrapper: {eager_tangent.tolist()}) |"
    )
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        try:
            ste(fwAD.make_dual(v, t))
            forward = "works"
        except NotImplementedError as err:
            forward = "raises: " + str(err).split(": ", 1)[1].split(";")[0]
    print(f"| torch.autograd.forward_ad | {forward} |")
    (g,) = torch.autograd.grad(ste(v.requires_grad_()).sum(), v)
    print(f"| backward of the STE | {g.tolist()} |")
    batched = torch.func.vmap(ste)(torch.randn(2, 3))
    print(f"| torch.func.vmap | works ({tuple(batched.shape)}) |")


if __name__ == "__main__":
    main()
