"""Hand-written schedule rules, grouped by target family (x86, arm, cuda), in the style of TVM's DLight.

A rule is a small class with one `apply(func, target, tunable)` that returns a scheduled
`tvm.s_tir.Schedule`, or None when it does not apply. Rules read the kernel's KernelSpec from
the PrimFunc itself (gconvgen.ops.spec_of), so they decide from facts, not from block shapes.
"""
from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.target import Target


class ScheduleRule:
    """Base class of the rules; `name` is what reports call a kernel's schedule."""

    name = "rule"

    def apply(self, func: tvm.tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        raise NotImplementedError


def rules_for(family: str) -> list[ScheduleRule]:
    """The rules of a target family ('x86', 'arm', 'cuda'), most specific first, then the fallback."""
    from . import generic, x86
    return {"x86": x86.RULES}.get(family, []) + generic.RULES
