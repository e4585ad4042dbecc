"""Pick a kernel's schedule: a hand rule of the target's family if one applies, else the fallback."""
from __future__ import annotations

from dataclasses import dataclass

import tvm

from .ops import prim_func
from .spec import KernelSpec
from .targets import TargetProfile


@dataclass(frozen=True)
class Scheduled:
    func: tvm.tirx.PrimFunc   # scheduled, named spec.func_name
    kind: str                 # "tuned" | "rule" | "fallback"
    source: str               # which rule (or tuning record) gave the schedule


def schedule(spec: KernelSpec, profile: TargetProfile) -> Scheduled:
    from schedules import rules_for
    func = prim_func(spec)
    target = profile.tvm_target()
    for rule in rules_for(profile.family):
        sch = rule.apply(func, target, tunable=False)
        if sch is not None:
            kind = "fallback" if rule.name == "fallback" else "rule"
            scheduled = sch.mod["main"].with_attr("global_symbol", spec.func_name)
            return Scheduled(scheduled, kind, rule.name)
    raise ValueError(f"no schedule rule applies to {spec.key} on target {profile.name} "
                     f"(family {profile.family})")
