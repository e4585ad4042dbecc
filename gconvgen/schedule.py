"""Pick a kernel's schedule, first that works:
1. its best record in the target's tuning logs (tune_logs/<log>/, MetaSchedule's database);
2. the best record of the nearest tuned kernel of the same family, replayed on this shape and
   checked against PyTorch before use (transfer; only for a target this machine runs);
3. a hand rule of the target's family (schedules/<family>.py);
4. the generic fallback.
A record from the profile's own (first) log is served as it is. One from another log (the shipped log
of the machine's class) or a transfer serves, where this machine runs the target, only when it beats
the rule on a timed run here.
"""
from __future__ import annotations

import math
import platform
import warnings
from dataclasses import dataclass

import tvm

from .ops import prim_func, spec_of
from .spec import KernelSpec
from .targets import TargetProfile, host_features
from .tunelog import Record, TuneLog, workload_of

TRANSFER_CANDIDATES = 3   # nearest tuned kernels whose trace we try on a new shape
# A trace replayed on another shape can unroll a whole channel loop (4->4096 channels at 28x28: a
# 4096-step unroll LLVM compiled for over 5 minutes); such a transfer is skipped.
MAX_TRANSFER_UNROLL = 256
COLD_FLUSH_BYTES = 8 << 20   # written between timed calls in `fastest`: more than a core's L2


@dataclass(frozen=True)
class Scheduled:
    func: tvm.tirx.PrimFunc   # scheduled, named spec.func_name
    kind: str                 # "tuned" | "transfer" | "rule" | "fallback"
    source: str               # which record or rule gave the schedule


_LOGS: dict[str, TuneLog] = {}


def logs(profile: TargetProfile) -> list[TuneLog]:
    """The profile's tuning logs, read once per process (re-read when a file changes)."""
    return [_LOGS.setdefault(str(d), TuneLog(d)) for d in profile.log_dirs]


def schedule(spec: KernelSpec, profile: TargetProfile, use_logs: bool = True) -> Scheduled:
    mod = tvm.IRModule({"main": prim_func(spec)})
    if use_logs:
        tuned, log = _tuned(spec, mod, profile)
        # A transfer is checked against PyTorch before use, so only for a target this machine runs
        # (a CUDA one is not: there the rule serves each shape it was not tuned for)
        found = tuned or (_transferred(spec, mod, profile) if runs_here(profile) else None)
        if found is None:
            return rule_schedule(spec, profile)
        if log is logs(profile)[0] or not runs_here(profile):   # a record of the profile's own log
            return found
        # A record tuned on another machine of the class (the shipped log), or transferred from
        # another shape, serves only when it beats the rule here: a few noisy trials can crown a
        # schedule slower than the rule (32->192 at 28x28: 88 us tuned vs 68 us rule on this VM).
        return fastest(spec, profile, [found, rule_schedule(spec, profile)])
    return rule_schedule(spec, profile)


def rule_for(spec: KernelSpec, profile: TargetProfile):
    """The first rule of the profile's family that serves spec (the fallback last)."""
    from schedules import rules_for
    target = profile.tvm_target()
    for rule in rules_for(profile.family):
        if rule.serves(spec, target):
            return rule
    raise ValueError(f"no schedule rule applies to {spec.key} on target {profile.name} "
                     f"(family {profile.family})")


def rule_schedule(spec: KernelSpec, profile: TargetProfile) -> Scheduled:
    rule = rule_for(spec, profile)
    sch = rule.apply(prim_func(spec), profile.tvm_target(), tunable=False)
    kind = "fallback" if rule.name == "fallback" else "rule"
    return Scheduled(_named(sch, spec), kind, rule.name)


def _named(sch, spec: KernelSpec) -> tvm.tirx.PrimFunc:
    return sch.mod["main"].with_attr("global_symbol", spec.func_name)


def replay(mod: tvm.IRModule, record: Record, adapt: bool = False):
    """The record's trace applied to mod, or None when it does not apply. With `adapt` (a trace
    from another shape), each sampled tile's factors are fitted to the loop (fit_tile), so the
    trace's tiling carries over."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    if record.tensorizes:   # the tensor-core GEMM's intrinsics, which the rule registers as it runs
        from . import tensor_intrin
        tensor_intrin.load()
    sch = s_tir.Schedule(mod)
    # (TuningRecord.from_json replays the trace on mod already, a tile that does not divide its loop
    # there coming out as [1, ..., extent]: the record's own decisions, by instruction, are fitted)
    recorded = {int(i): d for i, d in record.trace[1]}
    position = iter(range(len(record.trace[0])))

    def fit_tiles(inst, inputs, attrs, decision):
        i = next(position)
        if inst.kind.name != "SamplePerfectTile" or decision is None:
            return decision
        return fit_tile(int(sch.get(inputs[0]).extent), [int(d) for d in recorded.get(i, decision)], int(attrs[1]))

    try:
        trace = ms.database.TuningRecord.from_json(record.as_json(), ms.database.Workload(mod)).trace
        trace.apply_to_schedule(sch, remove_postproc=False, decision_provider=fit_tiles if adapt else None)
    except Exception:  # noqa: BLE001 - any schedule error means: this trace does not fit
        return None
    if adapt and _largest_unroll(sch) > MAX_TRANSFER_UNROLL:
        return None
    return sch


def fit_tile(extent: int, factors: list[int], max_inner: int) -> list[int]:
    """A tile of another loop's factors fitted to a loop of extent: from the innermost out, each
    factor kept where it divides what is left of the loop, else the divisor nearest it (the
    innermost at most max_inner where that is positive); the outermost takes the rest."""
    if math.prod(factors) == extent:
        return factors
    left, inner = extent, []
    for k, f in enumerate(reversed(factors[1:])):
        limit = max_inner if k == 0 and max_inner > 0 else left
        d = min((d for d in range(1, min(left, limit) + 1) if left % d == 0),
                key=lambda d: (abs(math.log(d / f)), -d))
        inner.insert(0, d)
        left //= d
    return [left, *inner]


def _largest_unroll(sch) -> int:
    """The longest explicitly unrolled loop of a schedule."""
    from tvm import tirx

    def blocks(parent):
        for b in sch.get_child_blocks(parent):
            yield b
            yield from blocks(b)
    return max((int(sch.get(loop).extent) for b in blocks(sch.get_sblock("root")) for loop in sch.get_loops(b)
                if sch.get(loop).kind == tirx.ForKind.UNROLLED), default=0)


def _tuned(spec: KernelSpec, mod: tvm.IRModule, profile: TargetProfile) -> tuple[Scheduled | None, TuneLog | None]:
    """The best record of spec's own that still applies, and the log it came from; (None, None)."""
    sch, record, log = _best_record(spec, mod, profile)
    if sch is None:
        return None, None
    return Scheduled(_named(sch, spec), "tuned", f"{log.folder.name} {record.seconds * 1e6:.1f}us"), log


def _best_record(spec: KernelSpec, mod: tvm.IRModule, profile: TargetProfile) -> tuple:
    """(schedule, record, log) of spec's fastest record that still applies; (None, None, None)."""
    workload = workload_of(mod)[0]
    for log in logs(profile):
        for record in log.records_for(workload)[:TRANSFER_CANDIDATES]:
            sch = replay(mod, record)
            if sch is not None:
                return sch, record, log
            warnings.warn(f"tuning log {log.folder}: a record of {spec.key} no longer applies; skipped")
    return None, None, None


def timed_spec(spec: KernelSpec, profile: TargetProfile) -> KernelSpec:
    """spec, or the alternative a rule offers for it (schedules.alternative_specs: the same result
    from the same arguments by other stages, a banded depthwise conv) whose tuned kernel the profile's
    logs timed faster than spec's own (each's fastest record that still applies: what `_tuned`
    serves). Only timings decide: an alternative untimed, or timed where spec is not, is not taken."""
    from schedules import alternative_specs
    alternatives = alternative_specs(spec, profile.family, profile.tvm_target())
    if not alternatives:
        return spec
    timed = [(record.seconds, s) for s in [spec, *alternatives]
             for _, record, _ in [_best_record(s, tvm.IRModule({"main": prim_func(s)}), profile)] if record is not None]
    if not timed or timed[0][1] is not spec:
        return spec
    return min(timed, key=lambda t: t[0])[1]


_SPECS: dict[str, KernelSpec | None] = {}


def _spec_of_workload(workload: list[str]) -> KernelSpec | None:
    if workload[0] not in _SPECS:
        from tvm.s_tir import meta_schedule as ms
        try:
            _SPECS[workload[0]] = spec_of(ms.database.Workload.from_json(workload).mod["main"])
        except Exception:  # noqa: BLE001 - a workload that is not one of ours (or unreadable)
            _SPECS[workload[0]] = None
    return _SPECS[workload[0]]


def distance(a: KernelSpec, b: KernelSpec) -> float | None:
    """How far apart two kernels are for schedule transfer; None when they are of different
    families (op class, layout, dtype, TF32 or not, banded or not), whose schedules never carry over."""
    if ((a.op, a.op_class, a.layout, a.weight_layout, a.dtype, a.tf32, a.banded)
            != (b.op, b.op_class, b.layout, b.weight_layout, b.dtype, b.tf32, b.banded)):
        return None
    d = sum(abs(math.log(x / y)) for x, y in [
        (a.batch, b.batch), (a.in_channels, b.in_channels), (a.out_channels, b.out_channels),
        (a.height, b.height), (a.width, b.width), (a.groups, b.groups)])
    d += 2.0 * (a.kernel != b.kernel) + 2.0 * (a.stride != b.stride) + 1.0 * (a.dilation != b.dilation)
    d += 0.5 * (a.padding != b.padding) + 0.5 * (a.epilogue != b.epilogue)
    return d


def nearest_tuned(spec: KernelSpec, profile: TargetProfile) -> list[tuple[KernelSpec, Record, TuneLog]]:
    """The other kernels of spec's family the profile's logs hold timings of, nearest first
    (`distance`), each with its fastest record and the log that holds it."""
    near = []
    for log in logs(profile):
        workloads = {w[0]: w for w in log.workloads() if w}
        best: dict[str, Record] = {}
        for r in log.records():
            if r.ok and (r.workload not in best or r.seconds < best[r.workload].seconds):
                best[r.workload] = r
        for h, record in best.items():
            other = _spec_of_workload(workloads[h]) if h in workloads else None
            d = distance(spec, other) if other is not None and other.key != spec.key else None
            if d is not None:
                near.append((d, other, record, log))
    near.sort(key=lambda x: x[0])
    return [(other, record, log) for _, other, record, log in near]


def _transferred(spec: KernelSpec, mod: tvm.IRModule, profile: TargetProfile) -> Scheduled | None:
    """Replay the best records of the nearest tuned kernels; the first that applies and computes
    the right result is used."""
    for other, record, log in nearest_tuned(spec, profile)[:TRANSFER_CANDIDATES]:
        sch = replay(mod, record, adapt=True)
        if sch is None:
            continue
        func = _named(sch, spec)
        if _validate(spec, func, profile):
            return Scheduled(func, "transfer", f"{log.folder.name} from {other.key}")
    return None


def runs_here(profile: TargetProfile) -> bool:
    return (profile.target.get("kind") == "llvm" and profile.arch == platform.machine()
            and set(profile.required_features()) <= host_features())


def _validate(spec: KernelSpec, func: tvm.tirx.PrimFunc, profile: TargetProfile) -> bool:
    """Compile the transferred schedule; where this machine can run it, also compare its result
    with PyTorch's on random data. A schedule replayed on another shape may compile to a wrong
    kernel (a split that no longer divides), and a wrong kernel must never be served."""
    try:
        from .build import compile_module   # (build imports this module)
        executable = compile_module(tvm.IRModule({"main": func}), profile.tvm_target())
    except Exception:  # noqa: BLE001
        return False
    if not runs_here(profile):
        return True
    import torch
    from . import reference
    args = reference.random_args(spec, seed=1)
    kernel_args, out = _kernel_args(spec, args)
    executable[spec.func_name](*kernel_args, out)
    expected = reference.forward(spec, *args.values()).float()
    got = reference.from_kernel_layout(spec, out).float()
    err = ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-6)).item()
    return err < 1e-4


def _kernel_args(spec: KernelSpec, args: dict) -> tuple[list, object]:
    import torch
    from . import reference
    inputs = [reference.to_kernel_layout(spec, n, args[n]).contiguous() for n in spec.arg_names if n != "output"]
    return inputs, torch.empty(spec.shape("output"), dtype=reference.torch_dtype(spec))


def fastest(spec: KernelSpec, profile: TargetProfile, candidates: list[Scheduled], samples: int = 15) -> Scheduled:
    """The candidate whose kernel runs fastest here as a model runs it: each timed call starts on a
    cold cache, since in a model a layer's weights and input come from beyond L2 (MobileNetV2 in a
    model takes the sum of its layers' cold times, 8.4 ms, not of their warm ones, 4.8). Warm and
    cold disagree: 32->192 at 28x28 tuned and rule tie warm at about 90 us, but cold the tuned one
    takes 160-180 us and the rule 110-118. Median of `samples` calls, the candidates taking turns;
    the first one wins ties within 3 %, so a rule replaces a transfer only when it is clearly
    faster. Only for a profile this machine runs (see runs_here)."""
    import ctypes
    import time
    from . import reference
    from .build import compile_module
    kernel_args, out = _kernel_args(spec, reference.random_args(spec, seed=1))
    flush = ctypes.create_string_buffer(COLD_FLUSH_BYTES)
    fns = []
    for c in candidates:
        fn = compile_module(tvm.IRModule({"main": c.func}), profile.tvm_target())[spec.func_name]
        fn(*kernel_args, out)
        fns.append(fn)
    times: list[list[float]] = [[] for _ in candidates]
    for i in range(samples):
        for fn, t in zip(fns, times):
            ctypes.memset(flush, i & 0xFF, COLD_FLUSH_BYTES)   # evicts the last call's data from L1/L2
            start = time.perf_counter()
            fn(*kernel_args, out)
            t.append(time.perf_counter() - start)
    medians = [sorted(t)[len(t) // 2] for t in times]
    best = min(range(len(candidates)), key=lambda i: medians[i] * (0.97 if i == 0 else 1.0))
    others = ", ".join(f"{c.kind} {c.source} {m * 1e6:.1f}us" for i, (c, m) in enumerate(zip(candidates, medians))
                       if i != best)
    chosen = candidates[best]
    return Scheduled(chosen.func, chosen.kind, f"{chosen.source} ({medians[best] * 1e6:.1f}us; beat {others})")
