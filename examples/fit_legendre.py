"""Fit sin(x) with y = a + b * P3(c + d x), P3 the generated `legendre3`.

The training loop of PyTorch's custom autograd Function tutorial
("LegendrePolynomial3"), with the hand-written Function replaced by the one
fngen generated in ops.py from ops.yaml.  Run it with:

    python examples/fit_legendre.py
"""

import math
import sys
from pathlib import Path

import torch

# ops.py lives next to this file; import it from there wherever we are run.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ops import legendre3  # noqa: E402

STEPS = 2000
LEARNING_RATE = 5e-6


def main() -> None:
    dtype = torch.float32
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
    y = torch.sin(x)

    # The tutorial's initial values: far enough from the answer to see the
    # loss fall, close enough for plain gradient descent to converge.
    a = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, dtype=dtype, requires_grad=True)

    first_loss = None
    for step in range(STEPS):
        y_pred = a + b * legendre3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if first_loss is None:
            first_loss = loss.item()
        if step % 100 == 99:
            print(step, loss.item())

        loss.backward()
        with torch.no_grad():
            for weight in (a, b, c, d):
                weight -= LEARNING_RATE * weight.grad
                weight.grad = None

    final_loss = loss.item()
    print(f"Result: y = {a.item()} + {b.item()} * P3({c.item()} + {d.item()} x)")
    if not (math.isfinite(final_loss) and final_loss < 0.1 * first_loss):
        raise SystemExit(
            f"training failed: loss went from {first_loss:.4g} to {final_loss:.4g}"
        )
    print(f"loss fell from {first_loss:.4g} to {final_loss:.4g}")


if __name__ == "__main__":
    main()
