"""Random valid small specs: any group conv or shuffle we accept must match PyTorch."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gconvgen.spec import KernelSpec

from helpers import relative_error


@st.composite
def conv_specs(draw):
    groups = draw(st.sampled_from([1, 2, 3, 4]))
    cig = draw(st.integers(1, 4))
    multiplier = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        groups = draw(st.integers(1, 12))
        cig = 1
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pad = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    stride = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    min_h = max(1, dh * (kh - 1) + 1 - pad[0] - pad[2])
    min_w = max(1, dw * (kw - 1) + 1 - pad[1] - pad[3])
    h, w = draw(st.integers(min_h, min_h + 9)), draw(st.integers(min_w, min_w + 9))
    out_channels = groups * multiplier
    epilogue = []
    if draw(st.booleans()):
        epilogue.append("bias")
    act = draw(st.sampled_from([None, "relu", "relu6", "hardswish", "silu", "sigmoid", "hardsigmoid", "gelu"]))
    if act:
        epilogue.append(act)
    shuffle = draw(st.sampled_from([g for g in (2, 3) if out_channels % g == 0] + [None]))
    if shuffle:
        epilogue.append(f"shuffle:{shuffle}")
    return KernelSpec(op="conv2d", batch=draw(st.integers(1, 2)), in_channels=groups * cig,
                      out_channels=out_channels, height=h, width=w, kernel=(kh, kw), stride=tuple(stride),
                      padding=tuple(pad), dilation=(dh, dw), groups=groups, epilogue=tuple(epilogue),
                      layout=draw(st.sampled_from(["NCHW", "NHWC"])))


@st.composite
def shuffle_specs(draw):
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 5))
    return KernelSpec(op="channel_shuffle", batch=draw(st.integers(1, 2)), in_channels=channels,
                      out_channels=channels, height=draw(st.integers(1, 6)), width=draw(st.integers(1, 6)),
                      groups=groups, layout=draw(st.sampled_from(["NCHW", "NHWC"])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(conv_specs())
def test_random_conv_matches_torch(host, spec):
    assert relative_error(spec, host) < 1e-4, spec.key


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(shuffle_specs())
def test_random_shuffle_matches_torch(host, spec):
    assert relative_error(spec, host) == 0.0, spec.key
