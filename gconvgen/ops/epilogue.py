"""Epilogues applied to an accumulator value on its way to the output store."""
from __future__ import annotations

from tvm import te, tirx

from ..spec import KernelSpec

ACC_DTYPE = "float32"  # accumulators and epilogue math, whatever the storage dtype


def _c(v: float) -> tirx.PrimExpr:
    return tirx.const(v, ACC_DTYPE)


def apply(spec: KernelSpec, value: tirx.PrimExpr, channel: tirx.PrimExpr, bias: te.Tensor | None,
          residual: tirx.PrimExpr | None = None) -> tirx.PrimExpr:
    """`value` of output channel `channel` (in conv order) after the epilogue's steps, in their order
    (`residual`: the residual input's value at this output position)."""
    def clip6(v):
        return tirx.min(tirx.max(v, _c(0)), _c(6))

    for e in spec.epilogue:
        if e == "bias":
            value = value + bias[channel].astype(ACC_DTYPE)
        elif e == "residual":
            value = value + residual.astype(ACC_DTYPE)
        elif e == "relu":
            value = tirx.max(value, _c(0))
        elif e == "relu6":
            value = clip6(value)
        elif e == "hardswish":
            value = value * clip6(value + _c(3)) * _c(1.0 / 6.0)
        elif e == "hardsigmoid":
            value = clip6(value + _c(3)) * _c(1.0 / 6.0)
        elif e == "sigmoid":
            value = _c(1) / (_c(1) + exp(-value))
        elif e == "silu":
            value = value / (_c(1) + exp(-value))
        elif e == "gelu":
            value = value * normal_cdf(value)
    return value


def exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x of a float32 in plain arithmetic (the Cephes expf method): x = n ln2 + r with |r| <= ln2/2,
    e^r = 1 + r + r^2 q(r), 2^n built in the exponent bits. q is a cubic fitted for least relative
    error, 1.6e-7 in float32 arithmetic (about 3 ulp: SiLU and sigmoid land within 2.3e-7 of float64,
    torch's float32 ops within 1.7e-7); Cephes' quintic, one ulp, made EfficientNet-B0's SiLU layers 8 %
    slower (in-process A/B, AVX2: 14.4 vs 13.2 ms).
    tirx.exp would become a libm call per lane on CPUs, which costs more than a depthwise conv's whole
    tile; this vectorizes. x is clamped to [-87.3, 88.3], where e^x stays a normal float (1.2e-38 to
    2.4e38), so beyond it 1 / (1 + e^-x) is torch's 1, or within 1e-38 of its 0.
    One expression tree, x and r repeated in it: LLVM merges the repeats (Let bindings ran no faster),
    and MetaSchedule's feature extraction refuses a Let."""
    x = tirx.min(tirx.max(x, _c(-87.3)), _c(88.3))
    n = tirx.floor(x * _c(1.4426950408889634) + _c(0.5))
    r = x - n * _c(0.693359375) - n * _c(-2.12194440e-4)   # ln 2 in two parts: n * hi is exact
    p = _c(8.31315852701664e-3)
    for k in (4.1889868676662445e-2, 1.666710525751114e-1, 4.9999234080314636e-1):
        p = p * r + _c(k)
    p = p * r * r + r + _c(1)
    two_n = tirx.reinterpret(ACC_DTYPE, (n.astype("int32") + 127) << 23)
    return p * two_n


# erfc(z) e^(z^2) as a polynomial in t = 1 / (1 + z/2), z >= 0, fitted for least relative error (3e-8;
# 2.7e-7 in float32 arithmetic), constant term first
_ERFCX = (-5.997060725349002e-06, 0.2822210192680359, 0.28110215067863464, 0.2497721165418625,
          0.18132422864437103, 0.016914496198296547, 0.22141800820827484, -0.44167160987854004,
          0.26399579644203186, -0.05507024750113487)


def normal_cdf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """The standard normal CDF, erfc(-x / sqrt 2) / 2, in plain arithmetic (exact GELU is x times it):
    the tail erfc(|x| / sqrt 2) / 2 as e^(-z^2) (`exp`) times a polynomial in 1 / (1 + z/2), so it
    keeps its relative accuracy far out: within 1.2e-6 of float64 for |x| <= 4, then as float32's
    rounding of z^2 allows (1.2e-5 at -12; torch's float32 GELU, 1 + erf, is 4 % off at -5 and 0 from
    -7.5); 1 minus the tail for x >= 0. z stops at 10, where the tail is below any float32."""
    z = tirx.min(tirx.abs(x) * _c(0.7071067811865476), _c(10))
    t = _c(1) / (_c(1) + _c(0.5) * z)
    r = _c(_ERFCX[-1])
    for k in reversed(_ERFCX[:-1]):
        r = r * t + _c(k)
    tail = _c(0.5) * r * exp(-(z * z))
    return tirx.Select(x >= _c(0), _c(1) - tail, tail)


def shuffle_source(channel: tirx.PrimExpr, channels: int, groups: int) -> tirx.PrimExpr:
    """Channel shuffle as an index remap: output channel j*G+g holds input channel g*(C/G)+j."""
    if groups == 1:
        return channel
    return (channel % groups) * (channels // groups) + channel // groups
