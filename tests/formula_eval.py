"""The formula as written, evaluated by torch: a reference for differential
tests that shares nothing with fngen (not its parser, its stable rewrites
or its interpreter), so that a wrong rewrite cannot agree with itself.

Walks Python's `ast` of the test's own formula text (never `eval`) with a
table of torch functions; comparisons are bool tensors, used as numbers
where arithmetic meets them.
"""

from __future__ import annotations

import ast
import math

import torch
import torch.nn.functional as nnf


def _tensor(value, like):
    if torch.is_tensor(value):
        return value.to(like.dtype) if value.dtype == torch.bool else value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _heaviside(u, like, value=0.0):
    """torch.heaviside(u, value), with autograd's gradient for a tensor
    `value` (torch.heaviside has none)."""
    u, value = _tensor(u, like), _tensor(value, like)
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(u > 0, zero + 1, torch.where(u == 0, value, zero))


FUNCTIONS = {
    "abs": torch.abs,
    "sign": torch.sign,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "exp": torch.exp,
    "expm1": torch.expm1,
    "log": torch.log,
    "log2": torch.log2,
    "log10": torch.log10,
    "log1p": torch.log1p,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "atan2": torch.atan2,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "tanh": torch.tanh,
    "asinh": torch.asinh,
    "acosh": torch.acosh,
    "atanh": torch.atanh,
    "sigmoid": torch.sigmoid,
    "logsigmoid": nnf.logsigmoid,
    "softplus": nnf.softplus,
    "relu": torch.relu,
    "silu": nnf.silu,
    "mish": nnf.mish,
    "gelu": nnf.gelu,
    "gelu_tanh": lambda u: nnf.gelu(u, approximate="tanh"),
    "erf": torch.erf,
    "erfc": torch.erfc,
    "erfinv": torch.erfinv,
    "lgamma": torch.lgamma,
    "digamma": torch.digamma,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "round": torch.round,
    "pow": torch.pow,
    "hypot": torch.hypot,
    "min": torch.minimum,
    "max": torch.maximum,
    "clamp": torch.clamp,
}
_COMPARE = {
    ast.Lt: torch.lt,
    ast.LtE: torch.le,
    ast.Gt: torch.gt,
    ast.GtE: torch.ge,
    ast.Eq: torch.eq,
    ast.NotEq: torch.ne,
}


def evaluate(text: str, inputs: dict, output: str | None = None):
    """The value of `output` (the last statement by default) of the formula
    `text`, statements separated by newlines, with `inputs` (name ->
    tensor or number)."""
    like = next(v for v in inputs.values() if torch.is_tensor(v))
    env = dict(inputs, pi=math.pi, true=True, false=False)

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.Tuple):
            return tuple(value(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = value(node.operand)
            return -_tensor(operand, like) if torch.is_tensor(operand) else -operand
        if isinstance(node, ast.BinOp):
            a, b = value(node.left), value(node.right)
            a = _tensor(a, like) if torch.is_tensor(a) else a
            b = _tensor(b, like) if torch.is_tensor(b) else b
            op = type(node.op)
            if op in (ast.Pow, ast.BitXor):
                if not torch.is_tensor(a):
                    a = _tensor(a, like)
                return a**b
            return {
                ast.Add: lambda: a + b,
                ast.Sub: lambda: a - b,
                ast.Mult: lambda: a * b,
                ast.Div: lambda: a / b,
                ast.MatMult: lambda: a @ b,
            }[op]()
        if isinstance(node, ast.Compare):
            (op,) = node.ops
            (right,) = node.comparators
            return _COMPARE[type(op)](
                _tensor(value(node.left), like), _tensor(value(right), like)
            )
        if isinstance(node, ast.Attribute) and node.attr == "T":
            return value(node.value).mT
        if isinstance(node, ast.Call):
            name = node.func.id
            args = [value(a) for a in node.args]
            options = {k.arg: value(k.value) for k in node.keywords}
            if name in ("sum", "mean"):
                (arg,) = args
                dims = options.get("dim", ())
                dims = (dims,) if isinstance(dims, int) else tuple(dims)
                keepdim = bool(options.get("keepdim", False))
                reduce = torch.sum if name == "sum" else torch.mean
                arg = _tensor(arg, like)
                if not dims:
                    dims = tuple(range(arg.dim()))
                return reduce(arg, dim=dims, keepdim=keepdim)
            if name == "where":
                condition, a, b = args
                if not torch.is_tensor(condition):
                    condition = torch.as_tensor(condition, device=like.device)
                return torch.where(condition, _tensor(a, like), _tensor(b, like))
            if name == "heaviside":
                return _heaviside(*args[:1], like, *args[1:])
            return FUNCTIONS[name](*[_tensor(a, like) for a in args])
        raise ValueError(f"not in the test grammar: {ast.dump(node)}")

    result = None
    for statement in ast.parse(text.replace(";", "\n")).body:
        (target,) = statement.targets
        env[target.id] = result = value(statement.value)
        if target.id == output:
            return _tensor(result, like)
    return _tensor(result, like)
