#!/usr/bin/env bash
# The GPU checks, for a session lent a CUDA machine (CI never runs this).
#
#   scripts/gpu_checks.sh OUTDIR
#
# The machine has torch but no network: black and its two dependencies
# that the image lacks are carried as wheels in .whl/ (pip download black
# platformdirs pytokens --no-deps --only-binary=:all: for its Python).
# Checks run side by side, then the eager benchmark runs alone so that
# its timings are not disturbed.  Each step is bounded by `timeout`, so a
# slow one still leaves the others' results.
set -uo pipefail
out=${1:?usage: scripts/gpu_checks.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
root=$(pwd)
specs="$root/examples/ops.yaml $root/examples/tensors.yaml $root/benchmarks/activations.yaml"

python3 -m pip install -q --no-index --no-deps --no-build-isolation .whl/*.whl . \
    >"$out/install.txt" 2>&1 || { cat "$out/install.txt"; exit 1; }
{ nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__)'; } >"$out/device.txt" 2>&1

# Not from the repository root, where ./fngen (without its templates)
# would shadow the installed package.
(cd /tmp && timeout 300 python3 -m fngen check $specs --device cuda) \
    >"$out/cuda-check-float64.txt" 2>&1 &
(cd /tmp && timeout 300 python3 -m fngen check $specs --device cuda --dtype float32) \
    >"$out/cuda-check-float32.txt" 2>&1 &
timeout 300 python3 scripts/cuda_smoke.py $specs >"$out/cuda-smoke.txt" 2>&1 &
wait
timeout 200 python3 benchmarks/run.py --device cuda --no-compile --repeats 40 --size 33554432 \
    --output "$out/RESULTS-cuda-eager.md" >"$out/bench-cuda-eager.txt" 2>&1
echo "exit: $?" >>"$out/bench-cuda-eager.txt"
for f in "$out"/*.txt; do echo "== $f"; tail -4 "$f"; done
