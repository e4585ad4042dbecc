"""KernelSpec: the one description of a kernel. Its `.key` is the kernel's identity."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

OPS = ("conv2d", "channel_shuffle", "conv2d_wgrad", "conv2d_dgrad", "max_pool2d", "avg_pool2d")
POOLS = ("max_pool2d", "avg_pool2d")   # a window per channel: in_channels == out_channels == groups
GRADIENTS = ("conv2d_wgrad", "conv2d_dgrad")
LAYOUTS = ("NCHW", "NHWC")
WEIGHT_LAYOUTS = ("OIHW", "HWIO")   # torch's own; output channels innermost (an NHWC kernel's)
# and HWIO<t>, e.g. HWIO16: HWIO with the output channels in blocks of t, block-major, (out/t, kh, kw, in/groups,
# t), so the weights of t output channels are one contiguous panel (x86's packed NCHW rules and its NHWC tiles)
DTYPES = ("float32", "float16")
ACTIVATIONS = ("relu", "relu6", "hardswish", "silu", "sigmoid", "hardsigmoid", "gelu")   # gelu: the exact (erf) one
EXP_ACTIVATIONS = ("silu", "sigmoid", "gelu")   # evaluate e^x: about 25 vector instructions a value, the others 1-3
OP_CLASSES = ("depthwise", "grouped", "pointwise", "dense", "shuffle", "pool", "wgrad", "dgrad")
# Suite rows carry these as labels; they do not change the kernel.
_METADATA_FIELDS = ("name", "model")


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _padding(value: Any) -> tuple[int, int, int, int]:
    """(top, left, bottom, right); [ph, pw] means symmetric padding as in torch."""
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, int) for v in value):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    ph, pw = _pair("padding", value)
    return (ph, pw, ph, pw)


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: a grouped conv2d (depthwise and pointwise included) with a fused epilogue, a
    channel shuffle, max or average pooling (a window per channel; average: padding counted, an
    optional activation), or a gradient of a grouped conv2d, described by the conv's own fields: its
    weight gradient (`conv2d_wgrad`, from input and output gradient) or its input gradient
    (`conv2d_dgrad`, from output gradient and weight). Sizes are torch's: weight is (out_channels,
    in_channels // groups, kh, kw)."""

    op: str
    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    epilogue: tuple[str, ...] = ()
    layout: str = "NCHW"
    dtype: str = "float32"
    weight_layout: str = ""   # "" = the layout's own: OIHW for NCHW, HWIO for NHWC
    # a float32 conv's inputs rounded to TF32 (10 mantissa bits) before they multiply, products summed
    # in float32: what torch's cuDNN convs compute by default on Ampere and newer, and what tensor
    # cores multiply (cuda.TensorCoreGemmTF32)
    tf32: bool = False
    # a float16 depthwise conv computed as banded matrix products for tensor cores: each kernel row
    # times a 32x16 band matrix built from its taps (a Toeplitz matrix: zeros off the band), summed
    # over a tile of 16 output columns; the same result, other products (cuda.DepthwiseTensorCoreNCHW)
    banded: bool = False

    def __post_init__(self) -> None:
        if not self.weight_layout:
            object.__setattr__(self, "weight_layout", self.default_weight_layout)
        self._validate()

    @property
    def weight_block(self) -> int:
        """t of a blocked HWIO<t> weight layout; 0 for the plain layouts."""
        suffix = self.weight_layout[4:] if self.weight_layout.startswith("HWIO") else ""
        return int(suffix) if suffix.isdigit() and suffix == str(int(suffix)) and int(suffix) > 0 else 0

    @property
    def default_weight_layout(self) -> str:
        return "HWIO" if self.layout == "NHWC" else "OIHW"

    # ---- derived facts -------------------------------------------------------------------
    @property
    def key(self) -> str:
        if self.op == "channel_shuffle":
            return (f"channel_shuffle_n{self.batch}_c{self.in_channels}_h{self.height}_w{self.width}"
                    f"_g{self.groups}_{self.layout}_{self.dtype}")
        kh, kw = self.kernel
        epi = "-".join(e.replace(":", "") for e in self.epilogue) or "none"
        return (f"{self.op}_n{self.batch}_i{self.in_channels}_o{self.out_channels}_h{self.height}_w{self.width}"
                f"_k{kh}x{kw}_s{self.stride[0]}x{self.stride[1]}_p{'x'.join(map(str, self.padding))}"
                f"_d{self.dilation[0]}x{self.dilation[1]}_g{self.groups}_e{epi}_{self.layout}_{self.dtype}"
                + (f"_w{self.weight_layout}" if self.weight_layout != self.default_weight_layout else "")
                + ("_tf32" if self.tf32 else "") + ("_banded" if self.banded else ""))

    @property
    def func_name(self) -> str:
        """Symbol of this kernel inside a library (a hash of the key: keys are too long for symbols)."""
        return "gcg_" + hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def out_height(self) -> int:
        return (self.height + self.padding[0] + self.padding[2]
                - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        return (self.width + self.padding[1] + self.padding[3]
                - self.dilation[1] * (self.kernel[1] - 1) - 1) // self.stride[1] + 1

    @property
    def bandable(self) -> bool:
        """Whether this conv has a banded variant (see `banded`): float16 NCHW depthwise, one output
        channel an input channel, stride 1, undilated, no shuffle, its kernel rows within the band's
        32 columns (a tile's 16 outputs read 16 + kw - 1 inputs from 8 - pl columns on)."""
        return (self.op == "conv2d" and self.layout == "NCHW" and self.dtype == "float16"
                and self.in_channels == self.out_channels == self.groups and self.stride == (1, 1)
                and self.dilation == (1, 1) and self.shuffle_groups == 1
                and self.padding[1] <= 8 and self.kernel[1] - self.padding[1] <= 9
                and self.weight_layout == "OIHW")

    @property
    def has_bias(self) -> bool:
        return "bias" in self.epilogue

    @property
    def has_residual(self) -> bool:
        """An input of the output's shape added in the epilogue (a ResNet/MobileNet skip connection)."""
        return "residual" in self.epilogue

    @property
    def activation(self) -> str | None:
        return next((e for e in self.epilogue if e in ACTIVATIONS), None)

    @property
    def shuffle_groups(self) -> int:
        """Groups of the output channel shuffle fused into the store (1 = none, as where each group
        holds one channel: such a shuffle moves nothing, and TVM's layout transforms of the
        tensor-core GEMM's store, fed its remap of one-channel groups, lost half the outputs)."""
        if self.op == "channel_shuffle":
            return self.groups
        groups = next((int(e.split(":")[1]) for e in self.epilogue if e.startswith("shuffle:")), 1)
        return 1 if groups == self.out_channels else groups

    @property
    def op_class(self) -> str:
        if self.op == "channel_shuffle":
            return "shuffle"
        if self.op in GRADIENTS:
            return self.op.split("_")[1]
        if self.op in POOLS:
            return "pool"
        if self.groups == self.in_channels and self.groups > 1:
            return "depthwise"
        if self.kernel == (1, 1):
            return "pointwise"
        return "grouped" if self.groups > 1 else "dense"

    @property
    def multiply_adds(self) -> int:
        """The conv's multiply-adds (its gradients' too: each does as many); 0 for shuffles and pools."""
        if self.op == "channel_shuffle" or self.op in POOLS:
            return 0
        return (self.batch * self.out_channels * self.out_height * self.out_width
                * self.in_channels // self.groups * self.kernel[0] * self.kernel[1])

    def shape(self, which: str) -> tuple[int, ...]:
        """Shape of an argument ('input', 'weight', 'bias', 'output') as the kernel takes it."""
        n, h, w = self.batch, self.height, self.width
        if which == "input":
            return (n, self.in_channels, h, w) if self.layout == "NCHW" else (n, h, w, self.in_channels)
        if self.op in GRADIENTS and which in ("grad_output", "output"):   # output: the gradient computed
            which = {"grad_output": "output", "output": "weight" if self.op == "conv2d_wgrad" else "input"}[which]
            return replace(self, op="conv2d").shape(which)
        if which == "output":
            c, oh, ow = self.out_channels, self.out_height, self.out_width
            if self.op == "channel_shuffle":
                oh, ow = h, w
            return (n, c, oh, ow) if self.layout == "NCHW" else (n, oh, ow, c)
        if which == "weight":
            kh, kw = self.kernel
            cig = self.in_channels // self.groups
            if self.weight_block:
                return (self.out_channels // self.weight_block, kh, kw, cig, self.weight_block)
            return (self.out_channels, cig, kh, kw) if self.weight_layout == "OIHW" else (kh, kw, cig, self.out_channels)
        if which == "bias":
            return (self.out_channels,)
        if which == "residual":
            return self.shape("output")
        raise ValueError(f"unknown argument {which!r}")

    @property
    def arg_names(self) -> tuple[str, ...]:
        if self.op == "channel_shuffle" or self.op in POOLS:
            return ("input", "output")
        if self.op == "conv2d_wgrad":
            return ("input", "grad_output", "output")
        if self.op == "conv2d_dgrad":
            return ("grad_output", "weight", "output")
        return (("input", "weight") + (("bias",) if self.has_bias else ()) + (("residual",) if self.has_residual else ())
                + ("output",))

    def with_layout(self, layout: str) -> "KernelSpec":
        return replace(self, layout=layout, weight_layout="")

    # ---- JSON ------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, row: dict[str, Any] | str) -> "KernelSpec":
        if isinstance(row, str):
            row = json.loads(row)
        if not isinstance(row, dict):
            raise ValueError(f"a spec must be a JSON object, got {type(row).__name__}")
        row = {k: v for k, v in row.items() if k not in _METADATA_FIELDS}
        op = row.get("op", "conv2d")
        if op == "channel_shuffle":
            allowed = {"op", "batch", "channels", "height", "width", "groups", "layout", "dtype"}
            _reject_unknown(row, allowed)
            _require(row, ("channels", "height", "width", "groups"))
            c = row["channels"]
            return cls(op=op, batch=row.get("batch", 1), in_channels=c, out_channels=c,
                       height=row["height"], width=row["width"], groups=row["groups"],
                       layout=row.get("layout", "NCHW"), dtype=row.get("dtype", "float32"))
        if op not in ("conv2d",) + POOLS + GRADIENTS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        if op in POOLS:   # a window per channel: out_channels and groups are the channels
            row = {**row, "out_channels": row.get("out_channels", row.get("in_channels")),
                   "groups": row.get("groups", row.get("in_channels"))}
        allowed = {"op", "batch", "in_channels", "out_channels", "height", "width", "kernel", "stride",
                   "padding", "dilation", "groups", "epilogue", "layout", "dtype", "weight_layout", "tf32", "banded"}
        _reject_unknown(row, allowed)
        _require(row, ("in_channels", "out_channels", "height", "width"))
        epilogue = row.get("epilogue", [])
        if not isinstance(epilogue, (list, tuple)):
            raise ValueError(f"epilogue must be a list, got {epilogue!r}")
        return cls(op=op, batch=row.get("batch", 1), in_channels=row["in_channels"],
                   out_channels=row["out_channels"], height=row["height"], width=row["width"],
                   kernel=_pair("kernel", row.get("kernel", 1)), stride=_pair("stride", row.get("stride", 1)),
                   padding=_padding(row.get("padding", 0)), dilation=_pair("dilation", row.get("dilation", 1)),
                   groups=row.get("groups", 1), epilogue=tuple(epilogue),
                   layout=row.get("layout", "NCHW"), dtype=row.get("dtype", "float32"),
                   weight_layout=row.get("weight_layout", ""), tf32=row.get("tf32", False),
                   banded=row.get("banded", False))

    def to_json(self) -> dict[str, Any]:
        if self.op == "channel_shuffle":
            return {"op": self.op, "batch": self.batch, "channels": self.in_channels, "height": self.height,
                    "width": self.width, "groups": self.groups, "layout": self.layout, "dtype": self.dtype}
        t, l, b, r = self.padding
        return {"op": self.op, "batch": self.batch, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "height": self.height, "width": self.width,
                "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": [t, l] if (t, l) == (b, r) else [t, l, b, r],
                "dilation": list(self.dilation), "groups": self.groups, "epilogue": list(self.epilogue),
                "layout": self.layout, "dtype": self.dtype,
                **({"weight_layout": self.weight_layout} if self.weight_layout != self.default_weight_layout else {}),
                **({"tf32": True} if self.tf32 else {}), **({"banded": True} if self.banded else {})}

    # ---- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.weight_layout != self.default_weight_layout and (
                (self.weight_layout not in WEIGHT_LAYOUTS and not self.weight_block) or self.op != "conv2d"
                or (self.layout == "NHWC" and not self.weight_block)
                or (self.weight_block and self.out_channels % self.weight_block)):
            raise ValueError(f"weight_layout must be one of {WEIGHT_LAYOUTS} or HWIO<t> (t dividing out_channels), and "
                             f"other than the layout's own ({self.default_weight_layout}) only for a conv2d (NHWC: "
                             f"HWIO<t> only); got {self.weight_layout!r} for a {self.layout} {self.op}")
        if not isinstance(self.tf32, bool) or (self.tf32 and (self.op != "conv2d" or self.dtype != "float32")):
            raise ValueError(f"tf32 must be a bool, and true only for a float32 conv2d; got {self.tf32!r} for a "
                             f"{self.dtype} {self.op}")
        if not isinstance(self.banded, bool) or (self.banded and not self.bandable):
            raise ValueError(f"banded must be a bool, and true only for a float16 NCHW depthwise conv2d at stride 1, "
                             f"undilated, without a shuffle, whose kernel rows fit its 32-column band (kernel width "
                             f"less the left padding at most 9, left padding at most 8); got {self.banded!r} for "
                             f"{self.key}")
        for name in ("batch", "in_channels", "out_channels", "height", "width", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("kernel", "stride", "dilation"):
            value = getattr(self, name)
            if len(value) != 2 or any(not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"{name} must be a pair of positive ints, got {value!r}")
        if len(self.padding) != 4 or any(not isinstance(v, int) or v < 0 for v in self.padding):
            raise ValueError(f"padding must be non-negative ints, got {self.padding!r}")
        if self.op == "channel_shuffle":
            if self.in_channels % self.groups:
                raise ValueError(f"groups={self.groups} does not divide channels={self.in_channels}")
            if self.epilogue:
                raise ValueError(f"epilogue is not supported on channel_shuffle, got {self.epilogue!r}")
            return
        if self.op in POOLS and not self.in_channels == self.out_channels == self.groups:
            raise ValueError(f"{self.op} pools one window per channel (in_channels == out_channels == groups), "
                             f"got {self.in_channels}/{self.out_channels}/{self.groups}")
        if self.op == "max_pool2d" and self.epilogue:
            raise ValueError(f"max_pool2d takes no epilogue, got {list(self.epilogue)}")
        if self.op == "avg_pool2d" and (len(self.epilogue) > 1 or set(self.epilogue) - set(ACTIVATIONS)
                                        or self.dilation != (1, 1)):
            raise ValueError(f"avg_pool2d takes at most an activation as its epilogue and no dilation, got "
                             f"epilogue {list(self.epilogue)} and dilation {self.dilation}")
        if self.op in GRADIENTS and (self.epilogue or self.layout != "NCHW"):
            raise ValueError(f"{self.op} is NCHW without an epilogue, got layout {self.layout} and epilogue "
                             f"{list(self.epilogue)}")
        if self.in_channels % self.groups:
            raise ValueError(f"groups={self.groups} does not divide in_channels={self.in_channels}")
        if self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} does not divide out_channels={self.out_channels}")
        if self.out_height < 1 or self.out_width < 1:
            raise ValueError(f"output would be {self.out_height}x{self.out_width}: height/width {self.height}x"
                             f"{self.width} too small for kernel {self.kernel}, padding {self.padding}, "
                             f"dilation {self.dilation}, stride {self.stride}")
        seen: set[str] = set()
        for i, e in enumerate(self.epilogue):
            if not isinstance(e, str):
                raise ValueError(f"epilogue entry must be a string, got {e!r}")
            kind = e.split(":")[0]
            if kind in seen:
                raise ValueError(f"epilogue {e!r} given twice in {list(self.epilogue)}")
            seen.add(kind)
            if e == "residual" and self.shuffle_groups > 1:
                raise ValueError(f"epilogue {list(self.epilogue)}: a residual cannot be combined with an output shuffle")
            if e in ("bias", "residual") or e in ACTIVATIONS:
                if e in ACTIVATIONS and seen & set(ACTIVATIONS) - {e}:
                    raise ValueError(f"epilogue has more than one activation: {list(self.epilogue)}")
                continue
            if kind == "shuffle":
                g = e.split(":")[1] if e.count(":") == 1 else ""
                if not g.isdigit() or int(g) < 1:
                    raise ValueError(f"epilogue {e!r}: shuffle needs a positive group count, as 'shuffle:3'")
                if self.out_channels % int(g):
                    raise ValueError(f"epilogue {e!r}: shuffle groups {g} do not divide "
                                     f"out_channels={self.out_channels}")
                if i != len(self.epilogue) - 1:
                    raise ValueError(f"epilogue {e!r}: the shuffle must come last in {list(self.epilogue)}")
                continue
            raise ValueError(f"unknown epilogue {e!r}; known: bias, residual, {', '.join(ACTIVATIONS)}, shuffle:G")


def _reject_unknown(row: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in spec for op {row.get('op', 'conv2d')!r}")


def _require(row: dict[str, Any], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in row]
    if missing:
        raise ValueError(f"missing field(s) {missing} in spec for op {row.get('op', 'conv2d')!r}")
