"""`gconvgen bench`: our kernels against PyTorch, in the same process, on the same tensors."""
from __future__ import annotations

import functools
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import reference
from .spec import OP_CLASSES
from .suites import Workload


@dataclass
class Row:
    name: str
    op_class: str
    layout: str
    ours_us: float
    torch_us: float          # torch eager in the row's layout
    torch_best_us: float     # the better of torch's NCHW and channels_last runs
    torch_compile_us: float | None
    max_abs_err: float
    schedule: str
    rule_us: float | None = None   # the same kernel from the rules alone (bench --vs-rules)
    key: str = ""                  # the kernel's spec key (shape, batch, layouts)
    copy_us: float | None = None   # torch copying as many bytes as the kernel reads and writes
    fma_us: float | None = None    # its multiply-adds at torch's float32 matmul rate

    @property
    def roofline_us(self) -> float | None:
        """What no schedule beats here: the longer of moving its bytes (as a copy of its size, which
        gains the same from the caches) and its multiply-adds at the rate of a tuned GEMM."""
        return max(self.copy_us, self.fma_us or 0.0) if self.copy_us else None


def _time_rounds(fns: dict[str, Callable[[], object]], rounds: int = 11, min_seconds: float = 0.01,
                 settle: float = 0.0) -> dict[str, float]:
    """Median µs per call of each function. The functions take turns round by round, so a noisy
    neighbour hurts them alike. settle: untimed calls open each turn for at least that many seconds
    (and one call), so that a function is not timed while the previous one's thread pool still spins:
    torch's OpenMP workers spin for 10-30 ms after an op here, and a 0.4 ms kernel timed in that
    window ran 1.3-1.5x slower (whole models would be timed against each other's leftovers)."""
    loops = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        n, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds or n >= 10000:
                break
            n *= 2
        loops[name] = n
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if settle:
                until = time.perf_counter() + settle
                fn()
                while time.perf_counter() < until:
                    fn()
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / loops[name] * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


@functools.cache
def fma_rate(n: int = 512) -> float:
    """Multiply-adds per µs of torch's float32 matmul (oneDNN's GEMM, torch's threads): the rate a
    well-tuned kernel of ours can hope for on this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return n ** 3 / _time_rounds({"mm": lambda: a @ b}, rounds=5, min_seconds=0.02)["mm"]


def run_row(workload: Workload, library_folder, compile_torch: bool, seed: int = 0, rule_folder=None) -> Row:
    """Check our kernel against PyTorch, then time it, torch in both layouts, torch.compile and (with
    rule_folder) the rules-only kernel, all in the same rounds."""
    from .runtime import load
    spec = workload.spec
    kernel = load(library_folder).kernel(spec)
    args = reference.random_args(spec, seed)
    kernel_args = [reference.to_kernel_layout(spec, n, args[n]) for n in spec.arg_names if n != "output"]
    out = torch.empty(spec.shape("output"), dtype=reference.torch_dtype(spec))
    kernel(*kernel_args, out)
    expected = reference.forward(spec, *args.values())
    err = (reference.from_kernel_layout(spec, out).float() - expected.float()).abs().max().item()

    nchw = list(args.values())
    cl = [nchw[0].to(memory_format=torch.channels_last)] + nchw[1:]
    same = cl if spec.layout == "NHWC" else nchw
    moved = sum(t.numel() * t.element_size() for t in kernel_args + [out])
    src, dst = torch.empty(moved // 2, dtype=torch.uint8), torch.empty(moved // 2, dtype=torch.uint8)
    fns: dict[str, Callable[[], object]] = {
        "ours": lambda: kernel(*kernel_args, out),
        "torch_nchw": lambda: reference.forward(spec, *nchw),
        "torch_cl": lambda: reference.forward(spec, *cl),
        "copy": lambda: dst.copy_(src),
    }
    if rule_folder is not None:
        rule_kernel, rule_out = load(rule_folder).kernel(spec), torch.empty_like(out)
        fns["rule"] = lambda: rule_kernel(*kernel_args, rule_out)
    if compile_torch:
        compiled = torch.compile(lambda *a: reference.forward(spec, *a), dynamic=False)
        with torch.no_grad():
            compiled(*same)
        fns["torch_compile"] = lambda: compiled(*same)
    with torch.no_grad():
        # settle: torch's OpenMP workers spin for a while after its turn and TVM's pool after ours;
        # unsettled, each turn's first calls ran beside the other's spinning threads (ResNeXt's
        # 512-channel 14x14 grouped layer: 221 us unsettled, 160 settled; torch's 241 and 231)
        t = _time_rounds(fns, min_seconds=0.02, settle=0.03)
    torch_us = t["torch_cl"] if spec.layout == "NHWC" else t["torch_nchw"]
    return Row(workload.name, spec.op_class, spec.layout, t["ours"], torch_us, min(t["torch_nchw"], t["torch_cl"]),
               t.get("torch_compile"), err, kernel.schedule, t.get("rule"), spec.key, t["copy"],
               spec.multiply_adds / fma_rate() if spec.multiply_adds else None)


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def format_table(rows: list[Row]) -> str:
    has_compile = any(r.torch_compile_us is not None for r in rows)
    head = (f"{'layer':26s} {'class':9s} {'layout':6s} {'ours us':>9s} {'torch best':>10s} {'x best':>7s} "
            f"{'torch same':>10s} {'x same':>7s}" + (f" {'compile':>9s} {'x comp':>7s}" if has_compile else "")
            + f" {'roofline':>8s} {'max err':>8s}  schedule")
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r.name:26s} {r.op_class:9s} {r.layout:6s} {r.ours_us:9.1f} {r.torch_best_us:10.1f} "
                f"{r.torch_best_us / r.ours_us:7.2f} {r.torch_us:10.1f} {r.torch_us / r.ours_us:7.2f}")
        if has_compile:
            c = r.torch_compile_us
            line += f" {c:9.1f} {c / r.ours_us:7.2f}" if c is not None else f" {'-':>9s} {'-':>7s}"
        rule = f"  (rules {r.ours_us / r.rule_us:4.0%})" if r.rule_us is not None else ""
        roof = r.roofline_us
        # the share of its roofline reached; F: its multiply-adds bound it, not its bytes
        line += f" {roof / r.ours_us:6.0%} {'F' if roof > r.copy_us else ' '}" if roof else f" {'-':>8s}"
        lines.append(line + f" {r.max_abs_err:8.1e}  {r.schedule}{rule}")
    lines.append("")
    lines.append("geomean speedup (x > 1: gconvgen faster)")
    for cls in OP_CLASSES + ("all",):
        sel = [r for r in rows if cls == "all" or r.op_class == cls]
        if not sel:
            continue
        line = (f"  {cls:10s} n={len(sel):2d}  vs torch best {geomean([r.torch_best_us / r.ours_us for r in sel]):5.2f}x"
                f"  vs torch same layout {geomean([r.torch_us / r.ours_us for r in sel]):5.2f}x")
        comp = [r.torch_compile_us / r.ours_us for r in sel if r.torch_compile_us is not None]
        if comp:
            line += f"  vs torch.compile {geomean(comp):5.2f}x"
        roofs = [r.roofline_us / r.ours_us for r in sel if r.roofline_us]
        if roofs:
            line += f"  at {100 * geomean(roofs):3.0f}% of the roofline"
        rules = [r.ours_us / r.rule_us for r in sel if r.rule_us is not None]
        if rules:
            line += f"  rules alone reach {100 * geomean(rules):3.0f}% of this speed"
        lines.append(line)
    slower = [r for r in rows if r.torch_best_us < r.ours_us]
    if slower:
        lines.append("slower than torch's better layout: " + ", ".join(
            f"{r.name} ({r.torch_best_us / r.ours_us:.2f}x)" for r in slower))
    return "\n".join(lines)


def to_json(rows: list[Row], target: str, threads: int) -> dict:
    import tvm_ffi
    try:
        import tvm
        tvm_version = tvm.__version__
    except ImportError:
        tvm_version = "runtime-only"
    return {"target": target, "threads": threads, "torch": torch.__version__, "tvm": tvm_version,
            "tvm_ffi": tvm_ffi.__version__, "rows": [{**asdict(r), "roofline_us": r.roofline_us} for r in rows]}


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def plot(rows: list[Row], path: str, title: str) -> None:
    """Per-layer speedup against torch's better layout (and torch.compile, where timed), log scale,
    grouped by op class, so wins and losses show at a glance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ordered = [r for cls in OP_CLASSES for r in rows if r.op_class == cls]
    colors = {"depthwise": "tab:blue", "grouped": "tab:orange", "pointwise": "tab:green",
              "dense": "tab:gray", "shuffle": "tab:purple"}
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(ordered) + 2), 5))
    xs = range(len(ordered))
    ax.bar(xs, [r.torch_best_us / r.ours_us for r in ordered], color=[colors[r.op_class] for r in ordered],
           label="vs torch's better layout")
    comp = [(i, r.torch_compile_us / r.ours_us) for i, r in enumerate(ordered) if r.torch_compile_us]
    if comp:
        ax.scatter([i for i, _ in comp], [v for _, v in comp], marker="_", s=120, color="black",
                   label="vs torch.compile", zorder=3)
    ax.axhline(1.0, color="red", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel("speedup (>1: gconvgen faster)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r.name for r in ordered], rotation=75, fontsize=7)
    start = 0
    for cls in OP_CLASSES:
        n = sum(r.op_class == cls for r in ordered)
        if n:
            ax.text(start + (n - 1) / 2, 1.02, f"{cls} {geomean([r.torch_best_us / r.ours_us for r in ordered if r.op_class == cls]):.2f}x",
                    transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color=colors[cls])
            if start:
                ax.axvline(start - 0.5, color="lightgray", linewidth=1)
            start += n
    ax.set_title(title, pad=18)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class ModelRow:
    model: str
    ours_ms: float              # gconvgen.convert(model), eager
    eager_ms: float             # torch eager, NCHW
    eager_best_ms: float        # the better of torch eager NCHW and channels_last
    compile_ms: float | None    # torch.compile(model)
    max_rel_err: float


def run_model(name: str, compile_torch: bool, size: int = 224, batch: int = 1) -> ModelRow:
    """A reference model at `batch`: converted vs torch eager (both layouts) vs torch.compile."""
    from . import convert, models
    model = models.create(name)
    ours = convert(model)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    cl_model = models.create(name).to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last)
    fns = {"ours": lambda: ours(x), "eager": lambda: model(x), "eager_cl": lambda: cl_model(x_cl)}
    with torch.no_grad():
        expected, got = model(x), ours(x)
        err = ((got - expected).abs().max() / expected.abs().max()).item()
        if compile_torch:
            compiled = torch.compile(model)
            compiled(x)
            fns["compile"] = lambda: compiled(x)
        t = _time_rounds(fns, rounds=15, min_seconds=0.05, settle=0.03)   # the VM here has slow phases of seconds
    return ModelRow(name, t["ours"] / 1e3, t["eager"] / 1e3, min(t["eager"], t["eager_cl"]) / 1e3,
                    t["compile"] / 1e3 if "compile" in t else None, err)


def format_models(rows: list[ModelRow]) -> str:
    lines = [f"{'model':14s} {'ours ms':>8s} {'eager ms':>9s} {'x eager':>8s} {'best eager':>10s} {'x best':>7s} "
             f"{'compile ms':>10s} {'x comp':>7s} {'max rel err':>11s}"]
    for r in rows:
        comp = (f"{r.compile_ms:10.2f} {r.compile_ms / r.ours_ms:7.2f}" if r.compile_ms is not None
                else f"{'-':>10s} {'-':>7s}")
        lines.append(f"{r.model:14s} {r.ours_ms:8.2f} {r.eager_ms:9.2f} {r.eager_ms / r.ours_ms:8.2f} "
                     f"{r.eager_best_ms:10.2f} {r.eager_best_ms / r.ours_ms:7.2f} {comp} {r.max_rel_err:11.1e}")
    return "\n".join(lines)


def run_overhead(channels: int = 32, size: int = 28) -> dict[str, float]:
    """Median µs per call of one small depthwise layer (3x3, relu6 fused), four ways: the compiled
    kernel alone on a preallocated output, gconvgen.nn.Conv2d in eager inference, the registered op
    through torch's dispatcher, and torch's own F.conv2d + relu6."""
    from . import nn as gnn
    from . import torch_ops
    conv = gnn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False, activation="relu6")
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv(x)
        spec, kernel = torch_ops.last_call()
        if kernel is None:
            raise RuntimeError("no compiled kernel for the overhead layer (runtime-only install?)")
        out, w = torch.empty(spec.shape("output")), conv.weight.detach()
        args = (x, conv.weight, None, [1, 1], [1, 1], [1, 1], channels, "relu6", 0)
        fns = {"kernel": lambda: kernel.function(x, w, out), "module": lambda: conv(x),
               "op": lambda: torch.ops.gconvgen.conv2d(*args),
               "torch": lambda: torch.nn.functional.relu6(torch.nn.functional.conv2d(x, w, None, 1, 1, 1, channels))}
        return _time_rounds(fns, rounds=21, min_seconds=0.02)


def format_overhead(t: dict[str, float]) -> str:
    k = t["kernel"]
    return "\n".join([f"{'path':8s} {'us/call':>8s} {'above kernel':>13s}"]
                     + [f"{name:8s} {us:8.1f} {us - k:13.1f}" for name, us in t.items()])
