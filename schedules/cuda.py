"""CUDA rules (sm_80 / sm_87 / sm_90). Built here with nvcc; checked and timed on a GPU host
(loader/gpu_check.py, run by scripts/gpu_check.sh), so each rule keeps to plain, well-trodden GPU
shapes.

Every rule inlines the padding into the loads (out-of-range taps read zero), keeps the float32
accumulators of a thread in registers (`local` scope) and runs the epilogue on them before the one
store, so a layer is one kernel with one read of its input and one write of its output. The tensor-core
rules keep their accumulators in WMMA fragments: TVM DLight's fixed GEMM schedule
(PointwiseTensorCoreNHWC, PointwiseGemm), and ours with tunable tiles (TensorCoreGemm).
"""
from __future__ import annotations

import math
from dataclasses import replace

import tvm
from tvm import s_tir
from tvm.tirx import IndexMap
from tvm.target import Target

from . import ScheduleRule
from .common import divisor_at_most, dtype_bits, flatten_pixels, has_block, split, tile_factors

_SPATIAL = 0  # IterVar.DataPar
_FRAG = 16    # a WMMA fragment's side (16x16, times 16 float16 or 8 TF32 along the reduction)


def _inline_pad(sch: s_tir.Schedule) -> None:
    if has_block(sch, "pad"):
        sch.compute_inline(sch.get_sblock("pad"))


def _unshuffle(sch: s_tir.Schedule, spec) -> None:
    """With an output channel shuffle, the epilogue iterates the conv's channels in their own order
    (s = g * C/G + j) and stores each at its shuffled place (j * G + g), so it reads the
    accumulator at its own point and the conv fuses under it as without a shuffle: a thread's
    channels stay adjacent channels of one group, sharing its input loads; only the store is
    strided. (The shuffle as written, a remap of the read, is no box a thread could accumulate.)
    The accumulator is relaid twice because transform_layout simplifies the remapped reads, which
    transform_block_layout leaves as written."""
    if spec.op != "conv2d" or spec.shuffle_groups == 1:   # (a channel_shuffle op is no conv's epilogue)
        return
    groups, per = spec.shuffle_groups, spec.out_channels // spec.shuffle_groups
    out, conv = sch.get_sblock("out"), sch.get_sblock("conv")
    if spec.layout == "NCHW":
        sch.transform_block_layout(out, lambda n, c, h, w: (n, c % groups * per + c // groups, h, w))
        sch.transform_layout(conv, ("write", 0), lambda n, c, h, w: (n, c // per, c % per, h, w))
        sch.transform_layout(conv, ("write", 0), lambda n, g, j, h, w: (n, g * per + j, h, w))
    else:
        sch.transform_block_layout(out, lambda n, h, w, c: (n, h, w, c % groups * per + c // groups))
        sch.transform_layout(conv, ("write", 0), lambda n, h, w, c: (n, h, w, c // per, c % per))
        sch.transform_layout(conv, ("write", 0), lambda n, h, w, g, j: (n, h, w, g * per + j))


# Values a plane may hold where a block's planes are copied as one span in vectors: on 28x28 float16
# planes TVM's CUDA code gathered the vectors with 8-lane 64-bit indices, which nvcc refuses.
MOST_SPAN_PLANE = 196
SHARED_BYTES = 48 * 1024   # a block's shared memory as TVM launches it (no opt-in past 48 KB)


class DepthwiseNCHW(ScheduleRule):
    """Depthwise conv in NCHW: a thread block per (image, channel, band of output rows); the band's
    input rows plus the halo are staged in shared memory by all threads together (coalesced along
    rows); each thread computes several adjacent outputs of a row from it, taps unrolled, and
    stores them as one vector where their count allows (_vector_stores). Listed after
    DepthwiseColumnsNCHW, which serves the same layers and was as fast or faster on an H200 wherever
    this rule served before it (Nov 2026), so it serves through tuned records. Tunable: the band's
    rows and the outputs per thread. Does not apply to NHWC or with an output shuffle."""

    name = "cuda.DepthwiseNCHW"

    def __init__(self, rows: int = 8, per_thread: int = 4) -> None:
        self.rows = rows
        self.per_thread = per_thread

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and spec.op_class == "depthwise" and spec.layout == "NCHW"
                and spec.shuffle_groups == 1)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        oh, ow = spec.out_height, spec.out_width
        n, c, h, w = sch.get_loops(out)
        # at most 1024 threads a block: rows x (ow / outputs per thread)
        hf = tile_factors(sch, h, divisor_at_most(oh, self.rows), tunable, max_inner=16)
        per_thread = divisor_at_most(ow, self.per_thread)
        wf = tile_factors(sch, w, per_thread, tunable, max_inner=8)
        ho, hi_ = sch.split(h, factors=hf)
        wo, wi_ = sch.split(w, factors=wf)
        threads = [hf[1], wf[0] if tunable else ow // wf[1]]   # rows x runs: one factor each, as a trace stores them
        sch.reorder(n, c, ho, hi_, wo, wi_)
        block = sch.fuse(n, c, ho)
        thread = sch.fuse(hi_, wo)
        sch.bind(block, "blockIdx.x")
        sch.bind(thread, "threadIdx.x")
        sch.compute_at(conv, thread, preserve_unit_loops=True)
        sch.set_scope(conv, 0, "local")
        loops = sch.get_loops(conv)[2:]
        for loop in loops:
            sch.unroll(loop)
        if has_block(sch, "pad"):
            pad = sch.get_sblock("pad")
            sch.compute_at(pad, block, preserve_unit_loops=True)
            sch.set_scope(pad, 0, "shared")
            pad_loops = sch.get_loops(pad)[1:]
            fused = sch.fuse(*pad_loops)
            _, *tx = sch.split(fused, factors=[None, *threads])
            sch.bind(sch.fuse(*tx), "threadIdx.x")
        if sch.get(conv).reads and any(int(iv.iter_type) != _SPATIAL for iv in sch.get(conv).iter_vars):
            sch.decompose_reduction(conv, sch.get_loops(conv)[2])
        _vector_stores(sch, wi_, per_thread, spec.dtype)   # (a split before compute_at refuses some tiles)


class DepthwiseStagedNCHW(ScheduleRule):
    """Depthwise conv in NCHW, its input staged unpadded: a thread block per (image, a few planes,
    band of output rows) copies the input rows the band needs into shared memory with
    16-byte loads (8 lanes in float16, 4 in float32, fewer where a row's width is not a multiple),
    all in flight at once (the copy loop unrolled); the padding is then a predicate on the reads
    from shared memory. Each thread computes several adjacent outputs of a row (up to 4, 8 for a
    kernel 5 or more wide), taps unrolled, stored as vectors (_vector_stores).
    DepthwiseNCHW stages the padded tile one 2-byte or 4-byte load per thread at a time, so few
    loads are in flight. Small planes take several channels a block, up to `threads` threads.
    Serves where it was faster on an H200 at batch 64 (the best of each rule's timed candidates,
    the suite's 38 NCHW depthwise kernels): in float16 (e.g. 144x56 81 us against 112), at stride 2
    (96x112 in float32 141 against 211), on planes of 14x14 or less (960x7 14 against 39), and with a
    kernel 5 or more wide only on 7x7 planes: DepthwiseNCHW was ahead on float32 3x3s at stride 1 on
    planes of 28x28 and more (32x112 97 against 122) and far ahead on ConvNeXt's 7x7s above 7x7
    (96x56 140 against 464); DepthwiseColumnsNCHW serves those now, and DepthwiseColumnsStagedNCHW
    (listed first) the 3x3s with rows of more than 7 outputs since its timings, so this rule serves 7x7
    planes. Tunable: the planes, rows and outputs per thread. Does not apply to NHWC or with an output
    shuffle."""

    name = "cuda.DepthwiseStagedNCHW"

    def __init__(self, rows: int = 8, per_thread: int = 4, threads: int = 256, bytes_per_load: int = 16) -> None:
        self.rows = rows
        self.per_thread = per_thread
        self.threads = threads
        self.bytes_per_load = bytes_per_load

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and spec.op_class == "depthwise" and spec.layout == "NCHW"
                and spec.shuffle_groups == 1)

    def serves(self, spec, target: Target) -> bool:
        if not self.applies(spec, target):
            return False
        if spec.kernel[1] >= 5:
            return spec.out_width <= 7
        return spec.dtype == "float16" or spec.stride != (1, 1) or spec.out_width <= 14

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        oh, ow = spec.out_height, spec.out_width
        # a wide kernel's row of taps over more outputs (a 7x7 plane: a whole row a thread, not one output)
        per_thread = divisor_at_most(ow, 2 * self.per_thread if spec.kernel[1] >= 5 else self.per_thread)
        rows = divisor_at_most(oh, self.rows)
        planes = divisor_at_most(spec.out_channels, max(1, self.threads // (rows * ow // per_thread)))
        n, c, h, w = sch.get_loops(out)
        cf = tile_factors(sch, c, planes, tunable, max_inner=64)
        hf = tile_factors(sch, h, rows, tunable, max_inner=16)
        wf = tile_factors(sch, w, per_thread, tunable, max_inner=8)
        (co, ci), (ho, hi), (wo, wi) = (sch.split(c, factors=cf), sch.split(h, factors=hf),
                                        sch.split(w, factors=wf))
        threads = [cf[1], hf[1], wf[0] if tunable else ow // per_thread]   # one factor each, as a trace stores them
        sch.reorder(n, co, ho, ci, hi, wo, wi)
        block = sch.fuse(n, co, ho)
        # the band's input rows, clipped to the image (TVM's cache_read region), by all threads together
        stage = _outputs_from_shared_input(sch, conv, block, sch.fuse(ci, hi, wo))
        lanes = _row_copy_lanes(spec, self.bytes_per_load)
        outer, *tx, lane = sch.split(sch.fuse(*sch.get_loops(stage)[1:]), factors=[None, *threads, lanes])
        sch.bind(sch.fuse(*tx), "threadIdx.x")
        sch.vectorize(lane)
        sch.unroll(outer)
        if any(int(iv.iter_type) != _SPATIAL for iv in sch.get(conv).iter_vars):   # (a 1x1 has no taps to sum)
            sch.decompose_reduction(conv, sch.get_loops(conv)[2])
        _vector_stores(sch, wi, per_thread, spec.dtype)


class DepthwiseColumnsNCHW(ScheduleRule):
    """Depthwise conv in NCHW: a thread block per (image, channel, band of output rows), the band's
    padded input rows staged in shared memory by all threads (as DepthwiseNCHW), and a thread per
    output column of the band taking `rows` outputs down it, so a warp's 32 threads read 32 adjacent
    words of a shared row for every tap, and each value read serves up to kh of the thread's outputs.
    The other NCHW rules give a thread adjacent outputs along a row, so a warp's threads read words 4
    or 8 apart: 2-3 (DepthwiseNCHW) and up to 6.5 (DepthwiseStagedNCHW, a 7x7) shared-memory
    wavefronts a request where one would do (the emulator counts them), and ConvNeXt's 7x7 96x56 ran
    at 26 % of copy bandwidth on an H200, about what those wavefronts allow. Serves (listed after
    DepthwiseStagedNCHW, before DepthwiseNCHW) where DepthwiseStagedNCHW does not: on an H200 at batch
    64 (Nov 2026, each rule's own schedule) ConvNeXt's 7x7s took 65 us against DepthwiseNCHW's 86
    (192x28, float32), 40 against 67 (384x14) and 61 against 83 (192x28, float16), MobileNetV2's
    float32 3x3s at stride 1 on 28x28 and more planes 1-8 % less, 144x56 1 % more. Tunable: the rows
    a thread and a block take. Does not apply to NHWC, pooling, or an output shuffle."""

    name = "cuda.DepthwiseColumnsNCHW"

    applies = DepthwiseNCHW.applies   # the same layers

    def __init__(self, threads: int = 256) -> None:
        self.threads = threads

    @staticmethod
    def _rows(spec) -> int:
        """Outputs a thread takes down its column by default."""
        return divisor_at_most(spec.out_height, 8 if spec.kernel[0] >= 5 else 4)   # a wide kernel's column reuses more

    def _column_threads(self, sch: s_tir.Schedule, spec, tunable: bool, whole_rows: bool = False,
                        pairs: bool = False, planes: int | None = None, unit: int = 1, most_rows: int = 16) -> tuple:
        """A block per (image, channel, band of rows, run of columns: the whole row with whole_rows),
        a thread per column of the band taking `rows` outputs down it (with pairs, whole rows only:
        per two adjacent columns, stored as pairs), the taps unrolled outermost. With `planes`, a
        block per that many whole planes instead (a multiple of `unit`; tuned, the units a block and
        how its rows divide between threads are drawn, `most_rows` a thread at most, its band the
        whole plane), a thread per (channel, column). Returns the conv block, the block loop, the
        taps' outer loop (None for a 1x1), the channel factors of a block's threads (none without
        planes), the row and column factors, the rows and the threads along a row."""
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        oh, ow = spec.out_height, spec.out_width
        rows = self._rows(spec)
        columns = ow // 2 if pairs else ow if whole_rows else divisor_at_most(ow, self.threads)
        groups = divisor_at_most(oh // rows, max(1, self.threads // columns))   # row groups a block
        while groups > 1 and self._band_bytes(spec, groups * rows) > 48 * 1024:   # (a static stage's most)
            groups = divisor_at_most(oh // rows, groups - 1)
        n, c, h, w = sch.get_loops(out)
        ct, ci = [], []
        if planes is None:
            hf = tile_factors(sch, h, (groups, rows), tunable, max_inner=16)
        else:
            if unit > 1:   # (whole vectors of the input a block: not sampled)
                c, cu = sch.split(c, factors=[None, unit])
            cf = tile_factors(sch, c, planes // unit, tunable, max_inner=64)
            c, cs = sch.split(c, factors=cf)
            ct, ci = ([cf[1], unit], [cs, cu]) if unit > 1 else ([cf[1]], [cs])
            hf = [1, *(sch.sample_perfect_tile(h, n=2, max_innermost_factor=most_rows, decision=[oh // rows, rows])
                       if tunable else [oh // rows, rows])]
        if pairs:
            wf = [None, ow]   # (the whole row)
            (ho, hm, hr), (wo, wi, pair) = sch.split(h, factors=hf), sch.split(w, factors=[1, columns, 2])
            sch.reorder(n, c, ho, wo, *ci, hm, wi, hr, pair)
        else:
            wf = [None, ow] if whole_rows else tile_factors(sch, w, columns, tunable, max_inner=1024)
            (ho, hm, hr), (wo, wi) = sch.split(h, factors=hf), sch.split(w, factors=wf)
            sch.reorder(n, c, ho, wo, *ci, hm, wi, hr)
        block, thread = sch.fuse(n, c, ho, wo), sch.fuse(*ci, hm, wi)
        sch.bind(block, "blockIdx.x")
        sch.bind(thread, "threadIdx.x")
        sch.unroll(hr)
        if pairs:
            _vector_stores(sch, pair, 2, spec.dtype)
        # (the taps the op kept: a 1x3 has no rh, a 1x1 no taps at all)
        spatial, taps = _accumulate_in_thread(sch, conv, thread)
        taps = taps[::-1]   # the taps outermost, columns first: each (tap, row) read once for all rows it serves
        sch.reorder(*taps, *spatial)
        for loop in (*taps, *spatial):
            sch.unroll(loop)
        return conv, block, (taps[0] if taps else None), ct, hf, wf, rows, columns

    @staticmethod
    def _band_bytes(spec, rows: int) -> int:
        """Bytes of the input rows a band of `rows` output rows reads, whole input rows."""
        return _input_span(spec, rows, 0) * (spec.width + sum(spec.padding[1::2])) * dtype_bits(spec.dtype) // 8

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, block, rw, _, hf, wf, rows, columns = self._column_threads(sch, spec, tunable)
        if has_block(sch, "pad"):   # the band's padded rows, by all threads together (coalesced along rows)
            pad = sch.get_sblock("pad")
            sch.compute_at(pad, block, preserve_unit_loops=True)
            sch.set_scope(pad, 0, "shared")
            _, *tx = sch.split(sch.fuse(*sch.get_loops(pad)[1:]), factors=[None, hf[1], wf[1]])
            sch.bind(sch.fuse(*tx), "threadIdx.x")
            pitch = _bank_spread_pitch(_input_span(spec, columns, 1), rows * spec.stride[0], columns, spec.stride[1], dtype_bits(spec.dtype) // 8)
            sch.storage_align(pad, 0, axis=2, factor=32, offset=pitch % 32)
        if rw is not None:   # (a 1x1's conv reduces nothing)
            sch.decompose_reduction(conv, rw)


class DepthwiseColumnsStagedNCHW(DepthwiseColumnsNCHW):
    """DepthwiseColumnsNCHW's threads (a column of the band each, `rows` outputs down it, so a warp's
    reads of a tap are 32 adjacent words) on DepthwiseStagedNCHW's stage: the band's input rows copied
    unpadded into shared memory with 16-byte loads, all in flight at once, the padding a predicate on
    the reads, the row pitch spread across the banks in whole vectors. DepthwiseColumnsNCHW copies
    the padded band one 2- or 4-byte load per thread at a time: on an H200 (Nov 2026) it lost
    MobileNetV2's float16 3x3s to DepthwiseStagedNCHW by up to 1.5x (144x56 114 us against 75), whose
    reads take 1.4-6.5 shared-memory wavefronts a request where this one's take one (the emulator's
    count). Serves (listed first) 3x3s (kernels under 5 wide) with rows of more than 7 outputs: timed
    on an H200 (Nov 2026, each rule's own schedule, the suite's NCHW depthwise kernels at batch 64) it
    was the fastest on every such layer on planes of 28x28 or more, by up to 1.6x (96x112 at stride 2
    90 us in float32 against the staged rule's 145, 144x56 80 against the column rule's 118), and on
    14x14 within 6 % of the fastest; on 7x7 planes the staged rule's blocks of several planes were
    2-3x faster, and wider kernels ran faster on the column rule's padded copy (ConvNeXt's 192x28 63
    against 82). A block takes whole rows, so the copy's vectors stay aligned. Tunable: the rows a
    thread and a block take. Does not apply to rows of more than `threads` outputs, NHWC, pooling, or
    an output shuffle."""

    name = "cuda.DepthwiseColumnsStagedNCHW"

    def __init__(self, threads: int = 256, bytes_per_load: int = 16) -> None:
        super().__init__(threads)
        self.bytes_per_load = bytes_per_load

    def applies(self, spec, target: Target) -> bool:
        return DepthwiseNCHW.applies(self, spec, target) and spec.out_width <= self.threads

    def serves(self, spec, target: Target) -> bool:
        return self.applies(spec, target) and spec.kernel[1] < 5 and spec.out_width > 7

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        conv, block, rw, _, hf, _, rows, columns = self._column_threads(sch, spec, tunable, whole_rows=True)
        self._stage_rows(sch, spec, conv, block, hf, rows, columns)
        if rw is not None:   # (a 1x1's conv reduces nothing)
            sch.decompose_reduction(conv, rw)

    def _stage_rows(self, sch: s_tir.Schedule, spec, reader, block, hf: list, rows: int, columns: int,
                    ct: tuple = (), span: bool = False) -> None:
        """The band's input rows, clipped to the image, into shared memory for `reader` (the block
        reading the input), by all the block's threads (ct: the channel factors of a block of
        several planes) in 16-byte vectors, or what divides a row, the row pitch spread across the
        banks; with span (whole planes a block, in units of whole vectors) 16-byte vectors across
        the rows, the stage as dense as the input."""
        stage = sch.cache_read(reader, 0, "shared")
        sch.compute_at(stage, block, preserve_unit_loops=True)
        lanes = self.bytes_per_load * 8 // dtype_bits(spec.dtype) if span else _row_copy_lanes(spec, self.bytes_per_load)
        outer, *tx, lane = sch.split(sch.fuse(*sch.get_loops(stage)[1:]), factors=[None, *ct, hf[1], columns, lanes])
        sch.bind(sch.fuse(*tx), "threadIdx.x")
        sch.vectorize(lane)
        sch.unroll(outer)
        if not span:   # (a padded pitch would break a span's vectors across rows)
            pitch = _bank_spread_pitch(spec.width, rows * spec.stride[0], columns, spec.stride[1],
                                       dtype_bits(spec.dtype) // 8, multiple=lanes)
            sch.storage_align(stage, 0, axis=2, factor=32, offset=pitch % 32)


class DepthwiseColumnsRegistersNCHW(DepthwiseColumnsStagedNCHW):
    """DepthwiseColumnsStagedNCHW with each thread's window of the band in registers: the input
    values its column of outputs reads ((rows - 1) x stride + kh rows, kw columns) are loaded from
    shared memory once each, the padding applied once each, then the taps' multiply-adds read the
    registers. The staged rule reads shared memory once per tap and output, the padding a select
    each time, and nvcc merges few of the repeats (its index and padding expressions differ by tap):
    its float16 kernels issue a conversion and a select per read (HADD2, PRMT in the SASS), and
    `scripts/issue_bound.py` finds them issue-bound, MobileNetV2's 144x56 at 47 instructions an
    output (47 us of issue at batch 64, its bytes 28 us; timed 58). Here, at 8 rows a thread, 33
    instead of 45 (14 rows: 29 instead of 41), by nvdisasm's count of the same tiles. On rows of 28
    outputs or more a thread takes two adjacent columns (a window of kw + 1 columns for both, each
    weight loaded once for both, the outputs stored as pairs): 24 on the 144x56. The suite's NCHW
    3x3s take 24-28 instructions an output in float16 on such rows and 36-41 on shorter ones, 20-32
    in float32, as this rule's own schedules (8 rows a thread by default), against 50-113 and 38-98
    as the rules serving them untuned; ConvNeXt's 7x7s on 56x56 and 28x28 81-85 in float16 against
    109-114. A pair's reads lie two words apart in float32, so the emulator counts 2.1 shared-memory
    wavefronts a request at stride 1 (1.0 with a column a thread): about 0.25 an output, far below
    the issue. Where two or more planes' column threads fit in a block (planes of 28x28 and less),
    a block takes whole planes (_planes): a block a 7x7 plane was 7 threads, a quarter of a warp,
    and a 14x14's 28, of which a multiprocessor runs at most 32 blocks; now 224 a block on the
    suite's 14x14 and 7x7 planes. In float16 at stride 1 the planes are copied as one span in
    16-byte vectors (DepthwisePlanesNCHW's copy; a 7-wide row alone copies a value a load): MobileNetV2's
    960x7 in float16 issues 31 instructions an output, against 102-136 under the other rules' own
    schedules and 55 as served tuned; the 384x14 37 (69-96, 49). Untimed as yet: an alternative,
    served through tuned records. Tunable as the staged rule (the rows; not the pairs), and the
    planes a block; applies where it does."""

    name = "cuda.DepthwiseColumnsRegistersNCHW"

    def serves(self, spec, target: Target) -> bool:
        return False   # (until a GPU times it)

    @staticmethod
    def _rows(spec) -> int:
        return divisor_at_most(spec.out_height, 8)   # (each row more shares the window's loads)

    @staticmethod
    def _pairs(spec) -> bool:
        """Two adjacent columns a thread on rows of 28 outputs or more (on shorter ones a block of
        half as many threads wastes more of its warps)."""
        return spec.out_width % 2 == 0 and spec.out_width >= 28

    def _planes(self, spec) -> tuple[int, int, bool] | None:
        """Whole planes a block where two or more planes' threads fit in `threads` and a plane's
        input in a static stage (a 14x14 plane's columns are 28 threads, a 7x7's 7: a block a plane
        wastes warps and launches tiny blocks), as (planes, unit, span): as many as keep the block
        within `threads` threads and a static stage's 48 KB, a multiple of the unit of planes whose
        bytes are whole 16-byte vectors where the stage is copied as one span (_span_unit, where a
        unit's threads fit too), else of 1. None: a block a band."""
        plane_threads = self._row_threads(spec) * (spec.out_height // self._rows(spec))
        plane_bytes = self._band_bytes(spec, spec.out_height)
        if 2 * plane_threads > self.threads or plane_bytes > 48 * 1024:
            return None
        span_unit = self._span_unit(spec)
        if span_unit and (span_unit * plane_threads > self.threads or span_unit * plane_bytes > 48 * 1024):
            span_unit = None   # (the copy by rows)
        unit = span_unit or 1
        most = min(self.threads // plane_threads, 48 * 1024 // (unit * plane_bytes))
        return unit * divisor_at_most(spec.out_channels // unit, max(1, most // unit)), unit, span_unit is not None

    def _row_threads(self, spec) -> int:
        """Threads along an output row: a column each, or a pair of columns (_pairs)."""
        return spec.out_width // 2 if self._pairs(spec) else spec.out_width

    def _span_unit(self, spec) -> int | None:
        """Planes whose input bytes are whole vectors, where a block's planes are one span of the
        input copied as such (DepthwisePlanesNCHW's copy, 16-byte loads across the rows: a 7-wide
        float16 row alone copies a value a load): the planes read whole, at stride 1, of at most
        196 values (TVM indexes larger spans' vectors with 64-bit lanes, which nvcc refuses), the
        channels a whole number of units. None elsewhere."""
        unit = _span_unit(spec, self.bytes_per_load)
        # (one vector a thread at most: where a thread copies two, TVM cannot fold the second's
        # index back into a line and gathers the vector value by value, with 64-bit indices in a
        # tuned point's code, which nvcc refuses)
        one_each = self._span_rows(spec, unit) >= self._rows(spec)
        return (unit if _reads_whole_planes(spec) and one_each and spec.stride == (1, 1)
                and spec.height * spec.width <= MOST_SPAN_PLANE and spec.out_channels % unit == 0 else None)

    def _span_rows(self, spec, unit: int) -> int:
        """The most rows a thread may take where a unit's threads copy its vectors one each (the
        copy takes as many threads a unit as its compute: its columns times its row groups)."""
        vectors = unit * _plane_bytes(spec) // self.bytes_per_load
        return spec.out_height // _ceil_div(vectors, unit * self._row_threads(spec))

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        planes, unit, span = self._planes(spec) or (None, 1, False)
        conv, block, rw, ct, hf, _, rows, columns = self._column_threads(
            sch, spec, tunable, whole_rows=True, pairs=self._pairs(spec), planes=planes, unit=unit,
            most_rows=min(16, self._span_rows(spec, unit)) if span else 16)
        thread = sch.get_loops(conv)[1]
        if has_block(sch, "pad"):   # the padded window, computed into registers
            window = sch.get_sblock("pad")
            sch.compute_at(window, thread, preserve_unit_loops=True)
            sch.set_scope(window, 0, "local")
        else:
            window = sch.cache_read(conv, 0, "local")
            sch.compute_at(window, thread, preserve_unit_loops=True)
        for loop in sch.get_loops(window)[2:]:
            sch.unroll(loop)
        self._stage_rows(sch, spec, window, block, hf, rows, columns, ct, span=span)
        if rw is not None:   # (a 1x1's conv reduces nothing)
            sch.decompose_reduction(conv, rw)


class DepthwisePlanesNCHW(ScheduleRule):
    """Depthwise conv in NCHW on small planes: a thread block per (image, run of whole planes), the
    run copied into shared memory as the one span it is in memory, with 16-byte loads all in flight
    at once, the padding then a predicate on the reads; a thread per (plane, row, a few adjacent
    outputs of it), as DepthwiseStagedNCHW's. A block takes its planes in units whose bytes are whole
    vectors (2 planes of 14x14 in float16, 8 of 7x7), so every load is aligned. DepthwiseStagedNCHW
    copies each row of a band on its own: a float16 row of 14 is 28 bytes, copied 4 bytes at a time,
    one of 7 a value at a time; on an H200 (Nov 2026) its float16 NCHW 3x3s on 7x7 and 14x14 planes
    ran at 41-47 % of what torch's copy of their bytes took (the NHWC rule's at 66-78 %). Untimed
    as yet: an alternative, served through tuned records. Tunable: the units a block takes and the
    outputs a thread (about `threads` a block by default). Does not apply to NHWC, an output shuffle,
    a channel multiplier, a unit of planes whose outputs take more than `max_threads` threads, input
    planes of more than
    `max_plane` values (14x14: on 28x28 float16 planes TVM's CUDA code gathered the copy's vectors
    with 8-lane 64-bit indices, which nvcc refuses; so did some tilings at stride 2, where the staged
    rule is within 10 % of a copy's speed anyway), or where the input's planes
    are not read whole (a stride that skips the last row or column) or the channels do not divide
    into units."""

    name = "cuda.DepthwisePlanesNCHW"

    def __init__(self, threads: int = 512, max_threads: int = 1024, per_thread: int = 4,
                 bytes_per_load: int = 16, shared_bytes: int = 49152, max_plane: int = MOST_SPAN_PLANE) -> None:
        self.threads = threads
        self.max_threads = max_threads
        self.shared_bytes = shared_bytes
        self.max_plane = max_plane
        self.per_thread = per_thread
        self.bytes_per_load = bytes_per_load

    def _unit(self, spec) -> int:
        return _span_unit(spec, self.bytes_per_load)

    def _per_thread(self, spec) -> int:
        return divisor_at_most(spec.out_width, 2 * self.per_thread if spec.kernel[1] >= 5 else self.per_thread)

    def applies(self, spec, target: Target) -> bool:
        if not (DepthwiseNCHW.applies(self, spec, target) and spec.op == "conv2d"):
            return False
        plane_threads = spec.out_height * spec.out_width // self._per_thread(spec)
        unit = self._unit(spec)
        return (_reads_whole_planes(spec) and spec.in_channels % unit == 0
                and spec.in_channels == spec.out_channels and unit * plane_threads <= self.max_threads
                and spec.height * spec.width <= self.max_plane and spec.stride == (1, 1))

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        oh, ow = spec.out_height, spec.out_width
        per_thread, unit = self._per_thread(spec), self._unit(spec)
        units = divisor_at_most(spec.out_channels // unit, max(1, min(self.threads // (unit * oh * ow // per_thread),
                                                                     self.shared_bytes // (unit * _plane_bytes(spec)))))
        n, c, h, w = sch.get_loops(out)
        c, cu = sch.split(c, factors=[None, unit])   # (whole vectors: not sampled)
        cf = tile_factors(sch, c, units, tunable, max_inner=64)
        wf = tile_factors(sch, w, per_thread, tunable, max_inner=8)
        (co, ci), (wo, wi) = sch.split(c, factors=cf), sch.split(w, factors=wf)
        threads = [cf[1], unit, oh, wf[0] if tunable else ow // per_thread]   # one factor each, as a trace stores them
        sch.reorder(n, co, ci, cu, h, wo, wi)
        block, thread = sch.fuse(n, co), sch.fuse(ci, cu, h, wo)
        # the block's planes, one span of the input, by all threads together
        stage = _outputs_from_shared_input(sch, conv, block, thread)
        lanes = self.bytes_per_load * 8 // dtype_bits(spec.dtype)
        outer, *tx, lane = sch.split(sch.fuse(*sch.get_loops(stage)[1:]), factors=[None, *threads, lanes])
        sch.bind(sch.fuse(*tx), "threadIdx.x")
        sch.vectorize(lane)
        sch.unroll(outer)
        if any(int(iv.iter_type) != _SPATIAL for iv in sch.get(conv).iter_vars):
            sch.decompose_reduction(conv, sch.get_loops(conv)[2])
        _vector_stores(sch, wi, per_thread, spec.dtype)


class DepthwiseTensorCoreNCHW(ScheduleRule):
    """A float16 NCHW depthwise conv as banded matrix products on the tensor cores (KernelSpec.banded,
    gconvgen.ops.conv.banded_depthwise): a 16x16 tile of a plane's outputs is the sum over kernel
    rows r and two 16-column halves of (16 rows of the staged padded plane from row h + r) x (a 16x16
    block of that row's band matrix), WMMA 16x16x16 products into float32 accumulators: 14 products
    a 7x7 tile, of which a quarter of the terms are taps (the rest multiply the band's zeros), where
    the FMA rules issue 49 float32 multiply-adds an output plus a conversion and a select a tap read.
    On an H200 those issue-bound kernels ran ConvNeXt's float16 7x7s at batch 64 at 9-15 % of copy
    bandwidth in NCHW (96x56: 121 us, its bytes 18; Nov 2026), under the 65 % a float32 FMA rate
    allows them at best. A thread block takes one channel and a few images: it builds the channel's
    band (kh x 32 x 16 values) and stages the images' padded planes (rows of whole tiles plus the
    kernel's, columns from 8 before the input's, so every A tile starts 32-byte aligned) in shared
    memory, each warp keeps the 2 kh band fragments in registers and runs its tiles (the A tiles
    loaded from the staged plane by the product itself: WMMA_SYNC_SHARED_A), each tile leaving
    through shared memory with the epilogue applied on the way to 4-lane vector stores. By
    nvdisasm's count (sm_90, batch 64; scripts/issue_bound.py's) ConvNeXt's float16 96x56 issues 30
    instructions an output, 192x28 33, 384x14 51, against 152, 114 and 115 as the NCHW kernels are
    served tuned: on the 96x56 17 us of issue, not 87 (timed 121). The staged planes are copied a
    value a load: TVM scalarizes the padding's test even where it holds for whole vectors (the
    decomposed fill and copy race without a barrier between them), 6 of the 30. Untimed as yet: it
    serves the banded variant only, which it offers as an `alternative`: tuning candidates beside the
    plain conv (scripts/gpu_bundles.sh), built and called in its place once a GPU's timings of the two
    say it is faster (gconvgen.schedule.timed_spec). Applies to banded specs only (see
    KernelSpec.bandable: stride 1, undilated, kernel rows within the band)."""

    name = "cuda.DepthwiseTensorCoreNCHW"
    takes_banded = True

    def __init__(self, warps: int = 4, tiles_per_warp: int = 8, stage_bytes: int = 32768) -> None:
        self.warps = warps
        self.tiles_per_warp = tiles_per_warp
        self.stage_bytes = stage_bytes

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "cuda" and spec.banded and self._staged_bytes(spec) <= SHARED_BYTES

    @staticmethod
    def _plane(spec) -> tuple[int, int]:
        """An image's output tiles and the bytes of its staged padded plane (whole tiles of rows
        plus the kernel's, whole tiles of columns plus one: gconvgen.ops.conv.banded_depthwise)."""
        rows, columns = _ceil_div(spec.out_height, _FRAG), _ceil_div(spec.out_width, _FRAG)
        return rows * columns, 2 * (rows * _FRAG + spec.kernel[0] - 1) * (columns + 1) * _FRAG

    @classmethod
    def _staged_bytes(cls, spec) -> int:
        """Shared memory of a block of one image: its padded plane, the band and 4 warps' float32
        tiles (a block's static and dynamic shared memory, which TVM keeps within 48 KB)."""
        return cls._plane(spec)[1] + 2 * spec.kernel[0] * 2 * _FRAG ** 2 + 4 * 4 * _FRAG ** 2

    def alternative(self, spec, target: Target):
        """spec's banded variant where it has one, its kernel is 5 or more wide (a 3x3's band would be
        mostly zeros: its depthwise convs are memory-bound anyway), its planes are 12x12 or more (a
        7x7 plane fills a fifth of its tile: 251 instructions an output) and a block's stage fits
        (planes up to about 120x120); else None."""
        variant = replace(spec, banded=True) if spec.bandable and not spec.banded else None
        return (variant if variant is not None and spec.kernel[1] >= 5 and min(spec.out_height, spec.out_width) >= 12
                and self.applies(variant, target) else None)

    def _images(self, spec) -> int:
        """Images a block: the most dividing the batch whose tiles fit the warps' share and whose
        staged planes fit `stage_bytes`."""
        tiles, plane = self._plane(spec)
        fits = [d for d in range(1, spec.batch + 1) if spec.batch % d == 0
                and d * tiles <= self.warps * self.tiles_per_warp and d * plane <= self.stage_bytes]
        return max(fits, default=1)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        from gconvgen import tensor_intrin
        from gconvgen.ops.conv import band_lanes
        tensor_intrin.load()   # (before TVM's intrinsics are imported: see gconvgen.tensor_intrin)
        from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group
        wmma = get_wmma_intrin_group(load_scope="shared.dyn", store_scope="shared", in_dtype="float16",
                                     out_dtype="float32", trans_b=False)
        conv, out, pad, band = (sch.get_sblock(name) for name in ("conv", "out", "pad", "band"))
        images = self._images(spec)
        warps = min(self.warps, images * self._plane(spec)[0])
        n, c, h, w, rh, rj = sch.get_loops(conv)
        no, ni = sch.split(n, [None, images])
        (ho, hi), (wo, wi), (jo, ji) = (sch.split(loop, [None, _FRAG]) for loop in (h, w, rj))
        sch.reorder(c, no, ni, ho, wo, rh, jo, hi, wi, ji)
        product = sch.blockize(hi)
        block = sch.fuse(c, no)
        sch.bind(block, "blockIdx.x")
        tile, warp = sch.split(sch.fuse(ni, ho, wo), [None, warps])
        sch.reorder(warp, tile)
        sch.bind(warp, "threadIdx.y")
        sch.unroll(tile)
        band_fragments = sch.cache_read(product, 1, "wmma.matrix_b")
        sch.compute_at(band_fragments, warp)   # (each warp's 2 kh fragments, for all its tiles)
        staged_tile = sch.cache_write(product, 0, "shared")
        accumulator = sch.cache_write(product, 0, "wmma.accumulator")
        for consumer in (accumulator, staged_tile, out):
            sch.reverse_compute_at(consumer, tile)
        sch.compute_inline(sch.get_sblock("conv_shared"))   # (the epilogue reads the staged tile)
        # the planes and the band by all the block's threads, the planes' rows in vectors of the
        # pad stage's lanes (whose test the compute puts on whole vectors)
        for stage, vector in ((pad, band_lanes(spec)), (band, 1)):
            sch.compute_at(stage, block)
            sch.set_scope(stage, 0, "shared.dyn")
            *loops, last = sch.get_loops(stage)[1:]
            run, lane = sch.split(last, [None, vector])
            rounds, ty, tx = sch.split(sch.fuse(*loops, run), [None, warps, 32])
            sch.bind(ty, "threadIdx.y")
            sch.bind(tx, "threadIdx.x")
            sch.unroll(rounds)
            sch.vectorize(lane)
        out_lanes = next(v for v in (4, 2, 1) if spec.out_width % v == 0)   # (TVM's CUDA has no 8-lane float32)
        _, tx, lane = sch.split(sch.fuse(*sch.get_loops(out)[-2:]), [None, 32, out_lanes])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(lane)
        init = sch.decompose_reduction(product, sch.get_loops(product)[-2])
        rows, columns = sch.get_loops(band_fragments)[-2:]
        outer, inner = sch.split(rows, [None, _FRAG])
        sch.reorder(outer, inner, columns)
        sch.tensorize(inner, wmma["load_b"])
        sch.tensorize(sch.get_loops(accumulator)[-2], wmma["store"])
        sch.tensorize(sch.get_loops(sch.get_child_blocks(init)[0])[-2], wmma["init"])
        sch.tensorize(sch.get_loops(sch.get_sblock("conv"))[-3], tensor_intrin.WMMA_SYNC_SHARED_A)


class ChannelVectorNHWC(ScheduleRule):
    """Any conv (and pooling) in NHWC: a thread per (pixel, vector of 4 output channels), so each
    tap's load, the weight's and the store are one wide access (16 bytes in float32, 8 in float16),
    and a block's threads run over all channel vectors of a run of pixels in one output row, so a
    warp's accesses are contiguous; window taps unrolled, their reuse left to L1. In a grouped,
    pointwise or dense conv the vector stays inside one group, so each input channel is one load
    (the same address across the pixel's threads) serving 4 outputs. Every split divides its loop,
    which keeps the thread mapping affine (TVM vectorizes the accumulation only then). Tunable: the
    channel vectors a block takes, the pixels a block and a thread take (windows and strided convs
    too, which the untuned rule keeps at one pixel a thread). An output shuffle is fused into the
    stores (_unshuffle), which are then a scalar each. Does not apply to NCHW."""

    name = "cuda.ChannelVectorNHWC"

    def __init__(self, threads: int = 256) -> None:
        self.threads = threads

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and (spec.op == "conv2d" or spec.op_class == "pool")
                and spec.layout == "NHWC")

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        window = spec.op_class in ("depthwise", "pool")
        # 4 lanes in either dtype: float16 would fit 8 in 16 bytes, but TVM's CUDA codegen cannot
        # emit the 8-lane float32 accumulator (it writes a make_ulonglong4 of 8 floats); float16
        # vectors are of 2 or 4 (it has no half3)
        channels = spec.out_channels if window else spec.out_channels // spec.groups
        lanes = divisor_at_most(channels, 4) if spec.dtype == "float32" else _power_of_two_dividing(channels, 4)
        vectors = spec.out_channels // lanes
        per_block = divisor_at_most(vectors, self.threads)   # channel vectors a block takes
        # Outside windows, at stride 1, a thread takes up to 4 adjacent pixels of a row, so each
        # weight vector it loads serves all of them (loads, not multiply-adds, bound these layers),
        # while 128K threads remain to keep an H100/H200's multiprocessors busy. On an H200 at batch
        # 64 this took ResNeXt's g32 128x56 from 236 to 136 µs and ShuffleNet's 1x1s about 2x; at
        # stride 2 it made the 256 s2 layer slower (232 -> 351 µs). Windows keep one pixel a thread:
        # their taps' reuse across a thread's pixels is not measured yet
        units = spec.batch * spec.out_height * spec.out_width * vectors
        pixels = 1 if window or spec.stride != (1, 1) else _pixels_leaving(spec.out_width, units, 4, 1 << 17)
        # pixels of one output row a block takes (a run crossing rows would make the mapping non-affine)
        run = divisor_at_most(spec.out_width // pixels, max(1, self.threads // per_block))
        tx, wp, cv = _pixel_runs_by_channel_vectors(sch, out, lanes, per_block, run, pixels, tunable)
        sch.unroll(wp)
        if spec.shuffle_groups > 1:   # the vector's channels land shuffle-groups apart: a store each
            sch.unroll(cv)
        else:
            sch.vectorize(cv)
        spatial, red = _accumulate_in_thread(sch, conv, tx)
        if red:
            sch.reorder(*red, *spatial)   # the channel vector innermost, under the reductions
            taps = red[1:] if not window else red   # the input channels stay a loop
            for loop in taps + spatial[:-1]:
                sch.unroll(loop)
            sch.vectorize(spatial[-1])   # before the split into init and update: TVM vectorizes a reduction
            sch.decompose_reduction(conv, red[0])


class DepthwiseWideNHWC(ScheduleRule):
    """Depthwise conv in NHWC with 16-byte loads in either dtype and the taps reused in registers:
    a thread per run of `pixels` adjacent outputs of a row (up to 4 at stride 1, 8 for a kernel 5 or
    more wide, 2 at stride 2) x
    16 bytes of channels (8 in float16, 4 in float32); for each kernel row it loads the input
    columns all its pixels' taps cover ((pixels - 1) x stride + kw of them) and the row's weights
    into registers, one 16-byte load each, then accumulates in float32 from there, 4 lanes at a
    time (TVM's CUDA codegen cannot emit an 8-lane float32 vector). ChannelVectorNHWC loads 8 bytes
    a tap in float16 and each tap of each pixel anew; on an H200 its float16 stride-1 layers reached
    33-39 % of copy bandwidth. Serves (listed before ChannelVectorNHWC) wherever it applies: on an
    H200 at batch 64 (Nov 2026, each rule's own schedule) it was faster on 34 of the suite's 38 NHWC
    depthwise kernels, 1.3-3.3x on ConvNeXt's 7x7s (96x56 float32 90 us against 289) and MobileNetV2's
    large planes (32x112 float16 39 against 63), and at most 4 % slower (float32 at stride 2) but for
    one float16 layer at stride 2 (576x14: 8.3 against 6.9). Tunable: the channel vectors a block
    takes, the pixels a block and a thread take. Does not apply to NCHW, grouped or dense convs,
    pooling, an output shuffle, dilation, kernels of one row or column (they have no kernel row to
    stage by), or a channel multiplier not a power of two (a vector of 4 output channels then reads
    input channels not starting at a whole vector: a GPU faults on the load)."""

    name = "cuda.DepthwiseWideNHWC"

    def __init__(self, threads: int = 256, bytes_per_load: int = 16) -> None:
        self.threads = threads
        self.bytes_per_load = bytes_per_load

    def applies(self, spec, target: Target) -> bool:
        multiplier = spec.out_channels // spec.in_channels
        return (target.kind.name == "cuda" and spec.op_class == "depthwise" and spec.layout == "NHWC"
                and spec.shuffle_groups == 1 and spec.dilation == (1, 1) and min(spec.kernel) > 1
                and multiplier & (multiplier - 1) == 0)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        lanes = _power_of_two_dividing(spec.out_channels, self.bytes_per_load * 8 // dtype_bits(spec.dtype))
        math_lanes = min(lanes, 4)
        per_block = divisor_at_most(spec.out_channels // lanes, self.threads)
        # more pixels share a wide kernel's taps: 7x7's stage 13 columns a row for 7 pixels, not 10 for 4
        most = (8 if spec.kernel[1] >= 5 else 4) if spec.stride == (1, 1) else 2
        pixels = divisor_at_most(spec.out_width, most)
        run = divisor_at_most(spec.out_width // pixels, max(1, self.threads // per_block))
        tx, wp, cv = _pixel_runs_by_channel_vectors(sch, out, lanes, per_block, run, pixels, tunable)
        cvo, cvi = sch.split(cv, factors=[None, math_lanes])
        sch.unroll(wp)
        sch.unroll(cvo)
        sch.vectorize(cvi)
        spatial, (rh, rw) = _accumulate_in_thread(sch, conv, tx)
        _, _, pw, pc = spatial
        pco, pci = sch.split(pc, factors=[None, math_lanes])
        sch.reorder(rh, rw, pw, pco, pci)
        for loop in (rw, pw, pco):
            sch.unroll(loop)
        sch.vectorize(pci)
        # the kernel row's input columns and weights, staged in registers one 16-byte load each
        stages = [sch.get_sblock("pad")] if has_block(sch, "pad") else [sch.cache_read(conv, 0, "local")]
        stages.append(sch.cache_read(conv, 1, "local"))
        depth = len(sch.get_loops(conv)) - 4   # the loops down to rh
        for stage in stages:
            sch.compute_at(stage, rh, preserve_unit_loops=True)
            sch.set_scope(stage, 0, "local")
            *outer, lane = sch.get_loops(stage)[depth:]
            for loop in outer:
                sch.unroll(loop)
            sch.vectorize(lane)
        sch.unroll(rh)
        sch.decompose_reduction(conv, rh)


class DepthwiseRowsNHWC(ScheduleRule):
    """Depthwise conv in NHWC with a kernel 5 or more wide (ConvNeXt's 7x7, EfficientNet's 5x5), at
    stride 1: a thread per output channel and `rows` x `pixels` outputs of it, its kh x kw weights
    loaded into registers once and reused for all of them; for each output row and kernel row the
    thread loads the input columns its pixels cover (pixels + kw - 1), one scalar each, a warp's 32
    adjacent channels one 128-byte (float16: 64-byte) access. A 7x7 tap set costs 49 multiply-adds an
    output, so these layers need the FMAs fed from registers: 8 pixels a thread make 4 multiply-adds a
    load (the L1's rate to the FMAs' on an H100/H200), where DepthwiseWideNHWC loads the kernel row's
    weights with its 16-byte input columns for every output row (2.7 a load). On an H200 ConvNeXt's
    7x7s reached 15-28 % of copy bandwidth in float32 on the best of the other rules. An
    alternative, served through tuned records: on an H200 (Nov 2026) it beat DepthwiseWideNHWC on
    three of ConvNeXt's four float16 7x7s (96x56 79 us against 99) but lost the 192x28 (61 against
    51) and all four in float32. Tunable: the rows and pixels a thread takes, the
    channels and pixel runs a block takes. Does not apply to NCHW, kernels under 5 wide, strides,
    dilation, or an output shuffle."""

    name = "cuda.DepthwiseRowsNHWC"

    def __init__(self, threads: int = 256, pixels: int = 8, rows: int = 4, min_threads: int = 1 << 17) -> None:
        self.threads, self.pixels, self.rows, self.min_threads = threads, pixels, rows, min_threads

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and spec.op_class == "depthwise" and spec.layout == "NHWC"
                and spec.shuffle_groups == 1 and spec.dilation == (1, 1) and spec.stride == (1, 1)
                and spec.kernel[1] >= 5)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        pixels = divisor_at_most(spec.out_width, self.pixels)
        units = spec.batch * spec.out_height * spec.out_width * spec.out_channels // pixels
        rows = _pixels_leaving(spec.out_height, units, self.rows, self.min_threads)   # threads stay many
        per_block = divisor_at_most(spec.out_channels, self.threads)
        run = divisor_at_most(spec.out_width // pixels, max(1, self.threads // per_block))
        hr, tx, wp, _ = _pixel_runs_by_channel_vectors(sch, out, 1, per_block, run, pixels, tunable, rows)
        sch.unroll(wp)
        # the weights once a thread, above its rows; the accumulators and the input columns per row
        weights = sch.cache_read(conv, 1, "local")
        sch.compute_at(conv, hr, preserve_unit_loops=True)
        sch.set_scope(conv, 0, "local")
        *_, pw, pc, rh, rw = sch.get_loops(conv)
        sch.reorder(rh, rw, pw, pc)
        for loop in (rw, pw, pc):
            sch.unroll(loop)
        columns = sch.get_sblock("pad") if has_block(sch, "pad") else sch.cache_read(conv, 0, "local")
        sch.compute_at(columns, rh, preserve_unit_loops=True)
        sch.set_scope(columns, 0, "local")
        sch.compute_at(weights, tx, preserve_unit_loops=True)
        for stage in (columns, weights):
            for loop in sch.get_loops(stage)[-4:]:
                sch.unroll(loop)
        sch.unroll(rh)
        sch.decompose_reduction(conv, rh)


class PointwiseTiledNCHW(ScheduleRule):
    """1x1 conv in NCHW, dense or grouped, as a GEMM per image and group, out[o, p] = sum_k w[o, k]
    x[k, p]: a thread block per tile of (up to) 64 output channels of a group x 64 pixels, up to
    16x16 threads each accumulating 4 channels x 4 adjacent pixels in registers. The reduction runs
    in chunks of up to 16 input
    channels whose weight and input tiles are first staged in shared memory by all threads (the
    input with 4-wide vector loads), so each value fetched serves 64 multiply-adds instead of the
    4 of GroupConvNCHW's thread per pixel; a thread's 4 pixels are one vector in shared memory and
    one 4-wide store. A plane whose pixels are no multiple of 4 (7x7 at batch 64) is one tile of
    7 threads x 7 pixels, staged and stored a scalar at a time: GroupConvNCHW took 267 µs on an
    H200 for MobileNetV2's 960->320 at 7x7 there, torch 20. Every split divides its extent (the
    thread counts are chosen so), which keeps the loads and stores vectorized. An output shuffle
    (ShuffleNet v1) is fused into the stores (_unshuffle). Tunable: the chunk. Does not apply to
    strided or padded convs, groups of fewer than 8 input channels, where pixels a plane (at least
    `min_pixels`) or a group's output channels do not tile, or where the tiles would not make
    `min_blocks` thread blocks (a 56x56 layer at batch 1 with 24 output channels makes 49: too few
    for a GPU of 132 multiprocessors, which the thread per pixel fills)."""

    name = "cuda.PointwiseTiledNCHW"

    def __init__(self, threads: int = 16, per_thread: int = 4, chunk: int = 16, min_pixels: int = 49,
                 min_blocks: int = 128) -> None:
        self.threads = threads
        self.per_thread = per_thread
        self.chunk = chunk
        self.min_pixels = min_pixels
        self.min_blocks = min_blocks

    def _pixels(self, spec) -> int:
        """Adjacent pixels a thread takes: `per_thread`, or else the largest divisor of the plane up
        to 8 (7 of a 7x7 plane)."""
        pixels = spec.height * spec.width
        return self.per_thread if pixels % self.per_thread == 0 else divisor_at_most(pixels, 8)

    def _tiles(self, spec) -> tuple[int, int]:
        """Threads along a group's channels and along the pixels (each dividing its axis in a thread's units)."""
        per_group = spec.out_channels // spec.groups
        if per_group % self.per_thread:
            return 0, 0
        return (divisor_at_most(per_group // self.per_thread, self.threads),
                divisor_at_most(spec.height * spec.width // self._pixels(spec), self.threads))

    def applies(self, spec, target: Target) -> bool:
        ty, tx = self._tiles(spec)
        pixels = spec.height * spec.width
        blocks = spec.batch * spec.out_channels // (self.per_thread * ty) * pixels // (self._pixels(spec) * tx) \
            if ty and tx else 0
        return (target.kind.name == "cuda" and _plain_1x1(spec) and spec.layout == "NCHW" and spec.weight_layout == "OIHW" and spec.in_channels // spec.groups >= 8
                and pixels >= self.min_pixels and ty >= 4 and tx >= 7 and blocks >= self.min_blocks)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        v, vp = self.per_thread, self._pixels(spec)
        lanes = vp if vp in (2, 4) else 1   # a vector type's lanes; 7 pixels are 7 scalars
        ty, tx = self._tiles(spec)
        flatten_pixels(sch, conv, out, spec.width)   # pixel tiles become boxes: conv (n, o, p, k), out (n, o, p)
        stage_x = sch.cache_read(conv, 0, "shared")  # the input tile, flattened the same way
        sch.transform_layout(stage_x, ("write", 0), lambda n, k, h, w: (n, k, h * spec.width + w))
        sch.transform_block_layout(stage_x, lambda n, k, h, w: (n, k, h * spec.width + w))
        # the weight tile, input channels outermost: a warp's rows of channels read distinct banks
        # (output-channel-major, every row of threads read the same bank: 16 x 7 threads made it
        # 5-way); its rows padded by 4 words, so the copy's transposed stores conflict 2-way, not 16
        stage_w = sch.cache_read(conv, 1, "shared")
        sch.transform_layout(stage_w, ("write", 0), lambda o_, c, kh, kw: (c, kh, kw, o_))
        sch.storage_align(stage_w, 0, axis=2, factor=32, offset=4)
        n, o, p = sch.get_loops(out)
        ob, oy, oi = sch.split(o, factors=[None, ty, v])
        pb, px, pi = sch.split(p, factors=[None, tx, vp])
        sch.reorder(n, ob, pb, oy, px, oi, pi)
        sch.bind(sch.fuse(n, ob, pb), "blockIdx.x")
        sch.bind(oy, "threadIdx.y")
        sch.bind(px, "threadIdx.x")
        if lanes > 1:
            sch.vectorize(pi)
        else:
            sch.unroll(pi)
        sch.compute_at(conv, px, preserve_unit_loops=True)
        sch.set_scope(conv, 0, "local")
        co, cp, k = sch.get_loops(conv)[-3:]
        ko, ki = split(sch, k, divisor_at_most(spec.in_channels // spec.groups, self.chunk), tunable, max_inner=32)
        sch.reorder(ko, ki, co, cp)
        sch.unroll(co)
        sch.unroll(cp)
        depth = len(sch.get_loops(conv)) - 3   # the loops down to ko
        for stage, width in ((stage_x, lanes), (stage_w, 1)):   # staged by all threads together, once per chunk
            sch.compute_at(stage, ko, preserve_unit_loops=True)
            fused = sch.fuse(*sch.get_loops(stage)[depth:])
            _, sy, sx, lane = sch.split(fused, factors=[None, ty, tx, width])
            sch.bind(sy, "threadIdx.y")
            sch.bind(sx, "threadIdx.x")
            sch.vectorize(lane)
        sch.decompose_reduction(conv, ko)


class BatchGemm(ScheduleRule):
    """Grouped, pointwise and dense conv, either layout, as a GEMM per group over all the batch's
    pixels (_as_group_gemms: an implicit one, the input's taps gathered as its tile is staged), so a
    7x7 or 14x14 plane at batch 64 makes tiles as large as a 56x56 one: a thread block per tile of
    a group's output channels x pixels, each thread accumulating (by default) 4 channels x 8 pixels
    in registers from chunks of the reduction staged in shared memory by all threads, the loads
    running along the input's contiguous axis (pixels in NCHW, 4-lane vectors for a 1x1 at stride
    1; channels in NHWC, 4-lane vectors where a group's are whole vectors), a thread's pixels read
    from shared memory as whole vectors, its stores vectors along the contiguous axis too. The
    default tiles shrink until they make `min_blocks` blocks (two for each of an H200's 132
    multiprocessors) where they can, and a chunk's staged tiles within `stage_bytes`. The
    other rules tile one image at a time (a 7x7 plane is one NCHW tile of 49 pixels), split each
    output's sum over threads, or take a few channels of a pixel a thread (ChannelVectorNHWC): on
    an H200 at batch 64 MobileNetV2's 960->320 at 7x7 took 117 µs in NCHW and 267 in NHWC in
    float32 with them (torch 20), ResNeXt's g32 1024x7 148 and 229 (torch 42). Listed after
    them, so it serves through tuned records: on an H200 (Nov 2026) its timed candidates won the
    g32 1024x7 in float32 (137 us against GroupConvStagedNCHW's 149) and two NHWC float32 1x1s, and
    lost the layers with small groups by 1.5-4x. An output shuffle is fused into the
    stores (_unshuffle). Tunable: the threads and a thread's outputs along each axis, the chunk.
    Does not apply to depthwise convs (a GEMM of one input channel, with a channel multiplier too),
    dilation, blocked weights, or where the default tiles make fewer than `min_blocks` / 4 blocks
    (a batch-1 7x7 layer)."""

    name = "cuda.BatchGemm"

    def __init__(self, per_thread: tuple[int, int] = (4, 8), threads: int = 256, chunk: int = 16,
                 min_blocks: int = 264, stage_bytes: int = 32768) -> None:
        self.per_thread = per_thread
        self.threads = threads
        self.chunk = chunk
        self.min_blocks = min_blocks
        self.stage_bytes = stage_bytes

    @staticmethod
    def _lanes(spec) -> tuple[int, int, int]:
        """A vector's pixels and output channels in the tiles, and its lanes in the input's loads.
        Pixels: 4 where the batch's pixels are whole vectors (in NCHW one that crosses into the
        next image is stored a pixel at a time). Channels: in NHWC, 4 where a group's are whole
        vectors. Loads: along the pixels in NCHW where the tile's are the input's own (a 1x1 at
        stride 1; the taps of others are not aligned), along a group's channels in NHWC."""
        pixels = 4 if spec.batch * spec.out_height * spec.out_width % 4 == 0 else 1
        if spec.layout == "NHWC":
            per, cig = spec.out_channels // spec.groups, spec.in_channels // spec.groups
            return pixels, 4 if per % 4 == 0 else 1, 4 if cig % 4 == 0 else 1
        plain = spec.kernel == (1, 1) and spec.stride == (1, 1) and not any(spec.padding)
        return pixels, 1, pixels if plain else 1

    @staticmethod
    def _gemm(spec) -> tuple[int, int, int]:
        """A group's GEMM: output channels, pixels of the batch, reduction."""
        return (spec.out_channels // spec.groups, spec.batch * spec.out_height * spec.out_width,
                spec.in_channels // spec.groups * spec.kernel[0] * spec.kernel[1])

    def _tiles(self, spec) -> tuple:
        """((ty, tm), (tx, tn), chunk): threads and a thread's vectors along a group's output
        channels and along the pixels, and the reduction's chunk."""
        m, j, k = self._gemm(spec)
        lanes, clanes, _ = self._lanes(spec)
        tm = divisor_at_most(m // clanes, max(1, self.per_thread[0] // clanes))
        ty = divisor_at_most(m // (clanes * tm), 32)
        tn = divisor_at_most(j // lanes, max(1, self.per_thread[1] // lanes))
        units = j // (lanes * tn)
        tx = divisor_at_most(units, max(1, self.threads // ty), prefer_multiple_of=8)
        blocks = spec.groups * (m // (ty * tm * clanes))
        while tx > 8 and blocks * units // tx < self.min_blocks:   # more, smaller blocks
            tx = divisor_at_most(units, tx - 1, prefer_multiple_of=8)
        kv = self._lanes(spec)[2] if spec.layout == "NHWC" else 1   # (whole vectors of the loads)
        chunk = kv * divisor_at_most(k // kv, max(1, self.chunk // kv))
        if chunk < 8 and k <= 64:   # (58 input channels: one chunk, not 29 of 2)
            chunk = k
        # a chunk's input and weight tiles within stage_bytes of (static) shared memory, where a
        # group's few output channels leave all the threads on pixels (ResNeXt's g32 at 56x56:
        # 2048 pixels x 12 of the reduction, 98 KB, past the 48 KB a block may have)
        def staged() -> int:
            return chunk * (tx * tn * lanes + ty * tm * clanes) * dtype_bits(spec.dtype) // 8
        while staged() > self.stage_bytes and chunk > kv:
            chunk = kv * divisor_at_most(k // kv, chunk // kv - 1)
        while staged() > self.stage_bytes and tx > 8:
            tx = divisor_at_most(units, tx - 1, prefer_multiple_of=8)
        return (ty, tm), (tx, tn), chunk

    def applies(self, spec, target: Target) -> bool:
        if not (target.kind.name == "cuda" and spec.op == "conv2d" and spec.weight_layout in ("OIHW", "HWIO")
                and spec.dilation == (1, 1)):
            return False
        m, _, k = self._gemm(spec)
        if spec.op_class == "depthwise" or m < 4 or k < 8:   # (depthwise: a GEMM of one row per output channel)
            return False
        return self._blocks(spec) >= self.min_blocks // 4

    def _blocks(self, spec) -> int:
        """Blocks of the default tiles."""
        m, j, _ = self._gemm(spec)
        (ty, tm), (tx, tn), _ = self._tiles(spec)
        lanes, clanes, _ = self._lanes(spec)
        return spec.groups * (m // (ty * tm * clanes)) * j // (tx * tn * lanes)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        (ty, tm), (tx, tn), chunk = self._tiles(spec)
        lanes, clanes, load_lanes = self._lanes(spec)
        nhwc = spec.layout == "NHWC"
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        _as_group_gemms(sch, spec)
        x = sch.reindex(conv, ("read", 0))   # x[g, j, k]
        wt = sch.reindex(conv, ("read", 1))   # w[g, o, k]
        g, o, j = sch.get_loops(out)
        o, lo = sch.split(o, factors=[None, clanes])   # whole vectors, not sampled
        j, lj = sch.split(j, factors=[None, lanes])
        # sampled tiles of at most 8 channels x 8 pixels x a chunk of 16, so the unrolled chunk stays
        # at most 1024 multiply-adds (with 32 channels and chunks of 32 it was 8192)
        of = tile_factors(sch, o, (ty, tm), tunable, max_inner=max(tm, 8 // clanes))
        jf = tile_factors(sch, j, (tx, tn), tunable, max_inner=2)
        (bo, to, io), (bj, tj, ij) = sch.split(o, factors=of), sch.split(j, factors=jf)
        # a thread's outputs, the layout's contiguous axis innermost: one vector store
        inner = (ij, lj, io, lo) if nhwc else (io, lo, ij, lj)
        sch.reorder(bj, g, bo, to, tj, *inner)
        sch.bind(sch.fuse(bj, g, bo), "blockIdx.x")
        sch.bind(to, "threadIdx.y")
        sch.bind(tj, "threadIdx.x")
        for loop in inner[:-1]:
            sch.unroll(loop)
        sch.vectorize(inner[-1])   # (a loop of one where there are no vectors)
        sch.compute_at(conv, tj, preserve_unit_loops=True)
        sch.set_scope(conv, 0, "local")
        co, cj, k = sch.get_loops(conv)[-3:]
        # in NHWC a chunk is whole vectors of the input's loads (aligned, none split between chunks)
        kl = load_lanes if nhwc else 1
        k, kv = sch.split(k, factors=[None, kl])
        ko, ki = split(sch, k, chunk // kl, tunable, max_inner=16 // kl)
        sch.reorder(ko, ki, kv, co, cj)
        for loop in (ki, kv, co, cj):
            sch.unroll(loop)
        stage_x = sch.cache_read(conv, 0, "shared")
        stage_w = sch.cache_read(conv, 1, "shared")
        for block in (x, wt):
            sch.compute_inline(block)
        _inline_pad(sch)   # (into the input's stage: the padding is a predicate on its loads)
        for stage in (stage_x, stage_w):   # k outer (the group's axis is left out for one group)
            if len(sch.get(stage).writes[0].region) == 3:
                sch.transform_layout(stage, ("write", 0), lambda g_, a, k_: (g_, k_, a))
            else:
                sch.transform_layout(stage, ("write", 0), lambda a, k_: (k_, a))
        depth = len(sch.get_loops(conv)) - 4   # the loops down to ko
        # both tiles staged by all threads together, once per chunk, the loads running along the
        # operand's contiguous axis (x's pixels in NCHW, its channels in NHWC; w's input channels
        # in OIHW, a kernel's taps apart, its output channels in HWIO); whole vectors, so a ragged
        # last round is a predicate on them
        for stage, lanes_, along_k in ((stage_x, load_lanes, nhwc), (stage_w, clanes, not nhwc)):
            sch.compute_at(stage, ko, preserve_unit_loops=True)
            loops = sch.get_loops(stage)[depth:]   # (x[g, j, k] or w[g, o, k], g where there are groups)
            if not along_k:
                sch.reorder(loops[-1], loops[-2])
                loops = [*loops[:-2], loops[-1], loops[-2]]
            run, lane = sch.split(loops[-1], factors=[None, lanes_])
            _, sy, sx = sch.split(sch.fuse(*loops[:-1], run), factors=[None, of[1], jf[1]])
            sch.bind(sy, "threadIdx.y")
            sch.bind(sx, "threadIdx.x")
            sch.vectorize(lane)
        # a thread's pixels of a chunk's row into registers as whole vectors (a half's loads from
        # shared memory are not merged by nvcc as a float's are)
        x_regs = sch.cache_read(conv, 0, "local")
        sch.compute_at(x_regs, kv, preserve_unit_loops=True)
        run = sch.fuse(*sch.get_loops(x_regs)[depth + 3:])
        _, lane = sch.split(run, factors=[None, lanes])
        sch.vectorize(lane)
        sch.decompose_reduction(conv, ko)


class SplitReductionNCHW(ScheduleRule):
    """Grouped, pointwise and dense convs in NCHW with too few outputs to fill a GPU with a thread
    each but a long reduction each (1x1 convs on 7x7 and 14x14 planes at batch 1, the classifier):
    a thread block per 32 consecutive outputs (threadIdx.x, so input loads and stores coalesce along
    the plane, and the weight's loads are the same address across a warp) times `slices` threads
    along the reduction (threadIdx.y), each summing a contiguous slice of it in a register (a few
    loads in flight), then the slices summed across threads in shared memory (TVM's cross-thread
    reduction) and the epilogue run by the first slice. With a thread per output (GroupConvNCHW) a
    7x7 layer at batch 1 keeps a few warps per multiprocessor, each waiting on a serial chain of
    hundreds of loads from L2: 130 µs on an H200 for MobileNetV2's 960->320 (12 µs split; torch 8),
    50 -> 6 µs for 384->64 at 14x14. An output shuffle is fused into the stores (_unshuffle).
    The slices (up to `slices`) stop at `max_threads` threads in all and at slices of `min_slice`:
    on an H200 (Nov 2026) 16 slices of 9 took 16.6 µs for MobileNetV2's 144->24 at 56x56, 75K
    outputs (1.2M threads), and 2 of 72 7.3; 160->960 at 7x7 12.0 as 16 of 10 and 5.5 as 4 of 40.
    Does not apply to depthwise, NHWC, fewer than 4 slices so (a short reduction, or as many outputs
    as the GPU has threads: there GroupConvStagedNCHW took 5.0-6.6 µs where 16 slices took 7-17), or
    more than `max_outputs` outputs: there a thread each, reusing its loads over 4 channels, fills
    the GPU (ResNeXt's g32 512x14x14, 100K outputs, took 21 µs split against 17.5 a thread each).
    Tunable: the slices."""

    name = "cuda.SplitReductionNCHW"

    def __init__(self, slices: int = 16, max_outputs: int = 81920, min_slice: int = 16,
                 max_threads: int = 1 << 18) -> None:
        self.slices = slices
        self.max_outputs = max_outputs
        self.min_slice = min_slice
        self.max_threads = max_threads

    @staticmethod
    def _reduction(spec) -> int:
        return spec.in_channels // spec.groups * spec.kernel[0] * spec.kernel[1]

    def _slices(self, spec) -> int:
        """The reduction's slices: a power of two dividing it, up to `slices`, each slice at least
        `min_slice` long, a thread per output and slice making at most `max_threads`."""
        k, r = self._reduction(spec), 1
        outputs = spec.batch * spec.out_channels * spec.out_height * spec.out_width
        while (r < self.slices and k % (2 * r) == 0 and k // (2 * r) >= self.min_slice
               and outputs * 2 * r <= self.max_threads):
            r *= 2
        return r

    def applies(self, spec, target: Target) -> bool:
        outputs = spec.batch * spec.out_channels * spec.out_height * spec.out_width
        return (target.kind.name == "cuda" and spec.op == "conv2d" and spec.op_class != "depthwise"
                and spec.layout == "NCHW" and outputs <= self.max_outputs and self._slices(spec) >= 4)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        k = self._reduction(spec)
        red = sch.get_loops(conv)[4:]
        red = sch.fuse(*red) if len(red) > 1 else red[0]
        ry, _ = sch.split(red, factors=tile_factors(sch, red, k // self._slices(spec), tunable, max_inner=k // 2))
        rf = sch.rfactor(ry, factor_axis=0)   # rf[ry, ...]: each slice's sum; conv sums the slices
        n, o, h, w = sch.get_loops(out)
        # runs inside a plane (flat ones would not be affine); also, the last run predicated, where a
        # row's width divides 32 but the plane's size neither divides 32 nor is a multiple: across
        # planes there (a 6x8 plane, say) TVM simplifies the threads' rows to a form its cross-thread
        # reduction refuses as not affine
        plane, width = spec.out_height * spec.out_width, spec.out_width
        if plane % 32 == 0 or (width > 1 and 32 % width == 0 and 32 % plane != 0):
            po, tx = sch.split(sch.fuse(h, w), factors=[None, 32])
            bx = sch.fuse(n, o, po)
        else:   # runs across an image's planes (across images too, TVM's compute_at below refuses)
            po, tx = sch.split(sch.fuse(o, h, w), factors=[None, 32])
            bx = sch.fuse(n, po)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        # the sum's one loop (at least 2 slices are sampled) must be innermost for the cross-thread
        # reduction; the slice's unit loops are kept, so a trace's loop counts do not depend on samples
        sch.compute_at(conv, tx)
        sch.compute_at(rf, tx, preserve_unit_loops=True)
        sch.bind(sch.get_loops(conv)[2], "threadIdx.y")   # the sum over the slices: across threads
        sch.set_scope(conv, 0, "local")
        loops = sch.get_loops(rf)
        ry, rk = loops[2], loops[-1]
        sch.bind(ry, "threadIdx.y")
        sch.set_scope(rf, 0, "local")
        rko, rki = sch.split(rk, factors=[None, divisor_at_most(int(sch.get(rk).extent), 4)])
        sch.unroll(rki)   # a few loads in flight per thread
        sch.decompose_reduction(rf, rko)


class GroupConvNCHW(ScheduleRule):
    """Grouped, pointwise and dense conv in NCHW: a thread per output pixel (threads of a block run
    along a row, so input and output accesses coalesce) computing a few output channels of one
    group in registers, so each input value it loads serves all of them. An output shuffle is
    fused into the stores (_unshuffle), one kernel. Does not apply to depthwise (its own rule) or
    NHWC."""

    name = "cuda.GroupConvNCHW"

    def __init__(self, channels: int = 4, threads: int = 128) -> None:
        self.channels = channels
        self.threads = threads

    def _threads(self, spec, pixels: int = 1) -> int:
        """Threads a block, each taking `pixels` of a row: the whole plane, rounded up to a warp, where
        it takes at most 256 (7x7 and 14x14 planes would leave most of 128 threads idle), else
        `threads`."""
        units = spec.out_height * spec.out_width // pixels
        return _ceil_div(units, 32) * 32 if units <= 256 else self.threads

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and spec.op == "conv2d" and spec.op_class != "depthwise"
                and spec.layout == "NCHW")

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        n, o, h, w = sch.get_loops(out)
        self._tile(sch, spec, n, o, h, w, divisor_at_most(self._channel_run(spec), self.channels), tunable)
        spatial, red = _accumulate_in_thread(sch, conv, sch.get_loops(out)[-2])   # under the thread loop
        if red:
            sch.reorder(*red, *spatial)
            for loop in spatial:
                sch.unroll(loop)
            sch.decompose_reduction(conv, red[0])

    @staticmethod
    def _channel_run(spec) -> int:
        """Output channels a thread's tile must divide: those of a group and, with a shuffle, of a
        shuffle group too, so its channels are adjacent ones of one group."""
        cog = spec.out_channels // spec.groups
        return math.gcd(cog, spec.out_channels // spec.shuffle_groups)

    def _tile(self, sch: s_tir.Schedule, spec, n, o, h, w, oi: int, tunable: bool) -> None:
        """Blocks of (image, tile of oi output channels, run of pixels), a thread per pixel, the
        thread's channels inside (tunable)."""
        oo, oi_ = split(sch, o, oi, tunable, max_inner=16)
        bp, tp = sch.split(sch.fuse(h, w), factors=[None, self._threads(spec)])
        sch.reorder(n, oo, bp, tp, oi_)
        sch.bind(sch.fuse(n, oo, bp), "blockIdx.x")
        sch.bind(tp, "threadIdx.x")


class GroupConvStagedNCHW(GroupConvNCHW):
    """Grouped, pointwise and dense conv in NCHW as GroupConvNCHW lays it out (threads along the
    rows, `channels` output channels of one group each), with the block's weights staged in shared
    memory a chunk of input channels at a time, output channels innermost: for each input value it
    loads, a thread reads the weights of all its channels as 16-byte broadcasts from shared memory,
    where GroupConvNCHW loads each weight on its own (a load per multiply-add on an H200's ResNeXt
    g32 layers at 7x7 and 14x14, 0.1-0.5x torch at batch 64). A thread takes up to `pixels`
    adjacent outputs of a row, so each weight vector serves all of them, and at stride 1 their
    taps overlap (a 3-tap row of 4 outputs reads 6 inputs, not 12), and leave as one vector store a
    channel (_vector_stores); the default keeps 128K threads busy, as ChannelVectorNHWC. Serves
    before GroupConvNCHW (after PointwiseTiledNCHW and SplitReductionNCHW): on an H200 at batch 64
    (Nov 2026, each rule's own schedule) ResNeXt's g32 layers took 1.5-2.9x less (256x28 float16
    98 us against 281, float32 118 against 260), and the 1x1s GroupConvNCHW served at batch 1 up to
    2.8x less (96->576 at 14x14, float32). The chunk's loop is
    unrolled, so its size is bounded by the code that makes too. Tunable: the channels and pixels
    a thread takes, the chunk. Does not apply to depthwise, NHWC, or groups (or shuffle groups) of
    fewer than 4 output channels."""

    name = "cuda.GroupConvStagedNCHW"

    def __init__(self, channels: int = 8, threads: int = 128, stage_bytes: int = 16384, pixels: int = 4,
                 min_threads: int = 1 << 17, unrolled: int = 1024) -> None:
        super().__init__(channels, threads)
        self.stage_bytes = stage_bytes
        self.unrolled = unrolled
        self.pixels = pixels
        self.min_threads = min_threads

    def _pixels(self, spec, channels: int) -> int:
        """Adjacent outputs of a row a thread takes: the most, up to `pixels`, leaving `min_threads`."""
        units = spec.batch * spec.out_height * spec.out_width * spec.out_channels // channels
        return _pixels_leaving(spec.out_width, units, self.pixels, self.min_threads)

    def applies(self, spec, target: Target) -> bool:
        return super().applies(spec, target) and self._channel_run(spec) % 4 == 0

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        cig = spec.in_channels // spec.groups
        # whole 4-lane vectors of weights, a thread's channels in one group
        choices = [c for c in (4, 8, 16) if self._channel_run(spec) % c == 0]
        oi = max(c for c in choices if c <= max(4, self.channels))
        taps = spec.kernel[0] * spec.kernel[1]
        pixels = self._pixels(spec, oi)
        # the chunk's weights fit `stage_bytes`, its unrolled steps (4-lane multiply-adds) `unrolled`
        chunk = divisor_at_most(cig, max(1, min(self.stage_bytes // (oi * taps * dtype_bits(spec.dtype) // 8),
                                                self.unrolled // (taps * pixels * oi // 4))))
        # the block's threads as the default decisions have it (a mutated one keeps them: a split
        # that does not divide is predicated)
        threads = self._threads(spec, pixels)
        run = pixels   # (the default, which the vector stores' lanes divide)
        n, o, h, w = sch.get_loops(out)
        if tunable:
            # the channels and pixels sampled keep the unrolled chunk within twice `unrolled` (they
            # multiply it: a ShuffleNet v1 1x1's 16 channels x 7 pixels made 15 MB of CUDA source)
            def steps(channels: int, run: int) -> int:
                return chunk * taps * run * channels // 4
            runs = [d for d in range(1, 9) if spec.out_width % d == 0
                    and (d == pixels or steps(max(choices), d) <= 2 * self.unrolled)]
            choices = [c for c in choices if c == oi or steps(c, max(runs)) <= 2 * self.unrolled]
            oi = sch.sample_categorical(choices, [1 / len(choices)] * len(choices), decision=choices.index(oi))
            pixels = sch.sample_categorical(runs, [1 / len(runs)] * len(runs), decision=runs.index(pixels))
        oo, oi_ = sch.split(o, factors=[None, oi])
        wo, wp = sch.split(w, factors=[None, pixels])
        bp, tp = sch.split(sch.fuse(h, wo), factors=[None, threads])
        sch.reorder(n, oo, bp, tp, wp, oi_)
        sch.bind(sch.fuse(n, oo, bp), "blockIdx.x")
        sch.bind(tp, "threadIdx.x")
        spatial, red = _accumulate_in_thread(sch, conv, tp)
        ci = red[0]
        # (a sampled chunk no longer than the default: longer ones made a g32 3x3 candidate 6 MB of
        # CUDA source, and nvcc ran past half an hour on a library of them)
        cio, cii = split(sch, ci, chunk, tunable, max_inner=chunk)
        channel = spatial[1]
        rest = [l for l in spatial if l != channel]   # the image, row and the thread's pixels
        sch.reorder(cio, cii, *red[1:], *rest, channel)
        c4o, c4 = sch.split(channel, factors=[None, 4])
        for loop in [cii, *red[1:], *rest, c4o]:
            sch.unroll(loop)
        sch.vectorize(c4)
        stage = sch.cache_read(conv, 1, "shared")   # the weight chunk, output channels innermost
        sch.transform_layout(stage, ("write", 0), lambda o_, c, kh, kw: (c, kh, kw, o_))
        sch.compute_at(stage, cio, preserve_unit_loops=True)
        depth = len(sch.get_loops(conv)) - (len(red) + len(spatial) + 1)   # the loops down to cio
        # 4 loads in flight per thread (a rolled copy loop waits on each before the next)
        _, ahead, tx = sch.split(sch.fuse(*sch.get_loops(stage)[depth:]), factors=[None, 4, threads])
        sch.bind(tx, "threadIdx.x")
        sch.unroll(ahead)
        sch.decompose_reduction(conv, cio)
        # the epilogue a channel at a time, its pixels stored as vectors
        sch.reorder(oi_, wp)
        sch.unroll(oi_)
        _vector_stores(sch, wp, run, spec.dtype)


class PointwiseTensorCoreNHWC(ScheduleRule):
    """Dense 1x1 conv in NHWC, float16, as one GEMM over all the batch's pixels on the tensor cores,
    out[p, o] = sum_k x[p, k] w[k, o] with p = (n, h, w), scheduled by TVM DLight's
    MatmulTensorization: 128x128 output tiles of 16 warps, WMMA 16x16x16 fragments with float32
    accumulators, both operands staged in shared memory and double-buffered, the padding to whole
    tiles read as predicated loads; the epilogue runs as the tile leaves shared memory. Pixels are
    the rows of the NHWC input, so its loads are contiguous along the reduction. Does not apply to
    float32 (it would round to TF32; our float32 kernels are exact), NCHW (the pixels of a channel
    are the contiguous axis there, which this GEMM's loads do not follow), groups, shuffles, or
    strided or padded 1x1 convs. Not tunable: the schedule is DLight's fixed one. Listed after
    TensorCoreGemm, which was 1.7-3x faster on every float16 NHWC 1x1 of the suite on an H200 at
    batch 64 (Nov 2026), so it serves only the 1x1s that one does not (fewer than 16 channels in or
    out)."""

    name = "cuda.PointwiseTensorCoreNHWC"

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and _dense_1x1(spec) and spec.dtype == "float16"
                and spec.layout == "NHWC")

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        from tvm.s_tir.dlight.gpu.matmul import MatmulTensorization
        _dlight(sch, spec, target, MatmulTensorization())


class TensorCoreGemm(ScheduleRule):
    """Grouped or dense conv in float16, either layout, any kernel and stride, on the tensor cores:
    a GEMM per group over all the batch's pixels (_as_group_gemms: implicit, the input's taps
    gathered as its tile is staged, its reduction taps first in either layout), C[i, j] = sum_k
    A[i, k] B[k, j] with j the output's contiguous
    axis (NCHW: i output channels, j pixels, A the weight; NHWC: i pixels, j output channels, A the
    input), so each operand is staged into shared memory along its own contiguous axis (8-lane loads
    where it is provably contiguous, else 4-lane gathers) and the epilogue stores vectors. A block
    of warps x 16x16 WMMA fragments a warp along i and j, float32 accumulators, the reduction in
    chunks of 16-wide fragments, both stages double-buffered and software-pipelined as TVM DLight's
    GEMM does; each warp's tile leaves through shared memory, the bias and activation applied on
    the way to one vector store (an output shuffle fused into it: _unshuffle). Unlike DLight's
    fixed 128x128 tiles (75 blocks for MobileNetV2's 960->320 at 7x7, batch 64, on an H200's 132
    multiprocessors: 53.5 us against torch's 10), the default tiles waste little padding (a ResNeXt
    g32 group's 32 output channels are two fragments, not a quarter of a 128 tile) and make a block
    per multiprocessor where they can, within 48 KB of shared memory in all (what a GPU check
    counts). Serves (see `serves`) 1x1s and wide groups: on an H200 (Nov 2026, each rule's own
    schedule) it was the fastest on all 9 float16 1x1s of the suite at batch 64 in either layout
    (NCHW 384->64 at 14x14 9.6 us against PointwiseTiledNCHW's 56, NHWC 960->320 at 7x7 18 against
    DLight's 54) and on 14 of MobileNetV2's 19 at batch 1 (within 0.3 us on the rest), and on
    ResNeXt's g32 1024x7 (32 channels a group: 94 us against 220 in NCHW, 27 against 136 in NHWC);
    with 16 channels a group it lost in NCHW (171 against 128), with 8 or 4 by 2.6-4x. Does not
    apply to float32 (whose kernels are exact; a TF32 spec's run on TensorCoreGemmTF32), depthwise
    convs, dilation, one output channel a group (a GEMM of one row or
    column, which TVM refuses to tile) or a reduction of one term (a 1x1 of one input channel a
    group: no k to tile). Tunable: warps and fragments a warp along i and j."""

    name = "cuda.TensorCoreGemm"

    def __init__(self, min_blocks: int = 132, shared_bytes: int = 49152) -> None:
        self.min_blocks = min_blocks
        self.shared_bytes = shared_bytes

    frag_k = _FRAG    # a fragment's reduction (16 float16 values)
    item_bytes = 2    # an operand's values

    def _gemm(self, spec) -> tuple[int, int, int]:
        """A group's GEMM in fragments: i, j, k (see the class)."""
        per, pixels = spec.out_channels // spec.groups, spec.batch * spec.out_height * spec.out_width
        k = spec.in_channels // spec.groups * spec.kernel[0] * spec.kernel[1]
        i, j = (per, pixels) if spec.layout == "NCHW" else (pixels, per)
        return _ceil_div(i, _FRAG), _ceil_div(j, _FRAG), _ceil_div(k, self.frag_k)

    def _tiles(self, spec) -> tuple[tuple[int, int], tuple[int, int], int]:
        """((warps, fragments a warp) along i, the same along j, the chunk in fragments): the
        least padding (within 15 %), then blocks up to min_blocks, then the largest and squarest
        tile (fewest loads a multiply-add), then the longest chunk, then 4 warps a block or more,
        then 4 fragments a warp (2x2 where that ties); all within shared_bytes (a GPU check counts
        the dynamic stages with the static tile). A block's shared memory caps the blocks a
        multiprocessor holds (4 of some 48 KB), so its warps are what keeps the loads in flight: on
        an H200 (Nov 2026) ResNeXt's g32 512x14 in NCHW, a tile of 1 x 8 fragments, took 171 us as 2
        warps of 4 fragments and 62 as 4 of 2; the 128x56, 1 x 8 too, 636 as 2 of 4 and 407 as 8
        of 1."""
        ni, nj, nk = self._gemm(spec)
        # (a chunk of one fragment is not pipelined: 2 where padding to it wastes more)
        chunks = [c for c in (4, 2) if _ceil_div(nk, c) * c <= nk * 1.125] or [2 if nk > 1 else 1]
        best = None
        for wy, wz, fy, fz, chunk in ((a, b, c, d, e) for a in (1, 2, 4) for b in (1, 2, 4) for c in (1, 2, 4)
                                      for d in (1, 2, 4) for e in chunks):
            ti, tj = wy * fy, wz * fz
            if self._shared_bytes(ti, tj, chunk) > self.shared_bytes:
                continue
            waste = _ceil_div(ni, ti) * ti * _ceil_div(nj, tj) * tj / (ni * nj)
            key = (waste <= 1.15, min(self._blocks(spec, ti, tj), self.min_blocks), ti * tj, -(ti + tj), chunk,
                   min(wy * wz, 4), -abs(fy * fz - 4), -wy * wz)
            if best is None or key > best[0]:
                best = (key, (wy, fy), (wz, fz), chunk)
        return best[1:]

    buffers = 2   # (each stage's chunks in shared memory at once: double-buffered)

    def _shared_bytes(self, ti: int, tj: int, chunk: int) -> int:
        """Shared memory of a block of ti x tj fragments with chunks of `chunk`: both operands' stages,
        `buffers` chunks each, rows padded by 16 bytes, and the float32 tile, rows padded by 4."""
        pad, k = 16 // self.item_bytes, chunk * self.frag_k
        stages = self.buffers * self.item_bytes * (ti * _FRAG * (k + pad) + k * (tj * _FRAG + pad))
        return stages + 4 * ti * _FRAG * (tj * _FRAG + 4)

    def _blocks(self, spec, ti: int, tj: int) -> int:
        """Blocks of tiles of ti x tj fragments."""
        ni, nj, _ = self._gemm(spec)
        return spec.groups * _ceil_div(ni, ti) * _ceil_div(nj, tj)

    def _lanes(self, spec) -> tuple[int, int, int]:
        """Lanes of A's and B's loads and of the stores. A contiguous run is 16 bytes for a 1x1 (its
        reduction is the input channels alone) and at most 4 lanes otherwise (TVM cannot prove a run
        of taps contiguous and gathers it; its CUDA code has no 8-lane index vectors, nor 8-lane
        float32 ones for the epilogue)."""
        per, cig = spec.out_channels // spec.groups, spec.in_channels // spec.groups
        if spec.layout == "NHWC":   # (a group's channels start at a multiple of its count)
            runs = (math.gcd(cig, spec.in_channels), math.gcd(per, spec.out_channels), per)
        else:   # (the weight's k: its input channels, taps first, runs only for a 1x1)
            plane = spec.out_height * spec.out_width
            plain = spec.kernel == (1, 1) and spec.stride == (1, 1) and not any(spec.padding)
            runs = (cig if spec.kernel == (1, 1) else 1, plane if plain else 1, plane)
        most = 16 // self.item_bytes if spec.kernel == (1, 1) else 4
        return tuple(_power_of_two_dividing(run, limit) for run, limit in zip(runs, (most, most, 4)))

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "cuda" and spec.dtype == "float16" and self._gemm_shaped(spec)

    @staticmethod
    def _gemm_shaped(spec) -> bool:
        return (spec.op == "conv2d" and spec.op_class != "depthwise" and spec.dilation == (1, 1)
                and spec.weight_layout in ("OIHW", "HWIO") and spec.out_channels // spec.groups >= 2
                and spec.in_channels // spec.groups * spec.kernel[0] * spec.kernel[1] > 1)

    def serves(self, spec, target: Target) -> bool:
        return self.applies(spec, target) and self._whole_fragments(spec)

    @staticmethod
    def _whole_fragments(spec) -> bool:
        """Where a group's GEMM fills whole fragments: 16 input channels a group or more, and 16
        output channels (a 1x1) or 32 (a wider kernel, whose taps the staging gathers 4 lanes at a
        time) a group or more."""
        per, cig = spec.out_channels // spec.groups, spec.in_channels // spec.groups
        return cig >= 16 and per >= (16 if spec.kernel == (1, 1) else 32)

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        from gconvgen import tensor_intrin
        tensor_intrin.load()
        from tvm.s_tir.dlight.gpu.matmul import auto_inline_consumer_chain, auto_inline_producers
        (wy, fy), (wz, fz), chunk = self._tiles(spec)
        ni, nj, nk = self._gemm(spec)
        a_lanes, b_lanes, out_lanes = self._lanes(spec)
        nhwc = spec.layout == "NHWC"
        _unshuffle(sch, spec)
        conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
        _as_group_gemms(sch, spec)   # (g, o, p, k)
        if nhwc:
            sch.transform_block_layout(conv, lambda g, o, p, k: (g, p, o, k))
            sch.transform_block_layout(out, lambda g, o, p: (g, p, o))
            sch.transform_layout(conv, ("write", 0), lambda g, o, p: (g, p, o))
        names = [r.source.name for r in sch.get(conv).reads]
        w = next(n for n, name in enumerate(names) if name.startswith("weight"))
        a, b = (1 - w, w) if nhwc else (w, 1 - w)
        sch.reindex(conv, ("read", a))   # A[g, i, k]
        rb = sch.reindex(conv, ("read", b))   # B[g, j, k], laid out [g, k, j] (j contiguous, as in memory)
        if len(sch.get(rb).writes[0].region) == 3:
            sch.transform_layout(rb, ("write", 0), lambda g, j, k: (g, k, j))
        else:   # (one group: its axis left out)
            sch.transform_layout(rb, ("write", 0), lambda j, k: (k, j))
        sch.reindex(conv, ("write", 0))
        # whole tiles of the default's size; a sampled tile divides them (a perfect tile)
        sch.pad_einsum(conv, [1, _ceil_div(ni, wy * fy) * wy * fy * _FRAG, _ceil_div(nj, wz * fz) * wz * fz * _FRAG,
                              _ceil_div(nk, chunk) * chunk * self.frag_k])
        g, i, j, k = sch.get_loops(conv)
        i, ii = sch.split(i, factors=[None, _FRAG])
        j, ji = sch.split(j, factors=[None, _FRAG])
        k, ki = sch.split(k, factors=[None, self.frag_k])
        sch.reorder(i, j, k, ii, ji, ki)
        fragment = sch.blockize(ii)
        ((i0, i1, i2), i_tiles), ((j0, j1, j2), j_tiles) = self._block_tiles(sch, (i, j), ((wy, fy), (wz, fz)), tunable)
        k0, k1 = sch.split(k, factors=[None, chunk])   # (not sampled: a pipeline needs two rounds)
        if _ceil_div(nk, chunk) > 1 and chunk > 1:   # (TVM's pipelining fails on a single round)
            self._pipeline(sch, k0)
        if chunk > 1:
            sch.annotate(k1, "software_pipeline_order", [0, 1, 2])
            sch.annotate(k1, "software_pipeline_stage", [0, 0, 1])
        sch.reorder(g, i0, j0, j1, i1, k0, k1, i2, j2)
        sch.bind(sch.fuse(g, i0, j0), "blockIdx.x")
        warp = sch.fuse(j1, i1)
        sch.bind(warp, "threadIdx.y")

        def stage(index: int, lanes: int):
            """The operand's chunk into shared memory by all the block's threads, rows padded
            against bank conflicts."""
            staged = sch.cache_read(fragment, index, "shared.dyn")
            sch.compute_at(staged, k0)
            loops = sch.split(sch.fuse(*sch.get_loops(staged)[-2:]), factors=[None, j_tiles[1], i_tiles[1], 32, lanes])
            sch.bind(sch.fuse(loops[1], loops[2]), "threadIdx.y")
            sch.bind(loops[3], "threadIdx.x")
            sch.vectorize(loops[4])
            sch.storage_align(staged, 0, axis=-2, factor=32 // self.item_bytes, offset=16 // self.item_bytes)
            self._staged_copy(sch, staged)
            auto_inline_producers(sch, staged)   # (the reindexing and the padding: predicated loads)

        stage(a, a_lanes)
        stage(b, b_lanes)
        frag_a = sch.cache_read(fragment, a, "wmma.matrix_a")
        frag_b = sch.cache_read(fragment, b, "wmma.matrix_b")
        self._operand_fragments(sch, frag_a, frag_b)
        sch.compute_at(frag_a, k1)
        sch.compute_at(frag_b, k1)
        # (static shared memory: TVM's storage rewrite lets a float32 tile reuse a float16 stage's
        # dynamic shared memory, then fails to lower its accesses)
        tile = sch.cache_write(fragment, 0, "shared")
        sch.storage_align(tile, 0, -2, 16, 4)
        accumulators = sch.cache_write(fragment, 0, "wmma.accumulator")
        sch.reverse_compute_at(accumulators, warp)
        sch.reverse_compute_at(tile, warp)
        init = sch.get_child_blocks(sch.decompose_reduction(fragment, k0))[0]
        intrins = self._intrinsics()
        fk = self.frag_k
        for block, intrin, (rows, columns) in ((frag_a, "load_a", (_FRAG, fk)), (frag_b, "load_b", (fk, _FRAG)),
                                               (accumulators, "store", (_FRAG, _FRAG))):
            x, y = sch.get_loops(block)[-2:]
            x0, x1 = sch.split(x, factors=[None, rows])
            y0, y1 = sch.split(y, factors=[None, columns])
            sch.reorder(x0, y0, x1, y1)
            sch.tensorize(x1, intrins[intrin])
        sch.tensorize(sch.get_loops(init)[-2], intrins["init"])
        sch.tensorize(sch.get_loops(conv)[-3], intrins["compute" if nhwc else "weight_first"])
        auto_inline_consumer_chain(sch, tile)   # the epilogue, on the way out
        _, tx, vector = sch.split(sch.fuse(*sch.get_loops(tile)[-2:]), factors=[None, 32, out_lanes])
        sch.bind(tx, "threadIdx.x")
        sch.vectorize(vector)

    def _block_tiles(self, sch: s_tir.Schedule, loops: tuple, defaults: tuple, tunable: bool) -> list:
        """Each of the loops i and j (in fragments) split into (blocks, warps, fragments a warp), with
        its factors; tuned, a sampled tile of at most 4 fragments a warp (the warps unbounded: on a
        large GEMM most draws are past a block's limits, which VerifyGPUCode drops)."""
        factors = [tile_factors(sch, loop, default, tunable, max_inner=4) for loop, default in zip(loops, defaults)]
        return [(sch.split(loop, factors=f), f) for loop, f in zip(loops, factors)]

    def _operand_fragments(self, sch: s_tir.Schedule, frag_a, frag_b) -> None:
        pass   # (float16, as the operands)

    @staticmethod
    def _intrinsics() -> dict[str, str]:
        """The WMMA intrinsics: loads of A and B, the multiply-add (and its weight-first twin, for an
        NCHW conv's GEMM), init and store."""
        from gconvgen import tensor_intrin
        tensor_intrin.load()
        from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group
        intrins = get_wmma_intrin_group(load_scope="shared.dyn", store_scope="shared", in_dtype="float16",
                                        out_dtype="float32", trans_b=False)
        return {**intrins, "weight_first": tensor_intrin.WMMA_SYNC_WEIGHT_FIRST}

    def _pipeline(self, sch: s_tir.Schedule, k0) -> None:
        """DLight's pipeline over the chunks: the next chunk's global loads and the next fragments'
        shared loads are issued before this one's multiply-adds."""
        sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 5, 2, 6])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, 0, 0, 1, 1])

    def _staged_copy(self, sch: s_tir.Schedule, staged) -> None:
        """The next chunk loaded into registers, stored into the other of two shared buffers after
        this chunk's multiply-adds."""
        sch.annotate(staged, "tirx.manifest_shared_memory_local_stage", 1)
        sch.annotate(staged, "double_buffer_scope", 0)


class TensorCoreGemmPipelined(TensorCoreGemm):
    """TensorCoreGemm with the chunks copied into shared memory asynchronously (cp.async, sm_80 and
    newer: gconvgen.build.compile_module) and `stages` of them in flight at once, as cuBLAS-class GEMMs
    hide global memory's latency. TensorCoreGemm's pipeline is two deep (the next chunk's loads
    held in registers while this one multiplies), so a block whose reduction takes many short
    chunks waits about a load's latency a chunk: MobileNetV2's 960->320 at 7x7, batch 64, float16,
    is 245 blocks (under two an H200 multiprocessor) of 30 chunks of 32 channels each, and took 16
    us in NHWC against torch's 10 (21 against 10 in NCHW, Nov 2026), though its bytes take 2 and
    its multiply-adds less. Here the copies of the `stages - 1` chunks ahead are in flight while a
    chunk multiplies, straight from global into shared memory (no registers held), each operand in
    `stages` shared buffers, so the tiles are chosen within the same 48 KB for the deeper stage.
    Untimed as yet: an alternative, served through tuned records. Tunable as TensorCoreGemm. Does
    not apply where TensorCoreGemm does not, where an operand's copies are single values (cp.async
    moves 4, 8 or 16 bytes: an NCHW 3x3's taps gathered, planes of odd size), or where the
    reduction is fewer chunks than `stages` (TVM's pipeline two deep waits on the first chunk's
    copies before it commits them, which PTX's wait does not cover: the emulator's run of the
    copies landing at their waits found it)."""

    name = "cuda.TensorCoreGemmPipelined"

    def __init__(self, min_blocks: int = 132, shared_bytes: int = 49152, stages: int = 3) -> None:
        super().__init__(min_blocks, shared_bytes)
        self.stages = stages

    @property
    def buffers(self) -> int:
        return self.stages

    def applies(self, spec, target: Target) -> bool:
        if not super().applies(spec, target):
            return False
        a_lanes, b_lanes, _ = self._lanes(spec)
        chunk = self._tiles(spec)[2]
        return a_lanes >= 2 and b_lanes >= 2 and chunk > 1 and _ceil_div(self._gemm(spec)[2], chunk) >= self.stages

    def serves(self, spec, target: Target) -> bool:
        return False   # (until a GPU times it)

    def _pipeline(self, sch: s_tir.Schedule, k0) -> None:
        """The copies (the first two statements, stage 0, async) run stages - 1 chunks ahead of the
        fragments' loads and multiply-adds (as MetaSchedule's tensor-core tiling orders them)."""
        sch.annotate(k0, "software_pipeline_order", [0, 1, 3, 2, 4])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, self.stages - 2, self.stages - 1, self.stages - 1])
        sch.annotate(k0, "software_pipeline_async_stages", [0])

    def _staged_copy(self, sch: s_tir.Schedule, staged) -> None:
        pass   # (global to shared memory directly: cp.async holds no registers)


class TensorCoreGemmTF32(TensorCoreGemm):
    """TensorCoreGemm for a TF32 spec (KernelSpec.tf32: a float32 conv whose inputs are rounded to
    TF32, which torch's cuDNN convs compute by default on Ampere and newer, and which the ops run on
    a GPU while torch allows it): WMMA's TF32 fragments, 16x16x8, float32 operands staged in shared
    memory and rounded on the way (the spec's rounding stages are inlined into the staging copies,
    which hold each value in a register between its load and its store: once a value, a few integer
    instructions), float32 accumulators, the same tiles, pipeline, epilogue and tunable space. An
    H200 multiplies TF32 at 7x its float32 FMA rate (dense: 495 against 67 TFLOPS), so on the GEMM
    layers where torch's TF32 convs beat our float32 ones (NHWC 960->320 at 7x7, batch 64: 113 us
    against 20, Nov 2026) this does what they do. The chunks take 2 fragments (16 channels) or 4,
    twice a float16 chunk's bytes a value. Untimed as yet. Applies where TensorCoreGemm serves float16
    (whole fragments; narrower groups run faster exact on the SIMT rules); the CUDA source names the
    operands' fragments TF32 (gconvgen.cuda.tf32_fragments), which TVM takes as float16 ones."""

    name = "cuda.TensorCoreGemmTF32"
    takes_tf32 = True
    frag_k = 8
    item_bytes = 4

    def applies(self, spec, target: Target) -> bool:
        return (target.kind.name == "cuda" and spec.tf32 and self._gemm_shaped(spec)
                and self._whole_fragments(spec))

    def _block_tiles(self, sch: s_tir.Schedule, loops: tuple, defaults: tuple, tunable: bool) -> list:
        """As TensorCoreGemm's, but tuned, each loop's block tile is drawn first, of 16 fragments at
        most, then split into warps and fragments a warp: TensorCoreGemm's draw leaves the warps
        unbounded, and on the 1x1s of 28x28 planes and larger at batch 64 four draws in five were past
        a block's limits (MetaSchedule could not sample 8 of 40 TF32 spaces; here two in three pass).
        TensorCoreGemm keeps its draw, which its timed records' traces follow."""
        if not tunable:
            return super()._block_tiles(sch, loops, defaults, tunable)
        tiles = []
        for loop, (warps, fragments) in zip(loops, defaults):
            extent = int(sch.get(loop).extent)
            outer, tile = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=16,
                                                  decision=[extent // (warps * fragments), warps * fragments])
            blocks, inner = sch.split(loop, factors=[outer, tile])
            factors = sch.sample_perfect_tile(inner, n=2, max_innermost_factor=4, decision=[warps, fragments])
            tiles.append(([blocks, *sch.split(inner, factors=factors)], [outer, *factors]))
        return tiles

    def _operand_fragments(self, sch: s_tir.Schedule, frag_a, frag_b) -> None:
        """Float16 to TVM, which declares no float32 operand fragments; TF32 in the source (see the class)."""
        sch.unsafe_set_dtype(frag_a, 0, "float16")
        sch.unsafe_set_dtype(frag_b, 0, "float16")

    @staticmethod
    def _intrinsics() -> dict[str, str]:
        from gconvgen import tensor_intrin
        return tensor_intrin.WMMA_TF32


class PointwiseGemm(ScheduleRule):
    """Dense 1x1 conv, either layout, as one GEMM over all the batch's pixels (the pixels of every
    image are its rows), scheduled by TVM DLight: `MatmulTensorization` in float16 (as
    PointwiseTensorCoreNHWC), the SIMT `Matmul` in float32 (4x4 outputs a thread in 32x64 tiles,
    both operands staged in shared memory, padding to whole tiles). Listed after the rules that
    serve these layers by default (ChannelVectorNHWC, PointwiseTiledNCHW, SplitReductionNCHW,
    GroupConvNCHW), so it serves a kernel only through a tuned record: `gconvgen tune
    --export-candidates` offers every applicable rule's schedule as a candidate, and a GPU run
    keeps it where it is faster (960->320 at 7x7, batch 64, takes 267 µs on an H200 with
    ChannelVectorNHWC against torch's 20 with TF32). Does not apply to groups, shuffles, or
    strided or padded 1x1 convs, or fewer than 32 pixels (a classifier: a GEMV, which DLight's GEMMs
    refuse). Not tunable: DLight's fixed schedule."""

    name = "cuda.PointwiseGemm"

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "cuda" and _dense_1x1(spec) and spec.batch * spec.height * spec.width >= 32

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        from tvm.s_tir.dlight.gpu.matmul import Matmul, MatmulTensorization
        _dlight(sch, spec, target, MatmulTensorization() if spec.dtype == "float16" else Matmul())


def _as_group_gemms(sch: s_tir.Schedule, spec) -> None:
    """The conv as a GEMM per group g over the batch's pixels: its block and the epilogue's iterate
    (g, o, j[, k]) and the accumulator is conv[g, o, j], with o a group's output channel, j = n * H *
    W + p the batch's output pixels and k the reduction, (tap, input channel) in either layout. So a
    chunk of k within a group's channels is one tap (a few where they are fewer than the chunk), and
    the input's gathered index and its padding test are the same for the whole chunk but for the
    channel's offset. In NCHW (input channel, tap) order keeps the weight's k contiguous, but every
    staged input value then decoded its tap with divisions by 3 and 9 and tested it: on ResNeXt's g32
    1024x7 in float16 several times the tensor cores' work (94 us on an H200 in NCHW, 24 in NHWC)."""
    plane, width = spec.out_height * spec.out_width, spec.out_width
    per, cig = spec.out_channels // spec.groups, spec.in_channels // spec.groups
    kh, kw = spec.kernel
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    # (the op leaves out unit reduction axes: a 1x1's taps, a 1x3's rows)
    reduction = [axis for axis, extent in (("c", cig), ("rh", kh), ("rw", kw)) if extent > 1]

    def gemm(n, o, h, w, *k) -> tuple:
        return (o // per, o % per, n * plane + h * width + w, *k)

    def k_index(axes: dict):
        """k, (tap, input channel), over the axes the op kept."""
        if "rh" in axes and "rw" in axes:
            tap = axes["rh"] * kw + axes["rw"]
        else:
            tap = axes.get("rh", axes.get("rw"))
        if tap is None:
            return axes["c"]
        return tap * cig + axes["c"] if "c" in axes else tap

    spatial = ["n", "o", "h", "w"] if spec.layout == "NCHW" else ["n", "h", "w", "o"]

    def conv_map(*v) -> tuple:
        axes = dict(zip(spatial + reduction, v))
        return gemm(axes["n"], axes["o"], axes["h"], axes["w"], *([k_index(axes)] if reduction else []))
    # (over variables named as the block's axes, which its trace records)
    dtype = str(sch.get(conv).iter_vars[0].var.ty)
    names = [tvm.tirx.Var(name, dtype) for name in spatial + reduction]
    sch.transform_block_layout(conv, IndexMap(names, list(conv_map(*names)), None))
    pixel_map = (lambda n, o, h, w: gemm(n, o, h, w)) if spec.layout == "NCHW" else (lambda n, h, w, o: gemm(n, o, h, w))
    sch.transform_block_layout(out, pixel_map)
    sch.transform_layout(conv, ("write", 0), pixel_map)
    # (the accumulator's relayout last: it simplifies the accesses the blocks' own leave as written)


def _plain_1x1(spec) -> bool:
    """A 1x1 conv (dense or grouped), stride 1, unpadded: a GEMM per group over the pixels."""
    return spec.op == "conv2d" and spec.op_class == "pointwise" and spec.stride == (1, 1) and not any(spec.padding)


def _dense_1x1(spec) -> bool:
    """A dense 1x1 conv, stride 1, unpadded, no shuffle: one GEMM over the pixels."""
    return _plain_1x1(spec) and spec.groups == 1 and spec.shuffle_groups == 1


def _dlight(sch: s_tir.Schedule, spec, target: Target, rule) -> None:
    """DLight's schedule of the function, its trace replayed into sch (so tuning records keep it);
    the fallback's where DLight finds no GEMM in it (a plain schedule rather than none)."""
    from gconvgen import tensor_intrin
    tensor_intrin.load()   # the tensor-core GEMM imports it, slowly on its own
    try:
        with target:
            done = rule.apply(sch.mod["main"], target, False)
    except AssertionError:   # DLight asserts on shapes it cannot map to a GEMM
        done = None
    if done is None:
        Fallback().schedule(sch, spec, target, False)
        return
    done.trace.apply_to_schedule(sch, remove_postproc=False)


class ChannelShuffle(ScheduleRule):
    """Channel shuffle as a copy. NCHW moves whole channel planes: a thread per (image, output
    channel, run of a plane's values), the run one vector load and one vector store (16 bytes where
    the plane's size allows: 8 float16 or 4 float32 values; a 7x7 plane's 49 values one at a time),
    a block of whole planes where a plane's runs fit it (threadIdx.y the plane, threadIdx.x the run:
    no division). NHWC interleaves each pixel's groups: a thread per (pixel, run of up to 4 channels
    of each group), stores of 4 adjacent outputs (the codegen has no wider index vectors for the
    loads they gather), each output one scalar load. The fallback decodes each value's place on its
    own, about 40 SASS instructions a value by nvdisasm's count: on an H200 (Nov 2026, batch 64) it
    took as long in float16 as in float32 (ShuffleNet v1's 60x28 8.5 against 8.6 us in NCHW, 8.3
    against 8.3 in NHWC, 34-36 % of what a copy of the bytes takes), so the float16 shuffles were
    issue-bound. Here, on the suite's shuffles, 3-6 a value in NCHW (but 7x7 planes: 24) and 3-6 in
    NHWC. Untimed as yet. Applies to channel_shuffle only."""

    name = "cuda.ChannelShuffle"

    def __init__(self, threads: int = 256, bytes_per_load: int = 16) -> None:
        self.threads = threads
        self.bytes_per_load = bytes_per_load

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "cuda" and spec.op == "channel_shuffle"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        out = sch.get_sblock("out")
        most = self.bytes_per_load * 8 // dtype_bits(spec.dtype)
        if spec.layout == "NCHW":   # (a block of whole planes where they are short: no division)
            plane = spec.height * spec.width
            sch.transform_block_layout(out, lambda n, c, h, w: (n * spec.in_channels + c, h * spec.width + w))
            lanes = _power_of_two_dividing(plane, most)
            planes, p = sch.get_loops(out)
            runs, lane = sch.split(p, factors=[None, lanes])
            if plane // lanes <= self.threads:
                block, row = sch.split(planes, factors=[None, divisor_at_most(spec.batch * spec.in_channels,
                                                                             self.threads // (plane // lanes))])
                sch.bind(block, "blockIdx.x")
                sch.bind(row, "threadIdx.y")
                sch.bind(runs, "threadIdx.x")
            else:
                _bind_threads(sch, sch.fuse(planes, runs), self.threads)
            sch.vectorize(lane)
            return
        groups, width, height = spec.groups, spec.width, spec.height
        per = spec.in_channels // groups
        # output channel j * G + g is group g's j-th: iterate (pixel, j, g), the stores' axis (j, g)
        sch.transform_block_layout(out, lambda n, h, w, c: ((n * height + h) * width + w, c // groups, c % groups))
        store = _power_of_two_dividing(spec.in_channels, min(4, most))   # (dividing a pixel's channels: aligned)
        run = next((r for r in (4, 2, 1) if per % r == 0 and r * groups % store == 0), 1)
        p, j, g = sch.get_loops(out)
        jo, ji = sch.split(j, factors=[None, run])
        _bind_threads(sch, sch.fuse(p, jo), self.threads)
        stores, lane = sch.split(sch.fuse(ji, g), factors=[None, _power_of_two_dividing(run * groups, store)])
        sch.unroll(stores)
        sch.vectorize(lane)


class Fallback(ScheduleRule):
    """Anything else on a GPU (pooling in NCHW, gradients): one kernel, a thread per output
    element, the padding read in place and the window's reduction (a conv's taps, a pool's window)
    serial in the thread's registers, the epilogue applied on the way to the store. Until December
    2026 each stage was a kernel of its own, the window's result going through global memory: NCHW
    pooling (a converted model's stem max pool, its global average pool) ran as two launches.
    Correct everywhere; fast nowhere in particular."""

    name = "cuda.Fallback"

    def applies(self, spec, target: Target) -> bool:
        return target.kind.name == "cuda"

    def schedule(self, sch: s_tir.Schedule, spec, target: Target, tunable: bool) -> None:
        _inline_pad(sch)
        _unshuffle(sch, spec)
        first, *consumers = sch.get_child_blocks(sch.get_sblock("root"))
        thread = _thread_per_element(sch, first, 256)
        if consumers:
            sch.set_scope(first, 0, "local")
        for block in consumers:   # (each reads one element of the one before)
            sch.reverse_compute_at(block, thread)


def _outputs_from_shared_input(sch: s_tir.Schedule, conv, block, thread):
    """Binds the block and thread loops, computes a thread's outputs in registers (the taps unrolled)
    and returns the conv's input staged in shared memory, at the block (its copy left to schedule)."""
    sch.bind(block, "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    sch.compute_at(conv, thread, preserve_unit_loops=True)
    sch.set_scope(conv, 0, "local")
    for loop in sch.get_loops(conv)[2:]:
        sch.unroll(loop)
    stage = sch.cache_read(conv, 0, "shared")
    sch.compute_at(stage, block, preserve_unit_loops=True)
    return stage


def _row_copy_lanes(spec, bytes_per_load: int) -> int:
    """Lanes of the vectors that copy a band's input rows unpadded into shared memory: as many as
    `bytes_per_load` holds that divide the row, where the band reads whole rows; else 1 (a 1x1 or a
    stride 2 can skip the last column, and the vectors would not stay aligned)."""
    if _last_input_read(spec, 1) < spec.width - 1:
        return 1
    return _power_of_two_dividing(spec.width, bytes_per_load * 8 // dtype_bits(spec.dtype))


def _input_span(spec, outputs: int, axis: int) -> int:
    """Input rows (axis 0) or columns (axis 1), padding included, that `outputs` adjacent outputs read."""
    return (outputs - 1) * spec.stride[axis] + (spec.kernel[axis] - 1) * spec.dilation[axis] + 1


def _last_input_read(spec, axis: int) -> int:
    """The last input row (axis 0) or column (axis 1) the conv reads (past the image where padded)."""
    return _input_span(spec, (spec.out_height, spec.out_width)[axis], axis) - 1 - spec.padding[axis]


def _reads_whole_planes(spec) -> bool:
    """Whether the conv reads every row and column of the input (a stride can skip the last ones)."""
    return _last_input_read(spec, 0) >= spec.height - 1 and _last_input_read(spec, 1) >= spec.width - 1


def _plane_bytes(spec) -> int:
    return spec.height * spec.width * dtype_bits(spec.dtype) // 8


def _span_unit(spec, bytes_per_load: int) -> int:
    """Input planes whose bytes are whole vectors of bytes_per_load (2 of 14x14 in float16, 8 of
    7x7): a span of whole units copied in such vectors stays aligned."""
    return bytes_per_load // math.gcd(bytes_per_load, _plane_bytes(spec))


def _bank_spread_pitch(width: int, rows_apart: int, columns: int, stride: int, item_bytes: int,
                       multiple: int = 1) -> int:
    """The row pitch (in items, at least `width`, a multiple of `multiple`: rows copied in vectors of
    that many) of a shared tile read by threads laid out as rows of `columns`, the next row of threads
    `rows_apart` tile rows down: the one whose warp-wide reads of a tap hit the fewest distinct words
    in any one of the 32 four-byte banks (a row of 28 threads at a pitch of 34, 7 rows apart, put
    lanes 28-31 on lanes 14-17's banks; at 36 they take the next ones)."""
    def conflicts(pitch: int) -> int:
        words: dict[int, set[int]] = {}
        for lane in range(32):
            item = lane // columns * rows_apart * pitch + lane % columns * stride
            word = item * item_bytes // 4
            words.setdefault(word % 32, set()).add(word)
        return max(len(w) for w in words.values())
    pitches = [p for p in range(width, width + 32 * multiple) if p % multiple == 0]
    return min(pitches, key=lambda pitch: (conflicts(pitch), pitch))


def _pixel_runs_by_channel_vectors(sch: s_tir.Schedule, out, lanes: int, per_block: int, run: int, pixels: int,
                                   tunable: bool, rows: int | None = None) -> tuple:
    """The NHWC output's thread mapping: a block per (image, row, run of pixels, per_block channel
    vectors of `lanes`), a thread per (pixels of the run, channel vector). Returns the thread loop,
    the thread's pixel loop and its channel-vector loop; with `rows`, a block and its threads take
    that many output rows, and the thread's row loop (above its pixels) comes first."""
    n, h, w, c = sch.get_loops(out)
    co, cv = sch.split(c, factors=[None, lanes])
    coo, coi = split(sch, co, per_block, tunable, max_inner=256)
    h, hr = split(sch, h, rows, tunable, max_inner=8) if rows else (h, None)
    wo, wi, wp = split(sch, w, (run, pixels), tunable, max_inner=8)
    sch.reorder(n, h, wo, coo, wi, coi, *([hr] if hr else []), wp, cv)
    tx = sch.fuse(wi, coi)
    sch.bind(sch.fuse(n, h, wo, coo), "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return (hr, tx, wp, cv) if rows else (tx, wp, cv)


def _pixels_leaving(width: int, units: int, most: int, threads: int) -> int:
    """Adjacent outputs of a row a thread takes, of `units` a pixel each: the most (up to `most`,
    dividing the row) that leave at least `threads` threads, else 1."""
    return max(d for d in range(1, most + 1) if width % d == 0 and (d == 1 or units // d >= threads))


def _vector_stores(sch: s_tir.Schedule, loop, run: int, dtype: str, most_lanes: int = 4) -> None:
    """A thread's `run` adjacent outputs of a row (the epilogue's innermost loop) stored as vectors
    (4 lanes at most: TVM's CUDA codegen has no 8-lane float32 for the epilogue's arithmetic), not as
    scalars `run` elements apart across the warp: a warp's store then covers its sectors once, where
    scalar stores write each sector `run` times. The lanes divide `run` and the row, so every vector
    is aligned; a tuned run they do not divide leaves a predicate, and TVM stores that one in scalars."""
    lanes = _power_of_two_dividing(run, min(most_lanes, 128 // dtype_bits(dtype)))
    if lanes == 1:
        sch.unroll(loop)
        return
    outer, inner = sch.split(loop, factors=[None, lanes])
    sch.unroll(outer)
    sch.vectorize(inner)


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def _power_of_two_dividing(n: int, limit: int) -> int:
    """The largest power of two dividing n, up to limit (a vector type's lanes)."""
    lanes = 1
    while lanes * 2 <= limit and n % (lanes * 2) == 0:
        lanes *= 2
    return lanes


def _accumulate_in_thread(sch: s_tir.Schedule, conv, thread) -> tuple[list, list]:
    """The accumulation moved under a thread loop, into registers; returns its own (spatial,
    reduction) loops there."""
    sch.compute_at(conv, thread, preserve_unit_loops=True)
    sch.set_scope(conv, 0, "local")
    iter_vars = sch.get(conv).iter_vars
    own = list(zip(sch.get_loops(conv)[-len(iter_vars):], iter_vars))
    return ([loop for loop, iv in own if int(iv.iter_type) == _SPATIAL],
            [loop for loop, iv in own if int(iv.iter_type) != _SPATIAL])


def _thread_per_element(sch: s_tir.Schedule, block, threads: int):
    """A thread per element of the block's output (blocks of up to `threads`), its reduction
    serial; returns the thread loop."""
    loops = sch.get_loops(block)
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    spatial = [l for l, k in zip(loops, kinds) if k == _SPATIAL]
    red = [l for l, k in zip(loops, kinds) if k != _SPATIAL]
    if red:
        sch.reorder(*spatial, *red)
    tx = _bind_threads(sch, sch.fuse(*spatial), threads)
    if red:
        sch.decompose_reduction(block, red[0])
    return tx


def _bind_threads(sch: s_tir.Schedule, loop, threads: int):
    """The loop over blocks of up to `threads` threads, no more than the loop's extent (TVM's
    reverse_compute_at leaves a consumer of one element unpredicated under a thread loop with a
    tail, so every thread of the block stored it); returns the thread loop."""
    block, thread = sch.split(loop, factors=[None, min(threads, int(sch.get(loop).extent))])
    sch.bind(block, "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    return thread


# The first that serves a kernel schedules it untuned; the others that apply are its alternatives,
# offered as tuning candidates (gconvgen.offline) and served where a tuned record says so.
RULES: list[ScheduleRule] = [DepthwiseColumnsStagedNCHW(), DepthwiseStagedNCHW(), DepthwiseColumnsNCHW(), DepthwiseNCHW(),
                             DepthwisePlanesNCHW(), DepthwiseColumnsRegistersNCHW(), DepthwiseTensorCoreNCHW(),
                             TensorCoreGemm(),
                             TensorCoreGemmPipelined(), TensorCoreGemmTF32(),
                             PointwiseTiledNCHW(), PointwiseTensorCoreNHWC(), DepthwiseWideNHWC(), ChannelVectorNHWC(),
                             DepthwiseRowsNHWC(), SplitReductionNCHW(), GroupConvStagedNCHW(), GroupConvNCHW(),
                             BatchGemm(), PointwiseGemm(), ChannelShuffle(), Fallback()]
