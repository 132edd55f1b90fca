"""Tensor-level operations as opaque SymPy functions.

SymPy differentiates the pointwise regions of a formula.  The operations here
are *not* pointwise (reductions, matrix products, broadcasting bookkeeping):
`derive.py` differentiates them by their vector-Jacobian rules, the way
PyTorch's ``derivatives.yaml`` does, and the printer writes them as torch
calls.  SymPy must never differentiate them, so `fdiff` refuses.
"""

from __future__ import annotations

import sympy as sp


class TensorOp(sp.Function):
    """Base class: a tensor-level operation that SymPy treats as opaque."""

    # Elementwise products with other factors commute; the op's own
    # arguments keep their order (a @ b is one node, never reordered).
    is_commutative = True

    def fdiff(self, argindex=1):
        raise TypeError(
            f"{type(self).__name__} is differentiated by its VJP rule, not by SymPy"
        )


class TensorSum(TensorOp):
    """``e.sum(dim, keepdim)``; args: (e, dims, keepdim), an empty dims Tuple is all."""

    nargs = 3


class TensorMean(TensorOp):
    """``e.mean(dim, keepdim)``; args as TensorSum."""

    nargs = 3


class TensorLogSumExp(TensorOp):
    """``torch.logsumexp(e, dim, keepdim)``: what ``log(sum(exp(e), dim))``
    is rewritten to, so that it cannot overflow."""

    nargs = 3


class TensorAmax(TensorOp):
    """``e.amax(dim, keepdim)``: its gradient is split evenly among the
    elements that tie for the maximum, as PyTorch's."""

    nargs = 3


class TensorAmin(TensorOp):
    """``e.amin(dim, keepdim)``, the gradient split as TensorAmax's."""

    nargs = 3


# The reductions: results smaller than their argument, (e, dims, keepdim).
REDUCTIONS = (TensorSum, TensorMean, TensorLogSumExp, TensorAmax, TensorAmin)
EXTREMA = (TensorAmax, TensorAmin)


class TensorSoftmax(TensorOp):
    """``torch.softmax(e, dim)``, PyTorch's fused kernel; args (e, dims),
    dims a Tuple of one dim.  The result has e's shape."""

    nargs = 2


class TensorLogSoftmax(TensorOp):
    """``torch.log_softmax(e, dim)``; args as TensorSoftmax."""

    nargs = 2


# Normalizations along one dim: results of their argument's shape.
NORMALIZATIONS = (TensorSoftmax, TensorLogSoftmax)


class TensorGather(TensorOp):
    """``torch.gather(e, dim, index)``: args (e, dim, index), `dim` an
    Integer and `index` a long input of e's number of dimensions; the
    result has the shape of `index`."""

    nargs = 3


class ScatterAdd(TensorOp):
    """The gradient of a gather: ``grad.new_zeros(shape).scatter_add(dim,
    index, grad)``; args (grad, dim, index, shape)."""

    nargs = 4


class TensorOneHot(TensorOp):
    """``one_hot(index, n)``: 1 where the position along a new last
    dimension of size n equals `index`, as ``torch.nn.functional.one_hot``,
    in the formula's dtype; an index outside 0 .. n - 1 (an ignore_index)
    gives a row of zeros.  Args (index, n), `n` an Integer or an int input.
    Constant in every differentiable input."""

    nargs = 2


class TensorMatmul(TensorOp):
    """``a @ b`` (batched like ``torch.matmul``)."""

    # Binds like Python's '@' next to '*': parenthesised inside a product.
    precedence = 45

    nargs = 2


class TensorMT(TensorOp):
    """``e.mT``: swap the last two dimensions."""

    nargs = 1


class MatmulGradA(TensorOp):
    """The gradient of ``a @ b`` with respect to ``a``, summed to a's shape,
    whatever the numbers of dimensions (a vector operand included); args
    (grad, b, a's shape).  Where both operands are surely matrices the
    gradient is ``grad @ b.mT`` instead."""

    nargs = 3


class MatmulGradB(TensorOp):
    """The gradient of ``a @ b`` with respect to ``b``, args (a, grad, b's
    shape); ``a.mT @ grad`` for matrices.  See MatmulGradA."""

    nargs = 3


class ShapeOf(TensorOp):
    """The broadcast shape of its tensor arguments (``x.shape`` for one)."""


class KeptShape(TensorOp):
    """The shape of a ``keepdim=True`` reduction over ``dims`` (a Tuple, all
    negative or all non-negative) of a tensor of shape ``shape``: the shape
    of a reduction's result without the result itself."""

    nargs = 2


class SumToSize(TensorOp):
    """``e.sum_to_size(shape)``: sum a gradient back to an input's shape."""

    nargs = 2


class Unsqueeze(TensorOp):
    """Re-insert the reduced dimensions ``dims`` (a Tuple) of a reduction."""

    nargs = 2


class Expand(TensorOp):
    """``e.expand(shape)``."""

    nargs = 2


class Numel(TensorOp):
    """The number of elements of ``shape`` over ``dims`` (all when empty)."""

    nargs = 2


# Tensor ops whose value is a number (a shape, a count), not a tensor.
SCALAR_OPS = (Numel, ShapeOf, KeptShape)
