"""The PyTorch face: custom ops, torch.compile/export, autograd, nn modules, convert."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gconvgen
import gconvgen.torch_ops  # noqa: F401 - registers torch.ops.gconvgen
from gconvgen import models
from gconvgen import nn as gnn

CONV_CASES = [  # (N, C, H, W, O, k, stride, pad, dilation, groups, bias, activation, shuffle)
    (1, 16, 10, 10, 16, 3, 1, 1, 1, 16, True, "relu6", 0),      # depthwise
    (2, 12, 9, 11, 12, 3, 2, 1, 1, 12, False, "none", 0),      # depthwise, stride 2, odd sizes
    (1, 16, 8, 8, 32, 1, 1, 0, 1, 1, True, "relu", 0),         # pointwise
    (1, 12, 8, 8, 24, 1, 1, 0, 1, 3, True, "relu", 3),         # grouped 1x1 + shuffle (ShuffleNet v1)
    (1, 16, 9, 9, 16, 3, 1, 2, 2, 4, True, "hardswish", 0),    # grouped, dilated
    (1, 16, 12, 12, 32, 3, 2, 1, 1, 4, True, "relu", 0),       # grouped, stride 2 (phase-split input grad)
    (1, 24, 9, 9, 24, 5, 2, 2, 1, 24, True, "silu", 0),       # depthwise 5x5, stride 2 (EfficientNet)
    (2, 32, 1, 1, 8, 1, 1, 0, 1, 1, True, "sigmoid", 0),       # squeeze-and-excitation's 1x1s on pooled vectors
    (2, 8, 1, 1, 32, 1, 1, 0, 1, 1, True, "hardsigmoid", 0),
    (1, 16, 6, 6, 48, 1, 1, 0, 1, 1, True, "gelu", 0),        # ConvNeXt's MLP expansion (the exact GELU)
]


def _args(case, channels_last=False, seed=0):
    n, c, h, w, o, k, s, p, d, g, bias, act, shuffle = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(o, c // g, k, k, generator=gen) / (c // g * k * k) ** 0.5
    b = torch.randn(o, generator=gen) if bias else None
    return x, weight, b, [s, s], [p, p], [d, d], g, act, shuffle


def _reference(x, weight, b, stride, padding, dilation, groups, act, shuffle):
    y = F.conv2d(x, weight, b, stride, padding, dilation, groups)
    y = {"none": y, "relu": F.relu(y), "relu6": F.relu6(y), "hardswish": F.hardswish(y), "silu": F.silu(y),
         "sigmoid": torch.sigmoid(y), "hardsigmoid": F.hardsigmoid(y), "gelu": F.gelu(y)}[act]
    return F.channel_shuffle(y, shuffle) if shuffle > 1 else y


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_op_matches_torch(case, channels_last):
    args = _args(case, channels_last)
    out = torch.ops.gconvgen.conv2d(*args)
    torch.testing.assert_close(out, _reference(*args), rtol=1e-4, atol=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_opcheck_conv2d(case):
    torch.library.opcheck(torch.ops.gconvgen.conv2d.default, _args(case))
    x, w, b, *rest = _args(case)
    torch.library.opcheck(torch.ops.gconvgen.conv2d.default,
                          (x.requires_grad_(), w.requires_grad_(), b.requires_grad_() if b is not None else None, *rest))


def test_opcheck_conv2d_takes_a_linear_weight():
    """A 1x1 conv's weight as nn.Linear holds it, (O, I): the output and gradients are the 4-D
    weight's, the weight's gradient keeps the 2-D shape."""
    x, w, b, *rest = _args(CONV_CASES[2], channels_last=True)
    w2 = w.view(w.shape[0], w.shape[1]).clone()
    torch.testing.assert_close(torch.ops.gconvgen.conv2d(x, w2, b, *rest), _reference(x, w, b, *rest),
                               rtol=1e-4, atol=1e-4)
    torch.library.opcheck(torch.ops.gconvgen.conv2d.default, (x.requires_grad_(), w2.requires_grad_(), b, *rest))


def test_opcheck_channel_shuffle():
    x = torch.randn(1, 12, 5, 6)
    torch.library.opcheck(torch.ops.gconvgen.channel_shuffle.default, (x, 3))
    torch.library.opcheck(torch.ops.gconvgen.channel_shuffle.default, (x.requires_grad_(), 4))
    torch.testing.assert_close(torch.ops.gconvgen.channel_shuffle(x, 3), F.channel_shuffle(x, 3))


@pytest.mark.parametrize("case", [(1, 4, 5, 5, 8, 3, 1, 1, 1, 2, True, "relu", 2),
                                  (1, 4, 6, 6, 4, 3, 1, 2, 2, 4, True, "hardswish", 0),
                                  (1, 4, 7, 7, 6, 3, 2, 1, 1, 2, False, "relu6", 0),
                                  (1, 4, 5, 5, 4, 3, 1, 1, 1, 4, True, "silu", 0),
                                  (1, 4, 5, 5, 8, 1, 1, 0, 1, 1, True, "sigmoid", 0),
                                  (1, 4, 5, 5, 4, 3, 1, 1, 1, 2, True, "hardsigmoid", 0),
                                  (1, 4, 5, 5, 6, 1, 1, 0, 1, 1, True, "gelu", 0)])
def test_gradcheck_float64(case):
    # float64 runs on aten inside the op; the backward formula (epilogue by hand, input gradient as
    # a transposed group conv) is what is checked here.
    x, w, b, *rest = _args(case)
    inputs = (x.double().requires_grad_(), w.double().requires_grad_(),
              b.double().requires_grad_() if b is not None else None)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.ops.gconvgen.conv2d(x, w, b, *rest), inputs)


def test_gradcheck_channel_shuffle_float64():
    s = torch.randn(1, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.ops.gconvgen.channel_shuffle(t, 3), (s,))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_gradients_match_torch_float32(case, channels_last):
    x, w, b, *rest = _args(case, channels_last)
    ours = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    theirs = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    torch.ops.gconvgen.conv2d(*ours, *rest).square().sum().backward()
    _reference(*theirs, *rest).square().sum().backward()
    for a, e in zip(ours, theirs):
        if a is not None:
            torch.testing.assert_close(a.grad, e.grad, rtol=1e-4, atol=1e-4)
    from gconvgen import torch_ops   # the gradients ran on our conv2d_wgrad (and conv2d_dgrad) kernels
    served = [(spec.op, spec.stride) for spec, kernel in torch_ops._calls.values()
              if kernel is not None and spec.op in ("conv2d_wgrad", "conv2d_dgrad")
              and spec.shape("output" if spec.op == "conv2d_dgrad" else "input") == tuple(x.shape)]
    ran = {op for op, stride in served if tuple(stride) == tuple(rest[0])}
    assert "conv2d_wgrad" in ran and ("conv2d_dgrad" in ran or rest[0] == [1, 1])


def test_compile_fullgraph_and_export():
    x, w, b, *rest = _args(CONV_CASES[0])

    def f(x):
        return torch.ops.gconvgen.channel_shuffle(torch.ops.gconvgen.conv2d(x, w, b, *rest) * 2, 2)

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))
    module = gnn.Conv2d(16, 16, 3, padding=1, groups=16, activation="relu6").eval()
    exported = torch.export.export(module, (x,))
    assert any("gconvgen" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), module(x))


def test_conv2d_module_loads_nn_conv2d_state_dict():
    ref = nn.Conv2d(24, 48, 1, groups=3)
    ours = gnn.Conv2d(24, 48, 1, groups=3)
    ours.load_state_dict(ref.state_dict())
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(2, 24, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    y = ours(x.requires_grad_())          # with autograd recording: through the registered op
    y.sum().backward()
    assert x.grad is not None and ours.weight.grad is not None


def test_channel_shuffle_module():
    x = torch.randn(1, 12, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(gnn.ChannelShuffle(3)(x), nn.ChannelShuffle(3)(x))


def test_errors_are_torchs():
    x, w, b, *rest = _args(CONV_CASES[0])
    for bad_w in (torch.randn(16, 1, 15, 15), torch.randn(16, 2, 3, 3)):   # kernel larger than input; channels
        with pytest.raises(RuntimeError) as theirs:
            F.conv2d(x, bad_w, b, *rest[:4])
        with pytest.raises(RuntimeError) as ours:
            torch.ops.gconvgen.conv2d(x, bad_w, b, *rest)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(RuntimeError):
        torch.ops.gconvgen.channel_shuffle(torch.randn(1, 10, 2, 2), 3)
    out64 = torch.ops.gconvgen.conv2d(x.double(), w.double(), b.double(), *rest)   # other dtypes: torch's result
    torch.testing.assert_close(out64, _reference(x.double(), w.double(), b.double(), *rest))


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v1", "shufflenet_v2", "resnext50", "efficientnet_b0",
                                  "convnext_tiny"])
def test_convert_reference_model_matches_eager(name):
    model = models.create(name)
    converted = gconvgen.convert(model)
    size = {"resnext50": 96, "efficientnet_b0": 96, "convnext_tiny": 64}.get(name, 224)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected, got = model(x), converted(x)
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
    swapped = [m for m in converted.modules() if isinstance(m, (gnn.Conv2d, gnn.ChannelShuffle))]
    assert swapped, "nothing was converted"
    stem = next(m for m in converted.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(stem, gnn.Conv2d) and stem.in_channels == 3     # the image stem runs on our kernel too
    if name == "shufflenet_v2":   # hand-written view/transpose/view shuffles of a concatenation: one copy
        assert "concat_shuffle" in converted.code and ".transpose(" not in converted.code
    if name not in ("mobilenet_v2", "efficientnet_b0", "convnext_tiny"):   # their stems call F.max_pool2d: replaced through fx
        assert "gconvgen_max_pool_0" in converted.code and "max_pool2d(" not in converted.code
    if name == "shufflenet_v1":   # a shuffle right after a grouped 1x1 conv runs in that conv's store
        assert sum(isinstance(m, gnn.Conv2d) and m.shuffle > 1 for m in converted.modules()) == 15
        # the downsampling units' relu(cat(avg_pool(x), conv(...))): the relu in both parts' epilogues
        pools = [m for m in converted.modules() if isinstance(m, gnn.AvgPool2d)]
        assert len(pools) == 3 and all(p.activation == "relu" for p in pools) and "relu" not in converted.code
    if name == "efficientnet_b0":   # squeeze-and-excitation's modules called in turn: activations fused through fx
        gates = [m for m in converted.modules() if isinstance(m, gnn.Conv2d) and m.activation == "sigmoid"]
        assert len(gates) == 16 and "gate" not in converted.code and "activation" not in converted.code
    if name == "convnext_tiny":   # the MLPs' first Linear takes the GELU; the 2x2 downsampling convs are ours
        assert sum(isinstance(m, gnn.Linear) and m.activation == "gelu" for m in converted.modules()) == 18
        assert not any(type(m) is nn.Conv2d for m in converted.modules()) and "gelu" not in converted.code
    # every head's global pool runs on our kernel
    assert "adaptive_avg_pool2d(" not in converted.code
    assert any(isinstance(m, gnn.AdaptiveAvgPool2d) for m in converted.modules())
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in converted.modules()) < bns or bns == 0   # folded into the convs


def test_convert_runs_torch_on_one_thread_and_restores_it():
    model = gconvgen.convert(models.create("shufflenet_v2"))
    seen = []
    model.fc.register_forward_hook(lambda m, a, o: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 5, 64, 64))        # a failing forward restores the threads too
        assert seen == [1] and torch.get_num_threads() == 2
        untouched = gconvgen.convert(models.create("shufflenet_v2"), torch_threads=None)
        untouched.fc.register_forward_hook(lambda m, a, o: seen.append(torch.get_num_threads()))
        with torch.no_grad():
            untouched(torch.randn(1, 3, 64, 64))
        assert seen == [1, 2]
        copied = copy.deepcopy(model)   # GraphModule's deepcopy drops forward hooks: ours come back
        copied.fc.register_forward_hook(lambda m, a, o: seen.append(torch.get_num_threads()))
        with torch.no_grad():
            copied(torch.randn(1, 3, 64, 64))
        assert seen[2:] == [1, 1] and torch.get_num_threads() == 2   # fc's first hook was copied too
        again = copy.deepcopy(copy.deepcopy(copied))   # copies of copies: still one thread limit
        assert len(again._forward_pre_hooks) == 1 and len(again._deepcopy_hooks) == 1
    finally:
        torch.set_num_threads(before)


_probe_lib = torch.library.Library("gconvgen_test", "DEF")   # noqa: held for the process
_probe_lib.define("threads_probe(Tensor x) -> Tensor")
_probe_seen: list[int] = []


def _threads_probe(x):
    _probe_seen.append(torch.get_num_threads())   # what torch's own ops get at this point of the forward
    return x.clone()


_probe_lib.impl("threads_probe", _threads_probe, "CPU")
torch.library.register_fake("gconvgen_test::threads_probe", lambda x: torch.empty_like(x), lib=_probe_lib)


def test_gconvgen_compile_holds_torch_to_one_thread():
    """torch.compile traces convert's thread limit away; gconvgen.compile keeps it around the compiled
    call (and so around Inductor's compile, which bakes the thread count into its kernels), with
    fullgraph=True, and restores torch's setting after."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 16, 1)

        def forward(self, x):
            return self.pw(torch.ops.gconvgen_test.threads_probe(self.dw(x)) + 1)

    net = Net().eval()
    model = gconvgen.convert(net)
    x = torch.randn(1, 8, 10, 10)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled = gconvgen.compile(model, fullgraph=True)
        with torch.no_grad():
            expected = net(x)
            for _ in range(2):
                torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
                assert _probe_seen[-1] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_compiled_linear_keeps_its_packed_weight():
    """Inductor passes a view made inside the graph as a fresh alias each call: nn.Linear hands the op
    its own 2-D weight, so the packed copy is made once (ConvNeXt-T compiled had repacked its MLP
    weights every forward), and still follows an in-place update."""
    ref = nn.Linear(32, 48)
    ours = gnn.Linear.from_linear(ref, activation="gelu")
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(1, 5, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), F.gelu(ref(x)), rtol=1e-4, atol=1e-5)
        compiled(x)   # (compiling ran the op once on a copy of the weight)
        packed = len(gconvgen.torch_ops._packed)
        for _ in range(3):
            compiled(x)
        assert len(gconvgen.torch_ops._packed) == packed
        ref.weight.mul_(0.5)
        torch.testing.assert_close(compiled(x), F.gelu(ref(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["shufflenet_v2", "shufflenet_v1"])
def test_converted_model_saves_and_loads_whole(name, tmp_path):
    # torch.save of the whole model: fx's pickling re-traces the saved code on load (concat_shuffle
    # stays a call) and drops forward hooks; ours, and the attribute shortcuts, come back.
    model = gconvgen.convert(models.create(name))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    x = torch.randn(1, 3, 64, 64)
    seen = []
    probe = loaded.fc.register_forward_hook(lambda m, a, o: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    probe.remove()   # a lambda: it would not pickle
    assert loaded.__dict__["fc"] is loaded._modules["fc"]
    torch.save(copy.deepcopy(loaded), tmp_path / "again.pt")   # a copy of a loaded model saves too
    assert set(torch.load(tmp_path / "again.pt", weights_only=False).state_dict()) == set(model.state_dict())


def test_converted_submodule_shortcuts_follow_replacement():
    model = gconvgen.convert(models.create("mobilenet_v2"))
    keys = set(model.state_dict())
    assert model.__dict__["features"] is model._modules["features"]   # the forward's attribute walk
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.classifier = nn.Linear(1280, 3)        # nn.Module.__setattr__ drops the shortcut
        assert model(x).shape == (1, 3) and not torch.equal(before[:, :3], model(x))
    assert set(model.state_dict()) == keys


def test_layer_specs_and_bench_model(capsys):
    from gconvgen import cli
    specs = models.layer_specs("shufflenet_v2")
    classes = {s.op_class for s in specs}
    # no "shuffle": convert folds ShuffleNet v2's shuffles into their concatenation's copy
    assert classes == {"pointwise", "depthwise", "dense", "pool"} and len(specs) > len({s.key for s in specs})
    assert cli.main(["bench", "--model", "shufflenet_v2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("shufflenet_v2"))
    assert float(row.split()[-1]) < 1e-4      # converted output matches eager


def test_nhwc_weight_copies_never_go_stale():
    # NHWC kernels take an HWIO copy of the weight, cached per tensor: a new tensor at a reused
    # address, or the same tensor changed in place, must not see an old copy.
    x = torch.randn(1, 8, 6, 6).to(memory_format=torch.channels_last)
    for _ in range(10):
        w = torch.randn(8, 1, 3, 3)
        torch.testing.assert_close(torch.ops.gconvgen.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 8, "none", 0),
                                   F.conv2d(x, w, None, 1, 1, 1, 8), rtol=1e-4, atol=1e-5)
        w.mul_(-2)
        torch.testing.assert_close(torch.ops.gconvgen.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 8, "none", 0),
                                   F.conv2d(x, w, None, 1, 1, 1, 8), rtol=1e-4, atol=1e-5)


def test_module_fast_path_follows_attribute_changes():
    # The module keeps its last kernel; changing what selects the kernel must not reuse it.
    conv = gnn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(1, 8, 10, 10)
    with torch.no_grad():
        conv(x)
        conv(x)
        conv.activation = "relu"
        torch.testing.assert_close(conv(x), F.relu(F.conv2d(x, conv.weight, conv.bias, 1, 1, 1, 8)))
        conv.stride = (2, 2)
        torch.testing.assert_close(conv(x), F.relu(F.conv2d(x, conv.weight, conv.bias, 2, 1, 1, 8)))
        conv.weight.mul_(3)   # in place: the same kernel, the new values
        torch.testing.assert_close(conv(x), F.relu(F.conv2d(x, conv.weight, conv.bias, 2, 1, 1, 8)))
        x64 = x.double()       # another dtype: aten, not the float32 kernel
        torch.testing.assert_close(conv.double()(x64), F.relu(F.conv2d(x64, conv.weight, conv.bias, 2, 1, 1, 8)))


def test_bench_overhead(capsys):
    from gconvgen import cli
    assert cli.main(["bench", "--overhead"]) == 0
    rows = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"kernel", "module", "op", "torch"} and all(v > 0 for v in rows.values())


def test_ops_skip_the_second_dispatch_only_where_nothing_interposes():
    """Without autograd, an op's autograd kernel runs the implementation itself (one dispatch less,
    as compiled graphs call every op) unless a mode, a transform or a special tensor lies between."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from gconvgen.torch_ops import _plainly_dispatched
    x, w, b, *rest = _args(CONV_CASES[0])
    assert _plainly_dispatched((x, nn.Parameter(w), b, *rest))
    assert not _plainly_dispatched((torch._neg_view(x), w))
    with FakeTensorMode() as fake:
        assert not _plainly_dispatched((fake.from_tensor(x), w))

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        with Seen() as seen:   # the mode still sees the op
            out = torch.ops.gconvgen.conv2d(x, w, b, *rest)
        assert "gconvgen.conv2d.default" in seen.ops
        torch.testing.assert_close(out, _reference(x, w, b, *rest), rtol=1e-4, atol=1e-4)
        batched = torch.stack([x, 2 * x])   # vmap: the op runs once an image
        got = torch.vmap(lambda t: torch.ops.gconvgen.conv2d(t, w, b, *rest))(batched)
        torch.testing.assert_close(got, torch.stack([_reference(t, w, b, *rest) for t in batched]),
                                   rtol=1e-4, atol=1e-4)


def test_outputs_keep_the_inputs_dtype_under_another_default_dtype():
    """The cached fast paths make their outputs in the input's dtype, not torch's default."""
    x, w, b, *rest = _args(CONV_CASES[0])
    conv = gnn.Conv2d(16, 16, 3, padding=1, groups=16, activation="relu6")
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        conv(x)   # the module's fast path is set up on its first call
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            for out in (conv(x), torch.ops.gconvgen.conv2d(x, w, b, *rest)):
                assert out.dtype == torch.float32
                torch.testing.assert_close(out, _reference(x, w, b, *rest), rtol=1e-4, atol=1e-4)
        finally:
            torch.set_default_dtype(default)


@pytest.mark.parametrize("channels_last", [False, True])
def test_views_off_the_alignment_boundary(channels_last):
    # chunk/narrow give views that start mid-allocation; the kernels' aligned vector loads would
    # fault on them, so they run on an aligned copy.
    x = torch.randn(24 * 64 + 1)[1:].view(1, 24, 8, 8)        # one float in: 4 bytes off
    if channels_last:
        x = torch.randn(1, 8, 8, 24 * 64 + 1).view(-1)[1:1 + 24 * 64].view(1, 8, 8, 24).permute(0, 3, 1, 2)
    assert x.data_ptr() % 64
    w, b = torch.randn(48, 8, 1, 1), torch.randn(48)
    conv = gnn.Conv2d(24, 48, 1, groups=3, activation="relu", shuffle=3)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        expected = F.channel_shuffle(F.relu(F.conv2d(x, w, b, groups=3)), 3)
        for _ in range(2):   # the second call takes the module's fast path
            torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.ops.gconvgen.conv2d(x, w, b, [1, 1], [0, 0], [1, 1], 3, "relu", 3), expected,
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.ops.gconvgen.channel_shuffle(x, 4), F.channel_shuffle(x, 4))


def test_opcheck_conv2d_input_grad():
    g, w = torch.randn(2, 12, 4, 4), torch.randn(12, 2, 3, 3)
    args = (g, w, [2, 8, 10, 9], [2, 3], [1, 2], [2, 1], 4)
    torch.library.opcheck(torch.ops.gconvgen.conv2d_input_grad.default, args)
    torch.testing.assert_close(torch.ops.gconvgen.conv2d_input_grad(*args),
                               torch.nn.grad.conv2d_input([2, 8, 10, 9], w, g, [2, 3], [1, 2], [2, 1], 4),
                               rtol=1e-4, atol=1e-4)


def test_opcheck_conv2d_weight_grad():
    x, g = torch.randn(2, 6, 9, 7), torch.randn(2, 9, 5, 7)
    args = (x, g, [9, 2, 3, 3], [2, 1], [1, 1], [1, 1], 3)
    torch.library.opcheck(torch.ops.gconvgen.conv2d_weight_grad.default, args)
    torch.testing.assert_close(torch.ops.gconvgen.conv2d_weight_grad(*args),
                               torch.nn.grad.conv2d_weight(x, [9, 2, 3, 3], g, [2, 1], [1, 1], [1, 1], 3),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool_op_and_modules(channels_last):
    x = torch.randn(2, 6, 11, 9)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    for activation in ("none", "relu6"):
        args = ([3, 3], [2, 2], [1, 1], activation)
        torch.library.opcheck(torch.ops.gconvgen.avg_pool2d.default, (x, *args))
        expected = F.avg_pool2d(x, 3, 2, 1)
        expected = F.relu6(expected) if activation == "relu6" else expected
        torch.testing.assert_close(torch.ops.gconvgen.avg_pool2d(x, *args), expected)
    pool = gnn.AvgPool2d(3, 2, 1, activation="relu")
    with torch.no_grad():
        y = pool(x)
    torch.testing.assert_close(y, F.relu(F.avg_pool2d(x, 3, 2, 1)))
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    pool(ours).square().sum().backward()
    F.relu(F.avg_pool2d(theirs, 3, 2, 1)).square().sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    torch.autograd.gradcheck(lambda t: torch.ops.gconvgen.avg_pool2d(t, [3, 2], [2, 1], [1, 1], "hardswish"),
                             torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True))
    # settings our kernel does not take run torch's (ceil mode, padding left out of the mean)
    for other in (gnn.AvgPool2d(3, 2, 1, ceil_mode=True), gnn.AvgPool2d(3, 2, 1, count_include_pad=False)):
        with torch.no_grad():
            torch.testing.assert_close(other(x), nn.AvgPool2d(3, 2, 1, other.ceil_mode, other.count_include_pad)(x))
    head = gnn.AdaptiveAvgPool2d(1)
    with torch.no_grad():
        torch.testing.assert_close(head(x), F.adaptive_avg_pool2d(x, 1))
        torch.testing.assert_close(gnn.AdaptiveAvgPool2d((3, 2))(x), F.adaptive_avg_pool2d(x, (3, 2)))
    with pytest.raises(RuntimeError) as ours_error:      # padding over half the window: torch's own error
        torch.ops.gconvgen.avg_pool2d(x, [3, 3], [1, 1], [2, 2])
    with pytest.raises(RuntimeError) as torch_error:
        F.avg_pool2d(x, 3, 1, 2)
    assert str(ours_error.value) == str(torch_error.value)


def test_convert_swaps_average_pool_modules():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.AvgPool2d(3, 2, 1), nn.Conv2d(16, 16, 1),
                          nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    converted = gconvgen.convert(model, trace=False)
    kinds = [type(m) for m in converted]
    assert kinds[1] is gnn.AvgPool2d and kinds[3] is gnn.AvgPool2d and kinds[4] is gnn.AdaptiveAvgPool2d
    x = torch.randn(2, 3, 33, 31)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-5)   # ceil mode: torch's


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_op_and_module(channels_last):
    x = torch.randn(2, 6, 11, 9)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    args = ([3, 3], [2, 2], [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.gconvgen.max_pool2d.default, (x, *args))
    torch.testing.assert_close(torch.ops.gconvgen.max_pool2d(x, *args), F.max_pool2d(x, 3, 2, 1))
    pool = gnn.MaxPool2d(3, 2, 1)
    with torch.no_grad():
        y = pool(x)
    torch.testing.assert_close(y, F.max_pool2d(x, 3, 2, 1))
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    pool(ours).square().sum().backward()
    F.max_pool2d(theirs, 3, 2, 1).square().sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    with pytest.raises(RuntimeError) as ours_error:      # padding over half the window: torch's own error
        torch.ops.gconvgen.max_pool2d(x, [3, 3], [1, 1], [2, 2], [1, 1])
    with pytest.raises(RuntimeError) as torch_error:
        F.max_pool2d(x, 3, 1, 2)
    assert str(ours_error.value) == str(torch_error.value)


def test_pointwise_on_small_planes_takes_the_packed_weight_kernel():
    # 7x7 planes: the op calls the kernel that takes a packed copy of the weight (HWIO blocked by the
    # channel vector, made once per weight tensor and version); the result is torch's, also after the
    # weight changes in place.
    x, w, b = torch.randn(1, 64, 7, 7), torch.randn(96, 64, 1, 1) / 8, torch.randn(96)
    call = lambda: torch.ops.gconvgen.conv2d(x, w, b, [1, 1], [0, 0], [1, 1], 1, "relu", 0)  # noqa: E731
    torch.testing.assert_close(call(), F.relu(F.conv2d(x, w, b)), rtol=1e-4, atol=1e-5)
    spec, kernel = gconvgen.torch_ops.last_call()
    assert spec.weight_layout.startswith("HWIO") and spec.weight_block and kernel is not None
    w.mul_(-1)
    torch.testing.assert_close(call(), F.relu(F.conv2d(x, w, b)), rtol=1e-4, atol=1e-5)
    conv = gnn.Conv2d(64, 96, 1, activation="relu")
    with torch.no_grad():
        for _ in range(3):   # the module's fast path too
            torch.testing.assert_close(conv(x), F.relu(F.conv2d(x, conv.weight, conv.bias)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_conv_on_small_planes_takes_the_packed_weight_kernel(channels_last):
    # NCHW: GroupConvPackedNCHW's HWIO<t>; channels_last: the NHWC tile's, blocked by its channels
    x, w, b = torch.randn(1, 64, 7, 7), torch.randn(64, 16, 3, 3) / 8, torch.randn(64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    call = lambda: torch.ops.gconvgen.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 4, "none", 0)  # noqa: E731
    torch.testing.assert_close(call(), F.conv2d(x, w, b, 1, 1, 1, 4), rtol=1e-4, atol=1e-5)
    spec, kernel = gconvgen.torch_ops.last_call()
    assert spec.weight_layout.startswith("HWIO") and spec.weight_block and spec.groups == 4 and kernel is not None
    w.mul_(-1)
    torch.testing.assert_close(call(), F.conv2d(x, w, b, 1, 1, 1, 4), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_pointwise_runs_on_the_subsampled_input(channels_last):
    x, w, b = torch.randn(1, 64, 29, 28), torch.randn(128, 64, 1, 1) / 8, torch.randn(128)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.ops.gconvgen.conv2d(x, w, b, [2, 2], [0, 0], [1, 1], 1, "relu", 0)
    torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, 2)), rtol=1e-4, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    spec, _ = gconvgen.torch_ops.last_call()
    assert spec.stride == (1, 1) and (spec.height, spec.width) == (15, 14)   # the stride-1 kernel
    conv = gnn.Conv2d(64, 128, 1, 2)
    with torch.no_grad():
        for _ in range(3):   # the module never caches the subsampled call's kernel for the raw input
            torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, 2), rtol=1e-4, atol=1e-5)
    torch.library.opcheck(torch.ops.gconvgen.conv2d.default, (x, w, b, [2, 2], [0, 0], [1, 1], 1, "relu", 0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_convert_takes_patchify_convs(channels_last):
    """A dense conv whose kernel is its stride (ConvNeXt's 2x2 downsampling, patch embeddings) is
    swapped too: channels-last input (after ConvNeXt's LayerNorm) runs the NHWC rule."""
    model = nn.Sequential(nn.Conv2d(16, 32, 2, stride=2), nn.Conv2d(32, 32, 3, stride=3), nn.Conv2d(32, 32, 3, padding=1))
    ours = gconvgen.convert(model, trace=False)
    assert [type(m) for m in ours] == [gnn.Conv2d, gnn.Conv2d, nn.Conv2d]   # a padded dense 3x3 stays torch's
    x = torch.randn(2, 16, 13, 12)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):   # and again through the modules' cached kernels
            torch.testing.assert_close(ours[:2](x), model[:2](x), rtol=1e-4, atol=1e-5)
        spec, kernel = gconvgen.torch_ops.last_call()
        assert kernel is not None and spec.kernel == (3, 3) and spec.layout == ("NHWC" if channels_last else "NCHW")


def test_linear_module_matches_nn_linear():
    ref = nn.Linear(64, 40)
    ours = gnn.Linear.from_linear(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        spec, kernel = gconvgen.torch_ops.last_call()
        assert kernel is not None and spec.kernel == (1, 1) and (spec.height, spec.width) == (1, 1)
        ref.weight.mul_(0.5)     # shared and changed in place: the kernel's weight copy follows
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        big = torch.randn(32, 64)   # past MAX_BATCH: torch's own
        torch.testing.assert_close(ours(big), ref(big))
        # features along the last dim of 3-D and 4-D inputs (ConvNeXt's MLP, token sequences): an
        # NHWC 1x1 conv over the channels-last image they are
        for shape in ((4, 8, 64), (2, 5, 7, 64)):
            x3 = torch.randn(*shape)
            torch.testing.assert_close(ours(x3), ref(x3), rtol=1e-4, atol=1e-5)
            spec, kernel = gconvgen.torch_ops.last_call()
            assert kernel is not None and spec.layout == "NHWC" and spec.batch * spec.height * spec.width == x3.numel() // 64
        strided = torch.randn(8, 64, 4).transpose(1, 2)   # not contiguous: torch's own
        torch.testing.assert_close(ours(strided), ref(strided))
        fused = gnn.Linear.from_linear(ref, activation="gelu")   # as convert folds a GELU: every path applies it
        for x_ in (x, big, torch.randn(2, 5, 7, 64), strided):
            torch.testing.assert_close(fused(x_), F.gelu(ref(x_)), rtol=1e-4, atol=1e-5)
        assert "activation=gelu" in repr(fused)
    fresh = gnn.Linear(64, 40)
    fresh.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref(x), rtol=1e-4, atol=1e-5)
    for x in (x, torch.randn(2, 5, 7, 64)):
        xg = x.clone().requires_grad_()
        ours(xg).square().sum().backward()        # through the op's autograd
        xr = x.clone().requires_grad_()
        ref(xr).square().sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-5)


def test_convert_drops_identity_calls_and_swaps_the_classifier():
    model = models.create("shufflenet_v2")
    ours = gconvgen.convert(model)
    called = {n.target for n in ours.graph.nodes if n.op == "call_module"}
    assert not any(isinstance(ours.get_submodule(t), nn.Identity) for t in called)
    assert isinstance(ours.fc, gnn.Linear)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), rtol=1e-4, atol=1e-4)


def test_convert_fuses_activations_a_forward_calls():
    """A conv whose output only an activation reads takes it into its epilogue, whichever way the
    forward writes it; a conv that also feeds something else, or that runs twice, keeps its own."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 16, 1)
            self.se = nn.Conv2d(16, 16, 1)
            self.shared = nn.Conv2d(16, 16, 1)
            self.act = nn.Hardswish()

        def forward(self, x):
            y = F.silu(self.dw(x))
            y = self.act(self.pw(y))
            gate = self.se(y).sigmoid()
            z = self.shared(y)
            return F.hardsigmoid(self.shared(gate * y)) + z.relu() + z

    model = Net().eval()
    ours = gconvgen.convert(model)
    assert (ours.dw.activation, ours.pw.activation, ours.se.activation) == ("silu", "hardswish", "sigmoid")
    assert ours.shared.activation == "none"
    called = [n.target for n in ours.graph.nodes if n.op in ("call_function", "call_method")]
    assert F.silu not in called and "sigmoid" not in called and F.hardsigmoid in called and "relu" in called
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), rtol=1e-4, atol=1e-4)


def test_convert_fuses_gelu_into_a_channels_last_mlp():
    """ConvNeXt's block (torchvision's CNBlock): a depthwise 7x7, then on the channels-last features
    LayerNorm -> Linear -> GELU -> Linear. The Linears run our NHWC 1x1 kernels, the first with the
    GELU in its epilogue, whether a Sequential holds the GELU or the forward calls F.gelu; GELU's tanh
    form stays torch's."""
    class Block(nn.Module):
        def __init__(self, functional: bool, approximate: str = "none"):
            super().__init__()
            self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
            self.norm = nn.LayerNorm(16)
            self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(approximate), nn.Linear(64, 16))
            self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)
            self.functional = functional

        def forward(self, x):
            y = self.norm(self.dw(x).permute(0, 2, 3, 1))
            y = self.down(F.gelu(self.up(y))) if self.functional else self.mlp(y)
            return x + y.permute(0, 3, 1, 2)

    x = torch.randn(2, 16, 9, 9)
    for functional, approximate in ((False, "none"), (True, "none"), (False, "tanh")):
        model = Block(functional, approximate).eval()
        ours = gconvgen.convert(model)
        first = ours.get_submodule("up" if functional else "mlp.0")
        assert isinstance(first, gnn.Linear) and first.activation == ("none" if approximate == "tanh" else "gelu")
        with torch.no_grad():
            torch.testing.assert_close(ours(x), model(x), rtol=1e-4, atol=1e-4)
            spec, kernel = gconvgen.torch_ops.last_call()   # the second Linear's
            assert kernel is not None and spec.layout == "NHWC" and (spec.in_channels, spec.out_channels) == (64, 16)


@pytest.mark.parametrize("shapes,groups", [([(1, 6, 5, 4)] * 2, 2), ([(2, 4, 3, 3)] * 3, 3),
                                           ([(1, 6, 5, 4), (1, 2, 5, 4)], 2), ([(1, 6, 5, 4)] * 2, 4)])
def test_concat_shuffle_is_a_shuffle_of_the_concatenation(shapes, groups):
    from gconvgen.conversion import concat_shuffle
    parts = [torch.randn(s) for s in shapes]
    torch.testing.assert_close(concat_shuffle(parts, groups), F.channel_shuffle(torch.cat(parts, 1), groups))


def test_convert_fuses_the_shufflenet_v2_concat_and_shuffle():
    from gconvgen.conversion import concat_shuffle
    ours = gconvgen.convert(models.create("shufflenet_v2"))
    targets = [n.target for n in ours.graph.nodes if n.op == "call_function"]
    assert targets.count(concat_shuffle) == 16 and torch.cat not in targets


def test_convert_replaces_a_hand_written_shuffle():
    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(12, 12, 3, padding=1, groups=12)

        def forward(self, x):
            y = self.conv(x) + x     # not right after a conv, nor of a concatenation: a module of its own
            return models.channel_shuffle(y, 3)

    model = Unit().eval()
    ours = gconvgen.convert(model)
    assert any(isinstance(m, gnn.ChannelShuffle) for m in ours.modules()) and ".transpose(" not in ours.code
    x = torch.randn(1, 12, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_op_with_residual(channels_last):
    x, w, b, *args = _args(CONV_CASES[2], channels_last)      # pointwise 16 -> 32 at 8x8
    r = torch.randn(1, 32, 8, 8)
    if channels_last:
        r = r.to(memory_format=torch.channels_last)
    got = torch.ops.gconvgen.conv2d(x, w, b, *args, r)
    torch.testing.assert_close(got, F.relu(F.conv2d(x, w, b) + r), rtol=1e-4, atol=1e-5)
    assert gconvgen.torch_ops.last_call()[0].has_residual
    torch.library.opcheck(torch.ops.gconvgen.conv2d.default, (x, w, b, *args, r))
    bad = torch.randn(1, 32, 4, 4)     # a broadcasting add is torch's business: aten, same result
    torch.testing.assert_close(torch.ops.gconvgen.conv2d(x, w, b, *args, bad[:, :, :1, :1]),
                               F.relu(F.conv2d(x, w, b) + bad[:, :, :1, :1]), rtol=1e-4, atol=1e-5)


def test_gradcheck_residual_float64():
    x, w, b, *args = _args(CONV_CASES[0])
    r = torch.randn(1, 16, 10, 10, dtype=torch.float64, requires_grad=True)
    inputs = (x.double().requires_grad_(), w.double().requires_grad_(), b.double().requires_grad_())
    assert torch.autograd.gradcheck(lambda x, w, b, r: torch.ops.gconvgen.conv2d(x, w, b, *args, r), (*inputs, r))


@pytest.mark.parametrize("name,fused", [("mobilenet_v2", 10), ("shufflenet_v1", 13), ("resnext50", 16),
                                        ("efficientnet_b0", 9)])
def test_convert_fuses_skip_connections(name, fused):
    model = models.create(name)
    ours = gconvgen.convert(model)
    with_residual = [n for n in ours.graph.nodes if n.op == "call_module" and "residual" in n.kwargs]
    assert len(with_residual) == fused
    assert not any(n.op == "call_function" and n.target is torch.relu for n in ours.graph.nodes) or name == "shufflenet_v1"
    size = 96 if name in ("resnext50", "efficientnet_b0") else 224
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        for _ in range(2):   # the modules' fast path too
            got = ours(x)
            assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_second_order_gradient_through_a_gradient_op_raises():
    """The gradient ops have no autograd formula: backward through them says so, rather than torch's
    fallback warning and gradients silently left at zero."""
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    w = torch.randn(8, 2, 3, 3, requires_grad=True)
    y = torch.ops.gconvgen.conv2d(x, w, None, [2, 2], [1, 1], [1, 1], 2, "none", 0)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="conv2d_input_grad, which has no autograd formula"):
        gx.square().sum().backward()


def test_tf32_follows_torchs_setting():
    """The ops run float32 convs on a GPU in TF32 exactly while torch's cuDNN convs may: its default;
    not after the legacy `cudnn.allow_tf32 = False` (within torch's flags() context here), nor with
    the conv's precision set to "ieee"; "none" at every level means no."""
    from gconvgen.torch_ops import torch_allows_tf32
    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    try:
        assert torch_allows_tf32()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            assert not torch_allows_tf32()
        assert torch_allows_tf32()
        conv.fp32_precision = "ieee"
        assert not torch_allows_tf32()
        conv.fp32_precision = "none"   # (deferring to cuDNN's, then torch's: both "none" by default)
        assert torch.backends.cudnn.fp32_precision == "none" and not torch_allows_tf32()
        torch.backends.cudnn.fp32_precision = "tf32"
        assert torch_allows_tf32()
    finally:
        torch.backends.cudnn.fp32_precision = "none"
        conv.fp32_precision = saved
    assert torch_allows_tf32()
