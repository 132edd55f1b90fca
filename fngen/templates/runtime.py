"""The runtime helpers of the generated modules.

A generated module carries, as its own source, the helpers its functions
call (`fngen.codegen.runtime_source` copies them from this file by name),
so that it needs fngen neither to import nor to run.  This file is a real
module so that the tests import and test the helpers themselves.
"""

import torch


def _silu_backward(grad, x):
    """grad * silu'(x), by PyTorch's fused kernel; by composed ops when this
    backward is itself differentiated, as the kernel has no derivative."""
    if torch.is_grad_enabled():
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))
    return torch.ops.aten.silu_backward(grad, x)


def _mish(x):
    """mish(x) = x*tanh(softplus(x)), by PyTorch's fused kernel; in float32
    or float64 on a CPU, where that kernel takes three times as long, from
    one sigmoid: tanh(softplus(x)) = w/(2 - w), w = s*(2 - s), s = sigmoid(x).
    A tensor subclass (the fake tensors of a traced custom op) takes the
    kernel too: a traced graph has no in-place ops."""
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or type(x) is not torch.Tensor
    ):
        return torch.nn.functional.mish(x)
    s = torch.sigmoid(x)
    w = (2 - s).mul_(s)
    return w.div_(2 - w).mul_(x)


def _mish_backward(grad, x):
    """grad * mish'(x), mish'(x) = t + x*sigmoid(x)*(1 - t**2) with
    t = tanh(softplus(x)): by PyTorch's fused kernel, or from one sigmoid
    as in _mish (a third faster on a CPU); by composed ops when this
    backward is itself differentiated, as the kernel has no derivative."""
    if torch.is_grad_enabled():
        t = torch.tanh(torch.nn.functional.softplus(x))
        return grad * (t + x * torch.sigmoid(x) * (1 - t * t))
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or type(x) is not torch.Tensor
    ):
        return torch.ops.aten.mish_backward(grad, x)  # a subclass: see _mish
    s = torch.sigmoid(x)
    w = (2 - s).mul_(s)
    t = w.div_(2 - w)
    # In place only on temporaries of x alone (a fresh buffer costs more
    # than the arithmetic here), which vmap batches exactly as it batches
    # x; grad may be batched where x is not (is_grads_batched, jacfwd) or
    # have a larger shape, so it takes part only out of place.  add_ and
    # mul_, not addcmul_, which has no batching rule.
    return grad * t.add_(torch.ops.aten.tanh_backward(s, t).mul_(x))


def _matmul_grad_a(grad, b, shape):
    """The gradient of a @ b for a, of `shape`, with torch.matmul's rules
    for a vector operand; `grad` may be broadcast beyond the product, in
    dimensions in front or in one of size 1 (``d - a @ b``)."""
    if b.dim() == 1:
        grad_a = grad.unsqueeze(-1) * b
    else:
        # The product's last dimension is b's: summed first to fit b.mT.
        grad = grad.sum_to_size((*grad.shape[:-1], b.shape[-1]))
        if len(shape) == 1:
            grad_a = (b @ grad.unsqueeze(-1)).squeeze(-1)
        else:
            grad_a = grad @ b.mT
    return grad_a.sum_to_size(shape)


def _matmul_grad_b(a, grad, shape):
    """The gradient of a @ b for b, of `shape`; see _matmul_grad_a."""
    if a.dim() == 1:
        if len(shape) == 1:
            grad_b = grad.unsqueeze(-1) * a
        else:
            grad_b = a.unsqueeze(-1) * grad.unsqueeze(-2)
    elif len(shape) == 1:
        # The product's last dimension is a's rows: summed first.
        grad = grad.sum_to_size((*grad.shape[:-1], a.shape[-2]))
        grad_b = (a.mT @ grad.unsqueeze(-1)).squeeze(-1)
    else:
        grad = grad.sum_to_size((*grad.shape[:-2], a.shape[-2], grad.shape[-1]))
        grad_b = a.mT @ grad
    return grad_b.sum_to_size(shape)


def _autocasting(device_type: str) -> bool:
    """Whether torch.autocast is on for `device_type` (a device type
    without autocast, ``meta``, has it off)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(
        device_type
    )


def _autocast_cast(tensor, device_type, dtype):
    """`tensor` cast to `dtype` where torch.autocast would cast it (as
    torch.amp.custom_fwd does): floating point but not float64, on the
    autocast device; float64, integer and bool tensors and None as they are."""
    if (
        tensor is not None
        and tensor.is_floating_point()
        and tensor.dtype is not torch.float64
        and tensor.device.type == device_type
    ):
        return tensor.to(dtype)
    return tensor


def _without_jvp(function, name):
    """`function` without its jvp, for torch.compile: Dynamo cannot trace a
    custom jvp, so compiled, forward-mode AD differentiates the forward
    (the same derivatives); the backward is the class's own."""
    doc = f"{function.__name__} without its jvp, for torch.compile."
    namespace = dict(jvp=torch.autograd.Function.jvp, __doc__=doc)
    namespace.update(__module__=function.__module__, __qualname__=name)
    return type(name, (function,), namespace)


def _accumulated(grad, more):
    """`grad` + `more`, where `grad` may be None (no part of the backward
    has given that input a gradient yet)."""
    return more if grad is None else grad + more


def _has_tangent(*tensors):
    """Whether forward-mode AD runs on one of `tensors`.  Under torch.compile
    Dynamo differentiates a Function's forward instead of calling its jvp,
    which for a grad: override is another derivative."""
    for tensor in tensors:
        if tensor is not None:
            if torch.autograd.forward_ad.unpack_dual(tensor).tangent is not None:
                return True
    return False


def _custom_op(qualname, schema, function, pointwise):
    """`function`, an autograd.Function in the setup_context style, as the
    torch.library custom op `qualname`, which torch.export and
    torch.jit.trace keep with its gradient: the forward is its kernel, and
    on fake tensors its fake kernel (the formula decides the shapes); its
    own setup_context and backward are the op's autograd."""

    def forward(*args):
        if _has_tangent(*[a for a in args if torch.is_tensor(a)]):
            # Not a silent zero tangent (torch.func.jvp still gives one).
            raise NotImplementedError(
                f"{qualname}: torch.library custom ops have no forward-mode AD; "
                "call the generated function, not the exported op"
            )
        return _unaliased(function.forward(*args), args)

    op = torch.library.custom_op(qualname, forward, mutates_args=(), schema=schema)
    op.register_fake(forward)
    op.register_autograd(function.backward, setup_context=function.setup_context)
    rule = _pointwise_vmap if pointwise else _looped_vmap
    op.register_vmap(lambda info, in_dims, *args: rule(op, info, in_dims, args))
    return op


def _unaliased(outputs, inputs):
    """`outputs` with a copy of each that is an input or a view of one
    (``y = x.T``): a custom op may not return an alias of its inputs."""
    bases = {
        id(a if a._base is None else a._base) for a in inputs if torch.is_tensor(a)
    }

    def fresh(output):
        base = output if output._base is None else output._base
        return output.clone() if id(base) in bases else output

    if torch.is_tensor(outputs):
        return fresh(outputs)
    return tuple(fresh(output) for output in outputs)


def _pointwise_vmap(op, info, in_dims, args):
    """vmap of a pointwise op: one call, with the batch dimension first in
    each batched tensor and padded to as many dimensions as the widest,
    so that the tensors broadcast as they would unbatched."""
    rank = max(
        a.dim() - (d is not None) for a, d in zip(args, in_dims) if torch.is_tensor(a)
    )
    moved = []
    for a, d in zip(args, in_dims):
        if d is not None:
            a = a.movedim(d, 0)
            a = a.reshape(a.shape[:1] + (1,) * (rank + 1 - a.dim()) + a.shape[1:])
        moved.append(a)
    outputs = op(*moved)
    return outputs, 0 if torch.is_tensor(outputs) else (0,) * len(outputs)


def _looped_vmap(op, info, in_dims, args):
    """vmap of an op with reductions or matrix products: one call per
    element of the batch, stacked."""
    results = [
        op(*[a if d is None else a.select(d, i) for a, d in zip(args, in_dims)])
        for i in range(info.batch_size)
    ]
    if torch.is_tensor(results[0]):
        return torch.stack(results), 0
    stacked = tuple(torch.stack(outputs) for outputs in zip(*results))
    return stacked, (0,) * len(stacked)
