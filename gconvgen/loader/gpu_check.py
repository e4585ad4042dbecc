#!/usr/bin/env python3
"""Check and time a gconvgen bundle against PyTorch on the machine it was built for: one command
for a GPU host that has PyTorch but no TVM compiler (the bundle carries the runtime libraries).

    python loader/gpu_check.py BUNDLE [--device cuda|cpu] [--budget-seconds 240]

For every kernel in the manifest: random inputs, our kernel vs torch's conv2d + bias + activation
(+ shuffle) as a model runs it, in float32 or float16 (fp16 compared at 1e-2 relative); times ours
and torch's in NCHW and channels_last (CUDA events on a GPU, medians), counting torch's better
layout; and the fraction of the device's copy bandwidth each kernel reached (bytes it must move:
input + weight + output, over its time; the copy bandwidth is measured with torch's own copy).
Needs: torch, apache-tvm-ffi, and the bundle's lib/ (libtvm_runtime*.so).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gconvgen_loader  # noqa: E402 - the bundle's own loader, beside this file

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def torch_args(spec: dict, device: str, gen: torch.Generator) -> dict:
    dt = DTYPES[spec["dtype"]]
    n, c, h, w = spec["batch"], spec["channels"] if spec["op"] == "channel_shuffle" else spec["in_channels"], \
        spec["height"], spec["width"]
    args = {"input": torch.randn(n, c, h, w, generator=gen).to(device=device, dtype=dt)}
    if spec["op"] == "conv2d":
        kh, kw = spec["kernel"]
        cig = c // spec["groups"]
        args["weight"] = (torch.randn(spec["out_channels"], cig, kh, kw, generator=gen) / math.sqrt(cig * kh * kw)
                          ).to(device=device, dtype=dt)
        if "bias" in spec["epilogue"]:
            args["bias"] = torch.randn(spec["out_channels"], generator=gen).to(device=device, dtype=dt)
        if "residual" in spec["epilogue"]:
            pad = spec["padding"] if len(spec["padding"]) == 4 else spec["padding"] * 2
            size = [(x + pad[i] + pad[i + 2] - d * (k - 1) - 1) // s + 1 for i, (x, k, s, d) in
                    enumerate(zip((h, w), spec["kernel"], spec["stride"], spec["dilation"]))]
            args["residual"] = torch.randn(n, spec["out_channels"], *size, generator=gen).to(device=device, dtype=dt)
    return args


def shuffle(y: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = y.shape
    return y.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def torch_forward(spec: dict, args: dict) -> torch.Tensor:
    """What the kernel replaces, op by op, as a PyTorch model runs it."""
    x = args["input"]
    if spec["op"] == "channel_shuffle":
        return shuffle(x, spec["groups"])
    pad = spec["padding"]
    if spec["op"] in ("max_pool2d", "avg_pool2d"):
        if len(pad) == 4 or any(2 * p > k for p, k in zip(pad, spec["kernel"])):   # beyond torch's padding
            pad4 = pad if len(pad) == 4 else [pad[0], pad[1], pad[0], pad[1]]
            fill = float("-inf") if spec["op"] == "max_pool2d" else 0.0   # an average counts its padding
            x, pad = F.pad(x, (pad4[1], pad4[3], pad4[0], pad4[2]), value=fill), [0, 0]
        if spec["op"] == "max_pool2d":
            return F.max_pool2d(x, spec["kernel"], spec["stride"], pad, spec["dilation"])
        return epilogue(F.avg_pool2d(x, spec["kernel"], spec["stride"], pad), spec, args)
    if len(pad) == 4:
        x, pad = F.pad(x, (pad[1], pad[3], pad[0], pad[2])), [0, 0]
    y = F.conv2d(x, args["weight"], args.get("bias"), spec["stride"], pad, spec["dilation"], spec["groups"])
    return epilogue(y, spec, args)


def epilogue(y: torch.Tensor, spec: dict, args: dict) -> torch.Tensor:
    """The epilogue's steps after the conv (whose bias went in) or the pool, in their order."""
    for e in spec["epilogue"]:
        if e == "residual":
            y = y + args["residual"]
        elif e == "relu":
            y = F.relu(y)
        elif e == "relu6":
            y = F.relu6(y)
        elif e == "hardswish":
            y = F.hardswish(y)
        elif e.startswith("shuffle:"):
            y = shuffle(y, int(e.split(":")[1]))
    return y


def kernel_layout(spec: dict, name: str, t: torch.Tensor) -> torch.Tensor:
    if spec["layout"] == "NHWC" and name in ("input", "output", "residual"):
        t = t.permute(0, 2, 3, 1)
    elif name == "weight" and spec.get("weight_layout", "HWIO" if spec["layout"] == "NHWC" else "OIHW") != "OIHW":
        t = t.permute(2, 3, 1, 0)
        block = int(spec.get("weight_layout", "HWIO")[4:] or 0)   # HWIO<t>: output channels in blocks of t
        if block:
            kh, kw, cig, o = t.shape
            t = t.reshape(kh, kw, cig, o // block, block).permute(3, 0, 1, 2, 4)
    return t.contiguous()


class Timer:
    def __init__(self, device: str) -> None:
        self.device = device

    def __call__(self, fn, reps: int = 20, rounds: int = 5) -> float:
        """Median µs per call."""
        fn()
        samples = []
        for _ in range(rounds):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(reps):
                    fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) * 1e3 / reps)
            else:
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                samples.append((time.perf_counter() - t) * 1e6 / reps)
        return statistics.median(samples)


def copy_bandwidth(device: str, timer: Timer) -> float:
    """Bytes per µs of torch's device-to-device copy of a 256 MiB (CPU: 64 MiB) buffer, read + write."""
    n = (256 if device == "cuda" else 64) * 2 ** 20 // 4
    a, b = torch.empty(n, device=device), torch.empty(n, device=device)
    us = timer(lambda: b.copy_(a), reps=10, rounds=5)
    return 2 * n * 4 / us


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-seconds", type=float, default=240.0, help="stop timing new kernels after this long")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    start = time.monotonic()
    lib = gconvgen_loader.Library(args.bundle)
    import tvm_ffi
    timer = Timer(args.device)
    bandwidth = copy_bandwidth(args.device, timer)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{lib.target.get('profile')} on {dev}: copy bandwidth {bandwidth / 1e3:.0f} GB/s; "
          f"{len(lib.entries)} kernels", flush=True)
    rows, failures = [], 0
    gen = torch.Generator().manual_seed(0)
    stream = tvm_ffi.use_torch_stream() if args.device == "cuda" else None
    for key, entry in lib.entries.items():
        spec = entry["spec"]
        fn = lib.function(key)
        targs = torch_args(spec, args.device, gen)
        expected = torch_forward(spec, targs)
        names = [a["name"] for a in entry["args"]]
        kargs = [kernel_layout(spec, n, targs[n]) for n in names[:-1]]
        out = torch.empty(entry["args"][-1]["shape"], device=args.device, dtype=DTYPES[spec["dtype"]])

        def ours():
            if stream is not None:
                with tvm_ffi.use_torch_stream():
                    fn(*kargs, out)
            else:
                fn(*kargs, out)
        ours()
        got = out.permute(0, 3, 1, 2) if spec["layout"] == "NHWC" else out
        scale = expected.abs().max().item() or 1.0
        err = (got.float() - expected.float()).abs().max().item() / scale
        ok = err < (1e-2 if spec["dtype"] == "float16" else 1e-4)
        failures += not ok
        row = {"key": key, "ok": ok, "rel_err": err, "dtype": spec["dtype"], "batch": spec["batch"],
               "op": spec["op"], "layout": spec["layout"]}
        if time.monotonic() - start < args.budget_seconds:
            cl = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in targs.items()}
            row["ours_us"] = timer(ours)
            row["torch_nchw_us"] = timer(lambda: torch_forward(spec, targs))
            row["torch_cl_us"] = timer(lambda: torch_forward(spec, cl))
            moved = sum(t.numel() * t.element_size() for t in kargs) + out.numel() * out.element_size()
            row["bandwidth_fraction"] = moved / row["ours_us"] / bandwidth
            row["speedup"] = min(row["torch_nchw_us"], row["torch_cl_us"]) / row["ours_us"]
        rows.append(row)
        timing = (f"ours {row['ours_us']:8.1f} us  torch best {min(row['torch_nchw_us'], row['torch_cl_us']):8.1f} us"
                  f"  x{row['speedup']:5.2f}  {100 * row['bandwidth_fraction']:5.1f}% of copy bw"
                  if "ours_us" in row else "(not timed: budget spent)")
        print(f"{'ok  ' if ok else 'FAIL'} {key[:72]:72s} err {err:.1e}  {timing}", flush=True)
    timed = [r for r in rows if "speedup" in r]
    for dtype in sorted({r["dtype"] for r in timed}):
        for batch in sorted({r["batch"] for r in timed}):
            sel = [r["speedup"] for r in timed if r["dtype"] == dtype and r["batch"] == batch]
            if sel:
                geo = math.exp(sum(math.log(s) for s in sel) / len(sel))
                print(f"geomean vs torch's better layout, {dtype} batch {batch}: {geo:.2f}x over {len(sel)} kernels")
    print(f"{len(rows) - failures} of {len(rows)} kernels match torch; {time.monotonic() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "copy_bytes_per_us": bandwidth, "rows": rows}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
