"""Triton kernels of the pointwise functions of examples/ops.yaml, by
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
def exp_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of exp: y = exp(x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = libdevice.exp(x)
    tl.store(y_ptr + offsets, y, mask=mask)


def exp_forward(x):
    """Forward of exp: y = exp(x).

    Launches exp_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("exp_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        exp_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def exp_backward_kernel(
    grad_ptr,
    y_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of exp: y = exp(x).

    Reads grad and y and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        y = tl.load(y_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * y
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def exp_backward(grad, y, needs_x=True):
    """Backward of exp: y = exp(x).

    Launches exp_backward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's. Returns (grad_x,),
    None for a gradient not needed.
    """
    _check_launch("exp_backward", grad, y)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        exp_backward_kernel[grid](
            grad,
            y,
            grad_x,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
        )
    return (grad_x,)


@triton.jit
def my_relu_forward_kernel(
    x_ptr, y_ptr, n_elements, BLOCK_SIZE: tl.constexpr, COMPUTE_DTYPE: tl.constexpr
):
    """Forward of my_relu: y = relu(x).

    Reads x and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.where(x < 0, 0.0, x)
    tl.store(y_ptr + offsets, y, mask=mask)


def my_relu_forward(x):
    """Forward of my_relu: y = relu(x).

    Launches my_relu_forward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("my_relu_forward", x)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        my_relu_forward_kernel[grid](
            x, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def my_relu_backward_kernel(
    grad_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
):
    """Backward of my_relu: y = relu(x).

    Reads grad and x and writes grad_x (if NEEDS_X), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    if NEEDS_X:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = tl.where(x > 0, grad, 0.0)
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)


def my_relu_backward(grad, x, needs_x=True):
    """Backward of my_relu: y = relu(x).

    Launches my_relu_backward_kernel on contiguous tensors of one shape, dtype
    and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_x,), None for a gradient not needed.
    """
    _check_launch("my_relu_backward", grad, x)
    grad_x = torch.empty_like(grad) if needs_x else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_x:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        my_relu_backward_kernel[grid](
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
def multiply_add_forward_kernel(
    w_ptr,
    x_ptr,
    b_ptr,
    y_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of multiply_add: y = w*x + b.

    Reads w, x and b and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    w = tl.load(w_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    b = tl.load(b_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = b + w * x
    tl.store(y_ptr + offsets, y, mask=mask)


def multiply_add_forward(w, x, b):
    """Forward of multiply_add: y = w*x + b.

    Launches multiply_add_forward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("multiply_add_forward", w, x, b)
    y = torch.empty_like(w)
    n_elements = w.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        multiply_add_forward_kernel[grid](
            w,
            x,
            b,
            y,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(w),
        )
    return y


@triton.jit
def multiply_add_backward_kernel(
    grad_ptr,
    w_ptr,
    x_ptr,
    grad_w_ptr,
    grad_x_ptr,
    grad_b_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_W: tl.constexpr,
    NEEDS_X: tl.constexpr,
    NEEDS_B: tl.constexpr,
):
    """Backward of multiply_add: y = w*x + b.

    Reads grad, w and x and writes grad_w (if NEEDS_W), grad_x (if NEEDS_X) and
    grad_b (if NEEDS_B), BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if NEEDS_W:
        x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_w = grad * x
        tl.store(grad_w_ptr + offsets, grad_w, mask=mask)
    if NEEDS_X:
        w = tl.load(w_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * w
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)
    if NEEDS_B:
        grad_b = grad
        tl.store(grad_b_ptr + offsets, grad_b, mask=mask)


def multiply_add_backward(grad, w, x, needs_w=True, needs_x=True, needs_b=True):
    """Backward of multiply_add: y = w*x + b.

    Launches multiply_add_backward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_w, grad_x, grad_b), None for a gradient not needed.
    """
    _check_launch("multiply_add_backward", grad, w, x)
    grad_w = torch.empty_like(grad) if needs_w else None
    grad_x = torch.empty_like(grad) if needs_x else None
    grad_b = torch.empty_like(grad) if needs_b else None
    n_elements = grad.numel()
    if n_elements > 0 and (needs_w or needs_x or needs_b):
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        multiply_add_backward_kernel[grid](
            grad,
            w,
            x,
            grad_w,
            grad_x,
            grad_b,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_W=needs_w,
            NEEDS_X=needs_x,
            NEEDS_B=needs_b,
        )
    return grad_w, grad_x, grad_b


@triton.jit
def mul_constant_forward_kernel(
    tensor_ptr,
    out_ptr,
    constant: tl.float64,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of mul_constant: out = tensor * constant.

    Reads tensor and writes out, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    constant = tl.full((), constant, COMPUTE_DTYPE)
    tensor = tl.load(tensor_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    out = constant * tensor
    tl.store(out_ptr + offsets, out, mask=mask)


def mul_constant_forward(tensor, constant):
    """Forward of mul_constant: out = tensor * constant.

    Launches mul_constant_forward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("mul_constant_forward", tensor)
    out = torch.empty_like(tensor)
    n_elements = tensor.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        mul_constant_forward_kernel[grid](
            tensor,
            out,
            float(constant),
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(tensor),
        )
    return out


@triton.jit
def mul_constant_backward_kernel(
    grad_ptr,
    grad_tensor_ptr,
    constant: tl.float64,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_TENSOR: tl.constexpr,
):
    """Backward of mul_constant: out = tensor * constant.

    Reads grad and writes grad_tensor (if NEEDS_TENSOR), BLOCK_SIZE elements a
    program, computed in COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    constant = tl.full((), constant, COMPUTE_DTYPE)
    if NEEDS_TENSOR:
        grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_tensor = constant * grad
        tl.store(grad_tensor_ptr + offsets, grad_tensor, mask=mask)


def mul_constant_backward(grad, constant, needs_tensor=True):
    """Backward of mul_constant: out = tensor * constant.

    Launches mul_constant_backward_kernel on contiguous tensors of one shape,
    dtype and device (`_can_launch`); broadcasting is the torch path's. Returns
    (grad_tensor,), None for a gradient not needed.
    """
    _check_launch("mul_constant_backward", grad)
    grad_tensor = torch.empty_like(grad) if needs_tensor else None
    n_elements = grad.numel()
    if n_elements > 0 and needs_tensor:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        mul_constant_backward_kernel[grid](
            grad,
            grad_tensor,
            float(constant),
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_TENSOR=needs_tensor,
        )
    return (grad_tensor,)


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
def prelu_forward_kernel(
    x_ptr,
    a_ptr,
    y_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """Forward of prelu: y = where(x > 0, x, a*x).

    Reads x and a and writes y, BLOCK_SIZE elements a program, computed in
    COMPUTE_DTYPE and stored in the tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    a = tl.load(a_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    y = tl.where(x > 0, x, a * x)
    tl.store(y_ptr + offsets, y, mask=mask)


def prelu_forward(x, a):
    """Forward of prelu: y = where(x > 0, x, a*x).

    Launches prelu_forward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's.
    """
    _check_launch("prelu_forward", x, a)
    y = torch.empty_like(x)
    n_elements = x.numel()
    if n_elements > 0:
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        prelu_forward_kernel[grid](
            x, a, y, n_elements, BLOCK_SIZE=_BLOCK_SIZE, COMPUTE_DTYPE=_compute_dtype(x)
        )
    return y


@triton.jit
def prelu_backward_kernel(
    grad_ptr,
    x_ptr,
    a_ptr,
    grad_x_ptr,
    grad_a_ptr,
    n_elements,
    BLOCK_SIZE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    NEEDS_X: tl.constexpr,
    NEEDS_A: tl.constexpr,
):
    """Backward of prelu: y = where(x > 0, x, a*x).

    Reads grad, x and a and writes grad_x (if NEEDS_X) and grad_a (if NEEDS_A),
    BLOCK_SIZE elements a program, computed in COMPUTE_DTYPE and stored in the
    tensors' dtype.
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    t0 = x > 0
    grad = tl.load(grad_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    if NEEDS_X:
        a = tl.load(a_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
        grad_x = grad * tl.where(t0, 1.0, a)
        tl.store(grad_x_ptr + offsets, grad_x, mask=mask)
    if NEEDS_A:
        grad_a = tl.where(t0, 0.0, grad * x)
        tl.store(grad_a_ptr + offsets, grad_a, mask=mask)


def prelu_backward(grad, x, a, needs_x=True, needs_a=True):
    """Backward of prelu: y = where(x > 0, x, a*x).

    Launches prelu_backward_kernel on contiguous tensors of one shape, dtype and
    device (`_can_launch`); broadcasting is the torch path's. Returns (grad_x,
    grad_a), None for a gradient not needed.
    """
    _check_launch("prelu_backward", grad, x, a)
    grad_x = torch.empty_like(grad) if needs_x else None
    grad_a = torch.empty_like(grad) if needs_a else None
    n_elements = grad.numel()
    if n_elements > 0 and (needs_x or needs_a):
        grid = (triton.cdiv(n_elements, _BLOCK_SIZE),)
        prelu_backward_kernel[grid](
            grad,
            x,
            a,
            grad_x,
            grad_a,
            n_elements,
            BLOCK_SIZE=_BLOCK_SIZE,
            COMPUTE_DTYPE=_compute_dtype(grad),
            NEEDS_X=needs_x,
            NEEDS_A=needs_a,
        )
    return grad_x, grad_a
