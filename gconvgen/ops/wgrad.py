"""The weight gradient of a group conv2d: for each group, a correlation of the padded input with
the output gradient, summed over batch and output pixels.

    grad_weight[o, i, a, b] = sum_{n, y, x} grad_output[n, o, y, x] * input_p[n, g(o)*cig + i, y*sh + a*dh, x*sw + b*dw]

Stages: "pad" (only with padding), "conv" (the float32 accumulation), "out" (the store in dtype).
"""
from __future__ import annotations

from tvm import te

from ..spec import KernelSpec
from .conv import _pad
from .epilogue import ACC_DTYPE


def conv2d_weight_grad(spec: KernelSpec) -> list[te.Tensor]:
    """[input, grad_output, grad_weight] of the kernel described by `spec` (NCHW, OIHW)."""
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    DY = te.placeholder(spec.shape("grad_output"), spec.dtype, name="grad_output")
    Xp = _pad(spec, X)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    cig, cog = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    rn = te.reduce_axis((0, spec.batch), "rn")
    ry = te.reduce_axis((0, spec.out_height), "ry")
    rx = te.reduce_axis((0, spec.out_width), "rx")
    axes = ([rn] if spec.batch > 1 else []) + [ry, rx]
    n = rn if spec.batch > 1 else 0

    def term(o, i, a, b):
        c = (o // cog) * cig + i if spec.groups > 1 else i
        return DY[n, o, ry, rx].astype(ACC_DTYPE) * Xp[n, c, ry * sh + a * dh, rx * sw + b * dw].astype(ACC_DTYPE)

    acc = te.compute(spec.shape("output"), lambda o, i, a, b: te.sum(term(o, i, a, b), axis=axes), name="conv")
    out = te.compute(spec.shape("output"), lambda o, i, a, b: acc[o, i, a, b].astype(spec.dtype), name="out")
    return [X, DY, out]
