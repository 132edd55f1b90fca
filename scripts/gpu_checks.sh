#!/usr/bin/env bash
# The GPU checks, for a session lent a CUDA machine (CI never runs this).
#
#   scripts/gpu_checks.sh OUTDIR
#
# then commit OUTDIR's tables under benchmarks/gpu/.  The machine has torch
# (with Triton) but no network: black and its two dependencies that the
# image lacks are carried as wheels in .whl/ (pip download black
# platformdirs pytokens --no-deps --only-binary=:all: for its Python).
#
# 1. `fngen check --device cuda` of every spec of the repository, float64
#    and float32: the `kernel` column runs the Triton kernels of the specs
#    with `kernels: triton` on the GPU, against their torch code.
# 2. scripts/cuda_smoke.py: no host-device synchronisation, autocast dtypes.
# 3. `fngen bench --kernels triton` at 16M elements, float32 and bfloat16,
#    of the real-world formulas, the activations and the examples: the
#    kernels against the torch code, plain autograd and torch.compile, and
#    the memory roofline (the copy bandwidth measured in the same run).
#
# Checks run side by side, then the benchmarks one at a time so that their
# timings are not disturbed.  Each step is bounded by `timeout`, so a slow
# one still leaves the others' results; the whole stays under 9 minutes
# (3 for the checks, 6 for the benchmarks).
set -uo pipefail
out=${1:?usage: scripts/gpu_checks.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(pwd)
specs=$(ls "$root"/examples/*.yaml "$root"/benchmarks/*.yaml "$root"/tests/specs/*.yaml)

python3 -m pip install -q --no-index --no-deps --no-build-isolation .whl/*.whl . \
    >"$out/install.txt" 2>&1 || { cat "$out/install.txt"; exit 1; }
{
    date -u +%Y-%m-%d
    nvidia-smi -L
    python3 -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__)'
    python3 -c 'import triton; print("triton", triton.__version__)' || echo "triton: not installed"
} >"$out/device.txt" 2>&1

# From /tmp, so that what runs is the installed package.
(cd /tmp && timeout 180 python3 -m fngen check $specs --device cuda) \
    >"$out/cuda-check-float64.txt" 2>&1 &
(cd /tmp && timeout 180 python3 -m fngen check $specs --device cuda --dtype float32) \
    >"$out/cuda-check-float32.txt" 2>&1 &
timeout 180 python3 scripts/cuda_smoke.py $specs >"$out/cuda-smoke.txt" 2>&1 &
wait

# 16M elements, 20 interleaved rounds; torch.compile included (the
# kernel / compile ratio), so each spec is bounded separately.
for dtype in float32 bfloat16; do
    for spec in benchmarks/formulas.yaml:60 benchmarks/activations.yaml:60 \
        examples/spiking.yaml:30 examples/ops.yaml:30; do
        limit=${spec#*:} spec=${spec%:*}
        name=$(basename "$spec" .yaml)
        (cd /tmp && timeout "$limit" python3 -m fngen bench "$root/$spec" --device cuda \
            --kernels triton --size 16777216 --repeats 20 --dtype "$dtype") \
            >"$out/kernels-$name-$dtype.txt" 2>&1
        echo "exit: $?" >>"$out/kernels-$name-$dtype.txt"
    done
done
for f in "$out"/*.txt; do echo "== $f"; tail -4 "$f"; done
