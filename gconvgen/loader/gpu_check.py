#!/usr/bin/env python3
"""Check and time a gconvgen bundle against PyTorch on the machine it was built for: one command
for a GPU host that has PyTorch but no TVM compiler (the bundle carries the runtime libraries).

    python loader/gpu_check.py BUNDLE [--device cuda|cpu] [--budget-seconds 240] [--json FILE [--resume]]
    python loader/gpu_check.py BUNDLE --model mobilenet_v2 [--model ...] [--dtypes float32,float16]
    python loader/gpu_check.py BUNDLE --candidates CANDS ...   (CANDS timed by loader/measure.py)

For every kernel in the manifest: random inputs, our kernel vs torch's conv2d + bias + activation
(+ shuffle) as a model runs it, in float32 or float16 (fp16 compared at 1e-2 relative); times ours
and torch's in NCHW and channels_last (on a GPU 20 calls captured in a CUDA graph, its replays timed
with CUDA events; medians), counting torch's better
layout; and the fraction of the device's copy bandwidth each kernel reached (bytes it must move:
input + weight + output, over its time; the copy bandwidth is measured with torch's own copy of
256 MiB), and of its roofline: the longer of torch copying as many bytes (a copy of the layer's size
pays the same launch and tail, and gains the same from the cache) and doing its multiply-adds at the
float32 FMA rate of torch's float32 matmul without TF32 (ours accumulate in float32, float16 too). A
7x7 depthwise layer in float16 does 49 multiply-adds per 4 bytes moved, which on an H200 takes longer
than moving them at copy bandwidth: the summary names the layers the FMA rate keeps below 70 % of it.
The reference is computed in full float32; torch is timed as it runs by default (cuDNN's TF32 for
float32 convs), and float32 convs other than depthwise (the ones TF32 speeds up) once more without
TF32, the float32 math our exact kernels do: both geomeans are printed. A TF32 kernel (its spec's
"tf32": the float32 conv on tensor cores, what the torch ops run while torch allows TF32) is checked
against the float32 conv of its inputs rounded to TF32, as it computes, and summed up apart ("tf32").
Needs: torch, apache-tvm-ffi, and the bundle's lib/ (libtvm_runtime*.so).

With --model (a bundle of that model's layers: gconvgen build --model NAME): the whole model at batch 1
through gconvgen.convert and torch.ops.gconvgen on CUDA tensors (the bundle's python/ copy of the
gconvgen package, runtime only, in strict mode: a layer missing from the bundle is an error), checked
against torch, then ours and torch's (NCHW and channels_last) each captured in a CUDA graph and replayed.
In float32 the check is made with TF32 off (our exact kernels, 1e-3) and on (the TF32 ones where the
bundle has them, as torch runs by default and as both are timed: 2e-2, float16's bound, as TF32 keeps
float16's 10 mantissa bits).

With --candidates: each kernel's fastest tuning candidate that measure.py timed there (gconvgen tune
--export-candidates) is checked against torch and timed beside the bundle's kernel, and the geomeans
are printed again with the faster of the two: what importing those timings would serve, from the
same run, without a rebuild here and a second run there.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
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


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32 as a TF32 kernel rounds its inputs (to nearest, ties to even,
    NaN kept; gconvgen.reference.round_to_tf32, which this bundle's host may not have)."""
    bits = t.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
    rounded = torch.where(bits >= 1 << 31, bits - (1 << 32), bits).to(torch.int32).view(torch.float32)
    return torch.where(t.isnan(), t, rounded)


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

    def __call__(self, fn, reps: int = 20, rounds: int = 5, graph: bool = True) -> float:
        """Median µs per call (see samples)."""
        return statistics.median(self.samples(fn, reps, rounds, graph))

    def samples(self, fn, reps: int = 20, rounds: int = 5, graph: bool = True) -> list[float]:
        """µs per call, one number a round of reps calls. On a GPU (with graph) the reps calls are
        replayed as one CUDA graph, so the time is the device's alone: launched one by one from
        Python, a few-µs kernel would be timed at the host's pace (and torch's several kernels per
        layer even more so)."""
        fn()
        calls = reps   # calls of fn in one sample: a replay of the graph makes all reps of them
        if self.device == "cuda" and graph:
            g, _ = capture(lambda: [fn() for _ in range(reps)])
            fn, reps = g.replay, 1
        samples = []
        for _ in range(rounds):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(reps):
                    fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) * 1e3 / calls)
            else:
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                samples.append((time.perf_counter() - t) * 1e6 / calls)
        return samples


@contextlib.contextmanager
def exact():
    """torch's float32 convs in full float32 for the reference: cuDNN's default, TF32 tensor cores,
    keeps 10 mantissa bits, which would fail our float32 kernels against a 1e-4 tolerance. Timings
    keep torch's default (TF32 allowed), as a user's model runs."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def capture(fn):
    """fn() captured in a CUDA graph after three warm-up calls on a side stream (the first call of
    each of our kernels loads it, which a capture must not do). Returns (graph, fn's output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def copy_bandwidth(device: str, timer: Timer) -> float:
    """Bytes per µs of torch's device-to-device copy of a 256 MiB (CPU: 64 MiB) buffer, read + write."""
    n = (256 if device == "cuda" else 64) * 2 ** 20 // 4
    a, b = torch.empty(n, device=device), torch.empty(n, device=device)
    us = timer(lambda: b.copy_(a), reps=10, rounds=5)
    return 2 * n * 4 / us


def fma_rate(device: str, timer: Timer) -> float:
    """Multiply-adds per µs of torch's float32 matmul without TF32 (cuBLAS SGEMM: some 75-85 % of a
    GPU's FMA peak), 4096x4096 (CPU: 512x512): the practical float32 FMA rate our kernels compete with."""
    n = 4096 if device == "cuda" else 512
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    with exact():
        us = timer(lambda: a @ b, reps=5, rounds=5)
    return n ** 3 / us


def check_models(bundle: str, names: list[str], dtypes: list[str], device: str, timer: Timer) -> int:
    """Each model converted and run on the bundle's kernels vs torch, eager and in CUDA graphs.
    Returns the failures."""
    sys.path.insert(0, str(Path(bundle).resolve() / "python"))
    try:
        import gconvgen
        from gconvgen import models, torch_ops
    except ImportError as e:
        print(f"--model needs the gconvgen package (the bundle's python/ or PYTHONPATH): {e}")
        return 1
    print(f"gconvgen from {Path(gconvgen.__file__).parent}", flush=True)
    torch_ops.use_library(bundle)
    torch_ops.set_strict(True)   # every layer on the bundle's kernels, or an error naming the one missing
    failures = 0
    for name in names:
        for dtype in dtypes:
            dt = DTYPES[dtype]
            model = models.create(name)
            ours = gconvgen.convert(model, torch_threads=None).to(device, dt)
            model = model.to(device, dt)
            x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device, dt)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            with torch.no_grad():
                with exact():
                    expected = model(x).float()
                    scale = expected.abs().max().item() or 1.0
                    err = (ours(x).float() - expected).abs().max().item() / scale
                row = {"model": name, "dtype": dtype, "rel_err": err}
                tf32_ok = True
                if dtype == "float32":   # (as it is timed below: TF32 allowed, torch's default)
                    row["tf32_rel_err"] = (ours(x).float() - expected).abs().max().item() / scale
                    tf32_ok = row["tf32_rel_err"] < 2e-2
                if device == "cuda":
                    g_ours, y_ours = capture(lambda: ours(x))
                    g_nchw, _ = capture(lambda: model(x))
                    g_cl, _ = capture(lambda: model_cl(x_cl))
                    g_ours.replay()
                    row["graph_rel_err"] = (y_ours.float() - expected).abs().max().item() / scale
                    if dtype == "float32":
                        tf32_ok = tf32_ok and row["graph_rel_err"] < 2e-2
                    else:
                        err = max(err, row["graph_rel_err"])
                    row["ours_graph_us"] = timer(g_ours.replay, graph=False)
                    row["torch_graph_us"] = min(timer(g_nchw.replay, graph=False), timer(g_cl.replay, graph=False))
                row["ours_eager_us"] = timer(lambda: ours(x), graph=False)
                row["torch_eager_us"] = min(timer(lambda: model(x), graph=False),
                                            timer(lambda: model_cl(x_cl), graph=False))
            ok = err < (2e-2 if dtype == "float16" else 1e-3) and tf32_ok
            failures += not ok
            graphs = (f"CUDA graphs: ours {row['ours_graph_us']:7.1f} us, torch's better layout "
                      f"{row['torch_graph_us']:7.1f} us, x{row['torch_graph_us'] / row['ours_graph_us']:.2f}; "
                      if "ours_graph_us" in row else "")
            tf32 = f" (TF32 allowed: {row['tf32_rel_err']:.1e})" if "tf32_rel_err" in row else ""
            print(f"{'ok  ' if ok else 'FAIL'} {name} {dtype} batch 1: err {err:.1e}{tf32}  {graphs}eager: ours "
                  f"{row['ours_eager_us']:7.1f} us, torch {row['torch_eager_us']:7.1f} us", flush=True)
    return failures


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-seconds", type=float, default=240.0, help="stop timing new kernels after this long")
    p.add_argument("--json", default=None, help="the results, rewritten after every kernel (a journal for --resume)")
    p.add_argument("--resume", action="store_true", help="go on from --json's results: the kernel that was "
                   "running when that run died counts as failed and is skipped")
    p.add_argument("--model", action="append", default=[], help="check and time this model at batch 1 instead "
                   "(its layers' bundle, see above); repeatable")
    p.add_argument("--dtypes", default="float32", help="with --model: these dtypes (default float32)")
    p.add_argument("--candidates", default=None, help="a candidates folder with measure.py's results.json: "
                   "each kernel's fastest candidate too (see above)")
    args = p.parse_args(argv)
    start = time.monotonic()
    timer = Timer(args.device)
    if args.model:
        failures = check_models(args.bundle, args.model, args.dtypes.split(","), args.device, timer)
        print(f"{'all models match torch' if not failures else f'{failures} model run(s) differ'}; "
              f"{time.monotonic() - start:.0f} s")
        return 1 if failures else 0
    lib = gconvgen_loader.Library(args.bundle)
    args.candidates = Candidates(args.candidates) if args.candidates else None
    rates = {"copy_bytes_per_us": copy_bandwidth(args.device, timer), "fma_per_us": fma_rate(args.device, timer)}
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{lib.target.get('profile')} on {dev}: copy bandwidth {rates['copy_bytes_per_us'] / 1e3:.0f} GB/s, "
          f"float32 FMA rate {2 * rates['fma_per_us'] / 1e6:.1f} TFLOP/s (torch's matmul, no TF32); "
          f"{len(lib.entries)} kernels", flush=True)
    rows = resumed(lib, args.json) if args.resume else []
    failures, done = sum(not r["ok"] for r in rows), {r["key"] for r in rows}
    gen = torch.Generator().manual_seed(0)
    for key, entry in lib.entries.items():
        if key in done:
            continue
        journal(args.json, dev, rates, rows, current=key)
        try:
            row = check_kernel(lib, key, entry, args, timer, rates, gen, start)
        except Exception as e:  # noqa: BLE001 - a kernel that faults is a result, not the end of the run
            row = {**_row(key, entry["spec"], False, None), "error": f"{type(e).__name__}: {e}"[:300]}
            print(f"FAIL {key[:72]:72s} {row['error']}", flush=True)
        failures += not row["ok"]
        rows.append(row)
        journal(args.json, dev, rates, rows)
        if "error" in row and args.device == "cuda" and not context_alive():
            print("the CUDA context is broken after that kernel: run again with --resume to go on", flush=True)
            return BROKEN
    journal(args.json, dev, rates, rows)   # a resumed run with nothing left still clears "current"
    summary(rows, "")
    if any("tuned_speedup" in r for r in rows):
        summary(rows, "tuned_")
    differ = [r["key"] for r in rows if r.get("candidate_ok") is False]
    if differ:
        print(f"{len(differ)} fastest candidate(s) differ from torch (importing their timings would serve them): "
              + ", ".join(k[:60] for k in differ))
    print(f"{len(rows) - failures} of {len(rows)} kernels match torch; {time.monotonic() - start:.0f} s")
    return 1 if failures or differ else 0


def summary(rows: list[dict], prefix: str) -> None:
    """Geomean speedups and issue 6's bandwidth target per dtype and batch; prefix "tuned_": with each
    kernel's fastest candidate where it beat the bundle's kernel."""
    timed = [r for r in rows if prefix + "speedup" in r]
    label = " with the fastest timed candidates" if prefix else ""
    for dtype in sorted({r["dtype"] for r in timed}):
        for batch in sorted({r["batch"] for r in timed}):
            sel = [r for r in timed if r["dtype"] == dtype and r["batch"] == batch]
            if sel:
                print(f"geomean vs torch's better layout{label}, {dtype} batch {batch}: "
                      f"{_geomean([r[prefix + 'speedup'] for r in sel]):.2f}x over {len(sel)} kernels, at "
                      f"{100 * _geomean([r[prefix + 'roofline_fraction'] for r in sel]):.0f} % of their roofline")
            ieee = [r for r in sel if prefix + "ieee_speedup" in r]
            if ieee:
                print(f"  of which {len(ieee)} float32 convs that torch runs in TF32 by default: "
                      f"{_geomean([r[prefix + 'speedup'] for r in ieee]):.2f}x, and "
                      f"{_geomean([r[prefix + 'ieee_speedup'] for r in ieee]):.2f}x vs torch without TF32 (ours: float32 math)")
            # issue 6's bandwidth target: depthwise layers moving 4 MB or more at 70 % of copy bandwidth
            big = [r for r in sel if r.get("depthwise") and r["moved_bytes"] >= 4e6]
            if big:
                reached = [r[prefix + "bandwidth_fraction"] for r in big]
                print(f"depthwise moving 4 MB or more{label}, {dtype} batch {batch}: {sum(f >= 0.7 for f in reached)} "
                      f"of {len(big)} at 70 % of copy bandwidth or more (lowest {100 * min(reached):.0f} %); "
                      f"{_geomean([r[prefix + 'roofline_fraction'] for r in big]) * 100:.0f} % of their "
                      f"roofline (geomean)")
                capped = [r for r in big if r["bandwidth_ceiling"] < 0.7]
                if capped:
                    ceiling = max(r["bandwidth_ceiling"] for r in capped)
                    shares = ", ".join(str(round(100 * r[prefix + "roofline_fraction"])) for r in capped)
                    print(f"  of which {len(capped)} cannot reach 70 % at the float32 FMA rate (their multiply-adds "
                          f"take longer than the move): {100 * ceiling:.0f} % at most; they reach {shares} % of that")


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


class Candidates:
    """A candidates folder timed by loader/measure.py (candidates.json, results.json, the library they
    name): each kernel's fastest candidate, by the median of its timings."""

    def __init__(self, folder: str) -> None:
        import tvm_ffi
        root = Path(folder).resolve()
        data = json.loads((root / "candidates.json").read_text())
        try:
            results = json.loads((root / "results.json").read_text())
        except FileNotFoundError:
            raise SystemExit(f"{root}/results.json not found: time the candidates first (loader/measure.py)") from None
        self.module = tvm_ffi.load_module(str(root / data["library"]))
        self.fastest: dict[str, tuple[float, str, str]] = {}   # key -> (seconds, function, rule)
        for entry in data["candidates"]:
            samples = results.get(entry["function"])
            if samples:
                best = (statistics.median(samples), entry["function"], entry.get("rule", ""))
                self.fastest[entry["key"]] = min(self.fastest.get(entry["key"], best), best)


BROKEN = 3   # exit status: a kernel left the CUDA context unusable; --resume goes on after it


def _row(key: str, spec: dict, ok: bool, err: float | None) -> dict:
    depthwise = spec["op"] == "conv2d" and spec["groups"] == spec["in_channels"] == spec["out_channels"]
    return {"key": key, "ok": ok, "rel_err": err, "dtype": "tf32" if spec.get("tf32") else spec["dtype"],
            "batch": spec["batch"],
            "op": spec["op"], "layout": spec["layout"], "depthwise": depthwise}


def journal(path: str | None, dev: str, rates: dict, rows: list[dict], current: str | None = None) -> None:
    """The results so far, with the kernel about to run: what a run that dies leaves for --resume."""
    if path:
        Path(path).write_text(json.dumps({"device": dev, **rates, "rows": rows,
                                          "current": current}, indent=1))


def resumed(lib, path: str | None) -> list[dict]:
    """The rows of an earlier run's journal, plus a failed row for the kernel it died in."""
    if not path or not Path(path).exists():
        return []
    data = json.loads(Path(path).read_text())
    rows, current = data["rows"], data.get("current")
    if current and current in lib.entries:
        rows.append({**_row(current, lib.entries[current]["spec"], False, None),
                     "error": "the run died in this kernel"})
        print(f"FAIL {current[:72]:72s} the last run died in this kernel", flush=True)
    return rows


def context_alive() -> bool:
    try:
        return torch.ones(1, device="cuda").add_(1).item() == 2.0
    except Exception:  # noqa: BLE001 - a sticky CUDA error
        return False


def check_kernel(lib, key: str, entry: dict, args, timer, rates: dict, gen, start: float) -> dict:
    """One kernel of the bundle against torch, timed while the budget lasts; prints its line."""
    spec = entry["spec"]
    fn = lib.function(key)
    targs = torch_args(spec, args.device, gen)
    with exact():
        expected = torch_forward(spec, {**targs, **{n: round_to_tf32(targs[n]) for n in ("input", "weight")}}
                                 if spec.get("tf32") else targs)
    names = [a["name"] for a in entry["args"]]
    kargs = [kernel_layout(spec, n, targs[n]) for n in names[:-1]]
    out = torch.empty(entry["args"][-1]["shape"], device=args.device, dtype=DTYPES[spec["dtype"]])

    def ours():   # tvm-ffi runs it on torch's current stream (it reads it from the CUDA tensors)
        fn(*kargs, out)
    def error() -> float:   # out against torch's, relative to its largest value
        got = out.permute(0, 3, 1, 2) if spec["layout"] == "NHWC" else out
        return (got.float() - expected.float()).abs().max().item() / (expected.abs().max().item() or 1.0)
    tolerance = 1e-2 if spec["dtype"] == "float16" else 1e-4
    ours()
    err = error()
    ok = err < tolerance
    row = _row(key, spec, ok, err)
    fastest = args.candidates.fastest.get(key) if args.candidates else None
    if fastest is not None:
        candidate = args.candidates.module[fastest[1]]
        out.fill_(float("nan"))
        candidate(*kargs, out)
        row.update(candidate=fastest[1], candidate_rule=fastest[2], candidate_ok=error() < tolerance)
    if time.monotonic() - start < args.budget_seconds:
        cl = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in targs.items()}
        row["ours_us"] = timer(ours)
        row["torch_nchw_us"] = timer(lambda: torch_forward(spec, targs))
        row["torch_cl_us"] = timer(lambda: torch_forward(spec, cl))
        bandwidth = rates["copy_bytes_per_us"]
        moved = sum(t.numel() * t.element_size() for t in kargs) + out.numel() * out.element_size()
        row["moved_bytes"] = moved
        row["bandwidth_fraction"] = moved / row["ours_us"] / bandwidth
        # per output element, a conv does a multiply-add per weight element of its output channel
        macs = out.numel() * targs["weight"].numel() // spec["out_channels"] if spec["op"] == "conv2d" else 0
        row["macs"] = macs
        src, dst = (torch.empty(moved // 2, dtype=torch.uint8, device=args.device) for _ in range(2))
        row["copy_us"] = timer(lambda: dst.copy_(src))   # the same bytes read and written
        move_us, fma_us = moved / bandwidth, macs / rates["fma_per_us"]
        row["roofline_us"] = max(row["copy_us"], fma_us)
        # the most of copy bandwidth its multiply-adds leave it
        row["bandwidth_ceiling"] = move_us / max(move_us, fma_us)
        row["roofline_fraction"] = row["roofline_us"] / row["ours_us"]
        row["speedup"] = min(row["torch_nchw_us"], row["torch_cl_us"]) / row["ours_us"]
        if spec["op"] == "conv2d" and spec["dtype"] == "float32" and not row["depthwise"]:
            with exact():   # (captured with TF32 off: cuDNN picks its algorithm as the graph is captured)
                row["torch_ieee_us"] = min(timer(lambda: torch_forward(spec, targs)), timer(lambda: torch_forward(spec, cl)))
            row["ieee_speedup"] = row["torch_ieee_us"] / row["ours_us"]
        if args.candidates:   # (a kernel without a good candidate keeps its own: the geomeans cover the same kernels)
            tuned = row["ours_us"]
            if row.get("candidate_ok"):
                row["candidate_us"] = timer(lambda: candidate(*kargs, out))
                tuned = min(tuned, row["candidate_us"])
            row["tuned_bandwidth_fraction"] = moved / tuned / bandwidth
            row["tuned_roofline_fraction"] = row["roofline_us"] / tuned
            row["tuned_speedup"] = min(row["torch_nchw_us"], row["torch_cl_us"]) / tuned
            if "torch_ieee_us" in row:
                row["tuned_ieee_speedup"] = row["torch_ieee_us"] / tuned
    timing = (f"ours {row['ours_us']:8.1f} us  torch best {min(row['torch_nchw_us'], row['torch_cl_us']):8.1f} us"
              f"  x{row['speedup']:5.2f}  {100 * row['bandwidth_fraction']:5.1f}% of copy bw"
              f"  {100 * row['roofline_fraction']:5.1f}% of roofline"
              f" ({'FMA' if row['roofline_us'] > row['copy_us'] else 'copy'})"
              if "ours_us" in row else "(not timed: budget spent)")
    if "torch_ieee_us" in row:
        timing += f"  torch without TF32 {row['torch_ieee_us']:8.1f} us"
    if "candidate_us" in row:
        timing += f"  candidate {row['candidate_us']:8.1f} us ({row['candidate_rule']})"
    elif fastest is not None and not row["candidate_ok"]:
        timing += f"  candidate {fastest[1]} ({fastest[2]}) DIFFERS from torch"
    print(f"{'ok  ' if ok else 'FAIL'} {key[:72]:72s} err {err:.1e}  {timing}", flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
