"""CBAM (Woo et al. 2018): channel attention then spatial attention, as in the authors' reference code.

Channel attention, Eq. (2):  Mc(F)  = sigmoid(MLP(AvgPool_hw(F)) + MLP(MaxPool_hw(F))), MLP shared,
                                       C -> C/r -> C with ReLU between (r = 16).
Spatial attention, Eq. (3):  Ms(F') = sigmoid(BN(conv7x7([AvgPool_c(F'); MaxPool_c(F')])))
Output:                      F'' = Ms(F') * F',  F' = Mc(F) * F.

Defaults follow github.com/Jongchan/attention-module (the CBAM authors' code): MLP with bias, a
BatchNorm after the bias-free 7x7 conv, MLP biases zero, spatial conv Kaiming-normal (fan_out) and the
spatial BatchNorm's weight initialised to 0 (so the spatial gate starts as a constant 0.5).
The pooled maps are concatenated in the paper's order [avg; max] (the reference code uses [max; avg];
for a learned conv this is only a permutation of its two input channels). See docs/cbam.md.
"""
from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """x * sigmoid(MLP(mean_hw x) + MLP(max_hw x)) with one MLP shared by both pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16, mlp_bias: bool = True):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=mlp_bias), nn.ReLU(),
                                 nn.Linear(hidden, channels, bias=mlp_bias))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map Mc(x), shape [N, C, 1, 1]."""
        avg = self.mlp(x.mean(dim=(2, 3)))
        mx = self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(avg + mx)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SpatialAttention(nn.Module):
    """x * sigmoid(BN(conv_kxk([mean_c x; max_c x]))); BN optional (the paper's Eq. 3 has none)."""

    def __init__(self, kernel_size: int = 7, batch_norm: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"spatial kernel size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
        # reference code: BatchNorm2d(eps=1e-5, momentum=0.01, affine=True)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if batch_norm else nn.Identity()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map Ms(x), shape [N, 1, H, W]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    """Sequential channel then spatial attention; output has the shape of the input."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7,
                 mlp_bias: bool = True, spatial_bn: bool = True, zero_init_spatial_bn: bool = True):
        super().__init__()
        self.channels = channels
        self.zero_init_spatial_bn = zero_init_spatial_bn
        self.channel = ChannelAttention(channels, reduction, mlp_bias)
        self.spatial = SpatialAttention(kernel_size, spatial_bn)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the reference ResNet-CBAM does (its init loop over the state dict)."""
        for m in self.channel.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()  # PyTorch default for the weights ...
                if m.bias is not None:
                    nn.init.zeros_(m.bias)  # ... and every bias set to 0
        nn.init.kaiming_normal_(self.spatial.conv.weight, mode="fan_out")
        if self.spatial.conv.bias is not None:
            nn.init.zeros_(self.spatial.conv.bias)
        if isinstance(self.spatial.bn, nn.BatchNorm2d):
            self.spatial.bn.reset_running_stats()
            nn.init.constant_(self.spatial.bn.weight, 0.0 if self.zero_init_spatial_bn else 1.0)
            nn.init.zeros_(self.spatial.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def cbam_modules(model: nn.Module) -> list[tuple[str, CBAM]]:
    """(qualified name, module) of every CBAM inside `model`, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CBAM)]


def cbam_param_count(model: nn.Module) -> int:
    """Number of parameters that belong to CBAM modules (buffers not counted)."""
    return sum(p.numel() for _, m in cbam_modules(model) for p in m.parameters())
