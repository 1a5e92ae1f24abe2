"""Standard image-classification architectures in plain PyTorch, for benchmarks and tests.

edgepack's benchmarks and tests need realistic architectures (depthwise-separable
inverted residuals, basic-block ResNets, residual adds, global pooling) at realistic sizes,
but torchvision is not installable everywhere (no CPU wheel for every torch build) and
nothing may be downloaded at run time. This module re-implements a few well-known
networks from their papers, with only ``torch``:

* ``mobilenet_v2``  MobileNetV2 (Sandler et al., 2018): inverted residual blocks with a
  linear bottleneck, ReLU6, width multiplier. At width 1.0 on 1x3x224x224 it has
  3,504,872 parameters and ~300.8 M MACs, the figures usually quoted for it.
* ``resnet18``      ResNet-18 (He et al., 2015) with basic blocks (11.7 M parameters and
  ~1.82 G MACs at width 1.0, 224x224); ``width_mult`` scales every stage.
* ``residual_cnn``  a tiny Conv-BN-ReLU network with one depthwise residual block and two
  strided stages, for quick tests (a few thousand parameters, any input size >= 4x4).

Every builder is ``name(num_classes=..., width_mult=...) -> nn.Module`` and returns a
randomly initialised model in train mode (call ``.eval()`` before export); seed with
``torch.manual_seed`` for reproducible weights. No pretrained weights are provided.

Random initialisation follows the usual recipe (He-normal fan-out convolutions, BatchNorm
at identity). Note that for depthwise convolutions PyTorch's fan-out counts all output
channels, so their weights are tiny; in eval mode, with BatchNorm running statistics still
at mean 0 / variance 1, a fresh MobileNetV2's activations shrink layer by layer and its
logits come out around 1e-9. Before using an untrained model to benchmark quantisation,
call ``recalibrate_batchnorm(model, batches)``: a few no-grad forward passes in train mode
that set the running statistics from representative inputs, giving unit-scale activations
like a trained network's.

``count_macs(model, input_shape)`` counts multiply-accumulates of Conv2d and Linear layers
with forward hooks. Run as a script to print parameters and MACs of every model::

    python scripts/zoo.py
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["mobilenet_v2", "resnet18", "residual_cnn", "count_macs", "count_params", "recalibrate_batchnorm",
           "MODELS"]


def _round_channels(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of `divisor`, never losing more than 10 %."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation, 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


def _init_weights(model: nn.Module, linear_std: float | None = 0.01) -> None:
    """He-normal (fan-out) convolutions, unit BatchNorm, small-normal classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, + skip if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(cin * expand_ratio))
        self.use_skip = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, cout, 1, act=None))  # linear bottleneck
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_skip else y


# (expansion t, output channels c, repeats n, first stride s) from the MobileNetV2 paper, table 2.
_MBV2_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        channels = _round_channels(32 * width_mult)
        # The last 1x1 conv is never narrowed below 1280 (the paper keeps it for width < 1).
        last = _round_channels(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, stride=2, act=nn.ReLU6)]
        for t, c, n, s in _MBV2_STAGES:
            cout = _round_channels(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, cout, s if i == 0 else 1, t))
                channels = cout
        layers.append(ConvBNAct(channels, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2; ~3.5 M parameters and ~300 M MACs at width 1.0, 224x224, 1000 classes."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult)


# --------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN with a ReLU between, added to the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride=stride)
        self.conv2 = ConvBNAct(cout, cout, 3, act=None)
        self.shortcut = (ConvBNAct(cin, cout, 1, stride=stride, act=None) if stride != 1 or cin != cout
                         else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """7x7/2 stem + 3x3/2 max-pool, four stages of basic blocks (64-128-256-512 x width), GAP, FC."""

    def __init__(self, blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000,
                 width_mult: float = 1.0):
        super().__init__()
        widths = [_round_channels(w * width_mult) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(ConvBNAct(3, widths[0], 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
        stages, cin = [], widths[0]
        for i, (n, cout) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        _init_weights(self, linear_std=None)  # keep nn.Linear's default (uniform) init for the FC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet18(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """ResNet-18 (basic blocks, 2-2-2-2); ~11.7 M parameters and ~1.82 G MACs at width 1.0, 224x224."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, width_mult=width_mult)


# --------------------------------------------------------------------------- tiny residual CNN


class ResidualCNN(nn.Module):
    """stem 3x3 -> depthwise residual block -> two stride-2 3x3 stages -> GAP -> Linear."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        c1, c2, c3 = (_round_channels(c * width_mult) for c in (16, 32, 64))
        self.stem = ConvBNAct(in_channels, c1, 3)
        self.dw = ConvBNAct(c1, c1, 3, groups=c1)
        self.pw = ConvBNAct(c1, c1, 1, act=None)
        self.relu = nn.ReLU(inplace=True)
        self.down = nn.Sequential(ConvBNAct(c1, c2, 3, stride=2), ConvBNAct(c2, c3, 3, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)
        _init_weights(self, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.pw(self.dw(x)))
        x = self.pool(self.down(x))
        return self.fc(torch.flatten(x, 1))


def residual_cnn(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """A tiny 3-channel residual CNN (~25 k parameters at width 1.0) for quick tests."""
    return ResidualCNN(num_classes=num_classes, width_mult=width_mult)


MODELS = {"mobilenet_v2": mobilenet_v2, "resnet18": resnet18, "residual_cnn": residual_cnn}


# --------------------------------------------------------------------------- counting


# One definition of the counting conventions: edgepack's own (MACs of Conv2d and Linear,
# output elements × in_channels/groups × kH × kW; biases, BN, activations not counted).
from edgepack.stages.compress.measure import count_macs, count_params  # noqa: E402


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> nn.Module:
    """Reset every BatchNorm's running statistics to the cumulative mean/variance over `batches`.

    Weights are untouched; only running_mean / running_var change. Returns the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for x in batches:
            model(torch.as_tensor(x))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return model.eval()


if __name__ == "__main__":
    for name, fn in MODELS.items():
        for w in (0.5, 1.0):
            m = fn(num_classes=1000 if name != "residual_cnn" else 10, width_mult=w)
            size = 32 if name == "residual_cnn" else 224
            macs = count_macs(m, (1, 3, size, size))
            print(f"{name:13s} width {w:<4} {size}x{size}: {count_params(m) / 1e6:8.3f} M params, "
                  f"{macs / 1e6:9.1f} M MACs")
