"""Regenerate the golden kernel modules: ``tests/goldens/NAME_kernels.py``,
the Triton kernels `fngen.kernels` makes for the pointwise functions of a
spec (until the generated modules carry them themselves).

    python scripts/regen_kernel_goldens.py          # rewrite what changed
    python scripts/regen_kernel_goldens.py --check  # write nothing; exit 1 if stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDENS = {
    "examples/ops.yaml": "tests/goldens/ops_kernels.py",
    "benchmarks/activations.yaml": "tests/goldens/activations_kernels.py",
}


def kernel_module(spec_path: str) -> str:
    from fngen import kernels
    from fngen.spec import load_spec

    spec = load_spec(ROOT / spec_path)
    found = []
    for fn in spec.functions:
        try:
            found += [k for k in kernels.function_kernels(fn) if k is not None]
        except kernels.NotPointwise:
            pass
    doc = (
        f"Triton kernels of the pointwise functions of {spec_path}, by"
        " fngen.kernels.\n\nA golden file: python scripts/regen_kernel_goldens.py"
    )
    return kernels.module_source(found, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing")
    args = parser.parse_args(argv)
    stale = []
    for spec, golden in GOLDENS.items():
        path = ROOT / golden
        text = kernel_module(spec)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            print(f"unchanged {golden}")
        elif args.check:
            stale.append(golden)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {golden}")
    for golden in stale:
        print(f"stale: {golden}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
