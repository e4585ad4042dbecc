"""Rules for any target family: the fallback that every kernel can take."""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from . import ScheduleRule

_SPATIAL = 0  # IterVar.DataPar


class Fallback(ScheduleRule):
    """Every block: outer spatial loops fused and parallel, reductions moved outside the innermost
    spatial loop, which is vectorized. Never the naive loop nest; never fast either.

    Applies to any PrimFunc of ours on a CPU target; not to GPUs (which need thread bindings)."""

    name = "fallback"

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "llvm"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        reductions = []
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
            spatial = [l for l, k in zip(loops, kinds) if k == _SPATIAL]
            red = [l for l, k in zip(loops, kinds) if k != _SPATIAL]
            if red:
                sch.reorder(*spatial[:-1], *red, spatial[-1])
                reductions.append((block, red[0]))
            if len(spatial) > 1:
                sch.parallel(sch.fuse(*spatial[:2]) if len(spatial) > 2 else spatial[0])
            sch.vectorize(spatial[-1])
        for block, loop in reductions:
            sch.decompose_reduction(block, loop)


RULES: list[ScheduleRule] = [Fallback()]
