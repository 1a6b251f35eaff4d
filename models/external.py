"""Specs for models outside the built-in eight: any timm model, any torchvision classifier, a user's factory.

`timm/<name>` builds through `timm.create_model` (a fixed-input-size model, e.g. a ViT, gets
`img_size=input_size`); `tv/<name>` through `torchvision.models.get_model` (ViTs get `image_size`,
Inception/GoogLeNet lose their auxiliary heads so training sees one tensor); `package.module:factory`
imports the module and calls `factory(num_classes=C)` (plus `input_size=` when the factory takes it).
Each is checked once: its output on a dummy batch must be a [N, C] tensor.
"""
from __future__ import annotations

import importlib
import inspect
import os
import warnings
from typing import Callable

import torch
from torch import nn

from models.errors import BadInput
from models.names import FACTORY, TIMM, TV
from models.spec import ModelSpec


def _bad(name: str, message: str) -> BadInput:
    return BadInput("models", "name", f"{name}: {message}")


def timm_spec(name: str, ident: str) -> ModelSpec:
    import timm

    if not timm.is_model(ident):
        raise _bad(name, f"timm {timm.__version__} has no model {ident!r} "
                         f"(list them with `fibrobench models --search PATTERN`)")
    cfg = timm_pretrained_cfg(name, ident)

    def build(num_classes: int, input_size: int, **timm_kwargs) -> nn.Module:
        kw = {"img_size": input_size} if cfg is not None and cfg.fixed_input_size else {}
        return timm.create_model(ident, num_classes=num_classes, **kw, **timm_kwargs)

    head = cfg.classifier if cfg is not None and isinstance(cfg.classifier, str) else None
    return ModelSpec(name, ident, head, build, f"timm {ident}", kind=TIMM)


def timm_pretrained_cfg(name: str, ident: str):
    """timm's pretrained config for `ident` (the default tag when none is given), or None without one."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(ident)
    except RuntimeError as exc:  # a tag the architecture does not have
        raise _bad(name, str(exc)) from None


def tv_spec(name: str, ident: str) -> ModelSpec:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)  # classification models only (not detection/segmentation/video)
    if ident not in known:
        raise _bad(name, f"torchvision {__import__('torchvision').__version__} has no classification model "
                         f"{ident!r} (list them with `fibrobench models --search PATTERN`)")
    with torch.device("meta"), warnings.catch_warnings():  # which constructor options apply: shapes only
        warnings.simplefilter("ignore")
        probe = tvm.get_model(ident, weights=None, num_classes=2)
    size_multiple = getattr(probe, "patch_size", 1) if isinstance(probe, tvm.VisionTransformer) else 1

    def build(num_classes: int, input_size: int) -> nn.Module:
        kw = {}
        if isinstance(probe, tvm.VisionTransformer):
            kw["image_size"] = input_size
        if "aux_logits" in inspect.signature(type(probe).__init__).parameters:
            kw.update(aux_logits=False, init_weights=True)
        return tvm.get_model(ident, weights=None, num_classes=num_classes, **kw)

    return ModelSpec(name, ident, None, build, f"torchvision {ident}", size_multiple=size_multiple, kind=TV)


def load_factory(name: str) -> Callable:
    """The callable named by 'package.module:factory' (imported; bad input when it is not there)."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module, reported in one line
        raise _bad(name, f"cannot import {module_name} ({type(exc).__name__}: {exc}); "
                         f"is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise _bad(name, f"module {module_name} ({getattr(module, '__file__', '?')}) has no attribute {attr!r}")
    if not callable(factory):
        raise _bad(name, f"{attr} is a {type(factory).__name__}, not a callable taking num_classes")
    return factory


def factory_code(name: str) -> dict:
    """Provenance of a factory model: the module's file and its sha256 (the code can change between runs)."""
    import sys

    from models.hub import file_sha256

    path = getattr(sys.modules.get(name.partition(":")[0]), "__file__", None)
    return {"factory": name, "file": path, "sha256": file_sha256(path) if path and os.path.isfile(path) else None}


def factory_accepts(factory: Callable, param: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def factory_spec(name: str) -> ModelSpec:
    factory = load_factory(name)
    doc = (inspect.getdoc(factory) or "").strip().splitlines()

    def build(num_classes: int, input_size: int, **extra) -> nn.Module:
        kw = {"input_size": input_size} if factory_accepts(factory, "input_size") else {}
        try:
            model = factory(num_classes=num_classes, **kw, **extra)
        except TypeError as exc:
            raise _bad(name, f"factory(num_classes={num_classes}) failed: {exc}") from None
        if not isinstance(model, nn.Module):
            raise _bad(name, f"factory returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return ModelSpec(name, name, None, build, doc[0] if doc else f"user model {name}", kind=FACTORY)


def external_spec(kind: str, name: str, ident: str) -> ModelSpec:
    return {TIMM: timm_spec, TV: tv_spec}[kind](name, ident) if kind != FACTORY else factory_spec(name)


def check_output(model: nn.Module, name: str, num_classes: int, input_size: int) -> None:
    """One eval-mode forward of a zero batch of 2: the output must be a finite-shaped [2, num_classes] tensor."""
    was_training = model.training
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(2, 3, input_size, input_size, device=p.device if p is not None else "cpu")
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run this input is the user's input error
        raise BadInput("models", "input_size", f"{name} does not run on {input_size}x{input_size} inputs: "
                                               f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _bad(name, f"output for a batch of 2 must be a [2, {num_classes}] logits tensor, got {got}")


def classifier_path(model: nn.Module, num_classes: int) -> str | None:
    """Module path of the last Linear (or 1x1 Conv2d) with num_classes outputs: the classifier head."""
    found = None
    for path, m in model.named_modules():
        if (isinstance(m, nn.Linear) and m.out_features == num_classes) or \
                (isinstance(m, nn.Conv2d) and m.out_channels == num_classes):
            found = path
    return found
