"""Channel shuffle (ShuffleNet): a pure index remap of the channel axis."""
from __future__ import annotations

from tvm import te

from ..spec import KernelSpec
from .epilogue import shuffle_source


def channel_shuffle(spec: KernelSpec) -> list[te.Tensor]:
    C, G = spec.in_channels, spec.groups
    X = te.placeholder(spec.shape("input"), spec.dtype, name="input")
    if spec.layout == "NCHW":
        Y = te.compute(spec.shape("output"), lambda n, c, h, w: X[n, shuffle_source(c, C, G), h, w], name="out")
    else:
        Y = te.compute(spec.shape("output"), lambda n, h, w, c: X[n, h, w, shuffle_source(c, C, G)], name="out")
    return [X, Y]
