"""The torch side of the shortcut audit: ensemble logits on region-replaced images, Grad-CAM, penultimate features.

Every function takes the fold models that make a model's ensemble (already loaded, eval mode) and uint8 images
[N, 3, S, S]; statistics are computed elsewhere (reports/shortcuts_stats.py) from the arrays returned here.
Inference reuses the trainer's Batcher/predict: batched, the protocol's autocast (bf16 on CUDA), channels_last.
Grad-CAM is pytorch-grad-cam's GradCAM (package `grad-cam`), with its vit_reshape_transform for token models.
"""
from __future__ import annotations

import base64
import functools
import io
import math

import numpy as np
import torch
from torch import nn

from protocols.trainer import Batcher, Runtime, predict


def ensemble_logits(nets, images: torch.Tensor, mean, std, rt: Runtime, batch_size: int = 128) -> np.ndarray:
    """Mean over the fold models of their logits on uint8 images [N, 3, S, S]: float32 [N, C]."""
    b = Batcher(images, mean, std, rt)
    rows = torch.arange(len(images))
    out = None
    for net in nets:
        net = net.to(rt.device, memory_format=torch.channels_last) if rt.channels_last else net.to(rt.device)
        lg = predict(net, b, rows, batch_size).double()
        out = lg if out is None else out + lg
    return (out / len(nets)).float().numpy()


def _last_called(net: nn.Module, x: torch.Tensor, keep) -> list:
    """(name, module, input, output) of the modules for which keep(module, output) holds, in completion order."""
    seen, handles = [], []
    for name, mod in net.named_modules():
        if mod is net:
            continue

        def hook(m, inp, out, name=name):
            if keep(m, out):
                seen.append((name, m, inp, out))
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def gradcam_target(net: nn.Module, input_size: int, device="cpu"):
    """(target layer name, module, reshape_transform or None) for Grad-CAM on `net`.

    Convolutional models: the last module to finish whose output is a feature map [B, C, h, w] with h * w > 1,
    adaptive pooling excepted (ResNet: layer4 or the CBAM after it; DenseNet / EfficientNet / VGG: their `features`). Token models (no such
    map after the patch embedding): the input norm of the last transformer block (`ln_1` / `norm1`, the usual
    ViT choice: the class token reads the other tokens there), reshaped by pytorch-grad-cam's
    vit_reshape_transform to the g x g patch grid (one class token assumed in front).
    """
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    seen = _last_called(net, x, lambda m, o: isinstance(o, torch.Tensor) and o.ndim in (3, 4))
    maps = [k for k, (_, m, _, o) in enumerate(seen) if o.ndim == 4 and o.shape[2] * o.shape[3] > 1
            and not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))]   # pooling resamples, adds nothing
    norms = [k for k, (n, _, _, o) in enumerate(seen) if o.ndim == 3 and n.rsplit(".", 1)[-1] in ("ln_1", "norm1")]
    if maps and (not norms or maps[-1] > norms[-1]):
        name, mod, _, _ = seen[maps[-1]]
        return name, mod, None
    if not norms:
        raise ValueError(f"{type(net).__name__}: no spatial feature map and no transformer block norm for Grad-CAM")
    name, mod, _, out = seen[norms[-1]]
    g = int(round(math.sqrt(out.shape[1] - 1)))
    if g * g != out.shape[1] - 1:
        raise ValueError(f"{name}: {out.shape[1]} tokens is not 1 class token + a square patch grid")
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
    return name, mod, functools.partial(vit_reshape_transform, height=g, width=g)


def gradcam_maps(nets, images: torch.Tensor, targets, mean, std, device, input_size: int,
                 batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Grad-CAM heatmaps [N, S, S] in 0..1 for class `targets[i]` of image i, averaged over the fold models.

    Each model's map is pytorch-grad-cam's (ReLU of the gradient-weighted activations, min-max scaled per image,
    resized to the input). Returns (maps, target layer name of each model).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    rt = Runtime(torch.device(device), None, False)            # fp32: gradients through bf16 are too coarse here
    b = Batcher(images, mean, std, rt)
    acc = np.zeros((len(images), input_size, input_size), np.float64)
    layers = []
    for net in nets:
        net = net.to(rt.device).eval()
        name, layer, reshape = gradcam_target(net, input_size, rt.device)
        layers.append(name)
        # gradients are needed from the output down to the target layer only: with every parameter below it
        # frozen, backward stops there (same maps, about half the cost); a parameter-free target layer keeps all
        flags = [q.requires_grad for q in net.parameters()]
        own = list(layer.parameters())
        if own:
            for q in net.parameters():
                q.requires_grad_(False)
            for q in own:
                q.requires_grad_(True)
        try:
            with GradCAM(model=net, target_layers=[layer], reshape_transform=reshape) as cam:
                for s in range(0, len(images), batch_size):
                    rows = torch.arange(s, min(s + batch_size, len(images)))
                    x = b.batch(rows)
                    tg = [ClassifierOutputTarget(int(t)) for t in targets[s:s + len(rows)]]
                    acc[s:s + len(rows)] += cam(input_tensor=x, targets=tg)
        finally:
            for q, f in zip(net.parameters(), flags):
                q.requires_grad_(f)
    return (acc / max(1, len(nets))).astype(np.float32), layers


def penultimate_features(nets, images: torch.Tensor, mean, std, rt: Runtime, batch_size: int = 128) -> np.ndarray:
    """Frozen penultimate features: the input of the last nn.Linear each fold model calls, concatenated [N, sum D]."""
    b = Batcher(images, mean, std, rt)
    feats = []
    for net in nets:
        net = (net.to(rt.device, memory_format=torch.channels_last) if rt.channels_last else net.to(rt.device)).eval()
        x0 = b.batch(torch.arange(min(1, len(images))))
        lin = _last_called(net, x0, lambda m, o: isinstance(m, nn.Linear))
        if not lin:
            raise ValueError(f"{type(net).__name__}: no nn.Linear head, no penultimate features")
        head = lin[-1][1]
        got = []
        h = head.register_forward_hook(lambda m, inp, out: got.append(inp[0].detach().float().flatten(1).cpu()))
        try:
            with torch.inference_mode():
                for s in range(0, len(images), batch_size):
                    with rt.autocast():
                        net(b.batch(torch.arange(s, min(s + batch_size, len(images)))))
        finally:
            h.remove()
        feats.append(torch.cat(got).numpy())
    return np.concatenate(feats, axis=1)


def heatmap_png(image_u8: np.ndarray, cam: np.ndarray, width: int = 96) -> str:
    """A small PNG data URI: the input (grey or RGB, [3, S, S] uint8) with its heatmap overlaid (pytorch-grad-cam)."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.asarray(image_u8, np.float32).transpose(1, 2, 0) / 255.0
    over = show_cam_on_image(rgb, np.asarray(cam, np.float32), use_rgb=True, image_weight=0.6)
    im = Image.fromarray(over).resize((width, width), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
