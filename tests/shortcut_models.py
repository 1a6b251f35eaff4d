"""Small CNNs for the shortcut-audit tests: a tiny trainable one, and one whose attribution is known by construction."""
from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Three stride-2 conv + BatchNorm + ReLU, global average pool, linear head: trains in seconds at 32 px."""

    def __init__(self, num_classes: int = 5, width: int = 16):
        super().__init__()
        layers, c = [], 3
        for o in (width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU()]
            c = o
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


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


def register_tiny(monkeypatch, name: str = "tiny_cnn") -> str:
    """Add TinyCNN to the model registry for one test (the registry is the only way the runner builds models)."""
    from models import registry

    spec = registry.ModelSpec(name, "none", "fc", lambda num_classes, input_size: TinyCNN(num_classes),
                              "test-only tiny CNN")
    monkeypatch.setitem(registry.REGISTRY, name, spec)
    return name
