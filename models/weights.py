"""Offline pretrained weights: build a model from its published ImageNet file or a given file, and record it.

Nothing here downloads. `pretrained="imagenet"` (or True) takes the file that models.hub finds in the
torch hub cache (torchvision, timm URL weights) or the Hugging Face cache (timm); `pretrained="/path/file"`
reads that file. torchvision/built-in/factory models get the tensors whose names and shapes match
(torch.load(weights_only=True)); timm models load through timm itself (its checkpoint filter, head
reset and position-embedding resampling), with the file given as timm's `pretrained_cfg` `file`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from models.errors import BadInput
from models.hub import file_sha256, find_cached, missing_message
from models.names import FACTORY, TIMM
from models.safe_load import load_weights_only, reason

log = logging.getLogger("fibrobench.models")

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


def load_state_dict_into(model: nn.Module, sd: dict[str, torch.Tensor], arch: str, path: Path) -> dict:
    """Copy every tensor whose name and shape match; report what was left out on either side."""
    sd = _fit_vit_positions(remap_densenet_keys(sd), model)  # both no-ops for other architectures
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


def is_fresh_key(key: str, head: str | None) -> bool:
    """True for tensors that start fresh on purpose: the new classifier head and every CBAM module."""
    return (head is not None and key.startswith(head + ".")) or any(part.startswith("cbam") for part in key.split("."))




def normalise_pretrained(pretrained) -> str | None:
    """None/False -> None (random init); True/'imagenet' -> 'imagenet'; anything else -> a file path string."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True or str(pretrained).lower() == "imagenet":
        return "imagenet"
    return str(pretrained)


def _record(pretrained) -> dict:
    return {"requested": pretrained, "source": None, "sha256": None, "missing_keys": [], "unexpected_keys": [],
            "shape_mismatch_keys": [], "random_init": True, "note": ""}


def _timm_compare(model: nn.Module, path: Path, head: str | None) -> dict:
    """What timm loaded, read back from the model: tensors identical to the file's (loaded), present in the
    file under the same name but changed (adapted by timm's checkpoint filter, e.g. resampled position
    embeddings), and the rest (missing: the fresh head, or renamed by the filter)."""
    from timm.models import load_state_dict

    sd = load_state_dict(str(path))
    own = model.state_dict()
    same = {k for k, v in own.items() if k in sd and sd[k].shape == v.shape and torch.equal(sd[k], v.to(sd[k].device))}
    if not same:
        raise BadInput(path, "pretrained", f"no tensor in the file matches a parameter of {model.fibro_arch} "
                                           f"(first file keys: {sorted(sd)[:3]}); wrong architecture?")
    adapted = sorted(k for k in own if k in sd and k not in same and not is_fresh_key(k, head))
    mismatched = sorted(k for k, v in sd.items() if k in own and own[k].shape != v.shape)
    return {"missing_keys": sorted(set(own) - same - set(adapted)), "adapted_keys": adapted,
            "unexpected_keys": sorted(set(sd) - set(own)) + mismatched, "shape_mismatch_keys": mismatched,
            "loaded_keys": len(same)}


def _build_timm(spec, num_classes: int, input_size: int, path: Path) -> tuple[nn.Module, dict]:
    try:
        # timm's custom_load (the model's own loader) reads original .npz releases; any other file is a state
        # dict (timm resets custom_load for a file overlay, so a cached .npz must ask for it)
        overlay = {"file": str(path), "custom_load": path.suffix == ".npz"}
        model = spec.build(num_classes, input_size, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # noqa: BLE001 - whatever timm/torch raise on the user's file (UnpicklingError too)
        raise BadInput(path, "pretrained", f"timm could not load it into {spec.arch} ({reason(exc)}); fibrobench "
                                           "loads only tensors, never pickled code") from None
    model.fibro_arch = spec.arch
    if (getattr(model, "pretrained_cfg", None) or {}).get("custom_load"):  # e.g. .npz files: timm's own loader
        return model, {"missing_keys": [], "unexpected_keys": [], "shape_mismatch_keys": [], "loaded_keys": None,
                       "custom_load": True}
    return model, _timm_compare(model, path, spec.head)


def _build_from_file(spec, num_classes: int, input_size: int, path: Path) -> tuple[nn.Module, dict]:
    if spec.kind == TIMM:
        return _build_timm(spec, num_classes, input_size, path)
    model = spec.build(num_classes, input_size)
    return model, load_state_dict_into(model, read_state_dict(path), spec.arch, path)


def apply_pretrained(spec, num_classes: int, input_size: int, pretrained: str | None,
                     allow_random_init: bool) -> tuple[nn.Module, dict]:
    """Build `spec`'s model with weights per `pretrained` (None | 'imagenet' | path); (model, record).

    The classifier head and CBAM are expected to stay freshly initialised; any other tensor not loaded is
    logged as a warning and listed in `backbone_missing_keys`.
    """
    from models.external import classifier_path

    record = _record(pretrained)
    if pretrained is None:
        record["note"] = "random initialisation (no pretrained weights requested)"
        return spec.build(num_classes, input_size), record
    if pretrained == "imagenet":
        if spec.kind == FACTORY:
            from models.external import factory_accepts, load_factory

            if factory_accepts(load_factory(spec.name), "pretrained"):
                model = spec.build(num_classes, input_size, pretrained=True)
                record.update(source=f"{spec.name}(pretrained=True)", random_init=False,
                              note="the factory loaded its own pretrained weights (not checked here)")
                return model, record
        found = find_cached(spec)
        if found is None:
            msg = missing_message(spec)
            if not allow_random_init:
                raise BadInput("models", "pretrained", msg)
            log.warning("%s; falling back to random initialisation", msg)
            record["note"] = msg + "; fell back to random initialisation"
            return spec.build(num_classes, input_size), record
        src, path = found
        record["weights_tag"] = f"{src.library}:{src.tag}"
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise BadInput(path, "pretrained", f"weights file for {spec.name} does not exist")
    model, report = _build_from_file(spec, num_classes, input_size, path)
    head = spec.head or classifier_path(model, num_classes)
    unexplained = [k for k in report["missing_keys"] if not is_fresh_key(k, head)]
    if unexplained:
        log.warning("%s: %d backbone tensors not loaded from %s (e.g. %s); they keep their random init",
                    spec.name, len(unexplained), path, unexplained[:3])
    log.info("%s: loaded %s tensors from %s; missing %d, unexpected %d", spec.name, report["loaded_keys"], path,
             len(report["missing_keys"]), len(report["unexpected_keys"]))
    record.update({"source": str(path.resolve()), "sha256": file_sha256(path),
                   "missing_keys": report["missing_keys"], "unexpected_keys": report["unexpected_keys"],
                   "shape_mismatch_keys": report["shape_mismatch_keys"], "loaded_keys": report["loaded_keys"],
                   "random_init": False, "backbone_missing_keys": unexplained,
                   **({"adapted_keys": report["adapted_keys"]} if "adapted_keys" in report else {}),
                   "note": ("weights from file through timm's model-specific loader (custom_load; tensors not "
                            "compared)" if report.get("custom_load") else
                            "weights from file through timm (adapted_keys: changed by timm's checkpoint filter, "
                            "e.g. resampled; missing_keys: the fresh head)" if spec.kind == TIMM else
                            "weights from file; tensors in missing_keys (head, CBAM) keep their fresh init")})
    return model, record
