"""Pooling: the depthwise conv's window, reduced with max, or summed and scaled instead of weighted.

Stages as in conv.py, so the depthwise rules schedule them unchanged: "pad" (lowest-value padding for
max, zeros for average), "conv" (the window max or sum, in float32), "out" (the store: the average's
scale and its activation).
"""
from __future__ import annotations

from tvm import te, tirx

from ..spec import KernelSpec
from .conv import _pad
from . import epilogue
from .epilogue import ACC_DTYPE


def max_pool2d(spec: KernelSpec) -> list[te.Tensor]:
    """[input, output] of the kernel described by `spec` (NCHW or NHWC)."""
    return _pooled(spec, tirx.min_value(spec.dtype), te.max, lambda value, c: value)


def avg_pool2d(spec: KernelSpec) -> list[te.Tensor]:
    """[input, output]: the window mean, padding counted (torch's count_include_pad=True: the divisor is
    always the window's size), then the epilogue's activation."""
    scale = tirx.const(1.0 / (spec.kernel[0] * spec.kernel[1]), ACC_DTYPE)
    return _pooled(spec, None, te.sum, lambda value, c: epilogue.apply(spec, value * scale, c, None))


def _pooled(spec: KernelSpec, fill, reduce, finish) -> list[te.Tensor]:
    """[input, output]: `reduce` (te.max, te.sum) over each window of the input padded with `fill`
    (None: zeros), in float32, then `finish(value, channel)` on the way to the store."""
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    Xp = _pad(spec, X, fill)
    (sh, sw), (dh, dw), (kh, kw) = spec.stride, spec.dilation, spec.kernel
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    if spec.layout == "NCHW":
        def window(n, c, h, w):
            return reduce(Xp[n, c, h * sh + rh * dh, w * sw + rw * dw].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, c, h, w: finish(acc[n, c, h, w], c).astype(spec.dtype),
                         name="out")
    else:
        def window(n, h, w, c):
            return reduce(Xp[n, h * sh + rh * dh, w * sw + rw * dw, c].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, h, w, c: finish(acc[n, h, w, c], c).astype(spec.dtype),
                         name="out")
    return [X, out]
