"""Load a built library with the runtime only (tvm-ffi + libtvm_runtime.so, no compiler). It never
imports `tvm`: the checks and loading are the bundle loader's (gconvgen/loader/gconvgen_loader.py);
this adds KernelSpec-keyed kernels on top."""
from __future__ import annotations

import os
from typing import Any, Callable

from .loader.gconvgen_loader import ALIGNMENT, Library as _Library
from .loader.gconvgen_loader import check_compatible, elf_arch, load_runtime  # noqa: F401 - re-exported
from .spec import KernelSpec


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
        for arg, t in zip(self.args, tensors):
            address = _address(t)
            if address is not None and address % ALIGNMENT:
                raise ValueError(f"kernel {self.spec.key}: {arg['name']} starts at {address:#x}, not on a "
                                 f"{ALIGNMENT}-byte boundary (a view into another tensor?); the kernels use "
                                 f"aligned vector loads: pass a fresh copy")
        self.function(*tensors)


def _address(t: Any) -> int | None:
    """The data address of a torch tensor, numpy array or tvm-ffi tensor (None: unknown kind)."""
    ptr = getattr(t, "data_ptr", None)
    if callable(ptr):
        return int(ptr())
    interface = getattr(t, "__array_interface__", None)
    return int(interface["data"][0]) if interface else None


class Library(_Library):
    """A library folder (gconvgen.so + manifest.json), checked and loaded; kernels by spec."""

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__(folder)
        self._kernels: dict[str, Kernel] = {}

    def specs(self) -> list[KernelSpec]:
        if not hasattr(self, "_specs"):
            self._specs = [KernelSpec.from_json(e["spec"]) for e in self.entries.values()]
        return self._specs

    def __contains__(self, spec: KernelSpec) -> bool:
        return spec.key in self.entries

    def kernel(self, spec: KernelSpec | str) -> Kernel:
        key = spec if isinstance(spec, str) else spec.key
        if key not in self._kernels:
            function = self.function(key)
            entry = self.entries[key]
            self._kernels[key] = Kernel(KernelSpec.from_json(entry["spec"]), function, entry)
        return self._kernels[key]


def load(folder: str | os.PathLike) -> Library:
    return Library(folder)
