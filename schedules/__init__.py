"""Hand-written schedule rules, grouped by target family (x86, arm, cuda), in the style of TVM's DLight.

A rule is a small class with one `apply(func, target, tunable)` that returns a scheduled
`tvm.s_tir.Schedule`, or None when it does not apply. Rules read the kernel's KernelSpec from
the PrimFunc itself (gconvgen.ops.spec_of), so they decide from facts, not from block shapes.

With `tunable=True` a rule draws its tile sizes with `sample_perfect_tile`, whose default
decision is the rule's own choice: the schedule is then a MetaSchedule design space
(gconvgen.tune wraps it in a ScheduleFn) whose first point is exactly the untuned default.
"""
from __future__ import annotations

from dataclasses import replace

import tvm
from tvm import s_tir
from tvm.target import Target


class ScheduleRule:
    """Base class of the rules; `name` is what reports call a kernel's schedule."""

    name = "rule"
    # Whether the rule schedules TF32 specs (KernelSpec.tf32), whose inputs are rounded in stages of
    # their own: a rule that does not never applies to one (see __init_subclass__)
    takes_tf32 = False
    # Whether the rule schedules banded specs (KernelSpec.banded), whose conv is other stages
    takes_banded = False

    def __init_subclass__(cls, **kwargs) -> None:
        """Each rule's own `applies` is wrapped to refuse TF32 specs unless the rule takes them: the
        others expect no rounding stages, and with its products rounded a float32 kernel gains only
        on tensor cores (where the rounding is a stage's copy: cuda.TensorCoreGemmTF32). Likewise
        banded specs, whose stages only cuda.DepthwiseTensorCoreNCHW schedules."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("applies")
        if own is not None:
            def applies(self, spec, target: Target) -> bool:
                return ((self.takes_tf32 or not spec.tf32) and (self.takes_banded or not spec.banded)
                        and own(self, spec, target))
            applies.__doc__ = own.__doc__
            cls.applies = applies

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

    def alternative(self, spec, target: Target):
        """A variant of spec computing the same result from the same arguments by other stages (a
        banded depthwise conv: KernelSpec.banded) that this rule serves; None when it has none. Unlike
        `preferred` it is taken only where the target's timings ran it faster
        (gconvgen.schedule.timed_spec): which of the two wins is the device's to say."""
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


def alternative_specs(spec, family: str, target: Target) -> list:
    """The variants of spec (each computing its result from its arguments by other stages) that a
    rule of the family offers (ScheduleRule.alternative): tuning candidates beside spec, served
    where timed faster."""
    return [v for v in (rule.alternative(spec, target) for rule in rules_for(family)) if v is not None]


def tf32_spec(spec, family: str, target: Target):
    """spec's TF32 variant (KernelSpec.tf32) where a rule of the family serves it, which only
    tensor-core rules do (cuda.TensorCoreGemmTF32): for float32 convs on a GPU whose caller lets
    them multiply in TF32 (gconvgen.torch_ops while torch does, the CLI unless --no-tf32); else None."""
    if spec.op != "conv2d" or spec.dtype != "float32" or spec.tf32:
        return None
    variant = replace(spec, tf32=True)
    return variant if any(rule.serves(variant, target) for rule in rules_for(family)) else None


def rules_for(family: str) -> list[ScheduleRule]:
    """The rules of a target family ('x86', 'arm', 'cuda'), most specific first, then the fallback."""
    from . import arm, cuda, generic, x86
    return {"x86": x86.RULES, "arm": arm.RULES, "cuda": cuda.RULES}.get(family, []) + generic.RULES
