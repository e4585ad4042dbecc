#!/usr/bin/env python3
"""Time every candidate of a gconvgen candidates folder (gconvgen tune --export-candidates) in one
run and write FOLDER/results.json for `gconvgen tune --import-results`.

    python loader/measure.py FOLDER [--rounds 5]

Needs tvm-ffi and the folder's lib/; torch for CUDA candidates (tensors and events). Each
candidate runs on random data; a candidate that fails is recorded as failed, not fatal.
"""
from __future__ import annotations

import argparse
import ctypes
import json
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
        count = 1
        for d in a["shape"]:
            count *= d
        values = (ctypes.c_float * count)(*[random.uniform(-1, 1) for _ in range(count)]) \
            if a["dtype"] == "float32" else (ctypes.c_uint16 * count)(*[0x3C00] * count)
        ctypes.memmove(t.data_ptr(), values, ctypes.sizeof(values))
        tensors.append(t)
    return tensors


def _time(fn, device: str, rounds: int) -> list[float]:
    """Seconds per call, one number per round; each round runs for at least 20 ms."""
    fn()
    sync = (lambda: __import__("torch").cuda.synchronize()) if device == "cuda" else (lambda: None)
    sync()
    reps, spent = 1, 0.0
    while spent < 0.02 and reps < 1 << 14:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        spent = time.perf_counter() - start
        reps *= 2
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / reps)
    return samples


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    folder = Path(args.folder)
    data = json.loads((folder / "candidates.json").read_text())
    device = data["device"]
    gconvgen_loader.load_runtime(folder)
    if device == "cuda":
        gconvgen_loader.load_cuda_runtime(folder, str(folder / data["library"]))
    import tvm_ffi
    module = tvm_ffi.load_module(str(folder / data["library"]))
    results, start = {}, time.monotonic()
    for i, entry in enumerate(data["candidates"], 1):
        try:
            fn = module[entry["function"]]
            tensors = _tensors(entry["args"], device)
            samples = _time(lambda: fn(*tensors), device, args.rounds)
            results[entry["function"]] = samples
            note = f"{statistics.median(samples) * 1e6:9.1f} us"
        except Exception as e:  # noqa: BLE001 - a failing candidate is a result, not the end of the run
            results[entry["function"]] = []
            note = f"failed: {str(e)[:80]}"
        print(f"[{i}/{len(data['candidates'])}] {entry['function']} {note}", flush=True)
    (folder / "results.json").write_text(json.dumps(results) + "\n")
    print(f"wrote {folder / 'results.json'}: {len(results)} candidates in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
