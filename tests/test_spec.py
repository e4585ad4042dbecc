import json

import pytest

from gconvgen import suites
from gconvgen.spec import KernelSpec

PUBLIC = json.loads((suites.SUITES_DIR / "public.json").read_text())["workloads"]


@pytest.mark.parametrize("row", PUBLIC, ids=[r["name"] for r in PUBLIC])
def test_public_rows_parse_and_round_trip(row):
    spec = KernelSpec.from_json(row)
    assert spec.layout == "NCHW" and spec.dtype == "float32"
    again = KernelSpec.from_json(spec.to_json())
    assert again == spec and again.key == spec.key and hash(again) == hash(spec)
    meta = {"name", "model", "layout", "dtype"}
    assert {k: v for k, v in spec.to_json().items() if k not in meta} == {k: v for k, v in row.items() if k not in meta}


def test_keys_are_distinct_per_kernel_and_layout():
    specs = [KernelSpec.from_json(r) for r in PUBLIC]
    keys = {s.key for s in specs}
    assert len(keys) == len(specs)
    assert all(s.with_layout("NHWC").key not in keys for s in specs)
    assert len({s.func_name for s in specs}) == len(specs)


def test_op_classes_of_public_suite():
    classes = {r["name"]: KernelSpec.from_json(r).op_class for r in PUBLIC}
    assert classes["mbv2.dw32x112"] == "depthwise"
    assert classes["shv1g3.gpw240to60x28"] == "pointwise"
    assert classes["rx50.g32c128x56"] == "grouped"
    assert classes["shv2.shuffle116x28"] == "shuffle"


BASE = {"op": "conv2d", "in_channels": 8, "out_channels": 8, "height": 8, "width": 8, "kernel": [3, 3],
        "padding": [1, 1], "groups": 2}


@pytest.mark.parametrize("change, field", [
    ({"groups": 3}, "groups"),
    ({"out_channels": 6, "groups": 4}, "groups"),
    ({"in_channels": 0}, "in_channels"),
    ({"height": -1}, "height"),
    ({"batch": 0}, "batch"),
    ({"kernel": [0, 3]}, "kernel"),
    ({"stride": [1, 0]}, "stride"),
    ({"dilation": [0, 1]}, "dilation"),
    ({"padding": [-1, 0]}, "padding"),
    ({"height": 2, "width": 2, "padding": [0, 0]}, "output would be"),
    ({"epilogue": ["mish"]}, "unknown epilogue"),
    ({"epilogue": ["shuffle:3"]}, "shuffle"),
    ({"epilogue": ["shuffle:x"]}, "shuffle"),
    ({"epilogue": ["bias", "bias"]}, "bias"),
    ({"epilogue": ["relu", "relu6"]}, "activation"),
    ({"epilogue": ["shuffle:2", "relu"]}, "shuffle"),
    ({"layout": "NCWH"}, "layout"),
    ({"dtype": "int4"}, "dtype"),
    ({"op": "conv3d"}, "op"),
    ({"colour": "red"}, "colour"),
    ({"tf32": True, "dtype": "float16"}, "tf32"),
    ({"tf32": 1}, "tf32"),
])
def test_invalid_specs_name_the_problem(change, field):
    with pytest.raises(ValueError, match=field):
        KernelSpec.from_json({**BASE, **change})


def test_tf32_spec():
    """A float32 conv with TF32 products is a kernel of its own: its key and JSON say so; the same
    conv without the field is the exact one; a shuffle or a pool has no TF32."""
    exact = KernelSpec.from_json(BASE)
    tf32 = KernelSpec.from_json({**BASE, "tf32": True})
    assert tf32.key == exact.key + "_tf32" and tf32 != exact and not exact.tf32
    assert KernelSpec.from_json(tf32.to_json()) == tf32 and "tf32" not in exact.to_json()
    with pytest.raises(ValueError, match="tf32"):
        KernelSpec.from_json({"op": "channel_shuffle", "channels": 12, "height": 4, "width": 4, "groups": 3,
                              "tf32": True})
    with pytest.raises(ValueError, match="tf32"):
        KernelSpec.from_json({"op": "max_pool2d", "in_channels": 8, "height": 8, "width": 8, "kernel": 2,
                              "tf32": True})


def test_invalid_shuffle_spec():
    with pytest.raises(ValueError, match="groups"):
        KernelSpec.from_json({"op": "channel_shuffle", "channels": 10, "height": 4, "width": 4, "groups": 3})
    with pytest.raises(ValueError, match="channels"):
        KernelSpec.from_json({"op": "channel_shuffle", "height": 4, "width": 4, "groups": 3})


def test_asymmetric_padding_round_trips():
    spec = KernelSpec.from_json({**BASE, "padding": [0, 1, 2, 1]})
    assert spec.padding == (0, 1, 2, 1)
    assert KernelSpec.from_json(spec.to_json()) == spec
    assert spec.out_height == 8 and spec.out_width == 8


def test_builtin_suites():
    assert len(suites.load("public")) == 37
    assert {w.spec.op_class for w in suites.load("mobilenet_v2")} == {"depthwise", "pointwise"}
    assert all(w.model.startswith("shufflenet") for w in suites.load("shufflenet"))
    assert all(w.spec.layout == "NHWC" for w in suites.load("convnext", layout="NHWC"))
    with pytest.raises(ValueError, match="built-in"):
        suites.load("no-such-suite")


def test_weight_gradient_spec():
    row = {"op": "conv2d_wgrad", "batch": 2, "in_channels": 8, "out_channels": 12, "height": 9, "width": 7,
           "kernel": 3, "padding": 1, "groups": 4}
    spec = KernelSpec.from_json(row)
    assert spec.key.startswith("conv2d_wgrad_n2_i8_o12") and spec.op_class == "wgrad"
    assert spec.arg_names == ("input", "grad_output", "output")
    assert spec.shape("grad_output") == (2, 12, 9, 7) and spec.shape("output") == (12, 2, 3, 3)
    assert KernelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="without an epilogue"):
        KernelSpec.from_json({**row, "epilogue": ["relu"]})
    with pytest.raises(ValueError, match="NCHW"):
        KernelSpec.from_json({**row, "layout": "NHWC"})


def test_input_gradient_spec():
    spec = KernelSpec.from_json({"op": "conv2d_dgrad", "batch": 2, "in_channels": 8, "out_channels": 12,
                                 "height": 10, "width": 9, "kernel": 3, "stride": 2, "padding": 1, "groups": 4})
    assert spec.op_class == "dgrad" and spec.arg_names == ("grad_output", "weight", "output")
    assert spec.shape("grad_output") == (2, 12, 5, 5) and spec.shape("output") == (2, 8, 10, 9)
    assert KernelSpec.from_json(spec.to_json()) == spec


def test_max_pool_spec():
    spec = KernelSpec.from_json({"op": "max_pool2d", "in_channels": 24, "height": 112, "width": 112,
                                 "kernel": 3, "stride": 2, "padding": 1})
    assert spec.op_class == "pool" and spec.arg_names == ("input", "output")
    assert spec.shape("output") == (1, 24, 56, 56) and spec.groups == spec.out_channels == 24
    assert KernelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="one window per channel"):
        KernelSpec.from_json({**spec.to_json(), "out_channels": 48})


def test_avg_pool_spec():
    spec = KernelSpec.from_json({"op": "avg_pool2d", "in_channels": 240, "height": 28, "width": 28,
                                 "kernel": 3, "stride": 2, "padding": 1, "epilogue": ["relu"]})
    assert spec.op_class == "pool" and spec.arg_names == ("input", "output") and spec.activation == "relu"
    assert spec.shape("output") == (1, 240, 14, 14) and KernelSpec.from_json(spec.to_json()) == spec
    for bad in ({"epilogue": ["bias"]}, {"epilogue": ["relu", "relu6"]}, {"dilation": 2}):
        with pytest.raises(ValueError):
            KernelSpec.from_json({**spec.to_json(), **bad})
    with pytest.raises(ValueError, match="max_pool2d takes no epilogue"):
        KernelSpec.from_json({**spec.to_json(), "op": "max_pool2d"})


def test_weight_layout_variant():
    row = {"in_channels": 232, "out_channels": 232, "height": 7, "width": 7, "epilogue": ["bias", "relu"]}
    natural, packed = KernelSpec.from_json(row), KernelSpec.from_json({**row, "weight_layout": "HWIO"})
    assert natural.weight_layout == "OIHW" and natural.with_layout("NHWC").weight_layout == "HWIO"
    assert packed.key == natural.key + "_wHWIO" and natural.key.endswith("_float32")   # old keys unchanged
    assert packed.shape("weight") == (1, 1, 232, 232) and packed.shape("output") == natural.shape("output")
    assert KernelSpec.from_json(packed.to_json()) == packed and "weight_layout" not in natural.to_json()
    blocked = KernelSpec.from_json({**row, "weight_layout": "HWIO8"})   # output channels in blocks of 8
    assert blocked.key == natural.key + "_wHWIO8" and blocked.weight_block == 8 and packed.weight_block == 0
    assert blocked.shape("weight") == (29, 1, 1, 232, 8) and KernelSpec.from_json(blocked.to_json()) == blocked
    nhwc = KernelSpec.from_json({**row, "layout": "NHWC", "weight_layout": "HWIO8"})   # x86's NHWC tiles
    assert nhwc.key == natural.with_layout("NHWC").key + "_wHWIO8" and nhwc.shape("weight") == (29, 1, 1, 232, 8)
    for bad in ({**row, "weight_layout": "OHWI"}, {**row, "layout": "NHWC", "weight_layout": "OIHW"},
                {"op": "conv2d_wgrad", **row, "epilogue": [], "weight_layout": "HWIO"},
                {**row, "weight_layout": "HWIO16"}, {**row, "weight_layout": "HWIO0"},   # 16 does not divide 232
                {**row, "layout": "NHWC", "weight_layout": "HWIO16"}):
        with pytest.raises(ValueError, match="weight_layout"):
            KernelSpec.from_json(bad)


def test_residual_epilogue():
    row = {"in_channels": 24, "out_channels": 24, "height": 8, "width": 8, "epilogue": ["residual", "relu"]}
    spec = KernelSpec.from_json(row)
    assert spec.has_residual and spec.arg_names == ("input", "weight", "residual", "output")
    assert spec.shape("residual") == spec.shape("output") and "residual" in spec.key
    assert KernelSpec.from_json({**row, "epilogue": ["bias", "residual"]}).arg_names[2:] == ("bias", "residual", "output")
    with pytest.raises(ValueError, match="residual"):
        KernelSpec.from_json({**row, "epilogue": ["residual", "shuffle:2"]})


@pytest.mark.parametrize("name", ["mbv2.dw96x112s2", "rx50.g32c256x56s2", "shv1g3.gpw240to60x28", "cnxt.dw96x56k7",
                                  "shv2.shuffle116x28"])
def test_multiply_adds_are_torchs_count(name):
    """The roofline's compute side: a conv's multiply-adds as torch's FLOP counter counts them (2 a
    multiply-add); a shuffle has none."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    spec = next(w.spec for w in suites.load("public") if w.name == name)
    counted = 0
    if spec.op == "conv2d":
        x = torch.zeros(spec.batch, spec.in_channels, spec.height, spec.width)
        w = torch.zeros(spec.out_channels, spec.in_channels // spec.groups, *spec.kernel)
        with FlopCounterMode(display=False) as flops:
            torch.nn.functional.conv2d(x, w, None, spec.stride, spec.padding[:2], spec.dilation, spec.groups)
        counted = flops.get_total_flops() // 2
    assert spec.multiply_adds == counted
