"""Differential testing of tensor-level formulas against torch autograd.

Hypothesis draws formulas bottom-up, each step an operation on what is
already drawn whose shapes fit: pointwise functions and arithmetic
broadcasting between [3, 4], [4], [3, 1] and [1, 4], reductions (`sum`,
`mean`, with `dim` and `keepdim`), `softmax` and `log_softmax`, `gather`
and `one_hot` of long inputs, matrix products and `.T`, a float
argument, an optional tensor (given, and left out), intermediate statements,
one to three outputs and sometimes a boolean one (``m = e > 0.5``).  Each
formula is drawn together with a torch function computing the same thing
(the test's own, sharing nothing with fngen's parser or printer), and the
generated module must agree with torch autograd of that function:

* the forward, dtypes included (a comparison is a ``torch.bool`` tensor);
* every gradient, for every subset of the differentiable outputs receiving
  one (the other outputs' gradients are None), and never a None where
  autograd has a gradient;
* gradients for a batch of incoming gradients (``is_grads_batched=True``);
* forward-mode tangents, for every subset of inputs with a tangent;
* `torch.autograd.gradcheck` (backward, forward mode, batched, undefined
  output gradients), where the formula is smooth.

CI runs a few dozen deterministic examples.  Run it long with fresh seeds::

    FNGEN_TENSOR_FUZZ=1000 .venv/bin/python -m pytest tests/test_tensor_differential.py
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as nnf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fngen
from fngen.errors import SpecError
from fngen.spec import parse_spec

TOL = dict(rtol=1e-7, atol=1e-9)
D = torch.float64
META = torch.device("meta")

# Every tensor input's shape is one of these: they all broadcast to [3, 4].
SHAPES = [(3, 4), (4,), (3, 1), (1, 4)]
TENSOR_NAMES = ["x", "y", "z"]
# Long inputs (class indices): their shapes and classes.  t indexes a
# [3, 4] term along either dimension (gather), c is one_hot's [3] index.
LONG_INPUTS = {"t": ((3, 4), 3), "c": ((3,), 4)}
CONSTANTS = ["0.5", "2", "1.5", "3"]


@dataclass(frozen=True)
class Term:
    """A drawn expression: its formula text, its shape (None for a number)
    and the torch function of the inputs that computes it."""

    text: str
    shape: tuple[int, ...] | None
    value: Callable[[dict], object]
    smooth: bool = True


# name -> (formula text, torch function, smooth)
UNARY = {
    "sin": ("sin({0})", torch.sin, True),
    "tanh": ("tanh({0})", torch.tanh, True),
    "sigmoid": ("sigmoid({0})", torch.sigmoid, True),
    "softplus": ("softplus({0})", nnf.softplus, True),
    "exp": ("exp(tanh({0}))", lambda t: torch.exp(torch.tanh(t)), True),
    "log": ("log(1 + ({0})**2)", lambda t: torch.log(1 + t**2), True),
    "sqrt": ("sqrt(2 + sin({0}))", lambda t: torch.sqrt(2 + torch.sin(t)), True),
    "square": ("({0})**2", lambda t: t**2, True),
    "neg": ("-({0})", torch.neg, True),
    "relu": ("relu({0})", torch.relu, False),
    "abs": ("abs({0})", torch.abs, False),
    "floor": ("floor({0})", torch.floor, False),
}


def _tensor(value):
    return value if torch.is_tensor(value) else torch.tensor(value, dtype=D)


# name -> (formula text, torch function of two values, smooth)
BINARY = {
    "add": ("({0}) + ({1})/7", lambda a, b: a + b / 7, True),
    "sub": ("({0}) - ({1})/7", lambda a, b: a - b / 7, True),
    "mul": ("({0})*({1})", lambda a, b: a * b, True),
    "div": ("({0})/(1 + ({1})**2)", lambda a, b: a / (1 + b**2), True),
    "max": (
        "max({0}, {1})",
        lambda a, b: torch.maximum(_tensor(a), _tensor(b)),
        False,
    ),
    "min": (
        "min({0}, {1})",
        lambda a, b: torch.minimum(_tensor(a), _tensor(b)),
        False,
    ),
    "where": (
        "where({0} > 0.5, {0}, {1})",
        lambda a, b: torch.where(a > 0.5, a, _tensor(b)),
        False,
    ),
}


def _broadcast(*shapes):
    """The broadcast shape of `shapes` (None: a number), or None."""
    tensors = [s for s in shapes if s is not None]
    try:
        return tuple(torch.broadcast_shapes(*tensors))
    except RuntimeError:
        return None


def _matmul_shape(a, b):
    """torch.matmul's result shape, or None where the operands do not fit."""
    if not a or not b:
        return None  # a number or a 0-dim tensor: '@' refuses it
    try:
        return tuple((torch.empty(a, device=META) @ torch.empty(b, device=META)).shape)
    except RuntimeError:
        return None


def _reduced_shape(shape, dims, keepdim):
    return tuple(torch.empty(shape, device=META).sum(dim=dims, keepdim=keepdim).shape)


@st.composite
def formulas(draw):
    """(formula text, inputs, outputs, the torch function of the inputs)."""
    count = draw(st.integers(1, 3))
    shapes = {n: draw(st.sampled_from(SHAPES)) for n in TENSOR_NAMES[:count]}
    optional = draw(st.sampled_from([None, (4,), (3, 4), (3, 1)]))
    use_s = draw(st.booleans())
    pool = [Term(n, s, lambda env, n=n: env[n]) for n, s in shapes.items()]
    numbers = [Term(c, None, lambda env, c=c: float(c)) for c in CONSTANTS]
    if use_s:
        numbers.append(Term("s", None, lambda env: env["s"]))
    statements: list[tuple[str, Term]] = []

    def tensors():
        return [t for t in pool if t.shape is not None]

    def add(term: Term):
        if len(term.text) > 400:  # keep texts small: shared terms repeat
            return
        if draw(st.integers(0, 3)) == 0:  # an intermediate statement
            name = f"t{len(statements)}"
            statements.append((name, term))
            term = Term(name, term.shape, lambda env: env[name], term.smooth)
        pool.append(term)

    for _ in range(draw(st.integers(2, 6))):
        kind = draw(
            st.sampled_from(
                [
                    "unary",
                    "binary",
                    "binary",
                    "reduce",
                    "matmul",
                    "T",
                    "optional",
                    "gather",
                    "one_hot",
                    "softmax",
                ]
            )
        )
        a = draw(st.sampled_from(tensors()))
        if kind == "unary":
            text, f, smooth = UNARY[draw(st.sampled_from(sorted(UNARY)))]
            add(
                Term(
                    text.format(a.text),
                    a.shape,
                    lambda env, f=f, a=a: f(a.value(env)),
                    a.smooth and smooth,
                )
            )
        elif kind == "binary":
            text, f, smooth = BINARY[draw(st.sampled_from(sorted(BINARY)))]
            others = [t for t in pool + numbers if _broadcast(a.shape, t.shape)]
            b = draw(st.sampled_from(others))
            add(
                Term(
                    text.format(a.text, b.text),
                    _broadcast(a.shape, b.shape),
                    lambda env, f=f, a=a, b=b: f(a.value(env), b.value(env)),
                    a.smooth and b.smooth and smooth,
                )
            )
        elif kind == "reduce":
            if not a.shape:
                continue
            name = draw(st.sampled_from(["sum", "mean"]))
            ndim = len(a.shape)
            options = [None, (-1,), (0,)] + ([(0, 1)] if ndim == 2 else [])
            dims = draw(st.sampled_from(options))
            keepdim = dims is not None and draw(st.booleans())
            if dims is None:
                text, shape = f"{name}({a.text})", ()
            else:
                dim_text = str(dims[0]) if len(dims) == 1 else str(dims)
                keep = ", keepdim=true" if keepdim else ""
                text = f"{name}({a.text}, dim={dim_text}{keep})"
                shape = _reduced_shape(a.shape, dims, keepdim)
            reduce = torch.sum if name == "sum" else torch.mean

            def value(env, a=a, reduce=reduce, dims=dims, keepdim=keepdim):
                if dims is None:
                    return reduce(a.value(env))
                return reduce(a.value(env), dim=dims, keepdim=keepdim)

            add(Term(text, shape, value, a.smooth))
        elif kind == "matmul":
            others = [t for t in tensors() if _matmul_shape(a.shape, t.shape)]
            if not others:
                continue
            b = draw(st.sampled_from(others))
            add(
                Term(
                    f"({a.text}) @ ({b.text})",
                    _matmul_shape(a.shape, b.shape),
                    lambda env, a=a, b=b: a.value(env) @ b.value(env),
                    a.smooth and b.smooth,
                )
            )
        elif kind == "T":
            if a.shape is None or len(a.shape) != 2:
                continue
            add(
                Term(
                    f"({a.text}).T",
                    a.shape[::-1],
                    lambda env, a=a: a.value(env).mT,
                    a.smooth,
                )
            )
        elif kind == "gather":
            if a.shape != (3, 4):
                continue  # torch.gather does not broadcast its input
            dim = draw(st.sampled_from([0, 1, -1, -2]))
            add(
                Term(
                    f"gather({a.text}, {dim}, t)",
                    (3, 4),
                    lambda env, a=a, dim=dim: torch.gather(a.value(env), dim, env["t"]),
                    a.smooth,
                )
            )
        elif kind == "softmax":
            if not a.shape:
                continue
            name = draw(st.sampled_from(["softmax", "log_softmax"]))
            dim = draw(st.sampled_from([-1, 0] if len(a.shape) == 2 else [0, -1]))
            function = torch.softmax if name == "softmax" else torch.log_softmax
            add(
                Term(
                    f"{name}({a.text}, dim={dim})",
                    a.shape,
                    lambda env, a=a, f=function, dim=dim: f(a.value(env), dim=dim),
                    a.smooth,
                )
            )
        elif kind == "one_hot":
            if _broadcast(a.shape, (3, 4)) != (3, 4):
                continue
            add(
                Term(
                    f"({a.text}) * one_hot(c, 4)",
                    (3, 4),
                    lambda env, a=a: a.value(env) * nnf.one_hot(env["c"], 4).to(D),
                    a.smooth,
                )
            )
        elif kind == "optional" and optional is not None:
            shape = _broadcast(a.shape, optional)
            if shape != a.shape:
                continue  # left out, b must not change the shape
            add(
                Term(
                    f"({a.text}) + b",
                    shape,
                    lambda env, a=a: a.value(env) + env["b"],
                    a.smooth,
                )
            )

    # One to three outputs, the latest terms first; sometimes a comparison.
    candidates = tensors()[::-1]
    n_out = draw(st.integers(1, min(3, len(candidates))))
    chosen = candidates[:n_out]
    outputs = []
    for n, term in enumerate(chosen):
        name = f"o{n}"
        statements.append((name, term))
        outputs.append(name)
    if draw(st.integers(0, 2)) == 0:
        base = chosen[0]
        compare = Term(
            f"({base.text}) > 0.5", base.shape, lambda env, t=base: t.value(env) > 0.5
        )
        statements.append(("m", compare))
        outputs.append("m")
    text = "\n".join(f"{name} = {term.text}" for name, term in statements)

    def reference(env):
        env = dict(env)
        for name, term in statements:
            env[name] = term.value(env)
        return tuple(env[o] for o in outputs)

    inputs = {}
    for name, shape in shapes.items():
        inputs[name] = ("tensor", shape)
    if optional is not None:
        inputs["b"] = ("optional", optional)
    for name, (shape, _) in LONG_INPUTS.items():
        inputs[name] = ("long", shape)
    if use_s:  # last: it has a default
        inputs["s"] = ("float", None)
    # Declare only what the formula reads (an unused input is an error).
    words = set(re.findall(r"[A-Za-z_]\w*", text))
    inputs = {n: kind for n, kind in inputs.items() if n in words}
    smooth = all(term.smooth for _, term in statements)
    return text, inputs, outputs, reference, smooth


def build(text: str, inputs: dict, outputs: list[str]):
    body = "".join(f"      {line}\n" for line in text.splitlines())
    declared = []
    for name, (kind, _) in inputs.items():
        if kind == "tensor":
            declared.append(f"      {name}: tensor\n")
        elif kind == "optional":
            declared.append(f"      {name}: {{optional: true}}\n")
        elif kind == "long":
            classes = LONG_INPUTS[name][1]
            declared.append(f"      {name}: {{type: long, classes: {classes}}}\n")
        else:
            declared.append(f"      {name}: {{type: float, default: 0.5}}\n")
    spec_text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: |\n"
        + body
        + "    inputs:\n"
        + "".join(declared)
        + f"    outputs: [{', '.join(outputs)}]\n"
    )
    spec = parse_spec(spec_text, "tensor_differential.yaml")
    return fngen.load(spec).f


def _grads(outputs, tensors, grad_outputs, batched=False):
    return torch.autograd.grad(
        outputs,
        tensors,
        grad_outputs,
        allow_unused=True,
        retain_graph=True,
        is_grads_batched=batched,
    )


def _assert_same_grads(got, want, tensors, what):
    for n, (g, w, t) in enumerate(zip(got, want, tensors)):
        if w is not None:
            assert g is not None, f"{what}: a None gradient for input {n}"
        w = torch.zeros_like(t) if w is None else w
        if g is None:
            g = torch.zeros_like(w)
        assert g.shape == w.shape, f"{what}: input {n}"
        torch.testing.assert_close(g, w, **TOL, msg=lambda m: f"{what}, input {n}: {m}")


def check_formula(text, inputs, outputs, reference, smooth, seed, give_optional):
    try:
        function = build(text, inputs, outputs)
    except SpecError as error:
        # An input that SymPy proves has no effect, or an output it proves
        # constant (-exp(tanh(x)) > 0.5), is refused, located.
        message = str(error)
        assume("is not used by the formula" not in message)
        assume("an output must depend on a tensor input" not in message)
        raise
    generator = torch.Generator().manual_seed(seed)
    args, env, tensors, names = [], {}, [], []
    for name, (kind, shape) in inputs.items():
        if kind == "float":
            value = 0.25 + 1.75 * torch.rand((), generator=generator, dtype=D).item()
            env[name] = value
        elif kind == "optional" and not give_optional:
            value = None
            env[name] = 0.0
        elif kind == "long":
            classes = LONG_INPUTS[name][1]
            value = torch.randint(classes, shape, generator=generator)
            env[name] = value
        else:
            value = 4 * torch.rand(shape, generator=generator, dtype=D) - 2
            value.requires_grad_()
            env[name] = value
            tensors.append(value)
            names.append(name)
        args.append(value)

    got = function(*args)
    got = got if isinstance(got, tuple) else (got,)
    want = reference(env)
    assert len(got) == len(want)
    for name, g, w in zip(outputs, got, want):
        assert g.dtype == w.dtype, f"{name}: {g.dtype}, not {w.dtype}"
        assert g.shape == w.shape, f"{name}: shape {tuple(g.shape)}"
        assert g.requires_grad == w.requires_grad, name
        torch.testing.assert_close(g.detach(), w.detach(), **TOL)

    differentiable = [i for i, w in enumerate(want) if w.requires_grad]
    # Every subset of the outputs receiving a gradient.
    for size in range(1, len(differentiable) + 1):
        for subset in itertools.combinations(differentiable, size):
            grad_outputs = [
                torch.randn(want[i].shape, generator=generator, dtype=D) for i in subset
            ]
            got_grads = _grads([got[i] for i in subset], tensors, grad_outputs)
            want_grads = _grads([want[i] for i in subset], tensors, grad_outputs)
            what = f"gradient of {[outputs[i] for i in subset]}"
            _assert_same_grads(got_grads, want_grads, tensors, what)
    if not differentiable:
        return

    # A batch of incoming gradients (vmap over the backward).
    batch = [
        torch.randn((2, *want[i].shape), generator=generator, dtype=D)
        for i in differentiable
    ]
    got_grads = _grads([got[i] for i in differentiable], tensors, batch, True)
    want_grads = _grads([want[i] for i in differentiable], tensors, batch, True)
    batched = [torch.stack([t, t]) for t in tensors]
    _assert_same_grads(got_grads, want_grads, batched, "batched gradients")

    # Forward mode, for every subset of the inputs with a tangent.
    plain = {n: (a.detach() if torch.is_tensor(a) else a) for n, a in env.items()}
    call_args = [plain[n] if n in plain else None for n in inputs]
    for n, (kind, _) in enumerate(inputs.values()):
        if kind == "optional" and not give_optional:
            call_args[n] = None
    for size in range(1, len(tensors) + 1):
        for subset in itertools.combinations(range(len(tensors)), size):
            tangents = {
                names[i]: torch.randn(tensors[i].shape, generator=generator, dtype=D)
                for i in subset
            }
            with fwAD.dual_level():
                duals = {n: fwAD.make_dual(plain[n], t) for n, t in tangents.items()}
                a = [duals.get(n, v) for n, v in zip(inputs, call_args)]
                ours = function(*a)
                ours = ours if isinstance(ours, tuple) else (ours,)
                theirs = reference({**plain, **duals})
                for i in differentiable:
                    t_got = fwAD.unpack_dual(ours[i]).tangent
                    t_want = fwAD.unpack_dual(theirs[i]).tangent
                    shape = want[i].shape
                    t_got = torch.zeros(shape, dtype=D) if t_got is None else t_got
                    t_want = torch.zeros(shape, dtype=D) if t_want is None else t_want
                    torch.testing.assert_close(
                        t_got,
                        t_want,
                        **TOL,
                        msg=lambda m: f"tangent of {outputs[i]} from {list(tangents)}: {m}",
                    )

    if smooth:

        def differentiable_outputs(*values):
            it = iter(values)
            full = [
                next(it) if torch.is_tensor(a) and a.is_floating_point() else a
                for a in args
            ]
            out = function(*full)
            out = out if isinstance(out, tuple) else (out,)
            return tuple(out[i] for i in differentiable)

        assert torch.autograd.gradcheck(
            differentiable_outputs,
            tuple(tensors),
            check_forward_ad=True,
            check_batched_grad=True,
            check_undefined_grad=True,
        )


LONG = "FNGEN_TENSOR_FUZZ" in os.environ


@settings(
    max_examples=int(os.environ.get("FNGEN_TENSOR_FUZZ", 30)),
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    formula=formulas(),
    seed=st.integers(0, 2**31 - 1),
    give_optional=st.booleans(),
)
def test_tensor_formulas_agree_with_torch_autograd(formula, seed, give_optional):
    text, inputs, outputs, reference, smooth = formula
    check_formula(text, inputs, outputs, reference, smooth, seed, give_optional)


# -- the classes of bugs this test found, each a formula ----------------------

FOUND = {
    # A product broadcast by a later pointwise op (issue 13, 12).
    "product broadcast": (
        "h = x @ y\no0 = z - h",
        {"x": (1, 3), "y": (3, 1), "z": (3, 4)},
    ),
    # A term of a transpose's gradient counted once per broadcast element.
    "transpose broadcast": (
        "h = x.T\no0 = sum(h * y) + sum(h.T)",
        {"x": (1, 1), "y": (3, 4)},
    ),
    # Only some outputs receive a gradient (issue 13, 11).
    "some outputs": (
        "o0 = sum(x)\no1 = relu(x) @ x.T",
        {"x": (3, 4)},
    ),
    # Precedence (issue 13, 10).
    "precedence": ("o0 = x @ (x * y)", {"x": (3, 3), "y": (3, 3)}),
    # A boolean output beside a float one (issue 13, 1).
    "boolean output": ("o0 = x * x\nm = x > 0", {"x": (3, 4)}),
    # A derivative that is zero: zeros, not None (issue 13, 7).
    "zero derivative": ("o0 = y * floor(x)", {"x": (3, 4), "y": (4,)}),
    # A where inside a sum_to_size folded out of it by SymPy (printed as
    # (0).sum_to_size(...)): only some outputs receive a gradient.
    "where in a sum": (
        "t0 = where(x > 0.5, x, 0.5)\no0 = y + t0/7\no1 = log(1 + t0**2)\no2 = t0.T",
        {"x": (3, 4), "y": (3, 4)},
    ),
    # Two outputs with one expression: one tensor returned twice.
    "one tensor twice": ("o0 = abs(x)\no1 = abs(x)", {"x": (3, 4)}),
    "one product twice": (
        "t2 = x @ x.T\nt3 = x @ x.T\no0 = t3\no1 = t2",
        {"x": (3, 4)},
    ),
    # A transpose of an input as an output: forward-mode AD dropped the
    # other output's tangent when x had none.
    "view of an input": ("o0 = x.T\no1 = y", {"x": (3, 4), "y": (3, 4)}),
    # A zero tangent of a transposed output must have its strides.
    "transposed zero tangent": ("o0 = floor(x).T", {"x": (3, 4)}),
    # An input returned as it is: its tangent must be a view, so a copy.
    "input as output": ("o0 = x\nm = x > 0.5", {"x": (3, 4)}),
    # Two sums to x's size, of different shapes, merged into one: the
    # smaller broadcast before the sum, and counted once per row.
    # A where of counts alone (1/(2*x.numel()) at a tie of max) computed
    # in the default dtype, float32, in a float64 backward.
    "where of counts": (
        "t0 = max(x, 0.5)\nt1 = mean(t0)\no0 = t1\no1 = t0\no2 = x",
        {"x": (3, 1)},
    ),
    "sums of two shapes": (
        "o0 = x * y\no1 = x / 7 + z",
        {"x": (4,), "y": (3, 4), "z": (4,)},
    ),
}


def _torch_of(text: str):
    """The torch function of one of the FOUND formulas, written out."""

    def reference(env):
        x, y, z = env.get("x"), env.get("y"), env.get("z")
        if text.startswith("h = x @ y"):
            return (z - x @ y,)
        if text.startswith("h = x.T"):
            h = x.mT
            return ((h * y).sum() + h.mT.sum(),)
        if text.startswith("o0 = sum(x)"):
            return (x.sum(), torch.relu(x) @ x.mT)
        if text == "o0 = x @ (x * y)":
            return (x @ (x * y),)
        if text.startswith("t0 = max(x, 0.5)"):
            t0 = torch.maximum(x, torch.tensor(0.5, dtype=x.dtype))
            return (t0.mean(), t0, x)
        if text.startswith("o0 = x * y"):
            return (x * y, x / 7 + z)
        if text.startswith("o0 = x * x"):
            return (x * x, x > 0)
        if text.startswith("o0 = x\n"):
            return (x, x > 0.5)
        if text.startswith("t2 = x @ x.T"):
            return (x @ x.mT, x @ x.mT)
        if text.startswith("o0 = abs(x)"):
            return (torch.abs(x), torch.abs(x))
        if text.startswith("o0 = x.T"):
            return (x.mT, y)
        if text.startswith("o0 = floor(x).T"):
            return (torch.floor(x).mT,)
        if text.startswith("t0 = where"):
            t0 = torch.where(x > 0.5, x, 0.5)
            return (y + t0 / 7, torch.log(1 + t0**2), t0.mT)
        return (y * torch.floor(x),)

    return reference


@pytest.mark.parametrize("name", list(FOUND))
def test_formulas_of_the_bugs_found(name):
    text, shapes = FOUND[name]
    inputs = {n: ("tensor", s) for n, s in shapes.items()}
    outputs = [line.split(" = ")[0] for line in text.splitlines()]
    outputs = [o for o in outputs if o.startswith("o") or o == "m"]
    check_formula(text, inputs, outputs, _torch_of(text), True, 0, True)
