"""Model facts: parameter counts, FLOPs (torch FlopCounterMode) and an activation-memory estimate.

Measured on the meta device (shapes only: no memory, no arithmetic), batch 1, fp32, eval mode.
FLOPs are FlopCounterMode's: 2 FLOPs per multiply-accumulate in conv / linear / matmul / attention
(so FLOPs = 2 x MACs); element-wise work (BatchNorm, ReLU, pooling, sigmoid, the CBAM gating
products, softmax) is not counted.
activation_bytes = sum over leaf modules of the bytes of their forward outputs at fp32 (batch 1):
a size-of-all-intermediates estimate, not the allocator's peak (in-place ReLU outputs are counted
again, element-wise products inside CBAM that no leaf module returns are not).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.cbam import cbam_modules, cbam_param_count

FLOPS_NOTE = ("torch.utils.flop_counter.FlopCounterMode, batch 1: 2 FLOPs per multiply-accumulate "
              "(FLOPs = 2 x MACs) in conv/linear/matmul/attention; element-wise ops not counted")
ACTIVATION_NOTE = "sum of fp32 output bytes of all leaf modules in one forward at batch 1 (estimate, not peak)"


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared parameters counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Total FlopCounterMode FLOPs of model(x) (grad mode left on so nn.MultiheadAttention takes the
    decomposed path that the counter sees)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return int(counter.get_total_flops())


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Sum of the byte sizes of every leaf module's output tensors in model(x)."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(t.numel() * t.element_size() for t in outs if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def model_facts(name: str, input_size: int = 224, num_classes: int = 5) -> dict:
    """Parameters, FLOPs and activation estimate of registry model `name` at `input_size` (batch 1)."""
    from models.registry import create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, pretrained=None, input_size=input_size)
        x = torch.empty(1, 3, input_size, input_size)
    model.eval()
    total, trainable = count_params(model)
    flops = count_flops(model, x)
    return {
        "name": name,
        "input_size": input_size,
        "num_classes": num_classes,
        "params_total": total,
        "params_trainable": trainable,
        "params_cbam": cbam_param_count(model),
        "n_cbam_modules": len(cbam_modules(model)),
        "flops": flops,
        "macs": flops // 2,
        "activation_bytes": activation_bytes(model, x),
        "flops_method": FLOPS_NOTE,
        "activation_method": ACTIVATION_NOTE,
    }


def facts_table(names: list[str], input_size: int = 224, num_classes: int = 5) -> list[dict]:
    """model_facts for each name plus `added_params_vs_resnet50` (difference of totals)."""
    rows = [model_facts(n, input_size, num_classes) for n in names]
    base = next((r for r in rows if r["name"] == "resnet50"), None)
    if base is None:
        base = model_facts("resnet50", input_size, num_classes)
    for r in rows:
        r["added_params_vs_resnet50"] = r["params_total"] - base["params_total"]
    return rows
