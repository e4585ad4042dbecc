"""Small helpers the rules share: block lookup, vector width, tile choices."""
from __future__ import annotations

import math

from tvm import s_tir
from tvm.target import Target
from tvm.target import codegen


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """Lanes of one SIMD register for the target's widest vector unit (16 fp32 with AVX-512)."""
    try:
        bits = int(codegen.llvm_get_vector_width(target))
    except Exception:  # noqa: BLE001 - targets LLVM cannot describe get a safe 128-bit guess
        bits = 128
    if target.kind.name == "llvm" and codegen.target_has_features("sse2", target):
        # LLVM answers 512 for some AVX2-only x86 CPUs (znver3): 16-lane tiles then take two
        # registers a vector and spill (ResNeXt's g32 256x28: 3.1 ms against torch's 0.6)
        bits = min(bits, 512 if codegen.target_has_features("avx512f", target) else
                   256 if codegen.target_has_features("avx", target) else 128)
    return max(1, max(bits, 128) // dtype_bits)


def vector_registers(target: Target) -> int:
    """Vector registers of the target's widest unit: 32 with AVX-512 and on AArch64, 16 on other x86
    (AVX2, SSE). Register tiles are sized to them: a tile made for 32 spills on 16."""
    if target.kind.name == "llvm" and codegen.target_has_features("sse2", target):
        return 32 if codegen.target_has_features("avx512f", target) else 16
    return 32


def for_registers(count: int, target: Target) -> int:
    """A tile dimension chosen for 32 vector registers, scaled to the target's (at least 1)."""
    return max(1, count * vector_registers(target) // 32)


def dtype_bits(dtype: str) -> int:
    return 16 if dtype == "float16" else 32


def divisor_at_most(n: int, limit: int, prefer_multiple_of: int = 1) -> int:
    """Largest divisor of n not above limit, preferring multiples of `prefer_multiple_of`."""
    divisors = [d for d in range(1, min(n, limit) + 1) if n % d == 0]
    preferred = [d for d in divisors if d % prefer_multiple_of == 0]
    return (preferred or divisors)[-1]


def has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - get_sblock raises a plain error for a missing block
        return False



def split(sch: s_tir.Schedule, loop, inner: int | tuple[int, ...], tunable: bool, max_inner: int = 64) -> list:
    """Split `loop` into (outer, inner) with `inner` iterations inside, or into (outer, *inner) for a
    tuple. Tunable: the factors are a sampled perfect tile whose default decision is `inner`, so
    MetaSchedule's MutateTileSize can move it while the untuned schedule stays exactly the rule's choice."""
    return sch.split(loop, factors=tile_factors(sch, loop, inner, tunable, max_inner))


def tile_factors(sch: s_tir.Schedule, loop, inner: int | tuple[int, ...], tunable: bool, max_inner: int = 64) -> list:
    """split's factors: [None, *inner], or when tunable the sampled tile [outer, *inner] (inner must
    divide the loop's extent then), whose variables a rule may combine (a thread count is a product
    of two tiles)."""
    inner = inner if isinstance(inner, tuple) else (inner,)
    if not tunable:
        return [None, *inner]
    extent = int(sch.get(loop).extent)
    return list(sch.sample_perfect_tile(loop, n=1 + len(inner), max_innermost_factor=max(inner[-1], max_inner),
                                        decision=[extent // math.prod(inner), *inner]))


def flatten_pixels(sch: s_tir.Schedule, conv, out, width: int) -> list:
    """One pixel axis p = h * W + w for the accumulator, the conv and the epilogue, so a pixel tile is
    one contiguous range (a box), which fusing the epilogue needs. Returns the conv's loops (n, o, p, r)."""
    sch.transform_layout(conv, ("write", 0), lambda n, o, h, w: (n, o, h * width + w))
    sch.transform_block_layout(conv, lambda n, o, h, w, r: (n, o, h * width + w, r))
    sch.transform_block_layout(out, lambda n, o, h, w: (n, o, h * width + w))
    return sch.get_loops(conv)


def epilogue_in_conv_order(sch: s_tir.Schedule, spec) -> None:
    """With an output shuffle, iterate the epilogue block ("out", NCHW) over the conv's channels:
    output channel j*G+g holds conv channel g*(C/G)+j, so a tile of the conv's channels is then a box
    of the epilogue's iterations (its planes land G apart) and the epilogue runs under the tile while
    it is hot, where over output channels it needed a separate pass over the whole output. Nothing to
    do without a shuffle."""
    groups = spec.shuffle_groups
    if groups == 1:
        return
    assert spec.layout == "NCHW", "NHWC shuffles interleave their stores (x86.ChannelVectorNHWC)"
    per_group = spec.out_channels // groups
    sch.transform_block_layout(sch.get_sblock("out"),
                               lambda n, c, h, w: (n, (c % groups) * per_group + c // groups, h, w))
