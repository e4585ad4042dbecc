"""A third bound beside memory and the FMAs, which needs no GPU: the instructions a kernel issues.
Each served CUDA kernel of the suite (tuned, as a build would make it) is compiled by nvcc, its SASS
read by nvdisasm and counted; its threads times its instructions, over an H100/H200's issue rate
(132 multiprocessors x 4 schedulers x one warp instruction a cycle at 1.98 GHz), is the least time
it can take however fast memory is. Printed beside the time its bytes take at copy bandwidth and
the fastest time the target's logs hold, it tells an issue-bound kernel (a schedule to slim) from a
memory-bound one (a copy to speed up): MobileNetV2's float16 NCHW 144x56 depthwise, as tuned on an
H200, issues about 47 instructions an output and can take no less than 47 us at batch 64, against
28 for its bytes (timed 58).

The count is static: for a kernel whose SASS loops (a GEMM's reduction, a copy loop left rolled),
marked ~, it is scaled by the multiply-adds an output needs over those the code's FFMAs and
tensor-core HMMAs do (the loop's body taken to dominate). nvdisasm is not part of the CUDA
toolkit's compiler packages; `pip install nvidia-cuda-nvdisasm` brings it (found on PATH, or in
that package).

    .venv/bin/python scripts/issue_bound.py [--layout NCHW] [--dtypes float16] [--only dw144x56]
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tvm  # noqa: E402

from gconvgen import suites, targets  # noqa: E402
from gconvgen.build import compile_module  # noqa: E402
from gconvgen.cuda import launch_extents, prepare  # noqa: E402
from gconvgen.ops import prim_func  # noqa: E402
from gconvgen.schedule import logs, schedule  # noqa: E402
from gconvgen.tunelog import workload_of  # noqa: E402


def nvdisasm() -> str:
    found = shutil.which("nvdisasm") or next(iter(glob.glob(f"{sys.prefix}/lib/python3*/site-packages/nvidia/cu*/bin/nvdisasm")), None)
    if found is None:
        sys.exit("nvdisasm not found: pip install nvidia-cuda-nvdisasm (or put the CUDA toolkit's on PATH)")
    return found


def sass(func: tvm.tirx.PrimFunc, target: tvm.target.Target, arch: str, tool: str) -> tuple[list[str], bool]:
    """The kernel's SASS opcodes (with their modifiers) in order, and whether it loops (a branch back
    to a label above it)."""
    source = compile_module(tvm.IRModule({"main": func}), target).mod.imports[0].inspect_source()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.cu").write_text(source)
        subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "-O3", "-o", f"{tmp}/k.cubin", f"{tmp}/k.cu"],
                       check=True, capture_output=True)
        listing = subprocess.run([tool, "-c", f"{tmp}/k.cubin"], check=True, capture_output=True, text=True).stdout
    opcodes, labels, loops = [], set(), False
    just_labelled = None   # (the label right above: every kernel ends in a branch to itself after EXIT)
    for line in listing.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line)
        if label:
            labels.add(label.group(1))
            just_labelled = label.group(1)
        instruction = re.match(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);", line)
        if instruction:
            opcodes.append(instruction.group(1))
            target = re.search(r"`\((\.L_x_\d+)\)", instruction.group(2))
            loops |= (instruction.group(1).startswith("BRA") and bool(target) and target.group(1) in labels
                      and target.group(1) != just_labelled)
            just_labelled = None
    return opcodes, loops


def _macs_per_thread(opcode: str) -> float:
    """Multiply-adds one thread's share of an instruction does: an FFMA one, a tensor core's HMMA
    its tile's (m x n x k, in its name: HMMA.16816 is 16x8x16) over the warp's 32 threads."""
    if opcode.startswith("FFMA"):
        return 1
    shape = re.match(r"HMMA\.(16)(8)(8|16)", opcode)
    return math.prod(int(d) for d in shape.groups()) / 32 if shape else 0


def launch(func: tvm.tirx.PrimFunc) -> tuple[int, int]:
    """(blocks, threads a block) from the kernel's thread bindings."""
    blocks = threads = 1
    for tag, extent in launch_extents(func).items():
        if tag.startswith("blockIdx"):
            blocks *= extent
        else:
            threads *= extent
    return blocks, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="cuda-sm90")
    parser.add_argument("--layout", default="NCHW")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", default="dw", help="layers whose names hold this")
    parser.add_argument("--sms", type=int, default=132)
    parser.add_argument("--clock", type=float, default=1.98e9)
    parser.add_argument("--bandwidth", type=float, default=4.2e12, help="bytes/s a copy could reach at best")
    args = parser.parse_args()
    tool = nvdisasm()
    prepare()
    profile = targets.load(args.target)
    target = profile.tvm_target()
    warps_per_second = args.sms * 4 * args.clock
    print(f"{'layer':24s} {'dtype':8s} {'rule':30s} {'instr/output':>12s} {'issue us':>9s} {'bytes us':>9s} "
          f"{'timed us':>9s}  top opcodes")
    for w in suites.load("public", args.layout):
        if args.only not in w.name:
            continue
        for dtype in args.dtypes.split(","):
            spec = dataclasses.replace(w.spec, batch=args.batch, dtype=dtype)
            served = schedule(spec, profile)
            opcodes, loops = sass(served.func, target, profile.target["arch"], tool)
            counted = [op for op in opcodes if op not in ("NOP", "EXIT") and not op.startswith("BRA")]
            blocks, threads = launch(served.func)
            outputs = spec.batch * spec.out_channels * spec.out_height * spec.out_width
            per_thread = len(counted)
            macs = sum(_macs_per_thread(op) for op in counted)
            if loops and macs:   # (the loop's body dominates: scaled by the multiply-adds a thread needs)
                per_thread = len(counted) / macs * spec.multiply_adds / (blocks * threads)
            per_output = per_thread * blocks * threads / outputs
            issue = blocks * -(-threads // 32) * per_thread / warps_per_second   # (whole warps a block)
            size = 2 if dtype == "float16" else 4
            moved = sum(math.prod(spec.shape(n)) for n in spec.arg_names) * size
            workload = workload_of(tvm.IRModule({"main": prim_func(spec)}))[0]
            timed = min((r.seconds for log in logs(profile) for r in log.records_for(workload) if r.seconds < 1),
                        default=None)
            ops = collections.Counter(op.split(".")[0] for op in counted).most_common(5)
            print(f"{w.name:24s} {dtype:8s} {(served.source if served.kind != 'tuned' else 'tuned')[:30]:30s} "
                  f"{per_output:11.1f}{'~' if loops else ' '} {issue * 1e6:9.1f} "
                  f"{moved / args.bandwidth * 1e6:9.1f} {timed * 1e6 if timed else float('nan'):9.1f}  "
                  + " ".join(f"{op}:{n}" for op, n in ops))


if __name__ == "__main__":
    main()
