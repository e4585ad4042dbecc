"""Target profiles: one TOML file per hardware target in targets/ (adding a board is adding a file)."""
from __future__ import annotations

import os
import platform
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .paths import TARGETS_DIR

from .loader.gconvgen_loader import CHECKED_FEATURES as _CHECKED_FEATURES, host_features  # noqa: F401


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    family: str                      # x86 | arm | cuda: which schedules/ rule set serves it
    target: dict[str, Any]           # the TVM target dict
    cc: str | None = None            # cross compiler for export_library; None = the host's
    runner: str = "local"            # local | emulated | rpc
    logs: tuple[str, ...] = ()       # tune_logs/ folders to read, first is where tuning writes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def log_dirs(self) -> list:
        from .paths import TUNE_LOGS_DIR
        return [TUNE_LOGS_DIR / name for name in (self.logs or (self.name,))]

    def tvm_target(self):
        import tvm
        return tvm.target.Target(self.target)

    @property
    def arch(self) -> str:
        """Machine architecture the library runs on (as platform.machine() says it)."""
        if self.target.get("kind") == "cuda":
            host = self.target.get("host", {})
            return _arch_of(host.get("mtriple", "")) if isinstance(host, dict) else platform.machine()
        return _arch_of(self.target.get("mtriple", ""))

    def required_features(self) -> list[str]:
        """The checked ISA features the target's code may use (LLVM names)."""
        from tvm.target import codegen
        host = self.target if self.target.get("kind") == "llvm" else self.target.get("host")
        if not isinstance(host, dict):
            return []
        import tvm
        have = set(codegen.llvm_get_cpu_features(tvm.target.Target(host)))
        return sorted(f for f in _CHECKED_FEATURES if f in have)


def _arch_of(mtriple: str) -> str:
    if not mtriple:
        return platform.machine()
    return mtriple.split("-")[0]


def list_profiles() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load(name: str) -> TargetProfile:
    """A profile by name (targets/NAME.toml) or by path to a .toml file."""
    path = TARGETS_DIR / f"{name}.toml" if not name.endswith(".toml") else None
    if path is None:
        from pathlib import Path
        path = Path(name)
    if not path.exists():
        raise ValueError(f"unknown target profile {name!r}; known: {', '.join(list_profiles())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"target profile {path} is not valid TOML: {e}") from e
    if "target" not in data or "kind" not in data["target"]:
        raise ValueError(f"target profile {path} needs a [target] table with a kind")
    target = dict(data["target"])
    family = data.get("family", "x86")
    logs = tuple(data.get("logs", ()))
    if data.get("detect"):
        target, family = _detect_host(target)
        logs = _host_logs(target)
    if target.get("kind") == "llvm" and "num-cores" not in target:
        target["num-cores"] = os.cpu_count() or 1
    return TargetProfile(name=data.get("name", path.stem), description=data.get("description", ""),
                         family=family, target=target, cc=data.get("build", {}).get("cc"),
                         runner=data.get("measure", {}).get("runner", "local"), logs=logs,
                         extra={k: v for k, v in data.items() if k not in
                                ("name", "description", "family", "target", "build", "measure", "detect", "logs")})


def _detect_host(target: dict[str, Any]) -> tuple[dict[str, Any], str]:
    from tvm.target import codegen
    target = dict(target)
    target["mcpu"] = codegen.llvm_get_system_cpu()
    target["num-cores"] = os.cpu_count() or 1
    machine = platform.machine()
    return target, ("arm" if machine in ("aarch64", "arm64") else "x86")


def _host_logs(target: dict[str, Any]) -> tuple[str, ...]:
    """This machine's own log first (tuning writes there), then the shipped log of its class, so a
    fresh user gets tuned kernels: schedules transfer within a class, and the search resumes from them."""
    own = f"host-{target['mcpu']}-{target['num-cores']}c"
    features = host_features()
    cls = "x86-avx512" if "avx512f" in features else "x86-avx2" if "avx2" in features else None
    return (own, cls) if cls and platform.machine() in ("x86_64", "AMD64") else (own,)
