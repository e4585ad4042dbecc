#!/usr/bin/env bash
# Build here (no GPU needed) what a GPU host checks in one run, into out/gpu/:
#   out/gpu/suite  the public suite at batch 1 and 64, float32 and float16 (issue 6's kernel table)
#   out/gpu/nhwc   the same in NHWC at batch 64 (the depthwise bandwidth target, in either layout)
#   out/gpu/model  MobileNetV2's layers at batch 1, float32 and float16 (the whole model, CUDA graphs)
# Each carries the runtime libraries, libcudart, the tvm-ffi wheel for Python 3.12 and gconvgen's
# python package. Then, on the GPU host (or through the device tool, carrying out/gpu):
#   scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-cuda-sm90}
.venv/bin/gconvgen build --target "$TARGET" --suite public --batches 1,64 --dtypes float32,float16 \
    --wheel-python 3.12 -o out/gpu/suite
.venv/bin/gconvgen build --target "$TARGET" --suite public --layout NHWC --batches 64 --dtypes float32,float16 \
    -o out/gpu/nhwc
.venv/bin/gconvgen build --target "$TARGET" --model mobilenet_v2 --dtypes float32,float16 \
    --wheel-python 3.12 -o out/gpu/model
du -sh out/gpu
