#!/usr/bin/env bash
# Build here (no GPU needed) what a GPU host checks in one run, into out/gpu/:
#   out/gpu/suite  the public suite at batch 1 and 64, float32 and float16 (issue 6's kernel table)
#   out/gpu/nhwc   the same in NHWC at batch 64 (the depthwise bandwidth target, in either layout)
#   out/gpu/model  MobileNetV2's layers at batch 1, float32 and float16 (the whole model, CUDA graphs)
#   out/gpu/cands  tuning candidates, 4 each (the rule's own first) plus the schedules of the other
#                  rules that apply (gconvgen.offline), of the kernels of the suite at batch 64 (either
#                  layout) and of MobileNetV2 at batch 1 where a rule whose space no GPU has explored
#                  as it is serves or could serve: all of them but the fallback's; the NCHW depthwise
#                  layers on both their rules (vector stores since their Nov 2026 timings) and
#                  cuda.DepthwiseColumnsNCHW; beside the
#                  NHWC depthwise ones, cuda.DepthwiseWideNHWC (and for kernels 5 or more wide,
#                  cuda.DepthwiseRowsNHWC);
#                  beside the NCHW grouped and 1x1 ones, cuda.GroupConvStagedNCHW and the batch GEMM
#                  (cuda.BatchGemm); beside the grouped and dense ones in float16, the tensor cores
#                  (cuda.TensorCoreGemm, and with cp.async copies cuda.TensorCoreGemmPipelined), and
#                  their TF32 kernels (cuda.TensorCoreGemmTF32, as the bundles hold them); beside
#                  the dense 1x1s, DLight's GEMM (cuda.PointwiseGemm).
#                  ALT=N draws N from each alternative's space (not only its own schedule), TRIALS=N
#                  N from the space of the rule that ran the kernel fastest (4), RULES=a,b only the
#                  kernels those rules apply to (e.g. the alternatives a GPU has not timed), SEED=N
#                  the seed of each kernel's search (0 by default), NEIGHBORS=N up to N more a kernel: the
#                  fastest timed points of the kernels nearest it, fitted to its shape (2 by default).
#                  The search starts from what
#                  tune_logs/ holds (gconvgen.offline: timed points seed it, a cost model trained on
#                  them ranks new ones), so each round of this, gpu_check.sh there and the import
#                  `gconvgen tune --target cuda-sm90 --import-results out/gpu/cands` refines the last.
# The suite bundle carries the runtime libraries, libcudart and the tvm-ffi wheel for Python 3.12; the
# others' lib/ is dropped here and copied from it there (the device tool carries 64 MiB). Then, on the
# GPU host (or through the device tool, carrying out/gpu):
#   scripts/gpu_check.sh
# About 40 minutes on 2 cores (2438 candidates, TRIALS=8 ALT=2, Nov 2026): two thirds drawing them
# (each kernel's search, ranked by the cost model), a third nvcc compiling them on both cores.
# CANDS=0 rebuilds the checked bundles only, e.g. after importing timings.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${TARGET:-cuda-sm90}
.venv/bin/gconvgen build --target "$TARGET" --suite public --batches 1,64 --dtypes float32,float16 \
    --wheel-python 3.12 -o out/gpu/suite
.venv/bin/gconvgen build --target "$TARGET" --suite public --layout NHWC --batches 64 --dtypes float32,float16 \
    -o out/gpu/nhwc
.venv/bin/gconvgen build --target "$TARGET" --model mobilenet_v2 --dtypes float32,float16 -o out/gpu/model
rm -rf out/gpu/cands
if [ "${CANDS:-1}" != 0 ]; then   # CANDS=0: the three checked bundles only (2 minutes, not 40), no candidates
TARGET=$TARGET RULES=${RULES:-} .venv/bin/python - <<'EOF'
import dataclasses, json, os
from gconvgen import suites, targets
from gconvgen.models import layer_specs
from schedules import rules_for, tf32_spec
profile = targets.load(os.environ["TARGET"])
target = profile.tvm_target()
# the rules whose spaces an H200 has timed as they are (tune_logs/cuda-sm90); DLight's tensor-core GEMM
# has no space (the depthwise and grouped rules timed in Nov 2026 store vectors since)
timed = {"cuda.PointwiseTensorCoreNHWC", "cuda.Fallback"}
family = rules_for(profile.family)
named = [(f"{w.name}.nhwc64", dataclasses.replace(w.spec, batch=64)) for w in suites.load("public", "NHWC")]
named += [(f"mobilenet_v2.{i}", s) for i, s in enumerate(layer_specs("mobilenet_v2"))]
named += [(f"{w.name}.nchw64", dataclasses.replace(w.spec, batch=64)) for w in suites.load("public", "NCHW")]
# RULES=a,b: only the kernels those rules apply to (e.g. new alternatives, for a short GPU run)
wanted = set(filter(None, os.environ["RULES"].split(",")))
# each in float32, float16 and, where tensor cores serve it, TF32 (as the bundles hold them); each also as
# the alternatives a rule offers (schedules.alternative_specs: a float16 depthwise conv with a wide
# kernel banded, cuda.DepthwiseTensorCoreNCHW), another kernel's candidates, which the bundles build
# in the plain kernel's place once its timings beat the plain kernel's (gconvgen.schedule.timed_spec)
from schedules import alternative_specs
typed = lambda s: [dataclasses.replace(s, dtype=d) for d in ("float32", "float16")] + [
    t for t in [tf32_spec(dataclasses.replace(s, dtype="float32"), profile.family, target)] if t is not None]
variants = lambda s: [v for t in typed(s) for v in [t, *alternative_specs(t, profile.family, target)]]
rows = [{**spec.to_json(), "name": f"{name}.{'tf32' if spec.tf32 else spec.dtype}{'.banded' if spec.banded else ''}"}
        for name, s in named for spec in variants(s)
        if any((r.name in wanted if wanted else r.name not in timed) and r.applies(spec, target) for r in family)]
rows = list({json.dumps({k: v for k, v in r.items() if k != "name"}, sort_keys=True): r for r in rows}.values())
json.dump({"version": 1, "workloads": rows}, open("out/gpu/cands.json", "w"), indent=1)
print(f"{len(rows)} kernels to draw candidates for")
EOF
.venv/bin/gconvgen tune --target "$TARGET" --suite out/gpu/cands.json --trials "${TRIALS:-4}" --alternative-trials "${ALT:-1}" --seed "${SEED:-0}" \
    --neighbor-trials "${NEIGHBORS:-2}" --export-candidates out/gpu/cands
fi
rm -rf out/gpu/nhwc/lib out/gpu/model/lib out/gpu/cands/lib
du -sh out/gpu
