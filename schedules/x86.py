"""x86 rules (AVX2 / AVX-512): the untuned default and the tuner's starting points."""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

from gconvgen.spec import EXP_ACTIVATIONS

from . import ScheduleRule
from .common import (divisor_at_most, dtype_bits, epilogue_in_conv_order, flatten_pixels, for_registers, has_block,
                     split, vector_lanes, vector_registers)


class GlobalPoolNCHW(ScheduleRule):
    """A pool whose window is the whole unpadded plane (a network's global pool) in NCHW: each plane's
    window rows summed (or maxed) as one vector of the row's width (`rfactor` of the column loop),
    then that vector's lanes, a plane per task iteration. DepthwiseNCHW chained all 49 adds of a
    7x7 plane on one scalar (in-process A/B, AVX2, 2 threads, µs: 2048 channels at 7x7, batch 8,
    67 vs 116; 1280 channels 45 vs 84, at batch 1 7.0 vs 9.5; torch's channels_last 48-103, 12).
    Does not apply to other windows, NHWC (ChannelVectorNHWC's channel vectors), or one-row or
    one-column planes."""

    name = "x86.GlobalPoolNCHW"

    def applies(self, spec, target: Target) -> bool:
        return (spec.op_class == "pool" and spec.layout == "NCHW" and spec.kernel == (spec.height, spec.width)
                and not any(spec.padding) and min(spec.kernel) > 1)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        *_, columns = sch.get_loops(conv)
        rows = sch.rfactor(columns, 4)   # its loops: n, c, h, w, the columns (now spatial), the rows
        planes = sch.fuse(*sch.get_loops(rows)[:2])
        sch.parallel(planes)
        sch.reverse_compute_at(conv, planes)
        sch.reverse_compute_at(out, planes)
        *_, row, column = sch.get_loops(rows)
        sch.unroll(row)
        sch.vectorize(column)
        sch.decompose_reduction(rows, row)
        sch.unroll(sch.get_loops(conv)[-1])


class DepthwiseNCHW(ScheduleRule):
    """Depthwise conv (and pooling, the same window) in NCHW: one channel plane per task, padded into a
    cache-resident buffer, then rows x width-vectors of accumulators in registers, the epilogue fused
    into the store. Rows that are no multiple of the vector (56, 28) take bands of whole rows instead,
    their columns partitioned into full vectors and a tail (`_whole_rows`).

    Does not apply to other layouts or op classes, nor with an output shuffle (the channel
    remap would make the per-channel padded plane the wrong one)."""

    name = "x86.DepthwiseNCHW"

    def __init__(self, rows: int = 8, max_vector: int = 16, unroll_reduction: bool = True,
                 band_rows: int | None = 4) -> None:
        self.rows = rows
        self.max_vector = max_vector
        self.unroll_reduction = unroll_reduction
        self.band_rows = band_rows

    def applies(self, spec, target: Target) -> bool:
        return spec.op_class in ("depthwise", "pool") and spec.layout == "NCHW" and spec.shuffle_groups == 1

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        lanes = min(vector_lanes(target), self.max_vector)
        contiguous_taps = spec.stride == (1, 1) or (spec.stride == (2, 2) and _deinterleaved(spec))
        if (self.band_rows and contiguous_taps and spec.dilation == (1, 1) and min(spec.kernel) > 1
                and spec.out_width > lanes and spec.out_width % lanes):
            self._whole_rows(sch, spec, target, lanes, tunable)
            return
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        hi, wi = self.tile(spec, lanes, target)
        n, c, h, w = sch.get_loops(out)
        ho, hi_ = split(sch, h, hi, tunable, max_inner=16)
        wo, wi_ = split(sch, w, wi, tunable, max_inner=2 * lanes)
        sch.reorder(n, c, ho, wo, hi_, wi_)
        nc = sch.fuse(n, c)
        sch.parallel(nc)
        sch.vectorize(wi_)
        sch.compute_at(conv, wo, preserve_unit_loops=True)
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
        _padded_plane(sch, spec, nc)
        if red:
            sch.decompose_reduction(conv, red[0])

    def _whole_rows(self, sch: s_tir.Schedule, spec, target: Target, lanes: int, tunable: bool) -> None:
        """Output rows that are no multiple of the vector (56, 28), at stride 1 or with a deinterleaved
        stride 2: a band of `band_rows` whole rows is one register tile, its columns partitioned into
        full vectors and one narrower tail (56 = 3 x 16 + 8), so the bulk runs at the full width where
        a divisor would give 8 or 14 lanes. In-process A/B: ConvNeXt's 7x7 at 56x56 325 -> 233 µs, at
        28x28 167 -> 138; MobileNetV2's 3x3 144x56 124 -> 107, its stride-2 144x56 121 -> 98.
        Bands scale with the register file: AVX2's 16 registers take half the rows (two A/B runs there,
        2 rows vs 4: ConvNeXt's 7x7 192x28 398-404 vs 438-441 µs, MobileNetV2's stride-2 144x56 133-159
        vs 141-178, its 3x3 192x28 100-118 vs 99-137)."""
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        n, c, h, w = sch.get_loops(out)
        band = for_registers(self.band_rows, target)
        ho, _ = split(sch, h, divisor_at_most(spec.out_height, band), tunable, max_inner=8)
        nc = sch.fuse(n, c)
        sch.parallel(nc)
        sch.vectorize(w)
        sch.compute_at(conv, ho, preserve_unit_loops=True)
        _padded_plane(sch, spec, nc)   # before the partition: after it, compute_at put the copy after its reader
        *_, rows, cols, _, _ = sch.get_loops(conv)   # ..., rows, columns, the two tap loops
        sch.reorder(cols, rows)
        full = spec.out_width // lanes * lanes
        bulk, tail = sch.loop_partition(cols, factors=[full, None])
        for part in (bulk, tail):
            block = sch.get_child_blocks(part)[0]
            while sch.get_child_blocks(block):   # the partition wraps the conv in blocks of its own
                block = sch.get_child_blocks(block)[0]
            cols_, rows_, kh, kw = sch.get_loops(block)[-4:]
            if part is bulk:
                vectors, vector = sch.split(cols_, factors=[None, lanes])
                sch.reorder(kh, kw, rows_, vectors, vector)
                sch.unroll(vectors)
            else:   # (split wants a loop from 0; the tail is one vector anyway)
                vector = cols_
                sch.reorder(kh, kw, rows_, vector)
            if self.unroll_reduction:
                sch.unroll(kh)
                sch.unroll(kw)
            sch.unroll(rows_)
            sch.vectorize(vector)
            sch.decompose_reduction(block, kh)

    def tile(self, spec, lanes: int, target: Target) -> tuple[int, int]:
        """Output rows x columns of one register tile. Whole 8-lane halves where the row allows
        (56 -> 8); else the widest divisor (28 -> 14, which beats 4-lane vectors by a quarter here).
        Rows of whole vectors take half the rows on AVX2's 16 registers (two A/B runs there: ConvNeXt's
        7x7 96x56 721-840 vs 800-952 µs, MobileNetV2's 32x112 251-264 vs 284-286, its stride-2
        96x112 367-447 vs 420-480); narrower rows keep them (7x7 planes: 7 rows 74-75 vs 80-81 µs)."""
        ow = spec.out_width
        wi = divisor_at_most(ow, lanes, prefer_multiple_of=8) if ow > lanes else ow
        rows = self.rows if ow < lanes else for_registers(self.rows, target)
        return divisor_at_most(spec.out_height, rows), wi


def _padded_plane(sch: s_tir.Schedule, spec, plane) -> None:
    """The padded input plane, made by each plane's task (cache-resident). Strided convs deinterleave
    its columns so that strided taps become contiguous loads; worth it only with a useful vector of
    outputs (on tiny planes the gather into the buffer costs more). The copy loop stays scalar with
    the phases unrolled: LLVM's loop vectorizer turns it into wide loads plus shuffles, where TVM's
    vectorize would gather lane by lane (1.3-1.6x faster on the 28- and 56-wide stride-2 layers here)."""
    if not has_block(sch, "pad"):
        return
    pad = sch.get_sblock("pad")
    sch.compute_at(pad, plane, preserve_unit_loops=True)
    s = spec.stride[1]
    if _deinterleaved(spec):
        sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, c, h, w % s, w // s))
        _, phase = sch.split(sch.get_loops(pad)[-1], factors=[None, s])
        sch.unroll(phase)
    else:
        sch.vectorize(sch.get_loops(pad)[-1])


def _deinterleaved(spec) -> bool:
    """Whether the padded planes of a strided depthwise conv, pool or grouped conv (GroupConvNCHW's
    `_deinterleaves`) are stored column phase by phase."""
    s = spec.stride[1]
    return s > 1 and (spec.width + spec.padding[1] + spec.padding[3]) % s == 0 and spec.out_width >= 8


class PointwiseNCHW(ScheduleRule):
    """1x1 stride-1 unpadded conv in NCHW (pointwise, grouped pointwise): a GEMM over flattened
    pixels, out[o, p] = sum_i w[o, i] x[i, p]. The pixel axis is contiguous in input and output,
    so vectors run across row ends (a 7- or 14-wide row would waste the register); a tile of
    output channels x a few pixel vectors accumulates in registers, pixel tiles outermost so one
    input tile stays in L1 for every channel tile. The epilogue runs on the tile while it is hot.
    Layers that keep or reduce the channel count (input channels at least the output's), on planes
    of an even number of vectors, take a larger tile (6 channels x 4 vectors) and run the reduction in blocks of `block` input channels
    over all channel tiles of a pixel tile, so the input block stays in L1 (MobileNetV2's 144->24 at
    56x56 123 vs 167-172 us, 96->24 69-79 vs 100-104, ResNeXt's 256->256 at 56x56 2.3-2.4 vs 2.9-3.0
    ms); expanding layers stay faster with the small tile (24->144 at 56x56 127-131 vs 161-168 us),
    but for those that add a residual from `block` input channels on (`blocked_residual`).
    The larger tile's vectors scale with the register file: 24 accumulators fit AVX-512's 32
    registers, on AVX2's 16 they spilled (6 x 2 vectors there: 144->24 at 56x56 280-340 vs 870 us).
    An output shuffle runs in that epilogue too, iterated in the conv's channel order (ShuffleNet
    v1's 3-group 240->60 at 28x28 80 vs 177 µs as a separate pass; batch 8 0.93 vs 1.86 ms).
    Does not apply when the pixel count is no multiple of the vector."""

    name = "x86.PointwiseNCHW"

    def __init__(self, channel_tile: int = 4, vectors: int = 2, reduce_tile: int = 6, reduce_vectors: int = 4,
                 block: int = 64, blocked_residual: bool = True, stream_bytes: int = 4 << 20, panel: int = 196,
                 stream_block: int = 8, stream_outputs: int = 64, pack_outputs: int = 128) -> None:
        self.channel_tile = channel_tile
        self.vectors = vectors
        self.reduce_tile = reduce_tile
        self.reduce_vectors = reduce_vectors
        self.block = block
        self.blocked_residual = blocked_residual
        self.stream_bytes = stream_bytes
        self.panel = panel
        self.stream_block = stream_block
        self.stream_outputs = stream_outputs
        self.pack_outputs = pack_outputs

    def applies(self, spec, target: Target) -> bool:
        return (_plain_pointwise(spec, "NCHW") and spec.op_class != "depthwise"
                and (spec.height * spec.width) % vector_lanes(target) == 0)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        epilogue_in_conv_order(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        n, o, p, r = flatten_pixels(sch, conv, out, spec.width)
        cig, cog = spec.in_channels // spec.groups, spec.out_channels // spec.groups
        pixel_vectors = spec.height * spec.width // lanes
        # (28x28 planes are 49 vectors: a one-vector tile, which loses blocked: 192->64 168 vs 152 us)
        reduce_vectors = for_registers(self.reduce_vectors, target)
        # Expanding layers that add a residual run blocked too once the input channels fill a block:
        # the small tile's tasks, one channel tile each, ran ResNeXt's 128->256 at 56x56 (+residual)
        # in 2.9-3.2 ms, 0.94-0.96x torch, blocked 2.1-2.4; 64->256 1.5 vs 1.1 ms, 256->512 at 28x28
        # 1.9-2.1 vs 1.7-2.0 (in-process A/B, AVX2, 2 threads, two runs); without the residual the
        # small tile stays ahead (64->256 0.76-0.80 vs 0.87 ms), and so it does with few input
        # channels (MobileNetV2's 24->144 with its residual).
        expanding_residual = self.blocked_residual and "residual" in spec.epilogue and cig >= self.block
        blocked = (cig >= cog or expanding_residual) and divisor_at_most(pixel_vectors, reduce_vectors) > 1
        input_bytes = spec.batch * spec.in_channels * spec.height * spec.width * dtype_bits(spec.dtype) // 8
        if blocked and self.stream_bytes and input_bytes >= self.stream_bytes and cog <= self.stream_outputs:
            self._streamed(sch, spec, (n, o, p, r), lanes, tunable)
            return
        oi = divisor_at_most(cog, self.reduce_tile if blocked else self.channel_tile)
        vectors = divisor_at_most(pixel_vectors, reduce_vectors if blocked else self.vectors)
        # Channels with no divisor near the tile (256, 58) take the whole tile anyway, the last one
        # partial: split with a predicate that TVM's LoopPartition pass peels off the full tiles, so
        # they run unpredicated (in-process A/B, AVX2, 2 threads: ShuffleNet v2's 58->58 at 28x28
        # 47 vs 69 µs, 2 channels a tile before; ResNeXt's 256->256 at 56x56 4.1-5.8 vs 4.4-6.0 ms,
        # 256->128 2.0-3.4 vs 2.2-3.6, 512->256 at 28x28 2.0-2.4 vs 2.1-2.6), with blocks of 128 input
        # channels (blocks of 64 lost there: 256->128 3.7 vs 3.6 ms).
        ragged = blocked and cog > self.reduce_tile and oi <= self.reduce_tile - 2
        if ragged:
            oo, oi_ = sch.split(o, factors=[None, self.reduce_tile])
            sch.annotate(oo, "pragma_loop_partition_hint", 1)
        else:
            oo, oi_ = split(sch, o, oi, tunable, max_inner=16)
        pq, pl = sch.split(p, factors=[None, lanes])
        po, pv = split(sch, pq, vectors, tunable, max_inner=8)
        if blocked:
            block = divisor_at_most(cig, self.block * (2 if ragged else 1))
            ro, ri = split(sch, r, block, tunable, max_inner=256)
            sch.reorder(n, po, ro, oo, ri, oi_, pv, pl)
            tile, reduction = sch.fuse(n, po), ro
            if spec.groups == 1 and cog >= self.pack_outputs:
                self._pack_input(sch, spec, ro)
        else:
            sch.reorder(n, po, oo, r, oi_, pv, pl)
            tile, reduction = sch.fuse(n, po, oo), r
        _pixel_tile_tail(sch, conv, out, tile, [oi_, pv], pl, reduction)

    @staticmethod
    def _pack_input(sch: s_tir.Schedule, spec, block_loop) -> None:
        """Each block's input panel (its input channels x the tile's pixels) copied into one contiguous
        buffer first, which every channel tile then reads: in place its rows lie a plane apart, a page
        or more from 28x28 on, so a block touched as many pages as channels. In-process A/B, AVX2, 2
        threads, ms, batch 1: 512->256 at 28x28 1.70 vs 1.91; batch 8: 512->512 28.6 vs 31.0, 512->256
        14.1 vs 15.2, 256->256 at 56x56 30.0 vs 33.2. Only with `pack_outputs` output channels or more,
        whose tiles share the copy (batch 1: 256->128 at 56x56 2.43 vs 2.67, 256->256 3.76 vs 4.16,
        512->512 at 28x28 3.53 vs 3.74; 116->116 at 28x28 the same, 58->58 48 vs 45 µs, 32->16 at
        112x112 199 vs 176). Grouped layers read each group's own channels, no one range: they keep
        reading in place."""
        width = spec.width
        copy = sch.cache_read(sch.get_sblock("conv"), 0, "global")
        sch.transform_layout(copy, ("write", 0), lambda n, c, h, w: (n, c, h * width + w))
        sch.transform_block_layout(copy, lambda n, c, h, w: (n, c, h * width + w))
        sch.compute_at(copy, block_loop, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(copy)[-1])

    def _streamed(self, sch: s_tir.Schedule, spec, loops, lanes: int, tunable: bool) -> None:
        """A blocked layer whose input outgrows the caches (`stream_bytes`: batch 8 of MobileNetV2's
        112x112 and 56x56 planes) comes from memory, and the blocked tile read each of its 32-144
        input rows a tile's two cache lines at a time: more streams than the prefetchers follow. Here
        a task is a panel of up to `panel` pixel vectors (1568 pixels), and the reduction runs in
        blocks of `stream_block` input channels, each sweeping the whole panel (8 rows of 6 KB) over
        the small tile (`channel_tile` x `vectors`), the panel's accumulators in L2. In-process A/B,
        AVX2, 2 threads, batch 8: 32->16 at 112x112 1.96 vs 4.77 ms (torch's channels_last 1.53),
        96->24 at 56x56 1.34 vs 2.61 (1.30), 144->24 2.29 vs 3.98 (4.34), 256->64 9.6 vs 11.1; batch 4:
        144->24 0.87 vs 1.14, 32->16 0.81 vs 2.15, ShuffleNet v1's 3-group 240->60 at 28x28, batch 8,
        0.70-1.06 vs 1.22-1.47. Cache-resident (batch 1) it lost up to 7 %, and so it did with more
        than `stream_outputs` output channels, where the blocked tile's reuse of each input line
        counts more (batch 8: ResNeXt's 512->256 at 28x28 16.2 vs 14.9 ms, 512->512 31.9 vs 29.0,
        256->256 at 56x56 34.5 vs 30.8; 256->128 16.0 vs 16.3)."""
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        n, o, p, r = loops
        cog, cig = spec.out_channels // spec.groups, spec.in_channels // spec.groups
        pixel_vectors = spec.height * spec.width // lanes
        panel = divisor_at_most(pixel_vectors, self.panel)
        vectors = divisor_at_most(panel, self.vectors)
        oo, oi = split(sch, o, divisor_at_most(cog, self.channel_tile), tunable, max_inner=16)
        pq, pl = sch.split(p, factors=[None, lanes])
        pp, pm, pv = split(sch, pq, (panel // vectors, vectors), tunable, max_inner=8)
        ro, ri = split(sch, r, divisor_at_most(cig, self.stream_block), tunable, max_inner=64)
        sch.reorder(n, pp, ro, oo, pm, ri, oi, pv, pl)
        _pixel_tile_tail(sch, conv, out, sch.fuse(n, pp), [oi, pv], pl, ro)


class PointwiseWideTileNCHW(ScheduleRule):
    """Dense 1x1 stride-1 unpadded conv in NCHW on planes whose pixel vectors have no divisor from 2
    to 4 but one from 5 to 7 (28x28 = 49 vectors of 16), with enough channels to feed it (input x
    output at least `min_work`): there PointwiseNCHW is left with a 1-vector tile. Here a register
    tile of 4 output channels x up to 7 pixel vectors (28 accumulators: per input channel, 7 loads
    and 4 broadcasts feed 28 FMAs); tasks are groups of up to `group` channel tiles, and the
    reduction runs in blocks of `block` input channels, each sweeping all pixel tiles, so one block
    of input (64 channels x 112 pixels, 28 KB) stays in L1 while the group's channel tiles use it.
    Here (2 cores, AVX-512): 512->512 at 28x28 2.4-2.8 ms vs 3.4-3.8 (torch channels_last 2.3-2.4),
    1024->256 2.6 vs 3.8, 512->256 1.2 vs 1.8, 192->64 109 vs 156 us; on fewer channels the small
    tile's kernels stay faster (192->32 75 vs 102 us). Does not apply to other planes, groups, or
    output channels no multiple of the tile."""

    name = "x86.PointwiseWideTileNCHW"

    def __init__(self, channel_tile: int = 4, vectors: int = 7, group: int = 8, block: int = 64,
                 min_work: int = 12288) -> None:
        self.channel_tile = channel_tile
        self.vectors = vectors
        self.group = group
        self.block = block
        self.min_work = min_work

    def applies(self, spec, target: Target) -> bool:
        lanes = vector_lanes(target)
        pixels = spec.height * spec.width
        if not (_plain_pointwise(spec, "NCHW") and spec.groups == 1 and spec.weight_layout == "OIHW"
                and pixels % lanes == 0 and spec.out_channels % self.channel_tile == 0
                and spec.in_channels * spec.out_channels >= self.min_work):
            return False
        vectors = pixels // lanes
        return divisor_at_most(vectors, 4) == 1 and divisor_at_most(vectors, self.vectors) > 4

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        epilogue_in_conv_order(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        n, o, p, r = flatten_pixels(sch, conv, out, spec.width)
        tiles = spec.out_channels // self.channel_tile
        # Groups of channel tiles, at least two tasks (one per core here).
        group = max([g for g in range(1, self.group + 1) if tiles % g == 0 and tiles // g >= 2] or [1])
        oo, oi = sch.split(o, factors=[None, self.channel_tile])
        og, ot = split(sch, oo, group, tunable, max_inner=16)
        pq, pl = sch.split(p, factors=[None, lanes])
        po, pv = sch.split(pq, factors=[None, divisor_at_most(spec.height * spec.width // lanes, self.vectors)])
        ro, ri = split(sch, r, divisor_at_most(spec.in_channels, self.block), tunable, max_inner=256)
        sch.reorder(n, og, ro, po, ot, ri, oi, pv, pl)
        _pixel_tile_tail(sch, conv, out, sch.fuse(n, og), [oi, pv], pl, ro)


class _PackedWeightRule(ScheduleRule):
    """A rule for kernels that take their weight packed (`packed_layout`: HWIO, or blocked HWIO<t>)
    where torch holds OIHW: it applies to that variant of the specs it `_fits`, and asks callers for
    that variant (`preferred`)."""

    def _fits(self, spec, target: Target) -> bool:
        raise NotImplementedError

    def packed_layout(self, spec, target: Target) -> str:
        return "HWIO"

    def applies(self, spec, target: Target) -> bool:
        return self._fits(spec, target) and spec.weight_layout == self.packed_layout(spec, target)

    def preferred(self, spec, target: Target):
        from dataclasses import replace
        if spec.weight_layout == spec.default_weight_layout and self._fits(spec, target):
            return replace(spec, weight_layout=self.packed_layout(spec, target))
        return None


class PointwisePackedNCHW(_PackedWeightRule):
    """1x1 stride-1 unpadded dense conv in NCHW whose pixel count is no multiple of the vector (14x14,
    7x7 planes), with the weight in HWIO (input channel major, output channels contiguous): vectors
    run along output channels, so they stay full however few the pixels. A tile of a few channel
    vectors x a few pixels accumulates in registers; each step loads the channel vectors of one
    input channel and broadcasts its pixels. The store is a transpose (scalar), cheap next to the
    reduction when input channels are many. Weights in OIHW would need that transpose on every
    call, so `preferred` asks callers that hold the weight (gconvgen.torch_ops) for a packed copy.
    Here (2 cores, AVX-512): 232->232 at 7x7 46 us vs 100-150 us pixel-vectorized and 70 us torch.
    With full-vector tiles, tasks are channel tiles and the reduction runs in blocks of `block`
    input channels, each over all pixel tiles of the task: a tile's input column (one cache line per
    input channel) then stays in L1 within a block, where over all of them it spilled (1024->1024 at
    14x14: 2.1-2.4 vs 4.1-5.6 ms; 384->64 86 vs 114 us; 576->96 123 vs 140; 64->384 63-66 vs 74-86).
    The weight comes blocked by the channel vector, HWIO<vector> (`packed_layout`): each vector's
    weights are one contiguous panel, which the prefetchers stream, where in plain HWIO a task's rows
    lie out_channels x 4 bytes apart, a 4 KB page or more from 1024 channels on, and every row missed
    (1024->1024 at 14x14 2.2 vs 2.9 ms, at parity with torch's channels_last oneDNN; 2048->1024 at
    7x7 1.1 vs 1.6-1.7 ms; MobileNetV2's 320->1280 at 7x7 186-199 vs 255 us, 960->320 145-153 vs 176).
    The tile's accumulators scale with the register file (24 of AVX-512's 32, 12 of AVX2's 16: 384->64
    at 14x14 167 vs 300 us there), and are at least the FMAs in flight where channels allow.
    Batches of deep layers that would run 1-pixel tiles copy their input pixel-major first
    (`_transposes_input`). Output channels of no whole vectors (but of half ones) take plain HWIO
    and whole-vector tiles with a partial last one (`_ragged`). Does not apply to other weight
    layouts, groups, or channel counts no multiple of half a vector."""

    name = "x86.PointwisePackedNCHW"
    pixel_weight_bytes: int | None = 8192   # a block's weight panel where tiles are one pixel
    transpose_min_channels = 768   # input channels whose reduction pays for the pixel-major copy
    max_pixels = 14 * 14   # a task's panel of images, where they are one GEMM axis

    def __init__(self, vectors: int = 3, accumulators: int = 24, block: int = 64, in_flight: int = 8) -> None:
        self.vectors = vectors
        self.accumulators = accumulators   # with 32 registers; scaled to the target's
        self.block = block
        self.in_flight = in_flight   # independent FMAs that hide the latency: 2 units x 4 cycles

    def packed_layout(self, spec, target: Target) -> str:
        lanes = vector_lanes(target)   # channels of no whole vectors read plain HWIO rows (`_ragged`)
        return f"HWIO{lanes}" if spec.out_channels % lanes == 0 else "HWIO"

    def _fits(self, spec, target: Target) -> bool:
        lanes = vector_lanes(target)
        pixels = spec.height * spec.width
        return (_plain_pointwise(spec, "NCHW") and spec.groups == 1 and spec.out_channels % max(1, lanes // 2) == 0
                and pixels % lanes != 0 and not (pixels == 1 and spec.in_channels % lanes == 0))   # MatVecNCHW's

    def _tile(self, spec, target: Target, pixels: int, tunable: bool) -> tuple[int, int]:
        """(channel vectors, pixels) of the register tile, over a task's `pixels`."""
        lanes = vector_lanes(target)
        # Vectors per tile: the most (up to `vectors`) that divide the channel vectors, as a partial
        # last tile costs predicates in every tile (1280 channels at 7x7: 2-vector tiles 229-239 us,
        # 3-vector 279-304). Where none does, a partial tile still beats 1-vector tiles: 232 channels
        # = 29 vectors of 8 run as 3-vector tiles in 45 us, as 1-vector ones in 70.
        channel_vectors = spec.out_channels // lanes
        per_tile = divisor_at_most(channel_vectors, self.vectors)
        accumulators = for_registers(self.accumulators, target)
        if per_tile == 1 and not tunable:
            per_tile = self.vectors
            # the partial tile's predicate needs a register beyond the accumulators, weight vectors
            # and broadcast: on AVX2 232->232 at 14x14 ran 3 x 4 tiles in 314 µs, 2 x 4 in 197 (batch
            # 8: 3712 vs 2561); 7x7's 3 x 1 keep 3 (74 vs 95)
            while (per_tile > 1 and per_tile * divisor_at_most(pixels, max(1, accumulators // per_tile))
                   + per_tile + 1 >= vector_registers(target)):
                per_tile -= 1
        pi = divisor_at_most(pixels, max(1, accumulators // per_tile))
        if per_tile * pi < self.in_flight:
            # Too few accumulators to cover the FMA latency (7x7's pixels divide by 7 only, which
            # AVX2's 12 accumulators leave at 1 pixel a tile): more channel vectors instead
            # (960->320 at 7x7 on AVX2: 8 vectors x 1 pixel 445-486 us, 2 x 1 730-870).
            per_tile = min([d for d in range(per_tile, accumulators // pi + 1)
                            if channel_vectors % d == 0 and d * pi >= self.in_flight] or [per_tile])
        return per_tile, pi

    def _transposes_input(self, spec, target: Target) -> bool:
        """Batches of deep layers whose images take 1-pixel tiles (7x7 on AVX2): the input is first
        copied pixel-major (NHWC) in a pass of its own, and tasks run `_task_pixels` panels of images
        as PointwisePackedNHWC's do, with its tiles of several pixels (in-process A/B at batch 8,
        2 threads, µs: 2048->1024 at 7x7 14658-15369 vs 21078-28752, 1024->2048 15557-21142 vs
        21534-28163, 960->320 2204-2221 vs 2389-2419, 960->160 1107 vs 1208). With fewer input
        channels the copy and the transposed store weigh more (464->1024 3854 vs 3488, 160->960
        1481 vs 1200)."""
        plane = spec.height * spec.width
        return (spec.layout == "NCHW" and spec.batch > 1 and spec.in_channels >= self.transpose_min_channels
                and spec.out_channels % vector_lanes(target) == 0 and plane <= self.max_pixels
                and self._tile(spec, target, plane, False)[1] == 1)

    def _task_pixels(self, spec, transposed: bool) -> int:
        """The pixels of the GEMM's pixel axis p that one task's tiles run over: an image's, or with
        the input pixel-major (NHWC, or `transposed`), a panel of whole images up to `max_pixels`."""
        plane = spec.height * spec.width
        if spec.layout == "NHWC" or transposed:
            return plane * divisor_at_most(spec.batch, self.max_pixels // plane)
        return plane

    def _flatten(self, sch: s_tir.Schedule, spec, panel: int) -> None:
        """The batch's pixels as one GEMM axis cut into panels of `panel` pixels of whole images: the
        conv's loops become (panel, o, p, r), (n, o, h * W + w, r) where a panel is an image. The
        accumulator is pixel-major, so a tile's channel vectors are contiguous in it."""
        width, plane = spec.width, spec.height * spec.width
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")

        def panel_of(n, h, w):   # (panel, pixel in it)
            pixel = n * plane + h * width + w
            return pixel // panel, pixel % panel

        if spec.layout == "NCHW":
            sch.transform_layout(conv, ("write", 0), lambda n, o, h, w: (*panel_of(n, h, w), o))
            sch.transform_block_layout(conv, lambda n, o, h, w, r: (panel_of(n, h, w)[0], o, panel_of(n, h, w)[1], r))
            sch.transform_block_layout(out, lambda n, o, h, w: (panel_of(n, h, w)[0], o, panel_of(n, h, w)[1]))
        else:
            sch.transform_layout(conv, ("write", 0), lambda n, h, w, o: (*panel_of(n, h, w), o))
            sch.transform_block_layout(conv, lambda n, h, w, o, r: (panel_of(n, h, w)[0], o, panel_of(n, h, w)[1], r))
            sch.transform_block_layout(out, lambda n, h, w, c: (*panel_of(n, h, w), c))

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        epilogue_in_conv_order(sch, spec)
        lanes = vector_lanes(target)
        transposed = self._transposes_input(spec, target)
        pixels = self._task_pixels(spec, transposed)
        copy = None
        if transposed:
            copy = sch.cache_read(sch.get_sblock("conv"), 0, "global")
            sch.transform_layout(copy, ("write", 0), lambda n, c, h, w: (n, h, w, c))
        self._flatten(sch, spec, pixels)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        if spec.out_channels % lanes:
            self._ragged(sch, spec, target, tunable)
            return
        per_tile, pi = self._tile(spec, target, pixels, tunable)
        n, o, p, r = sch.get_loops(conv)
        o_vectors, ol = sch.split(o, factors=[None, lanes])
        if tunable:
            o_rest, ov = split(sch, o_vectors, per_tile, True, 4)
        else:
            o_rest, ov = sch.split(o_vectors, factors=[None, per_tile])
        po, pi_ = split(sch, p, pi, tunable, max_inner=32)
        # Tasks are channel tiles: each streams its weight panel once, block by block, over all
        # pixel tiles (which also helps few input channels: 96->576 at 14x14 102-135 vs 119-170 us).
        block = self.block
        if pi == 1 and self.pixel_weight_bytes:
            # One-pixel tiles read the block's weight panel again for every pixel: the panel stays
            # within a quarter of L1, so 7x7's 8-vector tiles on AVX2 take 32 input channels a block
            # (in-process A/B, µs, batch 1: 320->1280 349-381 vs 406-410, 960->160 143-307 vs 169-362,
            # 576->160 89 vs 101, 960->320 262-321 vs 285-351, 1024->2048 2553-2713 vs 2761-2887;
            # batch 8: 960->160 1125 vs 1348, 464->1024 3289 vs 3702, 320->1280 3485 vs 3925).
            block = min(block, self.pixel_weight_bytes // (per_tile * lanes * dtype_bits(spec.dtype) // 8))
        ro, ri = split(sch, r, divisor_at_most(spec.in_channels, block), tunable, max_inner=256)
        sch.reorder(n, o_rest, ro, po, ri, pi_, ov, ol)
        _pixel_tile_tail(sch, conv, out, sch.fuse(n, o_rest), [pi_, ov], ol, ro, vector_store=False)
        if copy is not None:   # channel vectors of each pixel, gathered from the planes as they stream
            n, c, h, w = sch.get_loops(copy)
            c_vectors, c_lanes = sch.split(c, factors=[None, lanes])
            pixel = sch.fuse(h, w)
            sch.reorder(n, c_vectors, pixel, c_lanes)
            sch.parallel(sch.fuse(n, c_vectors))
            sch.vectorize(c_lanes)

    def _ragged(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        """Output channels of no whole vectors (ShuffleNet v2's 116 on AVX2): tiles of two whole
        vectors over plain HWIO rows, the last tile partial, which TVM's LoopPartition pass peels off
        (`pragma_loop_partition_hint`) so that the others run unpredicated. Tasks are one image's
        channel tiles (a hinted loop cannot be fused), the images in turn. In-process A/B, AVX2,
        2 threads: 116->116 at 14x14 57-93 vs 111-122 µs in 4-lane half vectors, batch 8 500-510 vs
        764-1061 (torch's channels_last 552-585, which half vectors cannot reach); with the batch in
        the tasks LLVM had spilled half-vector tiles' accumulators (1540 µs at batch 8), and so it
        did 3-vector tiles here (1414)."""
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        n, o, p, r = sch.get_loops(conv)
        o_rest, ov, ol = sch.split(o, factors=[None, 2, lanes])
        sch.annotate(o_rest, "pragma_loop_partition_hint", 1)
        pixels = divisor_at_most(spec.height * spec.width, for_registers(self.accumulators, target) // 2)
        po, pi = split(sch, p, pixels, tunable, max_inner=32)
        sch.reorder(o_rest, po, r, pi, ov, ol)
        _pixel_tile_tail(sch, conv, out, o_rest, [pi, ov], ol, r, vector_store=False)


class PointwisePackedNHWC(PointwisePackedNCHW):
    """PointwisePackedNCHW's GEMM for 1x1 stride-1 unpadded dense convs in NHWC on planes of up to
    14x14 whose weight is 1 MiB or more: tasks are channel tiles, each streaming its HWIO<vector>
    weight panel once, block by block, over all pixels. ChannelVectorNHWC's tasks are rows, and each
    streamed the whole weight, which outgrows a core's L2 (512 KB on this AVX2 EPYC): ResNeXt's
    2048->1024 at 7x7 4.1 vs 6.6 ms, 1024->2048 at 7x7 5.2 vs 6.7, 512->1024 at 14x14 3.3 vs 4.0,
    1024->512 at 14x14 3.1-3.4 vs 3.7-4.1, MobileNetV2's 320->1280 at 7x7 692 vs 791 µs (in-process
    A/B). Smaller weights stay with the row tiles (256->512 at 28x28 3.3 vs 3.0 ms, 16->96 at 112x112
    1.34 vs 0.72), and so do larger planes, where a task's accumulators (all its pixels x a tile's
    channels) outgrow L1 (512->512 at 28x28 7.9 vs 6.9 ms). The epilogue stores whole channel
    vectors. At batch > 1 the images' pixels are one GEMM axis cut into panels of whole images, up to
    `max_pixels` (`_task_pixels`), so a task streams its weight panel once for several images and 7x7
    planes get pixel tiles of 4 where 49 pixels allowed 1; then smaller weights gain too (in-process
    A/B at batch 8, 2 threads, µs: 960->320 at 7x7 1860-2509 vs 2246-2552, 2048->1024 at 7x7 12661 vs
    17317, 960->160 979 vs 1310, 160->960 927 vs 1207, 232->232 375 vs 448 and at 14x14 1471 vs 1791,
    576->96 at 14x14 1382 vs 1693; 14x14 layers with a panel of one image the same). Does not apply to
    grouped or shuffled convs, nor to channel counts no multiple of the vector."""

    name = "x86.PointwisePackedNHWC"
    pixel_weight_bytes = None   # a pixel's input channels are one run, which the prefetchers stream
    # (64-channel blocks on 7x7 1-pixel tiles: 2048->1024 3209 vs 3314 µs with 32, 960->320 338 vs 360)
    min_weight_bytes = 1 << 20

    def _fits(self, spec, target: Target) -> bool:
        weight_bytes = spec.in_channels * spec.out_channels * dtype_bits(spec.dtype) // 8
        return (_plain_pointwise(spec, "NHWC") and spec.groups == 1 and spec.shuffle_groups == 1
                and spec.out_channels % vector_lanes(target) == 0
                and 1 < spec.height * spec.width <= self.max_pixels
                and (weight_bytes >= self.min_weight_bytes or spec.batch > 1))

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        super().schedule(sch, spec, target, tunable)
        sch.vectorize(sch.get_loops(sch.get_sblock("out"))[-1])


class MatVecNCHW(ScheduleRule):
    """1x1 conv on 1x1 images in NCHW (a classifier's matrix-vector product, gconvgen.nn.Linear at
    batch 1): each output is a dot product of a contiguous weight row with the input, so vectors run
    along input channels (rfactor), a few rows at a time, and streaming the weight (the cost: it is
    read once) is sequential. The lanes are summed once per output. Does not apply to larger images,
    groups, the packed weight, or input channels no multiple of the vector."""

    name = "x86.MatVecNCHW"

    def __init__(self, rows: int = 8) -> None:
        self.rows = rows

    def applies(self, spec, target: Target) -> bool:
        return (_plain_pointwise(spec, "NCHW") and spec.height * spec.width == 1 and spec.groups == 1
                and spec.shuffle_groups == 1
                and spec.weight_layout == "OIHW" and spec.in_channels % vector_lanes(target) == 0)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        n, o, h, w, r = sch.get_loops(conv)
        ro, ri = sch.split(r, factors=[None, vector_lanes(target)])
        partial = sch.rfactor(ri, factor_axis=4)   # partial[n, o, h, w, lane]: one vector per row
        n, o, h, w, ro, ri = sch.get_loops(partial)
        oo, oi = split(sch, o, divisor_at_most(spec.out_channels, self.rows), tunable, max_inner=16)
        tile = _register_tile(sch, partial, [n, oo], [ro], [h, w, oi], ri)
        sch.reverse_compute_at(conv, tile)
        sch.reverse_compute_at(out, tile)


class GroupConvNCHW(ScheduleRule):
    """Grouped, pointwise and dense conv in NCHW as a blocked direct convolution: a tile of
    output channels (inside one group, so each input value is loaded once for all of them) x a
    vector of output pixels along a row (several rows when rows are short) accumulates in
    registers. The epilogue runs on the tile while it is hot; an output shuffle, whose channel
    remap is no box, runs as one vectorized pass over whole planes. Does not apply to depthwise
    (its own rule) or NHWC.

    Strided grouped convs (`_deinterleaves`) take a task per image and group, which copies the
    group's padded input planes with their columns deinterleaved, phase by phase, as
    DepthwiseNCHW does: a row vector's strided taps are then contiguous loads where they were
    gathers lane by lane. ResNeXt's g32 256 channels at 56x56 stride 2 (8 channels a group,
    in-process A/B here, 2 cores, AVX-512): 256-260 vs 460-466 us (torch's better layout 456)."""

    name = "x86.GroupConvNCHW"
    min_tasks = 16   # images x groups that keep the cores busy when each is one task

    def __init__(self, channel_tile: int = 8, vectors: int = 1) -> None:
        self.channel_tile = channel_tile
        self.vectors = vectors

    def applies(self, spec, target: Target) -> bool:
        return spec.op == "conv2d" and spec.op_class != "depthwise" and spec.layout == "NCHW"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
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
        deinterleave = self._deinterleaves(spec)
        if deinterleave:   # a task per image and group, which copies its padded planes phase by phase
            group, o = sch.split(o, factors=[spec.groups, cog])
        oo, oi_ = split(sch, o, oi, tunable, max_inner=4 * lanes)
        ho, hi_ = split(sch, h, hi, tunable, max_inner=8)
        po, wi_ = split(sch, w, wi, tunable, max_inner=2 * lanes)
        if deinterleave:
            sch.reorder(n, group, oo, ho, po, *red, oi_, hi_, wi_)
            task = sch.fuse(n, group)
            sch.parallel(task)
            for loop in red[1:]:
                sch.unroll(loop)
        else:
            sch.reorder(n, oo, ho, po, *red, oi_, hi_, wi_)
            sch.parallel(sch.fuse(n, oo, ho))
        sch.unroll(oi_)
        sch.unroll(hi_)
        sch.vectorize(wi_)
        if spec.shuffle_groups == 1:
            sch.reverse_compute_at(out, po, preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(out)[-1])
        else:  # the shuffle's channel remap is no box: a separate pass over whole planes
            _parallel_vectorize(sch, out, flatten_inner=True)
        if deinterleave:
            _padded_plane(sch, spec, task)
        elif has_block(sch, "pad"):
            _parallel_vectorize(sch, sch.get_sblock("pad"))
        if red:
            sch.decompose_reduction(conv, red[0])

    def _deinterleaves(self, spec) -> bool:
        """Whether the taps are strided and a group's planes make a task: grouped convs of enough
        images x groups (a dense conv's one task an image would leave cores idle), no output shuffle
        (its separate pass wants the tile loops as they are)."""
        return (spec.groups > 1 and spec.batch * spec.groups >= self.min_tasks and spec.shuffle_groups == 1
                and any(spec.padding) and _deinterleaved(spec))


class GroupConvPackedNCHW(_PackedWeightRule):
    """Grouped conv in NCHW on small planes (output rows narrower than a vector: 14 and 7 wide), and
    image stems (a dense conv of at most 4 input channels), with the weight packed: as
    PointwisePackedNCHW, vectors run along a group's output channels, so they stay full however
    narrow the rows; a row of a few output pixels x the channel vectors accumulates in registers,
    each step loading the weight vectors and broadcasting one input value per pixel (strided
    taps are plain scalar loads, where row vectors would gather). The store is a transpose (scalar);
    with an e^x activation the epilogue runs on channel vectors and scatters them instead
    (`_channel_vector_store`): EfficientNet's SiLU stem 3->32 at 224 1664 vs 995 µs, batch 8 20.9 vs
    12.7 ms (in-process A/B, AVX2), where with relu the grouped layers ran 5-14 % slower that way at batch 8.
    `preferred` asks the torch ops for the packed weight.
    Here (2 cores, AVX-512), ResNeXt's 32-group 3x3 layers: 512 channels at 14x14 171 vs 247 us
    row-vectorized, 1024 at 7x7 246 vs 327, 512 at 28x28 stride 2 175 vs 434; ShuffleNet v1's
    960->240 (3 groups) 1x1 at 7x7 60 vs 119; stems: MobileNetV2's 3->32 3x3 s2 at 224 168-188 vs
    304 us, ResNeXt's 3->64 7x7 s2 1.2 vs 2.5 ms. Does not apply to other weight layouts, depthwise,
    groups whose output channels are no multiple of the vector, nor, with 32 registers, 1x1 convs on
    planes wider than half a vector (14x14 1x1: 54 vs 41 us row-vectorized). The weight comes blocked by
    the vector, HWIO<lanes>, as for PointwisePackedNCHW (1024 channels at 7x7: 214 vs 253 us warm,
    234 vs 317 cold; 3-8% on the smaller layers).
    With AVX2's 16 registers the tile is halved, and grouped layers whose rows fill no
    whole vectors take this rule too, where the row rule ran 7-lane vectors: ResNeXt's g32 256
    channels at 56x56 stride 2 494 vs 1155 us, 256 at 28x28 757 vs 961, 512 at 14x14 585 vs 840
    (torch 835-885, 685); so do grouped 1x1s on planes of no whole vectors, in tiles of 14 pixels
    (`pointwise_pixels`, 14 accumulators) x 1 vector: ShuffleNet v1's 480->120 at 14x14 77 vs 167 µs
    (batch 8: 0.61 vs 1.40 ms, torch 1.1), 960->240 at 7x7 108 vs 137 (0.77 vs 1.05 ms, torch 0.80).
    An output shuffle runs in the tile's epilogue, iterated in the conv's channel order."""

    name = "x86.GroupConvPackedNCHW"

    def packed_layout(self, spec, target: Target) -> str:
        return f"HWIO{vector_lanes(target)}"

    def __init__(self, pixels: int = 14, vectors: int = 1, stem_pixels: int = 7, stem_vectors: int = 2,
                 pointwise_pixels: int = 14) -> None:
        self.pixels = pixels
        self.vectors = vectors
        self.pointwise_pixels = pointwise_pixels
        self.stem_pixels = stem_pixels
        self.stem_vectors = stem_vectors

    def _fits(self, spec, target: Target) -> bool:
        lanes = vector_lanes(target)
        stem = spec.groups == 1 and spec.in_channels <= 4 and spec.kernel != (1, 1)
        narrow = spec.out_width < lanes or (spec.out_width % lanes and vector_registers(target) < 32)
        # 1x1s on planes of whole vectors are PointwiseNCHW's (ShuffleNet v1's 60->240 at 28x28 60 vs 83 µs)
        pointwise_here = 2 * spec.out_width <= lanes or (
            vector_registers(target) < 32 and spec.out_height * spec.out_width % lanes)
        small_planes = (spec.groups > 1 and spec.op_class != "depthwise" and narrow
                        and (spec.kernel != (1, 1) or pointwise_here))
        return (spec.op == "conv2d" and spec.layout == "NCHW"
                and (spec.out_channels // spec.groups) % lanes == 0 and (stem or small_planes))

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        epilogue_in_conv_order(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        cog = spec.out_channels // spec.groups
        # The accumulator is pixel-major, so a tile's channel vectors are contiguous in it.
        sch.transform_layout(conv, ("write", 0), lambda n, o, h, w: (n, h, w, o))
        n, o, h, w, *red = sch.get_loops(conv)
        o_vectors, ol = sch.split(o, factors=[None, lanes])
        # tiles stay inside a group, so one input value is the broadcast for all their channels
        pixels, vectors = (self.pixels, self.vectors) if spec.groups > 1 else (self.stem_pixels, self.stem_vectors)
        shrink = 32 // vector_registers(target)   # tiles are made for 32 registers: AVX2 has 16
        if spec.kernel == (1, 1):   # no taps, no predicates: 14 accumulators fit AVX2's registers
            pixels, vectors = self.pointwise_pixels, 1
        elif vectors >= shrink:   # fewer channel vectors first (stems: 7 pixels x 1 vector 618 vs 872 us at 7 x 2)
            vectors //= shrink
        else:
            pixels = max(1, pixels // shrink)
        o_rest, ov = split(sch, o_vectors, divisor_at_most(cog // lanes, vectors), tunable, max_inner=4)
        wo, wi = split(sch, w, divisor_at_most(spec.out_width, pixels), tunable, max_inner=16)
        tile = _register_tile(sch, conv, [n, o_rest, h, wo], red, [wi, ov], ol)
        sch.reverse_compute_at(out, tile, preserve_unit_loops=True)
        if spec.activation in EXP_ACTIVATIONS:
            _channel_vector_store(sch, out, lanes)
        if has_block(sch, "pad"):
            if spec.groups > 1:   # a tap outside the image is one predicated scalar load
                sch.compute_inline(sch.get_sblock("pad"))   # (1024 channels at 7x7: 307-368 -> 192-224 µs)
            else:   # a stem's 7x7 taps on a 224 image pay more for the predicates than for a padded copy
                _parallel_vectorize(sch, sch.get_sblock("pad"))


class DepthwisePackedNCHW(_PackedWeightRule):
    """Padded depthwise conv in NCHW on narrow planes (output rows of 7 or 14, no multiple of the
    vector): vectors run along channels instead of rows, so they stay full. A task takes one vector
    of channels and copies their padded planes into a channel-last tile, vector-wide stores gathering
    one value from each plane; a register tile of a row of up to `cols` output pixels x the channel
    vector then runs each tap as one weight vector (the weight packed HWIO, `preferred`) and one
    input vector a pixel, and the epilogue stores it back plane by plane. In-process A/B, AVX2, 2 threads, against
    DepthwiseNCHW's 7-lane row vectors: ConvNeXt's 7x7 768x7 52-54 vs 96 µs (batch 8 395 vs 732),
    384x14 100 vs 173 (712 vs 1282); MobileNetV2's 3x3 576x14 stride 2 29 vs 54 (368 vs 475), 960x7
    26 vs 33 (182-230 vs 250-280), 384x14 39 vs 49; ShuffleNet v2's 232x7 7.7 vs 10.0. Its 116
    channels in half vectors were no faster (batch 8: 5 % slower), so channels fill whole vectors.
    Untimed with AVX-512, whose 16 lanes cover 14-wide rows with one masked vector. Does not apply
    to pools, unpadded convs, channel multipliers, shuffles, rows of 16 or more (DepthwiseNCHW's
    whole-row bands), or channels no multiple of the vector."""

    name = "x86.DepthwisePackedNCHW"

    def __init__(self, cols: int = 8, max_width: int = 16) -> None:
        self.cols = cols
        self.max_width = max_width

    def packed_layout(self, spec, target: Target) -> str:
        return "HWIO"

    def _fits(self, spec, target: Target) -> bool:
        lanes = vector_lanes(target)
        return (spec.op == "conv2d" and spec.op_class == "depthwise" and spec.layout == "NCHW"
                and spec.shuffle_groups == 1 and spec.in_channels == spec.out_channels and any(spec.padding)
                and spec.out_width < self.max_width and spec.out_width % lanes and spec.out_channels % lanes == 0)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out, pad = sch.get_sblock("conv"), sch.get_sblock("out"), sch.get_sblock("pad")
        # channel-last accumulator and padded tile, the conv iterated pixel by pixel
        sch.transform_layout(conv, ("write", 0), lambda n, c, h, w: (n, h, w, c))
        sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, h, w, c))
        sch.transform_block_layout(conv, lambda n, c, h, w, kh, kw: (n, h, w, c, kh, kw))
        conv = sch.get_sblock("conv")
        n, c, h, w = sch.get_loops(out)
        co, ci = sch.split(c, factors=[None, vector_lanes(target)])
        wo, wi = split(sch, w, divisor_at_most(spec.out_width, self.cols), tunable, max_inner=16)
        sch.reorder(n, co, h, wo, wi, ci)
        task = sch.fuse(n, co)
        sch.parallel(task)
        sch.vectorize(ci)
        sch.compute_at(conv, wo, preserve_unit_loops=True)
        sch.compute_at(pad, task, preserve_unit_loops=True)
        *_, rows, cols, lanes_, kh, kw = sch.get_loops(conv)
        sch.reorder(kh, kw, rows, cols, lanes_)
        for loop in (kh, kw, rows, cols):
            sch.unroll(loop)
        sch.vectorize(lanes_)
        sch.decompose_reduction(conv, kh)
        # the copy row by row, a channel vector per pixel (channel-innermost: 732 -> 395 µs on the
        # 7x7 768x7 at batch 8, against a scalar copy plane by plane)
        *_, channels, prow, pcol = sch.get_loops(pad)
        sch.reorder(prow, pcol, channels)
        sch.vectorize(channels)


class ChannelVectorNHWC(ScheduleRule):
    """Any conv in NHWC (depthwise, grouped, pointwise, dense): vectors run along the output
    channels, which are contiguous in input, HWIO weight and output; a few output pixels of a
    row share each weight vector in registers; rows are parallel, or tiles where rows are fewer than
    `few_rows`. The epilogue (and the output
    shuffle's remap) runs on the tile while it is hot. With 32 registers a tile takes up to 7 pixels
    x 2 channel vectors: on AVX-512, with 4 pixels each weight vector served too few (960->320 at
    7x7 595 -> 337 µs, ShuffleNet v1's grouped 480->120 at 14x14 239 -> 126, ResNeXt's 32-group 3x3
    at 14x14 454 -> 286); with 16 (AVX2) the tile is sized to the registers (`_tile`). The weight
    comes blocked by the tile's channels, HWIO<t> (`preferred`). Depthwise and pooling windows also unroll a row's taps, so each input vector is loaded
    once for every pixel it serves (ConvNeXt's 7x7 layers 1.4-1.5x faster here, 384 channels at
    14x14 160 -> 106 µs; 3x3 ones the same or up to 16% faster). Grouped convs with padding copy
    each tile's window of its group's input first (`group_input`). Does not apply to NCHW."""

    name = "x86.ChannelVectorNHWC"

    def __init__(self, pixels: int = 7, vectors: int = 2, unroll_taps: bool = True, group_input: bool = True,
                 blocked_weight: bool = True, few_rows: int = 8, one_pixel_vectors: int = 8) -> None:
        self.pixels = pixels
        self.vectors = vectors
        self.unroll_taps = unroll_taps
        self.group_input = group_input
        self.blocked_weight = blocked_weight
        self.few_rows = few_rows
        self.one_pixel_vectors = one_pixel_vectors

    def applies(self, spec, target: Target) -> bool:
        return (spec.op == "conv2d" or spec.op_class == "pool") and spec.layout == "NHWC"

    def preferred(self, spec, target: Target):
        from dataclasses import replace
        block = self._weight_block(spec, target)
        if block and spec.weight_layout == spec.default_weight_layout:
            return replace(spec, weight_layout=f"HWIO{block}")
        return None

    def _weight_block(self, spec, target: Target) -> int:
        """The output channels of a tile, as the block of the HWIO<t> weight it prefers; 0 for none.
        In plain HWIO a tile's weight rows lie out_channels apart, a 4 KB page for 1024 channels, so
        a 3x3 grouped tile's 288 rows fell in a few L1 sets; blocked, they are one contiguous panel.
        None for depthwise convs and pools (a row of taps is already contiguous) nor for 1x1 convs
        padded to whole vectors (`_pad_channels`)."""
        lanes = vector_lanes(target)
        if (not self.blocked_weight or spec.op != "conv2d" or spec.layout != "NHWC" or spec.op_class == "depthwise"
                or self._pads_channels(spec, lanes)):
            return 0
        _, (count, width) = self._tile(spec, target, self._span(spec), lanes)
        return count * width

    def _tile(self, spec, target: Target, span: int, lanes: int) -> tuple[int, tuple[int, int]]:
        """(pixels, (vectors, lanes)) of a conv tile: output pixels of a row x output channels.
        The tiles of `pixels` x `vectors` were measured on AVX-512 and NEON, whose 32 registers hold
        them; on 16 registers `_register_tile` sizes the tile to the register file, with a fused
        shuffle too (in-process A/B, 2 threads: ShuffleNet v1's 3-group 240->60 at 28x28 111 vs 209 µs
        with 7 x 2, 960->240 at 7x7 87 vs 135, batch 8 610 vs 891, 480->120 at 14x14 75 vs 93)."""
        registers = vector_registers(target)
        if registers >= 32:
            vectors = self.vectors if spec.groups > 1 else for_registers(self.vectors, target)
            return divisor_at_most(spec.out_width, self.pixels), self._channel_tile(span, lanes, vectors)
        return self._register_tile(spec.out_width, span, lanes, registers)

    def _register_tile(self, out_width: int, span: int, lanes: int, registers: int) -> tuple[int, tuple[int, int]]:
        """The tile that fits the registers (accumulators, a weight vector per channel vector and one
        broadcast input) and keeps the FMA units busiest per output lane: each step of the reduction
        loads pixels + vectors registers and issues pixels x vectors FMAs, on 2 FMA and 2 load ports,
        and an accumulator takes an FMA every 4 cycles (its latency). Ties go to more pixels. On this
        AVX2 machine (two in-process A/B runs, µs): 4 px x 3 vectors for 144->24 at 56x56 317 vs 447,
        4 x 2 for 16->96 at 112x112 699 vs 994 and ShuffleNet v1's grouped 60->240 at 28x28 117 vs
        211, 2 x 4 for 384->64 at 14x14 161 vs 195, 7 x 1 (which grouped layers spilled at 7 x 2) for
        ResNeXt's g32 512x14 672 vs 924 and 1024x7 572 vs 816, the 3->32 stem 341 vs 442."""
        best: tuple | None = None
        for pixels in (p for p in range(1, self.pixels + 1) if out_width % p == 0):
            for width in range(1, min(span, lanes) + 1):
                for count in range(1, registers):
                    vectors = count * bin(width).count("1")   # a register per power of two in the width
                    if span % (count * width) or pixels * vectors + vectors + 1 > registers:
                        continue
                    cycles = max(pixels * vectors / 2, (pixels + vectors) / 2, 4)
                    key = (cycles / (pixels * count * width), -pixels, vectors)
                    if best is None or key < best[0]:
                        best = (key, pixels, (count, width))
        assert best is not None   # one pixel x one lane always fits
        return best[1], best[2]

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        span = self._pad_channels(sch, spec, lanes)
        n, h, w, o, *red = sch.get_loops(conv)
        window = spec.op_class in ("depthwise", "pool")
        if window:   # one vector loop, which LLVM splits into registers (unrolled halves lost 30% at 7x7)
            wi = divisor_at_most(spec.out_width, self.pixels)
            vector = self._window_vector(span, lanes, target, spec.out_width)
            oo, *oi = split(sch, o, vector, tunable, max_inner=4 * lanes)
        else:
            wi, channels = self._tile(spec, target, span, lanes)
            oo, *oi = split(sch, o, channels, tunable, max_inner=lanes)
        wo, wi_ = split(sch, w, wi, tunable, max_inner=8)
        sch.reorder(n, h, wo, oo, *red, wi_, *oi)
        rows = spec.batch * spec.out_height
        if spec.shuffle_groups == 1 and rows < self.few_rows and (rows == 1 or not window):
            # Few rows: a task per tile, not per row, so that the cores share the work. One row ran on
            # one core (in-process A/B, 2 threads: a global pool of 2048 channels at 7x7 23 vs 41 µs,
            # a 2048->1000 classifier's 1x1 plane 129 vs 263-270); with 7 rows one of 2 cores idled a
            # seventh of the time (MobileNetV2's 960->160 at 7x7 177-203 vs 189-218 µs, ResNeXt's g32
            # 1024x7 295-307 vs 309-321). Depthwise tiles on 7 rows lost (960x7 12-17 vs 11-16 µs).
            oo = sch.fuse(n, h, wo, oo)
            sch.parallel(oo)
        else:
            sch.parallel(sch.fuse(n, h))
        if window and self.unroll_taps and len(red) == 2:
            sch.unroll(red[-1])   # a row's taps unrolled: LLVM loads each input vector once for all pixels
        for loop in (wi_, *oi[:-1]):
            sch.unroll(loop)
        sch.vectorize(oi[-1])
        if spec.shuffle_groups == 1:
            sch.reverse_compute_at(out, oo, preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(out)[-1])
        else:
            sch.reverse_compute_at(out, wo, preserve_unit_loops=True)
            # the shuffle's remap as an interleaved store (ShuffleNet v1's 240->60 at 28x28 166 -> 151 µs)
            interleave_groups(sch, sch.get_loops(out)[-1], spec.shuffle_groups)
        pixel_bytes = spec.in_channels * dtype_bits(spec.dtype) // 8
        if has_block(sch, "pad") and self.group_input and spec.groups > 1 and not window and pixel_bytes >= 1024:
            # A grouped conv's tile reads its group's channels of a few rows, in NHWC one short run
            # per pixel, a pixel's channels apart: 4 KB for 1024 channels, so the runs fall in a few
            # L1 sets. Each tile copies its padded window of the group first, a compact buffer
            # (two A/B runs, ResNeXt's g32 1024x7 915-967 vs 1236-1464 µs, 512x14 867-894 vs 1266-1308,
            # 256x56 s2 742-1609 vs 1165-2123, 256x28 768-837 vs 888-1019). With pixels under 1 KB
            # the copy costs more than it saves (128 channels at 56x56 2471-2614 vs 1969-2411).
            pad = sch.get_sblock("pad")
            sch.compute_at(pad, oo, preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(pad)[-1])
        elif has_block(sch, "pad") and spec.op_class == "dense" and spec.kernel[0] * spec.kernel[1] > 9:
            # a 7x7 stem's 49 taps a pixel pay more for the predicates than for a padded copy (3->64 at
            # 224x224: 3.4 vs 6.2 ms; the 3x3 3->32 stem keeps its predicated loads, 505 vs 579 µs)
            _parallel_vectorize(sch, sch.get_sblock("pad"))
        elif has_block(sch, "pad"):
            # zero (or -inf) taps as predicated loads: a padded copy of the whole input, made first in
            # a parallel pass of its own, cost more than the conv (960 channels at 7x7: 75 vs 11 µs)
            sch.compute_inline(sch.get_sblock("pad"))
        if red:
            sch.decompose_reduction(conv, red[0])

    @staticmethod
    def _pad_channels(sch: s_tir.Schedule, spec, lanes: int) -> int:
        """The output channels a tile spans: for an ungrouped 1x1 conv whose channels are no multiple of
        the vector, the conv runs on channels padded to whole vectors (zero weight columns, copied into
        a padded weight first), and the epilogue stores only the real ones. ShuffleNet v2's 58
        channels ran in 2-lane vectors (234 -> 35 µs at 28x28), MobileNetV2's 24 in 8-lane ones
        (311 -> 193 µs for 144->24 at 56x56). Other convs are no einsum to pad (their taps shift the
        input), grouped ones would pad each group: they keep their own channel count."""
        if not ChannelVectorNHWC._pads_channels(spec, lanes):
            return ChannelVectorNHWC._span(spec)
        conv = sch.get_sblock("conv")
        sch.pad_einsum(conv, [1, 1, 1, lanes, 1])
        sch.compute_inline(sch.get_sblock("conv_pad"))   # the epilogue reads the padded accumulator
        # a block of its own: read as predicated loads inside the conv, the weight cost more than the
        # conv (58->58 at 28x28: 153 vs 35 µs)
        sch.vectorize(sch.get_loops(sch.get_sblock("weight_pad"))[-1])
        return -(-spec.out_channels // lanes) * lanes

    @staticmethod
    def _pads_channels(spec, lanes: int) -> bool:
        einsum = spec.op == "conv2d" and spec.stride == (1, 1) and not any(spec.padding)
        # (a fused shuffle is left alone: the epilogue's region inferred against the padded accumulator
        # came out short, 17 of 24 channels, leaving the rest unwritten)
        return (spec.op_class == "pointwise" and spec.groups == 1 and spec.out_channels % lanes != 0 and einsum
                and spec.shuffle_groups == 1)

    @staticmethod
    def _span(spec) -> int:
        """The output channels a tile's channel loop runs over: a group's, or all of them."""
        if spec.groups == 1 or spec.op_class in ("depthwise", "pool"):
            return spec.out_channels
        return spec.out_channels // spec.groups

    @staticmethod
    def _channel_tile(span: int, lanes: int, vectors: int) -> tuple[int, int]:
        """(vectors, lanes) of a conv tile's output channels, which share each input broadcast: the
        fewest registers per channel, a register per power of two in the width (10 lanes are 8 + 2),
        the width dividing the span (a group's channels, for grouped convs, so the input channel is
        one broadcast rather than a gather). ShuffleNet v1's 20 channels per group ran in 4-lane
        vectors (240->60 at 28x28 187 -> 95 µs, 480->120 at 14x14 111 -> 93)."""
        def cost(tile):
            count, width = tile
            return (count * bin(width).count("1") + 1) / (count * width), -count * width
        tiles = [(count, width) for width in range(1, min(span, lanes) + 1) for count in range(1, vectors + 1)
                 if span % (count * width) == 0]
        return min(tiles, key=cost)

    def _window_vector(self, span: int, lanes: int, target: Target, out_width: int) -> int:
        """A depthwise or pooling tile's channels: whole registers where the channels allow (odd
        widths such as 24 or 10 lanes make LLVM split badly here: 60 channels in 10-lane vectors
        took twice as long as in 4-lane ones). `vectors` registers with 32 of them, one on AVX2's
        16, where 7 pixels x 2 spilled (in-process A/B there, µs: MobileNetV2's 144x56 265 vs 467,
        32x112 184 vs 373, stride-2 96x112 279 vs 430; ConvNeXt's 7x7 at 56x56 714 vs 1074, at
        14x14 197 vs 264). Rows of one pixel (a global pool) take `one_pixel_vectors`, whose
        accumulators are the adds in flight where one chained each tap's add on the last (2048
        channels at 7x7 on AVX2: 8.8 vs 22.8 µs, batch 8 69 vs 185; torch's channels_last 24, 58)."""
        vectors = self.one_pixel_vectors if out_width == 1 else for_registers(self.vectors, target)
        for width in (lanes * vectors, lanes, lanes // 2, lanes // 4):
            if span % width == 0:
                return width
        return divisor_at_most(span, lanes)


class WeightGradNCHW(ScheduleRule):
    """The weight gradient (conv2d_wgrad): a sum over every output pixel per weight element, in
    one of two shapes.

    - Channel vectors, on 7- and 14-wide planes where a group has at least half a vector of input
      channels: the padded input is made once in NHWC, so input channels are contiguous;
      a tile of output channels x taps x input-channel vectors accumulates in registers while the
      pixels stream by, the output gradient broadcast from a scalar. Tile pairs are parallel.
    - Pixel vectors otherwise (depthwise, and planes whose rows fill 8 lanes): the pixel axis
      (pointwise: the flattened plane) is split and its inner part rfactored into a vector of
      partial sums (a float sum may not be reordered otherwise); the taps of one channel pair
      accumulate in registers, pairs are parallel.

    Applies only to conv2d_wgrad."""

    name = "x86.WeightGradNCHW"

    def applies(self, spec, target: Target) -> bool:
        return spec.op == "conv2d_wgrad"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        lanes = vector_lanes(target)
        cig = spec.in_channels // spec.groups
        vector = next((v for v in (lanes, lanes // 2) if v >= 4 and cig % v == 0), None)
        # Pixel vectors win on planes whose rows (pointwise: whole planes) fill 8 lanes (measured
        # 1.5-1.9x over channel vectors on 28x28 and 56x56 layers); channel vectors on the 7- and
        # 14-wide planes, where pixel vectors would run 7 lanes.
        if vector is not None and self._pixel_vector(spec, lanes) < 8:
            self._channel_vectors(sch, spec, vector, tunable)
        else:
            self._pixel_vectors(sch, spec, lanes, tunable)

    @staticmethod
    def _pointwise(spec) -> bool:
        return spec.kernel == (1, 1) and spec.stride == (1, 1) and not any(spec.padding)

    def _pixel_vector(self, spec, lanes: int) -> int:
        extent = spec.out_height * spec.out_width if self._pointwise(spec) else spec.out_width
        return divisor_at_most(extent, lanes, prefer_multiple_of=8 if lanes >= 8 else 1)

    def _channel_vectors(self, sch: s_tir.Schedule, spec, vector: int, tunable: bool) -> None:
        conv = sch.get_sblock("conv")
        if has_block(sch, "pad"):
            packed = sch.get_sblock("pad")
        else:
            index = next(k for k, r in enumerate(sch.get(conv).reads) if r.source.name == "input")
            packed = sch.cache_read(conv, index, "global")
        sch.transform_layout(packed, ("write", 0), lambda n, c, h, w: (n, h, w, c))
        _parallel_vectorize(sch, packed)
        sch.transform_layout(conv, ("write", 0), lambda o, i, a, b: (o, a, b, i))
        taps = spec.kernel[0] * spec.kernel[1]
        cig, cog = spec.in_channels // spec.groups, spec.out_channels // spec.groups
        vectors = 2 if taps == 1 and cig % (2 * vector) == 0 else 1
        oi_n = divisor_at_most(cog, max(1, 16 // (taps * vectors)))
        loops = sch.get_loops(conv)
        o, i, a, b, reductions = loops[0], loops[1], loops[2], loops[3], loops[4:]
        oo, oi = split(sch, o, oi_n, tunable, max_inner=16)
        io, ii = split(sch, i, vector * vectors, tunable, max_inner=4 * vector)
        iv_outer, iv = sch.split(ii, factors=[None, vector])
        tile = _register_tile(sch, conv, (oo, io), reductions, (oi, a, b, iv_outer), iv)
        sch.reverse_compute_at(sch.get_sblock("out"), tile, preserve_unit_loops=True)

    def _pixel_vectors(self, sch: s_tir.Schedule, spec, lanes: int, tunable: bool) -> None:
        conv = sch.get_sblock("conv")
        if self._pointwise(spec):   # one pixel axis y * W + x, contiguous in both operands
            width = spec.out_width
            if spec.batch > 1:
                sch.transform_block_layout(conv, lambda o, i, a, b, n, y, x: (o, i, a, b, n, y * width + x))
            else:
                sch.transform_block_layout(conv, lambda o, i, a, b, y, x: (o, i, a, b, y * width + x))
        pixels = sch.get_loops(conv)[-1]
        _, inner = split(sch, pixels, self._pixel_vector(spec, lanes), tunable, max_inner=2 * lanes)
        rf = sch.rfactor(inner, factor_axis=4)
        loops = sch.get_loops(rf)                         # o, i, a, b, [n], (y), outer, inner
        o, i, a, b, inner = loops[0], loops[1], loops[2], loops[3], loops[-1]
        reductions = loops[4:-1]
        # Pointwise: a 4 x 4 block of channel pairs shares each loaded pixel vector (16 accumulators).
        block = 4 if self._pointwise(spec) else 1
        oo, oi = split(sch, o, divisor_at_most(spec.out_channels // spec.groups, block), tunable, max_inner=8)
        io, ii = split(sch, i, divisor_at_most(spec.in_channels // spec.groups, block), tunable, max_inner=8)
        tile = _register_tile(sch, rf, (oo, io), reductions, (oi, ii, a, b), inner)
        for block in (sch.get_sblock("conv"), sch.get_sblock("out")):
            sch.reverse_compute_at(block, tile, preserve_unit_loops=True)
        if has_block(sch, "pad"):
            _parallel_vectorize(sch, sch.get_sblock("pad"))


class InputGradNCHW(ScheduleRule):
    """The input gradient of a strided conv (conv2d_dgrad), a transposed conv, split by phase:
    the pixels with the same (h mod stride, w mod stride) take the same taps, so with phases and
    taps unrolled the tap conditions fold away and no multiply is spent on an inserted zero. Each
    phase is a small stride-1 conv over a quarter (stride 2) of the plane, written to a phase-major
    buffer with register tiles of rows x a vector; a last pass interleaves the phases (a scalar
    loop LLVM's vectorizer turns into shuffles). One channel plane per task.

    Does not apply when the stride does not divide the input height and width (the fallback
    serves those)."""

    name = "x86.InputGradNCHW"

    def __init__(self, rows: int = 4) -> None:
        self.rows = rows

    def applies(self, spec, target: Target) -> bool:
        return (spec.op == "conv2d_dgrad" and spec.height % spec.stride[0] == 0
                and spec.width % spec.stride[1] == 0)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = vector_lanes(target)
        sh, sw = spec.stride
        hq_n, wq_n = spec.height // sh, spec.width // sw
        sch.transform_layout(conv, ("write", 0), lambda n, c, h, w: (n, c, h % sh, w % sw, h // sh, w // sw))
        n, c, h, w, *red = sch.get_loops(conv)
        hq, hr = sch.split(h, factors=[None, sh])
        wq, wr = sch.split(w, factors=[None, sw])
        wi = divisor_at_most(wq_n, lanes, prefer_multiple_of=8) if wq_n > lanes else wq_n
        hqo, hqi = split(sch, hq, divisor_at_most(hq_n, self.rows), tunable, max_inner=8)
        wqo, wqi = split(sch, wq, wi, tunable, max_inner=2 * lanes)
        sch.reorder(n, c, hr, wr, hqo, wqo, *red, hqi, wqi)
        nc = sch.fuse(n, c)
        sch.parallel(nc)
        for loop in (hr, wr, *red[1:], hqi):   # phases and taps: their conditions fold to constants
            sch.unroll(loop)
        sch.vectorize(wqi)
        sch.decompose_reduction(conv, red[0])
        sch.reverse_compute_at(out, nc, preserve_unit_loops=True)
        ow = sch.get_loops(out)[-1]
        _, phase = sch.split(ow, factors=[None, sw])
        sch.unroll(phase)
        _parallel_vectorize(sch, sch.get_sblock("pad"))


class ChannelShuffle(ScheduleRule):
    """Channel shuffle as a copy: NCHW moves whole channel planes with vector loads and stores;
    NHWC interleaves each pixel's groups (rows parallel), see `interleave_groups`. Applies only to
    channel_shuffle."""

    name = "x86.ChannelShuffle"

    def applies(self, spec, target: Target) -> bool:
        return spec.op == "channel_shuffle"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        out = sch.get_sblock("out")
        if spec.layout == "NCHW":
            _parallel_vectorize(sch, out, flatten_inner=True)
            return
        n, h, _, c = sch.get_loops(out)
        sch.parallel(sch.fuse(n, h))
        interleave_groups(sch, c, spec.shuffle_groups)


def interleave_groups(sch: s_tir.Schedule, channels, groups: int) -> None:
    """An NHWC channel loop that writes output channel k * groups + g from group g's k-th channel, left
    to LLVM's loop vectorizer as one interleaved store group: a scalar loop over k with the groups
    unrolled becomes wide loads of each group plus shuffles. TVM's own vectorize gathers lane by lane
    (ShuffleNet v2's 116 channels at 28x28: 37 -> 8 µs, v1's 60 in 3 groups 19 -> 8)."""
    _, g = sch.split(channels, factors=[None, groups])
    sch.unroll(g)


def _plain_pointwise(spec, layout: str) -> bool:
    """A 1x1, stride-1, unpadded conv in `layout`: a GEMM over flattened pixels (an output shuffle in
    NCHW only permutes the output's planes: see epilogue_in_conv_order)."""
    return (spec.op == "conv2d" and spec.layout == layout and spec.kernel == (1, 1) and spec.stride == (1, 1)
            and spec.padding == (0, 0, 0, 0))


def _pixel_tile_tail(sch: s_tir.Schedule, conv, out, tile, unrolled: list, vector, reduction,
                     vector_store: bool = True) -> None:
    """The parallel `tile` loop, the register tile unrolled around one vector, and the epilogue run on
    each task's outputs while they are hot, its store vectorized unless it transposes (`vector_store`
    False: a packed GEMM's tiles run along output channels, the store along pixels)."""
    sch.parallel(tile)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vector)
    sch.reverse_compute_at(out, tile, preserve_unit_loops=True)
    if vector_store:
        sch.vectorize(sch.get_loops(out)[-1])
    sch.decompose_reduction(conv, reduction)


def _channel_vector_store(sch: s_tir.Schedule, out, lanes: int) -> None:
    """A transposing store (channel-vector tiles, NCHW output) that computes its epilogue a channel
    vector at a time, as the accumulators hold it, and scatters the lanes to their planes, where
    along a few pixels the epilogue ran a scalar at a time. PointwisePackedNCHW keeps its store along
    pixels: a whole plane of them, which LLVM vectorizes (SiLU at batch 8 ran 15-40 % slower this way)."""
    loops = sch.get_loops(out)
    channel, *after = loops[2:]   # (tile, n, channel, pixels...) under reverse_compute_at
    sch.reorder(*after, channel)
    sch.vectorize(sch.split(channel, factors=[None, lanes])[1])


def _register_tile(sch: s_tir.Schedule, block, outer, reductions, unrolled, vector):
    """outer (fused, parallel) -> reductions -> unrolled register tile -> one vector; returns the
    parallel loop. The tile's accumulators stay in registers across the reduction loops."""
    sch.reorder(*outer, *reductions, *unrolled, vector)
    tile = sch.fuse(*outer)
    sch.parallel(tile)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vector)
    sch.decompose_reduction(block, reductions[0])
    return tile


def _parallel_vectorize(sch: s_tir.Schedule, block, flatten_inner: bool = False) -> None:
    """An elementwise block at the root: outer loops parallel, innermost (or, with flatten_inner,
    the last two fused) vectorized."""
    loops = sch.get_loops(block)
    inner = sch.fuse(*loops[-2:]) if flatten_inner else loops[-1]
    outer = loops[:-2] if flatten_inner else loops[:-1]
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    sch.vectorize(inner)


RULES: list[ScheduleRule] = [GlobalPoolNCHW(), DepthwisePackedNCHW(), DepthwiseNCHW(), PointwiseWideTileNCHW(),
                             PointwiseNCHW(), PointwisePackedNCHW(), MatVecNCHW(), GroupConvPackedNCHW(),
                             GroupConvNCHW(), PointwisePackedNHWC(), ChannelVectorNHWC(), ChannelShuffle(),
                             WeightGradNCHW(), InputGradNCHW()]
