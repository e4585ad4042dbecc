"""Tuning for a machine this one cannot reach (a GPU host, a board off the network).

1. `export`: candidates are drawn here from MetaSchedule's evolutionary search over each kernel's
   rule space (the rule's own choice first, then tilings not timed yet), plus the schedules of the
   family's other rules that apply to it too (alternatives). Where the target's logs hold timings
   (an earlier round's import), the search starts from them as a tuning run would: the space of the
   rule that ran the kernel fastest gets the trials, each space's population starts from its timed
   points, and MetaSchedule's XGBoost cost model, trained on every timing of the exported kernels,
   ranks the new ones. They are built into one library, and written
   with the runtime libraries, the loader and `loader/measure.py` into a folder to carry over
   (candidates.json lists them; their MetaSchedule records wait for the import in records.json.gz).
2. On the machine: `python loader/measure.py FOLDER` times every candidate in one run and writes
   `results.json` (needs tvm-ffi; torch for CUDA tensors).
3. `import_results`: the timings come back as ordinary MetaSchedule records in the target's tuning
   log, so `build`, `bench` and the torch ops pick the best at once, and a later `tune` search or
   export starts from them: rounds of export, measure and import tune a machine this one never reaches.
"""
from __future__ import annotations

import gzip
import json
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import tvm
from tvm.s_tir import meta_schedule as ms

from .ops import prim_func
from .paths import PACKAGE_DIR
from .schedule import fit_tile, nearest_tuned, rule_for
from .spec import KernelSpec
from .targets import TargetProfile
from .tunelog import FAILED, Record, TuneLog, record_json, trace_json, workload_of

CANDIDATES = "candidates.json"
RECORDS = "records.json.gz"
RESULTS = "results.json"
LIBRARY = "candidates.so"
# 3: the records and workloads (what only the import reads: three quarters of a candidates folder's
# JSON) in RECORDS, compressed, not in CANDIDATES; 2: each kernel's workload once (1 repeated it)
FORMAT = 3
# nearest timed kernels whose fastest points are offered, fitted to a kernel's shape, beside its search
NEIGHBORS = 8


class Drawn(NamedTuple):
    """A candidate: its schedule, MetaSchedule's args_info, the rule whose space holds it, and the
    kernel whose timed point it is, fitted to this one's shape ("" for a point of this kernel's own
    search)."""
    sch: Any
    args_info: list
    rule: str
    transfer_from: str = ""


def _draw(spec: KernelSpec, profile: TargetProfile, count: int, seed: int, alternative_count: int = 1,
          guide: Guide | None = None, neighbor_count: int = 0) -> tuple[tvm.IRModule, list[Drawn]]:
    """The kernel's module, and its candidates: a rule's own schedule and up to count - 1 points of
    its space, then from every other rule of the family that applies (its alternatives, which only a
    timed candidate can make serve; not the fallbacks) its own schedule and up to alternative_count - 1
    points of its space. The rule with count is the one whose space holds the kernel's fastest timed
    point in the profile's logs (the rule that serves it untuned where none is timed), of the rules
    that sample something; with a guide the points are searched from the timed ones, and up to
    neighbor_count more are the nearest timed kernels' fastest points fitted to this shape (_neighbors)."""
    from schedules import rules_for
    target = profile.tvm_target()
    mod = tvm.IRModule({"main": prim_func(spec)})
    default = rule_for(spec, profile)
    rules = [default] + [r for r in rules_for(profile.family) if r is not default and r.applies(spec, target)
                         and not r.name.lower().endswith("fallback")]
    spaces = [(rule, rule.apply(mod["main"], target, tunable=True)) for rule in rules]
    measured = guide.measured(mod) if guide else []
    spaces = [(rule, sch, [r for r in measured if _holds(sch, r)]) for rule, sch in spaces]   # (fastest first)
    # (a fixed schedule, DLight's GEMM, has no space to search: the trials go to the next fastest)
    searchable = [i for i, (_, sch, timed) in enumerate(spaces) if sch.trace.decisions and timed]
    fastest = min(searchable, key=lambda i: measured.index(spaces[i][2][0]), default=0)
    spaces.insert(0, spaces.pop(fastest))
    drawn: list = []
    for i, (rule, sch, timed) in enumerate(spaces):
        points = _explore(spec, mod, rule, sch, target, count if i == 0 else alternative_count, seed, timed, guide)
        if not fits(sch, mod, target):
            # (the searched points are checked so by the search; a rule's own choice is not, and one
            # past the limits fails the whole library's build)
            warnings.warn(f"{rule.name}'s own schedule of {spec.key} is past the target's GPU limits "
                          f"(threads or shared memory): not offered")
            points = points[1:]
        # (DLight's GEMM is two rules' schedule: offered once)
        drawn += [p for p in points if not drawn or str(p.sch.trace) != str(drawn[0].sch.trace)]
    if guide is not None and neighbor_count > 0:
        seen = {_point(r.trace) for r in measured} | {_point(trace_json(p.sch.trace)) for p in drawn}
        drawn += _neighbors(spec, mod, profile, [(rule, sch) for rule, sch, _ in spaces], seen, neighbor_count)
    return mod, drawn


def _neighbors(spec: KernelSpec, mod: tvm.IRModule, profile: TargetProfile, spaces: list, seen: set[str],
               count: int) -> list[Drawn]:
    """Up to count points new to the kernel: the fastest timed point of each of the NEIGHBORS nearest
    other kernels of its family (schedule.nearest_tuned) where a rule's space on this shape takes the
    same steps, its decisions fitted to this shape (_fitted). A kernel's own search draws from the
    points it was timed at and at random, so a tiling that ran a kernel like it fast may never come
    up: of MobileNetV2's float32 NCHW 3x3s at batch 64 on an H200 (Nov 2026), 384x14 ran at 13 us
    with 3 planes a block and 576x14, 1.5x its bytes, at 34 at best, none of its 26 candidates
    taking 3 planes."""
    target = profile.tvm_target()
    drawn = []
    for other, record, _ in nearest_tuned(spec, profile)[:NEIGHBORS]:
        rule, space = next(((rule, sch) for rule, sch in spaces if _holds(sch, record)), (None, None))
        sch = _fitted(mod, space, record) if rule is not None else None
        point = _point(trace_json(sch.trace)) if sch is not None else None
        if sch is None or point in seen or not fits(sch, mod, target):
            continue
        seen.add(point)
        drawn.append(Drawn(sch, _args_info(sch), rule.name, other.key))
        if len(drawn) == count:
            break
    return drawn


def _fitted(mod: tvm.IRModule, space, record: Record):
    """The point of a rule's space (its own schedule `space`) that takes another shape's record's
    decisions, each sampled tile fitted to this shape (schedule.fit_tile), or None where that fails.
    The space's own trace is replayed, not the record's, so what the rule derives from the shape
    (vector lanes, thread counts) is this shape's; _holds(space, record) says the two take the same
    steps, so their decisions come in the same order."""
    from tvm import s_tir
    theirs = iter([d for _, d in sorted(record.trace[1], key=lambda x: int(x[0]))])
    sch = s_tir.Schedule(mod)

    def decide(inst, inputs, attrs, decision):
        if decision is None:
            return None
        theirs_now = next(theirs)
        if inst.kind.name == "SamplePerfectTile":
            return fit_tile(int(sch.get(inputs[0]).extent), [int(d) for d in theirs_now], int(attrs[1]))
        return theirs_now

    try:
        space.trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
    except Exception:  # noqa: BLE001 - TVM's errors: a decision this shape's space does not take
        return None
    return sch


def _holds(sch, record: Record) -> bool:
    """Whether a timed record is a point of the space whose own schedule is sch: its trace takes the
    steps sch's does as the rule stands (a record of the rule before an edit differs), its decisions
    and postprocessing aside."""
    return _steps(trace_json(sch.trace)) == _steps(record.trace)


def _steps(trace: list) -> list:
    """A trace's schedule steps: each instruction's kind and attributes up to its postprocessing,
    without the lookups (GetSBlock, GetLoops, ...), which MetaSchedule drops from a searched point's
    trace where their results go unused (and numbers the rest anew: their operands are left out)."""
    steps = []
    for kind, _, attrs, _ in trace[0]:
        if kind == "EnterPostproc":
            break
        if not kind.startswith("Get"):
            steps.append([kind, attrs])
    return steps


class Guide:
    """What the profile's logs already know of the kernels being exported: their timed records, and
    MetaSchedule's XGBoost cost model trained on them (one group per kernel, as a tuning run trains
    it), so each kernel's search starts from its timed points and ranks the new ones by the model."""

    def __init__(self, specs: list[KernelSpec], profile: TargetProfile) -> None:
        from .schedule import logs, replay
        from .tune import Task, _context
        self._logs = logs(profile)
        target = profile.tvm_target()
        self.model = ms.cost_model.XGBModel(num_tuning_cores=int(target.attrs.get("num-cores", 1)))
        self.trained = 0
        for spec in specs:
            mod = tvm.IRModule({"main": prim_func(spec)})
            timed = [(r, sch) for r in self.measured(mod) for sch in [replay(mod, r)] if sch is not None]
            if timed:
                context = _context(Task(spec, 1, mod, workload_of(mod)), target, rule_for(spec, profile), 0)
                self.model.update(context, [ms.MeasureCandidate(sch, _args_info(sch)) for _, sch in timed],
                                  [ms.runner.RunnerResult(run_secs=r.run_secs, error_msg=None) for r, _ in timed])
                self.trained += len(timed)

    def measured(self, mod: tvm.IRModule) -> list[Record]:
        """The kernel's timed records in the profile's logs, fastest first."""
        workload = workload_of(mod)[0]
        return sorted((r for log in self._logs for r in log.records_for(workload)), key=lambda r: r.seconds)


def _args_info(sch) -> list:
    return ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)


def fits(sch, mod: tvm.IRModule, target) -> bool:
    """Whether a schedule keeps to the target's GPU limits (threads, shared memory, as MetaSchedule's
    VerifyGPUCode checks each point of a search). True for other targets, and for a schedule with
    dynamic shared memory: VerifyGPUCode counts it against the 48 KB a block's static shared memory
    may have, but it is sized at launch, up to more (DLight's 128x128 GEMM tiles take about 140 KB
    and ran on an H200; TensorCoreGemm keeps within 48 KB in all)."""
    if target.kind.name != "cuda" or 'scope="shared.dyn"' in sch.mod.script():
        return True
    from . import tensor_intrin
    tensor_intrin.load()   # TuneContext imports it, slowly on its own (60 s of a test's 100)
    check = ms.postproc.VerifyGPUCode()
    ms.TuneContext(mod, target=target, space_generator=ms.space_generator.ScheduleFn(
        lambda s: s, sch_rules=[], postprocs=[check], mutator_probs={}))
    return bool(check.apply(sch))


def _explore(spec: KernelSpec, mod: tvm.IRModule, rule, sch, target, count: int, seed: int,
             timed: list[Record], guide: Guide | None) -> list[Drawn]:
    """The rule's own schedule sch, then up to count - 1 points of its space not timed yet (none where
    the rule samples nothing: DLight's fixed GEMMs): MetaSchedule's evolutionary search from the
    rule's timed points (its database) and random ones, ranked by the guide's cost model (at random
    without one)."""
    from .tune import Task, _context
    drawn = [Drawn(sch, _args_info(sch), rule.name)]
    if count > 1 and sch.trace.decisions:
        database = ms.database.MemoryDatabase()
        workload = database.commit_workload(mod)
        for r in timed:
            database.commit_tuning_record(ms.database.TuningRecord.from_json(r.as_json(), workload))
        # a population of a few times the draws: 64 for 5 draws spent 7 s a kernel evolving them
        ctx = _context(Task(spec, 1, mod, workload_of(mod)), target, rule, seed, population=min(64, 4 * count))
        # (the search may draw the rule's own point or a timed one again: each point is offered once)
        wanted = count + len(timed)
        ctx.pre_tuning(max_trials=wanted, num_trials_per_iter=wanted, design_spaces=ctx.generate_design_space(),
                       database=database, cost_model=guide.model if guide else ms.cost_model.RandomModel())
        try:
            searched = ctx.generate_measure_candidates() or []
        except Exception as e:  # noqa: BLE001 - TVM's errors (a rule's space that fails to sample) are plain ones
            # (one rule's broken space costs its points, not the whole export)
            warnings.warn(f"the search of {rule.name}'s space for {spec.key} failed, its own schedule alone is "
                          f"offered: {str(e).splitlines()[-1][:300]}")
            searched = []
        seen = {_point(trace_json(sch.trace))} | {_point(r.trace) for r in timed}
        for c in searched:
            point = _point(trace_json(c.sch.trace))
            if point not in seen and len(drawn) < count:
                seen.add(point)
                drawn.append(Drawn(c.sch, c.args_info, rule.name))
    return drawn


def _point(trace: list) -> str:
    """A trace's decisions in order (its point in the rule's space), from its JSON (without the
    instructions' indices, which a searched point's simplified trace shifts)."""
    return json.dumps([decision for _, decision in trace[1]])


def export(specs: list[KernelSpec], profile: TargetProfile, out_dir: str | Path, trials: int = 16,
           seed: int = 0, alternative_trials: int = 1, neighbor_trials: int = 2) -> Path:
    """Write the candidates of every distinct spec to out_dir (trials from the space of its fastest
    timed rule, alternative_trials from each other rule's, up to neighbor_trials fitted from the
    nearest timed kernels), searched from what the profile's logs hold; returns it."""
    from . import build, bundle
    if trials < 1 or alternative_trials < 1 or neighbor_trials < 0:
        raise ValueError("--trials and --alternative-trials must be at least 1 for an export, "
                         "--neighbor-trials at least 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = profile.tvm_target()
    funcs, entries, traces, workloads = {}, [], {}, {}
    unique = list({s.key: s for s in specs}.values())
    guide = Guide(unique, profile)
    for spec in unique:
        mod, drawn = _draw(spec, profile, trials, seed, alternative_trials, guide, neighbor_trials)
        workloads[spec.key] = workload_of(mod)
        for j, d in enumerate(drawn):
            name = f"c{j}_{spec.func_name}"
            funcs[name] = d.sch.mod["main"].with_attr("global_symbol", name)
            record = ms.database.TuningRecord(d.sch.trace, ms.database.Workload(mod), run_secs=None, target=target,
                                              args_info=d.args_info)
            traces[name] = record_json(record)
            entries.append({"function": name, "key": spec.key, "rule": d.rule, "spec": spec.to_json(),
                            "args": [{"name": n, "shape": list(spec.shape(n)), "dtype": spec.dtype}
                                     for n in spec.arg_names],
                            **({"transfer_from": d.transfer_from} if d.transfer_from else {})})
    refused = build.compile_library(funcs, profile, out / LIBRARY, drop_refused=True)
    if refused:   # (one tiling nvcc cannot compile costs its candidate, not an export of an hour)
        by_function = {e["function"]: e for e in entries}
        warnings.warn(f"nvcc refused {len(refused)} of {len(entries)} candidates, left out of the library:\n"
                      + "\n".join(f"  {name} ({by_function[name]['rule']}, {by_function[name]['key']}): {reason}"
                                   for name, reason in refused.items()))
        entries = [e for e in entries if e["function"] not in refused]
        traces = {name: trace for name, trace in traces.items() if name not in refused}
    bundle.copy_runtime(out, profile)
    (out / "loader").mkdir(exist_ok=True)
    for name in ("gconvgen_loader.py", "measure.py", "gpu_check.py"):   # (measure.py times GPUs with its timer)
        shutil.copy2(PACKAGE_DIR / "loader" / name, out / "loader" / name)
    (out / CANDIDATES).write_text(json.dumps({
        "format": FORMAT, "profile": profile.name, "tvm_target": profile.target, "arch": profile.arch,
        "device": "cuda" if profile.target.get("kind") == "cuda" else "cpu", "library": LIBRARY, "candidates": entries},
        indent=1) + "\n")
    with gzip.open(out / RECORDS, "wt") as f:
        json.dump({"records": traces, "workloads": workloads}, f)
    return out


def records(folder: str | Path) -> dict:
    """A candidates folder's records (by function) and workloads (by kernel key)."""
    with gzip.open(Path(folder) / RECORDS, "rt") as f:
        return json.load(f)


def import_results(folder: str | Path, profile: TargetProfile) -> Counter:
    """Append every measured candidate of folder/results.json to the profile's tuning log. Returns
    the count of records per kernel key. Refuses results made for another target."""
    folder = Path(folder)
    try:
        data = json.loads((folder / CANDIDATES).read_text())
        results = json.loads((folder / RESULTS).read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e.filename} not found: export candidates, then run loader/measure.py "
                                f"there, and bring its {RESULTS} back into {folder}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{folder}: {CANDIDATES} or {RESULTS} is not valid JSON ({e})") from e
    if data.get("format") != FORMAT or not isinstance(results, dict):
        raise ValueError(f"{folder}: not a gconvgen candidates folder of format {FORMAT}")
    if data["profile"] != profile.name or data["tvm_target"] != profile.target:
        raise ValueError(f"{folder} holds candidates for target {data['profile']!r}, not {profile.name!r}")
    try:
        stored = records(folder)
    except (OSError, EOFError, json.JSONDecodeError) as e:   # (gzip's errors are OSErrors)
        raise ValueError(f"{folder / RECORDS} is missing or corrupt ({e}): import into the folder the candidates "
                         f"were exported to, bringing back only {RESULTS}, or export them again") from e
    log = TuneLog(profile.log_dirs[0])
    counts: Counter = Counter()
    by_workload: dict[str, tuple[list, list]] = {}
    for entry in data["candidates"]:
        secs = results.get(entry["function"])
        if secs is None:
            continue
        record = list(stored["records"][entry["function"]])
        record[1] = [float(s) for s in secs] if secs else [FAILED]
        workload = stored["workloads"][entry["key"]]
        by_workload.setdefault(workload[0], (workload, []))[1].append(record)
        counts[entry["key"]] += 1
    for workload, timed in by_workload.values():
        log.append(workload, timed)
    return counts
