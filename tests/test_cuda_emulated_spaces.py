"""The longer emulator checks of the CUDA rules (tests/test_cuda_emulated.py has the rest, and the
helpers): random convs under every rule, the pipelined tensor-core GEMM on the suite, tuning
candidates and alternatives' spaces. A file of their own so that pytest-xdist's workers (a file
each) share the emulator's minutes."""
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gconvgen import suites, targets
from gconvgen.ops import prim_func
from schedules import cuda
from test_cuda_emulated import _check, _check_every_rule, conv, dw, pytestmark  # noqa: F401 - (its skip)
from test_property import conv_specs


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(conv_specs(), st.sampled_from(["float32", "float16"]))
def test_random_convs_match_torch_under_every_cuda_rule(spec, dtype):
    """Random small convs (test_property's: groups, channel multipliers, kernels of 1 to 5 each way,
    strides and dilations up to 3 and 2, one-sided padding, activations, shuffles) under every CUDA
    rule that applies. 100 such found the tensor-core GEMM losing half the outputs of a shuffle of
    one channel a group; 850 through the schedules alone (tests/test_cuda.py) found the column
    depthwise rules and the tensor-core GEMM refusing kernels of one row or column and the split
    reduction refusing 6x8 planes (Dec 2026)."""
    _check_every_rule(dataclasses.replace(spec, dtype=dtype))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pipelined_gemm_matches_torch_on_the_suite(layout):
    """cuda.TensorCoreGemmPipelined on every float16 layer of the suite it applies to (batch 1):
    TVM's async copy pass turns any vectorized copy into shared memory into one cp.async, even
    one whose destination is not contiguous (a SIMT GEMM staging its input transposed came out
    wrong so), so each layer's layout is checked here, not taken on trust."""
    target = targets.load("cuda-sm90").tvm_target()
    rule = cuda.TensorCoreGemmPipelined()
    checked = 0
    for w in suites.load("public", layout):
        spec = dataclasses.replace(w.spec, dtype="float16")
        if rule.applies(spec, target):
            _check(rule.apply(prim_func(spec), target, tunable=False).mod["main"], spec, target, f"{rule.name} {w.name}")
            checked += 1
    assert checked >= 4


def test_tuning_candidates_match_torch():
    """The candidates a GPU host would time (gconvgen.offline: the rule's own schedule, random points
    of its space, the alternatives' schedules; here of a dense 1x1 in NHWC, whose alternative is
    DLight's SIMT GEMM) all compute the layer; a GPU host drops a candidate that does not, so one
    here means wasted device time or a space with a hole. (One layer: MetaSchedule's search for
    distinct random points takes 40 s on some small depthwise layers.)"""
    from gconvgen import offline
    spec = conv(32, 64, 8, k=1, batch=4, layout="NHWC")
    profile = targets.load("cuda-sm90")
    _, drawn = offline._draw(spec, profile, 4, seed=1)
    assert len(drawn) >= 4 and drawn[-1].rule == "cuda.PointwiseGemm"
    for sch, _, rule, _ in drawn:
        _check(sch.mod["main"], spec, profile.tvm_target(), rule)


@pytest.mark.parametrize("spec, rule", [(conv(16, 8, 56, k=1, epilogue=("bias", "relu")), "cuda.BatchGemm"),
                                        (conv(32, 32, 16, batch=5, groups=4), "cuda.BatchGemm"),
                                        (conv(32, 32, 16, batch=5, groups=4, layout="NHWC", dtype="float16"), "cuda.BatchGemm"),
                                        (conv(64, 48, 8, k=1, batch=4, layout="NHWC", dtype="float16"), "cuda.TensorCoreGemm"),
                                        (conv(64, 64, 8, groups=4, batch=5, dtype="float16"), "cuda.TensorCoreGemm"),
                                        (dw(32, 14, k=7, batch=4, layout="NHWC", epilogue=("bias",)), "cuda.DepthwiseRowsNHWC"),
                                        (dw(8, 28, k=7, batch=2, epilogue=("bias",)), "cuda.DepthwiseColumnsNCHW"),
                                        (dw(16, 14, batch=2, dtype="float16"), "cuda.DepthwisePlanesNCHW"),
                                        (dw(8, 28, batch=2, dtype="float16"), "cuda.DepthwiseColumnsRegistersNCHW"),
                                        (dw(16, 14, batch=2, dtype="float16"), "cuda.DepthwiseColumnsRegistersNCHW"),
                                        (conv(256, 64, 7, k=1, batch=4, layout="NHWC", dtype="float16"),
                                         "cuda.TensorCoreGemmPipelined"),
                                        (conv(64, 64, 8, groups=2, batch=4, layout="NHWC", tf32=True),
                                         "cuda.TensorCoreGemmTF32")],
                         ids=["dense1x1", "grouped3x3", "grouped3x3-nhwc", "tensorcore-1x1-nhwc", "tensorcore-grouped3x3",
                              "depthwise7x7-rows", "depthwise7x7-columns", "depthwise-planes", "depthwise-registers",
                              "depthwise-registers-planes",
                              "tensorcore-pipelined", "tensorcore-tf32"])
def test_alternatives_spaces_match_torch(spec, rule):
    """With alternative_count, random points of an alternative's space are drawn too (here the batch
    GEMM's, beside the rules that serve a dense 1x1, a grouped 3x3 and one in NHWC, layers with enough
    pixels that it applies; the tensor-core GEMM's; the large-kernel depthwise rules'), and of the
    serving rule's with count (the tensor-core GEMM on a 1x1, the column depthwise on a 7x7 since an
    H200's timings made them serve): every one computes the layer."""
    from gconvgen import offline
    from gconvgen.schedule import rule_for
    profile = targets.load("cuda-sm90")
    # (its own and 3 drawn asked for, as the rule that serves or as an alternative; each point is
    # offered once, and a small space may hold fewer)
    serves = rule_for(spec, profile).name == rule
    _, drawn = offline._draw(spec, profile, 4 if serves else 1, seed=1, alternative_count=4)
    points = [d.sch for d in drawn if d.rule == rule]
    assert len({tuple(map(str, sch.trace.decisions.values())) for sch in points}) == len(points) >= 3
    for sch in points:
        _check(sch.mod["main"], spec, profile.tvm_target(), rule)
