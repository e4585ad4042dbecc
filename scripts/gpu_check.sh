#!/usr/bin/env bash
# On a GPU host with PyTorch and no TVM (the bundles from scripts/gpu_bundles.sh in out/gpu/): installs
# the carried tvm-ffi wheel into a scratch folder, times the tuning candidates of out/gpu/cands, then
# checks and times every kernel of the suite bundle (NCHW, then NHWC at batch 64) against torch, each
# beside its fastest candidate (gpu_check.py --candidates: the geomeans once more with the faster of
# the two, what importing the timings would serve, from this one run), and the whole MobileNetV2 at
# batch 1 (eager and CUDA graphs). On an H200 the checks took 44, 22 and 11 s in Nov 2026, and the
# candidates 24 s for 1728 (measure.py replays CUDA graphs: 70 a second); 2 minutes in all, 10 at most.
# Results: $OUT (or out/gpu/results) gets suite.json, nhwc.json, the printed reports and the
# candidates' timings, cands_results.json (copy it to out/gpu/cands/results.json here, then
# `gconvgen tune --target cuda-sm90 --import-results out/gpu/cands`). Eight files: the device tool's limit.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-out/gpu/results}
mkdir -p "$RESULTS"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gconvgen-site out/gpu/suite/wheels/*.whl || exit 1
for b in nhwc model cands; do   # gpu_bundles.sh ships the runtime libraries once, in the suite bundle
    [ -d "out/gpu/$b" ] && [ ! -d "out/gpu/$b/lib" ] && cp -r out/gpu/suite/lib "out/gpu/$b/"
done
# tvm-ffi would JIT-compile a torch extension (a minute or more) where torch lacks the C DLPack
# exchange API; its fallback reads torch's current stream too, and the GPU times come from graphs
export PYTHONPATH=/tmp/gconvgen-site PYTHONUNBUFFERED=1 TVM_FFI_DISABLE_TORCH_C_DLPACK=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$RESULTS/gpu.txt"
# A kernel that faults leaves CUDA's context unusable: the check then stops (or dies), and is run again
# with --resume, which counts that kernel failed and goes on after it, within the bundle's seconds.
check_kernels() {   # bundle, seconds
    local end=$((SECONDS + $2)) left rc cands=()
    [ -f out/gpu/cands/results.json ] && cands=(--candidates out/gpu/cands)
    rm -f "$RESULTS/$1.json" "$RESULTS/$1.txt"
    for attempt in 1 2 3 4; do
        left=$((end - SECONDS))
        [ "$left" -gt 20 ] || break
        timeout "$left" python3 "out/gpu/$1/loader/gpu_check.py" "out/gpu/$1" --budget-seconds $((left * 6 / 10)) \
            --json "$RESULTS/$1.json" --resume ${cands[@]+"${cands[@]}"} 2>&1 | tee -a "$RESULTS/$1.txt"
        rc=${PIPESTATUS[0]}
        [ "$rc" -le 1 ] && break
        echo "(exit $rc: resuming after the kernel that was running)" | tee -a "$RESULTS/$1.txt"
    done
}
# First the tuning candidates (each checked against the rule's output; results.json is rewritten as it
# goes), so the checks below can time each kernel's fastest beside the bundle's (--candidates)
if [ -d out/gpu/cands ]; then
    # a candidate that faults stops the run (exit 3); --resume counts it failed and goes on after it
    rm -f out/gpu/cands/results.json out/gpu/cands/measuring.json "$RESULTS/cands.txt"
    end=$((SECONDS + 330))
    for attempt in 1 2 3 4 5 6; do
        left=$((end - SECONDS))
        [ "$left" -gt 10 ] || break
        timeout "$left" python3 out/gpu/cands/loader/measure.py out/gpu/cands --resume >> "$RESULTS/cands.txt" 2>&1
        rc=$?
        [ "$rc" -le 1 ] && break
        echo "(exit $rc: resuming after the candidate that was running)" >> "$RESULTS/cands.txt"
    done
    tail -n 3 "$RESULTS/cands.txt"
    cp out/gpu/cands/results.json "$RESULTS/cands_results.json"   # candidates.json is the one built here
fi
check_kernels suite 150
check_kernels nhwc 60
timeout 40 python3 out/gpu/model/loader/gpu_check.py out/gpu/model --model mobilenet_v2 \
    --dtypes float32,float16 2>&1 | tee "$RESULTS/model.txt"
