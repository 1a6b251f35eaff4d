"""ResNet-50 with CBAM in three placements: per stage (paper text), after the add (Eq. 4), before the add (Woo).

All three reuse torchvision's ResNet and Bottleneck, so the backbone's parameter names are those of
torchvision's resnet50 and its ImageNet state dict loads unchanged; CBAM weights live under `cbam*` names.

- "stage": y_s = CBAM(layer_s(x)) for s = 1..4 -> 4 modules (channels 256, 512, 1024, 2048).
- "post":  per bottleneck y = ReLU(CBAM(F(x, W) + x)) -> 16 modules. Eq. (4) read literally: CBAM takes
           the residual sum; the block's ReLU (outside Eq. 1 as in He et al.) is applied after it.
- "woo":   per bottleneck y = ReLU(CBAM(F(x, W)) + x) -> 16 modules, as in Woo et al. 2018 Fig. 3.
"""
from __future__ import annotations

import torch
from torchvision.models.resnet import Bottleneck, ResNet

from models.cbam import CBAM

PLACEMENTS = ("stage", "post", "woo")
STAGE_CHANNELS = (256, 512, 1024, 2048)
RESNET50_LAYERS = [3, 4, 6, 3]


class _CBAMBottleneck(Bottleneck):
    """torchvision Bottleneck plus `self.cbam`; subclasses choose where CBAM sits relative to the add."""

    placement = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cbam = CBAM(self.bn3.num_features)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x, W): conv1-bn1-relu-conv2-bn2-relu-conv3-bn3."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)


class BottleneckCBAMWoo(_CBAMBottleneck):
    """y = ReLU(CBAM(F(x)) + x): attention on the residual branch before the add (Woo et al.)."""

    placement = "woo"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.cbam(self.residual(x)) + self.shortcut(x))


class BottleneckCBAMPost(_CBAMBottleneck):
    """y = ReLU(CBAM(F(x) + x)): attention on the residual sum, before the block's final ReLU (Eq. 4)."""

    placement = "post"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.cbam(self.residual(x) + self.shortcut(x)))


class ResNetStageCBAM(ResNet):
    """torchvision ResNet with one CBAM after the output of each of the four residual stages."""

    def __init__(self, layers=RESNET50_LAYERS, num_classes: int = 5):
        super().__init__(Bottleneck, layers, num_classes=num_classes)
        self.cbam1, self.cbam2, self.cbam3, self.cbam4 = (CBAM(c) for c in STAGE_CHANNELS)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.cbam1(self.layer1(x))
        x = self.cbam2(self.layer2(x))
        x = self.cbam3(self.layer3(x))
        x = self.cbam4(self.layer4(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50_cbam(placement: str, num_classes: int = 5) -> ResNet:
    """A randomly initialised ResNet-50 with CBAM at `placement` (one of PLACEMENTS)."""
    if placement == "stage":
        model = ResNetStageCBAM(RESNET50_LAYERS, num_classes=num_classes)
    elif placement == "post":
        model = ResNet(BottleneckCBAMPost, RESNET50_LAYERS, num_classes=num_classes)
    elif placement == "woo":
        model = ResNet(BottleneckCBAMWoo, RESNET50_LAYERS, num_classes=num_classes)
    else:
        raise ValueError(f"unknown CBAM placement {placement!r}; expected one of {PLACEMENTS}")
    # torchvision's init loop (Kaiming convs, BN weight 1) also ran over CBAM: restore CBAM's own init
    for m in model.modules():
        if isinstance(m, CBAM):
            m.reset_parameters()
    return model
