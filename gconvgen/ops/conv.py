"""Group conv2d: depthwise (groups == in_channels) and pointwise (1x1) are its special cases.

Stages, by name, which the schedule rules rely on:
  "input_tf32", "weight_tf32"  a TF32 spec's inputs rounded to TF32 (only then),
  "pad"  the zero-padded input (only when there is padding),
  "conv" the accumulation in float32, in natural output-channel order,
  "out"  the epilogue (bias, activation) and the output-channel shuffle as a remap of the store.
"""
from __future__ import annotations

from tvm import te, tirx

from ..spec import KernelSpec
from . import epilogue


def _pad(spec: KernelSpec, X: te.Tensor, fill=None) -> te.Tensor:
    top, left, bottom, right = spec.padding
    if not any(spec.padding):
        return X
    zero = tirx.const(0, spec.dtype) if fill is None else fill
    H, W = spec.height, spec.width
    if spec.layout == "NCHW":
        shape = (spec.batch, spec.in_channels, H + top + bottom, W + left + right)

        def body(n, c, h, w):
            inside = tirx.all(h >= top, h < H + top, w >= left, w < W + left)
            return tirx.if_then_else(inside, X[n, c, h - top, w - left], zero)
    else:
        shape = (spec.batch, H + top + bottom, W + left + right, spec.in_channels)

        def body(n, h, w, c):
            inside = tirx.all(h >= top, h < H + top, w >= left, w < W + left)
            return tirx.if_then_else(inside, X[n, h - top, w - left, c], zero)
    return te.compute(shape, body, name="pad")


def round_to_tf32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """A float32 value rounded to TF32's 10 mantissa bits, to nearest, ties to even (as PTX's
    cvt.rn.tf32.f32; NaN kept, overflow to infinity): the low 13 bits of the pattern cleared after
    adding half of their unit, less one where the kept last bit is even."""
    bits = tirx.reinterpret("uint32", x)
    half = tirx.const(0xFFF, "uint32") + ((bits >> tirx.const(13, "uint32")) & tirx.const(1, "uint32"))
    rounded = tirx.reinterpret("float32", (bits + half) & tirx.const(0xFFFFE000, "uint32"))
    return tirx.Select(tirx.isnan(x), x, rounded)


def _rounded(spec: KernelSpec, t: te.Tensor) -> te.Tensor:
    """t itself, or for a TF32 spec t rounded to TF32 in a stage of its own (which a tensor-core rule
    inlines into its copy of the operand, rounding each value once on its way to shared memory)."""
    if not spec.tf32:
        return t
    return te.compute(t.shape, lambda *i: round_to_tf32(t(*i)), name=f"{t.op.name}_tf32")


def group_conv2d(spec: KernelSpec) -> list[te.Tensor]:
    """[input, weight, (bias), output] of the kernel described by `spec`."""
    acc = epilogue.ACC_DTYPE
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    Wt = te.placeholder(spec.shape("weight"), spec.dtype, name="weight")
    B = te.placeholder(spec.shape("bias"), spec.dtype, name="bias") if spec.has_bias else None
    R = te.placeholder(spec.shape("residual"), spec.dtype, name="residual") if spec.has_residual else None
    Xp = _pad(spec, _rounded(spec, X))
    Wr = _rounded(spec, Wt)
    (sh, sw), (dh, dw), (kh, kw) = spec.stride, spec.dilation, spec.kernel
    cig = spec.in_channels // spec.groups
    cog = spec.out_channels // spec.groups
    rh = te.reduce_axis((0, kh), "rh") if kh > 1 else None
    rw = te.reduce_axis((0, kw), "rw") if kw > 1 else None
    rc = te.reduce_axis((0, cig), "rc") if cig > 1 else None
    axes = [a for a in (rc, rh, rw) if a is not None]
    zero = tirx.const(0, "int32")
    ih = lambda h: h * sh + (rh * dh if rh is not None else zero)  # noqa: E731
    iw = lambda w: w * sw + (rw * dw if rw is not None else zero)  # noqa: E731
    if spec.groups == 1:
        ic = lambda o: rc if rc is not None else zero  # noqa: E731
    else:
        ic = lambda o: (o // cog) * cig + (rc if rc is not None else zero)  # noqa: E731
    rhv = rh if rh is not None else zero
    rwv = rw if rw is not None else zero
    rcv = rc if rc is not None else zero

    def weight(o):
        if spec.weight_block:
            return Wr[o // spec.weight_block, rhv, rwv, rcv, o % spec.weight_block]
        return Wr[o, rcv, rhv, rwv] if spec.weight_layout == "OIHW" else Wr[rhv, rwv, rcv, o]

    if spec.layout == "NCHW":
        def term(n, o, h, w):
            return Xp[n, ic(o), ih(h), iw(w)].astype(acc) * weight(o).astype(acc)
        conv_shape = (spec.batch, spec.out_channels, spec.out_height, spec.out_width)
        conv = te.compute(conv_shape, lambda n, o, h, w: te.sum(term(n, o, h, w), axis=axes) if axes
                          else term(n, o, h, w), name="conv")
    else:
        def term(n, h, w, o):
            return Xp[n, ih(h), iw(w), ic(o)].astype(acc) * weight(o).astype(acc)
        conv_shape = (spec.batch, spec.out_height, spec.out_width, spec.out_channels)
        conv = te.compute(conv_shape, lambda n, h, w, o: te.sum(term(n, h, w, o), axis=axes) if axes
                          else term(n, h, w, o), name="conv")

    C, G = spec.out_channels, spec.shuffle_groups

    def store(n, h, w, c):
        src = epilogue.shuffle_source(c, C, G)
        value = conv[n, src, h, w] if spec.layout == "NCHW" else conv[n, h, w, src]
        skip = None if R is None else R[n, c, h, w] if spec.layout == "NCHW" else R[n, h, w, c]
        return epilogue.apply(spec, value, src, B, skip).astype(spec.dtype)

    if spec.layout == "NCHW":
        Y = te.compute(spec.shape("output"), lambda n, c, h, w: store(n, h, w, c), name="out")
    else:
        Y = te.compute(spec.shape("output"), lambda n, h, w, c: store(n, h, w, c), name="out")
    return [X, Wt] + [t for t in (B, R) if t is not None] + [Y]
