"""What the registry knows of one model: its name, whose weights initialise it, its head and how to build it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from models.names import BUILTIN


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # whose published weights initialise it: torchvision builder, timm model name, or the factory spec
    head: str | None  # module path of the final classifier; None: found on the built model (classifier_path)
    build: Callable[[int, int], nn.Module]  # (num_classes, input_size) -> randomly initialised model
    description: str
    size_multiple: int = 1
    kind: str = BUILTIN
