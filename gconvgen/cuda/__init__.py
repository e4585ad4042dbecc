"""CUDA compilation on a machine without a GPU: make TVM embed nvcc-built fatbins in libraries.

TVM 0.27 embeds a fatbin only when its CUDA runtime plugin (libtvm_runtime_cuda.so) is loaded; that
plugin needs the driver's libcuda.so.1. Where there is no driver, a stub that reports "no device"
stands in (nodevice_libcuda.c, built once into the cache), so tvm.compile runs nvcc
and the library carries SASS for the target's arch, compressed. On a machine with a driver, the
real libcuda is used and nothing is stubbed."""
from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import glob
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from ..paths import PACKAGE_DIR, cache_dir

_ready = False
FATBIN_MAGIC = (0xBA55ED50).to_bytes(4, "little")


def cudart(arch: str = platform.machine()) -> Path | None:
    """The toolkit's CUDA runtime library for a host of `arch`: this machine's, else None (a Jetson
    brings its own with JetPack)."""
    return _cudart() if arch == platform.machine() else None


def _cudart() -> Path:
    nvcc = shutil.which("nvcc")
    roots = ([str(Path(os.path.realpath(nvcc)).parent.parent)] if nvcc else []) + sorted(glob.glob("/usr/local/cuda*"))
    for root in roots:
        for lib in sorted(glob.glob(f"{root}/lib64/libcudart.so.*")) + sorted(glob.glob(f"{root}/lib/libcudart.so.*")):
            return Path(lib)
    raise RuntimeError("CUDA targets need the CUDA toolkit (nvcc and libcudart): not found")


def _stub() -> Path:
    out = cache_dir() / "cuda-stub" / "libcuda.so.1"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o", str(tmp), str(PACKAGE_DIR / "cuda" / "nodevice_libcuda.c")],
                       check=True, capture_output=True)
        tmp.replace(out)
    return out


def prepare() -> None:
    """Make tvm.compile produce fatbins for CUDA targets in this process (idempotent)."""
    global _ready
    if _ready:
        return
    if shutil.which("nvcc") is None:
        raise RuntimeError("CUDA targets are compiled with nvcc, which is not on PATH (install the CUDA toolkit)")
    import tvm
    import tvm_ffi
    from tvm.support import nvcc   # (registers TVM's compile callback, which ours replaces)

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def _compile(code: str, *_) -> bytes:
        # nvcc compresses a fatbin only past some size: forced, a library's SASS takes a quarter of the
        # space (the suite's 74 kernels 1.16 MB -> 0.25), what a GPU host or a board is sent; the driver
        # decompresses it as it loads
        return nvcc.compile_cuda(tf32_fragments(code), target_format="fatbin", compiler="nvcc", options=["-Xfatbin=-compress-all"])
    plugin = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    ctypes.CDLL(str(_cudart()), ctypes.RTLD_GLOBAL)
    try:
        ctypes.CDLL("libcuda.so.1", ctypes.RTLD_GLOBAL)      # a real driver, where there is one
    except OSError:
        ctypes.CDLL(str(_stub()), ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(plugin), ctypes.RTLD_GLOBAL)
    _ready = True


def tf32_fragments(code: str) -> str:
    """CUDA source with the WMMA operand fragments of the 16x16x8 shape declared as TF32 ones, which
    is the only type CUDA has of that shape: TVM declares operand fragments of half, int8 and
    narrower only, so cuda.TensorCoreGemmTF32's are float16 to TVM (gconvgen.tensor_intrin.WMMA_TF32),
    loaded from float32 and multiplied into float32. A TF32 fragment is stored as float and
    load_matrix_sync reads it from float*, which is what TVM's code passes: nothing else changes.
    Other source is returned as it is."""
    return re.sub(r"(fragment<nvcuda::wmma::matrix_[ab], 16, 16, 8, )half,", r"\1nvcuda::wmma::precision::tf32,", code)


def has_fatbin(library: Path) -> bool:
    """Whether a built library embeds device code (a fatbin), not CUDA source to compile at load."""
    return FATBIN_MAGIC in Path(library).read_bytes()


def refused_kernels(message: str) -> dict[str, str]:
    """The kernels (by their CUDA names) a failed nvcc compile refused, each with nvcc's reason, from
    TVM's error: ptxas names a refused kernel; a C++ error names a line of the source, which TVM's
    error begins with, and the kernel is the one whose definition holds that line. Empty when the
    error names none (nvcc missing, a crash)."""
    code, _, out = message.partition("\nCompilation error:\n")
    found = {kernel: reason.strip() for kernel, reason in
             re.findall(r"ptxas error\s*: Entry function '(\w+)' (.*)", out)}
    lines = code.splitlines()
    starts, names = [], []
    for number, line in enumerate(lines, 1):
        definition = re.search(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(.*\{\s*$", line)
        if definition:
            starts.append(number)
            names.append(definition.group(1))
    for number, reason in re.findall(r"\.cu\((\d+)\): error: (.*)", out):
        at = bisect.bisect_right(starts, int(number)) - 1
        if at >= 0 and int(number) <= len(lines):
            found.setdefault(names[at], f"{reason.strip()} (line {number}: {lines[int(number) - 1].strip()[:120]})")
    return found


def launch_extents(func) -> dict[str, int]:
    """threadIdx.* / blockIdx.* extents of a scheduled function's one kernel, from its thread bindings
    as TVMScript prints them (this TVM has no Python statement visitor). Raises ValueError where a
    tag is bound with two extents: more than one kernel."""
    extents: dict[str, int] = {}
    for extent, tag in re.findall(r'T\.thread_binding\((?:0, )?(\d+), thread="(\w+\.[xyz])"\)', func.script()):
        if extents.setdefault(tag, int(extent)) != int(extent):
            raise ValueError(f"{tag} has two extents ({extents[tag]} and {extent}): more than one kernel")
    return extents
