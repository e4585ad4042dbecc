"""`gconvgen build`: a bundle a board can run with the runtime only.

    DIR/gconvgen.so, manifest.json     the kernels and what they were built for (build.build)
    DIR/lib/                           libtvm_runtime.so and libtvm_ffi.so for the target's arch
                                       (+ libtvm_runtime_cuda.so for CUDA targets)
    DIR/loader/gconvgen_loader.py      the Python loader (tvm-ffi only; --verify checks the vectors)
    DIR/loader/gconvgen_run.c          the C example on tvm-ffi's C ABI, with its Makefile and headers
    DIR/loader/gpu_check.py            every kernel against torch, timed (CUDA events on a GPU)
    DIR/python/gconvgen/               the package, for torch.ops.gconvgen and convert where PyTorch runs
                                       without TVM's compiler (a GPU host, a board): use_library(DIR)
    DIR/vectors/ (with vectors=True)   inputs and PyTorch's outputs for every kernel, to check a board
    DIR/README.md                      how to install and run it on the board

For another architecture the runtime libraries come from that architecture's PyPI wheels of the
pinned apache-tvm and apache-tvm-ffi (downloaded once into the cache, only the two .so files kept).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from . import build, reference
from .paths import PACKAGE_DIR
from .spec import KernelSpec
from .targets import TargetProfile

LOADER_FILES = ("gconvgen_loader.py", "gconvgen_run.c", "Makefile", "gpu_check.py")
HEADERS = ("tvm/ffi/c_api.h", "dlpack/dlpack.h")
CUDART = "libcudart.so.13"   # the CUDA runtime TVM 0.27's CUDA plugin links against
RUNTIME_LIBS = {"libtvm_runtime.so": "tvm/lib/", "libtvm_ffi.so": "tvm_ffi/lib/",
                "libtvm_runtime_cuda.so": "tvm/lib/"}   # the last only in CUDA bundles


def make(specs: Iterable[KernelSpec], profile: TargetProfile, out_dir: str | Path, vectors: bool = False,
         use_logs: bool = True, wheel_python: str | None = None) -> Path:
    """The bundle; wheel_python ('3.12') also stores the apache-tvm-ffi wheel for that Python and the
    target's arch in wheels/, for hosts that cannot reach PyPI."""
    specs = list({s.key: s for s in specs}.values())
    out = build.build(specs, profile, out_dir, use_logs)
    copy_runtime(out, profile)
    if wheel_python:
        _ffi_wheel(out / "wheels", profile.arch, wheel_python)
    loader = out / "loader"
    loader.mkdir(exist_ok=True)
    for name in LOADER_FILES:
        shutil.copy2(PACKAGE_DIR / "loader" / name, loader / name)
    include = _tvm_ffi_include()
    for header in HEADERS:
        (loader / "include" / header).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(include / header, loader / "include" / header)
    shutil.rmtree(out / "python", ignore_errors=True)   # torch on the target: gconvgen's ops, runtime only
    shutil.copytree(PACKAGE_DIR, out / "python" / "gconvgen", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    if vectors:
        write_vectors(out, specs)
    (out / "README.md").write_text(_readme(profile, len(specs)))
    return out


def copy_runtime(out: Path, profile: TargetProfile) -> None:
    """The TVM runtime libraries a library for `profile` needs, into out/lib/; for CUDA on an x86-64
    host also the CUDA runtime (libcudart) TVM's CUDA plugin links against: a GPU host's PyTorch may
    carry another CUDA's, or keep its own off the loader's search path (a Jetson has JetPack's)."""
    (out / "lib").mkdir(exist_ok=True)
    cuda = profile.target.get("kind") == "cuda"
    for name, path in runtime_libraries(profile.arch).items():
        if cuda or name != "libtvm_runtime_cuda.so":
            shutil.copy2(path, out / "lib" / name)
    if cuda:
        from .cuda import cudart
        runtime = cudart(profile.arch)
        if runtime is not None:
            shutil.copy2(runtime, out / "lib" / CUDART)


def write_vectors(out: Path, specs: list[KernelSpec], seed: int = 0) -> None:
    """Random inputs and PyTorch's output of every kernel, as raw little-endian files, listed in
    vectors/index.txt (KEY FUNCTION DTYPE NARGS then FILE NDIM DIMS... per argument, output last).
    float16 outputs are computed in float32 and rounded once, as the kernels do."""
    folder = out / "vectors"
    folder.mkdir(exist_ok=True)
    lines = []
    for i, spec in enumerate(specs):
        args = reference.random_args(spec, seed)
        wide = [t.float() for t in args.values()]
        args["output"] = reference.forward(spec, *wide).to(reference.torch_dtype(spec))
        fields = [spec.key, spec.func_name, spec.dtype, str(len(spec.arg_names))]
        for name in spec.arg_names:
            t = reference.to_kernel_layout(spec, name, args[name])
            file = f"k{i}.{name}.bin"
            (folder / file).write_bytes(t.numpy().tobytes())
            fields += [file, str(t.dim()), *map(str, t.shape)]
        lines.append(" ".join(fields))
    (folder / "index.txt").write_text("\n".join(lines) + "\n")


def runtime_libraries(arch: str) -> dict[str, Path]:
    """libtvm_runtime.so and libtvm_ffi.so built for `arch`: the installed ones for this machine's arch,
    else extracted from that arch's manylinux wheels of the installed versions (cached)."""
    if arch == platform.machine():
        found = {}
        for name, where in RUNTIME_LIBS.items():
            pkg = importlib.util.find_spec(where.split("/")[0])
            path = Path(pkg.origin).parent / "lib" / name if pkg and pkg.origin else None
            if path is None or not path.exists():
                raise RuntimeError(f"{name} not found in the installed {where.split('/')[0]} package")
            found[name] = path
        return found
    import tvm
    import tvm_ffi
    # Not under cache_dir(): these are immutable downloads, shared even by test sessions that
    # point cache_dir() at a fresh folder.
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gconvgen-runtime"
    folder = base / f"{arch}-tvm{tvm.__version__}-ffi{tvm_ffi.__version__}"
    wanted = {name: folder / name for name in RUNTIME_LIBS}
    if all(p.exists() for p in wanted.values()):
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching the {arch} TVM runtime (apache-tvm {tvm.__version__}, apache-tvm-ffi "
              f"{tvm_ffi.__version__} wheels from PyPI, once)...", file=sys.stderr, flush=True)
        _pip_download(Path(tmp), arch, [f"apache-tvm=={tvm.__version__}", f"apache-tvm-ffi=={tvm_ffi.__version__}"],
                      f"the {arch} TVM runtime wheels")
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                for name, where in RUNTIME_LIBS.items():
                    if where + name in z.namelist():
                        with z.open(where + name) as src, open(folder / f".{name}.tmp", "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        (folder / f".{name}.tmp").replace(folder / name)
    missing = [n for n, p in wanted.items() if not p.exists()]
    if missing:
        raise RuntimeError(f"the {arch} wheels did not contain {missing}")
    return wanted


def run_emulated(out: Path, profile: TargetProfile) -> tuple[int, str]:
    """Cross-compile the bundle's C loader and run it under qemu-user on the bundle's vectors: every
    kernel is executed as the board would, and checked against PyTorch. Results, not times.
    Returns (exit status, the loader's report)."""
    arch = profile.arch
    qemu, sysroot = shutil.which(f"qemu-{arch}"), Path(f"/usr/{arch}-linux-gnu")
    if qemu is None:
        raise RuntimeError(f"qemu-{arch} not found: install Debian's qemu-user to run {arch} kernels here")
    if not (out / "vectors" / "index.txt").exists():
        raise RuntimeError(f"{out} has no test vectors: build it with --vectors")
    cc = profile.cc or "cc"
    made = subprocess.run(["make", "-s", "-C", str(out / "loader"), f"CC={cc}"], capture_output=True, text=True)
    if made.returncode != 0:
        raise RuntimeError(f"building the C loader with {cc} failed:\n{made.stderr.strip()[-2000:]}")
    done = subprocess.run([qemu, "-L", str(sysroot), str(out / "loader" / "gconvgen_run"), str(out)],
                          capture_output=True, text=True, timeout=3600)
    return done.returncode, (done.stdout + done.stderr).strip()


def _ffi_wheel(folder: Path, arch: str, python: str) -> Path:
    import tvm_ffi
    folder.mkdir(exist_ok=True)
    _pip_download(folder, arch, [f"apache-tvm-ffi=={tvm_ffi.__version__}"],
                  f"the apache-tvm-ffi wheel for Python {python} on {arch}", python)
    return folder


def _pip_download(folder: Path, arch: str, packages: list[str], what: str, python: str | None = None) -> None:
    """pip's binary wheels of `packages` for manylinux on `arch` (and `python`) into folder."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
           "--platform", f"manylinux_2_28_{arch}", *(["--python-version", python] if python else []), *packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"could not download {what} ({' '.join(cmd[3:])}): {done.stderr.strip()[-300:]}")


def _tvm_ffi_include() -> Path:
    pkg = importlib.util.find_spec("tvm_ffi")
    return Path(pkg.origin).parent / "include"


def _readme(profile: TargetProfile, kernels: int) -> str:
    arch = profile.arch
    cross = f"make CC={profile.cc}" if profile.cc else "make"
    return f"""# gconvgen bundle: {kernels} kernels for {profile.name} ({arch})

{profile.description}

Needs on the board: Linux on {arch}, Python 3.9+ and `pip install apache-tvm-ffi==__FFI__` for the
Python loader; nothing else (no compiler, no torch). `lib/` holds libtvm_runtime.so and libtvm_ffi.so
for {arch}.

## Install
Copy this folder to the board (`scp -r BUNDLE pi@board:`), then on the board:

    pip install apache-tvm-ffi==__FFI__
    python loader/gconvgen_loader.py .            # lists the kernels; refuses a library for another CPU
    python loader/gconvgen_loader.py . --verify   # runs each kernel on vectors/ (if built with --vectors)

From Python:

    import sys; sys.path.insert(0, "loader")
    from gconvgen_loader import Library
    lib = Library(".")
    fn = lib.function(KEY)          # KEY: a kernel key from manifest.json
    fn(input, weight, bias, output) # DLPack tensors (torch, numpy) or gconvgen_loader.alloc(shape)

Arguments are in manifest.json's order and shapes (`args`): NCHW or NHWC activations per `layout`;
weights in torch's OIHW, or HWIO (`kh, kw, in/groups, out`) where the spec says so
(`weight_layout`, or any NHWC kernel), or HWIO<t> (`out/t, kh, kw, in/groups, t`: HWIO with the output
channels in blocks of t, block-major); a `residual` argument has the output's shape.

## C
`loader/gconvgen_run.c` loads gconvgen.so through tvm-ffi's C ABI and calls kernels with DLTensor
pointers; build it on the board with `cd loader && make`, or cross-compile on a PC with
`cd loader && {cross}`. `./gconvgen_run ..` checks every kernel on vectors/.
Under emulation on a PC: `qemu-{arch} -L /usr/{arch}-linux-gnu loader/gconvgen_run .`
(this is what `gconvgen bench --target {profile.name}` does).

## PyTorch
Where PyTorch runs, `python/` holds the gconvgen package; it needs no TVM compiler, only tvm-ffi:

    import sys; sys.path.insert(0, "python")
    import gconvgen
    from gconvgen import torch_ops
    torch_ops.use_library(".")          # torch.ops.gconvgen and gconvgen.nn calls run these kernels
    fast = gconvgen.convert(model.eval())   # a bundle built with --model NAME holds all its layers

A call whose kernel the bundle lacks runs on aten, with one warning (`torch_ops.set_strict(True)`:
an error naming it).
{_gpu_section(profile)}""".replace("__FFI__", _ffi_version())


def _gpu_section(profile: TargetProfile) -> str:
    if profile.target.get("kind") != "cuda":
        return ""
    return f"""
## GPU ({profile.target.get('arch')})
The kernels are fatbins for {profile.target.get('arch')}; `lib/libtvm_runtime_cuda.so` loads them (it needs the
driver's libcuda and CUDA 13's libcudart). On the GPU host, with PyTorch installed:

    pip install apache-tvm-ffi==__FFI__        # or: pip install wheels/*.whl (built with --wheel-python)
    python loader/gpu_check.py .               # every kernel vs torch, CUDA-event times, % of copy bandwidth

In PyTorch (above), CUDA tensors run these kernels on torch's current stream, in CUDA graphs too
(warm each shape up before capturing): `gconvgen.convert(model.eval(), torch_threads=None).cuda()`.
`python loader/gpu_check.py . --model mobilenet_v2` does that for MobileNetV2 (a bundle built with
`--model mobilenet_v2`) and times it against torch, eager and in CUDA graphs.
"""


def _ffi_version() -> str:
    import tvm_ffi
    return tvm_ffi.__version__
