"""The `gconvgen` command: tune, build, bench, targets, info."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .targets import TargetProfile


def _threads(n: int | None) -> int:
    """Use n threads (default: the physical cores) in both TVM's pool and torch's (set before either
    starts its pool)."""
    from .loader.gconvgen_loader import physical_cores
    n = n or physical_cores()
    os.environ["TVM_NUM_THREADS"] = str(n)
    import torch
    torch.set_num_threads(n)
    return n


def cmd_targets(args: argparse.Namespace) -> int:
    from . import targets
    for name in targets.list_profiles():
        p = targets.load(name)
        print(f"{name:18s} {p.family:5s} {p.description}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from . import bundle, targets
    profile = targets.load(args.target)
    specs = [w.spec for w in _workloads(args, profile)]
    start = time.perf_counter()
    out = bundle.make(specs, profile, args.output, vectors=args.vectors, wheel_python=args.wheel_python)
    print(f"built {len({s.key for s in specs})} kernels for {profile.name} in {time.perf_counter() - start:.1f} s"
          f" -> {out}/ (gconvgen.so, manifest.json, lib/, loader/{', vectors/' if args.vectors else ''}; "
          f"see {out}/README.md)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _workloads(args: argparse.Namespace, profile: TargetProfile):
    """The suite's rows, or with --model the layers of that reference model as the converted model runs
    them (with build's --batches and --dtypes, every row at each); each as the torch ops call it on
    the target: the variant its rules prefer (a packed weight layout for pointwise layers on small
    planes; an alternative the target's timings ran faster, gconvgen.schedule.timed_spec), so that
    what is tuned, built and timed is what runs. On a GPU a float32 conv that a
    tensor-core rule serves in TF32 is also taken as the TF32 kernel the ops run while torch allows
    TF32 (its default), in a row of its own (NAME.tf32), unless --no-tf32."""
    from schedules import preferred_spec, tf32_spec
    from . import suites
    from .schedule import timed_spec
    target = profile.tvm_target()
    if getattr(args, "model", None):
        from .models import layer_specs
        rows = [suites.Workload(f"{args.model}.{i}", args.model, s)
                for i, s in enumerate(layer_specs(args.model, channels_last=args.layout == "NHWC",
                                                  batch=getattr(args, "batch", None) or 1))]
    else:
        rows = suites.load(args.suite, args.layout, getattr(args, "batch", None))
    batches, dtypes = getattr(args, "batches", None), getattr(args, "dtypes", None)
    if batches or dtypes:
        rows = [dataclasses.replace(w, spec=dataclasses.replace(w.spec, **({"batch": b} if b else {}),
                                                                **({"dtype": d} if d else {})))
                for w in rows for b in ([int(b) for b in batches.split(",")] if batches else [None])
                for d in (dtypes.split(",") if dtypes else [None])]
    rows = [dataclasses.replace(w, spec=timed_spec(preferred_spec(w.spec, profile.family, target), profile))
            for w in rows]
    if getattr(args, "tf32", False):
        rows += [dataclasses.replace(w, name=f"{w.name}.tf32", spec=variant) for w in rows
                 for variant in [tf32_spec(w.spec, profile.family, target)] if variant is not None]
    return rows


def cmd_tune(args: argparse.Namespace) -> int:
    from . import targets
    from .tune import Remote, tune
    profile = targets.load(args.target)
    if args.import_results:
        from .offline import import_results
        counts = import_results(args.import_results, profile)
        print(f"imported {sum(counts.values())} measured candidates of {len(counts)} kernels into "
              f"{profile.log_dirs[0]}")
        return 0
    workloads = _workloads(args, profile)
    names = {}
    for w in workloads:
        names.setdefault(w.spec.key, w.name)
    if args.export_candidates:
        from .offline import CANDIDATES, export
        out = export([w.spec for w in workloads], profile, args.export_candidates, trials=args.trials, seed=args.seed,
                     alternative_trials=args.alternative_trials, neighbor_trials=args.neighbor_trials)
        count = len(json.loads((out / CANDIDATES).read_text())["candidates"])
        print(f"wrote {count} candidates of {len(names)} kernels (up to {args.trials} from the space of the rule "
              f"that ran each fastest, then up to {args.alternative_trials} from each other rule that applies and "
              f"{args.neighbor_trials} fitted from the nearest timed kernels) to {out}/; on the target run "
              f"`python {out.name}/loader/measure.py {out.name}`, bring results.json back into {out}/, then "
              f"`gconvgen tune --target {profile.name} --import-results {out}`")
        return 0
    print(f"tuning {len(names)} kernels for {profile.name} ({profile.target.get('mcpu', profile.target['kind'])}), "
          f"{args.trials} trials each -> {profile.log_dirs[0]}", file=sys.stderr)
    remote = Remote.parse(args.rpc, args.key) if args.rpc else None
    if remote:
        print(f"measuring on the boards with key {remote.key!r} at the tracker {remote.host}:{remote.port}",
              file=sys.stderr)
    try:
        tasks = tune([w.spec for w in workloads], profile, trials=args.trials, budget_minutes=args.budget_minutes,
                     workers=args.workers, seed=args.seed, remote=remote)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every measured record is kept in {profile.log_dirs[0]}; run again to go on",
              file=sys.stderr)
        return 130
    print(f"{'layer':26s} {'rule':14s} {'trials':>6s} {'rule us':>9s} {'best us':>9s} {'gain':>6s}")
    for t in tasks:
        print(f"{names[t.spec.key]:26s} {t.rule.split('.')[-1][:14]:14s} {t.trials:6d} {t.first_us:9.1f} "
              f"{t.best_us:9.1f} {t.first_us / t.best_us:6.2f}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import manifest
    data = manifest.read(args.folder)
    t = data["target"]
    print(f"target {t['profile']} ({t['arch']}, {t['tvm_target']}), features {t.get('features')}")
    print(f"versions {data.get('versions')}")
    for k in data["kernels"]:
        print(f"  {k['function']}  {k['schedule']:8s} {k['rule']:24s} {k['key']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    threads = _threads(args.threads)
    # TVM's idle workers yield-spin for ~250 ms after a kernel here, torch's OpenMP workers ~10 ms;
    # 30000 spins (~10 ms) leave torch's turn, which opens after ours, as quiet as ours after torch's
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "30000")
    from . import bench, build, targets
    profile = targets.load(args.target)
    if args.overhead:
        print("op-call overhead: 1x32x28x28 depthwise 3x3 + relu6, batch 1")
        print(bench.format_overhead(bench.run_overhead()))
        return 0
    if args.model:
        names = args.model.split(",")
        rows = []
        for name in names:
            print(f"[{len(rows) + 1}/{len(names)}] {name}: converting, compiling, timing", file=sys.stderr, flush=True)
            rows.append(bench.run_model(name, args.compile, batch=args.batch or 1))
        print(bench.format_models(rows))
        return 0
    workloads = _workloads(args, profile)
    if profile.runner == "emulated":
        return _bench_emulated(workloads, profile)
    if args.convergence:
        from .convergence import report
        print(report(workloads, profile))
        return 0
    rows = []
    for i, w in enumerate(workloads, 1):
        start = time.perf_counter()
        folder, was_cached = build.cached(w.spec, profile, use_logs=not args.rules_only)
        built = "cached" if was_cached else f"compiled {time.perf_counter() - start:.1f}s"
        rule_folder = build.cached(w.spec, profile, use_logs=False)[0] if args.vs_rules else None
        row = bench.run_row(w, folder, args.compile, rule_folder=rule_folder)
        rows.append(row)
        print(f"[{i}/{len(workloads)}] {w.name}: {built}, ours {row.ours_us:.1f} us, torch best "
              f"{row.torch_best_us:.1f} us, err {row.max_abs_err:.1e}", file=sys.stderr, flush=True)
    print(bench.format_table(rows))
    if args.json:
        bench.write_json(args.json, bench.to_json(rows, profile.name, threads))
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot(rows, args.plot, f"gconvgen vs PyTorch on {profile.name}, {threads} threads")
        print(f"wrote {args.plot}")
    return 0


def _bench_emulated(workloads, profile) -> int:
    """A target this machine can only emulate: build a bundle with test vectors, run every kernel
    through the bundle's C loader under qemu-user, check it against PyTorch. Nothing is timed."""
    import tempfile
    from pathlib import Path
    from . import bundle
    with tempfile.TemporaryDirectory(prefix="gconvgen-emulated-") as tmp:
        specs = [w.spec for w in workloads]
        start = time.perf_counter()
        out = bundle.make(specs, profile, Path(tmp) / "bundle", vectors=True)
        print(f"built {len({s.key for s in specs})} kernels for {profile.name} in {time.perf_counter() - start:.1f} s; "
              f"running them under qemu-{profile.arch} through the C loader", file=sys.stderr, flush=True)
        status, report = bundle.run_emulated(out, profile)
    print(report)
    print(f"{profile.name}: EMULATED under qemu-{profile.arch}: results checked against PyTorch, no times "
          f"(emulation says nothing about speed; time on the board, or tune over --rpc)")
    return 0 if status == 0 else 1


def _no_tf32_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="on a GPU, float32 convs exact only: "
                   "not also as the TF32 kernels (tensor cores) that the torch ops run while torch allows TF32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gconvgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="time our kernels against PyTorch (eager, both layouts; torch.compile)")
    p.add_argument("--suite", default="public", help="suite file or built-in name (default: public)")
    p.add_argument("--target", default="host", help="target profile (default: host)")
    p.add_argument("--threads", type=int, default=None, help="threads for TVM and torch (default: the physical cores)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None, help="override every row's layout")
    p.add_argument("--batch", type=_positive, default=None, help="override every row's batch (with --model: "
                   "the models' batch, default 1)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the per-layer speedups here")
    p.add_argument("--convergence", action="store_true",
                   help="from the tuning log, not timing: trials each layer took to reach 90%% of its best")
    p.add_argument("--model", default=None, help="time whole models instead: converted vs eager vs "
                   "torch.compile (mobilenet_v2,shufflenet_v1,shufflenet_v2,resnext50,efficientnet_b0,convnext_tiny; "
                   "comma-separated)")
    p.add_argument("--overhead", action="store_true", help="time the call overhead on a tiny layer instead: "
                   "kernel alone vs gconvgen.nn.Conv2d vs the registered op vs torch")
    _no_tf32_flag(p)
    p.add_argument("--rules-only", action="store_true", help="ignore the tuning logs: the untuned default")
    p.add_argument("--vs-rules", action="store_true", help="also time the rules-only kernel in the same rounds")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="tune kernels with MetaSchedule into tune_logs/<target>/ (resumes)")
    p.add_argument("--target", default="host", help="target profile (default: host)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--suite", default="public", help="suite file or built-in name (default: public)")
    g.add_argument("--model", default=None, help="the layers of a reference model (mobilenet_v2, shufflenet_v1, "
                   "shufflenet_v2, resnext50, efficientnet_b0, convnext_tiny) as gconvgen.convert runs them")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None, help="override every row's layout")
    p.add_argument("--batch", type=_positive, default=None, help="override every row's batch (with --model: "
                   "the model's batch, default 1)")
    p.add_argument("--trials", type=int, default=16, help="measured candidates per kernel in this run (default 16)")
    p.add_argument("--budget-minutes", type=float, default=None, help="stop after this long (records are kept)")
    p.add_argument("--workers", type=int, default=None, help="build processes (default: the target's cores)")
    _no_tf32_flag(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rpc", default=None, metavar="HOST:PORT", help="measure on boards through this TVM RPC "
                   "tracker (candidates are built here, with the target's cross compiler)")
    p.add_argument("--key", default=None, help="with --rpc: the key the boards' RPC servers registered with")
    p.add_argument("--export-candidates", default=None, metavar="DIR", help="for a machine this one cannot "
                   "reach: write --trials candidates per kernel, built, with a script that times them all there "
                   "(searched from the timings the target's logs hold: import them, export again)")
    p.add_argument("--alternative-trials", type=int, default=1, metavar="N", help="with --export-candidates: "
                   "also N candidates from the space of each other rule that applies (default 1: its own schedule)")
    p.add_argument("--neighbor-trials", type=int, default=2, metavar="N", help="with --export-candidates: also up "
                   "to N of the fastest timed points of the nearest other kernels the logs hold, fitted to each "
                   "kernel's shape (default 2; 0: none)")
    p.add_argument("--import-results", default=None, metavar="DIR", help="add DIR/results.json (from the "
                   "candidates' measure.py) to the target's tuning log")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("build", help="compile a suite into a bundle: one library + manifest.json, the TVM "
                       "runtime libraries for the target and a Python and a C loader")
    p.add_argument("--suite", default="public")
    p.add_argument("--target", default="host")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None)
    p.add_argument("--model", default=None, help="the layers of a reference model as gconvgen.convert runs them")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--batches", default=None, help="build every row at these batch sizes (e.g. 1,64)")
    p.add_argument("--dtypes", default=None, help="build every row in these dtypes (e.g. float32,float16)")
    _no_tf32_flag(p)
    p.add_argument("--wheel-python", default=None, metavar="3.12", help="also store the apache-tvm-ffi wheel for "
                   "this Python and the target's arch in wheels/ (for hosts without PyPI)")
    p.add_argument("--vectors", action="store_true", help="also store random inputs and PyTorch's outputs, "
                   "so the board can check every kernel (loader --verify, gconvgen_run)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("info", help="show a built library's manifest")
    p.add_argument("folder")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("targets", help="list target profiles")
    p.set_defaults(func=cmd_targets)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as e:
        print(f"gconvgen {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
