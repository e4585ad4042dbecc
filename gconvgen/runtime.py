"""Load a built library with the runtime only (tvm-ffi + libtvm_runtime.so, no compiler): this
module is what runs on a board. It never imports `tvm`."""
from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any, Callable

from . import manifest
from .spec import KernelSpec

_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0xF3: "riscv64"}
_runtime_loaded = False


def _runtime_library() -> Path | None:
    """libtvm_runtime.so: $GCONVGEN_TVM_RUNTIME, else the one of an installed apache-tvm."""
    env = os.environ.get("GCONVGEN_TVM_RUNTIME")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("tvm")  # locates the package without importing the compiler
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "lib" / "libtvm_runtime.so"
        if candidate.exists():
            return candidate
    return None


def load_runtime() -> None:
    """Make TVM's runtime symbols (thread pool, workspace) global before any kernel library loads."""
    global _runtime_loaded
    if _runtime_loaded:
        return
    path = _runtime_library()
    if path is None:
        raise RuntimeError("libtvm_runtime.so not found: install apache-tvm, or set GCONVGEN_TVM_RUNTIME to "
                           "its path (a bundle ships it in lib/)")
    ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
    _runtime_loaded = True


def elf_arch(path: Path) -> str | None:
    """The architecture an ELF shared library was built for, from its header."""
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def check_compatible(data: dict[str, Any], lib: Path) -> None:
    """Refuse a library this machine cannot run, naming what differs."""
    from .targets import host_features
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


class Kernel:
    """One compiled kernel: call it with tensors in its manifest's argument order (outputs last)."""

    def __init__(self, spec: KernelSpec, function: Callable[..., Any], entry: dict[str, Any]) -> None:
        self.spec = spec
        self.function = function
        self.schedule = entry.get("schedule", "rule")
        self.args = entry["args"]

    def __call__(self, *tensors: Any) -> None:
        if len(tensors) != len(self.args):
            names = ", ".join(a["name"] for a in self.args)
            raise TypeError(f"kernel {self.spec.key} takes {len(self.args)} tensors ({names}), "
                            f"got {len(tensors)}")
        self.function(*tensors)


class Library:
    """A library folder (gconvgen.so + manifest.json), checked and loaded."""

    def __init__(self, folder: str | os.PathLike) -> None:
        import tvm_ffi
        self.folder = Path(folder)
        self.manifest = manifest.read(self.folder)
        lib = self.folder / self.manifest["library"]
        if not lib.exists():
            raise FileNotFoundError(f"{lib} is missing (listed in {self.folder / manifest.MANIFEST})")
        digest = manifest.sha256(lib)
        if digest != self.manifest["sha256"]:
            raise RuntimeError(f"{lib} does not match its manifest (sha256 {digest[:12]}... expected "
                               f"{self.manifest['sha256'][:12]}...): the file was changed or corrupted; rebuild it")
        check_compatible(self.manifest, lib)
        load_runtime()
        self.module = tvm_ffi.load_module(str(lib))
        self.entries = {e["key"]: e for e in self.manifest["kernels"]}
        self._kernels: dict[str, Kernel] = {}

    @property
    def target(self) -> dict[str, Any]:
        return self.manifest["target"]

    def __contains__(self, spec: KernelSpec) -> bool:
        return spec.key in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def kernel(self, spec: KernelSpec | str) -> Kernel:
        key = spec if isinstance(spec, str) else spec.key
        if key not in self._kernels:
            entry = self.entries.get(key)
            if entry is None:
                raise KeyError(f"kernel {key} is not in {self.folder} ({len(self.entries)} kernels)")
            self._kernels[key] = Kernel(KernelSpec.from_json(entry["spec"]), self.module[entry["function"]], entry)
        return self._kernels[key]


def load(folder: str | os.PathLike) -> Library:
    return Library(folder)
