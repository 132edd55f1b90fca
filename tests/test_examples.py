"""The committed examples: golden files, `fngen check`, and the behaviour of
the tutorial's Functions that the contract spells out (what is saved, which
gradients are computed, Modules and their parameters)."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import black
import pytest
import torch

import fngen
from fngen.spec import CHECK_NAMES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REGEN = "python scripts/regen_goldens.py"
SPECS = sorted(p.relative_to(ROOT).as_posix() for p in EXAMPLES.glob("*.yaml"))
GOLDEN_SPECS = [s for s in SPECS if (ROOT / s).with_suffix(".py").exists()]


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root: the generated header names the spec path
    as given, and the goldens were made with paths relative to the root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def ops():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return fngen.load("examples/ops.yaml")
    finally:
        os.chdir(cwd)


def test_there_are_examples():
    assert "examples/ops.yaml" in GOLDEN_SPECS, SPECS


# -- golden files ----------------------------------------------------------------


@pytest.mark.parametrize("spec_path", GOLDEN_SPECS)
def test_golden_file_is_up_to_date(spec_path, in_root):
    golden_path = Path(spec_path).with_suffix(".py")
    generated = fngen.generate(fngen.load_spec(spec_path))
    golden = golden_path.read_text(encoding="utf-8")
    if generated != golden:
        diff = "".join(
            difflib.unified_diff(
                golden.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                fromfile=f"{golden_path} (committed)",
                tofile=f"{golden_path} (generated now)",
            )
        )
        pytest.fail(
            f"{golden_path} is stale: regenerate the goldens with `{REGEN}` "
            f"and review the diff.\n{diff[:4000]}"
        )


def _goldens() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(EXAMPLES.glob("*.py"))}


def test_regen_script_check_mode_writes_nothing():
    """`regen_goldens.py --check`, from any directory, agrees with the golden
    test above and leaves the goldens untouched."""
    before = _goldens()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "regen_goldens.py"), "--check"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert _goldens() == before
    assert result.returncode == 0, result.stderr


def test_regen_script_rewrites_a_stale_golden(tmp_path):
    """The script run on a copy of the layout repairs a stale golden there."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "regen_goldens.py", tmp_path / "scripts")
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "ops.yaml", tmp_path / "examples")
    stale = tmp_path / "examples" / "ops.py"
    stale.write_text("# stale\n", encoding="utf-8")
    script = [sys.executable, str(tmp_path / "scripts" / "regen_goldens.py")]
    check = subprocess.run(
        script + ["--check"], cwd="/", capture_output=True, text=True
    )
    assert check.returncode == 1 and "examples/ops.py" in check.stderr, check
    assert stale.read_text(encoding="utf-8") == "# stale\n"
    result = subprocess.run(script, cwd="/", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert stale.read_text(encoding="utf-8") == (EXAMPLES / "ops.py").read_text(
        encoding="utf-8"
    )


# -- fngen check -------------------------------------------------------------------

# Real bugs found by these tests, as (spec, function): reason.  Strict: the
# entry must go when the bug is fixed.
KNOWN_CHECK_FAILURES: dict[tuple[str, str], str] = {}


def _function_cases():
    cases = []
    for spec_path in SPECS:
        try:
            names = [f.name for f in fngen.load_spec(ROOT / spec_path).functions]
        except fngen.SpecError:
            names = [None]  # fails in the test, with the spec error
        for name in names:
            marks = []
            if (spec_path, name) in KNOWN_CHECK_FAILURES:
                reason = KNOWN_CHECK_FAILURES[(spec_path, name)]
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            cases.append(
                pytest.param(spec_path, name, marks=marks, id=f"{spec_path}::{name}")
            )
    return cases


_reports: dict = {}


def _report(spec_path):
    """One `fngen.check` run per spec file, shared by its functions' tests."""
    if spec_path not in _reports:
        _reports[spec_path] = fngen.check(spec_path, device="cpu")
    return _reports[spec_path]


@pytest.mark.parametrize("spec_path, name", _function_cases())
def test_every_example_passes_check_on_cpu(spec_path, name, in_root):
    if name is None:
        fngen.load_spec(spec_path)  # raises the SpecError
    report = _report(spec_path)
    rows = {f.name: f for f in report.functions}
    assert set(rows) == {f.name for f in fngen.load_spec(spec_path).functions}
    row = rows[name]
    assert set(row.outcomes) == set(report.columns), row.outcomes
    assert set(CHECK_NAMES) <= set(report.columns)
    assert row.ok, "\n" + report.table()


# -- the generated source ------------------------------------------------------------


@pytest.mark.parametrize("spec_path", SPECS)
def test_generated_module_is_black_clean_and_compiles(spec_path, in_root):
    source = fngen.generate(fngen.load_spec(spec_path))
    assert black.format_str(source, mode=black.Mode()) == source
    compile(source, spec_path.replace(".yaml", ".py"), "exec")


@pytest.mark.parametrize("spec_path", SPECS)
def test_every_literal_block_of_a_docstring_stays_indented(spec_path, in_root):
    # As Sphinx and help() read them: after inspect.cleandoc.
    import ast
    import inspect

    source = fngen.generate(fngen.load_spec(spec_path))
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        doc = ast.get_docstring(node)
        lines = inspect.cleandoc(doc or "").splitlines()
        for i, line in enumerate(lines):
            if line.endswith("::"):
                block = next(text for text in lines[i + 1 :] if text.strip())
                indent = len(line) - len(line.lstrip())
                assert len(block) - len(block.lstrip()) > indent, (node.name, doc)


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_building_does_not_import_torch():
    code = (
        "import sys, fngen\n"
        "fngen.generate(fngen.load_spec('examples/ops.yaml'))\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr


def test_output_is_deterministic_across_hash_seeds():
    code = (
        "import sys, fngen\n"
        "sys.stdout.write(fngen.generate(fngen.load_spec('examples/ops.yaml')))\n"
    )
    sources = []
    for seed in ("0", "1", "4242"):
        result = _run_python(code, PYTHONHASHSEED=seed)
        assert result.returncode == 0, result.stderr
        sources.append(result.stdout)
    assert sources[0], "nothing was generated"
    assert sources[0] == sources[1] == sources[2]


# -- behaviour of the tutorial's Functions --------------------------------------------


def _saved_by(function, *args):
    """The tensors that `function(*args)` saves for backward, in order."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = function(*args)
    return output, saved


def test_exp_saves_its_output_not_its_input(ops):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y, saved = _saved_by(ops.exp, x)
    assert len(saved) == 1, f"exp saved {len(saved)} tensors"
    assert torch.equal(saved[0], y)
    assert not torch.equal(saved[0], x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(grad, torch.exp(x.detach()))


def test_my_relu_saves_exactly_one_tensor(ops):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y, saved = _saved_by(ops.my_relu, x)
    assert len(saved) == 1, f"my_relu saved {len(saved)} tensors"
    assert saved[0].shape == x.shape


def _spy_on_backward(function_class):
    """A subclass of `function_class` that records what its backward returns."""
    returned = []

    class Spy(function_class):
        @staticmethod
        def backward(ctx, *grads):
            result = function_class.backward(ctx, *grads)
            returned.append(result)
            return result

    return Spy, returned


def test_multiply_add_computes_only_the_needed_gradient(ops):
    w = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    spy, returned = _spy_on_backward(ops.MultiplyAddFunction)
    y = spy.apply(w, x, b)
    torch.testing.assert_close(y, w * x + b)
    seed = torch.randn(3, 4, dtype=torch.float64)
    y.backward(seed)
    grad_w, grad_x, grad_b = returned[0]
    assert grad_w is None and grad_x is None
    assert grad_b.shape == (4,)
    assert w.grad is None and x.grad is None
    assert b.grad.shape == (4,)
    torch.testing.assert_close(b.grad, seed.sum(0))


def test_multiply_add_functional_grads_through_public_wrapper(ops):
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(3, 4, dtype=torch.float64)
    ops.multiply_add(w, x, b).backward(seed)
    assert x.grad is None
    torch.testing.assert_close(w.grad, seed * x)
    torch.testing.assert_close(b.grad, seed.sum(0))


def test_mul_constant_float_gets_a_none_gradient(ops):
    tensor = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    spy, returned = _spy_on_backward(ops.MulConstantFunction)
    out = spy.apply(tensor, 2.5)
    torch.testing.assert_close(out, 2.5 * tensor)
    out.sum().backward()
    grad_tensor, grad_constant = returned[0]
    assert grad_constant is None
    torch.testing.assert_close(grad_tensor, torch.full_like(tensor, 2.5))
    torch.testing.assert_close(tensor.grad, torch.full_like(tensor, 2.5))


def test_mul_constant_module(ops):
    module = ops.MulConstant(2.0)
    assert "constant=2.0" in repr(module)
    assert list(module.parameters()) == []
    tensor = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = module(tensor)
    torch.testing.assert_close(out, 2.0 * tensor)
    out.sum().backward()
    torch.testing.assert_close(tensor.grad, torch.full_like(tensor, 2.0))


def test_prelu_module_has_a_trainable_slope(ops):
    module = ops.Prelu()
    parameters = dict(module.named_parameters())
    assert list(parameters) == ["a"]
    a = parameters["a"]
    assert isinstance(a, torch.nn.Parameter)
    assert a.shape == (1,)
    assert a.item() == 0.25
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5], [3.0, -1.0, 2.0, -4.0]])
    y = module(x)
    torch.testing.assert_close(y, torch.nn.functional.prelu(x, torch.tensor([0.25])))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    y.sum().backward()
    # d(sum y)/da = sum(min(x, 0)) = -7.5
    torch.testing.assert_close(a.grad, torch.tensor([-7.5]))
    # At 0 the gradient is PyTorch's: a (x > 0 is false there).
    x = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    (got,) = torch.autograd.grad(ops.prelu(x, a.detach()).sum(), x)
    (want,) = torch.autograd.grad(torch.nn.functional.prelu(x, a.detach()).sum(), x)
    torch.testing.assert_close(got, want)
    optimizer.step()
    torch.testing.assert_close(a.detach(), torch.tensor([0.25 + 0.75]))


def test_modules_with_params_take_torch_nn_factory_arguments(in_root):
    tensors = fngen.load("examples/tensors.yaml")
    # (in_features, out_features), as torch.nn.Linear: module_args.
    reference = torch.nn.Linear(4, 3)
    meta = tensors.Linear(4, 3, device="meta")
    assert meta.weight.device.type == "meta" and meta.weight.shape == (3, 4)
    assert repr(meta) == repr(reference)
    double = tensors.Linear(4, 3, dtype=torch.float64)
    assert double.weight.dtype == torch.float64 and double.bias.dtype == torch.float64
    skipped = torch.nn.utils.skip_init(tensors.Linear, 4, 3)
    assert skipped.weight.shape == reference.weight.shape
    # A Module without parameters has neither, nor an empty __init__.
    assert "__init__" not in vars(tensors.SimpleFunc)
    source = (ROOT / "examples" / "tensors.py").read_text(encoding="utf-8")
    assert "super().__init__()\n\n" not in source


def test_a_factory_argument_name_is_refused_beside_params():
    from fngen.spec import parse_spec

    text = (
        "fngen: 1\nfunctions:\n  f:\n    formula: y = x * w\n    inputs:\n"
        "      x: tensor\n      w: {param: [device]}\n"
    )
    with pytest.raises(fngen.SpecError, match="'device' is the factory argument"):
        parse_spec(text)


@pytest.mark.parametrize(
    "order, message",
    [
        (
            "[in_feature]",
            "x.yaml:9:19: error: 'in_feature' is not an argument of the Module's "
            "__init__ (it takes out_features, in_features, bias)",
        ),
        (
            "[bias, in_features]",
            "x.yaml:9:18: error: 'in_features' has no default but follows an "
            "argument with one (list the arguments without a default first)",
        ),
        (
            "[in_features, in_features]",
            "x.yaml:9:32: error: 'in_features' is listed twice",
        ),
        ("in_features", "x.yaml:9:18: error: module_args must be a list of names"),
    ],
)
def test_module_args_name_the_modules_arguments(order, message):
    from fngen.spec import parse_spec

    text = (
        "fngen: 1\nfunctions:\n  linear:\n    formula: y = input @ weight.T + bias\n"
        "    inputs:\n      input: tensor\n"
        "      weight: {param: [out_features, in_features]}\n"
        "      bias: {param: [out_features], optional: true}\n"
        f"    module_args: {order}\n"
    )
    with pytest.raises(fngen.SpecError) as info:
        parse_spec(text, "x.yaml")
    assert str(info.value) == message
