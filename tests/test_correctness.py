"""Every public-suite layer, both layouts, against torch.nn.functional.conv2d (+ epilogue):
once as served (the shipped tuning log where it has the layer) and once from the rules alone."""
import dataclasses
import re

import pytest
import torch

from gconvgen import suites, targets
from gconvgen.spec import KernelSpec
from schedules.common import vector_lanes

from helpers import relative_error

WORKLOADS = suites.load("public")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_public_layer_matches_torch(workload, layout, host):
    spec = workload.spec.with_layout(layout)
    assert relative_error(spec, host) < 1e-4


@pytest.fixture(scope="session")
def rules_only(host, tmp_path_factory):
    return dataclasses.replace(host, logs=(str(tmp_path_factory.mktemp("no-log")),))


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_public_layer_from_rules_alone_matches_torch(workload, rules_only):
    from gconvgen.schedule import schedule
    assert schedule(workload.spec, rules_only).kind in ("rule", "fallback")
    assert relative_error(workload.spec, rules_only) < 1e-4


def _wgrad(spec):
    return dataclasses.replace(spec, op="conv2d_wgrad", epilogue=(), layout="NCHW")


CONVS = [w for w in WORKLOADS if w.spec.op == "conv2d"]
ODD_WGRADS = [KernelSpec.from_json(row) for row in (
    {"op": "conv2d_wgrad", "batch": 2, "in_channels": 8, "out_channels": 12, "height": 9, "width": 7, "kernel": 3,
     "padding": [1, 2], "stride": [2, 1], "dilation": [1, 2], "groups": 4},
    {"op": "conv2d_wgrad", "batch": 3, "in_channels": 6, "out_channels": 6, "height": 5, "width": 11, "kernel": [1, 3],
     "padding": [0, 0, 1, 2], "groups": 6},
    {"op": "conv2d_wgrad", "batch": 2, "in_channels": 12, "out_channels": 8, "height": 6, "width": 6, "groups": 2})]


@pytest.mark.parametrize("workload", CONVS, ids=[w.name for w in CONVS])
def test_public_layer_weight_gradient_matches_torch(workload, host):
    spec = _wgrad(workload.spec)
    from gconvgen.schedule import schedule
    assert schedule(spec, host).source == "x86.WeightGradNCHW"
    assert relative_error(spec, host) < 1e-4


@pytest.mark.parametrize("spec", ODD_WGRADS, ids=lambda s: s.key)
def test_odd_weight_gradients_match_torch(spec, host):
    assert relative_error(spec, host) < 1e-4


STRIDED = [w for w in CONVS if w.spec.stride != (1, 1)]
ODD_DGRADS = [KernelSpec.from_json(row) for row in (
    {"op": "conv2d_dgrad", "batch": 2, "in_channels": 8, "out_channels": 12, "height": 10, "width": 9, "kernel": 3,
     "padding": [1, 2], "stride": [2, 3], "dilation": [2, 1], "groups": 4},
    {"op": "conv2d_dgrad", "in_channels": 6, "out_channels": 6, "height": 7, "width": 7, "kernel": 3, "padding": 1,
     "stride": 2, "groups": 6},                                           # odd size: the fallback serves it
    {"op": "conv2d_dgrad", "in_channels": 12, "out_channels": 24, "height": 8, "width": 8, "stride": 2})]


@pytest.mark.parametrize("workload", STRIDED, ids=[w.name for w in STRIDED])
def test_public_layer_input_gradient_matches_torch(workload, host):
    spec = dataclasses.replace(workload.spec, op="conv2d_dgrad", epilogue=(), layout="NCHW")
    from gconvgen.schedule import schedule
    assert schedule(spec, host).source == "x86.InputGradNCHW"
    assert relative_error(spec, host) < 1e-4


@pytest.mark.parametrize("spec", ODD_DGRADS, ids=lambda s: s.key)
def test_odd_input_gradients_match_torch(spec, host):
    assert relative_error(spec, host) < 1e-4


POOLS = [KernelSpec.from_json({"op": "max_pool2d", **row}) for row in (
    {"in_channels": 24, "height": 112, "width": 112, "kernel": 3, "stride": 2, "padding": 1},   # ShuffleNet stem
    {"in_channels": 64, "height": 112, "width": 112, "kernel": 3, "stride": 2, "padding": 1},   # ResNeXt stem
    {"batch": 2, "in_channels": 5, "height": 9, "width": 7, "kernel": [3, 2], "stride": [2, 1],
     "padding": [1, 0, 0, 1], "dilation": [1, 2]},
    {"in_channels": 8, "height": 7, "width": 7, "kernel": 2, "stride": 2})]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spec", POOLS, ids=lambda s: s.key)
def test_max_pool_matches_torch(spec, layout, host):
    assert relative_error(spec.with_layout(layout), host) == 0.0


AVG_POOLS = [KernelSpec.from_json({"op": "avg_pool2d", **row}) for row in (
    {"in_channels": 240, "height": 28, "width": 28, "kernel": 3, "stride": 2, "padding": 1},   # ShuffleNet v1 shortcut
    {"in_channels": 24, "height": 56, "width": 56, "kernel": 3, "stride": 2, "padding": 1, "epilogue": ["relu"]},
    {"in_channels": 1280, "height": 7, "width": 7, "kernel": 7, "stride": 7},                   # a global pool
    {"batch": 2, "in_channels": 5, "height": 9, "width": 7, "kernel": [3, 2], "stride": [2, 1],
     "padding": [1, 0, 0, 1], "epilogue": ["relu6"]})]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spec", AVG_POOLS, ids=lambda s: s.key)
def test_avg_pool_matches_torch(spec, layout, host):
    assert relative_error(spec.with_layout(layout), host) < 1e-5


GLOBAL_POOLS = [KernelSpec.from_json({"op": op, "batch": n, "in_channels": c, "height": h, "width": w, "kernel": [h, w],
                                      "stride": [h, w], "epilogue": e})
                for op, n, c, h, w, e in (("avg_pool2d", 2, 40, 7, 7, ["relu6"]), ("max_pool2d", 3, 12, 5, 3, []),
                                          ("avg_pool2d", 1, 16, 14, 14, []))]


@pytest.mark.parametrize("spec", GLOBAL_POOLS, ids=lambda s: s.key)
def test_global_pool_nchw_sums_row_vectors(spec, host):
    """x86.GlobalPoolNCHW: a plane's window rows reduced as one vector, then its lanes."""
    from gconvgen.schedule import rule_schedule
    assert rule_schedule(spec, host).source == "x86.GlobalPoolNCHW"
    assert relative_error(spec, host) < 1e-5


@pytest.mark.parametrize("activation", ["silu", "sigmoid", "hardsigmoid"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_sigmoid_epilogues_over_the_whole_float_range(activation, layout, host):
    """silu and sigmoid compute e^x in plain arithmetic (ops/epilogue.exp): pre-activations of a few
    hundred, beyond where e^x leaves float32, saturate as torch's do (an EfficientNet 5x5 depthwise)."""
    from gconvgen import reference
    from helpers import run_ours
    spec = KernelSpec.from_json({"in_channels": 16, "out_channels": 16, "groups": 16, "height": 12, "width": 12,
                                 "kernel": 5, "padding": 2, "epilogue": ["bias", activation], "layout": layout})
    args = reference.random_args(spec)
    args["input"] = args["input"] * 100
    expected = reference.forward(spec, *args.values())
    z = torch.nn.functional.conv2d(args["input"], args["weight"], args["bias"], padding=2, groups=16)
    assert z.min() < -88 and z.max() > 89
    ours = run_ours(spec, host, args)
    assert ((ours - expected).abs().max() / expected.abs().max()).item() < 1e-5


@pytest.mark.parametrize("activation", ["silu", "sigmoid", "gelu"])
def test_exp_epilogues_stay_within_a_few_ulp(activation, host):
    """ops/epilogue.exp's short polynomial (and normal_cdf's, for the exact GELU), value by value: within
    3e-7 of float64 wherever the result is beyond 1e-30 (torch's own float32 ops: 1.7e-7); below, within
    1e-30 of 0, and saturated at the top."""
    import numpy as np
    import tvm
    from tvm import te
    from gconvgen.ops import epilogue
    from gconvgen.spec import KernelSpec
    spec = KernelSpec.from_json({"in_channels": 8, "out_channels": 8, "height": 1, "width": 1, "epilogue": [activation]})
    x = te.placeholder((1 << 16,), name="x")
    y = te.compute(x.shape, lambda i: epilogue.apply(spec, x[i], 0, None), name="y")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
    sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("y"))[0], [None, 8])[1])
    with host.tvm_target() as target:
        kernel = tvm.compile(sch.mod, target=target)
    xs = np.linspace(-120, 120, 1 << 16, dtype="float32")
    out = tvm.runtime.tensor(np.zeros_like(xs))
    kernel(tvm.runtime.tensor(xs), out)
    ours = out.numpy().astype("float64")
    xd = torch.from_numpy(xs).double()
    # torch's GELU, 1 + erf, cancels in the tail (float64: 2 % off at -8); the exact one is erfc's
    ref = (xd * torch.special.erfc(-xd / 2 ** 0.5) / 2 if activation == "gelu"
           else getattr(torch.nn.functional, activation)(xd)).numpy()
    normal = np.abs(ref) > 1e-30
    relative = np.abs(ours - ref)[normal] / np.abs(ref[normal])
    if activation == "gelu":   # its tail e^(-x^2/2) inherits the float32 rounding of x^2: 1e-5 at -12
        assert relative[np.abs(xs[normal]) <= 4].max() < 1.5e-6 and relative.max() < 2e-5
    else:
        assert relative.max() < 3e-7
    assert np.abs(ours[~normal]).max() < 1e-30
    assert ours[-1] == (1.0 if activation == "sigmoid" else 120.0)


# Pointwise layers whose planes are no multiple of the vector, with the weight packed (HWIO blocked by the
# channel vector) as the torch ops call them on x86: the channel-vector rule, a partial last tile
# (232 = 29 x 8) included, and 1-pixel tiles of 8 vectors whose reduction runs in blocks of 32 on AVX2.
PACKED = [KernelSpec.from_json({"in_channels": i, "out_channels": o, "height": h, "width": h, "epilogue": e})
          for i, o, h, e in ((232, 232, 7, ["bias", "relu"]), (96, 576, 14, ["bias", "relu6"]),
                             (24, 40, 5, []), (16, 1024, 7, ["hardswish"]), (96, 320, 7, ["bias"]))] + [
    KernelSpec.from_json({"batch": 3, "in_channels": 1024, "out_channels": 96, "height": 7, "width": 7})]


def test_deep_batched_packed_pointwise_transposes_its_input(host):
    """PointwisePackedNCHW on a batch of deep layers whose images take 1-pixel tiles (13 pixels, prime,
    on any x86 register file): the input is copied pixel-major first and tasks are panels of images."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    natural = KernelSpec.from_json({"batch": 5, "in_channels": 768, "out_channels": 64, "height": 1, "width": 13,
                                    "epilogue": ["bias", "residual", "relu"]})
    spec = preferred_spec(natural, host.family, host.tvm_target())
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.PointwisePackedNCHW" and 'T.sblock("input_global")' in scheduled.func.script()
    assert relative_error(spec, host) < 1e-4


@pytest.mark.parametrize("natural", PACKED, ids=lambda s: s.key)
def test_packed_weight_pointwise_matches_torch(natural, host):
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    spec = preferred_spec(natural, host.family, host.tvm_target())
    lanes = vector_lanes(host.tvm_target())   # (blocked by the vector where the channels are whole vectors)
    assert spec.weight_layout == (f"HWIO{lanes}" if natural.out_channels % lanes == 0 else "HWIO")
    assert rule_schedule(spec, host).source == "x86.PointwisePackedNCHW"
    assert relative_error(spec, host) < 1e-4


# Dense pointwise layers on 28x28 planes (49 vectors): the 4-channel x 7-vector tile, channel-tile tasks.
WIDE_TILE = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": 28, "width": 28,
                                   "epilogue": e})
             for n, i, o, e in ((1, 512, 256, ["bias", "relu"]), (1, 192, 64, ["bias", "residual"]), (2, 256, 128, []))]


def _avx512():
    """These shapes pick their rules at AVX-512's 16 lanes, so the choice is asserted for that
    profile (choosing compiles nothing); the host runs whichever rule its own lanes pick (AVX2's 8
    pick others) and its result is checked against torch."""
    return targets.load("x86-avx512")


@pytest.mark.parametrize("spec", WIDE_TILE, ids=lambda s: s.key)
def test_wide_tile_pointwise_matches_torch(spec, host):
    from gconvgen.schedule import rule_schedule
    assert rule_schedule(spec, _avx512()).source == "x86.PointwiseWideTileNCHW"
    assert relative_error(spec, host) < 1e-4


# Grouped convs on small planes with the weight packed (HWIO): vectors along a group's output channels.
GROUP_PACKED = [KernelSpec.from_json({"batch": n, "in_channels": c, "out_channels": c, "height": h, "width": h,
                                      "kernel": k, "stride": s, "padding": k // 2, "groups": g, "epilogue": e})
                for n, c, h, k, s, g, e in ((1, 512, 14, 3, 1, 32, ["bias", "relu"]), (1, 1024, 14, 3, 2, 32, ["bias"]),
                                            (2, 64, 9, 3, 1, 2, ["relu6"]), (1, 240, 7, 1, 1, 3, ["bias"]),
                                            # e^x activations store channel vectors, scattered to their planes
                                            (2, 64, 9, 3, 1, 2, ["bias", "sigmoid"]),
                                            (1, 240, 7, 1, 1, 3, ["bias", "silu", "shuffle:3"]))] + [
    KernelSpec.from_json({"in_channels": 3, "out_channels": o, "height": 64, "width": 62, "kernel": k, "stride": 2,
                          "padding": k // 2, "epilogue": ["bias", a]})
    for o, k, a in ((32, 3, "relu6"), (64, 7, "relu6"), (32, 3, "silu"))]   # image stems


@pytest.mark.parametrize("natural", GROUP_PACKED, ids=lambda s: s.key)
def test_packed_weight_grouped_conv_matches_torch(natural, host):
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    packed = preferred_spec(natural, "x86", _avx512().tvm_target())
    assert packed.weight_layout.startswith("HWIO") and packed.weight_block
    assert rule_schedule(packed, _avx512()).source == "x86.GroupConvPackedNCHW"
    spec = preferred_spec(natural, host.family, host.tvm_target())   # the variant the torch ops call
    assert relative_error(spec, host) < 1e-4


@pytest.mark.parametrize("spec", [KernelSpec.from_json({"batch": n, "in_channels": 64, "out_channels": o, "height": 1,
                                                        "width": 1, "epilogue": e})
                                  for n, o, e in ((1, 1000, ["bias"]), (3, 40, ["relu"]))], ids=lambda s: s.key)
def test_matrix_vector_product_matches_torch(spec, host):
    from gconvgen.schedule import rule_schedule
    assert rule_schedule(spec, host).source == "x86.MatVecNCHW"
    assert relative_error(spec, host) < 1e-4


# A skip connection added in the epilogue (before the activation), as convert fuses it.
RESIDUAL = [KernelSpec.from_json({"in_channels": i, "out_channels": o, "height": h, "width": h, "kernel": k,
                                  "padding": k // 2, "groups": g, "epilogue": e, "layout": layout, **extra})
            for i, o, h, k, g, e, extra in (
                (96, 24, 14, 1, 1, ["bias", "residual"], {}),
                (60, 240, 7, 1, 3, ["bias", "residual", "relu"], {}),
                (32, 32, 9, 3, 32, ["residual", "relu6"], {}),
                (64, 40, 7, 1, 1, ["bias", "residual"], {"weight_layout": "HWIO8"}))
            for layout in ("NCHW", "NHWC") if layout == "NCHW" or not extra]


@pytest.mark.parametrize("spec", RESIDUAL, ids=lambda s: s.key)
def test_residual_epilogue_matches_torch(spec, host):
    assert relative_error(spec, host) < 1e-4


# NHWC pointwise layers whose output channels are no multiple of the vector: the conv runs on channels
# padded to whole vectors and the epilogue (a residual too) stores the real ones.
PADDED_CHANNELS = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": h,
                                         "epilogue": e, "layout": "NHWC"})
                   for n, i, o, h, e in ((2, 58, 58, 28, ["bias", "relu"]), (1, 144, 24, 9, ["bias", "relu6"]),
                                         (1, 24, 24, 5, ["residual", "relu6"]), (3, 5, 7, 6, []))]


@pytest.mark.parametrize("spec", PADDED_CHANNELS, ids=lambda s: s.key)
def test_padded_channel_pointwise_nhwc_matches_torch(spec, host):
    from gconvgen.schedule import rule_schedule
    assert rule_schedule(spec, host).source == "x86.ChannelVectorNHWC"
    scheduled = rule_schedule(spec, _avx512())
    assert scheduled.source == "x86.ChannelVectorNHWC" and "weight_pad" in scheduled.func.script()
    assert relative_error(spec, host) < 1e-4


def test_padded_channels_leave_a_fused_shuffle_alone(host):
    # the epilogue's region inferred against a padded accumulator came out short (17 of 24 channels)
    from gconvgen.schedule import rule_schedule
    spec = dataclasses.replace(PADDED_CHANNELS[1], epilogue=("bias", "shuffle:2"))
    assert "weight_pad" not in rule_schedule(spec, host).func.script()
    assert relative_error(spec, host) < 1e-4


# NHWC grouped convs whose pixels are 1 KB or more copy each tile's padded window of the group first;
# odd planes, stride 2, batch 2, a residual, float16.
GROUP_WINDOWS = [KernelSpec.from_json({"batch": 2, "in_channels": i, "out_channels": o, "height": 9, "width": 11,
                                       "kernel": 3, "stride": s, "padding": 1, "groups": g, "epilogue": e,
                                       "layout": "NHWC", "dtype": d})
                 for i, o, s, g, e, d in ((256, 128, 2, 8, ["bias", "relu"], "float32"),
                                          (256, 256, 1, 32, ["bias", "residual", "relu"], "float32"),
                                          (512, 512, 1, 16, ["bias"], "float16"))]


@pytest.mark.parametrize("spec", GROUP_WINDOWS, ids=lambda s: s.key)
def test_grouped_nhwc_group_window_matches_torch(spec, host):
    from gconvgen.schedule import rule_schedule
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.ChannelVectorNHWC" and 'T.sblock("pad")' in scheduled.func.script()
    assert relative_error(spec, host) < (2e-3 if spec.dtype == "float16" else 1e-4)


# NHWC convs as the torch ops call them on x86: the weight blocked by the tile's output channels
# (HWIO<t>); a dense 3x3 at stride 2, a grouped 3x3 with a group window, a grouped 1x1 with a fused
# shuffle, a 7x7 stem (its padded input copied first), float16; then 1x1 convs with weights of 1 MiB
# (PointwisePackedNHWC's channel-tile GEMM), odd planes and batch 2 included.
BLOCKED_NHWC = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": 9, "width": 11,
                                      "kernel": k, "stride": s, "padding": k // 2, "groups": g, "epilogue": e,
                                      "layout": "NHWC", "dtype": d})
                for n, i, o, k, s, g, e, d in ((2, 16, 48, 3, 2, 1, ["bias", "relu"], "float32"),
                                               (1, 512, 512, 3, 1, 32, ["bias", "residual", "relu"], "float32"),
                                               (1, 240, 60, 1, 1, 3, ["bias", "relu", "shuffle:3"], "float32"),
                                               (1, 3, 64, 7, 2, 1, ["bias", "relu"], "float32"),
                                               (2, 64, 128, 3, 1, 1, ["bias"], "float16"))]
PACKED_NHWC = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": w,
                                     "epilogue": e, "layout": "NHWC", "dtype": d})
               for n, i, o, h, w, e, d in ((2, 512, 512, 5, 3, ["bias", "residual", "relu"], "float32"),
                                           (1, 1024, 512, 7, 7, ["bias"], "float16"),
                                           (1, 256, 1024, 14, 14, ["bias", "relu6"], "float32"),
                                           (6, 64, 48, 7, 5, ["bias", "relu"], "float32"),     # panels of 3 images
                                           (3, 32, 16, 10, 10, ["bias"], "float32"))]          # of 1


BLOCKED_NCHW = [(KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": h,
                                       "epilogue": e}), partial)
                for n, i, o, h, e, partial in (
                    (1, 256, 256, 16, ["bias", "relu"], True),             # 42 tiles of 6 + one of 4
                    (2, 58, 58, 8, ["bias"], True),                         # 9 of 6 + one of 4
                    (1, 64, 160, 16, ["bias", "residual", "relu"], False),  # expanding, residual: 5 a tile
                    (2, 128, 256, 8, ["bias", "residual"], True))]          # both


@pytest.mark.parametrize("spec, partial", BLOCKED_NCHW, ids=lambda s: getattr(s, "key", ""))
def test_blocked_pointwise_nchw_matches_torch(spec, partial, host):
    """x86.PointwiseNCHW's blocked GEMM where the channels have no divisor near its tile (a partial
    last tile, peeled off by TVM's LoopPartition pass) and for expanding layers with a residual;
    with 128 output channels or more, each block's input panel is copied contiguous first."""
    from gconvgen.schedule import rule_schedule
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.PointwiseNCHW"
    assert ("pragma_loop_partition_hint" in scheduled.func.script()) == partial
    assert ('T.sblock("input_global")' in scheduled.func.script()) == (spec.out_channels >= 128)
    assert relative_error(spec, host) < 1e-4


STREAMED_NCHW = [(KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": h,
                                         "groups": g, "epilogue": e}), streamed)
                 for n, i, o, h, g, e, streamed in (
                     (4, 64, 16, 64, 1, ["bias"], True),                           # 4 MiB of input
                     (6, 240, 60, 56, 3, ["bias", "relu", "shuffle:3"], True),   # (28x28: one AVX-512 vector a tile)
                     (4, 128, 128, 64, 1, ["bias", "relu"], False))]               # too many outputs


@pytest.mark.parametrize("natural, streamed", STREAMED_NCHW, ids=lambda s: getattr(s, "key", ""))
def test_streamed_pointwise_nchw(natural, streamed, host):
    """x86.PointwiseNCHW on inputs past `stream_bytes` with few output channels: panels of pixels per
    task, the reduction in blocks of 8 input channels over each panel; with many, the blocked tile."""
    from gconvgen.schedule import rule_schedule
    scheduled = rule_schedule(natural, host)
    assert scheduled.source == "x86.PointwiseNCHW"
    tasks = int(re.search(r"T\.parallel\((\d+)\)", scheduled.func.script()).group(1))
    pixel_vectors = natural.height * natural.width // vector_lanes(host.tvm_target())
    assert (tasks * 64 <= natural.batch * pixel_vectors) == streamed   # panels, not tiles of a few vectors
    assert relative_error(natural, host) < 1e-4


RAGGED_PACKED_NCHW = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": h,
                                             "epilogue": e})
                      for n, i, o, h, e in ((2, 36, 116, 14, ["bias", "relu"]),          # 7 tiles + 4 channels
                                            (1, 40, 52, 7, ["bias", "residual", "relu"]),  # 3 tiles + 4
                                            (1, 24, 20, 14, ["relu", "shuffle:2"]))]       # 1 tile + 4, shuffled


@pytest.mark.parametrize("natural", RAGGED_PACKED_NCHW, ids=lambda s: s.key)
def test_ragged_packed_pointwise_nchw(natural, host):
    """PointwisePackedNCHW on output channels of no whole vectors: whole-vector tiles over plain HWIO,
    the partial last one peeled off by TVM's LoopPartition."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    lanes = vector_lanes(host.tvm_target())
    if natural.out_channels % (lanes // 2) or natural.out_channels % lanes == 0:
        pytest.skip("channels whole or no half vectors on this CPU")
    spec = preferred_spec(natural, host.family, host.tvm_target())
    assert spec.weight_layout == "HWIO"
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.PointwisePackedNCHW" and "pragma_loop_partition_hint" in scheduled.func.script()
    assert relative_error(spec, host) < 1e-4


NARROW_DEPTHWISE_NCHW = [KernelSpec.from_json({"batch": n, "in_channels": c, "out_channels": c, "height": h, "width": h,
                                                "kernel": k, "stride": st, "padding": pd, "dilation": d, "groups": c,
                                                "epilogue": e})
                         for n, c, h, k, st, pd, d, e in (
                             (1, 64, 7, 7, 1, 3, 1, ["bias"]),                     # ConvNeXt's 7x7
                             (2, 48, 14, 3, 2, 1, 1, ["bias", "relu6"]),           # stride 2 to 7x7
                             (1, 40, 14, 3, 1, 1, 1, ["bias", "residual", "relu"]),  # 14-wide rows
                             (2, 32, 13, 3, 1, 2, 2, ["relu"]),                    # dilated, odd rows
                         )]


@pytest.mark.parametrize("natural", NARROW_DEPTHWISE_NCHW, ids=lambda s: s.key)
def test_narrow_depthwise_nchw_runs_channel_vectors(natural, host):
    """x86.DepthwisePackedNCHW: on rows narrower than two vectors and no multiple of one, vectors run
    along channels of a channel-last padded tile (the weight packed HWIO)."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    if natural.out_channels % vector_lanes(host.tvm_target()):
        pytest.skip("channels no multiple of this CPU's vector")
    spec = preferred_spec(natural, host.family, host.tvm_target())
    assert spec.weight_layout == "HWIO"
    assert rule_schedule(spec, host).source == "x86.DepthwisePackedNCHW"
    assert relative_error(spec, host) < 1e-4


SHUFFLED_NCHW = [KernelSpec.from_json({"batch": n, "in_channels": i, "out_channels": o, "height": h, "width": h,
                                        "groups": g, "epilogue": e})
                 for n, i, o, h, g, e in (
                     (2, 240, 60, 16, 3, ["bias", "relu", "shuffle:3"]),   # a GEMM over pixel vectors
                     (1, 480, 120, 14, 3, ["bias", "relu", "shuffle:3"]),  # packed weight on AVX2
                     (2, 96, 48, 7, 2, ["bias", "relu", "shuffle:2"]),     # packed weight, 7-wide rows
                     (1, 232, 232, 7, 1, ["bias", "shuffle:2"]),           # dense, packed weight
                 )]


@pytest.mark.parametrize("natural", SHUFFLED_NCHW, ids=lambda s: s.key)
def test_shuffled_nchw_runs_the_epilogue_in_the_tile(natural, host):
    """An output shuffle in NCHW permutes planes: iterated in the conv's channel order the epilogue
    (shuffle included) fuses under the parallel tile, one pass, where GroupConvNCHW keeps a separate one."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    spec = preferred_spec(natural, host.family, host.tvm_target())
    scheduled = rule_schedule(spec, host)
    if spec.height * spec.width % vector_lanes(host.tvm_target()) == 0:
        assert scheduled.source == "x86.PointwiseNCHW"
    if scheduled.source != "x86.GroupConvNCHW":
        assert scheduled.func.script().count("T.parallel(") == 1
    assert relative_error(spec, host) < 1e-4


FEW_ROWS_NHWC = [KernelSpec.from_json({"op": op, "batch": n, "in_channels": i, "out_channels": o, "height": h,
                                       "width": h, "kernel": k, "stride": s, "padding": p, "groups": g,
                                       "epilogue": e, "layout": "NHWC"})
                 for op, n, i, o, h, k, s, p, g, e in (
                     ("conv2d", 1, 512, 512, 7, 3, 1, 1, 32, ["bias", "relu"]),     # group_input copy per tile
                     ("conv2d", 2, 96, 40, 3, 3, 1, 1, 1, ["bias", "residual"]),   # 6 rows over 2 images
                     ("conv2d", 1, 256, 100, 1, 1, 1, 0, 1, ["bias"]),             # a classifier's 1x1 plane
                     ("avg_pool2d", 1, 200, 200, 7, 7, 7, 0, 200, []),             # a global pool's one row
                 )]


@pytest.mark.parametrize("natural", FEW_ROWS_NHWC, ids=lambda s: s.key)
def test_few_rows_nhwc_run_a_task_per_tile(natural, host):
    """ChannelVectorNHWC makes each tile a task where an output has fewer than 8 rows (a single row
    on one core ran the global pool at half speed): the parallel loop covers more than the rows."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    spec = preferred_spec(natural, host.family, host.tvm_target())
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.ChannelVectorNHWC"
    tasks = re.search(r"T\.parallel\((\d+)\)", scheduled.func.script())
    assert tasks and int(tasks.group(1)) > spec.batch * spec.out_height
    assert relative_error(spec, host) < 1e-4


STRIDED_GROUPED = [KernelSpec.from_json({"op": "conv2d", "batch": n, "in_channels": c, "out_channels": o, "height": h,
                                         "width": w, "kernel": k, "stride": s, "padding": p, "dilation": d,
                                         "groups": g, "epilogue": ["bias", "relu"]})
                   for n, c, o, h, w, k, s, p, d, g in (
                       (1, 128, 128, 40, 38, 3, 2, 1, 1, 16),            # ResNeXt-like: 8 channels a group
                       (2, 64, 128, 33, 34, 3, 2, [1, 1, 2, 1], 1, 8),   # 16 outputs a group, odd rows
                       (1, 48, 48, 31, 52, [5, 3], 3, [2, 1], [1, 2], 16),   # stride 3, dilated columns
                   )]


@pytest.mark.parametrize("spec", STRIDED_GROUPED, ids=lambda s: s.key)
def test_strided_grouped_convs_take_contiguous_taps(spec, host):
    """GroupConvNCHW gives a strided grouped conv a task per image and group, whose padded planes
    are stored column phase by phase (the padded buffer's extra axis), copied inside the task."""
    from gconvgen.schedule import rule_schedule
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.GroupConvNCHW"
    script = scheduled.func.script()
    assert re.search(rf"T\.parallel\({spec.batch * spec.groups}\)", script)
    assert re.search(rf"pad = T\.sblock_alloc_buffer\(\({spec.batch}, {spec.in_channels}, \d+, {spec.stride[1]}, ", script)
    assert relative_error(spec, host) < 1e-4


def test_packed_nhwc_tasks_span_images(host):
    """PointwisePackedNHWC at batch 8 on 7x7 planes: the batch's pixels are one GEMM axis, cut into
    panels of whole images (4 here), so each task streams its weight panel over several images."""
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    natural = KernelSpec.from_json({"batch": 8, "in_channels": 40, "out_channels": 48, "height": 7, "width": 7,
                                    "epilogue": ["bias", "relu"], "layout": "NHWC"})
    spec = preferred_spec(natural, host.family, host.tvm_target())
    scheduled = rule_schedule(spec, host)
    assert scheduled.source == "x86.PointwisePackedNHWC"
    tasks = int(re.search(r"T\.parallel\((\d+)\)", scheduled.func.script()).group(1))
    assert tasks < spec.batch
    assert relative_error(spec, host) < 1e-4


@pytest.mark.parametrize("natural", BLOCKED_NHWC + PACKED_NHWC, ids=lambda s: s.key)
def test_blocked_weight_nhwc_matches_torch(natural, host):
    from gconvgen.schedule import rule_schedule
    from schedules import preferred_spec
    spec = preferred_spec(natural, host.family, host.tvm_target())
    assert spec.weight_block and spec.weight_layout == f"HWIO{spec.weight_block}"
    rule = "x86.PointwisePackedNHWC" if natural in PACKED_NHWC else "x86.ChannelVectorNHWC"
    assert rule_schedule(spec, host).source == rule
    assert relative_error(spec, host) < (2e-3 if spec.dtype == "float16" else 1e-4)


def test_tf32_rounding_is_the_references_bit_for_bit():
    """The ops' rounding of a TF32 spec's inputs (a TIR expression, compiled here for this CPU) and
    the reference's, on random bit patterns and the edges: ties either way (to even), a carry into
    the exponent, the largest finite float (which rounds to infinity), infinities, NaN, subnormals."""
    import tvm
    from tvm import te
    from gconvgen.ops.conv import round_to_tf32
    from gconvgen.reference import round_to_tf32 as reference_round
    bits = torch.randint(-2 ** 31, 2 ** 31, (1 << 16,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    edges = torch.tensor([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 2 - 2 ** -12, 3.4028235e38, float("inf"),
                          -float("inf"), float("nan"), 1e-40, -3e-39, 0.0, -0.0])
    x = torch.cat([bits.to(torch.int32).view(torch.float32), edges])
    placeholder = te.placeholder((x.numel(),), "float32", name="x")
    rounded = te.compute(placeholder.shape, lambda i: round_to_tf32(placeholder[i]), name="y")
    fn = tvm.compile(te.create_prim_func([placeholder, rounded]), target="llvm")
    got = torch.empty_like(x)
    fn(tvm.runtime.from_dlpack(x), tvm.runtime.from_dlpack(got))
    expected = reference_round(x)
    assert torch.equal(got.view(torch.int32)[~x.isnan()], expected.view(torch.int32)[~x.isnan()])
    assert got[x.isnan()].isnan().all()
    assert expected[-12:-7].tolist() == [1.0, 1 + 2 ** -9, -1.0, 2.0, float("inf")]
    assert (expected.view(torch.int32) & 0x1FFF).eq(0).logical_or(x.isnan()).all()
