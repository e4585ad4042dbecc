"""How well the cost model that guides exported candidates (gconvgen.offline.Guide) ranks kernels it
was not trained on: trained on the timings a target's logs hold for the suite's kernels at one
batch, less a random few held out, it ranks each held-out kernel's timed candidates; prints the
Spearman correlation with the timings and where its pick stands.

    .venv/bin/python scripts/rank_check.py [--target cuda-sm90] [--batch 64] [--held-out 12]
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tvm  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402

from gconvgen import suites, targets  # noqa: E402
from gconvgen.offline import Guide  # noqa: E402
from gconvgen.ops import prim_func  # noqa: E402
from gconvgen.schedule import replay, rule_for  # noqa: E402
from gconvgen.tune import Task, _context  # noqa: E402
from gconvgen.tunelog import workload_of  # noqa: E402


def ranks(values) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--held-out", type=int, default=12)
    p.add_argument("--min-records", type=int, default=8, help="kernels with fewer timed candidates are left out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    profile = targets.load(args.target)
    target = profile.tvm_target()
    specs = [dataclasses.replace(w.spec, batch=args.batch, dtype=dtype)
             for layout in ("NHWC", "NCHW") for w in suites.load("public", layout)
             for dtype in ("float32", "float16")]
    probe = Guide([], profile)
    specs = [s for s in {s.key: s for s in specs}.values()
             if len(probe.measured(tvm.IRModule({"main": prim_func(s)}))) >= args.min_records]
    held = set(random.Random(args.seed).sample(range(len(specs)), min(args.held_out, len(specs) // 2)))
    guide = Guide([s for i, s in enumerate(specs) if i not in held], profile)
    print(f"trained on {guide.trained} timings of {len(specs) - len(held)} kernels; ranking {len(held)} others")
    correlations, near = [], 0
    for i in sorted(held):
        spec = specs[i]
        mod = tvm.IRModule({"main": prim_func(spec)})
        timed = [(r, sch) for r in guide.measured(mod) for sch in [replay(mod, r)] if sch is not None]
        context = _context(Task(spec, 1, mod, workload_of(mod)), target, rule_for(spec, profile), 0)
        scores = guide.model.predict(context, [ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_entry_func(
            sch.mod, remove_preproc=True)) for _, sch in timed])
        seconds = np.array([r.seconds for r, _ in timed])
        rho = float(np.corrcoef(ranks(-np.asarray(scores)), ranks(seconds))[0, 1])
        pick = int(np.argmax(scores))
        correlations.append(rho)
        near += seconds[pick] <= 1.1 * seconds.min()
        print(f"{spec.key[:72]:72s} {len(timed):3d} timed  rho {rho:5.2f}  its pick {seconds[pick] / seconds.min():.2f}x "
              f"the fastest")
    print(f"median rho {np.median(correlations):.2f}; its pick within 10 % of the fastest on {near} of {len(held)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
