"""Build, manifest, runtime loading, target checks and the build cache."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gconvgen import build, manifest, reference, runtime, suites, targets
from gconvgen.spec import KernelSpec

SPECS = [w.spec for w in suites.load("shufflenet_v2")][:3] + [
    KernelSpec.from_json({"op": "channel_shuffle", "channels": 12, "height": 5, "width": 5, "groups": 3,
                          "layout": "NHWC"})]


@pytest.fixture(scope="module")
def library(tmp_path_factory, host):
    return build.build(SPECS, host, tmp_path_factory.mktemp("lib"))


def test_manifest_round_trip(library, host):
    data = manifest.read(library)
    assert data["target"]["profile"] == "host" and data["target"]["tvm_target"] == host.target
    assert data["sha256"] == manifest.sha256(library / data["library"])
    assert set(data["versions"]) >= {"gconvgen", "tvm", "tvm_ffi"}
    by_key = {k["key"]: k for k in data["kernels"]}
    assert set(by_key) == {s.key for s in SPECS}
    for spec in SPECS:
        entry = by_key[spec.key]
        assert KernelSpec.from_json(entry["spec"]) == spec
        assert [a["name"] for a in entry["args"]] == list(spec.arg_names)
        assert [tuple(a["shape"]) for a in entry["args"]] == [spec.shape(n) for n in spec.arg_names]
        assert entry["schedule"] in ("tuned", "transfer", "rule", "fallback")


def test_library_kernels_match_torch(library):
    lib = runtime.load(library)
    for spec in SPECS:
        assert spec in lib
        args = reference.random_args(spec)
        out = torch.empty(spec.shape("output"))
        lib.kernel(spec)(*[reference.to_kernel_layout(spec, n, args[n]) for n in spec.arg_names[:-1]], out)
        expected = reference.forward(spec, *args.values())
        torch.testing.assert_close(reference.from_kernel_layout(spec, out), expected, rtol=1e-4, atol=1e-4)


def test_unknown_kernel_and_wrong_arguments(library):
    lib = runtime.load(library)
    other = SPECS[0].with_layout("NHWC")
    with pytest.raises(KeyError, match="not in"):
        lib.kernel(other)
    kernel = lib.kernel(SPECS[0])
    with pytest.raises(TypeError, match="takes"):
        kernel(torch.empty(1))
    args = [torch.empty(s) for s in (SPECS[0].shape(n) for n in SPECS[0].arg_names)]
    args[0] = torch.empty(1, 2, 3, 4)
    with pytest.raises(ValueError):  # tvm-ffi checks every shape and dtype at call time
        kernel(*args)


def test_corrupted_library_is_refused(library, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    with open(copy / build.LIBRARY, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(RuntimeError, match="does not match its manifest"):
        runtime.load(copy)
    (copy / manifest.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        runtime.load(copy)


def test_missing_cpu_features_are_refused(library, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    data = json.loads((copy / manifest.MANIFEST).read_text())
    data["target"]["features"] = data["target"]["features"] + ["sve"]  # an Arm feature no x86 CPU has
    (copy / manifest.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match="sve"):
        runtime.load(copy)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="needs gcc-aarch64-linux-gnu")
def test_library_for_another_target_is_refused(tmp_path):
    arm = targets.load("arm-cortex-a72")
    folder = build.build(SPECS[:1], arm, tmp_path / "arm")
    assert runtime.elf_arch(folder / build.LIBRARY) == "aarch64"
    with pytest.raises(RuntimeError, match="built for aarch64"):
        runtime.load(folder)


def test_second_build_hits_the_cache(host):
    spec = KernelSpec.from_json({"op": "conv2d", "in_channels": 6, "out_channels": 6, "height": 9, "width": 7,
                                 "kernel": [3, 3], "padding": [1, 1], "groups": 6, "epilogue": ["relu"]})
    first, was_cached = build.cached(spec, host)
    assert not was_cached
    again, was_cached = build.cached(spec, host)
    assert was_cached and again == first
    assert build.cached(spec.with_layout("NHWC"), host)[0] != first


def test_runtime_loads_without_the_compiler(library):
    """The loader is what a board runs: it must work in a process that never imports tvm."""
    code = (
        "import sys, torch\n"
        "from gconvgen import runtime, reference\n"
        "from gconvgen.spec import KernelSpec\n"
        f"lib = runtime.load({str(library)!r})\n"
        "assert 'tvm' not in sys.modules, 'runtime imported the compiler'\n"
        "spec = KernelSpec.from_json(lib.manifest['kernels'][0]['spec'])\n"
        "args = reference.random_args(spec)\n"
        "out = torch.empty(spec.shape('output'))\n"
        "lib.kernel(spec)(*[reference.to_kernel_layout(spec, n, args[n]) for n in spec.arg_names[:-1]], out)\n"
        "ref = reference.forward(spec, *args.values())\n"
        "print((reference.from_kernel_layout(spec, out) - ref).abs().max().item())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 1e-4


@pytest.mark.parametrize("env, expected", [({}, "cores"), ({"TVM_NUM_THREADS": "1"}, "1"),
                                           ({"OMP_NUM_THREADS": "1"}, "1")])
def test_runtime_thread_pool_takes_the_physical_cores(library, env, expected):
    """TVM alone sizes its pool to half the logical CPUs on x86 (one thread on a 2-core VM); loading
    a library sizes it to the physical cores, unless the user set TVM_NUM_THREADS or OMP_NUM_THREADS."""
    code = (
        "import tvm_ffi\n"
        "from gconvgen import runtime\n"
        "from gconvgen.loader.gconvgen_loader import physical_cores\n"
        "cores = physical_cores()   # (a pool of one thread pins this thread to one core)\n"
        f"runtime.load({str(library)!r})\n"
        "print(tvm_ffi.get_global_func('runtime.NumThreads')(), cores)\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**clean, **env})
    assert result.returncode == 0, result.stderr
    threads, cores = result.stdout.split()
    assert threads == (cores if expected == "cores" else expected)
    assert int(cores) == len({Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text()
                              for c in os.sched_getaffinity(0)})


def test_runtime_kernel_refuses_a_misaligned_tensor(library):
    lib = runtime.load(library)
    spec = KernelSpec.from_json(lib.manifest["kernels"][0]["spec"])
    args = {n: reference.to_kernel_layout(spec, n, t) for n, t in reference.random_args(spec).items()}
    n = args["input"].numel()
    shifted = torch.empty(n + 1)[1:].view(args["input"].shape)
    shifted.copy_(args["input"])
    rest = [args[name] for name in spec.arg_names[1:-1]]
    with pytest.raises(ValueError, match="64-byte boundary"):
        lib.kernel(spec)(shifted, *rest, torch.empty(spec.shape("output")))
