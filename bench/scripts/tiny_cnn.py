"""A small BatchNorm CNN for smoke runs that must train in seconds on a CPU (`bench.scripts.tiny_cnn:TinyCNN`).

Used as a `package.module:factory` model by bench/scripts/shortcuts_planted.py and the shortcut-audit tests.
"""
from __future__ import annotations

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
