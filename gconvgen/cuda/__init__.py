"""CUDA compilation on a machine without a GPU: make TVM embed nvcc-built fatbins in libraries.

TVM 0.27 embeds a fatbin only when its CUDA runtime plugin (libtvm_runtime_cuda.so) is loaded; that
plugin needs the driver's libcuda.so.1. Where there is no driver, a stub that reports "no device"
stands in (nodevice_libcuda.c, built once into the cache), so tvm.compile runs nvcc
(TVM_CUDA_COMPILE_MODE=nvcc) and the library carries SASS for the target's arch. On a machine with
a driver, the real libcuda is used and nothing is stubbed."""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform
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
    os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    import tvm
    import tvm.support.nvcc  # noqa: F401 - registers the nvcc compile callback
    plugin = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    ctypes.CDLL(str(_cudart()), ctypes.RTLD_GLOBAL)
    try:
        ctypes.CDLL("libcuda.so.1", ctypes.RTLD_GLOBAL)      # a real driver, where there is one
    except OSError:
        ctypes.CDLL(str(_stub()), ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(plugin), ctypes.RTLD_GLOBAL)
    _ready = True


def has_fatbin(library: Path) -> bool:
    """Whether a built library embeds device code (a fatbin), not CUDA source to compile at load."""
    return FATBIN_MAGIC in Path(library).read_bytes()
