"""`fngen bench`: smoke runs on a tiny size.

Benchmarks are not pass/fail: nothing here asserts a speed.  What is checked
is the report's structure, its JSON round trip, that the ratios are positive
and finite, and the one byte count that is a property of the generated code
and not of the machine: `exp` saves its output only.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import fngen
from fngen.spec import parse_spec
from fngen.bench import (
    KERNEL_RATIOS,
    RATIOS,
    VARIANTS,
    BenchError,
    BenchReport,
    bench_shapes,
    bench_spec,
    saved_for_backward,
)

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "examples" / "ops.yaml"
TENSORS = ROOT / "examples" / "tensors.yaml"
TINY = 4096


@pytest.fixture(scope="module")
def ops_report():
    return bench_spec(OPS, size=TINY, repeats=3, warmup=1, compile=False)


def test_report_has_a_row_per_function_with_eager_numbers(ops_report):
    spec = fngen.load_spec(OPS)
    assert [f.name for f in ops_report.functions] == [f.name for f in spec.functions]
    for row in ops_report.functions:
        assert set(row.variants) == {"generated", "composed"}
        for variant in row.variants.values():
            assert variant.error is None
            assert variant.time_s > 0
            assert variant.saved_bytes >= 0
        assert row.compiled_time_ratio is None and row.compiled_saved_ratio is None


def test_ratios_are_positive_and_finite(ops_report):
    for row in ops_report.functions:
        assert math.isfinite(row.eager_time_ratio) and row.eager_time_ratio > 0
        saved = row.eager_saved_ratio
        if row.name == "mul_constant":
            assert saved is None  # neither saves anything: 0/0 is no ratio
        else:
            assert math.isfinite(saved) and saved > 0, row.name
    means = ops_report.geomeans()
    assert means["eager_time_ratio"] > 0 and means["compiled_time_ratio"] is None


def test_exp_saves_no_more_than_autograd(ops_report):
    row = next(f for f in ops_report.functions if f.name == "exp")
    generated, composed = row.variants["generated"], row.variants["composed"]
    assert generated.saved_bytes <= composed.saved_bytes
    # Only the output, one float32 storage of the input's size.
    elements = math.prod(row.shapes["x"])
    assert (generated.saved_tensors, generated.saved_bytes) == (1, 4 * elements)
    assert generated.saved_extra_bytes == 0


def test_saved_bytes_count_distinct_storages_and_extras():
    import torch

    x = torch.rand(10, 10, requires_grad=True)
    # x*sigmoid(x): autograd keeps x and the intermediate sigmoid(x) (400
    # bytes each); x is an input, sigmoid(x) is the extra.
    assert saved_for_backward(lambda x: x * torch.sigmoid(x), [x]) == (800, 2, 400)
    # x*x saves x twice: one storage.
    assert saved_for_backward(lambda x: x * x, [x]) == (400, 1, 0)


def test_json_round_trip(ops_report):
    text = ops_report.to_json()
    data = json.loads(text)
    assert data["size"] == TINY and data["compile"] is False
    assert set(data["functions"][0]["ratios"]) == set(RATIOS + KERNEL_RATIOS)
    again = BenchReport.from_json(text)
    assert again == ops_report
    assert again.to_json() == text
    assert again.table() == ops_report.table()


def test_table_lists_functions_and_geomeans(ops_report):
    table = ops_report.table()
    lines = table.splitlines()
    assert lines[0].startswith("fngen bench on cpu (float32, 4,096 elements")
    for row in ops_report.functions:
        assert any(line.split()[0] == row.name for line in lines[4:])
    assert any(line.startswith("geometric mean") for line in lines)


def test_grad_override_is_not_comparable():
    report = bench_spec(
        TENSORS,
        only=["spike", "round_ste", "mse_loss"],
        size=TINY,
        repeats=2,
        warmup=1,
        compile=False,
    )
    rows = {f.name: f for f in report.functions}
    assert not rows["spike"].comparable and "grad:" in rows["spike"].note
    assert not rows["round_ste"].comparable
    assert rows["mse_loss"].comparable
    # The composed heaviside has no gradient at all: forward only.
    assert rows["spike"].variants["composed"].backward is False
    assert report.geomeans()["eager_time_ratio"] == pytest.approx(
        rows["mse_loss"].eager_time_ratio
    )
    assert "spike*" in report.table()


def test_shapes_scale_every_dim_by_one_factor():
    spec = fngen.load_spec(OPS)
    fns = {f.name: f for f in spec.functions}
    assert bench_shapes(fns["exp"], 4_000_000) == {"x": (1731, 2308)}
    # A broadcast bias keeps broadcasting; a [1] param stays [1].
    assert bench_shapes(fns["multiply_add"], 1200) == {
        "w": (30, 40),
        "x": (30, 40),
        "b": (40,),
    }
    assert bench_shapes(fns["prelu"], 1200) == {"x": (30, 40), "a": (1,)}
    linear = next(f for f in fngen.load_spec(TENSORS).functions if f.name == "linear")
    shapes = bench_shapes(linear, 4_000_000)
    assert shapes["input"][1] == shapes["weight"][1]  # the contracted dim
    assert shapes["bias"] == shapes["weight"][:1]
    assert math.prod(shapes["input"]) <= 1 << 18  # matmul: capped
    with pytest.raises(BenchError, match="size"):
        bench_shapes(fns["exp"], 0)


def test_unknown_function_is_an_error():
    with pytest.raises(BenchError, match="no function named 'nope' in "):
        bench_spec(OPS, only="nope", size=TINY, compile=False)


def test_compiled_variants_on_one_function():
    pytest.importorskip("torch._inductor")
    report = bench_spec(OPS, only="exp", size=TINY, repeats=2, warmup=2)
    (row,) = report.functions
    assert set(row.variants) == set(VARIANTS) - {"kernel"}  # ops.yaml has none
    for name, variant in row.variants.items():
        assert variant.error is None, (name, variant.error)
    for name in RATIOS:
        value = getattr(row, name)
        assert math.isfinite(value) and value > 0, name
    # Under compile too the exponential keeps one tensor for backward.
    assert row.compiled_saved_ratio <= 1.0


def test_building_does_not_import_torch():
    code = "import sys, fngen, fngen.bench; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_cli_bench_smoke(tmp_path):
    from click.testing import CliRunner

    from fngen.cli import main

    if "bench" not in main.commands:
        pytest.skip("the CLI has no bench command yet")
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(OPS),
            "--only",
            "exp",
            "--size",
            str(TINY),
            "--repeats",
            "2",
            "--no-compile",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [f["name"] for f in data["functions"]] == ["exp"]


COMPOSED_SPEC = """\
fngen: 1
functions:
  huber:
    formula: |
      d = input - target
      loss = mean(where(abs(d) < delta, 0.5*d**2, delta*(abs(d) - 0.5*delta)))
    inputs:
      input: tensor
      target: tensor
      delta: {type: float, default: 1.0}
  swish:
    formula: y = x*sigmoid(x)
  cubic:
    formula: y = 0.5*(5*x**3 - 3*x)
"""


def test_the_baseline_is_the_formula_as_written():
    from fngen.codegen import composed_source

    spec = parse_spec(COMPOSED_SPEC, "composed.yaml")
    huber, swish, cubic = spec.functions
    # Each repeated subexpression once, as a user would write it by hand.
    assert composed_source(huber) == (
        "import torch\n\n\n"
        "def huber(input, target, delta):\n"
        "    t0 = input - target\n"
        "    t1 = torch.abs(t0)\n"
        "    loss = torch.where(delta > t1, t0**2 / 2, delta * (t1 - delta / 2)).mean()\n"
        "    return loss\n"
    )
    # None of fngen's rewrites: no fused kernel, no Horner form.
    assert "    y = x * torch.sigmoid(x)\n" in composed_source(swish)
    assert "    y = 2.5 * x**3 - 1.5 * x\n" in composed_source(cubic)


def test_the_baseline_returns_only_the_declared_outputs():
    import torch

    from fngen.bench import composed_function

    fn = next(f for f in fngen.load_spec(TENSORS).functions if f.name == "mse_loss")
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    value = composed_function(fn)(a, b)
    assert torch.is_tensor(value)
    torch.testing.assert_close(value, torch.nn.functional.mse_loss(a, b))


KERNEL_SPEC = """\
fngen: 1
kernels: triton
functions:
  gated:
    formula: y = x * sigmoid(beta * x) + where(x > 1, x - 1, 0)**2
    inputs: {x: tensor, beta: {type: float, default: 1.5}}
  plain:
    formula: y = exp(x)
    kernels: none
"""


def test_kernel_variant_under_the_interpreter():
    """On a CPU with `interpret`, the kernel variant runs the generated
    kernels under Triton's interpreter: the plumbing of a GPU benchmark."""
    pytest.importorskip("triton")
    spec = parse_spec(KERNEL_SPEC, "kernels.yaml")
    report = bench_spec(
        spec, size=TINY + 3, repeats=1, warmup=1, compile=False, interpret=True
    )
    gated, plain = report.functions
    assert set(gated.variants) == {"generated", "composed", "kernel"}
    assert set(plain.variants) == {"generated", "composed"}  # kernels: none
    kernel = gated.variants["kernel"]
    assert kernel.error is None, kernel.error
    assert math.isfinite(gated.kernel_time_ratio) and gated.kernel_time_ratio > 0
    # The kernel path saves what the torch path saves: x only.
    assert kernel.saved_bytes == gated.variants["generated"].saved_bytes
    assert gated.kernel_saved_ratio <= 1.0
    assert gated.kernel_roofline_ratio is None  # no bandwidth off CUDA
    assert plain.kernel_time_ratio is None
    assert report.has_kernels
    table = report.table()
    assert "kernel" in table.splitlines()[3] and "/roof" in table
    data = json.loads(json.dumps(report.to_dict()))
    assert data["functions"][0]["variants"]["kernel"]["error"] is None
    assert set(data["functions"][0]["ratios"]) == set(RATIOS + KERNEL_RATIOS)


def test_without_interpret_a_cpu_has_no_kernel_variant():
    spec = parse_spec(KERNEL_SPEC, "kernels.yaml")
    report = bench_spec(spec, only="gated", size=TINY, repeats=1, compile=False)
    (gated,) = report.functions
    assert "kernel" not in gated.variants and not report.has_kernels
    assert "/roof" not in report.table()


def test_cli_bench_interpret_in_bfloat16(tmp_path):
    pytest.importorskip("triton")
    from click.testing import CliRunner

    from fngen.cli import main

    spec = tmp_path / "kernels.yaml"
    spec.write_text(KERNEL_SPEC, encoding="utf-8")
    args = ["bench", str(spec), "--only", "gated", "--size", "1000"]
    args += ["--repeats", "1", "--no-compile", "--interpret", "--dtype", "bfloat16"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (row,) = data["functions"]
    assert data["dtype"] == "bfloat16"
    assert row["variants"]["kernel"]["error"] is None
    assert row["ratios"]["kernel_time_ratio"] > 0


def test_kernels_option_measures_a_spec_that_has_not_opted_in():
    pytest.importorskip("triton")
    report = bench_spec(
        OPS,
        only="exp",
        size=1000,
        repeats=1,
        compile=False,
        interpret=True,
        kernels="triton",
    )
    (row,) = report.functions
    assert row.variants["kernel"].error is None
    with pytest.raises(BenchError, match="kernels must be one of triton, none"):
        bench_spec(OPS, only="exp", size=1000, kernels="cuda")
