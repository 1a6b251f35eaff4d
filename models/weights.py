"""Offline pretrained weights: find torchvision ImageNet files in the torch hub cache or read a given file.

Nothing here downloads. `pretrained="imagenet"` looks for torchvision's own file names under
`$TORCH_HOME/hub/checkpoints/` (torch.hub.get_dir()), the directory torchvision itself caches into;
`pretrained="/path/file.pth"` reads that file. Files are read with torch.load(weights_only=True).
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch
from torch import nn

from models.errors import BadInput
from models.safe_load import load_weights_only

log = logging.getLogger("fibrobench.models")

# torchvision file names per architecture, in order of preference (the first found is used)
def _imagenet_files() -> dict[str, list[str]]:
    from torchvision import models as tvm

    enums = {
        "resnet50": [tvm.ResNet50_Weights.IMAGENET1K_V1, tvm.ResNet50_Weights.IMAGENET1K_V2],
        "vgg16": [tvm.VGG16_Weights.IMAGENET1K_V1],
        "densenet121": [tvm.DenseNet121_Weights.IMAGENET1K_V1],
        "efficientnet_b0": [tvm.EfficientNet_B0_Weights.IMAGENET1K_V1],
        "vit_b_16": [tvm.ViT_B_16_Weights.IMAGENET1K_V1, tvm.ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1],
    }
    return {arch: [w.url.rsplit("/", 1)[-1] for w in ws] for arch, ws in enums.items()}


def hub_checkpoint_dir() -> Path:
    """Where torchvision caches its downloads: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_files(arch: str) -> list[Path]:
    """Every file that `pretrained='imagenet'` accepts for `arch`, in order of preference."""
    names = _imagenet_files().get(arch)
    if names is None:
        raise ValueError(f"no ImageNet weights known for architecture {arch!r}")
    return [hub_checkpoint_dir() / n for n in names]


def find_imagenet_file(arch: str) -> Path | None:
    """The first expected file that exists, else None."""
    return next((p for p in expected_files(arch) if p.is_file()), None)


_WRAPPERS = ("state_dict", "model_state_dict", "model_state", "model", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (unwraps {'state_dict': ...}-style dicts, strips 'module.')."""
    path = Path(path)
    obj = load_weights_only(path, "pretrained", "weights file")
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            key = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if key is None:
                break
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput(path, "pretrained", "file holds no state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def remap_densenet_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision DenseNet files name layers 'norm.1'; current modules are 'norm1' (same rule as torchvision)."""
    out = {}
    for k, v in sd.items():
        m = _DENSENET_OLD.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _fit_vit_positions(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resize ViT position embeddings to the model's image size (torchvision's bicubic interpolation)."""
    key = "encoder.pos_embedding"
    target = getattr(getattr(model, "encoder", None), "pos_embedding", None)
    if key not in sd or target is None or sd[key].shape == target.shape:
        return sd
    from collections import OrderedDict

    from torchvision.models.vision_transformer import interpolate_embeddings

    return dict(interpolate_embeddings(model.image_size, model.patch_size, OrderedDict(sd)))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_state_dict_into(model: nn.Module, sd: dict[str, torch.Tensor], arch: str, path: Path) -> dict:
    """Copy every tensor whose name and shape match; report what was left out on either side."""
    if arch == "densenet121":
        sd = remap_densenet_keys(sd)
    if arch == "vit_b_16":
        sd = _fit_vit_positions(sd, model)
    own = model.state_dict()
    mismatched = sorted(k for k, v in sd.items() if k in own and own[k].shape != v.shape)
    usable = {k: v for k, v in sd.items() if k in own and k not in mismatched}
    if not usable:
        raise BadInput(path, "pretrained", f"no tensor in the file matches a parameter of {arch} "
                                           f"(first file keys: {sorted(sd)[:3]}); wrong architecture?")
    result = model.load_state_dict(usable, strict=False)
    unexpected = sorted(set(sd) - set(own)) + mismatched
    return {"missing_keys": sorted(result.missing_keys), "unexpected_keys": sorted(unexpected),
            "shape_mismatch_keys": mismatched, "loaded_keys": len(usable)}


def is_fresh_key(key: str, head: str) -> bool:
    """True for tensors that start fresh on purpose: the new classifier head and every CBAM module."""
    return key.startswith(head + ".") or any(part.startswith("cbam") for part in key.split("."))


def apply_pretrained(model: nn.Module, name: str, arch: str, pretrained, allow_random_init: bool,
                     head: str) -> dict:
    """Load weights into `model` per `pretrained` (None | 'imagenet' | path) and return the record.

    `head` is the module path of the classifier (e.g. 'fc'); it and CBAM are expected to stay freshly
    initialised, any other missing key is logged as a warning and listed in `backbone_missing_keys`.
    """
    record = {"requested": None if pretrained is None else str(pretrained), "source": None, "sha256": None,
              "missing_keys": [], "unexpected_keys": [], "shape_mismatch_keys": [], "random_init": True,
              "note": ""}
    if pretrained is None:
        record["note"] = "random initialisation (no pretrained weights requested)"
        return record
    if str(pretrained) == "imagenet":
        path = find_imagenet_file(arch)
        if path is None:
            expected = ", ".join(str(p) for p in expected_files(arch))
            msg = (f"ImageNet weights for {name} (backbone {arch}) not found offline; expected one of: {expected} "
                   f"(set TORCH_HOME or copy the torchvision file there, or pass a file path)")
            if not allow_random_init:
                raise BadInput(expected_files(arch)[0], "pretrained", msg)
            log.warning("%s; falling back to random initialisation", msg)
            record["note"] = msg + "; fell back to random initialisation"
            return record
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise BadInput(path, "pretrained", f"weights file for {name} does not exist")
    report = load_state_dict_into(model, read_state_dict(path), arch, path)
    unexplained = [k for k in report["missing_keys"] if not is_fresh_key(k, head)]
    if unexplained:
        log.warning("%s: %d backbone tensors missing from %s (e.g. %s); they keep their random init",
                    name, len(unexplained), path, unexplained[:3])
    log.info("%s: loaded %d tensors from %s; missing %d, unexpected %d", name, report["loaded_keys"], path,
             len(report["missing_keys"]), len(report["unexpected_keys"]))
    record.update({"source": str(path.resolve()), "sha256": file_sha256(path),
                   "missing_keys": report["missing_keys"], "unexpected_keys": report["unexpected_keys"],
                   "shape_mismatch_keys": report["shape_mismatch_keys"], "loaded_keys": report["loaded_keys"],
                   "random_init": False, "backbone_missing_keys": unexplained,
                   "note": "weights from file; tensors in missing_keys (head, CBAM) keep their fresh init"})
    return record
