"""torch.library ops: torch.ops.gconvgen.conv2d, channel_shuffle, max_pool2d and avg_pool2d (and the conv's
gradients).

Each call becomes a KernelSpec; its compiled kernel comes from a library registered with
`use_library`, else from the on-disk cache, else it is compiled on first use (tuned record, transfer
or rule) and cached. Calls are zero-copy through DLPack; a channels_last input runs the NHWC kernel
on its NHWC view and returns a channels_last tensor, as torch does.

CPU float32 tensors run CPU kernels; CUDA float32 and float16 tensors run CUDA kernels (from a
registered CUDA library, or compiled for the GPU's profile where TVM's compiler is installed), on
torch's current stream, so they order with torch's own work and are captured by CUDA graphs (warm
each shape up once before capturing: the first call loads its kernel). What our kernels do not cover
(other dtypes or devices, mixed devices, invalid shapes) goes to aten, so results and error messages
are torch's own. Without a compiler (a runtime-only install) a spec missing from the
registered libraries also goes to aten, with one warning, or raises when strict mode is on
(`set_strict(True)` or GCONVGEN_STRICT=1).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from . import reference
from .reference import activate
from .spec import ACTIVATIONS as _FUSED_ACTIVATIONS, KernelSpec

ACTIVATIONS = ("none", *_FUSED_ACTIVATIONS)

_kernels: dict[tuple[str, str], object] = {}   # (device type, spec key) -> kernel
_libraries: list = []
_strict = os.environ.get("GCONVGEN_STRICT", "") not in ("", "0")
_warned = False
_profiles: dict[str, object] = {}
DTYPES = {"cpu": {torch.float32: "float32"}, "cuda": {torch.float32: "float32", torch.float16: "float16"}}


_recording: list[KernelSpec] | None = None


class recording:
    """Within `with recording() as specs:`, the ops run on aten and list the KernelSpec of every call
    (repeats included): the layers a model would run, without compiling them."""

    def __enter__(self) -> list[KernelSpec]:
        global _recording
        _recording = []
        return _recording

    def __exit__(self, *exc) -> None:
        global _recording
        _recording = None


def set_strict(strict: bool) -> None:
    """Strict: a kernel that cannot be had raises instead of falling back to aten."""
    global _strict
    _strict = strict


def use_library(folder: str | os.PathLike) -> None:
    """Serve the kernels of a built library (gconvgen build) before looking at the cache: a CPU
    library's for CPU tensors, a CUDA library's for CUDA tensors."""
    from .runtime import load
    _libraries.append(load(folder))


def _served_dtype(*tensors: torch.Tensor | None) -> str | None:
    """The kernels' dtype name for these tensors (None ones skipped), or None where they are not on
    one device of a type and dtype our kernels serve."""
    first = tensors[0]
    kind = first.device.type
    dtype = DTYPES.get(kind, {}).get(first.dtype)
    if dtype is None or any(t is not None and (t.device != first.device or t.dtype != first.dtype)
                            for t in tensors[1:]):
        return None
    return dtype


def _libraries_for(device: torch.device) -> list:
    return [lib for lib in _libraries if lib.is_cuda == (device.type == "cuda")]


def _kernel(spec: KernelSpec, device: torch.device):
    """The compiled kernel for spec on that device, or None where only aten can serve it."""
    k = _kernels.get((device.type, spec.key))
    if k is not None:
        return k
    for lib in _libraries_for(device):
        if spec in lib:
            k = _kernels[device.type, spec.key] = lib.kernel(spec)
            return k
    profile = _compiler_profile(device)
    if profile is None:
        return None
    from . import build
    from .runtime import load
    folder, _ = build.cached(spec, profile)
    k = _kernels[device.type, spec.key] = load(folder).kernel(spec)
    return k


def _conv_kernel(spec: KernelSpec, device: torch.device) -> tuple[KernelSpec, object]:
    """(spec, kernel) for a conv call: a loaded library's kernel of the same call (in any weight
    layout), else the variant of spec the target's rules prefer (a packed weight layout, or an
    alternative its timings ran faster: gconvgen.schedule.timed_spec), compiled.
    A float32 conv on a GPU, while torch lets its cuDNN convs run in TF32 (its default), takes a
    TF32 kernel where a library holds one or a rule serves one on tensor cores (KernelSpec.tf32)."""
    tf32 = device.type == "cuda" and spec.dtype == "float32" and torch_allows_tf32()
    variant = _variants.get((device.type, spec.key, tf32))
    if variant is None:
        exact = _library_variant(spec, device)
        if tf32:   # a library's TF32 kernel, else its exact one, else a TF32 one compiled where a rule serves it
            variant = _library_variant(replace(spec, tf32=True), device) or exact or _compiled_tf32(spec, device)
        variant = variant or exact or _compiled_variant(spec, device)
        _variants[device.type, spec.key, tf32] = variant
    return variant, _kernel(variant, device)


def _library_variant(spec: KernelSpec, device: torch.device) -> KernelSpec | None:
    return next((s for lib in _libraries_for(device) for s in lib.specs() if _same_call(s, spec)), None)


def _compiled_variant(spec: KernelSpec, device: torch.device) -> KernelSpec:
    profile = _compiler_profile(device)
    if profile is None:
        return spec
    from schedules import preferred_spec
    from .schedule import timed_spec
    return timed_spec(preferred_spec(spec, profile.family, profile.tvm_target()), profile)


def _compiled_tf32(spec: KernelSpec, device: torch.device) -> KernelSpec | None:
    profile = _compiler_profile(device)
    if profile is None:
        return None
    from schedules import tf32_spec
    return tf32_spec(spec, profile.family, profile.tvm_target())


def torch_allows_tf32() -> bool:
    """Whether torch's cuDNN convs may multiply float32 in TF32: the conv's precision setting, else
    cuDNN's, else torch's ('none' defers to the next; the legacy `cudnn.allow_tf32 = False` sets
    them so). True by default."""
    backends = torch.backends
    for level in (getattr(getattr(backends.cudnn, "conv", None), "fp32_precision", None),
                  getattr(backends.cudnn, "fp32_precision", None), getattr(backends, "fp32_precision", None)):
        if level not in (None, "none"):
            return level == "tf32"
    return False


_variants: dict[tuple[str, str, bool], KernelSpec] = {}


def _same_call(a: KernelSpec, b: KernelSpec) -> bool:
    """a and b compute the same thing from arguments laid out differently (the weight's layout), or
    by other stages from the same arguments (a banded depthwise conv)."""
    return replace(a, weight_layout=b.weight_layout, banded=b.banded) == b


def _compiler_profile(device: torch.device):
    """The target profile kernels for `device` are compiled with where TVM's compiler is installed
    (the host's; for a GPU, cuda-sm<capability>); None in a runtime-only install or for a GPU without
    a profile (warned once, or raised in strict mode)."""
    try:
        from . import build, targets  # noqa: F401
    except ImportError as e:  # runtime-only install: no TVM compiler
        return _missing(f"no compiler installed ({e})")
    name = "host"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"cuda-sm{major}{minor}"
        if name not in targets.list_profiles():
            return _missing(f"no target profile {name} for {torch.cuda.get_device_name(device)} in targets/")
    if name not in _profiles:
        _profiles[name] = targets.load(name)
    return _profiles[name]


def _missing(why: str) -> None:
    """A kernel is not in the loaded libraries and cannot be compiled: raise (strict) or warn once."""
    global _warned
    if _strict:
        raise RuntimeError(f"gconvgen: a kernel is missing from the loaded libraries and cannot be built here: "
                           f"{why}; build a library for it with `gconvgen build`")
    if not _warned:
        warnings.warn(f"gconvgen: {why}; kernels missing from the loaded libraries run on aten instead",
                      stacklevel=6)
        _warned = True
    return None


def weight_for(spec: KernelSpec, weight: torch.Tensor) -> torch.Tensor:
    """The weight as spec's kernel takes it: torch's own, or its HWIO (HWIO<t>) copy, cached per tensor."""
    return weight if spec.weight_layout == "OIHW" else _packed_weight(weight, spec.weight_block)


def strided_pointwise(weight: torch.Tensor, stride, padding) -> bool:
    """A 1x1 unpadded conv with a stride, which the conv op runs on its subsampled input."""
    return (weight.dim() == 4 and tuple(weight.shape[2:]) == (1, 1) and tuple(stride) != (1, 1)
            and not any(padding))


def _as_4d(weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv's weight given as nn.Linear holds it, (O, I), as the (O, I, 1, 1) view convs take.
    The op takes the 2-D tensor itself because compiled code (Inductor) makes each view anew, as an
    alias without a base or a shared version: a view made before the op would miss the packed-weight
    cache, which knows a weight by its tensor and version, on every call (ConvNeXt-T repacked its
    MLP weights, about 60 ms a forward)."""
    return weight.reshape(weight.shape[0], weight.shape[1], 1, 1) if weight.dim() == 2 else weight


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if _channels_last(x) else torch.contiguous_format


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_spec(x, weight, bias, stride, padding, dilation, groups, activation, shuffle,
               residual=None) -> KernelSpec | None:
    """The spec of a call our kernels serve, or None (aten serves it, and raises torch's errors)."""
    dtype = _served_dtype(x, weight, bias, residual)
    if dtype is None or x.dim() != 4 or weight.dim() != 4:
        return None
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if groups < 1 or c != cg * groups or o % groups or (bias is not None and tuple(bias.shape) != (o,)):
        return None
    if activation not in ACTIVATIONS:
        return None
    epilogue = (("bias",) if bias is not None else ()) + (("residual",) if residual is not None else ()) \
        + ((activation,) if activation != "none" else ()) + ((f"shuffle:{shuffle}",) if shuffle > 1 else ())
    try:
        spec = KernelSpec(op="conv2d", batch=n, in_channels=c, out_channels=o, height=h, width=w, kernel=(kh, kw),
                          stride=tuple(stride), padding=(padding[0], padding[1], padding[0], padding[1]),
                          dilation=tuple(dilation), groups=groups, epilogue=epilogue,
                          layout="NHWC" if _channels_last(x) else "NCHW", dtype=dtype)
    except ValueError:
        return None
    if residual is not None and tuple(residual.shape) != (n, o, spec.out_height, spec.out_width):
        return None   # a broadcasting add: aten's
    return spec


def _aten_conv(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual=None) -> torch.Tensor:
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if residual is not None:
        y = y + residual
    return _aten_conv_epilogue(y, activation, shuffle).contiguous(memory_format=_memory_format(x))


def _aten_conv_epilogue(y: torch.Tensor, activation: str, shuffle: int) -> torch.Tensor:
    if activation not in ACTIVATIONS:
        raise ValueError(f"gconvgen.conv2d: unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    y = activate(y, activation)
    if shuffle > 1:
        y = _aten_shuffle(y, shuffle)
    return y


def _aten_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    if x.dim() != 4:
        return F.channel_shuffle(x, groups)
    n, c, h, w = x.shape
    if groups < 1 or c % groups:
        return F.channel_shuffle(x, groups)  # torch's error
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w).contiguous(
        memory_format=_memory_format(x))


ALIGNMENT = 64   # bytes: TVM's kernels assume their arguments start on it (aligned vector loads)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t, or an aligned copy when t is a view starting mid-allocation (a channel slice from chunk or
    narrow): the kernels' aligned vector loads would fault on it."""
    if t.data_ptr() % ALIGNMENT == 0:
        return t
    return t.clone()   # preserve_format: the same dense strides, in a fresh (aligned) allocation


def _run(kernel, spec: KernelSpec, x: torch.Tensor, *params: torch.Tensor,
         out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The kernel on x (logical NCHW, either memory format) and its other arguments, as torch returns it;
    out_shape: spec.shape("output"), where the caller keeps it."""
    fn = kernel.function   # the tvm-ffi function itself: the Kernel wrapper's checks were done once
    x = _aligned(x.contiguous(memory_format=torch.channels_last if spec.layout == "NHWC" else torch.contiguous_format))
    params = [_aligned(p.contiguous()) for p in params]
    out = torch.empty(*(out_shape or spec.shape("output")), dtype=x.dtype, device=x.device)
    if spec.layout == "NHWC":
        fn(x.permute(0, 2, 3, 1), *params, out)
        return out.permute(0, 3, 1, 2)     # a channels_last NCHW view, as torch returns
    fn(x, *params, out)
    return out


# Call signature -> (spec, kernel): a model calls the same few shapes over and over, and building
# and validating a KernelSpec costs more than a small kernel runs.
_calls: dict[tuple, tuple[KernelSpec | None, object]] = {}
_conv_plans: dict[tuple, "_ConvPlan"] = {}   # the same for conv2d calls
_packed: dict[tuple, tuple[torch.Tensor, int, torch.Tensor]] = {}


_last: tuple[KernelSpec | None, object] | None = None


def last_call() -> tuple[KernelSpec | None, object] | None:
    """(spec, kernel) of the latest conv2d call, for gconvgen.nn's per-module fast path."""
    return _last


def _packed_weight(weight: torch.Tensor, block: int = 0) -> torch.Tensor:
    """The HWIO copy NHWC kernels take (HWIO<block> for the packed pointwise and grouped rules), made
    once per weight tensor, version and layout. A view (`_as_4d`'s of nn.Linear's 2-D weight, made
    each call) counts as its base tensor; views share its version. The entry holds the tensor itself,
    so its id (and memory) cannot be reused by another tensor while cached."""
    root = weight._base if weight._base is not None else weight
    key = (id(root), tuple(weight.shape), weight.storage_offset(), block)
    entry = _packed.get(key)
    if entry is not None and entry[0] is root and entry[1] == weight._version:
        return entry[2]
    if len(_packed) > 512:
        _packed.clear()
    w = reference.packed_weight(weight.detach(), block)
    _packed[key] = (root, weight._version, w)
    return w


_lib = torch.library.Library("gconvgen", "DEF")   # noqa: the ops' namespace, held for the process


class _OpDef:
    """torch.library.custom_op's interface (register_fake, register_autograd, calling the op) on a
    leaner dispatch path. custom_op wraps an implementation in Python layers that run on every call
    (an autograd kernel that redispatches through another wrapper with an aliasing check). Here the
    implementation is itself the op's kernel for every backend (CompositeExplicitAutograd: CPU and
    CUDA, anything else falls back to aten inside), and the autograd kernel enters an
    autograd.Function only when a gradient is wanted, else it redispatches below autograd at once.
    On a 32x28x28 depthwise layer, against custom_op around the same body in the same process, the
    dispatch costs 27-28 instead of 38-45 µs under no_grad and 7-13 instead of 12-19 under
    inference_mode (which skips the autograd kernel). torch.compile, export and opcheck see an
    ordinary op with a fake kernel and an autograd formula."""

    def __init__(self, name: str, impl: Callable) -> None:
        self.name = name
        self._init_fn = impl
        _lib.define(name + torch.library.infer_schema(impl, mutates_args=()))
        _lib.impl(name, impl, "CompositeExplicitAutograd")
        self.op = getattr(torch.ops.gconvgen, name).default

    def __call__(self, *args, **kwargs):
        return self.op(*args, **kwargs)

    def register_fake(self, fake: Callable) -> Callable:
        torch.library.register_fake(f"gconvgen::{self.name}", fake, lib=_lib)
        return fake

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        op = self.op
        # trailing defaults the caller left out: setup_context and backward see every input
        defaults = [a.default_value for a in op._schema.arguments]

        def forward(*args):
            with torch._C._AutoDispatchBelowAutograd():
                return op(*args)

        # a class made by name, so that autograd's graph nodes read "<op>Backward"
        Function = type(self.name, (torch.autograd.Function,), {
            "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward)})

        impl = self._init_fn

        def autograd_kernel(*args):
            if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
                return Function.apply(*args, *defaults[len(args):])
            if _plainly_dispatched(args):   # (the dispatcher would run impl next: a second dispatch costs ~6 µs)
                with torch._C._AutoDispatchBelowAutograd():
                    return impl(*args)
            with torch._C._AutoDispatchBelowAutograd():
                return op(*args)

        _lib.impl(self.name, autograd_kernel, "Autograd")


    def forbid_autograd(self) -> None:
        """Backward through this op raises, naming it (without an autograd kernel torch would only
        warn and leave the gradients it cannot reach at zero)."""
        name = self.name

        def backward(ctx, *grads):
            raise RuntimeError(f"Trying to backward through gconvgen::{name}, which has no autograd formula "
                               f"(a conv's second-order gradient through gconvgen is not supported)")
        self.register_autograd(backward, lambda ctx, inputs, output: None)


def _key_set(*names: str) -> int:
    keys = [getattr(torch._C.DispatchKey, n) for n in names if hasattr(torch._C.DispatchKey, n)]
    ks = torch._C.DispatchKeySet(keys[0])
    for k in keys[1:]:
        ks = ks.add(k)
    return ks.raw_repr()


# The dispatch keys that can run between an op's autograd kernel and its implementation: modes
# (fake tensors, functionalization, TorchDispatchModes), functorch's transforms (vmap, grad) and
# tensors that are not plain (subclasses, conjugate or negative views, zero tensors).
try:
    _INTERPOSING = _key_set("Python", "PythonTLSSnapshot", "PythonDispatcher", "PreDispatch", "Functionalize",
                            "FuncTorchDynamicLayerFrontMode", "FuncTorchDynamicLayerBackMode", "FuncTorchBatched",
                            "FuncTorchVmapMode", "FuncTorchGradWrapper", "Conjugate", "Negative", "ZeroTensor")
    _tls_keys, _tensor_keys = torch._C._dispatch_tls_local_include_set, torch._C._dispatch_keys
except (AttributeError, TypeError):   # (private API: a torch without it always dispatches)
    _INTERPOSING = 0


def _plainly_dispatched(args: tuple) -> bool:
    """The dispatcher would run the implementation right after the autograd kernel: neither the
    thread's state nor any tensor argument carries an interposing key."""
    if not _INTERPOSING or _tls_keys().raw_repr() & _INTERPOSING:
        return False
    for a in args:
        if isinstance(a, torch.Tensor) and _tensor_keys(a).raw_repr() & _INTERPOSING:
            return False
    return True


def _custom_op(name: str) -> Callable[[Callable], _OpDef]:
    """@_custom_op("gconvgen::NAME") defines the op NAME with the decorated function as its kernel."""
    return lambda impl: _OpDef(name.split("::")[1], impl)


@_custom_op("gconvgen::conv2d")
def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
           padding: list[int], dilation: list[int], groups: int, activation: str, shuffle: int,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """Group conv2d + bias + residual (a tensor of the output's shape, added before the activation)
    + activation (one of ACTIVATIONS, 'none' for none) + output channel shuffle (0 or 1: none),
    torch's result for NCHW or channels_last input. weight is (O, I/groups, kh, kw), or (O, I/groups)
    for a 1x1 conv: nn.Linear's own weight, passed as it is so that its packed copy is found again."""
    weight = _as_4d(weight)
    if _recording is not None:
        x, stride = _subsampled(x, weight, stride, padding)
        spec = _conv_spec(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual)
        _recording.extend([spec] if spec is not None else [])
        return _aten_conv(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual)
    call = (x.shape, x.dtype, x.device, _channels_last(x), weight.shape, weight.dtype, weight.device,
            None if bias is None else (bias.shape, bias.dtype, bias.device),
            None if residual is None else (residual.shape, residual.dtype, residual.device),
            tuple(stride), tuple(padding), tuple(dilation), groups, activation, shuffle,
            x.is_cuda and x.dtype == torch.float32 and torch_allows_tf32())   # (TF32 kernels: _conv_kernel)
    plan = _conv_plans.get(call)
    if plan is None:
        plan = _conv_plans[call] = _ConvPlan.of(x, weight, bias, stride, padding, dilation, groups, activation,
                                                shuffle, residual)
    global _last
    _last = plan.found
    spec, kernel = plan.found
    if kernel is None:
        return _aten_conv(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual)
    if plan.subsample:
        x = x[:, :, ::stride[0], ::stride[1]]
    params = (weight_for(spec, weight),) if bias is None else (weight_for(spec, weight), bias)
    if residual is not None:   # in the kernel's layout, as the input goes
        if spec.layout == "NHWC":
            params += (residual.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1),)
        else:
            params += (residual,)
    return _run(kernel, spec, x, *params, out_shape=plan.out_shape)


def _subsampled(x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int]) -> tuple:
    """(x, stride) of the conv, or of the stride-1 conv on the subsampled input that serves a strided 1x1
    (ResNet's downsampling shortcut): the copy is a quarter of the input, and the stride-1 pointwise rules
    then run it as a GEMM (ResNeXt's 256->512 at 56x56 stride 2: 1.6 ms + 0.1 ms copy against 4.9 ms
    strided in the kernel, 512->1024 at 28x28: 1.4 against 4.5; torch takes 1.2-1.7 ms for either)."""
    if strided_pointwise(weight, stride, padding) and x.dim() == 4:
        return x[:, :, ::stride[0], ::stride[1]].contiguous(memory_format=_memory_format(x)), [1, 1]
    return x, stride


class _ConvPlan(NamedTuple):
    """What a conv call of one signature does, worked out on its first call: a model calls the same
    few shapes over and over, and building and validating a KernelSpec costs more than a small
    kernel runs (and in compiled graphs every call comes through the op)."""
    found: tuple[KernelSpec | None, object]   # (spec, kernel), kernel None where aten serves the call
    subsample: bool                           # run on the input subsampled by the stride (_subsampled)
    out_shape: tuple[int, ...]                # spec.shape("output"), as the kernel writes it

    @staticmethod
    def of(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual) -> "_ConvPlan":
        sub, sub_stride = _subsampled(x, weight, stride, padding)
        spec = _conv_spec(sub, weight, bias, sub_stride, padding, dilation, groups, activation, shuffle, residual)
        found = _conv_kernel(spec, x.device) if spec is not None else (None, None)
        if found[1] is None:
            return _ConvPlan(found, False, ())
        return _ConvPlan(found, sub is not x, spec.shape("output"))


@conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual=None):
    weight = _as_4d(weight)
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    oh = _out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = _out_size(w, kw, stride[1], padding[1], dilation[1])
    return torch.empty((n, weight.shape[0], oh, ow), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(x))


def _conv_setup(ctx, inputs, output) -> None:
    x, weight, bias, stride, padding, dilation, groups, activation, shuffle, residual = inputs
    ctx.save_for_backward(x, weight, bias, residual)
    ctx.args = (stride, padding, dilation, groups, activation, shuffle)


def _activation_grad(z: torch.Tensor, activation: str) -> torch.Tensor | None:
    """d activation / dz at the pre-activation z (None: identity)."""
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "relu6":
        return ((z > 0) & (z < 6)).to(z.dtype)
    if activation == "hardswish":   # x/6 * relu6(x + 3): 0 below -3, 1 above 3, (2x + 3)/6 between
        return torch.where(z < -3, 0.0, torch.where(z > 3, 1.0, (2 * z + 3) / 6)).to(z.dtype)
    if activation == "hardsigmoid":
        return ((z > -3) & (z < 3)).to(z.dtype) / 6
    if activation in ("sigmoid", "silu"):
        s = torch.sigmoid(z)
        return s * (1 - s) if activation == "sigmoid" else s * (1 + z * (1 - s))
    if activation == "gelu":   # z * Phi(z): Phi(z) + z * phi(z)
        return torch.special.erfc(-z * 0.5 ** 0.5) / 2 + z * torch.exp(-z * z / 2) * (2 * torch.pi) ** -0.5
    return None


def _gradient_kernel(op: str, a: torch.Tensor, b: torch.Tensor, shape: list[int], x_shape, w_shape, stride,
                     padding, dilation, groups: int):
    """(spec, kernel) of a conv gradient (op conv2d_wgrad or conv2d_dgrad) for float32 CPU operands
    a, b producing `shape`, or (None, None) where aten serves it."""
    call = (op, tuple(a.shape), a.dtype, a.device, tuple(b.shape), b.dtype, b.device, tuple(shape),
            tuple(stride), tuple(padding), tuple(dilation), groups)
    hit = _calls.get(call)
    if hit is None:
        spec = None
        if (a.dtype == b.dtype == torch.float32 and a.device.type == b.device.type == "cpu"
                and len(x_shape) == len(w_shape) == 4):
            n, c, h, w = x_shape
            o, _, kh, kw = w_shape
            try:
                spec = KernelSpec(op=op, batch=n, in_channels=c, out_channels=o, height=h, width=w, kernel=(kh, kw),
                                  stride=tuple(stride), dilation=tuple(dilation), groups=groups,
                                  padding=(padding[0], padding[1], padding[0], padding[1]))
            except ValueError:
                spec = None
            names = spec.arg_names if spec is not None else ()
            if spec is not None and (tuple(a.shape) != spec.shape(names[0]) or tuple(b.shape) != spec.shape(names[1])
                                     or tuple(shape) != spec.shape("output")):
                spec = None
        hit = _calls[call] = (spec, _kernel(spec, a.device) if spec is not None else None)
    return hit


@_custom_op("gconvgen::conv2d_weight_grad")
def conv2d_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight_shape: list[int], stride: list[int],
                       padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    """The weight gradient of conv2d (torch.nn.grad.conv2d_weight's result) on our conv2d_wgrad
    kernel for float32 CPU tensors, else aten's. An op of its own so that backward graphs traced by
    torch.compile and AOT autograd keep it."""
    spec, kernel = _gradient_kernel("conv2d_wgrad", x, grad, weight_shape, x.shape, weight_shape, stride, padding,
                                    dilation, groups)
    if kernel is None:
        return torch.nn.grad.conv2d_weight(x, weight_shape, grad, stride, padding, dilation, groups)
    return _run(kernel, spec, x, grad)


@conv2d_weight_grad.register_fake
def _(x, grad, weight_shape, stride, padding, dilation, groups):
    return x.new_empty(weight_shape)


conv2d_weight_grad.forbid_autograd()


@_custom_op("gconvgen::conv2d_input_grad")
def conv2d_input_grad(grad: torch.Tensor, weight: torch.Tensor, input_shape: list[int], stride: list[int],
                      padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    """The input gradient of a strided conv2d (torch.nn.grad.conv2d_input's result) on our
    conv2d_dgrad kernel for float32 CPU tensors, else aten's."""
    spec, kernel = _gradient_kernel("conv2d_dgrad", grad, weight, input_shape, input_shape, weight.shape, stride,
                                    padding, dilation, groups)
    if kernel is None:
        return torch.nn.grad.conv2d_input(input_shape, weight, grad, stride, padding, dilation, groups)
    return _run(kernel, spec, grad, weight)


@conv2d_input_grad.register_fake
def _(grad, weight, input_shape, stride, padding, dilation, groups):
    return grad.new_empty(input_shape)


conv2d_input_grad.forbid_autograd()


def _conv_backward(ctx, grad):
    """Gradients through the epilogue by hand, then the conv's: the input gradient of a stride-1 conv
    is itself a group conv (of the output gradient with each group's weights transposed and flipped);
    strided ones run on our conv2d_dgrad kernel, the weight gradient on conv2d_wgrad."""
    x, weight_arg, bias, residual = ctx.saved_tensors
    weight = _as_4d(weight_arg)
    stride, padding, dilation, groups, activation, shuffle = ctx.args
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    g = grad.contiguous(memory_format=_memory_format(grad)) if grad.dim() == 4 else grad
    if shuffle > 1:
        g = _aten_shuffle(g, g.shape[1] // shuffle)       # undo the output shuffle
    if activation != "none":
        z = conv2d(x, weight, bias, stride, padding, dilation, groups, "none", 0, residual)   # pre-activation
        g = g * _activation_grad(z, activation)
    grad_r = g if residual is not None and ctx.needs_input_grad[9] else None
    grad_b = g.sum((0, 2, 3)) if bias is not None and need_b else None
    grad_w = conv2d_weight_grad(x, g, list(weight.shape), stride, padding, dilation, groups).view(weight_arg.shape) \
        if need_w else None
    grad_x = None
    if need_x:
        kh, kw = weight.shape[2:]
        back_pad = [dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1]]
        if list(stride) == [1, 1] and min(back_pad) >= 0:
            o, cg = weight.shape[:2]
            w_t = weight.reshape(groups, o // groups, cg, kh, kw).transpose(1, 2).flip(-1, -2)
            w_t = w_t.reshape(groups * cg, o // groups, kh, kw)
            grad_x = conv2d(g, w_t, None, [1, 1], back_pad, list(dilation), groups, "none", 0)
        else:
            grad_x = conv2d_input_grad(g, weight, list(x.shape), stride, padding, dilation, groups)
            grad_x = grad_x.contiguous(memory_format=_memory_format(x))
    return grad_x, grad_w, grad_b, None, None, None, None, None, None, grad_r


conv2d.register_autograd(_conv_backward, setup_context=_conv_setup)


@_custom_op("gconvgen::channel_shuffle")
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle (nn.ChannelShuffle's result) for NCHW or channels_last input."""
    dtype = _served_dtype(x)
    if dtype is None or x.dim() != 4 or groups < 1 or x.shape[1] % groups:
        return _aten_shuffle(x, groups).clone()
    n, c, h, w = x.shape
    if _recording is not None:
        _recording.append(KernelSpec(op="channel_shuffle", batch=n, in_channels=c, out_channels=c, height=h, width=w,
                                     groups=groups, layout="NHWC" if _channels_last(x) else "NCHW", dtype=dtype))
        return _aten_shuffle(x, groups).clone()
    call = ("shuffle", tuple(x.shape), x.dtype, x.device, _channels_last(x), groups)
    hit = _calls.get(call)
    if hit is None:
        spec = KernelSpec(op="channel_shuffle", batch=n, in_channels=c, out_channels=c, height=h, width=w,
                          groups=groups, layout="NHWC" if _channels_last(x) else "NCHW", dtype=dtype)
        hit = _calls[call] = (spec, _kernel(spec, x.device))
    spec, kernel = hit
    if kernel is None:
        return _aten_shuffle(x, groups).clone()
    return _run(kernel, spec, x)


@channel_shuffle.register_fake
def _(x, groups):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _shuffle_setup(ctx, inputs, output) -> None:
    ctx.groups = inputs[1]


def _shuffle_backward(ctx, grad):
    c = grad.shape[1]
    return _aten_shuffle(grad, c // ctx.groups), None   # the inverse permutation is a shuffle by C/g


channel_shuffle.register_autograd(_shuffle_backward, setup_context=_shuffle_setup)


def pool_args(kernel_size, stride=None, padding=0, dilation=1) -> tuple[list[int], list[int], list[int], list[int]]:
    """nn.MaxPool2d's / F.max_pool2d's arguments as the op's lists (stride None or []: the kernel)."""
    def pair(v, default):
        if v is None or (isinstance(v, (list, tuple)) and not v):
            v = default
        return [v, v] if isinstance(v, int) else list(v)
    kernel = pair(kernel_size, None)
    return kernel, pair(stride, kernel), pair(padding, 0), pair(dilation, 1)


def _pool_spec(x: torch.Tensor, kernel_size, stride, padding, dilation, op: str = "max_pool2d",
               activation: str = "none") -> KernelSpec | None:
    dtype = _served_dtype(x)
    if not (dtype is not None and x.dim() == 4 and len(kernel_size) == 2
            and all(2 * p <= k for p, k in zip(padding, kernel_size))):
        return None
    n, c, h, w = x.shape
    try:
        return KernelSpec(op=op, batch=n, in_channels=c, out_channels=c, groups=c, height=h, width=w,
                          kernel=tuple(kernel_size), stride=tuple(stride), dilation=tuple(dilation),
                          padding=(padding[0], padding[1], padding[0], padding[1]),
                          epilogue=() if activation == "none" else (activation,),
                          layout="NHWC" if _channels_last(x) else "NCHW", dtype=dtype)
    except ValueError:
        return None


def _pool(x: torch.Tensor, kernel_size, stride, padding, dilation, op: str, activation: str,
          aten: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A pooling op's call: recorded, or on its (cached) kernel, or `aten` where ours does not serve it."""
    if _recording is not None:
        spec = _pool_spec(x, kernel_size, stride, padding, dilation, op, activation)
        _recording.extend([spec] if spec is not None else [])
        return aten()
    call = (op, tuple(x.shape), x.dtype, x.device, _channels_last(x), tuple(kernel_size), tuple(stride),
            tuple(padding), tuple(dilation), activation)
    hit = _calls.get(call)
    if hit is None:
        spec = _pool_spec(x, kernel_size, stride, padding, dilation, op, activation)
        hit = _calls[call] = (spec, _kernel(spec, x.device) if spec is not None else None)
    spec, kernel = hit
    if kernel is None:
        return aten()
    return _run(kernel, spec, x)


@_custom_op("gconvgen::max_pool2d")
def max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               dilation: list[int]) -> torch.Tensor:
    """F.max_pool2d's result (floor mode, no indices) for NCHW or channels_last float32 CPU input on our
    kernel (the depthwise window, reduced with max); anything else on aten, with torch's errors."""
    return _pool(x, kernel_size, stride, padding, dilation, "max_pool2d", "none",
                 lambda: F.max_pool2d(x, kernel_size, stride, padding, dilation))


@max_pool2d.register_fake
def _(x, kernel_size, stride, padding, dilation):
    n, c, h, w = x.shape
    oh = _out_size(h, kernel_size[0], stride[0], padding[0], dilation[0])
    ow = _out_size(w, kernel_size[1], stride[1], padding[1], dilation[1])
    return torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _pool_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


def _pool_backward(ctx, grad):
    """To the window maxima, through aten (which finds them again)."""
    (x,) = ctx.saved_tensors
    kernel, stride, padding, dilation = ctx.args
    _, indices = F.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True)
    return (torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel, stride, padding, dilation, False,
                                                            indices), None, None, None, None)


max_pool2d.register_autograd(_pool_backward, setup_context=_pool_setup)


def _aten_avg_pool(x, kernel_size, stride, padding, activation):
    return _aten_conv_epilogue(F.avg_pool2d(x, kernel_size, stride, padding), activation, 0)


@_custom_op("gconvgen::avg_pool2d")
def avg_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               activation: str = "none") -> torch.Tensor:
    """activation(F.avg_pool2d(x, ...)) (floor mode, padding counted in the mean as torch's default
    count_include_pad) for NCHW or channels_last float32 CPU input on our kernel (the depthwise window,
    summed and scaled); anything else on aten, with torch's errors. A global average pool is the
    window of the whole image."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return _pool(x, kernel_size, stride, padding, [1, 1], "avg_pool2d", activation,
                 lambda: _aten_avg_pool(x, kernel_size, stride, padding, activation))


@avg_pool2d.register_fake
def _(x, kernel_size, stride, padding, activation="none"):
    n, c, h, w = x.shape
    oh = _out_size(h, kernel_size[0], stride[0], padding[0], 1)
    ow = _out_size(w, kernel_size[1], stride[1], padding[1], 1)
    return torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _avg_pool_backward(ctx, grad):
    """Through the activation at the recomputed mean, then aten's average-pool gradient."""
    (x,) = ctx.saved_tensors
    kernel, stride, padding, activation = ctx.args
    if activation != "none":
        grad = grad * _activation_grad(F.avg_pool2d(x, kernel, stride, padding), activation)
    return (torch.ops.aten.avg_pool2d_backward(grad, x, kernel, stride, padding, False, True, None),
            None, None, None, None)


avg_pool2d.register_autograd(_avg_pool_backward, setup_context=_pool_setup)


# The ops' own implementations, for eager inference that need not pass the dispatcher (gconvgen.nn).
conv2d_eager = conv2d._init_fn
channel_shuffle_eager = channel_shuffle._init_fn
max_pool2d_eager = max_pool2d._init_fn
avg_pool2d_eager = avg_pool2d._init_fn
