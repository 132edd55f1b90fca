"""Regenerate the golden modules: every ``examples/NAME.py`` from its ``NAME.yaml``.

Run from anywhere::

    python scripts/regen_goldens.py          # rewrite what changed
    python scripts/regen_goldens.py --check  # write nothing; exit 1 if stale

The spec path handed to fngen is relative to the repository root
(``examples/ops.yaml``), because the generated header names it: the goldens
must not depend on where this script was started from.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def spec_files() -> list[Path]:
    """The example specs, relative to the repository root, in a stable order."""
    return sorted(p.relative_to(ROOT) for p in EXAMPLES.glob("*.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a golden is stale",
    )
    args = parser.parse_args(argv)

    import fngen

    os.chdir(ROOT)
    stale = []
    for spec in spec_files():
        golden = spec.with_suffix(".py")
        if args.check:
            current = golden.read_text(encoding="utf-8") if golden.exists() else None
            if current != fngen.generate(fngen.load_spec(str(spec))):
                stale.append(golden)
            continue
        changed = fngen.build(str(spec), str(golden))
        print(f"{'wrote' if changed else 'unchanged'} {golden}")
    for golden in stale:
        print(f"stale: {golden}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
