"""Small CNN for scikit-learn's 8x8 digits data set (embedded example).

The architecture is deliberately small but covers the graph patterns the
edgepack toolchain has to handle: Conv+BatchNorm pairs (for BN folding),
a depthwise convolution, a residual add and a global average pool.

Input:  float32 [B, 1, 8, 8], pixel values scaled to [0, 1] (raw / 16).
Output: logits  [B, 10].

``build()`` returns the trained model in eval mode, loading the weights from
``digits_cnn.pt`` next to this file (regenerate with
``python scripts/make_digits_example.py``).
"""

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("digits_cnn.pt")


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias, BN supplies it) followed by BatchNorm2d."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class ResidualDW(nn.Module):
    """Depthwise 3x3 + BN + ReLU -> pointwise 1x1 + BN, added to the input, then ReLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.dw = conv_bn(ch, ch, 3, groups=ch)
        self.pw = conv_bn(ch, ch, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.dw(x))
        y = self.pw(y)
        return self.relu(x + y)


class DigitsCNN(nn.Module):
    """8x8 -> 8x8 (16ch) -> residual DW block -> 4x4 (32ch) -> 2x2 (64ch) -> GAP -> Linear(64, 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, 16), nn.ReLU())
        self.block = ResidualDW(16)
        self.down1 = nn.Sequential(conv_bn(16, 32, stride=2), nn.ReLU())  # -> 4x4
        self.down2 = nn.Sequential(conv_bn(32, 64, stride=2), nn.ReLU())  # -> 2x2
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block(x)
        x = self.down1(x)
        x = self.down2(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def build() -> DigitsCNN:
    """Construct DigitsCNN, load the trained weights (CPU) and return it in eval mode."""
    model = DigitsCNN()
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
