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
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    Xp = _pad(spec, X, tirx.min_value(spec.dtype))
    (sh, sw), (dh, dw), (kh, kw) = spec.stride, spec.dilation, spec.kernel
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    if spec.layout == "NCHW":
        def window(n, c, h, w):
            return te.max(Xp[n, c, h * sh + rh * dh, w * sw + rw * dw].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, c, h, w: acc[n, c, h, w].astype(spec.dtype), name="out")
    else:
        def window(n, h, w, c):
            return te.max(Xp[n, h * sh + rh * dh, w * sw + rw * dw, c].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, h, w, c: acc[n, h, w, c].astype(spec.dtype), name="out")
    return [X, out]


def avg_pool2d(spec: KernelSpec) -> list[te.Tensor]:
    """[input, output]: the window mean, padding counted (torch's count_include_pad=True: the divisor is
    always the window's size), then the epilogue's activation."""
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    Xp = _pad(spec, X)
    (sh, sw), (kh, kw) = spec.stride, spec.kernel
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    scale = tirx.const(1.0 / (kh * kw), ACC_DTYPE)
    if spec.layout == "NCHW":
        def window(n, c, h, w):
            return te.sum(Xp[n, c, h * sh + rh, w * sw + rw].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, c, h, w: epilogue.apply(
            spec, acc[n, c, h, w] * scale, c, None).astype(spec.dtype), name="out")
    else:
        def window(n, h, w, c):
            return te.sum(Xp[n, h * sh + rh, w * sw + rw, c].astype(ACC_DTYPE), axis=[rh, rw])
        acc = te.compute(spec.shape("output"), window, name="conv")
        out = te.compute(spec.shape("output"), lambda n, h, w, c: epilogue.apply(
            spec, acc[n, h, w, c] * scale, c, None).astype(spec.dtype), name="out")
    return [X, out]
