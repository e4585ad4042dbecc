"""ARM rules (AArch64 NEON, 128-bit vectors: 4 fp32 lanes, 32 vector registers).

The loop structures are the x86 ones (they are target-neutral: vector widths come from the target);
what changes is the register tile. NEON has twice AVX-512's registers counted in lanes per register
a quarter, so tiles are taller and hold more vectors, in the style of XNNPACK's and ncnn's kernels:
a depthwise tile is 4 output rows x 8 columns (8 accumulators, 9 taps x 3 rows of inputs live),
a pointwise tile 4 output channels x 16 pixels (16 accumulators), and the channel-packed NHWC tile
4 pixels x 8 channels.
"""
from __future__ import annotations

from tvm.target import Target

from . import x86
from .common import divisor_at_most


class DepthwiseNCHW(x86.DepthwiseNCHW):
    """Depthwise conv in NCHW on NEON: one channel plane per task, padded into a buffer, then
    register tiles of up to 4 output rows x 8 columns (two q-registers a row; 4-wide rows take
    one). Does not apply to other layouts or op classes, nor with an output shuffle."""

    name = "arm.DepthwiseNCHW"

    def __init__(self) -> None:
        super().__init__(rows=4, max_vector=4, band_rows=None)   # x86's partitioned rows: untimed on NEON

    def tile(self, spec, lanes: int, target: Target) -> tuple[int, int]:
        ow = spec.out_width   # (rows sized for NEON's 32 registers)
        wi = divisor_at_most(ow, 2 * lanes, prefer_multiple_of=lanes) if ow > 2 * lanes else ow
        return divisor_at_most(spec.out_height, self.rows), wi


class PointwiseNCHW(x86.PointwiseNCHW):
    """1x1 stride-1 conv in NCHW as a GEMM over flattened pixels, tiles of 4 output channels x
    4 four-lane pixel vectors (16 of the 32 registers accumulate). Does not apply when the pixel
    count is no multiple of 4, nor with an output shuffle."""

    name = "arm.PointwiseNCHW"

    def __init__(self) -> None:
        # reduce_vectors=1: no blocked reduction for channel-reducing layers, measured on x86 only
        super().__init__(channel_tile=4, vectors=4, reduce_vectors=1)


class GroupConvNCHW(x86.GroupConvNCHW):
    """Grouped, pointwise and dense conv in NCHW as a blocked direct convolution: 4 output
    channels of one group x 2 four-lane vectors of a row (or several short rows). Not depthwise
    (its own rule), not NHWC."""

    name = "arm.GroupConvNCHW"

    def __init__(self) -> None:
        super().__init__(channel_tile=4, vectors=2)


class ChannelVectorNHWC(x86.ChannelVectorNHWC):
    """Any conv in NHWC, channel-packed: 4-lane vectors along the output channels, 4 output pixels
    of a row x 2 channel vectors per tile (8 accumulators). Does not apply to NCHW."""

    name = "arm.ChannelVectorNHWC"

    def __init__(self) -> None:
        # x86's 7-pixel tiles (and unrolled window taps) would need more than NEON's 32 registers
        # x86's group window copy and blocked weight: untimed on NEON
        super().__init__(pixels=4, vectors=2, unroll_taps=False, group_input=False, blocked_weight=False)


class ChannelShuffle(x86.ChannelShuffle):
    """Channel shuffle as a vectorized copy (plane moves in NCHW, in-pixel permutes in NHWC)."""

    name = "arm.ChannelShuffle"


RULES = [DepthwiseNCHW(), PointwiseNCHW(), GroupConvNCHW(), ChannelVectorNHWC(), ChannelShuffle()]
