"""PyTorch's answer for a spec: the ground truth of tests and the baseline of benchmarks.
Tensors here are torch's logical NCHW (any memory format) with OIHW weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .spec import KernelSpec

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def torch_dtype(spec: KernelSpec) -> torch.dtype:
    return _TORCH_DTYPES[spec.dtype]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's view/transpose/view, exactly as the models write it."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


_TORCH_ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "silu": F.silu,
                      "sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid, "gelu": F.gelu}


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    """An epilogue activation as torch computes it (None or 'none': identity)."""
    fn = _TORCH_ACTIVATIONS.get(activation)
    return fn(y) if fn is not None else y


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32 as a TF32 spec's kernel rounds its inputs (gconvgen.ops.conv
    .round_to_tf32: to nearest, ties to even, NaN kept)."""
    bits = t.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    rounded = ((bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000).to(torch.uint32).view(torch.float32)
    return torch.where(t.isnan(), t, rounded.view(t.shape))


def forward(spec: KernelSpec, x: torch.Tensor, weight: torch.Tensor | None = None,
            bias: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """What the kernel must compute, the way a PyTorch model computes it (separate ops). Arguments in
    spec.arg_names order: a kernel with a residual but no bias takes the residual third."""
    if spec.has_residual and not spec.has_bias and residual is None:
        bias, residual = None, bias
    if spec.op == "channel_shuffle":
        return channel_shuffle(x, spec.groups)
    top, left, bottom, right = spec.padding
    if spec.op in ("max_pool2d", "avg_pool2d"):
        # torch pools with symmetric padding of at most half the window: other padding goes in first
        # (-inf under a max, zeros in an average, which counts its padding)
        if (top, left) != (bottom, right) or top * 2 > spec.kernel[0] or left * 2 > spec.kernel[1]:
            fill = float("-inf") if spec.op == "max_pool2d" else 0.0
            x, pad = F.pad(x, (left, right, top, bottom), value=fill), 0
        else:
            pad = (top, left)
        if spec.op == "max_pool2d":
            return F.max_pool2d(x, spec.kernel, spec.stride, pad, spec.dilation)
        return activate(F.avg_pool2d(x, spec.kernel, spec.stride, pad, count_include_pad=True), spec.activation)
    if spec.op == "conv2d_wgrad":   # weight = the output's gradient here
        x = x if (top, left) == (bottom, right) else F.pad(x, (left, right, top, bottom))
        pad = (top, left) if (top, left) == (bottom, right) else (0, 0)
        return torch.nn.grad.conv2d_weight(x, spec.shape("output"), weight, spec.stride, pad, spec.dilation,
                                           spec.groups)
    if spec.op == "conv2d_dgrad":   # x = the output's gradient here
        if (top, left) != (bottom, right):
            raise ValueError("the reference input gradient takes symmetric padding only")
        return torch.nn.grad.conv2d_input(spec.shape("output"), weight, x, spec.stride, (top, left), spec.dilation,
                                          spec.groups)
    if spec.tf32:   # the products exact in float32 (11-bit by 11-bit), only the sums rounded
        x, weight = round_to_tf32(x), round_to_tf32(weight)
    if (top, left) == (bottom, right):
        y = F.conv2d(x, weight, bias if spec.has_bias else None, spec.stride, (top, left), spec.dilation, spec.groups)
    else:
        y = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias if spec.has_bias else None,
                     spec.stride, 0, spec.dilation, spec.groups)
    for e in spec.epilogue:   # bias went into the conv; the rest in the epilogue's order
        if e == "residual":
            y = y + residual
        elif e.startswith("shuffle:"):
            y = channel_shuffle(y, spec.shuffle_groups)
        elif e != "bias":
            y = activate(y, e)
    return y


def random_args(spec: KernelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random torch-layout arguments (NCHW input, OIHW weight, bias; grad_output for a gradient,
    which takes it in place of the input or of the weight) for a spec."""
    g = torch.Generator().manual_seed(seed)
    dt = torch_dtype(spec)
    if spec.op == "conv2d_dgrad":
        args = {"grad_output": torch.randn(spec.shape("grad_output"), generator=g).to(dt)}
    else:
        args = {"input": torch.randn(spec.batch, spec.in_channels, spec.height, spec.width, generator=g).to(dt)}
    if spec.op == "conv2d_wgrad":
        args["grad_output"] = torch.randn(spec.shape("grad_output"), generator=g).to(dt)
    if spec.op in ("conv2d", "conv2d_dgrad"):
        kh, kw = spec.kernel
        fan_in = spec.in_channels // spec.groups * kh * kw
        args["weight"] = (torch.randn(spec.out_channels, spec.in_channels // spec.groups, kh, kw, generator=g)
                          / fan_in ** 0.5).to(dt)
        if spec.has_bias:
            args["bias"] = torch.randn(spec.out_channels, generator=g).to(dt)
        if spec.has_residual:
            args["residual"] = torch.randn(spec.batch, spec.out_channels, spec.out_height, spec.out_width,
                                           generator=g).to(dt)
    return args


def to_kernel_layout(spec: KernelSpec, name: str, t: torch.Tensor) -> torch.Tensor:
    """A torch-layout argument as the kernel takes it (NHWC input/output, the spec's weight layout).
    For a channels_last input the NHWC view is already contiguous: no copy is made."""
    if spec.layout == "NHWC" and name in ("input", "output", "residual"):
        t = t.permute(0, 2, 3, 1)
    elif name == "weight" and spec.weight_layout != "OIHW":
        t = packed_weight(t, spec.weight_block)
    return t.contiguous()


def packed_weight(w: torch.Tensor, block: int = 0) -> torch.Tensor:
    """torch's OIHW weight in HWIO, or with block t in HWIO<t>: (out/t, kh, kw, in/groups, t)."""
    t = w.permute(2, 3, 1, 0)
    if block:
        kh, kw, cig, o = t.shape
        t = t.reshape(kh, kw, cig, o // block, block).permute(3, 0, 1, 2, 4)
    return t.contiguous()


def from_kernel_layout(spec: KernelSpec, t: torch.Tensor) -> torch.Tensor:
    """A kernel's output as a torch-layout (logical NCHW) tensor, zero-copy."""
    return t.permute(0, 3, 1, 2) if spec.layout == "NHWC" else t
