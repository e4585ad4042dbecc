"""Compile specs for a target into one shared library plus its manifest.json."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import tvm

from . import __version__, manifest
from .paths import PACKAGE_DIR, ROOT, cache_dir
from .schedule import schedule
from .spec import KernelSpec
from .targets import TargetProfile

LIBRARY = "gconvgen.so"
# the host code's DWARF, which nothing reads (TVM reports a kernel's errors by name): a fifth of a CUDA
# library of candidates, which a GPU host must be sent
STRIP = ["-Wl,--strip-debug"]


def compile_module(mod: tvm.IRModule, target: tvm.target.Target):
    """tvm.compile of scheduled functions, as every kernel of ours is compiled: under the target
    (TVM's CUDA compile callback reads the arch from the current target, per thread) and, for CUDA,
    with the global-to-shared copies of a software pipeline's async stages made cp.async (sm_80 and
    newer: every CUDA profile). Without `tirx.use_async_copy` TVM keeps such copies plain loads and
    stores, which wait for their data where they are issued, so a deeper pipeline hides nothing.
    Only a schedule that asks for async stages (cuda.TensorCoreGemmPipelined) compiles differently
    under it: every other rule's CUDA code is the same, byte for byte."""
    config = {"tirx.use_async_copy": True} if target.kind.name == "cuda" else {}
    with target, tvm.transform.PassContext(config=config):
        return tvm.compile(mod, target=target)


def versions() -> dict[str, str]:
    import tvm_ffi
    return {"gconvgen": __version__, "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__,
            "code": code_fingerprint()}


def code_fingerprint() -> str:
    """Hash of the sources that decide what a kernel computes and how: ops, schedules and the choice
    among them (gconvgen/schedule.py). Part of the cache key, so editing a rule never serves a stale
    kernel."""
    h = hashlib.sha256()
    for path in [*sorted((PACKAGE_DIR / "ops").glob("*.py")), *sorted((ROOT / "schedules").glob("*.py")),
                 PACKAGE_DIR / "schedule.py"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(specs: Iterable[KernelSpec], profile: TargetProfile, out_dir: str | os.PathLike,
          use_logs: bool = True) -> Path:
    """Compile every spec (duplicates once) into out_dir/gconvgen.so + manifest.json; returns out_dir.
    use_logs=False ignores the tuning logs (rules only)."""
    unique = list({s.key: s for s in specs}.values())
    if not unique:
        raise ValueError("nothing to build: no kernel specs given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    funcs, entries = {}, []
    for spec in unique:
        sched = schedule(spec, profile, use_logs)
        funcs[spec.func_name] = sched.func
        entries.append({"key": spec.key, "function": spec.func_name, "spec": spec.to_json(),
                        "schedule": sched.kind, "rule": sched.source,
                        "args": [{"name": n, "shape": list(spec.shape(n)), "dtype": spec.dtype}
                                 for n in spec.arg_names]})
    compile_library(funcs, profile, out / LIBRARY)
    manifest.write(out, {
        "format": manifest.FORMAT, "library": LIBRARY, "sha256": manifest.sha256(out / LIBRARY),
        "target": {"profile": profile.name, "family": profile.family, "tvm_target": profile.target,
                   "arch": profile.arch, "features": profile.required_features()},
        "versions": versions(), "kernels": entries})
    return out


class Refused(RuntimeError):
    """nvcc refused kernels: `kernels` maps each one's function to nvcc's reason."""

    def __init__(self, kernels: dict[str, str]) -> None:
        super().__init__(f"nvcc refused {len(kernels)} kernel(s), so no library was built:\n"
                         + "\n".join(f"  {name}: {reason}" for name, reason in kernels.items()))
        self.kernels = kernels


def compile_library(funcs: dict, profile: TargetProfile, path: Path, drop_refused: bool = False) -> dict[str, str]:
    """Scheduled PrimFuncs (by symbol) compiled for the profile's target into one shared library.
    Raises Refused naming the kernels nvcc refuses; with drop_refused, leaves them out instead (a
    tuning candidate's tiling that nvcc cannot compile costs that candidate, not the library) and
    returns them, each with nvcc's reason."""
    if profile.target.get("kind") == "cuda":
        from .cuda import prepare
        prepare()   # nvcc-built fatbins in the library, also on a machine without a GPU
    library, dropped = _compile(funcs, profile.tvm_target(), drop_refused)
    if profile.cc:
        from tvm.support import cc
        if shutil.which(profile.cc) is None:
            raise RuntimeError(f"target {profile.name} needs the cross compiler {profile.cc!r}, which is not "
                               f"installed (Debian: apt-get install gcc-aarch64-linux-gnu)")
        library.export_library(str(path), fcompile=cc.cross_compiler(profile.cc), options=STRIP)
    else:
        library.export_library(str(path), options=STRIP)
    return dropped


def _compile(funcs: dict, target: tvm.target.Target, drop_refused: bool) -> tuple[tvm.runtime.Module, dict[str, str]]:
    """The functions compiled into one host module, and those left out as refused (see
    compile_library). For CUDA, nvcc (one process, one core, for a whole module: 15 of the 24
    minutes of a GPU run's 941 candidates) runs on every core: the functions are compiled in parts,
    on threads (nvcc runs outside the GIL), and the parts' host modules are joined by imports, so
    the library holds one device module a part and finds each kernel among them."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # (four parts a worker even out the kernels' nvcc times, which differ widely, at about a second of
    # nvcc's fixed cost each)
    parts = min(len(funcs), 4 * workers) if target.kind.name == "cuda" and workers > 1 else 1
    # (runs of the functions in their order: a kernel's tuning candidates, listed together, share a
    # part, whose fatbin nvcc compresses as well as one of them all; interleaved, 941 candidates'
    # library took 21 MB, not 11)
    names, size = list(funcs), -(-len(funcs) // parts)
    chunks = [names[i:i + size] for i in range(0, len(names), size)]

    def compile_part(chunk: list[str]) -> tuple[tvm.runtime.Module | None, dict[str, str]]:
        dropped: dict[str, str] = {}
        while True:
            kept = [name for name in chunk if name not in dropped]
            if not kept:
                return None, dropped
            try:
                return compile_module(tvm.IRModule({n: funcs[n] for n in kept}), target).mod, dropped
            except RuntimeError as e:
                refused = _refused_functions(str(e), kept) if target.kind.name == "cuda" else {}
                if not refused:
                    raise
                if not drop_refused:
                    raise Refused(refused) from None   # (nvcc's whole output: hundreds of MB of warnings)
                dropped.update(refused)
    if len(chunks) == 1:
        results = [compile_part(chunks[0])]
    else:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(compile_part, chunk) for chunk in chunks]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:   # every part's refusals, not only the first's
            if all(isinstance(e, Refused) for e in errors):
                raise Refused({k: v for e in errors for k, v in e.kernels.items()})
            if all(isinstance(e, RuntimeError) for e in errors):
                raise RuntimeError("\n".join(str(e) for e in errors))
            raise errors[0]
        results = [f.result() for f in futures]
    dropped = {k: v for _, part in results for k, v in part.items()}
    modules = [module for module, _ in results if module is not None]
    if not modules:
        raise Refused(dropped)
    library = modules[0]
    for module in modules[1:]:
        library.import_module(module)
    return library, dropped


def _refused_functions(message: str, functions: list[str]) -> dict[str, str]:
    """The functions whose kernels a failed nvcc compile refused (TVM names a function's kernels
    `<symbol>_kernel`, `<symbol>_kernel_1`, ...), each with nvcc's reason."""
    from .cuda import refused_kernels
    found = {}
    for kernel, reason in refused_kernels(message).items():
        owner = kernel.rsplit("_kernel", 1)[0]
        if owner in functions:
            found.setdefault(owner, reason)
    return found


def cached(spec: KernelSpec, profile: TargetProfile, use_logs: bool = True) -> tuple[Path, bool]:
    """A one-kernel library from the on-disk cache, built on a miss. Returns (folder, was_cached).
    Keyed by spec key, target, versions (code fingerprint included) and the state of the target's
    tuning logs, so a new tuning record is picked up at once."""
    from .schedule import logs
    ident = "\n".join([spec.key, repr(sorted(profile.target.items())), repr(sorted(versions().items())),
                       *(log.fingerprint() for log in logs(profile) if use_logs), f"logs={use_logs}"])
    folder = cache_dir() / "kernels" / hashlib.sha256(ident.encode()).hexdigest()[:24]
    if (folder / manifest.MANIFEST).exists() and (folder / LIBRARY).exists():
        return folder, True
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        build([spec], profile, tmp, use_logs)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same kernel first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, False
