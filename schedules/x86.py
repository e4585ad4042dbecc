"""x86 rules (AVX2 / AVX-512): the untuned default and the tuner's starting points."""
from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.target import Target

from gconvgen.ops import spec_of

from . import ScheduleRule
from .common import divisor_at_most, has_block, vector_lanes


class DepthwiseNCHW(ScheduleRule):
    """Depthwise conv in NCHW: one channel plane per task, padded into a cache-resident buffer,
    then rows x width-vectors of accumulators in registers, the epilogue fused into the store.

    Does not apply to other layouts or op classes, nor with an output shuffle (the channel
    remap would make the per-channel padded plane the wrong one)."""

    name = "x86.DepthwiseNCHW"

    def __init__(self, rows: int = 8, max_vector: int = 16, unroll_reduction: bool = True) -> None:
        self.rows = rows
        self.max_vector = max_vector
        self.unroll_reduction = unroll_reduction

    def apply(self, func, target: Target, tunable: bool) -> s_tir.Schedule | None:
        spec = spec_of(func)
        if spec is None or spec.op_class != "depthwise" or spec.layout != "NCHW" or spec.shuffle_groups > 1:
            return None
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = min(vector_lanes(target), self.max_vector)
        oh, ow = spec.out_height, spec.out_width
        wi = divisor_at_most(ow, lanes, prefer_multiple_of=4) if ow > lanes else ow
        hi = divisor_at_most(oh, self.rows)
        n, c, h, w = sch.get_loops(out)
        ho, hi_ = sch.split(h, factors=[None, hi])
        wo, wi_ = sch.split(w, factors=[None, wi])
        sch.reorder(n, c, ho, wo, hi_, wi_)
        nc = sch.fuse(n, c)
        sch.parallel(nc)
        sch.vectorize(wi_)
        sch.compute_at(conv, wo)
        loops = sch.get_loops(conv)[3:]  # n and c are fixed by the parallel loop, unit loops dropped
        nred = len(spec.kernel) - list(spec.kernel).count(1)
        spatial, red = loops[: len(loops) - nred], loops[len(loops) - nred:]
        sch.reorder(*red, *spatial)
        if self.unroll_reduction:
            for loop in red:
                sch.unroll(loop)
        if spatial:
            sch.vectorize(spatial[-1])
            for loop in spatial[:-1]:
                sch.unroll(loop)
        if has_block(sch, "pad"):
            pad = sch.get_sblock("pad")
            sch.compute_at(pad, nc)
            s = spec.stride[1]
            padded_width = spec.width + spec.padding[1] + spec.padding[3]
            # Deinterleave columns so that strided taps become contiguous loads; worth it only with
            # a useful vector of outputs (on tiny planes the gather into the buffer costs more).
            if s > 1 and padded_width % s == 0 and spec.out_width >= 8:
                sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, c, h, w % s, w // s))
                wo_, phase = sch.split(sch.get_loops(pad)[-1], factors=[None, s])
                sch.reorder(phase, wo_)
            sch.vectorize(sch.get_loops(pad)[-1])
        if red:
            sch.decompose_reduction(conv, red[0])
        return sch


class GroupConvNCHW(ScheduleRule):
    """Grouped, pointwise and dense conv in NCHW as a blocked direct convolution: a tile of
    output channels (inside one group, so each input value is loaded once for all of them) x a
    vector of output pixels along a row (several rows when rows are short) accumulates in
    registers. The epilogue runs on the tile while it is hot; an output shuffle, whose channel
    remap is no box, runs as one vectorized pass over whole planes. Does not apply to depthwise
    (its own rule) or NHWC."""

    name = "x86.GroupConvNCHW"

    def __init__(self, channel_tile: int = 8, vectors: int = 1) -> None:
        self.channel_tile = channel_tile
        self.vectors = vectors

    def apply(self, func, target: Target, tunable: bool) -> s_tir.Schedule | None:
        spec = spec_of(func)
        if spec is None or spec.op != "conv2d" or spec.op_class == "depthwise" or spec.layout != "NCHW":
            return None
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        cog = spec.out_channels // spec.groups
        oi = divisor_at_most(cog, self.channel_tile)
        n, o, h, w, *red = sch.get_loops(conv)
        # Tiles are whole boxes of (rows x columns): a tile crossing a row end would make the
        # fused epilogue read accumulators of the next tile.
        ow, oh = spec.out_width, spec.out_height
        wi = divisor_at_most(ow, lanes * self.vectors, prefer_multiple_of=lanes) if ow > lanes else ow
        hi = divisor_at_most(oh, max(1, lanes * self.vectors // wi))
        oo, oi_ = sch.split(o, factors=[None, oi])
        ho, hi_ = sch.split(h, factors=[None, hi])
        po, wi_ = sch.split(w, factors=[None, wi])
        sch.reorder(n, oo, ho, po, *red, oi_, hi_, wi_)
        sch.parallel(sch.fuse(n, oo, ho))
        sch.unroll(oi_)
        sch.unroll(hi_)
        sch.vectorize(wi_)
        if spec.shuffle_groups == 1:
            sch.reverse_compute_at(out, po)
            sch.vectorize(sch.get_loops(out)[-1])
        else:  # the shuffle's channel remap is no box: a separate pass over whole planes
            _parallel_vectorize(sch, out, flatten_inner=True)
        if has_block(sch, "pad"):
            _parallel_vectorize(sch, sch.get_sblock("pad"))
        if red:
            sch.decompose_reduction(conv, red[0])
        return sch


class ChannelVectorNHWC(ScheduleRule):
    """Any conv in NHWC (depthwise, grouped, pointwise, dense): vectors run along the output
    channels, which are contiguous in input, HWIO weight and output; a few output pixels of a
    row share each weight vector in registers; rows are parallel. The epilogue (and the output
    shuffle's remap) runs on the tile while it is hot. Does not apply to NCHW."""

    name = "x86.ChannelVectorNHWC"

    def __init__(self, pixels: int = 4, vectors: int = 2) -> None:
        self.pixels = pixels
        self.vectors = vectors

    def apply(self, func, target: Target, tunable: bool) -> s_tir.Schedule | None:
        spec = spec_of(func)
        if spec is None or spec.op != "conv2d" or spec.layout != "NHWC":
            return None
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        n, h, w, o, *red = sch.get_loops(conv)
        oi = self._channel_vector(spec, lanes)
        wi = divisor_at_most(spec.out_width, self.pixels)
        oo, oi_ = sch.split(o, factors=[None, oi])
        wo, wi_ = sch.split(w, factors=[None, wi])
        sch.reorder(n, h, wo, oo, *red, wi_, oi_)
        sch.parallel(sch.fuse(n, h))
        sch.unroll(wi_)
        sch.vectorize(oi_)
        if spec.shuffle_groups == 1:
            sch.reverse_compute_at(out, oo)
        else:
            sch.reverse_compute_at(out, wo)
        sch.vectorize(sch.get_loops(out)[-1])
        if has_block(sch, "pad"):
            _parallel_vectorize(sch, sch.get_sblock("pad"))
        if red:
            sch.decompose_reduction(conv, red[0])
        return sch

    def _channel_vector(self, spec, lanes: int) -> int:
        """Output channels per tile: whole registers where the channels allow (odd widths such as
        24 lanes make LLVM split badly), and, for grouped convs, inside one group, so the input
        channel is one broadcast for the whole vector rather than a gather."""
        cog = spec.out_channels // spec.groups
        span = spec.out_channels if spec.groups == 1 or spec.op_class == "depthwise" else cog
        for width in (lanes * self.vectors, lanes, lanes // 2, lanes // 4):
            if span % width == 0:
                return width
        return divisor_at_most(span, lanes)


class ChannelShuffle(ScheduleRule):
    """Channel shuffle as a copy: NCHW moves whole channel planes with vector loads and stores;
    NHWC permutes channels inside each pixel (rows parallel). Applies only to channel_shuffle."""

    name = "x86.ChannelShuffle"

    def apply(self, func, target: Target, tunable: bool) -> s_tir.Schedule | None:
        spec = spec_of(func)
        if spec is None or spec.op != "channel_shuffle":
            return None
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        _parallel_vectorize(sch, sch.get_sblock("out"), flatten_inner=spec.layout == "NCHW")
        return sch


def _parallel_vectorize(sch: s_tir.Schedule, block, flatten_inner: bool = False) -> None:
    """An elementwise block at the root: outer loops parallel, innermost (or, with flatten_inner,
    the last two fused) vectorized."""
    loops = sch.get_loops(block)
    inner = sch.fuse(*loops[-2:]) if flatten_inner else loops[-1]
    outer = loops[:-2] if flatten_inner else loops[:-1]
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    sch.vectorize(inner)


RULES: list[ScheduleRule] = [DepthwiseNCHW(), GroupConvNCHW(), ChannelVectorNHWC(), ChannelShuffle()]
