"""`gconvgen bench --convergence`: how fast tuning got each layer near its best, read from the log.

The first record of a kernel is its rule's own schedule (gconvgen tune measures it before
searching), so "trials to 90 %" counts search trials after that: 0 means the rule was already
within 90 % of the best time found. "rule speed" is best time / rule time (1.00: the search found
nothing faster than the rule).
"""
from __future__ import annotations

from .ops import prim_func
from .schedule import logs
from .suites import Workload
from .targets import TargetProfile
from .tunelog import workload_of


def trials_to_fraction(times: list[float], fraction: float = 0.9) -> int | None:
    """Index of the first time within `fraction` of the best (speed = best / time >= fraction)."""
    ok = [t for t in times if t < float("inf")]
    if not ok:
        return None
    best = min(ok)
    return next(i for i, t in enumerate(times) if best / t >= fraction)


def report(workloads: list[Workload], profile: TargetProfile) -> str:
    import tvm
    lines = [f"{'layer':26s} {'records':>7s} {'rule us':>9s} {'best us':>9s} {'rule speed':>10s} {'trials to 90%':>13s}"]
    seen, reached = set(), []
    for w in workloads:
        if w.spec.key in seen:
            continue
        seen.add(w.spec.key)
        h = workload_of(tvm.IRModule({"main": prim_func(w.spec)}))[0]
        times = []
        for log in logs(profile):
            times = [r.seconds * 1e6 if r.ok else float("inf") for r in log.records() if r.workload == h]
            if times:
                break
        n = trials_to_fraction(times)
        if n is None:
            lines.append(f"{w.name:26s} {len(times):7d} {'-':>9s} {'-':>9s} {'-':>10s} {'not tuned':>13s}")
            continue
        best = min(times)
        reached.append(n)
        lines.append(f"{w.name:26s} {len(times):7d} {times[0]:9.1f} {best:9.1f} {best / times[0]:10.2f} {n:13d}")
    if reached:
        reached.sort()
        lines.append(f"median trials to reach 90% of the best: {reached[len(reached) // 2]} "
                     f"(max {reached[-1]}, {sum(n == 0 for n in reached)}/{len(reached)} layers: the rule itself)")
    return "\n".join(lines)
