"""`export: custom_op` (issue 17): each function also a torch.library custom
op, so that torch.export, torch.jit.trace and what runs their programs keep
the op and its gradient; against the plain autograd.Function, whose
exported gradient is lost."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import pytest
import torch

import fngen
from fngen.checker import check_spec
from fngen.errors import SpecError
from fngen.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY_SPECS = sorted(
    p.relative_to(ROOT).as_posix()
    for folder in ("examples", "benchmarks", "tests/specs")
    for p in (ROOT / folder).glob("*.yaml")
)


@pytest.fixture(scope="module")
def ops():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return fngen.load("examples/export.yaml")
    finally:
        os.chdir(cwd)


STE = "fngen: 1\n{mode}functions:\n  ste:\n    formula: y = round(x)\n    grad:\n      x: grad\n"


class Quantized(torch.nn.Module):
    """A weight rounded with a straight-through gradient, then scaled."""

    def __init__(self, rounding):
        super().__init__()
        self.rounding = rounding
        self.weight = torch.nn.Parameter(torch.tensor([0.2, 1.7, -2.4, 3.1]))

    def forward(self, x):
        return (self.rounding(self.weight * 2) * x).sum()


def test_an_exported_function_loses_its_gradient_and_the_custom_op_keeps_it():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    plain = fngen.load(parse_spec(STE.format(mode=""), "plain.yaml")).ste
    mode = "export: custom_op\nnamespace: fngen_test_ste\n"
    kept = fngen.load(parse_spec(STE.format(mode=mode), "op.yaml")).ste
    for rounding, expected in ((plain, 0.0), (kept, 2.0)):
        model = Quantized(rounding)
        (eager,) = torch.autograd.grad(model(x), model.weight)
        assert eager.tolist() == [2 * v for v in x.tolist()]
        program = torch.export.export(model, (x,)).module()
        (exported,) = torch.autograd.grad(program(x), list(program.parameters()))
        # d/dw of sum(round(2w)*x) with the STE: 2*x; PyTorch inlines a
        # Function's forward and drops its backward: 0.
        assert exported.tolist() == [expected * v for v in x.tolist()]


def test_training_through_an_exported_program_follows_eager_training(ops):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.linspace(-2, 2, 6))

        def forward(self, x, target):
            h = ops.round_ste(x * self.w) + ops.clipped_ste(x - self.w)
            return ops.scaled_mse(ops.soft_clip(h, 2.5), target, 0.5)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=generator)
    target = torch.randn(8, 6, generator=generator)
    eager = Model()
    program = torch.export.export(Model(), (x, target)).module()
    targets = {str(n.target) for n in program.graph.nodes}
    assert "fngen_examples.round_ste.default" in targets
    for model in (eager, program):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            optimizer.zero_grad()
            model(x, target).backward()
            optimizer.step()
    (w_eager,) = eager.parameters()
    (w_program,) = program.parameters()
    torch.testing.assert_close(w_program, w_eager, rtol=0, atol=0)
    assert not torch.equal(w_eager, torch.linspace(-2, 2, 6))  # it trained


def test_a_saved_exported_program_and_a_saved_trace_keep_the_gradient(ops, tmp_path):
    x = torch.tensor([0.4, -1.3, 2.6])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.5, 0.5, -0.5]))

        def forward(self, x):
            return ops.soft_clip(ops.round_ste(self.w * x)).sum()

    model = Model()
    (expected,) = torch.autograd.grad(model(x), model.w)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2").module()
    (got,) = torch.autograd.grad(loaded(x), list(loaded.parameters()))
    torch.testing.assert_close(got, expected)
    # torch.jit.trace records the op (an autograd.Function cannot be saved).
    torch.jit.save(torch.jit.trace(model, (x,)), tmp_path / "model.pt")
    traced = torch.jit.load(tmp_path / "model.pt")
    (got,) = torch.autograd.grad(traced(x), list(traced.parameters()))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "name, args",
    [
        ("round_ste", lambda: (torch.randn(3, 4, requires_grad=True),)),
        ("clipped_ste", lambda: (torch.randn(5, requires_grad=True),)),
        ("soft_clip", lambda: (torch.randn(2, 3, requires_grad=True), 2.0)),
        (
            "scaled_mse",
            lambda: (
                torch.randn(3, 2, requires_grad=True),
                torch.randn(2, requires_grad=True),
                1.5,
            ),
        ),
    ],
)
def test_each_op_passes_opcheck(ops, name, args):
    op = getattr(torch.ops.fngen_examples, name)
    torch.library.opcheck(op, args())


def test_the_vmap_rules_of_the_ops(ops):
    # Called as exported code calls them: torch.ops, not the wrapper.
    soft_clip = torch.ops.fngen_examples.soft_clip
    scaled_mse = torch.ops.fngen_examples.scaled_mse
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    got = torch.func.vmap(lambda a: soft_clip(a, 2.0), in_dims=1)(x)
    torch.testing.assert_close(got, ops.soft_clip(x.movedim(1, 0), 2.0))
    # Batched and unbatched operands of other ranks broadcast as unbatched.
    a = torch.randn(4, 3, dtype=torch.float64)
    b = torch.randn(4, 2, 3, dtype=torch.float64)
    got = torch.func.vmap(lambda a, b: scaled_mse(a, b, 2.0))(a, b)
    want = torch.stack([ops.scaled_mse(a[i], b[i], 2.0) for i in range(4)])
    torch.testing.assert_close(got, want)
    got = torch.func.vmap(
        lambda u, v: torch.ops.fngen_examples.round_ste(u) * v, in_dims=(0, None)
    )(a, b)
    torch.testing.assert_close(got, torch.round(a)[:, None, None, :] * b)


def test_the_decompositions_leave_plain_torch_ops(ops):
    class Model(torch.nn.Module):
        def forward(self, x, t):
            return ops.scaled_mse(ops.soft_clip(ops.round_ste(x)), t)

    x, t = torch.randn(3, 4), torch.randn(3, 4)
    exported = torch.export.export(Model(), (x, t))
    inlined = exported.run_decompositions(ops.DECOMPOSITIONS)
    targets = [str(n.target) for n in inlined.graph.nodes if n.op == "call_function"]
    assert targets and all(name.startswith("aten.") for name in targets), targets
    torch.testing.assert_close(inlined.module()(x, t), Model()(x, t))


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None
    or importlib.util.find_spec("onnxruntime") is None,
    reason="onnxscript and onnxruntime are in the test extra",
)
def test_onnx_export_of_the_decomposed_program(ops, tmp_path):
    import onnxruntime

    class Model(torch.nn.Module):
        def forward(self, x):
            return ops.soft_clip(ops.round_ste(x) + ops.clipped_ste(x), 2.0)

    x = torch.randn(3, 4)
    exported = torch.export.export(Model(), (x,))
    onnx_program = torch.onnx.export(
        exported.run_decompositions(ops.DECOMPOSITIONS), (x,), dynamo=True
    )
    onnx_program.save(tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(tmp_path / "model.onnx")
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), Model()(x))


def test_an_aotinductor_package_runs_the_op(ops, tmp_path):
    class Model(torch.nn.Module):
        def forward(self, x):
            return ops.soft_clip(ops.round_ste(x), 2.0) * 3

    x = torch.randn(3, 4)
    exported = torch.export.export(Model(), (x,))
    path = torch._inductor.aoti_compile_and_package(
        exported, package_path=str(tmp_path / "model.pt2")
    )
    compiled = torch._inductor.aoti_load_package(path)
    torch.testing.assert_close(compiled(x), Model()(x))


# -- fngen check --------------------------------------------------------------


def test_check_has_an_export_column_only_for_custom_ops():
    mode = "export: custom_op\nnamespace: fngen_test_column\n"
    report = check_spec(parse_spec(STE.format(mode=mode), "op.yaml"))
    assert report.ok, report.table()
    assert report.table().splitlines()[1].endswith("float32  export")
    report = check_spec(parse_spec(STE.format(mode=""), "plain.yaml"))
    assert report.table().splitlines()[1].endswith("float32")


def test_check_fails_an_export_that_drops_the_op(monkeypatch):
    # A wrapper that did not call the op when exported would export the
    # Function's forward alone: the export check must see it.
    from fngen import wrapper

    original = wrapper.WrapperWriter.wrapper_body
    monkeypatch.setattr(
        wrapper.WrapperWriter,
        "wrapper_body",
        lambda self, classes, op=None: original(self, classes, None),
    )
    mode = "export: custom_op\nnamespace: fngen_test_dropped\n"
    report = check_spec(parse_spec(STE.format(mode=mode), "op.yaml"))
    outcome = report.functions[0].outcomes["export"]
    assert outcome.ok is False
    assert outcome.reason == "torch.export did not keep fngen_test_dropped::ste"


@pytest.mark.parametrize("path", REPOSITORY_SPECS)
def test_every_repository_spec_exports_as_custom_ops(path):
    # Several outputs, bool outputs, kept intermediates, optional tensors,
    # long inputs, matrix products and fused kernels, all through opcheck,
    # torch.export with its gradients, and the decompositions.
    spec = fngen.load_spec(ROOT / path)
    namespace = "fngen_all_" + path.replace("/", "_").removesuffix(".yaml")
    spec = dataclasses.replace(spec, export="custom_op", namespace=namespace)
    report = check_spec(spec, checks=["export"])
    assert report.ok, report.table()


# -- the spec --------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, message",
    [
        (
            "export: custom_op\n",
            "x.yaml:2:9: error: 'export: custom_op' needs 'namespace:' "
            "(the torch.library namespace of the ops, as in torch.ops.my_ops.f)",
        ),
        (
            "namespace: ops\n",
            "x.yaml:2:12: error: 'namespace' needs 'export: custom_op'",
        ),
        (
            "export: onnx\nnamespace: ops\n",
            "x.yaml:2:9: error: unknown export mode 'onnx' (expected one of: custom_op)",
        ),
        (
            "export: custom_op\nnamespace: aten\n",
            "x.yaml:3:12: error: namespace 'aten' is PyTorch's own "
            "(choose a name of your project's)",
        ),
        (
            "export: custom_op\nnamespace: my-ops\n",
            "x.yaml:3:12: error: namespace 'my-ops' is not an identifier",
        ),
    ],
)
def test_the_export_mode_is_declared_with_a_namespace(head, message):
    text = "fngen: 1\n" + head + "functions:\n  f:\n    formula: y = exp(x)\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    assert str(info.value) == message


def test_forward_mode_ad_through_the_op_raises_and_the_wrapper_has_it(ops):
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.randn(3), torch.ones(3))
        with pytest.raises(NotImplementedError, match="no forward-mode AD"):
            torch.ops.fngen_examples.round_ste(dual)
        tangent = fwAD.unpack_dual(ops.round_ste(dual)).tangent
    assert tangent.tolist() == [1.0, 1.0, 1.0]


def test_a_function_cannot_generate_the_decompositions_name():
    text = (
        "fngen: 1\nexport: custom_op\nnamespace: ops\nfunctions:\n"
        "  d_e_c_o_m_p_o_s_i_t_i_o_n_s:\n    formula: y = exp(x)\n"
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    assert str(info.value).startswith(
        "x.yaml:5:3: error: function generates 'DECOMPOSITIONS'"
    )
