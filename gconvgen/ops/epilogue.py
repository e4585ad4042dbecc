"""Epilogues applied to an accumulator value on its way to the output store."""
from __future__ import annotations

from tvm import te, tirx

from ..spec import KernelSpec

ACC_DTYPE = "float32"  # accumulators and epilogue math, whatever the storage dtype


def apply(spec: KernelSpec, value: tirx.PrimExpr, channel: tirx.PrimExpr, bias: te.Tensor | None,
          residual: tirx.PrimExpr | None = None) -> tirx.PrimExpr:
    """`value` of output channel `channel` (in conv order) after the epilogue's steps, in their order
    (`residual`: the residual input's value at this output position)."""
    dt = ACC_DTYPE
    for e in spec.epilogue:
        if e == "bias":
            value = value + bias[channel].astype(dt)
        elif e == "residual":
            value = value + residual.astype(dt)
        elif e == "relu":
            value = tirx.max(value, tirx.const(0, dt))
        elif e == "relu6":
            value = tirx.min(tirx.max(value, tirx.const(0, dt)), tirx.const(6, dt))
        elif e == "hardswish":
            clipped = tirx.min(tirx.max(value + tirx.const(3, dt), tirx.const(0, dt)),
                               tirx.const(6, dt))
            value = value * clipped * tirx.const(1.0 / 6.0, dt)
    return value


def shuffle_source(channel: tirx.PrimExpr, channels: int, groups: int) -> tirx.PrimExpr:
    """Channel shuffle as an index remap: output channel j*G+g holds input channel g*(C/G)+j."""
    if groups == 1:
        return channel
    return (channel % groups) * (channels // groups) + channel // groups
