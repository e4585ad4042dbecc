#!/usr/bin/env python3
"""Run gconvgen kernels with the runtime only: tvm-ffi (pip install apache-tvm-ffi) and libtvm_runtime.so.
No compiler, no torch, no numpy. This file is copied verbatim into every bundle.

    python gconvgen_loader.py BUNDLE              list the kernels and what they were built for
    python gconvgen_loader.py BUNDLE --verify     run each kernel on the bundle's test vectors

In Python: lib = Library(BUNDLE); fn = lib.function(key); fn(input, weight, [bias,] output), with
tensors from DLPack (torch, numpy) or alloc() below, each starting on a 64-byte boundary.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

FORMAT = 1
MANIFEST = "manifest.json"
ALIGNMENT = 64   # bytes: every tensor passed to a kernel must start on it (aligned vector loads)
VECTORS = "vectors"
# ISA features a library needs from the CPU that runs it, as LLVM names them -> /proc/cpuinfo names.
CHECKED_FEATURES = {
    "sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl",
    "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
    "neon": "asimd", "fullfp16": "fphp", "dotprod": "asimddp", "sve": "sve",
}
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0xF3: "riscv64"}
_runtime_loaded: Path | None = None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {directory}: not a gconvgen library folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rebuild the library") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else data
        raise ValueError(f"{path}: unsupported manifest format {found!r} (this loader reads format {FORMAT})")
    for field in ("library", "sha256", "target", "kernels"):
        if field not in data:
            raise ValueError(f"{path}: manifest lacks {field!r}")
    return data


def elf_arch(path: Path) -> str | None:
    """The architecture an ELF shared library was built for, from its header."""
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def host_features() -> set[str]:
    """The checked ISA features this CPU has (LLVM names), read from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return {llvm for llvm, cpuinfo in CHECKED_FEATURES.items() if cpuinfo in flags}


def check_compatible(data: dict[str, Any], lib: Path) -> None:
    """Refuse a library this machine cannot run, naming what differs."""
    target = data["target"]
    here = platform.machine()
    built = elf_arch(lib) or target.get("arch")
    if built != here:
        raise RuntimeError(f"{lib} was built for {built} (target profile {target.get('profile')!r}), "
                           f"but this machine is {here}: build it for this machine's target")
    missing = sorted(set(target.get("features", [])) - host_features())
    if missing:
        raise RuntimeError(f"{lib} was built for target profile {target.get('profile')!r}, which needs CPU "
                           f"features {missing} that this CPU lacks: build for 'host' or a matching profile")


def runtime_library(bundle: Path | None = None) -> Path | None:
    """libtvm_runtime.so: $GCONVGEN_TVM_RUNTIME, else the bundle's lib/ (unless apache-tvm is imported),
    else an installed apache-tvm's."""
    env = os.environ.get("GCONVGEN_TVM_RUNTIME")
    if env:
        return Path(env)
    if "tvm" not in sys.modules and bundle is not None and (Path(bundle) / "lib" / "libtvm_runtime.so").exists():
        # (an imported apache-tvm has loaded its own runtime already: a second copy would abort)
        return Path(bundle) / "lib" / "libtvm_runtime.so"
    spec = importlib.util.find_spec("tvm")   # locates the package without importing the compiler
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "lib" / "libtvm_runtime.so"
        if candidate.exists():
            return candidate
    return None


def physical_cores() -> int:
    """The cores this process may run on, counting SMT siblings once (Linux topology; elsewhere, or
    where it cannot be read, the CPUs available)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            siblings = str(cpu)
        cores.add(siblings)
    return max(1, len(cores))


def default_threads() -> None:
    """Size TVM's thread pool to the physical cores, unless TVM_NUM_THREADS or OMP_NUM_THREADS says
    otherwise. Left alone, TVM takes half the logical CPUs on x86, assuming two hyperthreads a core:
    one thread on a 2-core VM without SMT, where the kernels then ran at about half speed (ResNeXt's
    256->256 1x1 at 56x56: 6.2 vs 3.5 ms). Its pool reads the variable when it starts, at the first
    kernel call."""
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def load_runtime(bundle: Path | None = None) -> Path:
    """Load TVM's runtime (thread pool, workspace) with global symbols before any kernel library."""
    global _runtime_loaded
    if _runtime_loaded is None:
        default_threads()
        import tvm_ffi  # noqa: F401 - libtvm_runtime links against the libtvm_ffi it loads
        path = runtime_library(bundle)
        if path is None:
            raise RuntimeError("libtvm_runtime.so not found: install apache-tvm, or set GCONVGEN_TVM_RUNTIME "
                               "to its path (a bundle ships it in lib/)")
        ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
        _runtime_loaded = path
    return _runtime_loaded


_cuda_plugin: Path | None = None


def load_cuda_runtime(bundle: Path | None, what: str) -> None:
    """TVM's CUDA plugin, which loads the fatbins of the CUDA libraries (`what`: the one that needs
    it, for errors; check_gpu first). CUDA 13's libcudart comes from the bundle's lib/ where it
    carries one (a host's PyTorch may ship another CUDA's)."""
    global _cuda_plugin
    runtime = load_runtime(bundle)
    if _cuda_plugin is not None:
        return
    plugin = runtime.parent / "libtvm_runtime_cuda.so"   # the one built with the runtime loaded
    if not plugin.exists():
        raise RuntimeError(f"{what}: libtvm_runtime_cuda.so (TVM's CUDA runtime) not found beside {runtime}")
    for cudart in ([Path(bundle) / "lib" / "libcudart.so.13"] if bundle is not None else []) \
            + [runtime.parent / "libcudart.so.13"]:
        if cudart.exists():
            ctypes.CDLL(str(cudart), ctypes.RTLD_GLOBAL)
            break
    try:
        ctypes.CDLL(str(plugin), ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise RuntimeError(f"{what}: TVM's CUDA runtime {plugin} does not load ({e}); it needs the driver's "
                           f"libcuda.so.1 and CUDA 13's libcudart.so.13 (a bundle carries the latter in lib/)") from e
    _cuda_plugin = plugin


def cuda_devices() -> list[tuple[int, int]]:
    """The compute capability (major, minor) of each CUDA device the driver sees; [] without a driver
    or GPU (also under the compile-only libcuda stub, whose cuInit reports no device)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1", ctypes.RTLD_GLOBAL)
    except OSError:
        return []
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    found = []
    for i in range(count.value):
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, i)   # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, i)   # ... _MINOR
        found.append((major.value, minor.value))
    return found


def runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether machine code for `arch` ('sm_90', 'sm_90a') runs on a GPU of that compute capability:
    the same major version, at least the minor one ('a' variants: exactly that GPU)."""
    digits = arch.removeprefix("sm_").rstrip("af")
    built = (int(digits[:-1]), int(digits[-1]))
    if arch.endswith(("a", "f")):
        return capability == built
    return capability[0] == built[0] and capability[1] >= built[1]


def check_gpu(data: dict[str, Any], lib: Path) -> None:
    """Refuse a CUDA library where no GPU here can run its machine code, naming what differs."""
    target = data["target"]
    arch = target.get("tvm_target", {}).get("arch", "?")
    devices = cuda_devices()
    if not devices:
        raise RuntimeError(f"{lib} holds CUDA kernels for {arch} (target profile {target.get('profile')!r}), but "
                           f"this machine has no CUDA driver or GPU: run it on a GPU host, or build for 'host'")
    if not any(runs_on(arch, d) for d in devices):
        seen = ", ".join(f"sm_{a}{b}" for a, b in devices)
        raise RuntimeError(f"{lib} holds CUDA kernels for {arch} (target profile {target.get('profile')!r}), which "
                           f"the GPUs here ({seen}) cannot run: build with the profile of this GPU")


class Library:
    """A library folder (gconvgen.so + manifest.json), checked and loaded."""

    def __init__(self, folder: str | os.PathLike) -> None:
        import tvm_ffi
        self.folder = Path(folder).resolve()   # dlopen reads a bare name as a search, not a file here
        self.manifest = read_manifest(self.folder)
        lib = self.folder / self.manifest["library"]
        if not lib.exists():
            raise FileNotFoundError(f"{lib} is missing (listed in {self.folder / MANIFEST})")
        digest = sha256(lib)
        if digest != self.manifest["sha256"]:
            raise RuntimeError(f"{lib} does not match its manifest (sha256 {digest[:12]}... expected "
                               f"{self.manifest['sha256'][:12]}...): the file was changed or corrupted; rebuild it")
        check_compatible(self.manifest, lib)
        load_runtime(self.folder)
        if self.is_cuda:
            check_gpu(self.manifest, lib)
            load_cuda_runtime(self.folder, str(lib))
        self.module = tvm_ffi.load_module(str(lib))
        self.entries = {e["key"]: e for e in self.manifest["kernels"]}

    @property
    def target(self) -> dict[str, Any]:
        return self.manifest["target"]

    @property
    def is_cuda(self) -> bool:
        """Its kernels run on a GPU (they take CUDA tensors)."""
        return self.manifest["target"].get("family") == "cuda"

    def keys(self) -> list[str]:
        return list(self.entries)

    def function(self, key: str) -> Callable[..., Any]:
        entry = self.entries.get(key)
        if entry is None:
            raise KeyError(f"kernel {key} is not in {self.folder} ({len(self.entries)} kernels)")
        return self.module[entry["function"]]


def alloc(shape: list[int], dtype: str = "float32"):
    """A CPU tensor from TVM's runtime allocator (no numpy needed); .data_ptr() is its address."""
    import tvm_ffi
    empty = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
    return empty(tvm_ffi.Shape(shape), tvm_ffi.dtype(dtype), tvm_ffi.device("cpu", 0), None)


def _itemsize(dtype: str) -> int:
    return {"float32": 4, "float16": 2}[dtype]


def verify(folder: str | os.PathLike, rtol: float = 1e-4, atol: float = 1e-4) -> int:
    """Run every kernel listed in vectors/index.txt on its stored inputs and compare with the stored
    output (made by PyTorch on the build machine). Prints a line per kernel; returns the failures.

    index.txt, one kernel a line: KEY FUNCTION DTYPE NARGS then per argument FILE NDIM DIMS...; the
    last argument is the output, its file holds the expected values."""
    lib = Library(folder)
    vectors = lib.folder / VECTORS
    if not (vectors / "index.txt").exists():
        raise FileNotFoundError(f"{vectors}/index.txt not found: build the bundle with --vectors")
    failures = 0
    for line in (vectors / "index.txt").read_text().splitlines():
        key, _function, dtype, nargs, *rest = line.split()
        size, code = {"float32": (4, "f"), "float16": (2, "e")}[dtype]
        tensors, stored = [], []
        for _ in range(int(nargs)):
            name, ndim = rest[0], int(rest[1])
            shape, rest = [int(d) for d in rest[2:2 + ndim]], rest[2 + ndim:]
            data = (vectors / name).read_bytes()
            count = 1
            for d in shape:
                count *= d
            if len(data) != count * size:
                raise ValueError(f"{vectors / name}: {len(data)} bytes, expected {count * size} for {shape}")
            t = alloc(shape, dtype)
            if len(tensors) < int(nargs) - 1:
                ctypes.memmove(t.data_ptr(), data, len(data))
            tensors.append(t)
            stored.append(data)
        lib.function(key)(*tensors)
        nbytes = len(stored[-1])
        got = memoryview(bytes((ctypes.c_char * nbytes).from_address(tensors[-1].data_ptr()))).cast(code)
        want = memoryview(stored[-1]).cast(code)
        if dtype == "float16":   # relative to the output's largest value: fp16 keeps ~3 digits
            scale = max(abs(b) for b in want)
            worst = max(abs(a - b) for a, b in zip(got, want)) - 1e-2 * scale
        else:
            worst = max(abs(a - b) - (atol + rtol * abs(b)) for a, b in zip(got, want))
        failures += worst > 0
        print(f"{'ok  ' if worst <= 0 else 'FAIL'} {key}")
    return failures


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    try:
        if "--verify" in argv:
            failures = verify(argv[0])
            print(f"{'all kernels match' if not failures else f'{failures} kernel(s) differ'}")
            return 1 if failures else 0
        lib = Library(argv[0])
        t = lib.target
        print(f"{lib.folder}: {len(lib.entries)} kernels for {t.get('profile')} ({t.get('arch')}), "
              f"runtime {load_runtime(lib.folder)}")
        for key in lib.keys():
            print(f"  {key}")
        return 0
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"gconvgen_loader: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
