"""Hand-written schedule rules, grouped by target family (x86, arm, cuda), in the style of TVM's DLight.

A rule is a small class with one `apply(func, target, tunable)` that returns a scheduled
`tvm.s_tir.Schedule`, or None when it does not apply. Rules read the kernel's KernelSpec from
the PrimFunc itself (gconvgen.ops.spec_of), so they decide from facts, not from block shapes.

With `tunable=True` a rule draws its tile sizes with `sample_perfect_tile`, whose default
decision is the rule's own choice: the schedule is then a MetaSchedule design space
(gconvgen.tune wraps it in a ScheduleFn) whose first point is exactly the untuned default.
"""
from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.target import Target


class ScheduleRule:
    """Base class of the rules; `name` is what reports call a kernel's schedule."""

    name = "rule"

    def applies(self, spec, target: Target) -> bool:
        raise NotImplementedError

    def serves(self, spec, target: Target) -> bool:
        """Whether this rule schedules spec untuned (the first of the family that serves it does):
        wherever it applies, unless a rule knows from timings that another does better there. A
        rule that applies but does not serve is still a tuning alternative (gconvgen.offline)."""
        return self.applies(spec, target)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        """Schedule `sch` (holding the spec's PrimFunc as "main") in place."""
        raise NotImplementedError

    def preferred(self, spec, target: Target):
        """A variant of spec (the same result from arguments in another layout) that this rule runs
        faster, for callers that can supply its arguments so; None when it has none."""
        return None

    def apply(self, func: tvm.tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        from gconvgen.ops import spec_of
        spec = spec_of(func)
        if spec is None or not self.applies(spec, target):
            return None
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        self.schedule(sch, spec, target, tunable)
        return sch


def preferred_spec(spec, family: str, target: Target):
    """spec, or the variant a rule of the family asks for (gconvgen.torch_ops calls the kernel of this
    one, with the weight copied into its layout once per weight tensor)."""
    for rule in rules_for(family):
        variant = rule.preferred(spec, target)
        if variant is not None:
            return variant
    return spec


def rules_for(family: str) -> list[ScheduleRule]:
    """The rules of a target family ('x86', 'arm', 'cuda'), most specific first, then the fallback."""
    from . import arm, cuda, generic, x86
    return {"x86": x86.RULES, "arm": arm.RULES, "cuda": cuda.RULES}.get(family, []) + generic.RULES
