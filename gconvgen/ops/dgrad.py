"""The input gradient of a group conv2d: a transposed group conv. Input pixel h receives from the
taps a whose output row y = (h + pad - a*dil) / stride is whole and inside the output:

    grad_input[n, c, h, w] = sum_{o in group(c), a, b} grad_output[n, o, y, x] * weight[o, c % cig, a, b]

The output gradient is zero-padded so every reachable y, x is inside it; what is left of the
condition is which taps land on a pixel, which depends only on (h mod stride, w mod stride): a
schedule that splits pixels by that phase and unrolls phases and taps leaves no condition at all.

Stages: "pad" (the padded output gradient), "conv" (float32 accumulation), "out" (the store).
"""
from __future__ import annotations

from tvm import te, tirx

from ..spec import KernelSpec
from .epilogue import ACC_DTYPE


def _reach(spec: KernelSpec, axis: int) -> tuple[int, int]:
    """Rows (axis 0) or columns (axis 1) of output gradient padding needed before and after."""
    size, out = (spec.height, spec.out_height) if axis == 0 else (spec.width, spec.out_width)
    pad, k, s, d = spec.padding[axis], spec.kernel[axis], spec.stride[axis], spec.dilation[axis]
    lowest = (pad - (k - 1) * d) // s            # floor: the smallest y any pixel reads
    highest = (size - 1 + pad) // s
    return max(0, -lowest), max(0, highest - (out - 1))


def conv2d_input_grad(spec: KernelSpec) -> list[te.Tensor]:
    """[grad_output, weight, grad_input] of the kernel described by `spec` (NCHW, OIHW)."""
    DY = te.placeholder(spec.shape("grad_output"), spec.dtype, name="grad_output")
    Wt = te.placeholder(spec.shape("weight"), spec.dtype, name="weight")
    (top, bottom), (left, right) = _reach(spec, 0), _reach(spec, 1)
    OH, OW = spec.out_height, spec.out_width
    zero = tirx.const(0, spec.dtype)

    def padded(n, o, y, x):
        inside = tirx.all(y >= top, y < OH + top, x >= left, x < OW + left)
        return tirx.if_then_else(inside, DY[n, o, y - top, x - left], zero)

    DYp = te.compute((spec.batch, spec.out_channels, OH + top + bottom, OW + left + right), padded, name="pad")
    (sh, sw), (dh, dw), (kh, kw) = spec.stride, spec.dilation, spec.kernel
    ph, pw = spec.padding[0], spec.padding[1]
    cig, cog = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    ro = te.reduce_axis((0, cog), "ro")
    ra = te.reduce_axis((0, kh), "ra")
    rb = te.reduce_axis((0, kw), "rb")

    def term(n, c, h, w):
        o = (c // cig) * cog + ro if spec.groups > 1 else ro
        i = c % cig if spec.groups > 1 else c
        fy, fx = h + ph - ra * dh, w + pw - rb * dw
        hit = tirx.all(tirx.floormod(fy, sh) == 0, tirx.floormod(fx, sw) == 0)
        value = DYp[n, o, tirx.floordiv(fy, sh) + top, tirx.floordiv(fx, sw) + left].astype(ACC_DTYPE) \
            * Wt[o, i, ra, rb].astype(ACC_DTYPE)
        return tirx.if_then_else(hit, value, tirx.const(0, ACC_DTYPE))

    acc = te.compute(spec.shape("output"), lambda n, c, h, w: te.sum(term(n, c, h, w), axis=[ro, ra, rb]),
                     name="conv")
    out = te.compute(spec.shape("output"), lambda n, c, h, w: acc[n, c, h, w].astype(spec.dtype), name="out")
    return [DY, Wt, out]
