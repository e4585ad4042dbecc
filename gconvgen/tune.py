"""`gconvgen tune`: MetaSchedule over our rule spaces, persisted to the target's tuning log.

How it differs from a plain `ms.tune_tir`:
- the design space of each kernel is its schedule rule with sampled tile sizes (a ScheduleFn),
  not MetaSchedule's generic multi-level tiling, so every candidate is a sensible kernel;
- before searching, each kernel with no record gets the rule's own schedule measured and
  recorded: the evolutionary search starts from it (the database seeds its initial population);
- candidates are built by a lean build function (no tensor-intrinsic import in every worker);
- every measured batch is appended to tune_logs/<target>/ at once, under a lock, so a killed run
  keeps what it measured and two tuners can share a log.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from . import tensor_intrin
from .ops import prim_func
from .paths import cache_dir
from .schedule import rule_for
from .spec import KernelSpec
from .targets import TargetProfile
from .tunelog import FAILED, TuneLog, record_json, trace_json, workload_of


@dataclass(frozen=True)
class Remote:
    """A TVM RPC tracker and the key its boards registered under: candidates are built here and
    measured on whichever board of that key the tracker hands out (many boards: parallel measuring)."""
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, address: str, key: str) -> "Remote":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--rpc takes the tracker as HOST:PORT, got {address!r}")
        if not key:
            raise ValueError("--rpc needs --key: the key the boards registered with the tracker")
        return cls(host, int(port), key)

    def check(self) -> int:
        """The number of servers of our key; a clear error when the tracker is unreachable or no
        server of the key is registered (else MetaSchedule would wait for one forever)."""
        import socket
        from tvm import rpc
        try:   # TVM's own connect retries for a minute: fail fast on a wrong address
            socket.create_connection((self.host, self.port), timeout=5).close()
            summary = rpc.connect_tracker(self.host, self.port).summary()
        except Exception as e:  # noqa: BLE001 - TVM raises plain errors for refused connections
            raise RuntimeError(f"cannot reach the RPC tracker at {self.host}:{self.port}: {e}") from e
        servers = [s for s in summary.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == self.key]
        if not servers:
            keys = sorted({str(s.get("key", "")).split(":")[-1] for s in summary.get("server_info", [])})
            raise RuntimeError(f"no RPC server with key {self.key!r} at the tracker {self.host}:{self.port} "
                               f"(keys there: {keys or 'none'}); start one on the board: python -m "
                               f"tvm.exec.rpc_server --tracker {self.host}:{self.port} --key {self.key}")
        return len(servers)


def export_shared(mod, cc: str | None = None) -> str:
    """A candidate as a shared library, linked here (with the target's cross compiler): boards load
    it without a compiler (MetaSchedule's default .tar would need one on the board)."""
    from tvm.support import cc as _cc
    path = os.path.join(tempfile.mkdtemp(prefix="gconvgen-cand-"), "candidate.so")
    mod.export_library(path, fcompile=_cc.cross_compiler(cc) if cc else None)
    return path


def lean_build(mod, target, _params):
    """MetaSchedule's build without its per-worker tensor-intrinsic import (23 s each here)."""
    import tvm as _tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from .build import compile_module
    return compile_module(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), _tvm.target.Target(target)).mod


@dataclass
class Task:
    spec: KernelSpec
    weight: int
    mod: tvm.IRModule
    workload: list[str]                     # [structural hash, base64 module]
    rule: str = ""
    trials: int = 0
    best_us: float = float("inf")
    first_us: float = float("inf")           # the rule's own schedule, as first measured
    history: list[float] = field(default_factory=list)   # per measured trial, in order


def _context(task: Task, target, rule, seed: int, population: int = 64) -> ms.TuneContext:
    tensor_intrin.load()   # TuneContext imports it, slowly on its own

    def space(sch):
        rule.schedule(sch, task.spec, target, tunable=True)
        return sch
    postprocs = [ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll(),
                 ms.postproc.RewriteReductionBlock()]
    if target.kind.name == "cuda":   # drop tilings over the GPU's thread and shared-memory limits
        postprocs.append(ms.postproc.VerifyGPUCode())
    generator = ms.space_generator.ScheduleFn(
        space, sch_rules=[], postprocs=postprocs,
        mutator_probs={ms.mutator.MutateTileSize(): 1.0})
    # Our spaces hold a few tile decisions, not MetaSchedule's thousands: a small population
    # keeps each search round to seconds instead of a minute on a 2-core box.
    strategy = ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=min(16, population),
                                                     genetic_num_iters=3, max_fail_count=3)
    return ms.TuneContext(task.mod, target=target, space_generator=generator, search_strategy=strategy,
                          task_name=task.spec.func_name, rand_state=seed,
                          num_threads=int(target.attrs.get("num-cores", 1)))


class Progress:
    """One status line: layers done, trials, best-vs-rule speedup so far, ETA."""

    def __init__(self, tasks: list[Task], trials_per_task: int, stream=sys.stderr) -> None:
        self.tasks, self.per_task, self.stream = tasks, trials_per_task, stream
        self.start = time.monotonic()
        self.total = trials_per_task * len(tasks)
        self.tty = stream.isatty()

    def update(self, note: str = "") -> None:
        done = sum(t.trials >= self.per_task for t in self.tasks)
        trials = sum(t.trials for t in self.tasks)
        elapsed = time.monotonic() - self.start
        eta = elapsed / trials * (self.total - trials) if trials else float("nan")
        gains = [t.first_us / t.best_us for t in self.tasks if t.best_us < float("inf") and t.first_us < float("inf")]
        gain = (sum(gains) / len(gains)) if gains else 1.0
        width = 24
        filled = int(width * trials / self.total) if self.total else width
        line = (f"[{'#' * filled}{'.' * (width - filled)}] layers {done}/{len(self.tasks)}  trials {trials}/{self.total}"
                f"  best vs rule {gain:4.2f}x  elapsed {_clock(elapsed)}  ETA {_clock(eta)}  {note}")
        self.stream.write(("\r" + line.ljust(110)) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


@derived_object
class ProgressBuilder(ms.builder.PyBuilder):
    """The lean LocalBuilder, reporting each batch it is given: MetaSchedule's first round launches a
    batch of every layer before it reports any measurement, and the user should see it working."""

    def __init__(self, inner, progress: Progress | None) -> None:
        super().__init__()
        self.inner, self.progress, self.batches = inner, progress, 0

    def build(self, build_inputs):
        self.batches += 1
        if self.progress:
            self.progress.update(f"building batch {self.batches} ({len(build_inputs)} candidates)")
        return self.inner.build(build_inputs)


@derived_object
class Persist(ms.measure_callback.PyMeasureCallback):
    """After each measured batch: append the records to the tuning log, update the progress, and
    stop every task once the time budget is spent."""

    def __init__(self, log: TuneLog, tasks: list[Task], target, progress: Progress | None, deadline: float | None):
        super().__init__()
        self.log, self.tasks, self.target = log, tasks, target
        self.progress, self.deadline = progress, deadline

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        task = self.tasks[task_id]
        _record(self.log, task, self.target, measure_candidates, builder_results, runner_results)
        if self.progress:
            self.progress.update(task.spec.func_name)
        if self.deadline is not None and time.monotonic() > self.deadline:
            for i in range(len(self.tasks)):
                task_scheduler.terminate_task(i)


def _record(log: TuneLog, task: Task, target, candidates, builds, runs) -> list:
    """Measured candidates -> tuning records, appended to the log; updates the task's stats."""
    workload = ms.database.Workload(task.mod)
    records = []
    for cand, built, ran in zip(candidates, builds, runs):
        ok = built.error_msg is None and ran.error_msg is None and ran.run_secs
        secs = [float(s) for s in ran.run_secs] if ok else [FAILED]
        rec = ms.database.TuningRecord(cand.sch.trace, workload, run_secs=secs, target=target,
                                       args_info=cand.args_info)
        records.append(rec)
        us = sum(secs) / len(secs) * 1e6
        task.trials += 1
        if ok:
            task.best_us = min(task.best_us, us)
        task.history.append(us if ok else float("inf"))
    log.append(task.workload, [record_json(r) for r in records])
    return records


def tune(specs: list[KernelSpec], profile: TargetProfile, trials: int = 16, budget_minutes: float | None = None,
         workers: int | None = None, seed: int = 0, progress: bool = True, remote: Remote | None = None) -> list[Task]:
    """Tune every distinct spec for `trials` more measured candidates each (0: only measure the rule
    defaults not yet in the log). Duplicates in `specs` weight a layer in the task scheduler.
    With `remote`, candidates are measured on the tracker's boards instead of this machine."""
    if profile.runner != "local" and remote is None:
        raise ValueError(f"target {profile.name} cannot be measured on this machine ({profile.runner}): tune it on "
                         f"its boards with --rpc TRACKER_HOST:PORT --key KEY")
    if not specs:
        raise ValueError("nothing to tune: no kernel specs given")
    target = profile.tvm_target()
    counts = Counter(s.key for s in specs)
    unique = list({s.key: s for s in specs}.values())
    log = TuneLog(profile.log_dirs[0])
    threads = int(target.attrs.get("num-cores", 1))
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=30, enable_cpu_cache_flush=False)
    if remote is None:
        builder = ms.builder.LocalBuilder(max_workers=workers or threads, f_build=lean_build, timeout_sec=120)
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator)
    else:
        boards = remote.check()
        builder = ms.builder.LocalBuilder(max_workers=workers or os.cpu_count() or 1, f_build=lean_build,
                                          f_export=functools.partial(export_shared, cc=profile.cc), timeout_sec=120)
        runner = ms.runner.RPCRunner(ms.runner.RPCConfig(remote.host, remote.port, remote.key, session_timeout_sec=120),
                                     evaluator_config=evaluator, max_workers=boards)
    tasks = []
    for spec in unique:
        mod = tvm.IRModule({"main": prim_func(spec)})
        tasks.append(Task(spec, counts[spec.key], mod, workload_of(mod)))
    rules = [rule_for(t.spec, profile) for t in tasks]
    for t, rule in zip(tasks, rules):
        t.rule = rule.name

    try:
        return _search(tasks, rules, log, target, builder, runner, trials, budget_minutes, seed, threads, progress)
    finally:   # the runners' worker processes (RPC sessions among them) do not end with the objects
        for pool in (getattr(runner, "pool", None), getattr(builder, "pool", None)):
            if pool is not None:
                pool.shutdown(wait=False)


def _search(tasks: list[Task], rules, log: TuneLog, target, builder, runner, trials: int,
            budget_minutes: float | None, seed: int, threads: int, progress: bool) -> list[Task]:
    bar = Progress(tasks, trials) if progress else None
    database = ms.database.MemoryDatabase()
    _seed(log, tasks, rules, target, builder, runner, database, bar)
    if trials > 0:
        deadline = time.monotonic() + budget_minutes * 60 if budget_minutes else None
        contexts = [_context(t, target, rule, seed + i) for i, (t, rule) in enumerate(zip(tasks, rules))]
        callbacks = [ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact(),
                     ms.measure_callback.UpdateCostModel(), Persist(log, tasks, target, bar, deadline)]
        for t in tasks:
            t.trials = 0  # count this run's search trials (the seeds are not part of the budget)
        with tempfile.TemporaryDirectory(prefix="tune-", dir=cache_dir()) as work_dir:
            ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in tasks], work_dir=work_dir,
                          max_trials_global=trials * len(tasks), max_trials_per_task=trials,
                          num_trials_per_iter=min(trials, 32), builder=ProgressBuilder(builder, bar), runner=runner,
                          database=database, cost_model=ms.cost_model.XGBModel(num_tuning_cores=threads),
                          measure_callbacks=callbacks, task_scheduler="gradient")
    if bar:
        bar.finish()
    return tasks


def _seed(log: TuneLog, tasks: list[Task], rules, target, builder, runner, database, bar) -> None:
    """Load the log's records into the search database; measure the rule's own schedule of every
    kernel whose log lacks it (a new kernel, or a rule edited since), so the search starts from
    the untuned default and a better rule is never shadowed by older records."""
    fresh = []
    for task, rule in zip(tasks, rules):
        workload = database.commit_workload(task.mod)
        known = log.records_for(task.workload[0])
        for r in known:
            database.commit_tuning_record(ms.database.TuningRecord.from_json(r.as_json(), workload))
        if known:
            task.best_us = known[0].seconds * 1e6
        default = rule.apply(task.mod["main"], target, tunable=True)
        default_trace = trace_json(default.trace)
        measured = next((r for r in known if r.trace == default_trace), None)
        if measured is not None:
            task.first_us = measured.seconds * 1e6
        else:
            fresh.append((task, default))
    if not fresh:
        return
    if bar:
        bar.update(f"measuring the rule defaults of {len(fresh)} new kernel(s)")
    cands = [ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True))
             for _, sch in fresh]
    builds = builder.build([ms.builder.BuilderInput(c.sch.mod, target) for c in cands])
    built = [i for i, b in enumerate(builds) if b.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(builds[i].artifact_path, "cpu", cands[i].args_info)
                          for i in built])
    runs = [ms.runner.RunnerResult(run_secs=None, error_msg=b.error_msg) for b in builds]
    for i, future in zip(built, futures):
        runs[i] = future.result()
    for (task, _), c, b, r in zip(fresh, cands, builds, runs):
        for rec in _record(log, task, target, [c], [b], [r]):
            database.commit_tuning_record(rec)
        task.first_us = task.history[-1]
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        if r.error_msg:
            raise RuntimeError(f"the rule {task.rule} schedule of {task.spec.key} failed to build or run: "
                               f"{(b.error_msg or r.error_msg)[:2000]}")
