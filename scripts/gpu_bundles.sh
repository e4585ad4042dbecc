#!/usr/bin/env bash
# Build here (no GPU needed) what a GPU host checks in one run, into out/gpu/:
#   out/gpu/suite  the public suite at batch 1 and 64, float32 and float16 (issue 6's kernel table)
#   out/gpu/nhwc   the same in NHWC at batch 64 (the depthwise bandwidth target, in either layout)
#   out/gpu/model  MobileNetV2's layers at batch 1, float32 and float16 (the whole model, CUDA graphs)
#   out/gpu/cands  tuning candidates of the suite's depthwise layers at batch 64, float32 and float16, 4
#                  each (the rule's own first), for the GPU host to time (loader/measure.py); their
#                  results come back with `gconvgen tune --target cuda-sm90 --import-results DIR`
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
.venv/bin/python - <<'EOF'
import json
from gconvgen import suites
rows = [{**w.spec.to_json(), "name": f"{w.name}.{dtype}", "batch": 64, "dtype": dtype}
        for w in suites.load("public") if w.spec.op_class == "depthwise" for dtype in ("float32", "float16")]
json.dump({"version": 1, "workloads": rows}, open("out/gpu/depthwise64.json", "w"), indent=1)
EOF
rm -rf out/gpu/cands
.venv/bin/gconvgen tune --target "$TARGET" --suite out/gpu/depthwise64.json --trials 4 --export-candidates out/gpu/cands
du -sh out/gpu
