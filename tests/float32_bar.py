"""The float32 bar of issue 13: in float32 the forward and every gradient are
finite wherever the float64 value is finite and representable in float32."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

FLOAT32_MAX = torch.finfo(torch.float32).max
# Large magnitudes, where exp overflows float32 (from 88.7) and sigmoid
# saturates (1 - sigmoid(x) is 0 from x = 17).
LARGE = [-200.0, -100.0, -89.0, -50.0, -30.0, -17.0, -1.0, 0.0, 1.0]
LARGE += [-v for v in LARGE[:6]]


def representable(value: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(value) & (value.abs() <= FLOAT32_MAX)


def assert_finite_where_float64_is(what, got32, want64, inputs):
    """`got32` finite wherever `want64` is finite and representable; the
    message names the first input values where it is not."""
    got32, want64 = torch.broadcast_tensors(got32.detach(), want64.detach())
    bad = representable(want64) & ~torch.isfinite(got32)
    if bad.any():
        index = tuple(bad.nonzero()[0].tolist())
        at = ", ".join(
            f"{name} = {torch.broadcast_to(value, bad.shape)[index].item():g}"
            for name, value in inputs.items()
        )
        raise AssertionError(
            f"{what} is {got32[index].item()} in float32 at {at}, "
            f"where float64 gives {want64[index].item():g}"
        )


def grads_of(function, args, grad_output, batched=False):
    out = function(*args)
    tensors = [a for a in args if torch.is_tensor(a) and a.requires_grad]
    grads = torch.autograd.grad(
        out,
        tensors,
        grad_output,
        allow_unused=True,
        materialize_grads=True,
        is_grads_batched=batched,
    )
    return out, grads


def tangents_of(function, args):
    """The forward-mode tangent of the output along each tensor input alone."""
    result = []
    for n, arg in enumerate(args):
        if not (torch.is_tensor(arg) and arg.requires_grad):
            continue
        with fwAD.dual_level():
            duals = list(args)
            duals[n] = fwAD.make_dual(arg.detach(), torch.ones_like(arg))
            duals = [
                d.detach() if torch.is_tensor(d) and d is not duals[n] else d
                for d in duals
            ]
            result.append(fwAD.unpack_dual(function(*duals)).tangent)
    return result


def assert_float32_bar(function, reference, values: dict, scalars=()):
    """`function` in float32 against `reference` in float64 on the tensor
    inputs `values` (name -> float64 tensor, broadcastable), then the
    non-tensor arguments `scalars`: the forward, the gradient of each input
    (one and a batch of incoming gradients) and the forward-mode tangents."""
    args64 = [v.double().requires_grad_() for v in values.values()]
    args32 = [v.float().requires_grad_() for v in values.values()]
    out64 = reference(*args64, *scalars)
    ones64 = torch.ones_like(out64)
    _, grads64 = grads_of(lambda *a: reference(*a, *scalars), args64, ones64)
    out32, grads32 = grads_of(lambda *a: function(*a, *scalars), args32, ones64.float())
    assert_finite_where_float64_is("the forward", out32, out64, values)
    for name, g32, g64 in zip(values, grads32, grads64):
        assert_finite_where_float64_is(f"d/d{name}", g32, g64, values)
    batch = torch.stack([ones64.float(), 2 * ones64.float()])
    _, batched = grads_of(
        lambda *a: function(*a, *scalars), args32, batch, batched=True
    )
    for name, g32, g64 in zip(values, batched, grads64):
        assert_finite_where_float64_is(f"batched d/d{name}", g32[1], g64, values)
    tangents64 = tangents_of(lambda *a: reference(*a, *scalars), args64)
    tangents32 = tangents_of(lambda *a: function(*a, *scalars), args32)
    for name, t32, t64 in zip(values, tangents32, tangents64):
        assert_finite_where_float64_is(f"the tangent along {name}", t32, t64, values)
    return out32, grads32
