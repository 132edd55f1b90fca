"""An independent torch interpreter of parsed formulas.

`fngen check` compares the generated Function against plain torch autograd on
the same formula.  The reference must not share the printer with the code
under test, so it walks the SymPy graph itself and calls torch directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p, log2, log10

from fngen import functions as F
from fngen import tensorops as T
from fngen.model import FunctionSpec

_UNARY = {
    sp.exp: torch.exp,
    expm1: torch.expm1,
    sp.log: torch.log,
    log1p: torch.log1p,
    log2: torch.log2,
    log10: torch.log10,
    sp.sin: torch.sin,
    sp.cos: torch.cos,
    sp.tan: torch.tan,
    sp.asin: torch.asin,
    sp.acos: torch.acos,
    sp.atan: torch.atan,
    sp.sinh: torch.sinh,
    sp.cosh: torch.cosh,
    sp.tanh: torch.tanh,
    F.Tanh: torch.tanh,
    sp.asinh: torch.asinh,
    sp.acosh: torch.acosh,
    sp.atanh: torch.atanh,
    sp.erf: torch.erf,
    sp.erfc: torch.erfc,
    sp.erfinv: torch.erfinv,
    F.LogGamma: torch.lgamma,
    sp.loggamma: torch.lgamma,
    F.Abs: torch.abs,
    F.Sign: torch.sign,
    F.Floor: torch.floor,
    F.Ceil: torch.ceil,
    F.Round: torch.round,
    F.Relu: torch.relu,
    F.Sigmoid: torch.sigmoid,
    F.Softplus: nnf.softplus,
    F.LogSigmoid: nnf.logsigmoid,
}
_BINARY = {
    sp.atan2: torch.atan2,
    F.Hypot: torch.hypot,
    F.Maximum: torch.maximum,
    F.Minimum: torch.minimum,
}
_RELATIONS = {
    sp.StrictLessThan: torch.lt,
    sp.LessThan: torch.le,
    sp.StrictGreaterThan: torch.gt,
    sp.GreaterThan: torch.ge,
    sp.Equality: torch.eq,
    sp.Unequality: torch.ne,
}


class Interpreter:
    def __init__(self, env: dict, like: torch.Tensor):
        self.env = env
        self.like = like

    def number(self, value) -> torch.Tensor:
        return torch.tensor(
            float(value), dtype=self.like.dtype, device=self.like.device
        )

    def __call__(self, expr):
        if isinstance(expr, sp.Symbol):
            value = self.env[expr]
            return value if torch.is_tensor(value) else self.number(value)
        if isinstance(expr, sp.logic.boolalg.BooleanAtom):
            # SymPy decided the condition: where(x < 2, x, 2) > pi is False.
            return torch.tensor(bool(expr), device=self.like.device)
        if expr.is_number and not expr.is_Relational:
            # fngen's own evaluation: sp.N leaves softplus(2) unevaluated.
            value = F.constant_value(expr)
            if value is None:
                raise ValueError(f"the constant {expr} has no finite real value")
            return self.number(value)
        if isinstance(expr, sp.Add):
            result = self(expr.args[0])
            for arg in expr.args[1:]:
                result = result + self(arg)
            return result
        if isinstance(expr, sp.Mul):
            result = self(expr.args[0])
            for arg in expr.args[1:]:
                result = result * self(arg)
            return result
        if isinstance(expr, sp.Pow):
            base, exponent = expr.args
            if exponent.is_Integer:
                return torch.pow(self(base), int(exponent))
            return torch.pow(self(base), self(exponent))
        cls = type(expr)
        if cls in _UNARY:
            return _UNARY[cls](self(expr.args[0]))
        if cls in _BINARY:
            return _BINARY[cls](self(expr.args[0]), self(expr.args[1]))
        if cls is sp.polygamma:
            return torch.polygamma(int(expr.args[0]), self(expr.args[1]))
        if cls is F.HeavisideStep:
            arg = self(expr.args[0])
            return (arg > 0).to(arg.dtype)
        if cls is F.Clamp:
            x, lo, hi = (self(a) for a in expr.args)
            return torch.clamp(x, lo, hi)
        if isinstance(expr, sp.Piecewise):
            result = self(expr.args[-1][0])
            for value, condition in reversed(expr.args[:-1]):
                result = torch.where(self(condition), self(value), result)
            return result
        if isinstance(expr, sp.logic.boolalg.ITE):
            condition, a, b = (self(arg) for arg in expr.args)
            return torch.where(condition, a, b)
        if isinstance(expr, sp.Not):
            return ~self(expr.args[0])
        if cls in _RELATIONS:
            return _RELATIONS[cls](self(expr.lhs), self(expr.rhs))
        if isinstance(expr, sp.And):
            result = self(expr.args[0])
            for arg in expr.args[1:]:
                result = result & self(arg)
            return result
        if isinstance(expr, sp.Or):
            result = self(expr.args[0])
            for arg in expr.args[1:]:
                result = result | self(arg)
            return result
        if isinstance(expr, (T.TensorSum, T.TensorMean)):
            arg, dims, keepdim = expr.args
            reduce = torch.sum if isinstance(expr, T.TensorSum) else torch.mean
            value = self(arg)
            if len(dims):
                return reduce(
                    value, dim=tuple(int(d) for d in dims), keepdim=bool(keepdim)
                )
            return (
                reduce(value, dim=tuple(range(value.dim())), keepdim=True)
                if keepdim
                else reduce(value)
            )
        if isinstance(expr, T.EXTREMA):
            arg, dims, keepdim = expr.args
            reduce = torch.amax if isinstance(expr, T.TensorAmax) else torch.amin
            return reduce(
                self(arg), dim=tuple(int(d) for d in dims), keepdim=bool(keepdim)
            )
        if isinstance(expr, T.TensorLogSumExp):
            arg, dims, keepdim = expr.args
            return torch.logsumexp(
                self(arg), dim=tuple(int(d) for d in dims), keepdim=bool(keepdim)
            )
        if isinstance(expr, T.NORMALIZATIONS):
            # The definition, not PyTorch's kernel: the reference shares
            # nothing with the generated code.
            arg, dims = expr.args
            value = self(arg)
            dim = int(dims[0])
            shifted = value - value.amax(dim=dim, keepdim=True).detach()
            logs = shifted - shifted.exp().sum(dim=dim, keepdim=True).log()
            return logs.exp() if isinstance(expr, T.TensorSoftmax) else logs
        if isinstance(expr, T.TensorGather):
            arg, dim, index = expr.args
            return torch.gather(self(arg), int(dim), self(index))
        if isinstance(expr, T.TensorOneHot):
            index, count = expr.args
            index = self(index)
            columns = [index == k for k in range(int(self(count)))]
            return torch.stack(columns, dim=-1).to(self.like.dtype)
        if isinstance(expr, T.TensorMatmul):
            return torch.matmul(self(expr.args[0]), self(expr.args[1]))
        if isinstance(expr, T.TensorMT):
            return self(expr.args[0]).mT
        raise TypeError(f"the reference interpreter has no rule for {cls.__name__}")


def reference_forward(fn: FunctionSpec, *args):
    """The formula of `fn` evaluated with plain torch ops (autograd applies)."""
    # An absent optional tensor (None) counts as zero.
    env = {
        fn.symbol(spec.name): 0 if value is None else value
        for spec, value in zip(fn.inputs, args)
    }
    like = next(a for a in args if torch.is_tensor(a) and a.is_floating_point())
    interpret = Interpreter(env, like)
    for op in fn.formula.ops:
        env[op.result] = interpret(op.expr)
    outputs = tuple(interpret(expr) for _, expr in fn.formula.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
