#!/usr/bin/env python3
"""Time every candidate of a gconvgen candidates folder (gconvgen tune --export-candidates) in one
run and write FOLDER/results.json for `gconvgen tune --import-results`.

    python loader/measure.py FOLDER [--rounds 5] [--resume]

Needs tvm-ffi and the folder's lib/; torch for CUDA candidates (tensors and events). The candidates
of a kernel run on the same random data, and each one's output is compared with the first's (the
rule's own schedule, which the build machine's tests check against torch): a candidate that fails or
computes something else is recorded as failed, never as a time. results.json is rewritten after
every candidate, so a run cut short keeps what it measured. A candidate that faults on a GPU leaves
the process's CUDA context unusable: the run then stops with exit status 3, and `--resume` goes on
after it, counting it failed (FOLDER/measuring.json names the candidate running, for a run that
died outright).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gconvgen_loader  # noqa: E402 - beside this file


def _tensors(args: list[dict], device: str):
    if device == "cuda":
        import torch
        dt = {"float32": torch.float32, "float16": torch.float16}
        return [torch.randn(a["shape"], device="cuda").to(dt[a["dtype"]]) for a in args]
    tensors = []
    for a in args:   # CPU: TVM's own allocator, filled with random bytes of small floats
        t = gconvgen_loader.alloc(a["shape"], a["dtype"])
        count = math.prod(a["shape"])
        values = (ctypes.c_float * count)(*[random.uniform(-1, 1) for _ in range(count)]) \
            if a["dtype"] == "float32" else (ctypes.c_uint16 * count)(*[0x3C00] * count)
        ctypes.memmove(t.data_ptr(), values, ctypes.sizeof(values))
        tensors.append(t)
    return tensors


def _poison(tensor, dtype: str, device: str) -> None:
    """NaN in every element, so an output a candidate leaves unwritten cannot pass for a result."""
    if device == "cuda":
        tensor.fill_(float("nan"))
    else:
        ctypes.memset(tensor.data_ptr(), 0xFF, _nbytes(tensor, dtype))


def _values(tensor, dtype: str, device: str):
    """The output, copied: a float32 torch tensor on the GPU, else a list of floats."""
    if device == "cuda":
        return tensor.float()
    raw = ctypes.string_at(tensor.data_ptr(), _nbytes(tensor, dtype))
    return list(memoryview(raw).cast("f" if dtype == "float32" else "e"))


def _nbytes(tensor, dtype: str) -> int:
    return math.prod(tensor.shape) * gconvgen_loader._itemsize(dtype)


def _differ(got, expected, dtype: str) -> bool:
    relative = 1e-2 if dtype == "float16" else 1e-4
    if not isinstance(got, list):   # torch, on the GPU
        scale = expected.abs().nan_to_num(0.0).max().item() or 1.0
        return not bool(((got - expected).abs() <= relative * scale).all())   # a NaN differs too
    scale = max((abs(v) for v in expected if v == v), default=0.0) or 1.0
    return any(not abs(a - b) <= relative * scale for a, b in zip(got, expected))


def _sync(device: str) -> None:
    """Wait for the kernels queued on the GPU (where a fault shows); nothing to wait for on a CPU."""
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def _time(fn, device: str, rounds: int) -> list[float]:
    """Seconds per call, one number per round; each round runs for at least 20 ms (on a GPU: _time_gpu)."""
    if device == "cuda":
        return _time_gpu(fn, rounds)
    fn()
    _sync(device)
    reps, spent = 1, 0.0
    while spent < 0.02 and reps < 1 << 14:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        spent = time.perf_counter() - start
        reps *= 2
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - start) / reps)
    return samples


def _time_gpu(fn, rounds: int) -> list[float]:
    """Seconds per call, one number per round: gpu_check's timer (the calls replayed as one CUDA
    graph, timed by CUDA events), as many calls a replay as take about 2 ms (2 to 20). Launched one by
    one from Python, every candidate of a few µs was timed at the host's launch rate (MobileNetV2's
    batch-1 layers all 4.7-6 µs on an H200), and rounds of at least 20 ms each made a candidate take
    0.35 s: 1412 of them 500 s, past gpu_check.sh's 330."""
    import torch
    # one call's time, to size the replays (the candidate has run already: its output was checked)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    once_us = max(start.elapsed_time(end) * 1e3, 1.0)
    reps = max(2, min(20, round(2000 / once_us)))
    return [us * 1e-6 for us in _gpu_check().Timer("cuda").samples(fn, reps=reps, rounds=rounds)]


def _gpu_check():
    """gpu_check.py, beside this file: its timer and its test of the CUDA context (it imports torch,
    which CPU candidates do not need)."""
    import gpu_check
    return gpu_check


BROKEN = 3   # exit status: a candidate left the CUDA context unusable; --resume goes on after it


def _resumed(folder: Path) -> dict:
    """An earlier run's results, plus a failure for the candidate it died in."""
    results = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else {}
    running = folder / "measuring.json"
    if running.exists():
        died = json.loads(running.read_text()).get("function")
        if died and died not in results:
            results[died] = []
            print(f"{died} failed: the last run died in it", flush=True)
    return results


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--resume", action="store_true", help="keep results.json's timings and go on after them; "
                   "the candidate the last run died in counts as failed")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    data = json.loads((folder / "candidates.json").read_text())
    device = data["device"]
    gconvgen_loader.load_runtime(folder)
    if device == "cuda":
        gconvgen_loader.load_cuda_runtime(folder, str(folder / data["library"]))
    import tvm_ffi
    module = tvm_ffi.load_module(str(folder / data["library"]))
    results, start = (_resumed(folder) if args.resume else {}), time.monotonic()
    inputs, expected = {}, {}   # per kernel key: its random arguments, and the rule's output on them
    rule_schedule = {}   # per kernel key, its first candidate: the rule's own schedule
    for entry in data["candidates"]:
        rule_schedule.setdefault(entry["key"], entry["function"])
    for i, entry in enumerate(data["candidates"], 1):
        key = entry["key"]
        first = rule_schedule[key] == entry["function"]
        done = entry["function"] in results
        if done and not (first and results[entry["function"]]):
            continue   # measured by the run resumed (a rule's own schedule runs again, as the reference)
        (folder / "measuring.json").write_text(json.dumps({"function": entry["function"]}))
        try:
            fn = module[entry["function"]]
            if key not in inputs:   # (a kernel's candidates are listed together: the last kernel's data can go)
                inputs.clear()
                inputs[key] = _tensors(entry["args"], device)
            tensors = inputs[key]
            _poison(tensors[-1], entry["args"][-1]["dtype"], device)
            fn(*tensors)
            _sync(device)   # a fault is this candidate's, not the next one's
            got = _values(tensors[-1], entry["args"][-1]["dtype"], device)
            if first:
                expected[key] = got
            elif key not in expected:
                raise ValueError("the rule's schedule failed, so there is nothing to check it against")
            elif _differ(got, expected[key], entry["args"][-1]["dtype"]):
                raise ValueError("its output differs from the rule's schedule")
            if done:
                continue
            samples = _time(lambda: fn(*tensors), device, args.rounds)
            results[entry["function"]] = samples
            note = f"{statistics.median(samples) * 1e6:9.1f} us"
        except Exception as e:  # noqa: BLE001 - a failing candidate is a result, not the end of the run
            if done:   # the rule's schedule, timed by the run resumed, failed as its reference now
                print(f"{entry['function']} failed as the reference: {str(e)[:80]}", flush=True)
                continue
            results[entry["function"]] = []
            note = f"failed: {str(e)[:80]}"
        print(f"[{i}/{len(data['candidates'])}] {entry['function']} {entry.get('rule', '')} {note}", flush=True)
        (folder / "results.json").write_text(json.dumps(results) + "\n")
        if not results[entry["function"]] and device == "cuda" and not _gpu_check().context_alive():
            print("the CUDA context is broken after that candidate: run again with --resume to go on", flush=True)
            return BROKEN
    (folder / "measuring.json").unlink(missing_ok=True)
    print(f"wrote {folder / 'results.json'}: {len(results)} candidates in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
