#!/usr/bin/env bash
# The GPU checks of issue 3, for a session that is lent a device (15 minutes of device
# time in all). Each step has a timeout; together they stop within 480 s, inside the
# call's 540 (the CPU dry run takes under a minute).
#
# Here, once (the device has no constriction and no registry):
#     bash benchmarks/gpu_check.sh --wheels        # constriction for Python 3.12 into .whl/
# Then one call of the device tool:
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# and copy the files that come back into benchmarks/results/gpu/ (each starts with its
# command). GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh is the same run on the CPU,
# to try the script out.
#
# What it runs: the CUDA tests (real round trips in float32/float16, with and without
# CUDA graphs; the conformance files on CUDA; the TensorRT tests skip without TensorRT),
# the cross matrix with CUDA decoders, benchmarks.gpu_check (round
# trips, latency, and whether the CPU's files decode on the GPU) and two profiles.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--wheels" ]; then
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "constriction==0.5.0"
fi
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT=${OUT:-/tmp/fastlic-gpu-check}
mkdir -p "$OUT"
if ! python3 -c "import constriction" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "no constriction wheel: run --wheels here first"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1

step() {   # step FILE TIMEOUT COMMAND...: the command line, then its output, into $OUT/FILE
    local file=$1 limit=$2
    shift 2
    { echo "\$ $*"; timeout "$limit" "$@"; echo "(exit $?)"; } 2>&1 | tee "$OUT/$file"
}

{ echo '$ nvidia-smi'; nvidia-smi 2>&1 || echo "(no nvidia-smi)"; } > "$OUT/nvidia-smi.txt"
step pytest.txt 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_graphs.py \
    tests/test_precision.py tests/test_bfloat16.py tests/test_tensorrt_engine.py \
    tests/test_conformance.py
# the cross matrix with CUDA decoders (float32/float16/bfloat16): Kodak if carried in
# carry/kodak (cp -r ../shared/data/kodak carry/; carry ["carry", ".whl"]), else the photos
step cross_backend.txt 120 python3 -m benchmarks.cross_backend carry/kodak --out "$OUT/cross_backend.md"
step gpu_check.txt 120 python3 -m benchmarks.gpu_check --device "$DEVICE"
python3 -c "from skimage import data; from PIL import Image
Image.fromarray(data.astronaut()).save('/tmp/astronaut.png')"
if [ "$DEVICE" = cpu ]; then fast=(--dtype bfloat16); else fast=(--dtype float16 --cuda-graphs); fi
step profile_fast.txt 60 python3 -m fastlic.cli profile /tmp/astronaut.png --device "$DEVICE" \
    "${fast[@]}" --repeat 20 --json "$OUT/profile_fast.json" --plot "$OUT/profile_fast.png"
step profile_float32.txt 60 python3 -m fastlic.cli profile /tmp/astronaut.png --device "$DEVICE" \
    --repeat 20
