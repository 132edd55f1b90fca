"""What a torch.autograd.Function costs over the plain op it wraps.

The floor under `fngen bench`'s eager ratios for functions that are one
kernel each way on both sides (exp, softplus, a multiply by a constant):
the generated op runs the very kernels autograd does, plus what
`Function.apply` costs.  This times the forward of ``2.0 * x`` as a plain
op, as an old-style Function (``forward(ctx, ...)``) and as a
``setup_context`` Function (the style fngen generates, which
``generate_vmap_rule`` needs), interleaved, one thread, with the allocator
settled as `fngen bench` does.

    python benchmarks/function_overhead.py [ELEMENTS ...]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch


class SetupContext(torch.autograd.Function):
    @staticmethod
    def forward(x, c):
        return c * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class OldStyle(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, c):
        return c * x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def main(sizes: list[int], rounds: int = 200) -> None:
    torch.set_num_threads(1)
    block = torch.empty(31 * 1024 * 1024, dtype=torch.uint8)  # see fngen.bench
    del block
    print(
        f"forward of 2.0*x, median of {rounds} interleaved rounds, torch {torch.__version__}"
    )
    print(
        f"{'elements':>10}  {'plain op':>9}  {'old style':>16}  {'setup_context':>16}"
    )
    for size in sizes:
        x = torch.randn(size, requires_grad=True)
        variants = {
            "plain": lambda: 2.0 * x,
            "old": lambda: OldStyle.apply(x, 2.0),
            "new": lambda: SetupContext.apply(x, 2.0),
        }
        samples = {name: [] for name in variants}
        for _ in range(rounds):
            for name, call in variants.items():
                start = time.perf_counter()
                result = call()
                samples[name].append(time.perf_counter() - start)
                del result
        us = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
        print(
            f"{size:>10,}  {us['plain']:>7.1f}us  "
            f"{us['old']:>7.1f}us (+{us['old'] - us['plain']:.0f})  "
            f"{us['new']:>7.1f}us (+{us['new'] - us['plain']:.0f})"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 1_000_000, 4_000_000])
