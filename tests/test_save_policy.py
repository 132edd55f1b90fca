"""`save:` — what a generated backward reads: ``memory`` recomputes from
the fewest saved tensors, ``speed`` also reads intermediates its forward
kept; unset, chosen by counting operations (`derive.choose_save`).  A
speed backward computes the very expression of the memory one, so it
changes no number (no stable form undone), and never saves more tensors
than autograd of the formula."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import fngen
from fngen.checker import check_spec
from fngen.derive import (
    Deriver,
    _gradients,
    _kept_values,
    choose_save,
    keep_for_speed,
    keep_intermediate,
)
from fngen.errors import SpecError
from fngen.fuse import fuse_function
from fngen.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent

SOFT_CLIP = """\
fngen: 1
functions:
  soft_clip:
    formula: y = bound * tanh(x / bound)
    inputs: {{x: tensor, bound: {{type: float, default: 2.0}}}}
{extra}"""


def _module(extra: str = ""):
    spec = parse_spec(SOFT_CLIP.format(extra=extra), "save.yaml")
    return spec, fngen.load(spec), fngen.generate(spec)


def test_unset_a_backward_that_recomputes_a_call_keeps_it():
    spec, module, source = _module()
    assert "save: speed (chosen)" in source
    assert "ctx.save_for_backward(kept)" in source  # tanh(x/bound), not x
    x = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module.soft_clip, (x, 2.0))
    assert torch.autograd.gradgradcheck(module.soft_clip, (x, 2.0))
    report = check_spec(spec)
    assert report.ok, report.table()


def test_save_memory_keeps_the_inputs_alone():
    _, module, source = _module("    save: memory\n")
    assert "save: speed" not in source and "kept" not in source
    assert "ctx.save_for_backward(x)" in source
    x = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module.soft_clip, (x, 2.0))


@pytest.mark.parametrize(
    "text, where",
    [("    save: fast\n", "6:11"), ("    save: [speed]\n", "6:11")],
)
def test_an_unknown_save_is_a_located_error(text, where):
    with pytest.raises(SpecError, match=f"save.yaml:{where}: error: .*save"):
        parse_spec(SOFT_CLIP.format(extra=text), "save.yaml")


@pytest.mark.parametrize("save", [None, "speed"])
def test_keeping_undoes_no_stable_form(save):
    """x*sigmoid(exp(x)): kept exp(x) and sigmoid(exp(x)) would read
    exp(x)*exp(u) where the stable backward has exp(x + u), inf * 0 in
    float32 at x = 100.  Whatever the policy, the gradient stays finite."""
    text = "fngen: 1\nfunctions:\n  f:\n    formula: y = x*sigmoid(exp(x))\n"
    if save:
        text += f"    save: {save}\n"
    module = fngen.load(parse_spec(text, "stable.yaml"))
    x = torch.tensor([-100.0, 0.0, 30.0, 100.0], requires_grad=True)
    (grad,) = torch.autograd.grad(module.f(x).sum(), x)
    assert torch.isfinite(grad).all(), grad


def _repository_functions():
    for path in (
        "benchmarks/formulas.yaml",
        "examples/export.yaml",
        "examples/ops.yaml",
    ):
        for fn in load_spec(ROOT / path).functions:
            yield pytest.param(fn, id=f"{Path(path).stem}-{fn.name}")


@pytest.mark.parametrize("fn", list(_repository_functions()))
def test_a_speed_backward_computes_the_memory_backwards_expression(fn):
    fused = fuse_function(fn)
    found = keep_for_speed(fused)
    if found is None:
        pytest.skip("keeping spares nothing")
    speed_fn = found[0]
    memory_fn = keep_intermediate(fused)
    memory = Deriver(memory_fn, frozenset(), frozenset({0})).derive()
    speed = Deriver(speed_fn, frozenset(), frozenset({0})).derive()
    assert _gradients(speed, _kept_values(speed_fn)) == _gradients(
        memory, _kept_values(memory_fn)
    )


def _saved_storages(function, *args) -> int:
    storages = set()

    def pack(tensor):
        storages.add(tensor.untyped_storage().data_ptr())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        function(*args)
    return len(storages)


def test_speed_never_saves_more_than_autograd():
    from fngen.bench import bench_inputs, composed_function

    spec = dataclasses.replace(
        load_spec(ROOT / "benchmarks" / "formulas.yaml"), kernels="none"
    )
    module = fngen.load(spec)
    chose_speed = 0
    for fn in spec.functions:
        if fn.grads:
            continue
        chose_speed += choose_save(fuse_function(fn)).policy == "speed"
        generator = torch.Generator().manual_seed(0)
        args = bench_inputs(fn, 1000, torch.float32, torch.device("cpu"), generator)
        generated = _saved_storages(getattr(module, fn.name), *args)
        composed = _saved_storages(composed_function(fn), *args)
        assert generated <= composed, (fn.name, generated, composed)
    assert chose_speed >= 2  # the test sees speed backwards


def test_a_function_with_kernels_saves_for_memory():
    pytest.importorskip("triton")
    text = SOFT_CLIP.format(extra="") + "kernels: triton\n"
    spec = parse_spec(text, "save.yaml")
    fn = fuse_function(spec.functions[0])
    assert choose_save(fn, kernels=True).policy == "memory"
    source = fngen.generate(spec)
    assert "save: speed" not in source and "_soft_clip_fwd_kernel" in source


def test_speed_and_kernels_on_one_function_is_a_located_error():
    text = SOFT_CLIP.format(extra="    save: speed\n    kernels: triton\n")
    with pytest.raises(SpecError, match="save.yaml:3:3: error: .*Triton kernels"):
        fngen.generate(parse_spec(text, "save.yaml"))
