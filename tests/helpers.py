"""Shared by the tests: run one spec through our kernel and through PyTorch."""
from __future__ import annotations

import torch

from gconvgen import build, reference, runtime
from gconvgen.spec import KernelSpec


def run_ours(spec: KernelSpec, profile, args: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our kernel's output for torch-layout args, as a torch-layout (logical NCHW) tensor."""
    folder, _ = build.cached(spec, profile)
    kernel = runtime.load(folder).kernel(spec)
    out = torch.empty(spec.shape("output"), dtype=reference.torch_dtype(spec))
    kernel(*[reference.to_kernel_layout(spec, n, args[n]) for n in spec.arg_names if n != "output"], out)
    return reference.from_kernel_layout(spec, out)


def relative_error(spec: KernelSpec, profile, seed: int = 0) -> float:
    args = reference.random_args(spec, seed)
    ours = run_ours(spec, profile, args)
    expected = reference.forward(spec, *args.values())
    assert ours.shape == expected.shape
    scale = max(expected.abs().max().item(), 1e-6)
    return (ours - expected).abs().max().item() / scale
