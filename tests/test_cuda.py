"""CUDA targets built here (nvcc, no GPU): the libraries embed fatbins, the bundle carries what a GPU
host needs; the GPU check script itself is exercised on this CPU, where it can run."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gconvgen import bundle, runtime, suites, targets
from gconvgen.cuda import FATBIN_MAGIC, has_fatbin
from gconvgen.spec import KernelSpec

SPECS = [w.spec for w in suites.load("public")][:2] + [
    KernelSpec.from_json({"op": "conv2d", "in_channels": 64, "out_channels": 128, "height": 14, "width": 14,
                          "groups": 4, "epilogue": ["bias", "relu", "shuffle:4"]}),
    KernelSpec.from_json({"op": "channel_shuffle", "channels": 48, "height": 7, "width": 7, "groups": 3})]
SPECS += [dataclasses.replace(SPECS[0], dtype="float16"), SPECS[0].with_layout("NHWC"),
          KernelSpec.from_json({"op": "conv2d", "batch": 8, "in_channels": 32, "out_channels": 128, "height": 28,
                                "width": 28, "epilogue": ["bias", "relu6"], "dtype": "float16"})]
SPECS += [SPECS[-1].with_layout("NHWC")]   # the tensor cores
SPECS += [KernelSpec.from_json({"op": "conv2d", "in_channels": 960, "out_channels": 320, "height": 7, "width": 7,
                                "epilogue": ["bias"]})]   # few outputs, a long reduction: split across threads
SPECS += [SPECS[-1].with_layout("NHWC"),   # a channel vector a thread
          KernelSpec.from_json({"op": "conv2d", "in_channels": 32, "out_channels": 8, "height": 14, "width": 14,
                                "layout": "NHWC", "dtype": "float16"}),   # DLight's tensor-core GEMM (8 outputs)
          dataclasses.replace(SPECS[6], dtype="float32")]   # tiles of a plane

POOL = KernelSpec.from_json({"op": "max_pool2d", "in_channels": 8, "height": 12, "width": 12, "kernel": 3,
                             "stride": 2, "padding": 1})   # (the fallback's, in NCHW)
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit (nvcc)")


@needs_nvcc
@pytest.mark.parametrize("name", ["cuda-sm90", "cuda-sm80"])
def test_cuda_bundle_embeds_fatbins(name, tmp_path):
    out = bundle.make(SPECS + [POOL], targets.load(name), tmp_path / name, use_logs=False)   # (the rules, untuned)
    assert has_fatbin(out / "gconvgen.so"), "the library carries CUDA source, not device code"
    data = json.loads((out / "manifest.json").read_text())
    rules = {k["rule"] for k in data["kernels"]}
    # (the 112x112 depthwise in either dtype on the staged columns: what an H200 timed faster)
    assert {"cuda.DepthwiseColumnsStagedNCHW", "cuda.DepthwiseWideNHWC", "cuda.ChannelVectorNHWC",
            "cuda.PointwiseTiledNCHW", "cuda.TensorCoreGemm", "cuda.PointwiseTensorCoreNHWC", "cuda.GroupConvStagedNCHW",
            "cuda.SplitReductionNCHW", "cuda.ChannelShuffle", "cuda.Fallback"} <= rules
    assert data["target"]["tvm_target"]["arch"] == name.replace("cuda-sm", "sm_")
    # nvcc ran in parts, on every core: one device module a part, and each kernel's code among them
    import tvm
    lib = tvm.runtime.load_module(str(out / "gconvgen.so"))
    assert all(m.kind == "cuda" for m in lib.imports)
    assert len(lib.imports) > 1 or len(os.sched_getaffinity(0)) == 1
    assert all(lib.get_function(k["function"] + "_kernel", query_imports=True) for k in data["kernels"])
    assert all(unpacked > packed for packed, unpacked in _fatbins(out / "gconvgen.so"))   # compressed
    for f in ("lib/libtvm_runtime.so", "lib/libtvm_runtime_cuda.so", "lib/libtvm_ffi.so", "loader/gpu_check.py"):
        assert (out / f).exists(), f


def _fatbins(library: Path) -> list[tuple[int, int]]:
    """(stored, unpacked) bytes of each fatbin's first entry in a library; unpacked is 0 for one stored
    as it is (the entry header's layout as cuobjdump reads it: size at 8, the unpacked size at 56)."""
    import struct
    data, found, at = library.read_bytes(), [], 0
    while (at := data.find(FATBIN_MAGIC, at)) >= 0:
        entry = at + struct.unpack_from("<H", data, at + 6)[0]
        found.append((struct.unpack_from("<Q", data, entry + 8)[0], struct.unpack_from("<Q", data, entry + 56)[0]))
        at += 16
    assert found, "no fatbin in the library"
    return found


@needs_nvcc
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="needs gcc-aarch64-linux-gnu")
def test_jetson_library_is_aarch64_with_fatbin(tmp_path):
    from gconvgen import build
    out = build.build(SPECS[:2], targets.load("cuda-sm87"), tmp_path / "orin")
    assert runtime.elf_arch(out / "gconvgen.so") == "aarch64" and has_fatbin(out / "gconvgen.so")


def test_gpu_check_script_runs_on_a_cpu_bundle(host, tmp_path):
    big_depthwise = dataclasses.replace(SPECS[0], in_channels=96, out_channels=96, groups=96)   # 9.6 MB moved
    out = bundle.make(SPECS[2:4] + [big_depthwise, POOL], host, tmp_path / "cpu")
    done = subprocess.run([sys.executable, out / "loader" / "gpu_check.py", out, "--device", "cpu",
                           "--json", tmp_path / "r.json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 kernels match torch" in done.stdout
    assert "depthwise moving 4 MB or more, float32 batch 1: " in done.stdout   # issue 6's bandwidth target
    journal = json.loads((tmp_path / "r.json").read_text())
    rows = journal["rows"]
    assert all(r["ok"] and r["ours_us"] > 0 and r["bandwidth_fraction"] > 0 for r in rows)
    # float32 convs but depthwise ones are timed in torch without TF32 too (the grouped 1x1 here)
    assert [r["key"] for r in rows if r.get("torch_ieee_us", 0) > 0] == [SPECS[2].key]
    assert "of which 1 float32 convs that torch runs in TF32 by default: " in done.stdout
    # the roofline: the longer of the move at copy bandwidth and the multiply-adds at torch's FMA rate
    bw, fma = journal["copy_bytes_per_us"], journal["fma_per_us"]
    dw = next(r for r in rows if r["key"] == big_depthwise.key)
    assert dw["macs"] == 96 * 112 * 112 * 9
    assert dw["roofline_us"] == pytest.approx(max(dw["copy_us"], dw["macs"] / fma)) and dw["copy_us"] > 0
    assert dw["bandwidth_ceiling"] == pytest.approx(min(1.0, dw["moved_bytes"] / bw / (dw["macs"] / fma)))
    assert dw["roofline_fraction"] == pytest.approx(dw["roofline_us"] / dw["ours_us"])
    assert next(r for r in rows if r["op"] == "max_pool2d")["macs"] == 0
    assert "% of their roofline" in done.stdout and "% of roofline (" in done.stdout
    # a run that died in its last kernel (a fault breaks CUDA's context): --resume counts that kernel
    # failed and checks none of the others again
    died = rows.pop()["key"]
    (tmp_path / "r.json").write_text(json.dumps({**journal, "rows": rows, "current": died}))
    again = subprocess.run([sys.executable, out / "loader" / "gpu_check.py", out, "--device", "cpu", "--json",
                            tmp_path / "r.json", "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "the last run died in this kernel" in again.stdout and "3 of 4 kernels match torch" in again.stdout
    assert again.stdout.count("ok  ") == 0
    final = json.loads((tmp_path / "r.json").read_text())
    assert [r["key"] for r in final["rows"]][-1] == died and final["current"] is None


@needs_nvcc
def test_cuda_bundle_is_refused_clearly_without_a_gpu(tmp_path):
    """Here (no driver, or the compile-only stub) a CUDA library names what it needs instead of
    failing inside TVM's module loader; the bundle carries the CUDA runtime its plugin links against."""
    out = bundle.make(SPECS[:1], targets.load("cuda-sm90"), tmp_path / "sm90")
    assert (out / "lib" / bundle.CUDART).exists()
    with pytest.raises(RuntimeError, match="sm_90.*no CUDA driver or GPU"):
        runtime.load(out)
    from gconvgen import torch_ops
    with pytest.raises(RuntimeError, match="no CUDA driver or GPU"):
        torch_ops.use_library(out)
    assert not [lib for lib in torch_ops._libraries if lib.is_cuda]


def test_gpu_architecture_compatibility():
    from gconvgen.loader.gconvgen_loader import runs_on
    assert runs_on("sm_90", (9, 0)) and runs_on("sm_80", (8, 7)) and runs_on("sm_80", (8, 9))
    assert not runs_on("sm_87", (8, 0)) and not runs_on("sm_80", (9, 0)) and not runs_on("sm_90", (10, 0))
    assert runs_on("sm_90a", (9, 0)) and not runs_on("sm_90a", (9, 1))
    assert runs_on("sm_100", (10, 3)) and not runs_on("sm_100", (12, 0))


def test_gpu_check_rounds_tf32_as_the_kernels_do(monkeypatch):
    """The GPU check's reference for a TF32 kernel rounds its inputs as the kernel (and
    gconvgen.reference) does, bit for bit, and sums such kernels up apart from the exact float32 ones."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "gconvgen" / "loader"))
    import gpu_check
    import torch
    from gconvgen.reference import round_to_tf32
    x = torch.randint(-2 ** 31, 2 ** 31, (1 << 16,), generator=torch.Generator().manual_seed(1),
                      dtype=torch.int64).to(torch.int32).view(torch.float32)
    assert torch.equal(gpu_check.round_to_tf32(x).view(torch.int32)[~x.isnan()], round_to_tf32(x).view(torch.int32)[~x.isnan()])
    spec = {**KernelSpec.from_json({"in_channels": 32, "out_channels": 32, "height": 4, "width": 4}).to_json()}
    assert gpu_check._row("k", spec, True, 0.0)["dtype"] == "float32"
    assert gpu_check._row("k", {**spec, "tf32": True}, True, 0.0)["dtype"] == "tf32"


def test_gpu_check_timer_is_per_call(monkeypatch):
    """The timer reports µs per call of fn, however many calls a sample makes (a sample of a CUDA graph
    replays all reps calls at once; once it was divided by one replay, 20x too slow)."""
    import time
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "gconvgen" / "loader"))
    import gpu_check
    us = gpu_check.Timer("cpu")(lambda: time.sleep(0.002), reps=4, rounds=3)
    assert 1900 < us < 4000, us
    samples = gpu_check.Timer("cpu").samples(lambda: time.sleep(0.002), reps=2, rounds=3)   # (measure.py's)
    assert len(samples) == 3 and all(1900 < us < 4000 for us in samples), samples


def test_gpu_check_names_depthwise_layers_whose_multiply_adds_cap_their_bandwidth(monkeypatch, capsys):
    """A 7x7 depthwise layer in float16 does 49 multiply-adds per 4 bytes: on an H200 its float32 FMAs
    take longer than its move, so 70 % of copy bandwidth is out of reach; the summary says so."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "gconvgen" / "loader"))
    import gpu_check
    row = {"dtype": "float16", "batch": 64, "depthwise": True, "moved_bytes": 77e6}
    rows = [{**row, "speedup": 2.0, "bandwidth_fraction": 0.8, "roofline_fraction": 0.8, "bandwidth_ceiling": 1.0},
            {**row, "speedup": 1.5, "bandwidth_fraction": 0.3, "roofline_fraction": 0.5, "bandwidth_ceiling": 0.6}]
    gpu_check.summary(rows, "")
    said = capsys.readouterr().out
    assert "float16 batch 64: 1.73x over 2 kernels, at 63 % of their roofline" in said
    assert "1 of 2 at 70 % of copy bandwidth or more (lowest 30 %); 63 % of their roofline" in said
    assert "of which 1 cannot reach 70 % at the float32 FMA rate" in said and "60 % at most; they reach 50 %" in said


NO_COMPILER = """
import runpy, sys
class NoTVM:   # as on a GPU host: PyTorch and tvm-ffi, but importing TVM's compiler fails
    def find_spec(self, name, path=None, target=None):
        if name == "tvm" or name.startswith("tvm."):
            raise ModuleNotFoundError("no TVM compiler on this host", name=name)
sys.meta_path.insert(0, NoTVM())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _without_compiler(*argv, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", NO_COMPILER, *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_gpu_check_model_runs_on_a_cpu_bundle(host, tmp_path):
    """The whole-model part of the GPU check on a CPU bundle of MobileNetV2's layers, run as on a GPU
    host without TVM's compiler: the bundle's own gconvgen package, strict, so every layer runs on
    the bundle's kernels (on a GPU the check adds the CUDA graphs); a layer the bundle lacks is an
    error naming why, not a compile or a silent aten call."""
    from gconvgen.models import layer_specs
    from schedules import preferred_spec
    target = host.tvm_target()
    specs = [preferred_spec(s, host.family, target) for s in layer_specs("mobilenet_v2")]
    out = bundle.make(specs, host, tmp_path / "mbv2")
    done = _without_compiler(out / "loader" / "gpu_check.py", out, "--device", "cpu", "--model", "mobilenet_v2",
                             cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   mobilenet_v2 float32 batch 1" in done.stdout and "all models match torch" in done.stdout
    assert f"gconvgen from {out / 'python' / 'gconvgen'}" in done.stdout
    short = bundle.make([s for s in specs if s.key != specs[0].key], host, tmp_path / "short")
    missing = _without_compiler(short / "loader" / "gpu_check.py", short, "--device", "cpu", "--model",
                                "mobilenet_v2", cwd=tmp_path)
    assert missing.returncode != 0 and "cannot be built here: no compiler installed" in missing.stderr, missing.stderr


def test_cuda_rules_schedule_every_suite_layer():
    """Every layer of the public suite, in either layout, at batch 1, 2 and 64, gets its CUDA rule's
    schedule (no compile: the rules' own arithmetic once failed on NHWC 1x1s at batch 1, and the split
    reduction's on MobileNetV2's 7x7 and 14x14 1x1s at batch 2 to 4), and where it has one, its TF32
    kernel gets the TF32 tensor-core GEMM's."""
    from gconvgen.schedule import rule_schedule
    from schedules import tf32_spec
    profile = targets.load("cuda-sm90")
    for layout in ("NCHW", "NHWC"):
        for w in suites.load("public", layout):
            for batch in (1, 2, 64):
                spec = dataclasses.replace(w.spec, batch=batch)
                assert rule_schedule(spec, profile).source.startswith("cuda.")
                variant = tf32_spec(spec, profile.family, profile.tvm_target())
                if variant is not None:
                    assert rule_schedule(variant, profile).source == "cuda.TensorCoreGemmTF32"


def test_cuda_alternatives_schedule_every_suite_layer():
    """Every hand-written CUDA rule that applies to a layer of the public suite (either layout, batch
    1 and 64, float32 and float16) schedules it, untuned and as a tuning space, within the target's
    thread and shared-memory limits (a rule's own schedule past them failed nvcc on a whole library of
    candidates: the batch GEMM's, 98 KB for ResNeXt's g32 at 56x56), and the TF32 kernels of the
    float32 layers that have one: the alternatives only serve
    through tuned records, so no other test reaches most of them. (The two rules that are DLight's
    GEMM schedule are left out: slow to apply this often, and not ours.)"""
    import tvm
    from gconvgen.offline import fits
    from gconvgen.ops import prim_func
    from schedules import cuda, tf32_spec
    target = targets.load("cuda-sm90").tvm_target()
    dlight_or_fallback = (cuda.PointwiseGemm, cuda.PointwiseTensorCoreNHWC, cuda.Fallback)
    applied = set()
    for layout in ("NCHW", "NHWC"):
        for w in suites.load("public", layout):
            for batch, dtype in ((1, "float32"), (64, "float32"), (1, "float16"), (64, "float16"), (1, "tf32"),
                                 (64, "tf32")):
                spec = dataclasses.replace(w.spec, batch=batch, dtype="float32" if dtype == "tf32" else dtype)
                if dtype == "tf32":
                    spec = tf32_spec(spec, "cuda", target)
                    if spec is None:
                        continue
                for rule in cuda.RULES:
                    if rule.applies(spec, target) and not isinstance(rule, dlight_or_fallback):
                        assert rule.apply(prim_func(spec), target, tunable=True) is not None, (rule.name, spec.key)
                        sch = rule.apply(prim_func(spec), target, tunable=False)
                        assert fits(sch, tvm.IRModule({"main": prim_func(spec)}), target), (rule.name, spec.key)
                        applied.add(rule.name)
    assert {"cuda.DepthwiseStagedNCHW", "cuda.DepthwiseColumnsNCHW", "cuda.DepthwiseColumnsStagedNCHW",
            "cuda.DepthwisePlanesNCHW", "cuda.DepthwiseWideNHWC", "cuda.DepthwiseRowsNHWC",
            "cuda.BatchGemm", "cuda.TensorCoreGemm", "cuda.TensorCoreGemmTF32"} <= applied


@pytest.mark.parametrize("cin, cout, size, k, stride, groups, batch, layout", [
    (32, 2, 6, 1, 1, 2, 3, "NCHW"),      # one output channel a group
    (96, 8, 17, 5, 1, 8, 2, "NHWC"),
    (8, 32, 15, 3, 1, 8, 3, "NHWC"),     # depthwise with a channel multiplier
    (8, 32, 15, 3, 1, 8, 3, "NCHW"),
    (64, 64, 12, 3, 2, 8, 2, "NCHW"),    # the split reduction across planes of several images
    (58, 1, 15, 3, 1, 1, 3, "NHWC"),     # one output channel
    (24, 3, 3, 3, 2, 3, 4, "NCHW"),      # a 2x2 output
])
def test_cuda_rules_schedule_odd_shapes(cin, cout, size, k, stride, groups, batch, layout):
    """Shapes off the suite's (a random sweep of 1,500 found each of these refused by an alternative:
    a tuning run or a candidates export died on them): every CUDA rule that applies schedules them,
    in float32 and float16, untuned and as a tuning space."""
    from gconvgen.ops import prim_func
    from gconvgen.spec import KernelSpec
    from schedules import cuda
    target = targets.load("cuda-sm90").tvm_target()
    for dtype in ("float32", "float16"):
        spec = KernelSpec.from_json({"op": "conv2d", "batch": batch, "in_channels": cin, "out_channels": cout,
                                     "height": size, "width": size, "kernel": [k, k], "stride": [stride, stride],
                                     "padding": [k // 2, k // 2], "groups": groups, "epilogue": ["bias"],
                                     "layout": layout, "dtype": dtype})
        for rule in cuda.RULES:
            if rule.applies(spec, target):
                for tunable in (False, True):
                    assert rule.apply(prim_func(spec), target, tunable=tunable) is not None, (rule.name, spec.key)


@pytest.mark.parametrize("profile", ["cuda-sm90", "x86-avx512", "arm-cortex-a76"])
def test_rules_schedule_kernels_with_unit_axes(profile):
    """The op leaves a kernel's unit axes out of its reduction (a 1x1 depthwise conv, a per-channel
    scale, has none; a 1x3 no rows): every rule that applies schedules such kernels, untuned and as
    a tuning space, in either layout (the CUDA column rules, serving NCHW depthwise, and the
    tensor-core GEMM assumed both taps and failed on them until November 2026)."""
    from gconvgen.ops import prim_func
    from schedules import rules_for
    loaded = targets.load(profile)
    target = loaded.tvm_target()
    dtypes = ("float32", "float16") if loaded.family == "cuda" else ("float32",)
    scheduled = 0
    for kernel in ((1, 1), (1, 3), (3, 1), (1, 7)):
        for cin, groups, layout, dtype in [(c, g, lay, d) for c, g in ((16, 16), (64, 2)) for lay in ("NCHW", "NHWC")
                                           for d in dtypes]:
            spec = KernelSpec.from_json({"op": "conv2d", "batch": 2, "in_channels": cin, "out_channels": cin,
                                         "height": 12, "width": 12, "kernel": list(kernel),
                                         "padding": [kernel[0] // 2, kernel[1] // 2], "groups": groups,
                                         "epilogue": ["bias"], "layout": layout, "dtype": dtype})
            for rule in rules_for(loaded.family):
                if rule.applies(spec, target):
                    for tunable in (False, True):
                        assert rule.apply(prim_func(spec), target, tunable=tunable) is not None, (rule.name, spec.key)
                        scheduled += 1
    assert scheduled > 50


@needs_nvcc
def test_gpu_limits_are_checked(tmp_path):
    """offline.fits finds a schedule past the 48 KB of static shared memory a block may have (the
    batch GEMM's staged tile without its bound: 98 KB on ResNeXt's g32 at 56x56, which failed nvcc on
    a whole library of candidates after 18 minutes), and the bounded one within; where nvcc refuses
    a kernel all the same, the error names it and ptxas's reason."""
    import tvm
    from gconvgen import build
    from gconvgen.offline import fits
    from gconvgen.ops import prim_func
    from schedules import cuda
    profile = targets.load("cuda-sm90")
    target = profile.tvm_target()
    spec = next(w.spec for w in suites.load("public", "NHWC") if w.name == "rx50.g32c128x56")
    spec = dataclasses.replace(spec, batch=64)
    mod = tvm.IRModule({"main": prim_func(spec)})
    unbounded = cuda.BatchGemm(stage_bytes=1 << 20).apply(prim_func(spec), target, tunable=False)
    assert not fits(unbounded, mod, target)
    assert fits(cuda.BatchGemm().apply(prim_func(spec), target, tunable=False), mod, target)
    name = f"c2_{spec.func_name}"
    with pytest.raises(build.Refused) as refused:
        build.compile_library({name: unbounded.mod["main"].with_attr("global_symbol", name)}, profile, tmp_path / "c.so")
    assert list(refused.value.kernels) == [name]
    assert refused.value.kernels[name].startswith("uses too much shared data")
    assert f"  {name}: uses too much shared data" in str(refused.value)


@needs_nvcc
def test_an_export_leaves_out_the_candidates_nvcc_refuses(tmp_path, monkeypatch):
    """A candidate whose CUDA source nvcc rejects (a C++ error, not ptxas's) costs that candidate, not
    the export: nvcc's error names a line, the kernel holding it is left out with a warning naming
    its rule, kernel and reason, and the rest make the library. The planes rule without its bound
    on plane size (which it has for this reason) writes such code for a 28x28 float16 plane: TVM
    gathers the copy's vectors with 8-lane 64-bit indices, which nvcc refuses; a round's whole
    library once failed on it after 35 minutes. A build (not an export) raises, naming it."""
    import tvm
    from gconvgen import build, offline
    from gconvgen.ops import prim_func
    from schedules import cuda
    profile = targets.load("cuda-sm90")
    spec = KernelSpec.from_json({"op": "conv2d", "batch": 2, "in_channels": 16, "out_channels": 16, "height": 28,
                                 "width": 28, "kernel": [3, 3], "padding": [1, 1], "groups": 16, "epilogue": ["bias"],
                                 "dtype": "float16"})
    unbounded = cuda.DepthwisePlanesNCHW(max_plane=1 << 20)
    assert unbounded.applies(spec, profile.tvm_target()) and not cuda.DepthwisePlanesNCHW().applies(spec, profile.tvm_target())
    monkeypatch.setattr(cuda, "RULES", [r for r in cuda.RULES if r.name != unbounded.name] + [unbounded])
    with pytest.warns(UserWarning, match=r"nvcc refused 1 of \d+ candidates") as warned:
        out = offline.export([spec], profile, tmp_path / "cands", trials=1, alternative_trials=1)
    message = str(next(w.message for w in warned if "nvcc refused" in str(w.message)))
    assert f"({unbounded.name}, {spec.key}): too many arguments in function call" in message
    data = json.loads((out / "candidates.json").read_text())
    rules = {c["rule"] for c in data["candidates"]}
    assert unbounded.name not in rules and len(rules) >= 3
    lib = tvm.runtime.load_module(str(out / offline.LIBRARY))
    assert all(lib.get_function(c["function"] + "_kernel", query_imports=True) for c in data["candidates"])
    assert set(offline.records(out)["records"]) == {c["function"] for c in data["candidates"]}
    funcs = {name: rule.apply(prim_func(spec), profile.tvm_target(), tunable=False).mod["main"].with_attr("global_symbol", name)
             for name, rule in (("good", cuda.DepthwiseStagedNCHW()), ("bad", unbounded))}
    with pytest.raises(build.Refused, match="too many arguments in function call"):
        build.compile_library({"bad": funcs["bad"]}, profile, tmp_path / "b.so")
    # (one nvcc run for both, as a part of a library holds several kernels: the part is compiled again without it)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert list(build.compile_library(funcs, profile, tmp_path / "g.so", drop_refused=True)) == ["bad"]
    assert tvm.runtime.load_module(str(tmp_path / "g.so")).get_function("good_kernel", query_imports=True)


def _suite_layer(name: str, layout: str, dtype: str) -> KernelSpec:
    """A layer of the public suite at batch 64."""
    spec = next(w.spec for w in suites.load("public", layout) if w.name == name)
    return dataclasses.replace(spec, batch=64, dtype=dtype)


def _cuda_source(mod) -> str:
    """The CUDA source TVM writes for a scheduled module (sm_90), without nvcc's compile."""
    from cuda_emulator import cuda_source
    return cuda_source(mod["main"], targets.load("cuda-sm90").tvm_target())


@needs_nvcc
@pytest.mark.parametrize("layout, rule", [("NCHW", "DepthwiseStagedNCHW"), ("NHWC", "DepthwiseWideNHWC")])
def test_depthwise_alternatives_load_16_bytes(layout, rule):
    """The two depthwise alternatives exist for their 16-byte loads of the input, in float16 too (8
    lanes): the CUDA source reads input_ptr as uint4 (TVM's type for 8 halves)."""
    from gconvgen.ops import prim_func
    from schedules import cuda
    spec = _suite_layer("mbv2.dw144x56", layout, "float16")
    sch = getattr(cuda, rule)().apply(prim_func(spec), targets.load("cuda-sm90").tvm_target(), tunable=False)
    assert "*(uint4*)(input_ptr + " in _cuda_source(sch.mod)


@needs_nvcc
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_large_kernel_depthwise_loads_its_weights_once_a_thread(dtype):
    """ConvNeXt's 7x7 in NHWC on DepthwiseRowsNHWC: a thread loads its channel's 49 weights once, then
    runs 4 output rows of 8 pixels on them (the row loop stays a loop), loading 14 input columns a
    kernel row: 4 multiply-adds a load, where loading the weights per row would make 2.5."""
    from gconvgen.ops import prim_func
    from schedules import cuda
    spec = _suite_layer("cnxt.dw96x56k7", "NHWC", dtype)
    sch = cuda.DepthwiseRowsNHWC().apply(prim_func(spec), targets.load("cuda-sm90").tvm_target(), tunable=False)
    source = _cuda_source(sch.mod)
    loop = source.index("for (int h_1 = 0; h_1 < 4; ++h_1)")
    assert source.count("= weight_ptr[") == 49 and source.rindex("= weight_ptr[") < loop
    assert source.count("input_ptr[") == 7 * 14


@needs_nvcc
@pytest.mark.parametrize("rule, layer", [("DepthwiseNCHW", "mbv2.dw144x56"), ("DepthwiseStagedNCHW", "mbv2.dw144x56"),
                                         ("GroupConvStagedNCHW", "rx50.g32c256x28")])
@pytest.mark.parametrize("dtype, vector", [("float32", "float4"), ("float16", "half4")])
def test_nchw_rules_store_vectors(rule, layer, dtype, vector):
    """A thread's 4 adjacent outputs of a row leave in one vector store, not as 4 scalars 4 apart
    across the warp (each sector of the row written 4 times)."""
    from gconvgen.ops import prim_func
    from schedules import cuda
    spec = _suite_layer(layer, "NCHW", dtype)
    sch = getattr(cuda, rule)().apply(prim_func(spec), targets.load("cuda-sm90").tvm_target(), tunable=False)
    source = _cuda_source(sch.mod)
    assert f"*({vector}*)(out_ptr + " in source and "out_ptr[" not in source


@needs_nvcc
@pytest.mark.parametrize("layout, name", [("NCHW", "rx50.g32c1024x7"), ("NHWC", "rx50.g32c1024x7"),
                                         ("NCHW", "mbv2.pw960to320x7")])
def test_tensor_core_gemm_compiles_and_replays(layout, name):
    """The tensor-core GEMM on layers it is for, at batch 64 in float16 (ResNeXt's g32 1024x7, and
    MobileNetV2's 960->320 at 7x7, which DLight's 128x128 tiles cut into 75 blocks): its default tiles
    make at least a block per H200 multiprocessor, nvcc compiles WMMA in the source, and the
    schedule's trace replayed on the unscheduled function (as a tuning record is served) gives the
    same function."""
    import tvm
    from tvm import s_tir
    from gconvgen.ops import prim_func
    from schedules import cuda
    profile = targets.load("cuda-sm90")
    spec = _suite_layer(name, layout, "float16")
    rule = cuda.TensorCoreGemm()
    (wy, fy), (wz, fz), _ = rule._tiles(spec)
    assert rule._blocks(spec, wy * fy, wz * fz) >= 132
    sch = rule.apply(prim_func(spec), profile.tvm_target(), tunable=True)
    replayed = s_tir.Schedule(tvm.IRModule({"main": prim_func(spec)}))
    sch.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)
    assert "wmma::mma_sync" in _cuda_source(sch.mod)


@needs_nvcc
def test_pipelined_gemm_copies_asynchronously():
    """cuda.TensorCoreGemmPipelined's copies into shared memory compile to cp.async (with the
    setting gconvgen.build.compile_module gives CUDA builds), three chunks in flight (a wait for all
    but the newest group of copies), in 48 KB of shared memory at most; the same setting leaves
    TensorCoreGemm's code as it was."""
    import tvm
    from gconvgen.ops import prim_func
    from schedules import cuda
    target = targets.load("cuda-sm90").tvm_target()
    spec = _suite_layer("mbv2.pw960to320x7", "NHWC", "float16")
    pipelined = cuda.TensorCoreGemmPipelined()
    source = _cuda_source(pipelined.apply(prim_func(spec), target, tunable=False).mod)
    assert "cp.async.cg.shared.global" in source and "cp.async.wait_group 1;" in source
    (wy, fy), (wz, fz), chunk = pipelined._tiles(spec)
    assert pipelined._shared_bytes(wy * fy, wz * fz, chunk) <= 48 * 1024
    plain = cuda.TensorCoreGemm().apply(prim_func(spec), target, tunable=False).mod
    with target:
        assert tvm.compile(plain, target=target).mod.imports[0].inspect_source() == _cuda_source(plain)


@needs_nvcc
def test_tf32_kernels_run_on_tensor_cores_where_they_serve():
    """A float32 conv that the tensor-core GEMM would serve in float16 has a TF32 variant (what the
    torch ops run on a GPU while torch allows TF32), served by cuda.TensorCoreGemmTF32, whose CUDA
    source declares TF32 fragments of WMMA's 16x16x8 shape (TVM's float16 ones renamed) and compiles
    with nvcc for every CUDA profile, the MobileNetV2 960->320 at 7x7 in 48 KB of shared memory at
    most. Depthwise layers, float16, narrow groups and CPU targets have none, and a TF32 spec no rule
    serves is refused by name."""
    from gconvgen.build import compile_module
    from gconvgen.cuda import tf32_fragments
    from gconvgen.ops import prim_func
    from gconvgen.schedule import rule_for
    from schedules import cuda, tf32_spec
    profile = targets.load("cuda-sm90")
    target = profile.tvm_target()
    spec = _suite_layer("mbv2.pw960to320x7", "NHWC", "float32")
    variant = tf32_spec(spec, "cuda", target)
    assert variant == dataclasses.replace(spec, tf32=True) and variant.key == spec.key + "_tf32"
    assert rule_for(variant, profile).name == "cuda.TensorCoreGemmTF32"
    assert rule_for(spec, profile).name != "cuda.TensorCoreGemmTF32"
    rule = cuda.TensorCoreGemmTF32()
    (wy, fy), (wz, fz), chunk = rule._tiles(variant)
    assert rule._shared_bytes(wy * fy, wz * fz, chunk) <= 48 * 1024
    for other in (_suite_layer("mbv2.dw144x56", "NHWC", "float32"), dataclasses.replace(spec, dtype="float16"),
                  dataclasses.replace(spec, in_channels=96, out_channels=96, groups=12)):
        assert tf32_spec(other, "cuda", target) is None, other.key
    assert tf32_spec(spec, "x86", targets.load("host").tvm_target()) is None
    with pytest.raises(ValueError, match="no schedule rule applies"):
        rule_for(dataclasses.replace(variant, in_channels=96, out_channels=96, groups=12), profile)
    from tvm.support import nvcc
    for name in ("cuda-sm80", "cuda-sm87", "cuda-sm90"):
        target = targets.load(name).tvm_target()
        tvm_source = compile_module(rule.apply(prim_func(variant), target, tunable=False).mod,
                                    target).mod.imports[0].inspect_source()
        source = tf32_fragments(tvm_source)   # (what gconvgen.cuda's nvcc callback compiles)
        assert ("fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32" in source
                and "fragment<nvcuda::wmma::matrix_b, 16, 16, 8, nvcuda::wmma::precision::tf32" in source)
        assert "wmma::mma_sync" in source and ", half," not in source
        with target:   # (nvcc takes the arch from it)
            assert nvcc.compile_cuda(source, "fatbin", compiler="nvcc")
    with target, pytest.raises(RuntimeError):   # (CUDA has no float16 fragments of the shape)
        nvcc.compile_cuda(tvm_source, "fatbin", compiler="nvcc")


def test_shipped_tensor_core_records_are_served():
    """The shipped H200 log's record of MobileNetV2's 384->64 1x1 in float16 NCHW is the tensor-core
    GEMM's (9.6 us against 56 us for the rule). Its trace names WMMA intrinsics that TVM registers only
    when their module is imported: in a fresh process (as `gconvgen build` runs) the record must still
    replay, not be skipped as one that "no longer applies"."""
    code = """if True:
        import dataclasses, warnings
        from gconvgen import schedule, suites, targets
        warnings.simplefilter("error")
        spec = next(w.spec for w in suites.load("public") if w.name == "mbv2.pw384to64x14")
        done = schedule.schedule(dataclasses.replace(spec, batch=64, dtype="float16"), targets.load("cuda-sm90"))
        print(done.kind, "mma_sync" in done.func.script())
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["tuned", "True"]


@needs_nvcc
def test_cuda_rules_are_tuning_spaces(tmp_path):
    """The depthwise, pointwise, grouped, NHWC and split-reduction rules sample their tiles, so
    candidates for a GPU host differ (and the ones past the GPU's thread limit are dropped here); all
    of them compile with nvcc."""
    from gconvgen import offline
    specs = [dataclasses.replace(SPECS[0], batch=8), dataclasses.replace(SPECS[2], batch=8), SPECS[-3],
             dataclasses.replace(SPECS[-2], dtype="float32"), SPECS[-1]]
    nhwc_dw = dataclasses.replace(SPECS[5], batch=8, dtype="float16")
    specs.append(nhwc_dw)
    tensor_cores = SPECS[-2]   # DLight's fixed schedule: one candidate, its trace replayed
    out = offline.export(specs + [tensor_cores], targets.load("cuda-sm90"), tmp_path / "cands", trials=4)
    data, stored = json.loads((out / "candidates.json").read_text()), offline.records(out)["records"]
    for spec in specs + [tensor_cores]:
        records = [json.dumps(stored[c["function"]]) for c in data["candidates"] if c["key"] == spec.key]
        assert len(set(records)) >= (2 if spec is tensor_cores else 3), (spec.key, len(records))
    # the later rules that apply are candidates too: DLight's GEMM for dense 1x1s, a thread per
    # output beside the split reduction, the channel vectors beside the tensor cores
    rules = {(c["key"], c["rule"]) for c in data["candidates"]}
    assert (specs[3].key, "cuda.PointwiseGemm") in rules and (specs[4].key, "cuda.GroupConvNCHW") in rules
    assert (tensor_cores.key, "cuda.ChannelVectorNHWC") in rules
    # the depthwise layers' staged and wide schedules (the staged rule is listed first, and applies to
    # the float32 112x112 plane, which it does not serve: an alternative all the same)
    assert (specs[0].key, "cuda.DepthwiseNCHW") in rules and (specs[0].key, "cuda.DepthwiseStagedNCHW") in rules and (nhwc_dw.key, "cuda.DepthwiseWideNHWC") in rules
    assert (tensor_cores.key, "cuda.PointwiseGemm") not in rules   # the same schedule: offered once
    assert has_fatbin(out / offline.LIBRARY)


def test_an_alternative_serves_only_where_its_timings_beat_the_kernels(tmp_path):
    """A rule's alternative (schedules.alternative_specs: a float16 depthwise conv as banded products
    on tensor cores) is what the CLI builds and the torch ops call only once the target's logs time
    its tuned kernel faster than the plain conv's; untimed, or timed slower, the plain conv serves.
    Records of the two never seed each other's transfers (other stages). The timings here are
    written, not measured: what is tested is the choice they drive."""
    import argparse
    import tvm
    from gconvgen import cli, tunelog
    from gconvgen.ops import prim_func
    from gconvgen.schedule import distance, rule_for, timed_spec
    from gconvgen.torch_ops import _same_call
    profile = dataclasses.replace(targets.load("cuda-sm90"), logs=(str(tmp_path / "log"),))
    target = profile.tvm_target()
    spec = KernelSpec.from_json({"op": "conv2d", "batch": 2, "in_channels": 16, "out_channels": 16, "height": 28, "width": 28,
                                 "kernel": 7, "padding": 3, "groups": 16, "dtype": "float16", "epilogue": ["bias"]})
    banded = dataclasses.replace(spec, banded=True)
    assert distance(spec, banded) is None and _same_call(banded, spec) and not _same_call(banded, dataclasses.replace(spec, width=27))
    (tmp_path / "suite.json").write_text(json.dumps({"version": 1, "workloads": [{**spec.to_json(), "name": "dw"}]}))
    args = argparse.Namespace(suite=str(tmp_path / "suite.json"), layout="NCHW")
    log = tunelog.TuneLog(profile.log_dirs[0])

    def time(s: KernelSpec, seconds: float) -> None:
        mod = tvm.IRModule({"main": prim_func(s)})
        sch = rule_for(s, profile).apply(mod["main"], target, tunable=True)
        log.append(tunelog.workload_of(mod), [[tunelog.trace_json(sch.trace), [seconds], profile.target, []]])

    assert timed_spec(spec, profile) == spec
    time(banded, 20e-6)                        # timed where the plain conv is not: no comparison
    assert timed_spec(spec, profile) == spec
    time(spec, 10e-6)                          # the plain conv faster
    assert timed_spec(spec, profile) == spec and [w.spec for w in cli._workloads(args, profile)] == [spec]
    time(banded, 5e-6)                         # the banded faster
    assert timed_spec(spec, profile) == banded and [w.spec for w in cli._workloads(args, profile)] == [banded]
    assert timed_spec(dataclasses.replace(spec, dtype="float32"), profile).dtype == "float32"   # no alternative


def test_nvcc_compiles_every_rules_kernel(tmp_path):
    """Every CUDA rule's untuned kernel compiles with nvcc for sm_90, in float32 and float16 where
    the emulated tests have a case of each (the smallest), the banded variant's too: the emulator
    runs TVM's CUDA source through g++, which neither checks what only nvcc and ptxas refuse nor
    costs their 14-20 s on a large kernel, so the nvcc build of each rule's code is this test's,
    one library of all of them."""
    import tvm
    from gconvgen.build import compile_module
    from gconvgen.cuda import prepare
    from gconvgen.ops import prim_func
    from schedules import cuda
    from test_cuda_emulated import BANDED, CASES
    target = targets.load("cuda-sm90").tvm_target()
    size = lambda s: s.batch * s.in_channels * s.out_channels * s.out_height * s.out_width * s.kernel[0] * s.kernel[1] // s.groups
    smallest = {}
    for rule, spec in CASES + [(cuda.DepthwiseTensorCoreNCHW(), dataclasses.replace(s, banded=True)) for s in BANDED]:
        key = (rule.name, spec.dtype, spec.tf32)
        if key not in smallest or size(spec) < size(smallest[key][1]):
            smallest[key] = (rule, spec)
    assert {name for name, _, _ in smallest} == {r.name for r in cuda.RULES}
    funcs = {f"k{i}": rule.apply(prim_func(spec), target, tunable=False).mod["main"].with_attr("global_symbol", f"k{i}")
             for i, (rule, spec) in enumerate(smallest.values())}
    prepare()
    compile_module(tvm.IRModule(funcs), target).export_library(tmp_path / "all.so")
    assert has_fatbin(tmp_path / "all.so") and len(funcs) >= 30
