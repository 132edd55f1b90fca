"""Triton kernels of the pointwise functions of benchmarks/activations.yaml, by
fngen.kernels.

A golden file: python scripts/regen_kernel_goldens.py
"""

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

_BLOCK_SIZE = 1024
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _compute_dtype(tensor):
    """float64 stays float64; float32, float16 and bfloat16 compute in float32."""
    return tl.float64 if tensor.dtype == torch.float64 else tl.float32


def _can_launch(*tensors):
    """Whether the kernels take these tensors: contiguous, of one shape,
    dtype (a floating one) and device."""
    first = tensors[0]
    return first.dtype in _KERNEL_DTYPES and all(
        t.shape == first.shape
        and t.dtype == first.dtype
        and t.device == first.device
        and t.is_contiguous()
        for t in tensors
    )


def _check_launch(name, *tensors):
    if not _can_launch(*tensors):
        described = ", ".join(
            f"{tuple(t.shape)} {t.dtype} on {t.device}"
            + ("" if t.is_contiguous() else " (not contiguous)")
            for t in tensors
        )
        raise ValueError(
            f"{name} takes contiguous tensors of one shape, floating dtype and"
            f" device; got {described}"
        )


@triton.jit
def swish_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of swish: y = x*sigmoid(x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = x / (1 + libdevice.exp(-x))
    tl.store(y_ptr + offsets, y, mask=mask)


def swish_forward(x):
    """Forward of swish: y = x*sigmoid(x).

    Launches swish_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("swish_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        swish_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def swish_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of swish: y = x*sigmoid(x).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    t0 = 1 / (1 + libdevice.exp(-x))
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * (t0 + x * t0 * (1 - t0))
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def swish_backward(grad, x, needs_x=True):
    """Backward of swish: y = x*sigmoid(x).

    Launches swish_backward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's. Returns (grad_x,),
    None for a gradient not needed.
    """
    _check_launch("swish_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        swish_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def mish_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of mish: y = x*tanh(softplus(x)).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = x * libdevice.tanh(tl.where(x > 20.0, x, libdevice.log1p(libdevice.exp(x))))
    tl.store(y_ptr + offsets, y, mask=mask)


def mish_forward(x):
    """Forward of mish: y = x*tanh(softplus(x)).

    Launches mish_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("mish_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        mish_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def mish_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of mish: y = x*tanh(softplus(x)).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    t0 = libdevice.tanh(tl.where(x > 20.0, x, libdevice.log1p(libdevice.exp(x))))
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * (
            t0
            + x * tl.where(x > 20.0, 1.0, 1 / (1 + libdevice.exp(-x))) * (1 - t0 * t0)
        )
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def mish_backward(grad, x, needs_x=True):
    """Backward of mish: y = x*tanh(softplus(x)).

    Launches mish_backward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's. Returns (grad_x,),
    None for a gradient not needed.
    """
    _check_launch("mish_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        mish_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def gelu_tanh_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of gelu_tanh: y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = 0.5 * x * (libdevice.tanh(0.7978845608028654 * (0.044715 * x * x * x + x)) + 1)
    tl.store(y_ptr + offsets, y, mask=mask)


def gelu_tanh_forward(x):
    """Forward of gelu_tanh: y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))).

    Launches gelu_tanh_forward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("gelu_tanh_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        gelu_tanh_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def gelu_tanh_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of gelu_tanh: y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    t0 = libdevice.tanh(0.7978845608028654 * (0.044715 * x * x * x + x))
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * (
            0.5 * t0
            + 0.3989422804014327 * x * (0.134145 * x * x + 1) * (1 - t0 * t0)
            + 0.5
        )
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def gelu_tanh_backward(grad, x, needs_x=True):
    """Backward of gelu_tanh: y = 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))).

    Launches gelu_tanh_backward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_x,), None for a gradient not needed.
    """
    _check_launch("gelu_tanh_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        gelu_tanh_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def softplus_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of softplus: y = softplus(x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.where(x > 20.0, x, libdevice.log1p(libdevice.exp(x)))
    tl.store(y_ptr + offsets, y, mask=mask)


def softplus_forward(x):
    """Forward of softplus: y = softplus(x).

    Launches softplus_forward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("softplus_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        softplus_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def softplus_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of softplus: y = softplus(x).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * tl.where(x > 20.0, 1.0, 1 / (1 + libdevice.exp(-x)))
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def softplus_backward(grad, x, needs_x=True):
    """Backward of softplus: y = softplus(x).

    Launches softplus_backward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_x,), None for a gradient not needed.
    """
    _check_launch("softplus_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        softplus_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def elu_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of elu: y = where(x > 0, x, exp(x) - 1).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.where(x > 0, x, libdevice.expm1(x))
    tl.store(y_ptr + offsets, y, mask=mask)


def elu_forward(x):
    """Forward of elu: y = where(x > 0, x, exp(x) - 1).

    Launches elu_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("elu_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        elu_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def elu_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of elu: y = where(x > 0, x, exp(x) - 1).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * tl.where(x > 0, 1.0, libdevice.exp(x))
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def elu_backward(grad, x, needs_x=True):
    """Backward of elu: y = where(x > 0, x, exp(x) - 1).

    Launches elu_backward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's. Returns (grad_x,),
    None for a gradient not needed.
    """
    _check_launch("elu_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        elu_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def legendre3_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of legendre3: y = 0.5*(5*x**3 - 3*x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = 2.5 * x * x * x - 1.5 * x
    tl.store(y_ptr + offsets, y, mask=mask)


def legendre3_forward(x):
    """Forward of legendre3: y = 0.5*(5*x**3 - 3*x).

    Launches legendre3_forward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("legendre3_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        legendre3_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def legendre3_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of legendre3: y = 0.5*(5*x**3 - 3*x).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * (7.5 * x * x - 1.5)
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def legendre3_backward(grad, x, needs_x=True):
    """Backward of legendre3: y = 0.5*(5*x**3 - 3*x).

    Launches legendre3_backward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_x,), None for a gradient not needed.
    """
    _check_launch("legendre3_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        legendre3_backward_kernel[grid](
            grad,
            x,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def sqrt_and_inverse_forward_kernel(
    x_ptr,
    y_ptr,
    z_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of sqrt_and_inverse: z = sqrt(x) + 1/x + 2*y**2.

    Reads x and y and writes z, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    z = tl.sqrt(x) + 2 * y * y + 1 / x
    tl.store(z_ptr + offsets, z, mask=mask)


def sqrt_and_inverse_forward(x, y):
    """Forward of sqrt_and_inverse: z = sqrt(x) + 1/x + 2*y**2.

    Launches sqrt_and_inverse_forward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("sqrt_and_inverse_forward", x, y)
    z = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        sqrt_and_inverse_forward_kernel[grid](
            x, y, z, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return z


@triton.jit
def sqrt_and_inverse_backward_kernel(
    grad_ptr,
    x_ptr,
    y_ptr,
    grad_x_ptr,
    grad_y_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
    NEEDS_Y: tl.constexpr,
):
    """Backward of sqrt_and_inverse: z = sqrt(x) + 1/x + 2*y**2.

    Reads grad, x and y and writes grad_x (if NEEDS_X) and grad_y (if NEEDS_Y),
    BLOCK_SIZE elements a program, computed in COMPUTE_DTYPE and stored in the
    tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if NEEDS_X:
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * (-1 / (x * x) + 0.5 / tl.sqrt(x))
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)
    if NEEDS_Y:
        y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_y = 4 * grad * y
        tl.store(grad_y_ptr + offsets, grad_y, mask=mask)


def sqrt_and_inverse_backward(grad, x, y, needs_x=True, needs_y=True):
    """Backward of sqrt_and_inverse: z = sqrt(x) + 1/x + 2*y**2.

    Launches sqrt_and_inverse_backward_kernel on contiguous tensors of one
    shape, dtype and device (`_can_launch`); broadcasting is the torch path's.
    Returns (grad_x, grad_y), None for a gradient not needed.
    """
    _check_launch("sqrt_and_inverse_backward", grad, x, y)
    grad_x = torch.empty_like(grad) if needs_x else None
    grad_y = torch.empty_like(grad) if needs_y else None
    n_elements = grad.numel()
    if n_elements > 0 and (needs_x or needs_y):
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        sqrt_and_inverse_backward_kernel[grid](
            grad,
            x,
            y,
            grad_x,
            grad_y,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
            NEEDS_Y=needs_y,
        )
    return grad_x, grad_y


@triton.jit
def polynomial2_forward_kernel(
    x_ptr,
    y_ptr,
    z_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of polynomial2: z = x**3 + 3*x**2*y - 2*x*y**2 + y**3 - x*y.

    Reads x and y and writes z, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    z = x * (x * (x + 3 * y) + y * (-2 * y - 1)) + y * y * y
    tl.store(z_ptr + offsets, z, mask=mask)


def polynomial2_forward(x, y):
    """Forward of polynomial2: z = x**3 + 3*x**2*y - 2*x*y**2 + y**3 - x*y.

    Launches polynomial2_forward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("polynomial2_forward", x, y)
    z = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        polynomial2_forward_kernel[grid](
            x, y, z, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return z


@triton.jit
def polynomial2_backward_kernel(
    grad_ptr,
    x_ptr,
    y_ptr,
    grad_x_ptr,
    grad_y_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
    NEEDS_Y: tl.constexpr,
):
    """Backward of polynomial2: z = x**3 + 3*x**2*y - 2*x*y**2 + y**3 - x*y.

    Reads grad, x and y and writes grad_x (if NEEDS_X) and grad_y (if NEEDS_Y),
    BLOCK_SIZE elements a program, computed in COMPUTE_DTYPE and stored in the
    tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if NEEDS_X:
        grad_x = grad * (x * (3 * x + 6 * y) + y * (-2 * y - 1))
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)
    if NEEDS_Y:
        grad_y = grad * (x * (3 * x - 4 * y - 1) + 3 * y * y)
        tl.store(grad_y_ptr + offsets, grad_y, mask=mask)


def polynomial2_backward(grad, x, y, needs_x=True, needs_y=True):
    """Backward of polynomial2: z = x**3 + 3*x**2*y - 2*x*y**2 + y**3 - x*y.

    Launches polynomial2_backward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_x, grad_y), None for a gradient not needed.
    """
    _check_launch("polynomial2_backward", grad, x, y)
    grad_x = torch.empty_like(grad) if needs_x else None
    grad_y = torch.empty_like(grad) if needs_y else None
    n_elements = grad.numel()
    if n_elements > 0 and (needs_x or needs_y):
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        polynomial2_backward_kernel[grid](
            grad,
            x,
            y,
            grad_x,
            grad_y,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
            NEEDS_Y=needs_y,
        )
    return grad_x, grad_y
