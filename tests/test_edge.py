"""Edge deployment: bundles, the runtime-only loaders (Python and C), ARM kernels under qemu."""
import dataclasses
import json
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gconvgen import bundle, suites, targets
from gconvgen.spec import KernelSpec

HAVE_ARM = shutil.which("aarch64-linux-gnu-gcc") is not None and shutil.which("qemu-aarch64") is not None
SMALL = [KernelSpec.from_json(row) for row in (
    {"op": "conv2d", "in_channels": 16, "out_channels": 16, "height": 14, "width": 14, "kernel": 3, "padding": 1,
     "groups": 16, "epilogue": ["bias", "relu6"]},
    {"op": "conv2d", "in_channels": 24, "out_channels": 48, "height": 8, "width": 8, "groups": 3,
     "epilogue": ["bias", "relu", "shuffle:3"]},
    {"op": "channel_shuffle", "channels": 12, "height": 5, "width": 5, "groups": 3, "layout": "NHWC"})]


def _arm_subset() -> list[KernelSpec]:
    """One layer of each kind in the public suite (op class x stride x kernel size), both layouts, and
    an NHWC pointwise layer whose channels are no multiple of the vector."""
    picked = {}
    for w in suites.load("public"):
        s = w.spec
        picked.setdefault((s.op_class, s.stride, s.kernel, s.shuffle_groups > 1), s)
    subset = list(picked.values())
    padded = KernelSpec.from_json({"in_channels": 10, "out_channels": 6, "height": 6, "width": 6, "epilogue": ["bias"],
                                   "layout": "NHWC"})   # 6 channels padded to two 4-lane vectors
    silu = KernelSpec.from_json({"in_channels": 24, "out_channels": 24, "groups": 24, "height": 10, "width": 10,
                                 "kernel": 5, "stride": 2, "padding": 2, "epilogue": ["bias", "silu"]})   # EfficientNet's
    return (subset + [s.with_layout("NHWC") for s in subset[:3]] + [padded, silu]
            + [dataclasses.replace(s, dtype="float16") for s in subset[:2]])


@pytest.fixture(scope="module")
def host_bundle(tmp_path_factory, host):
    return bundle.make(SMALL, host, tmp_path_factory.mktemp("bundle") / "b", vectors=True)


def _arm_bundle(path: Path, specs) -> Path:
    try:
        return bundle.make(specs, targets.load("arm-cortex-a72"), path, vectors=True)
    except RuntimeError as e:
        if "could not download" in str(e):
            pytest.skip(f"the aarch64 TVM runtime could not be fetched here: {e}")
        raise


def test_bundle_layout(host_bundle):
    for name in ("gconvgen.so", "manifest.json", "README.md", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so",
                 "loader/gconvgen_loader.py", "loader/gconvgen_run.c", "loader/Makefile",
                 "loader/include/tvm/ffi/c_api.h", "vectors/index.txt"):
        assert (host_bundle / name).exists(), name
    assert len((host_bundle / "vectors/index.txt").read_text().splitlines()) == len(SMALL)


def _fresh_venv(root: Path) -> Path:
    """A virtual environment holding apache-tvm-ffi and its one dependency, typing-extensions, only
    (copied from this one: no network needed)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next(root.glob("lib/python*/site-packages"))
    here = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(here / "tvm_ffi", site / "tvm_ffi")
    shutil.copy2(here / "typing_extensions.py", site / "typing_extensions.py")
    for info in [*here.glob("apache_tvm_ffi-*.dist-info"), *here.glob("typing_extensions-*.dist-info")]:
        shutil.copytree(info, site / info.name)
    return root / "bin" / "python"


def test_runtime_only_venv_runs_the_bundle(host_bundle, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    bare = subprocess.run([python, "-c", "import tvm"], capture_output=True, text=True)
    assert bare.returncode != 0, "the fresh venv must not have the TVM compiler"
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    loader = host_bundle / "loader" / "gconvgen_loader.py"
    done = subprocess.run([python, loader, host_bundle, "--verify"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok  ") == len(SMALL) and "all kernels match" in done.stdout
    listed = subprocess.run([python, loader, host_bundle], capture_output=True, text=True, cwd=tmp_path)
    assert str(host_bundle / "lib" / "libtvm_runtime.so") in listed.stdout   # the bundle's own runtime


def test_c_loader_on_this_machine(host_bundle, host):
    made = subprocess.run(["make", "-s", "-C", host_bundle / "loader"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([host_bundle / "loader" / "gconvgen_run", host_bundle], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(SMALL)} of {len(SMALL)} kernels match" in done.stdout


def test_loaders_refuse_a_changed_library(host_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(host_bundle, copy)
    with open(copy / "gconvgen.so", "ab") as f:
        f.write(b"\0")
    done = subprocess.run([sys.executable, copy / "loader" / "gconvgen_loader.py", copy], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "does not match its manifest" in done.stderr


def test_verify_catches_a_wrong_result(host_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(host_bundle, copy)
    fields = (copy / "vectors/index.txt").read_text().splitlines()[0].split()[4:]
    files, i = [], 0
    while i < len(fields):          # FILE NDIM DIMS... per argument; the output comes last
        files.append(fields[i])
        i += 2 + int(fields[i + 1])
    expected = copy / "vectors" / files[-1]
    data = bytearray(expected.read_bytes())
    data[0:4] = struct.pack("<f", 1000.0)
    expected.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, copy / "loader" / "gconvgen_loader.py", copy, "--verify"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout.startswith("FAIL"), done.stdout + done.stderr
    made = subprocess.run(["make", "-s", "-C", copy / "loader"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([copy / "loader" / "gconvgen_run", copy], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout.startswith("FAIL"), done.stdout + done.stderr


@pytest.mark.skipif(not HAVE_ARM, reason="needs gcc-aarch64-linux-gnu and qemu-user")
def test_arm_kernels_match_torch_under_qemu(tmp_path):
    specs = _arm_subset()
    assert {s.op_class for s in specs} >= {"depthwise", "pointwise", "grouped", "shuffle"}
    out = _arm_bundle(tmp_path / "arm", specs)
    data = json.loads((out / "manifest.json").read_text())
    assert data["target"]["arch"] == "aarch64" and all(k["rule"].startswith("arm.") for k in data["kernels"])
    status, report = bundle.run_emulated(out, targets.load("arm-cortex-a72"))
    assert status == 0, report
    assert f"{len(specs)} of {len(specs)} kernels match" in report
    # The same bundle is refused by this x86 machine's loader, naming the architecture.
    done = subprocess.run([sys.executable, out / "loader" / "gconvgen_loader.py", out], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "built for aarch64" in done.stderr
