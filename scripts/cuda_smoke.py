"""CUDA-only checks that CI (CPU) cannot run; run on a GPU machine.

For every function of the given specs: forward and backward make no
host-device synchronisation (torch.cuda.set_sync_debug_mode("error")), and
under torch.autocast (float16 and bfloat16) the outputs have the dtype a
built-in op would give.  Exits 1 on any failure.

    python scripts/cuda_smoke.py examples/*.yaml benchmarks/activations.yaml
"""

from __future__ import annotations

import sys

import torch

import fngen
from fngen.checker import sample_inputs


def _outputs(value):
    return value if isinstance(value, tuple) else (value,)


def check_spec(path: str) -> list[str]:
    spec = fngen.load_spec(path)
    module = fngen.load(spec)
    device = torch.device("cuda")
    failures = []
    for fn in spec.functions:
        func = getattr(module, fn.name)
        args = sample_inputs(
            fn, torch.float32, device, torch.Generator().manual_seed(0)
        )
        try:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            outputs = [o for o in _outputs(func(*args)) if o.is_floating_point()]
            tensors = [a for a in args if torch.is_tensor(a)]
            torch.autograd.grad(
                [o.sum() for o in outputs if o.requires_grad],
                tensors,
                allow_unused=True,
            )
        except RuntimeError as err:
            failures.append(
                f"{path}::{fn.name}: synchronises: {str(err).splitlines()[0]}"
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for dtype in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=dtype):
                outputs = [o for o in _outputs(func(*args)) if o.is_floating_point()]
            has_matmul = "@" in fn.formula.text
            expected = (
                torch.float32
                if fn.autocast == "float32"
                else dtype if has_matmul else torch.float32
            )
            wrong = [o.dtype for o in outputs if o.dtype != expected]
            if wrong:
                failures.append(
                    f"{path}::{fn.name}: under autocast({dtype}) gave {wrong}, expected {expected}"
                )
        half = [
            a.detach().half().requires_grad_() if torch.is_tensor(a) else a
            for a in args
        ]
        outputs = [o for o in _outputs(func(*half)) if o.is_floating_point()]
        if any(o.dtype != torch.float16 for o in outputs):
            failures.append(
                f"{path}::{fn.name}: float16 inputs gave {[o.dtype for o in outputs]}"
            )
    return failures


def main(paths: list[str]) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    failures = []
    for path in paths:
        failures += check_spec(path)
    for failure in failures:
        print("FAILED", failure)
    print(f"cuda smoke: {len(failures)} failure(s) on {torch.cuda.get_device_name()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
