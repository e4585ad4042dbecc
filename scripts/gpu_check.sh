#!/usr/bin/env bash
# On a GPU host with PyTorch and no TVM (the bundles from scripts/gpu_bundles.sh in out/gpu/): installs
# the carried tvm-ffi wheel into a scratch folder, then checks and times every kernel of the suite
# bundle (NCHW, then NHWC at batch 64), and the whole MobileNetV2 at batch 1 (eager and CUDA graphs),
# against torch. About 5 minutes.
# Results: $OUT (or out/gpu/results) gets suite.json and the printed reports.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-out/gpu/results}
mkdir -p "$RESULTS"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gconvgen-site out/gpu/suite/wheels/*.whl || exit 1
# tvm-ffi would JIT-compile a torch extension (a minute or more) where torch lacks the C DLPack
# exchange API; its fallback reads torch's current stream too, and the GPU times come from graphs
export PYTHONPATH=/tmp/gconvgen-site PYTHONUNBUFFERED=1 TVM_FFI_DISABLE_TORCH_C_DLPACK=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$RESULTS/gpu.txt"
timeout 300 python3 out/gpu/suite/loader/gpu_check.py out/gpu/suite --budget-seconds 170 \
    --json "$RESULTS/suite.json" 2>&1 | tee "$RESULTS/suite.txt"
timeout 120 python3 out/gpu/nhwc/loader/gpu_check.py out/gpu/nhwc --budget-seconds 60 \
    --json "$RESULTS/nhwc.json" 2>&1 | tee "$RESULTS/nhwc.txt"
timeout 120 python3 out/gpu/model/loader/gpu_check.py out/gpu/model --model mobilenet_v2 \
    --dtypes float32,float16 2>&1 | tee "$RESULTS/model.txt"
