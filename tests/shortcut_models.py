"""A CNN for the shortcut-audit tests whose attribution is known by construction (TinyCNN: bench/scripts/tiny_cnn.py)."""
from __future__ import annotations

import torch
from torch import nn


class CornerMask(nn.Module):
    """Multiplies a feature map by a fixed 0/1 spatial mask (the top-left quarter of the grid)."""

    def forward(self, x):
        m = torch.zeros_like(x)
        h, w = x.shape[2] // 2, x.shape[3] // 2
        m[:, :, :h, :w] = 1.0
        return x * m


class CornerNet(nn.Module):
    """Looks only at the top-left quarter of the image: a stride-4 conv, a corner mask, pool, linear head.

    With positive conv and head weights and a constant input, Grad-CAM on `corner` is constant on the top-left
    quarter of the 8 x 8 grid (32 px input) and 0 elsewhere, so its mass inside any region is known exactly.
    """

    def __init__(self, num_classes: int = 3, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4, stride=4)
        self.act = nn.ReLU()
        self.corner = CornerMask()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        with torch.no_grad():
            self.conv.weight.fill_(0.01)
            self.conv.bias.fill_(0.1)
            self.fc.weight.copy_(torch.arange(1, num_classes + 1, dtype=torch.float32)[:, None].repeat(1, channels))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.corner(self.act(self.conv(x)))).flatten(1))
