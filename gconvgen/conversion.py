"""`gconvgen.convert(model)`: swap a model's grouped, depthwise and pointwise convs and its channel
shuffles for gconvgen's, folding BatchNorm and the following activation into the conv in eval mode.

- `nn.Conv2d` with groups > 1, a 1x1 kernel, an image stem (at most 4 input channels), or a patchify
  kernel (kernel = stride, unpadded) -> `gconvgen.nn.Conv2d` (same parameters).
- In an `nn.Sequential`, conv -> BatchNorm2d (eval mode) -> an activation (ReLU, ReLU6, Hardswish,
  SiLU, Sigmoid, Hardsigmoid, exact GELU) becomes one fused `ConvBNAct`, and linear -> activation one
  `gconvgen.nn.Linear` with that activation; the BatchNorm and the activation become `nn.Identity`.
- `nn.ChannelShuffle` -> `gconvgen.nn.ChannelShuffle`; `nn.MaxPool2d` (and, through fx, `F.max_pool2d`
  calls), floor mode without indices -> `gconvgen.nn.MaxPool2d`; `nn.AvgPool2d` and `F.avg_pool2d` ->
  `gconvgen.nn.AvgPool2d`; `nn.AdaptiveAvgPool2d` and `F.adaptive_avg_pool2d` ->
  `gconvgen.nn.AdaptiveAvgPool2d` (the global pool on our kernel); `nn.Linear` -> `gconvgen.nn.Linear`
  (the pointwise kernel on a few feature vectors, a classifier at batch 1, and on channels-last
  features, ConvNeXt's MLP).
- Where the model traces with torch.fx: the view -> transpose(1, 2) -> view shuffle that ShuffleNets
  write by hand becomes a `gconvgen.nn.ChannelShuffle`; a shuffle right after a conv (through Identity
  modules only) becomes that conv's output order, fused into its store; a shuffle of a channel
  concatenation becomes one copy (`concat_shuffle`); a conv's output added to a skip connection
  (then a ReLU) becomes the conv with that residual (and ReLU) in its epilogue; a conv or Linear
  whose output only an activation reads (a module, `F.silu`, `torch.sigmoid`, `F.gelu`, ...) takes it;
  a ReLU of a concatenation of convs and average pools goes into their epilogues; the Identity calls go.
  The result is a GraphModule. Where the model does not trace, the module swaps above still apply.
"""
from __future__ import annotations

import copy
import functools
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .nn import AdaptiveAvgPool2d, AvgPool2d, ChannelShuffle, Conv2d, ConvBNAct, Linear, MaxPool2d

_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
                nn.Hardsigmoid: "hardsigmoid", nn.GELU: "gelu"}


def _module_activation(module: nn.Module) -> str | None:
    """The epilogue activation an activation module computes, or None (GELU's tanh form is not ours)."""
    if type(module) is nn.GELU and module.approximate != "none":
        return None
    return _ACTIVATIONS.get(type(module))


def eligible(conv: nn.Module) -> bool:
    """A conv gconvgen serves: grouped/depthwise, pointwise (1x1), an image stem (a dense conv of at
    most 4 input channels), or a patchify conv (kernel = stride, unpadded: ConvNeXt's downsampling);
    zero padding, 2D. Stems and patchify convs are taken because inside a converted model torch's own
    ops run on one thread (see convert): a stem with its BatchNorm and activation folded in runs
    1.7-2.2x faster on our kernel then (3->32 3x3 s2 at 224: 430 vs 730 µs here), and ConvNeXt's
    downsampling, channels-last after its LayerNorm, 1.1-1.6 ms against 2.6-4.3 (NCHW input 2.1-2.3)."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    patchify = tuple(conv.kernel_size) == tuple(conv.stride) and conv.stride[0] > 1 and not any(conv.padding)
    return conv.groups > 1 or tuple(conv.kernel_size) == (1, 1) or conv.in_channels <= 4 or patchify


def convert(model: nn.Module, inplace: bool = False, trace: bool = True, torch_threads: int | None = 1) -> nn.Module:
    """The model with gconvgen's kernels; outputs match the original's (within float rounding).

    torch_threads: the threads torch's own ops (the layers gconvgen does not serve: dense convs,
    adds, pooling, the classifier) use while the converted model runs eagerly; None leaves torch's
    setting alone. One is the default because torch's OpenMP workers spin after each op and TVM's
    pool spins after each kernel: when the two alternate on few cores each steals the other's cores,
    which cost up to 3x on whole models on 2 cores (see README, "Threads"). torch.compile traces
    that limit away: compile a converted model with gconvgen.compile, which keeps it.
    """
    if not inplace:
        model = copy.deepcopy(model)
    _swap(model)
    if trace:
        model = _trace_shuffles(model)
    _prepare_eager(model, torch_threads)
    if isinstance(model, torch.fx.GraphModule):
        _keep_eager_setup(model, torch_threads)
    return model


def compile(model: nn.Module, torch_threads: int | None = 1, **options) -> nn.Module:
    """torch.compile(model, **options) for a converted model, with torch held to torch_threads while
    the compiled model compiles and runs, as convert does for eager calls. Inside torch.compile the
    converted model's own thread limit is traced away, and Inductor bakes torch's thread count into
    its kernels when it compiles them: on 2 cores their OpenMP workers, spinning after each kernel,
    took a core from ours: a compiled ConvNeXt-T ran 285 ms, 127 through this, 123 eagerly (README,
    "Threads"). The limit lives on the compiled wrapper, which runs outside the compiled code, so
    fullgraph=True and the rest of torch.compile's options work as they do there."""
    compiled = torch.compile(model, **options)
    if torch_threads is not None:
        _limit_torch_threads(compiled, torch_threads)
    return compiled


def _keep_eager_setup(gm: torch.fx.GraphModule, torch_threads: int | None) -> None:
    """GraphModule's deepcopy and pickling rebuild the module and drop forward hooks and the attribute
    shortcuts (without the thread limit a copy ran ShuffleNet v2 4x slower here): both re-apply them.
    A copy keeps the deepcopy hooks, this one included, so the hook is registered once."""
    _portable(gm, torch_threads)
    gm._register_deepcopy_hook(functools.partial(_copied, torch_threads=torch_threads))


def _portable(gm: torch.fx.GraphModule, torch_threads: int | None) -> None:
    """GraphModule makes a class per instance (a copy gets a new one): the pickling lives on it."""
    cls = type(gm)
    cls.gconvgen_torch_threads = torch_threads
    cls.__reduce__ = _reduce_converted


def _copied(gm: torch.fx.GraphModule, torch_threads: int | None) -> None:
    _prepare_eager(gm, torch_threads)
    _portable(gm, torch_threads)


def _reduce_converted(gm: torch.fx.GraphModule) -> tuple:
    """torch.save of a converted model: GraphModule's own pickling (its generated code and state),
    with the live thread-limit hooks left out; loading makes them anew."""
    load, (body, import_block) = torch.fx.GraphModule.__reduce__(gm)
    body = {k: (type(v)() if k in _EAGER_HOOKS else v) for k, v in body.items()}
    return _load_converted, (load, body, import_block, type(gm).gconvgen_torch_threads)


_EAGER_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_forward_hooks_always_called", "_deepcopy_hooks")


def _load_converted(load, body: dict, import_block: str, torch_threads: int | None) -> torch.fx.GraphModule:
    gm = load(body, import_block)
    _prepare_eager(gm, torch_threads)
    _keep_eager_setup(gm, torch_threads)
    return gm


def _prepare_eager(model: nn.Module, torch_threads: int | None) -> None:
    if torch_threads is not None:
        _limit_torch_threads(model, torch_threads)
    if isinstance(model, torch.fx.GraphModule):
        _shortcut_submodules(model)


def _shortcut_submodules(gm: torch.fx.GraphModule) -> None:
    """Each submodule also as a plain instance attribute of its parent, so the generated forward's
    walk down `getattr(getattr(self.features, "2").conv, "0")...` is a dict hit per step instead of
    nn.Module.__getattr__ (about 5 µs a layer, 0.3 ms of MobileNetV2's forward). The modules stay
    registered as they were (state_dict, hooks); nn.Module.__setattr__ drops such a shortcut when a
    submodule is replaced."""
    for module in gm.modules():
        for name, child in module._modules.items():
            if child is not None:
                module.__dict__[name] = child


def _limit_torch_threads(model: nn.Module, threads: int) -> None:
    """The whole forward, stem included: after a parallel region libgomp's workers spin for about
    300k pause instructions (milliseconds), so two threads for the stem slow every kernel after it."""
    limit = _TorchThreads(threads)
    model.register_forward_pre_hook(limit.enter)
    model.register_forward_hook(limit.exit, always_call=True)


class _TorchThreads:
    """The hooks of _limit_torch_threads, as an object so that a model holding them pickles."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.saved: list[int] = []

    def enter(self, module, args) -> None:
        if not torch.compiler.is_compiling():
            self.saved.append(torch.get_num_threads())
            torch.set_num_threads(min(self.threads, self.saved[-1]))

    def exit(self, module, args, output) -> None:
        if self.saved and not torch.compiler.is_compiling():
            torch.set_num_threads(self.saved.pop())


def _swap(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        _fuse_sequence(module)
    for name, child in module.named_children():
        if eligible(child):
            setattr(module, name, Conv2d.from_conv(child))
        elif type(child) is nn.ChannelShuffle:
            setattr(module, name, ChannelShuffle(child.groups))
        elif type(child) is nn.MaxPool2d and not (child.ceil_mode or child.return_indices):
            setattr(module, name, MaxPool2d.from_pool(child))
        elif type(child) is nn.AvgPool2d:
            setattr(module, name, AvgPool2d.from_pool(child))
        elif type(child) is nn.AdaptiveAvgPool2d:
            setattr(module, name, AdaptiveAvgPool2d(child.output_size))
        elif type(child) is nn.Linear:
            setattr(module, name, Linear.from_linear(child))
        else:
            _swap(child)


def _fuse_sequence(seq: nn.Sequential) -> None:
    """conv -> [bn] -> [activation] runs inside one kernel, and so does linear -> activation."""
    names = list(seq._modules)
    for i, name in enumerate(names):
        conv = seq._modules[name]
        if type(conv) is nn.Linear and i + 1 < len(names):
            act = _module_activation(seq._modules[names[i + 1]])
            if act is not None:
                seq._modules[name] = Linear.from_linear(conv, activation=act)
                seq._modules[names[i + 1]] = nn.Identity()
            continue
        if not eligible(conv):
            continue
        nxt = [seq._modules[n] for n in names[i + 1:i + 3]]
        bn = nxt[0] if nxt and type(nxt[0]) is nn.BatchNorm2d and not nxt[0].training else None
        after = nxt[1 if bn is not None else 0] if len(nxt) > (1 if bn is not None else 0) else None
        act = _module_activation(after) if after is not None else None
        if bn is None and act is None:
            continue
        if bn is not None:
            fused = ConvBNAct.fuse(conv, bn, act or "none")
            seq._modules[names[i + 1]] = nn.Identity()
        else:
            fused = Conv2d.from_conv(conv, activation=act)
        if act is not None:
            seq._modules[names[i + (2 if bn is not None else 1)]] = nn.Identity()
        seq._modules[name] = fused


def _trace_shuffles(model: nn.Module) -> nn.Module:
    try:
        graph = _Tracer().trace(model)
        gm = torch.fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:  # noqa: BLE001 - a model fx cannot trace keeps its module swaps
        warnings.warn(f"gconvgen.convert: torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: "
                      f"{str(e)[:120]}); hand-written channel shuffles stay as they are", stacklevel=3)
        return model
    replaced = _drop_identities(gm) + _replace_shuffles(gm) + _replace_max_pools(gm) + _replace_avg_pools(gm)
    gm.graph.eliminate_dead_code()   # the replaced nodes, which still read what the fusions below need alone
    fused = (_fuse_concat_shuffles(gm) + _fuse_shuffles_into_convs(gm) + _fuse_residual_adds(gm)
             + _fuse_relu_into_concat(gm) + _fuse_activations(gm))
    if not (replaced or fused):
        return model
    gm.graph.eliminate_dead_code()
    for node in gm.graph.nodes:
        if isinstance(node.type, str):
            # An annotation left a string by `from __future__ import annotations` ('torch.Tensor')
            # becomes a string global of the generated code, which torch.save's import block cannot
            # name: pickling the converted model failed. The annotation documents nothing here.
            node.type = None
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name in [n for n in gm._modules if n.startswith("gconvgen_") and n not in called]:
        delattr(gm, name)   # shuffles that a fusion absorbed (the model's own modules all stay)
    gm.recompile()
    return gm


class _Tracer(torch.fx.Tracer):
    """Keeps gconvgen's modules whole, so their eager fast path survives tracing, and the functions
    convert puts in the graph (torch.load traces the saved code again with this tracer)."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=(concat_shuffle,))

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (Conv2d, ChannelShuffle, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Linear))
                or super().is_leaf_module(m, qualname))


def _drop_identities(gm: torch.fx.GraphModule) -> int:
    """Calls of nn.Identity (the BatchNorms and activations folded into convs) go from the graph: each
    was a module call and a walk down the attribute path, about 5 us, a hundred times in ShuffleNet."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Identity) and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            count += 1
    return count


def _shuffle_groups(gm: torch.fx.GraphModule, node) -> int | None:
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ChannelShuffle):
        return gm.get_submodule(node.target).groups
    if node.op == "call_function" and node.target is torch.ops.gconvgen.channel_shuffle.default:
        return node.args[1] if isinstance(node.args[1], int) else None
    return None


def _module_calls(gm: torch.fx.GraphModule) -> dict[str, int]:
    """How often the graph calls each module: a fusion may change a module only when it runs once."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _fuse_shuffles_into_convs(gm: torch.fx.GraphModule) -> int:
    """conv -> (Identity)* -> shuffle, where nothing else reads the conv's output and the conv module
    runs once: the shuffle becomes the conv's store order (ShuffleNet v1), one pass less."""
    calls = _module_calls(gm)
    count = 0
    for node in list(gm.graph.nodes):
        groups = _shuffle_groups(gm, node)
        if not groups or groups < 2:
            continue
        src = node.args[0]
        while (src.op == "call_module" and isinstance(gm.get_submodule(src.target), nn.Identity)
               and len(src.users) == 1):
            src = src.args[0]
        if not (src.op == "call_module" and len(src.users) == 1 and calls.get(src.target) == 1):
            continue
        conv = gm.get_submodule(src.target)
        if not isinstance(conv, Conv2d) or conv.shuffle > 1 or conv.out_channels % groups:
            continue
        conv.shuffle = groups
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        count += 1
    return count


def concat_shuffle(parts: list[torch.Tensor], groups: int) -> torch.Tensor:
    """channel_shuffle(torch.cat(parts, 1), groups) in one pass where there are `groups` parts of one
    shape (ShuffleNet v2's unit: two branches, two groups): output channel c * groups + i is channel
    c of part i, which is torch.stack(parts, 2) seen as (n, c * groups, h, w). Else the two steps."""
    if len(parts) == groups and all(p.shape == parts[0].shape for p in parts) and parts[0].dim() == 4:
        return torch.stack(parts, 2).flatten(1, 2)
    return torch.ops.gconvgen.channel_shuffle(torch.cat(parts, 1), groups)


def _fuse_concat_shuffles(gm: torch.fx.GraphModule) -> int:
    """torch.cat(parts, dim=1) -> shuffle, where only the shuffle reads the concatenation, becomes
    concat_shuffle: one copy instead of two (the unit ShuffleNet v2 repeats 16 times)."""
    count = 0
    for node in list(gm.graph.nodes):
        groups = _shuffle_groups(gm, node)
        cat = node.args[0] if groups else None
        parts = _channel_cat_parts(cat)
        if parts is None:
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(concat_shuffle, (parts, groups))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        gm.graph.erase_node(cat)
        count += 1
    return count


def _channel_cat_parts(cat) -> list | None:
    """The parts of torch.cat(parts, dim=1) where only one node reads the concatenation; else None."""
    if not (isinstance(cat, torch.fx.Node) and cat.op == "call_function" and cat.target is torch.cat
            and len(cat.users) == 1 and isinstance(cat.args[0], (list, tuple))):
        return None
    return list(cat.args[0]) if cat.kwargs.get("dim", cat.args[1] if len(cat.args) > 1 else 0) == 1 else None


def _is_add(node) -> bool:
    return ((node.op == "call_function" and node.target in (operator.add, torch.add) and not node.kwargs)
            or (_is_method(node, "add") and not node.kwargs)) and len(node.args) == 2


def _fuse_residual_adds(gm: torch.fx.GraphModule) -> int:
    """conv(x) + skip [-> relu], where only the add reads the conv's output, the conv module runs once
    and has no activation of its own, becomes conv(x, residual=skip) with the relu in its epilogue:
    the skip connections of MobileNet v2, ShuffleNet v1 and ResNeXt, two passes over the output fewer."""
    calls = _module_calls(gm)
    count = 0
    for node in list(gm.graph.nodes):
        if not _is_add(node):
            continue
        for conv_node, skip in ((node.args[1], node.args[0]), (node.args[0], node.args[1])):
            if not (isinstance(conv_node, torch.fx.Node) and isinstance(skip, torch.fx.Node)
                    and conv_node.op == "call_module" and len(conv_node.users) == 1
                    and calls.get(conv_node.target) == 1 and not conv_node.kwargs and len(conv_node.args) == 1):
                continue
            conv = gm.get_submodule(conv_node.target)
            if not (isinstance(conv, Conv2d) and conv.activation == "none" and conv.shuffle <= 1):
                continue
            with gm.graph.inserting_before(node):
                fused = gm.graph.call_module(conv_node.target, conv_node.args, {"residual": skip})
            node.replace_all_uses_with(fused)
            gm.graph.erase_node(node)
            gm.graph.erase_node(conv_node)
            user = next(iter(fused.users)) if len(fused.users) == 1 else None
            if user is not None and _activation(gm, user) == "relu":
                conv.activation = "relu"
                user.replace_all_uses_with(fused)
                gm.graph.erase_node(user)
            count += 1
            break
    return count


_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.hardswish: "hardswish",
                         F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.hardsigmoid: "hardsigmoid",
                         F.gelu: "gelu"}


def _activation(gm: torch.fx.GraphModule, node) -> str | None:
    """The epilogue activation a graph node computes of its one tensor argument, or None."""
    if node.op == "call_module":
        return _module_activation(gm.get_submodule(node.target))
    plain = len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    if node.op == "call_function" and plain:
        return _ACTIVATION_FUNCTIONS.get(node.target)
    if node.op == "call_method" and plain and not node.kwargs:
        return {"relu": "relu", "sigmoid": "sigmoid"}.get(node.target)
    return None


def _fuse_activations(gm: torch.fx.GraphModule) -> int:
    """conv(x) -> activation, where only the activation reads the conv's output and the conv module
    runs once with no activation or shuffle of its own, becomes the conv with the activation in its
    epilogue: what the Sequential fusion does for modules a forward calls one after the other
    (torchvision's SqueezeExcitation: fc1 -> SiLU, fc2 -> Sigmoid)."""
    calls = _module_calls(gm)
    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_module" and len(node.users) == 1 and calls.get(node.target) == 1):
            continue
        conv = gm.get_submodule(node.target)
        user = next(iter(node.users))
        act = _activation(gm, user)
        if not (isinstance(conv, (Conv2d, Linear)) and conv.activation == "none" and getattr(conv, "shuffle", 0) <= 1
                and act and user.args[0] is node):
            continue
        conv.activation = act
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        count += 1
    return count


def _is_method(node, *names) -> bool:
    return node.op == "call_method" and node.target in names


def _replace_shuffles(gm: torch.fx.GraphModule) -> int:
    """view(n, g, c/g, h, w) -> transpose(1, 2) [-> contiguous] -> view/reshape(n, c, h, w) becomes a
    ChannelShuffle module: a module keeps the eager fast path, where the op pays the dispatcher."""
    count = 0
    for node in list(gm.graph.nodes):
        if not (_is_method(node, "view", "reshape") and len(node.args) == 5):
            continue
        src = node.args[0]
        if _is_method(src, "contiguous") and len(src.users) == 1:
            src = src.args[0]
        is_transpose = (_is_method(src, "transpose") or (src.op == "call_function" and src.target is torch.transpose))
        if not (is_transpose and tuple(src.args[1:3]) in ((1, 2), (2, 1)) and len(src.users) == 1):
            continue
        split = src.args[0]
        if not (_is_method(split, "view", "reshape") and len(split.args) == 6 and isinstance(split.args[2], int)
                and len(split.users) == 1):
            continue
        _call_module_instead(gm, node, f"gconvgen_shuffle_{count}", ChannelShuffle(split.args[2]), split.args[0])
        count += 1
    return count


def _call_module_instead(gm: torch.fx.GraphModule, node, name: str, module: nn.Module, source) -> None:
    """node's users read module(source) instead, module registered on gm as `name` (the old nodes
    go with dead-code elimination)."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)


_MAX_POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _replace_max_pools(gm: torch.fx.GraphModule) -> int:
    """F.max_pool2d calls (floor mode, no indices) become MaxPool2d modules (the models' stems call
    it functionally)."""
    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d)):
            continue
        values = dict(zip(_MAX_POOL_PARAMS, node.args[1:]), **node.kwargs)
        if values.get("ceil_mode") or values.get("return_indices") or not all(
                isinstance(values.get(k, 0), (int, tuple, list, type(None))) for k in _MAX_POOL_PARAMS[:4]):
            continue
        pool = MaxPool2d(values["kernel_size"], values.get("stride"), values.get("padding", 0), values.get("dilation", 1))
        _call_module_instead(gm, node, f"gconvgen_max_pool_{count}", pool, node.args[0])
        count += 1
    return count


_AVG_POOL_PARAMS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _replace_avg_pools(gm: torch.fx.GraphModule) -> int:
    """F.avg_pool2d calls become AvgPool2d modules and F.adaptive_avg_pool2d calls AdaptiveAvgPool2d
    ones (ShuffleNet v1's shortcut pool; every model's head). On 2 cores torch's NCHW average pool
    runs ShuffleNet v1's 240x28x28 shortcut in 600 µs; the depthwise rule's window sum in 30."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is F.avg_pool2d:
            values = dict(zip(_AVG_POOL_PARAMS, node.args[1:]), **node.kwargs)
            if not all(isinstance(values.get(k, 0), (int, bool, tuple, list, type(None))) for k in _AVG_POOL_PARAMS):
                continue
            pool = AvgPool2d(values["kernel_size"], values.get("stride"), values.get("padding", 0),
                             values.get("ceil_mode", False), values.get("count_include_pad", True),
                             values.get("divisor_override"))
        elif node.target is F.adaptive_avg_pool2d:
            size = node.kwargs.get("output_size", node.args[1] if len(node.args) > 1 else None)
            if not isinstance(size, (int, tuple, list)):
                continue
            pool = AdaptiveAvgPool2d(size)
        else:
            continue
        _call_module_instead(gm, node, f"gconvgen_avg_pool_{count}", pool, node.args[0])
        count += 1
    return count


def _fuse_relu_into_concat(gm: torch.fx.GraphModule) -> int:
    """relu(cat(parts, dim=1)), where every part is a conv or average pool (no activation of its own,
    no shuffle) whose module runs once and whose output only the cat reads, becomes the cat of those
    parts with the relu in their epilogues (ShuffleNet v1's downsampling unit): one pass fewer."""
    calls = _module_calls(gm)
    count = 0
    for node in list(gm.graph.nodes):
        if _activation(gm, node) != "relu":
            continue
        cat = node.args[0] if node.args else None
        parts = _channel_cat_parts(cat)
        if parts is None:
            continue
        modules = []
        for part in parts:
            module = gm.get_submodule(part.target) if (isinstance(part, torch.fx.Node) and part.op == "call_module"
                                                       and len(part.users) == 1
                                                       and calls.get(part.target) == 1) else None
            if isinstance(module, Conv2d) and module.activation == "none" and module.shuffle <= 1:
                modules.append(module)
            elif isinstance(module, AvgPool2d) and module.activation == "none":
                modules.append(module)
            else:
                break
        if len(modules) != len(parts):
            continue
        for module in modules:
            module.activation = "relu"
        node.replace_all_uses_with(cat)
        gm.graph.erase_node(node)
        count += 1
    return count


__all__ = ["concat_shuffle", "convert", "eligible"]
