"""Every hand-written CUDA rule, checked against torch on this CPU: each kernel is built for sm_90 by
TVM and nvcc, then its CUDA source runs in tests/cuda_emulator.py (host threads for GPU threads). No
GPU is lent to most sessions, and the alternatives serve only once a GPU has timed them, so this is
where a wrong index or a missed predicate shows first."""
import shutil

import numpy as np
import pytest
import torch

import cuda_emulator
from gconvgen import reference, targets
from gconvgen.ops import prim_func
from gconvgen.spec import KernelSpec
from schedules import alternative_specs, cuda

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None or not (cuda_emulator.CUDA_INCLUDE / "cuda_fp16.h").exists(),
                                reason="needs the CUDA toolkit (nvcc and its headers)")


def conv(cin: int, cout: int, size: int, *, k: int | tuple = 3, stride: int = 1, groups: int = 1, batch: int = 2,
         layout: str = "NCHW", dtype: str = "float32", epilogue: tuple = ("bias", "relu6"), tf32: bool = False
         ) -> KernelSpec:
    kh, kw = k if isinstance(k, tuple) else (k, k)
    return KernelSpec.from_json({"op": "conv2d", "batch": batch, "in_channels": cin, "out_channels": cout,
                                 "height": size, "width": size, "kernel": [kh, kw], "stride": [stride, stride],
                                 "padding": [kh // 2, kw // 2], "groups": groups, "epilogue": list(epilogue),
                                 "layout": layout, "dtype": dtype, "tf32": tf32})


def dw(channels: int, size: int, **kw) -> KernelSpec:
    return conv(channels, channels, size, groups=channels, **kw)


def shuffle(channels: int, size: int, groups: int, *, batch: int = 2, layout: str = "NCHW",
            dtype: str = "float32") -> KernelSpec:
    return KernelSpec.from_json({"op": "channel_shuffle", "batch": batch, "channels": channels, "height": size,
                                 "width": size, "groups": groups, "layout": layout, "dtype": dtype})


CASES = [
    (cuda.DepthwiseNCHW(), dw(16, 16)),
    (cuda.DepthwiseNCHW(), dw(16, 16, stride=2, dtype="float16")),
    (cuda.DepthwiseNCHW(), dw(16, 12, k=5, dtype="float16", epilogue=("bias", "silu"))),   # EfficientNet's
    (cuda.DepthwiseStagedNCHW(), dw(16, 16, dtype="float16")),                 # 8-lane copies
    (cuda.DepthwiseStagedNCHW(), dw(24, 12, stride=2)),
    (cuda.DepthwiseStagedNCHW(), dw(8, 14, k=7, dtype="float16", epilogue=("bias",))),   # 2 lanes
    (cuda.DepthwiseStagedNCHW(), dw(40, 7)),                                   # scalar copies, planes a block
    (cuda.DepthwiseStagedNCHW(), conv(8, 16, 16, k=1, stride=2, groups=8)),   # multiplier 2; rows not whole
    # a thread per column of a band: ConvNeXt's 7x7 (8 rows a thread), float16, stride 2, a 7x7 plane
    # (7 rows, one row group), a multiplier of 2
    (cuda.DepthwiseColumnsNCHW(), dw(8, 16, k=7, epilogue=("bias",))),
    (cuda.DepthwiseColumnsNCHW(), dw(16, 12, dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseColumnsNCHW(), dw(24, 13, stride=2)),
    (cuda.DepthwiseColumnsNCHW(), dw(8, 7, k=7, batch=3)),
    (cuda.DepthwiseColumnsNCHW(), conv(8, 16, 10, groups=8)),
    # the same threads on the unpadded stage: 16-byte copies (float16: 8 lanes), 2 lanes for a row of
    # 14, scalar where a stride 2 skips the last column, a multiplier of 2
    (cuda.DepthwiseColumnsStagedNCHW(), dw(8, 16, k=7, epilogue=("bias",))),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(16, 16, dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(4, 14)),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(24, 13, stride=2)),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(12, 30, stride=2, dtype="float16")),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(8, 7, k=7, batch=3)),
    (cuda.DepthwiseColumnsStagedNCHW(), conv(8, 16, 10, groups=8)),
    # kernels the op gives fewer reduction axes (it leaves out unit ones): a 1x1 (a per-channel scale,
    # no taps at all), 1x3 and 3x1 (factorized), which the column rules, serving them, failed to schedule
    (cuda.DepthwiseColumnsStagedNCHW(), dw(8, 12, k=1)),
    (cuda.DepthwiseColumnsStagedNCHW(), dw(8, 12, k=(1, 3), dtype="float16")),
    (cuda.DepthwiseColumnsNCHW(), dw(8, 12, k=(5, 1), stride=2)),
    # the same threads with their windows in registers: padded (the pad block computed per thread),
    # unpadded (a 1x1: a register cache of the stage), float16 at stride 2, a 7x7, a multiplier
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(16, 16, dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(8, 12, k=1)),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(12, 30, stride=2, dtype="float16")),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(8, 16, k=7, batch=3, epilogue=("bias",))),
    (cuda.DepthwiseColumnsRegistersNCHW(), conv(8, 16, 10, groups=8, k=(3, 1))),
    # two adjacent columns a thread on rows of 28 or more, stored as pairs
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(4, 28, dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(4, 60, stride=2)),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(4, 30, k=7, dtype="float16", epilogue=("bias",))),
    # whole planes a block where a plane's columns are few threads, copied as one span in 16-byte
    # vectors: units of 2 planes of 14x14 in float16, 8 of 7x7, 4 of 7x7 in float32 (a 5x5 kernel)
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(12, 14, dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(24, 7, batch=3, dtype="float16")),
    (cuda.DepthwiseColumnsRegistersNCHW(), dw(12, 7, k=5, epilogue=("bias",))),
    # whole planes a block, copied as one span in 16-byte vectors: 2 planes of 14x14 a unit in
    # float16, 8 of 7x7; one of 13x13 in float32 (13 scalars: a unit of 4); ConvNeXt's 7x7 kernel
    (cuda.DepthwisePlanesNCHW(), dw(16, 14, dtype="float16")),
    (cuda.DepthwisePlanesNCHW(), dw(24, 7, dtype="float16", epilogue=("bias",))),
    (cuda.DepthwisePlanesNCHW(), dw(8, 13)),
    (cuda.DepthwisePlanesNCHW(), dw(16, 7, k=7, batch=3, dtype="float16", epilogue=("bias",))),
    (cuda.ChannelVectorNHWC(), dw(16, 10, layout="NHWC", dtype="float16")),
    (cuda.ChannelVectorNHWC(), conv(32, 256, 32, k=1, batch=8, layout="NHWC", epilogue=("bias",))),  # 4 pixels a thread
    (cuda.ChannelVectorNHWC(), conv(32, 64, 9, groups=4, layout="NHWC")),
    (cuda.DepthwiseWideNHWC(), dw(16, 8, layout="NHWC", dtype="float16")),     # 8 lanes, 4 pixels a thread
    (cuda.DepthwiseWideNHWC(), dw(24, 12, stride=2, layout="NHWC")),
    (cuda.DepthwiseWideNHWC(), dw(48, 14, k=7, layout="NHWC", dtype="float16", epilogue=("bias",))),
    (cuda.DepthwiseWideNHWC(), dw(6, 7, layout="NHWC", dtype="float16")),      # 2 lanes, 1 pixel a thread
    (cuda.DepthwiseWideNHWC(), conv(8, 16, 8, groups=8, layout="NHWC", dtype="float16")),   # multiplier 2
    (cuda.DepthwiseWideNHWC(), conv(8, 32, 9, k=7, groups=8, layout="NHWC")),   # multiplier 4, 1 input channel a vector
    # weights in registers a thread, rows x pixels of one channel: 2 rows of 7 (ConvNeXt's), a 5x5 in
    # float16 (EfficientNet's) with 4 pixels of a row of 12, a multiplier of 2 and 3 pixels of a row of 9
    (cuda.DepthwiseRowsNHWC(min_threads=1), dw(48, 14, k=7, layout="NHWC", epilogue=("bias",))),
    (cuda.DepthwiseRowsNHWC(min_threads=1), dw(16, 12, k=5, layout="NHWC", dtype="float16", epilogue=("bias", "silu"))),
    (cuda.DepthwiseRowsNHWC(), conv(8, 16, 9, k=7, groups=8, layout="NHWC")),
    (cuda.PointwiseTiledNCHW(min_blocks=1), conv(64, 64, 14, k=1, batch=1, epilogue=("bias",))),
    (cuda.PointwiseTiledNCHW(min_blocks=1), conv(32, 64, 14, k=1, batch=1, dtype="float16")),
    (cuda.PointwiseTiledNCHW(min_blocks=1), conv(48, 64, 7, k=1, epilogue=("bias",))),   # 7 pixels a thread
    (cuda.PointwiseTiledNCHW(min_blocks=1), conv(48, 96, 8, k=1, groups=3, epilogue=("bias", "relu", "shuffle:3"))),
    (cuda.PointwiseTiledNCHW(min_blocks=1), conv(96, 48, 7, k=1, groups=3, dtype="float16")),
    # pixels of the batch as one axis: 4-pixel vectors across images (7x7), one chunk of 58 channels,
    # float16, no vectors (an odd count of pixels)
    (cuda.BatchGemm(min_blocks=1), conv(64, 32, 7, k=1, batch=4, epilogue=("bias",))),
    (cuda.BatchGemm(min_blocks=1), conv(58, 58, 8, k=1, epilogue=("bias", "relu"))),
    (cuda.BatchGemm(min_blocks=1), conv(48, 24, 6, k=1, dtype="float16", epilogue=("bias",))),
    (cuda.BatchGemm(min_blocks=1), conv(32, 16, 5, k=1, batch=3, epilogue=("bias",))),
    # grouped: ResNeXt's 3x3 (taps gathered, padding predicated), at stride 2 in float16, a 5x5, a grouped 1x1
    (cuda.BatchGemm(min_blocks=1), conv(64, 64, 7, groups=8, epilogue=("bias", "relu"))),
    (cuda.BatchGemm(min_blocks=1), conv(64, 64, 8, groups=4, stride=2, dtype="float16", epilogue=("bias", "relu"))),
    (cuda.BatchGemm(min_blocks=1), conv(16, 32, 9, k=5, groups=2, stride=2)),
    (cuda.BatchGemm(min_blocks=1), conv(32, 64, 6, groups=4, k=1)),
    # NHWC: channel vectors (loads along a group's input channels, stores along its outputs)
    (cuda.BatchGemm(min_blocks=1), conv(64, 32, 7, k=1, batch=4, layout="NHWC", epilogue=("bias",))),
    (cuda.BatchGemm(min_blocks=1), conv(58, 58, 8, k=1, layout="NHWC", epilogue=("bias", "relu"))),   # 58: no vectors
    (cuda.BatchGemm(min_blocks=1), conv(64, 64, 8, groups=4, stride=2, layout="NHWC", dtype="float16")),
    (cuda.BatchGemm(min_blocks=1), conv(24, 36, 9, k=5, groups=3, stride=2, layout="NHWC")),
    (cuda.BatchGemm(min_blocks=1), conv(96, 48, 7, k=1, groups=3, batch=4, dtype="float16", epilogue=("bias", "shuffle:3"))),
    (cuda.BatchGemm(min_blocks=1), conv(48, 96, 8, k=1, groups=3, layout="NHWC", epilogue=("bias", "relu", "shuffle:3"))),
    # tensor cores (WMMA fragments, dynamic shared memory): DLight's GEMM of a dense 1x1, in NHWC and
    # NCHW; ours, both layouts: dense and grouped 1x1s and 3x3s, 58 channels (2-lane loads, a padded
    # fragment), a 5x5 at stride 2 over 3 images, and with the default tiles (more, smaller blocks),
    # ShuffleNet v1's shuffled grouped 1x1s
    (cuda.PointwiseTensorCoreNHWC(), conv(64, 48, 8, k=1, layout="NHWC", dtype="float16", epilogue=("bias",))),
    (cuda.PointwiseGemm(), conv(64, 48, 8, k=1, dtype="float16", epilogue=("bias",))),
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 48, 8, k=1, layout="NHWC", dtype="float16", epilogue=("bias",))),
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 48, 8, k=1, dtype="float16", epilogue=("bias",))),
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 64, 7, groups=4, dtype="float16")),
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 64, 7, groups=4, layout="NHWC", dtype="float16")),
    (cuda.TensorCoreGemm(min_blocks=1), conv(58, 58, 7, k=1, layout="NHWC", dtype="float16")),
    (cuda.TensorCoreGemm(min_blocks=1), conv(48, 96, 9, k=5, stride=2, groups=3, batch=3, dtype="float16")),
    # NCHW's reduction taps first: 12 channels a group (a chunk of k spans taps, off a power of two)
    (cuda.TensorCoreGemm(min_blocks=1), conv(36, 48, 7, groups=3, batch=2, dtype="float16", epilogue=("bias",))),
    (cuda.TensorCoreGemm(), conv(24, 40, 6, stride=2, batch=3, layout="NHWC", dtype="float16")),
    # a shuffle of one channel a group, which moves nothing (TVM's transforms of its remap lost half
    # the outputs: a random sweep's find)
    (cuda.TensorCoreGemm(), conv(8, 2, 6, layout="NHWC", dtype="float16", epilogue=("bias", "shuffle:2"))),
    # a factorized kernel's k axis, a row or a column of taps
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 64, 7, k=(1, 3), groups=2, dtype="float16")),
    (cuda.TensorCoreGemm(min_blocks=1), conv(64, 64, 7, k=(3, 1), groups=2, layout="NHWC", dtype="float16")),
    (cuda.TensorCoreGemm(), conv(96, 48, 8, k=1, groups=3, dtype="float16", epilogue=("bias", "relu", "shuffle:3"))),
    (cuda.TensorCoreGemm(), conv(48, 96, 8, k=1, groups=3, layout="NHWC", dtype="float16",
                                 epilogue=("bias", "relu", "shuffle:3"))),
    # the same with cp.async copies, 3 chunks in flight: 16-byte copies (a dense 1x1 in NHWC), 8-byte
    # ones (NCHW's 6x6 planes: 36 pixels, runs of 4), predicated ones (a grouped 3x3's gathered taps,
    # the padding zero-filled), a shuffle fused
    (cuda.TensorCoreGemmPipelined(min_blocks=1), conv(256, 64, 7, k=1, layout="NHWC", dtype="float16", epilogue=("bias",))),
    (cuda.TensorCoreGemmPipelined(min_blocks=1), conv(256, 64, 6, k=1, dtype="float16", epilogue=("bias", "relu"))),
    (cuda.TensorCoreGemmPipelined(min_blocks=1), conv(64, 64, 7, groups=2, layout="NHWC", dtype="float16")),
    (cuda.TensorCoreGemmPipelined(), conv(288, 96, 8, k=1, groups=4, layout="NHWC", dtype="float16",
                                          epilogue=("bias", "relu", "shuffle:4"))),
    # TF32 (float32 inputs rounded on their way to shared memory, 16x16x8 fragments, float32 sums): a
    # dense 1x1 in NHWC (4-lane loads) and in NCHW (the weight-first multiply-add), a grouped 3x3 (the
    # taps gathered, the padding predicated), a shuffle fused
    (cuda.TensorCoreGemmTF32(min_blocks=1), conv(64, 48, 8, k=1, layout="NHWC", epilogue=("bias", "relu"), tf32=True)),
    (cuda.TensorCoreGemmTF32(min_blocks=1), conv(64, 48, 8, k=1, epilogue=("bias",), tf32=True)),
    (cuda.TensorCoreGemmTF32(min_blocks=1), conv(64, 64, 7, groups=2, layout="NHWC", tf32=True)),
    (cuda.TensorCoreGemmTF32(min_blocks=1), conv(64, 64, 7, groups=2, batch=3, tf32=True)),
    (cuda.TensorCoreGemmTF32(), conv(96, 48, 8, k=1, groups=3, layout="NHWC", epilogue=("bias", "relu", "shuffle:3"),
                                     tf32=True)),
    (cuda.SplitReductionNCHW(), conv(256, 64, 7, k=1, batch=1, epilogue=("bias",))),
    (cuda.SplitReductionNCHW(), conv(96, 384, 1, k=1, epilogue=("bias", "sigmoid"))),   # a squeeze-and-excitation gate
    (cuda.SplitReductionNCHW(), conv(64, 32, 7, batch=1, groups=2, dtype="float16")),
    (cuda.SplitReductionNCHW(), conv(96, 40, 7, k=1, batch=2, epilogue=("bias",))),   # blocks across planes
    # a 6x8 plane (rows of 8 threads, the last of a plane's runs predicated; across planes TVM refused
    # it), from a 2x2 kernel padded by 2 on one side only (its first row and column read padding alone)
    (cuda.SplitReductionNCHW(), KernelSpec.from_json({"op": "conv2d", "batch": 1, "in_channels": 26, "out_channels": 44,
                                                      "height": 5, "width": 7, "kernel": [2, 2], "padding": [2, 2, 0, 0],
                                                      "epilogue": ["bias"]})),
    (cuda.GroupConvNCHW(), conv(32, 64, 10, groups=4)),
    (cuda.GroupConvNCHW(), conv(24, 48, 9, k=1, stride=2, dtype="float16", epilogue=("bias",))),
    (cuda.GroupConvStagedNCHW(), conv(64, 128, 7, groups=4)),                 # 8 channels a thread
    (cuda.GroupConvStagedNCHW(), conv(96, 48, 7, k=1, groups=3, dtype="float16", epilogue=("bias",))),
    (cuda.GroupConvStagedNCHW(), conv(480, 32, 14, k=1, batch=1, epilogue=("bias",))),   # chunks of 480/k
    (cuda.GroupConvStagedNCHW(min_threads=1), conv(64, 64, 8, groups=16)),   # 4 pixels a thread, 4 channels
    (cuda.GroupConvStagedNCHW(min_threads=1), conv(64, 64, 12, stride=2, groups=8, dtype="float16")),   # 3 pixels
    (cuda.GroupConvStagedNCHW(pixels=8, min_threads=1), conv(16, 32, 7, groups=4)),    # a whole row a thread
    # an output shuffle fused into the stores: as ShuffleNet v1, and with other shuffle groups than conv groups
    (cuda.GroupConvNCHW(), conv(32, 64, 10, k=1, groups=4, epilogue=("bias", "relu", "shuffle:4"))),
    (cuda.GroupConvNCHW(), conv(32, 48, 6, groups=4, dtype="float16", epilogue=("bias", "shuffle:3"))),
    (cuda.GroupConvStagedNCHW(), conv(96, 48, 7, k=1, groups=3, epilogue=("bias", "relu", "shuffle:3"))),
    (cuda.SplitReductionNCHW(), conv(192, 48, 7, k=1, batch=1, groups=3, epilogue=("bias", "relu", "shuffle:3"))),
    (cuda.ChannelVectorNHWC(), conv(24, 48, 8, k=1, groups=3, layout="NHWC", epilogue=("bias", "shuffle:3"))),
    (cuda.ChannelVectorNHWC(), conv(16, 64, 7, k=1, layout="NHWC", epilogue=("bias", "gelu"))),   # ConvNeXt's MLP
    (cuda.ChannelVectorNHWC(), conv(32, 64, 8, k=1, batch=4, groups=4, layout="NHWC", dtype="float16",
                                    epilogue=("bias", "relu", "shuffle:4"))),   # pixels a thread
    # shuffles: in NCHW plane copies in 16-byte vectors (8 float16 lanes on 28x28, 4 float32 on 14x14),
    # 8 bytes (4 float16 lanes on 14x14), blocks of whole planes but for large ones; in NHWC 4-lane
    # stores of 2 or 4 channels of each group, or of 4 groups' one (ShuffleNet v2's 58 a group),
    # scalar ones for 6 channels a pixel
    (cuda.ChannelShuffle(), shuffle(12, 28, 3, dtype="float16")),
    (cuda.ChannelShuffle(), shuffle(16, 14, 2)),
    (cuda.ChannelShuffle(), shuffle(8, 14, 4, batch=3, dtype="float16")),
    (cuda.ChannelShuffle(), shuffle(4, 40, 2)),   # planes of more runs than a block's threads
    (cuda.ChannelShuffle(), shuffle(116, 5, 2, layout="NHWC", dtype="float16")),
    (cuda.ChannelShuffle(), shuffle(60, 6, 3, layout="NHWC")),
    (cuda.ChannelShuffle(), shuffle(16, 5, 4, layout="NHWC", dtype="float16")),
    (cuda.ChannelShuffle(), shuffle(6, 7, 3, batch=3, layout="NHWC")),
    # the fallback: one kernel, the epilogue (a fused shuffle too) under the accumulating thread; a
    # single output (every thread of a block had stored it); a gradient
    (cuda.Fallback(), conv(32, 64, 10, k=1, groups=4, epilogue=("bias", "shuffle:4"))),
    (cuda.Fallback(), conv(2, 1, 1, k=1, batch=1, epilogue=())),
    (cuda.Fallback(), KernelSpec.from_json({"op": "conv2d_dgrad", "in_channels": 8, "out_channels": 6, "height": 9,
                                            "width": 9, "kernel": 3, "stride": 2, "padding": 1, "groups": 2})),
]


@pytest.mark.parametrize("rule, spec", CASES, ids=[f"{r.name[5:]}-{s.key}" for r, s in CASES])
def test_cuda_rule_matches_torch(rule, spec):
    target = targets.load("cuda-sm90").tvm_target()
    sch = rule.apply(prim_func(spec), target, tunable=False)
    assert sch is not None, f"{rule.name} does not apply to {spec.key}"
    _check(sch.mod["main"], spec, target, rule.name)


@pytest.mark.parametrize("spec", [conv(8, 24, 9, k=7, groups=8, batch=3, layout="NHWC", epilogue=("bias",)),
                                  conv(12, 3, 5, k=5, batch=1, layout="NHWC", dtype="float16"),
                                  conv(96, 40, 7, k=1, batch=3, epilogue=("bias",))],
                         ids=["multiplier3-nhwc", "3-channels-nhwc-fp16", "1x1-7x7-batch3"])
def test_every_rule_that_applies_matches_torch(spec):
    """Shapes a sweep of 150 random ones found a rule wrong on (a channel multiplier of 3 made
    DepthwiseWideNHWC's vector loads misaligned, 3 float16 channels failed ChannelVectorNHWC's
    compile, a batch of 3 the split reduction's schedule): every CUDA rule that applies computes
    them, the fallback too."""
    assert len(_check_every_rule(spec)) > 1


SERVED = [dw(20, 30, batch=3), conv(12, 24, 17, k=5, groups=12, dtype="float16", epilogue=("bias",)),
          dw(12, 9, layout="NHWC", dtype="float16"), dw(20, 11, k=7, stride=2, layout="NHWC", epilogue=("bias",)),
          conv(40, 24, 9, k=1, batch=3, dtype="float16"), conv(48, 96, 5, k=1, groups=3, layout="NHWC", dtype="float16",
                                                               epilogue=("bias", "relu", "shuffle:3")),
          conv(64, 64, 5, groups=2, batch=3, dtype="float16"), conv(16, 32, 15, groups=4, stride=2)]


def test_served_rules_match_torch_off_the_suite():
    """The rule that serves a kernel untuned (the first that serves it: a GPU's timings made the column
    depthwise, the wide NHWC depthwise, the tensor-core GEMM and the staged grouped conv serve by
    default) computes shapes off the suite: odd planes, batches of 3, channel multipliers, a 7x7 at
    stride 2, 40 input channels (a padded fragment), a shuffle fused into the stores."""
    from gconvgen.schedule import rule_for
    profile = targets.load("cuda-sm90")
    served = set()
    for spec in SERVED:
        rule = rule_for(spec, profile)
        served.add(rule.name)
        _check(rule.apply(prim_func(spec), profile.tvm_target(), tunable=False).mod["main"], spec,
               profile.tvm_target(), rule.name)
    assert {"cuda.DepthwiseColumnsStagedNCHW", "cuda.DepthwiseColumnsNCHW", "cuda.DepthwiseWideNHWC",
            "cuda.TensorCoreGemm", "cuda.GroupConvStagedNCHW"} <= served


BANDED = [dw(8, 20, k=7, dtype="float16", epilogue=("bias",)),                 # ConvNeXt's 7x7, 2 tiles a side
           dw(16, 28, k=7, batch=4, dtype="float16", epilogue=("bias", "relu")),  # several images a block
           dw(8, 13, k=5, batch=3, dtype="float16", epilogue=("bias", "residual", "silu")),   # scalar rows
           dw(8, 14, k=(3, 7), dtype="float16", epilogue=("bias", "relu6"))]     # 2-lane rows, a 3x7


@pytest.mark.parametrize("spec", BANDED, ids=[s.key for s in BANDED])
def test_banded_depthwise_on_tensor_cores_matches_torch(spec):
    """The banded variant of float16 depthwise convs (KernelSpec.banded: each kernel row times a band
    matrix of its taps, on WMMA) computes the conv: ConvNeXt's 7x7 on planes of whole and partial
    tiles, several images a block, EfficientNet's 5x5 with a residual on a 13x13 plane (scalar rows), a
    3x7 kernel; every A tile the product reads from the staged plane is 32-byte aligned (the emulator
    checks WMMA's pointers)."""
    target = targets.load("cuda-sm90").tvm_target()
    banded = cuda.DepthwiseTensorCoreNCHW().alternative(spec, target)
    assert alternative_specs(spec, "cuda", target) == [banded] and banded is not None and banded.key.endswith("_banded")
    assert [r.name for r in cuda.RULES if r.applies(banded, target)] == ["cuda.DepthwiseTensorCoreNCHW"]
    sch = cuda.DepthwiseTensorCoreNCHW().apply(prim_func(banded), target, tunable=False)
    stats = _check(sch.mod["main"], banded, target, "cuda.DepthwiseTensorCoreNCHW")
    assert stats.misaligned == 0


def test_only_bandable_convs_have_a_banded_variant():
    """A banded spec is a float16 NCHW depthwise conv at stride 1 whose kernel rows fit the band; others
    are refused with the reason, and the rule offers no variant for a 3x3 (mostly zeros in its band)."""
    target = targets.load("cuda-sm90").tvm_target()
    banded = lambda spec: cuda.DepthwiseTensorCoreNCHW().alternative(spec, target)
    assert banded(dw(8, 16, dtype="float16")) is None
    assert banded(dw(8, 7, k=7, dtype="float16")) is None   # a fifth of a tile
    big = KernelSpec.from_json({**dw(8, 224, k=7, dtype="float16").to_json(), "banded": True})   # a 110 KB stage
    assert banded(dw(8, 224, k=7, dtype="float16")) is None
    assert not cuda.DepthwiseTensorCoreNCHW().applies(big, target)
    assert banded(dw(8, 20, k=7, dtype="float16")) is not None
    assert cuda.DepthwiseTensorCoreNCHW().alternative(dw(8, 20, k=7, dtype="float16"), targets.load("host").tvm_target()) is None
    for spec in (dw(8, 16, k=7), dw(8, 16, k=7, stride=2, dtype="float16"),
                 dw(8, 16, k=7, layout="NHWC", dtype="float16"), conv(8, 16, 16, k=7, groups=8, dtype="float16")):
        assert banded(spec) is None
        with pytest.raises(ValueError, match="banded"):
            KernelSpec.from_json({**spec.to_json(), "banded": True})
    wide = KernelSpec.from_json({**dw(8, 40, dtype="float16").to_json(), "kernel": [3, 13], "padding": [1, 2]})
    with pytest.raises(ValueError, match="band"):   # 13 - 2 > 9: past the band's 32 columns
        KernelSpec.from_json({**wide.to_json(), "banded": True})


def _check_every_rule(spec: KernelSpec) -> list[str]:
    """_check under every CUDA rule that applies to spec; returns their names."""
    target = targets.load("cuda-sm90").tvm_target()
    rules = [r for r in cuda.RULES if r.applies(spec, target)]
    for rule in rules:
        _check(rule.apply(prim_func(spec), target, tunable=False).mod["main"], spec, target, rule.name)
    return [r.name for r in rules]


def _check(scheduled, spec: KernelSpec, target, what: str) -> cuda_emulator.Stats:
    """Run the scheduled function in the emulator on random data and compare with torch; returns what
    the emulator counted."""
    func = prim_func(spec)
    args = reference.random_args(spec)
    expected = reference.to_kernel_layout(spec, "output", reference.forward(
        spec, *[args[n].float() for n in spec.arg_names if n != "output"]))
    buffers = [str(p) for p in func.params]   # the function's buffer names, in spec.arg_names order
    arrays = {b: reference.to_kernel_layout(spec, a, args[a]).numpy().copy()
              for b, a in zip(buffers, spec.arg_names) if a != "output"}
    out = buffers[spec.arg_names.index("output")]
    arrays[out] = np.full(spec.shape("output"), np.nan, dtype=np.float16 if spec.dtype == "float16" else np.float32)
    stats = cuda_emulator.run(scheduled, target, arrays)
    got = torch.from_numpy(arrays[out]).float()
    tol = 1e-2 if spec.dtype == "float16" else 1e-4
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")
    return stats


POOLS_AND_SHUFFLES = [KernelSpec.from_json({**row, "batch": 2, "layout": layout, "dtype": dtype})
                      for layout in ("NCHW", "NHWC") for dtype in ("float32", "float16") for row in (
    {"op": "max_pool2d", "in_channels": 8, "height": 13, "width": 12, "kernel": 3, "stride": 2, "padding": 1},
    {"op": "avg_pool2d", "in_channels": 12, "height": 9, "width": 9, "kernel": 3, "padding": 1, "epilogue": ["relu"]},
    {"op": "avg_pool2d", "in_channels": 16, "height": 7, "width": 7, "kernel": 7},   # a global pool
    {"op": "channel_shuffle", "channels": 48, "height": 7, "width": 9, "groups": 3})]


@pytest.mark.parametrize("spec", POOLS_AND_SHUFFLES, ids=[s.key for s in POOLS_AND_SHUFFLES])
def test_pools_and_shuffles_match_torch(spec):
    """What a converted model runs on a GPU besides its convs (a stem's max pool, the global average
    pool, ShuffleNet's shuffles) under every rule that applies: the fallback serves them in NCHW,
    one kernel since it keeps the window's result in registers (until Dec 2026 a pool was two, and
    this emulator, which runs one, could not check it)."""
    assert _check_every_rule(spec)


def test_emulator_refuses_what_it_does_not_model():
    """A function of two kernels (a conv and its epilogue, each a thread per element) is refused by
    name, not run wrongly."""
    from tvm import s_tir
    target = targets.load("cuda-sm90").tvm_target()
    sch = s_tir.Schedule(prim_func(conv(32, 64, 10, k=1, groups=4, epilogue=("bias", "shuffle:4"))))
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        cuda._thread_per_element(sch, block, 256)
    with pytest.raises(cuda_emulator.Unsupported, match="2 kernels in one function"):
        cuda_emulator.run(sch.mod["main"], target, {})


def test_emulator_catches_a_read_before_its_async_copy_lands(monkeypatch):
    """The tensor-core GEMM's cp.async pipeline with its waits dropped: a GPU would read stale shared
    memory wherever a copy had not landed yet, and the emulator's two runs (copies landing where
    issued, then at their waits) disagree."""
    target = targets.load("cuda-sm90").tvm_target()
    spec = conv(256, 64, 7, k=1, layout="NHWC", dtype="float16", epilogue=("bias",))
    sch = cuda.TensorCoreGemmPipelined(min_blocks=1).apply(prim_func(spec), target, tunable=False)
    _check(sch.mod["main"], spec, target, "with its waits")
    rewrite = cuda_emulator._async_copies
    monkeypatch.setattr(cuda_emulator, "_async_copies", lambda s: rewrite(s).replace("emu_cp_async_wait(", "(void)("))
    with pytest.raises(AssertionError, match="differ between cp.async copies landing where issued and at their waits"):
        _check(sch.mod["main"], spec, target, "without")


def test_emulator_catches_tf32_operands_left_unrounded(monkeypatch):
    """A TF32 kernel whose inputs reached the tensor cores unrounded (the ops' rounding made an
    identity) fails, though its values would pass: a tensor core drops their low bits, the
    emulator's multiply-add does not."""
    from gconvgen.ops import conv as conv_op
    monkeypatch.setattr(conv_op, "round_to_tf32", lambda x: x)
    spec = conv(64, 48, 8, k=1, layout="NHWC", epilogue=("bias",), tf32=True)
    target = targets.load("cuda-sm90").tvm_target()
    sch = cuda.TensorCoreGemmTF32(min_blocks=1).apply(prim_func(spec), target, tunable=False)
    with pytest.raises(AssertionError, match="not rounded to TF32"):
        _check(sch.mod["main"], spec, target, "unrounded")


@pytest.mark.parametrize("spec", [dw(2, 56, k=7, epilogue=("bias",)), dw(2, 28, k=7, epilogue=("bias",)), dw(4, 14)],
                         ids=["7x7-56", "7x7-28", "3x3-14"])
def test_depthwise_columns_read_shared_memory_without_bank_conflicts(spec):
    """The emulator's count of shared-memory wavefronts: DepthwiseNCHW's threads take adjacent outputs
    of a row, so a warp's reads of a tap lie 4 words apart and take 2-3 wavefronts where one would
    do; DepthwiseColumnsNCHW's threads take a column each (its row pitch chosen so that the warp's
    next row of threads lands on the next banks), and take one; on the unpadded stage copied in
    vectors too (a pitch of whole vectors: a 14-wide row of 2-lane copies takes 1.7)."""
    target = targets.load("cuda-sm90").tvm_target()
    rows = _stats(cuda.DepthwiseNCHW(), spec, target)
    columns = _stats(cuda.DepthwiseColumnsNCHW(), spec, target)
    staged = _stats(cuda.DepthwiseColumnsStagedNCHW(), spec, target)
    assert rows.shared_wavefronts >= 2 * rows.shared_ideal
    assert columns.shared_wavefronts <= 1.1 * columns.shared_ideal
    assert staged.shared_wavefronts <= (1.1 if spec.kernel == (7, 7) else 1.7) * staged.shared_ideal


def _stats(rule, spec: KernelSpec, target) -> cuda_emulator.Stats:
    return _check(rule.apply(prim_func(spec), target, tunable=False).mod["main"], spec, target, rule.name)


def test_emulator_reports_misaligned_vectors(tmp_path):
    """A GPU faults on a 16-byte load from an address not a multiple of 16, which x86 forgives: the
    emulator counts them. Here the input starts one half past an aligned address."""
    import ctypes
    target = targets.load("cuda-sm90").tvm_target()
    spec = dw(16, 8, layout="NHWC", dtype="float16")
    sch = cuda.DepthwiseWideNHWC().apply(prim_func(spec), target, tunable=False)
    library, buffers = cuda_emulator.compile_kernel(sch.mod["main"], target, tmp_path)
    arrays = {b: cuda_emulator._aligned_copy(np.zeros(64 * 1024, dtype=np.float16)) for b in buffers}
    pointers = [arrays[b].ctypes.data + (2 if b == "input" else 0) for b in buffers]
    assert library.emu_launch((ctypes.c_void_p * len(buffers))(*pointers)) > 0
    aligned = [arrays[b].ctypes.data for b in buffers]
    assert library.emu_launch((ctypes.c_void_p * len(buffers))(*aligned)) == 0
