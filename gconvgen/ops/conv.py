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


BAND_TILE = 16     # a banded conv's output columns a product (a tensor core's 16x16 tile)
BAND_ORIGIN = 8    # where a band's input columns begin in its padded rows: 16 bytes of float16 in


def band_lanes(spec: KernelSpec) -> int:
    """Lanes of a vector of the banded conv's padded rows, whose padding test holds for whole vectors:
    the most of 8, 4, 2, 1 that divide the input's width (8 is BAND_ORIGIN)."""
    return next(v for v in (8, 4, 2, 1) if spec.width % v == 0)


def banded_depthwise(spec: KernelSpec) -> list[te.Tensor]:
    """A depthwise conv (KernelSpec.banded) as banded matrix products: out[h, 16 b + l] = sum over
    kernel rows r and band columns j < 32 of pad[h + r, 16 b + j] * band[r, j, l], where band[r, j, l]
    is weight[r, j - l - s] on the band 0 <= j - l - s < kw and zero off it (s = BAND_ORIGIN - left
    padding): each output still sums its kh x kw taps, the other terms are zeros. The padded input
    starts its columns BAND_ORIGIN before the input's (so a tile's 32 columns start 16-byte aligned)
    and holds whole tiles of 16 rows and columns; "conv" covers whole tiles, "out" the output.
    Stages: "pad", "band", "conv", "out"."""
    acc, zero = epilogue.ACC_DTYPE, tirx.const(0, spec.dtype)
    (kh, kw), top, left = spec.kernel, spec.padding[0], spec.padding[1]
    H, W, T = spec.height, spec.width, BAND_TILE
    rows, columns = -(-spec.out_height // T) * T, -(-spec.out_width // T) * T
    shift = BAND_ORIGIN - left
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    Wt = te.placeholder(spec.shape("weight"), spec.dtype, name="weight")
    B = te.placeholder(spec.shape("bias"), spec.dtype, name="bias") if spec.has_bias else None
    R = te.placeholder(spec.shape("residual"), spec.dtype, name="residual") if spec.has_residual else None
    lanes = band_lanes(spec)
    # (the column test on w // lanes: a copy's vectors of `lanes` lie wholly inside or outside)
    Xp = te.compute((spec.batch, spec.in_channels, rows + kh - 1, columns + T), lambda n, c, h, w: tirx.if_then_else(
        tirx.all(h >= top, h < H + top, w // lanes >= BAND_ORIGIN // lanes, w // lanes < (W + BAND_ORIGIN) // lanes),
        X[n, c, h - top, w - BAND_ORIGIN], zero), name="pad")
    band = te.compute((spec.out_channels, kh, 2 * T, T), lambda c, r, j, l: tirx.if_then_else(
        tirx.all(j - l >= shift, j - l < shift + kw), Wt[c, 0, r, j - l - shift], zero), name="band")
    rh, rj = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, 2 * T), "rj")
    conv = te.compute((spec.batch, spec.out_channels, rows, columns), lambda n, c, h, w: te.sum(
        Xp[n, c, h + rh, w // T * T + rj].astype(acc) * band[c, rh, rj, w % T].astype(acc), axis=[rh, rj]),
        name="conv")
    Y = te.compute(spec.shape("output"), lambda n, c, h, w: epilogue.apply(
        spec, conv[n, c, h, w], c, B, None if R is None else R[n, c, h, w]).astype(spec.dtype), name="out")
    return [X, Wt] + [t for t in (B, R) if t is not None] + [Y]


def group_conv2d(spec: KernelSpec) -> list[te.Tensor]:
    """[input, weight, (bias), output] of the kernel described by `spec`."""
    if spec.banded:
        return banded_depthwise(spec)
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
