"""Reference architectures written from their papers (torchvision cannot be installed beside this
torch), random weights: what `gconvgen bench --model` and the convert tests run.

- MobileNetV2 (Sandler et al. 2018), width 1.0.
- ShuffleNetV1 with g = 3 (Zhang et al. 2018), 1.0x: grouped 1x1 convs and a channel shuffle.
- ShuffleNetV2 1.0x (Ma et al. 2018): channel split, concat and a hand-written shuffle.
- ResNeXt-50 32x4d (Xie et al. 2017).
- EfficientNet-B0 (Tan and Le 2019): SiLU, 5x5 depthwise convs, squeeze-and-excitation.
- ConvNeXt-T (Liu et al. 2022): 7x7 depthwise convs, then LayerNorm and a GELU MLP on channels-last
  features; patchify stem and downsampling (2x2 stride-2 convs after a channels-first LayerNorm).
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """As ShuffleNet implementations write it: view, transpose, view."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


def pool_classify(features: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """Every model's head: global average pool, then the linear classifier."""
    return fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))


# --- MobileNetV2 -------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_classify(self.features(x), self.classifier)


# --- ShuffleNetV1 (g = 3) ------------------------------------------------------------------------
class ShuffleV1Unit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, first: bool) -> None:
        super().__init__()
        self.stride = stride
        out = cout - cin if stride == 2 else cout
        mid = cout // 4
        self.compress = conv_bn(cin, mid, 1, groups=1 if first else groups)
        self.shuffle = nn.ChannelShuffle(1 if first else groups)
        self.depthwise = conv_bn(mid, mid, 3, stride, groups=mid, act=None)
        self.expand = conv_bn(mid, out, 1, groups=groups, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.stride == 2:
            return torch.relu(torch.cat([nn.functional.avg_pool2d(x, 3, 2, 1), y], 1))
        return torch.relu(x + y)


class ShuffleNetV1(nn.Module):
    def __init__(self, groups: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        widths = {3: [240, 480, 960]}[groups]
        self.stem = conv_bn(3, 24, 3, 2)
        layers, cin = [], 24
        for stage, (width, repeats) in enumerate(zip(widths, (4, 8, 4))):
            for i in range(repeats):
                layers.append(ShuffleV1Unit(cin, width, 2 if i == 0 else 1, groups, first=stage == 0 and i == 0))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_classify(self.stages(nn.functional.max_pool2d(self.stem(x), 3, 2, 1)), self.fc)


# --- ShuffleNetV2 1.0x ---------------------------------------------------------------------------
class ShuffleV2Unit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, branch, 1))
        else:
            self.branch1 = nn.Sequential()
        src = cin if stride == 2 else branch
        self.branch2 = nn.Sequential(conv_bn(src, branch, 1), conv_bn(branch, branch, 3, stride, groups=branch, act=None),
                                     conv_bn(branch, branch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2)
        layers, cin = [], 24
        for width, repeats in zip((116, 232, 464), (4, 8, 4)):
            for i in range(repeats):
                layers.append(ShuffleV2Unit(cin, width, 2 if i == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = conv_bn(cin, 1024, 1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_classify(self.head(self.stages(nn.functional.max_pool2d(self.stem(x), 3, 2, 1))), self.fc)


# --- ResNeXt-50 32x4d ---------------------------------------------------------------------------
class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int, groups: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, groups=groups),
                                  conv_bn(width, cout, 1, act=None))
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.down(x))


class ResNeXt50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = conv_bn(3, 64, 7, 2)
        layers, cin = [], 64
        for stage, repeats in enumerate((3, 4, 6, 3)):
            width, cout = 128 * 2 ** stage, 256 * 2 ** stage
            for i in range(repeats):
                layers.append(ResNeXtBlock(cin, width, cout, 2 if i == 0 and stage > 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_classify(self.stages(nn.functional.max_pool2d(self.stem(x), 3, 2, 1)), self.fc)


# --- EfficientNet-B0 ------------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features, written as torchvision writes it: modules
    called one after the other in forward, not a Sequential."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.activation = nn.SiLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.activation(self.fc1(pooled))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcite(hidden, max(1, cin // 4)), conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNetB0(nn.Module):
    # expansion, kernel, stride, output channels, blocks
    SETTINGS = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2, act=nn.SiLU)], 32
        for t, k, s, c, n in self.SETTINGS:
            for i in range(n):
                layers.append(MBConv(cin, c, k, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_classify(self.features(x), self.classifier)


# --- ConvNeXt-T ------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of NCHW features, as torchvision writes it: through a channels-last
    permute, so its output is an NCHW tensor with channels-last strides."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, then on channels-last features LayerNorm -> Linear(4C) -> GELU -> Linear,
    a per-channel layer scale and the residual. The scale starts at 1 (the paper's 1e-6 would leave
    a random-weight block next to the identity, and a test comparing outputs blind to it)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.layer_scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))) * self.layer_scale
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    DEPTHS, DIMS = (3, 3, 9, 3), (96, 192, 384, 768)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, self.DIMS[0], 4, stride=4), LayerNorm2d(self.DIMS[0], eps=1e-6)]
        for i, (depth, dim) in enumerate(zip(self.DEPTHS, self.DIMS)):
            if i:
                layers += [LayerNorm2d(self.DIMS[i - 1], eps=1e-6), nn.Conv2d(self.DIMS[i - 1], dim, 2, stride=2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(self.DIMS[-1], eps=1e-6)
        self.classifier = nn.Linear(self.DIMS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(self.norm(pooled))


MODELS = {"mobilenet_v2": MobileNetV2, "shufflenet_v1": ShuffleNetV1, "shufflenet_v2": ShuffleNetV2,
          "resnext50": ResNeXt50, "efficientnet_b0": EfficientNetB0, "convnext_tiny": ConvNeXtTiny}


def create(name: str, seed: int = 0) -> nn.Module:
    """A reference model in eval mode with random weights (BatchNorm statistics randomized too, so
    folding them is actually exercised)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    model = MODELS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def layer_specs(name: str, size: int = 224, channels_last: bool = False, batch: int = 1) -> list:
    """The KernelSpec of every layer gconvgen runs in the converted model at `batch` (repeats
    included, so a tuner can weight them), found by running it once on aten."""
    from . import convert, torch_ops
    model = convert(create(name))
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad(), torch_ops.recording() as specs:
        model(x)
    return specs
