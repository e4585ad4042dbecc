"""The `gconvgen` command: build, bench, targets, info."""
from __future__ import annotations

import argparse
import os
import sys
import time


def _threads(n: int | None) -> int:
    """Use n threads in both TVM's pool and torch's (set before either starts its pool)."""
    n = n or os.cpu_count() or 1
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
    from . import build, suites, targets
    profile = targets.load(args.target)
    specs = [w.spec for w in suites.load(args.suite, args.layout)]
    start = time.perf_counter()
    out = build.build(specs, profile, args.output)
    print(f"built {len({s.key for s in specs})} kernels for {profile.name} in {time.perf_counter() - start:.1f} s"
          f" -> {out}/{build.LIBRARY} + manifest.json")
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
    from . import bench, build, suites, targets
    profile = targets.load(args.target)
    workloads = suites.load(args.suite, args.layout)
    rows = []
    for i, w in enumerate(workloads, 1):
        start = time.perf_counter()
        folder, was_cached = build.cached(w.spec, profile)
        built = "cached" if was_cached else f"compiled {time.perf_counter() - start:.1f}s"
        row = bench.run_row(w, folder, args.compile)
        rows.append(row)
        print(f"[{i}/{len(workloads)}] {w.name}: {built}, ours {row.ours_us:.1f} us, torch best "
              f"{row.torch_best_us:.1f} us, err {row.max_abs_err:.1e}", file=sys.stderr, flush=True)
    print(bench.format_table(rows))
    if args.json:
        bench.write_json(args.json, bench.to_json(rows, profile.name, threads))
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gconvgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="time our kernels against PyTorch (eager, both layouts; torch.compile)")
    p.add_argument("--suite", default="public", help="suite file or built-in name (default: public)")
    p.add_argument("--target", default="host", help="target profile (default: host)")
    p.add_argument("--threads", type=int, default=None, help="threads for TVM and torch (default: all cores)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None, help="override every row's layout")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("build", help="compile a suite into one library + manifest.json")
    p.add_argument("--suite", default="public")
    p.add_argument("--target", default="host")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default=None)
    p.add_argument("-o", "--output", required=True, help="output folder")
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
