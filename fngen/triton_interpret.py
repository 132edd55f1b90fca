"""`libdevice` for Triton's interpreter, so that generated kernels run on CPU.

Under ``TRITON_INTERPRET=1`` Triton runs a kernel's Python code on NumPy
arrays; ``tl.exp``, ``tl.log``, ``tl.where`` and the arithmetic work there,
but ``triton.language.extra.libdevice`` is a module of stubs that return
None (its functions exist only as calls into NVIDIA's and AMD's device
libraries, which the interpreter cannot make; Triton 3.x).  `libdevice`
here has the functions `fngen.triton_printer` calls, computed by NumPy, or
by torch where NumPy has none (erfc, erfinv, lgamma), on the interpreter's
arrays and in their dtype.

It stands in for the kernel module's ``libdevice`` only under the
interpreter (`fngen.kernels.load_kernel_module` puts it there); on a GPU
the kernels call the device library itself.  It reads the interpreter's
values through `triton.runtime.interpreter.TensorHandle`, an internal of
Triton's, hence a test of its own (tests/test_kernels.py).
"""

from __future__ import annotations

import types

import numpy as np


def _torch(name: str):
    def apply(*arrays):
        import torch

        function = getattr(torch.special, name, None) or getattr(torch, name)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        return function(*tensors).numpy()

    return apply


_FUNCTIONS = {
    "exp": np.exp,
    "exp2": np.exp2,
    "expm1": np.expm1,
    "log1p": np.log1p,
    "log2": np.log2,
    "log10": np.log10,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "erfc": _torch("erfc"),
    "erfinv": _torch("erfinv"),
    "lgamma": _torch("lgamma"),
    "rint": np.rint,
    "trunc": np.trunc,
    "atan2": np.arctan2,
    "hypot": np.hypot,
    "pow": np.power,
}


def _elementwise(name: str, function):
    def call(*args):
        import triton.language as tl
        from triton.runtime.interpreter import TensorHandle

        tensors = [a for a in args if isinstance(a, tl.tensor)]
        if not tensors:
            raise TypeError(f"libdevice.{name} needs a tensor argument")
        wide = any(t.dtype.scalar == tl.float64 for t in tensors)
        dtype, np_dtype = (tl.float64, np.float64) if wide else (tl.float32, np.float32)
        arrays = [
            np.asarray(a.handle.data if isinstance(a, tl.tensor) else a, np_dtype)
            for a in args
        ]
        with np.errstate(all="ignore"):  # an untaken branch may overflow
            data = np.asarray(function(*arrays)).astype(np_dtype, copy=False)
        blocks = [t for t in tensors if t.type.is_block()]
        if blocks:
            shape = max((b.shape for b in blocks), key=len)
            value_type = tl.block_type(dtype, [int(n) for n in shape])
        else:
            value_type = dtype
        return tl.tensor(TensorHandle(data, dtype), value_type)

    call.__name__ = name
    return call


libdevice = types.SimpleNamespace(
    **{name: _elementwise(name, f) for name, f in _FUNCTIONS.items()}
)
