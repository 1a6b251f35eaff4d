"""The --device option, resolved once for training and latency: auto, cpu, cuda or cuda:N."""
from __future__ import annotations

import re

import torch

from protocols.errors import BadInput

CHOICES = "auto, cpu, cuda, cuda:N"


def resolve_device(spec: str | torch.device | None = "auto", where: str = "--device") -> torch.device:
    """'auto' (or None): CUDA device 0 when available, else the CPU; 'cpu'; 'cuda'; 'cuda:N'.

    Anything else, or CUDA that is not available, or N beyond the visible devices, is BadInput (exit 2).
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise BadInput(where, "device", f"unknown device {spec!r} (expected {CHOICES})")
    if not torch.cuda.is_available():
        raise BadInput(where, "device", f"{text} requested but CUDA is not available (torch.cuda.is_available() "
                                        "is False)")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise BadInput(where, "device", f"{text} requested but only {torch.cuda.device_count()} CUDA device(s) "
                                        "are visible")
    return torch.device(text)
