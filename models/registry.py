"""The model registry: built-in names, `timm/<name>`, `tv/<name>` and `package.module:factory`, each with a fresh k-class head."""
from __future__ import annotations

from typing import Callable

from torch import nn

from models.errors import BadInput
from models.names import BUILTIN, FACTORY, parse_name
from models.spec import ModelSpec

MIN_INPUT_SIZE = 32


def _tv(fn_name: str, **extra) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, input_size: int) -> nn.Module:
        import torchvision.models as tvm

        kwargs = {k: (input_size if v == "input_size" else v) for k, v in extra.items()}
        return getattr(tvm, fn_name)(weights=None, num_classes=num_classes, **kwargs)

    return build


def _cbam(placement: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, input_size: int) -> nn.Module:
        from models.resnet_cbam import resnet50_cbam

        return resnet50_cbam(placement, num_classes=num_classes)

    return build


_SPECS = [
    ModelSpec("resnet50", "resnet50", "fc", _tv("resnet50"), "torchvision ResNet-50 (baseline)"),
    ModelSpec("resnet50_cbam", "resnet50", "fc", _cbam("stage"),
              "ResNet-50 + CBAM after each of the 4 residual stages (the paper's text)"),
    ModelSpec("resnet50_cbam_post", "resnet50", "fc", _cbam("post"),
              "ResNet-50 + CBAM on the residual sum of every bottleneck, y = ReLU(CBAM(F(x)+x)) (paper Eq. 4)"),
    ModelSpec("resnet50_cbam_woo", "resnet50", "fc", _cbam("woo"),
              "ResNet-50 + CBAM on F(x) before the add in every bottleneck (Woo et al. 2018)"),
    ModelSpec("vgg16", "vgg16", "classifier.6", _tv("vgg16"), "torchvision VGG-16 (no BN)"),
    ModelSpec("densenet121", "densenet121", "classifier", _tv("densenet121"), "torchvision DenseNet-121"),
    ModelSpec("efficientnet_b0", "efficientnet_b0", "classifier.1", _tv("efficientnet_b0"),
              "torchvision EfficientNet-B0"),
    ModelSpec("vit_b_16", "vit_b_16", "heads.head", _tv("vit_b_16", image_size="input_size"),
              "torchvision ViT-B/16, position embeddings sized for the input", size_multiple=16),
]
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def list_models() -> list[str]:
    """Built-in model names, baseline first (any timm/<name>, tv/<name> or package.module:factory works too)."""
    return list(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of any model name: built-in, timm/<name>, tv/<name> or package.module:factory."""
    try:
        kind, ident = parse_name(name)
    except ValueError as exc:
        raise BadInput("models", "name", str(exc)) from None
    if kind == BUILTIN:
        if name not in REGISTRY:
            raise BadInput("models", "name", f"unknown model {name!r}; built-in: {', '.join(REGISTRY)}; "
                                             f"or timm/<name>, tv/<name>, package.module:factory")
        return REGISTRY[name]
    from models.external import external_spec

    return external_spec(kind, name, ident)


def check_input_size(spec: ModelSpec, input_size) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE \
            or input_size % spec.size_multiple:
        rule = f"an integer >= {MIN_INPUT_SIZE}" + (
            f" and a multiple of {spec.size_multiple}" if spec.size_multiple > 1 else "")
        raise BadInput("models", "input_size", f"{spec.name} needs input_size {rule}, got {input_size!r}")
    return input_size


def create_model(name: str, num_classes: int = 5, pretrained=None, input_size: int = 224,
                 allow_random_init: bool = True) -> nn.Module:
    """Build model `name` with a `num_classes` head for square `input_size` inputs.

    pretrained: None/False (random init), "imagenet"/True (the model's published ImageNet weights, found
    offline in the torch hub or Hugging Face cache; `fibrobench weights fetch NAME` puts them there) or a
    path to a weights file. The result carries `.fibro_weights` (what was loaded, what stayed fresh) and
    `.fibro_head` (module path of the classifier).
    """
    from models.weights import apply_pretrained, normalise_pretrained

    spec = get_spec(name)
    check_input_size(spec, input_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise BadInput("models", "num_classes", f"need an integer >= 2, got {num_classes!r}")
    model, record = apply_pretrained(spec, num_classes, input_size, normalise_pretrained(pretrained),
                                     allow_random_init)
    if spec.kind != BUILTIN:
        from models.external import check_output, classifier_path

        check_output(model, name, num_classes, input_size)
        head = spec.head or classifier_path(model, num_classes)
        if spec.kind == FACTORY:
            from models.external import factory_code

            model.fibro_code = factory_code(name)
    else:
        head = spec.head
    model.fibro_weights = record
    model.fibro_name = name
    model.fibro_input_size = input_size
    model.fibro_head = head
    return model


def _replace(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    setattr(parent, attr, new)
    return old


def create_feature_extractor(name: str, pretrained=None, input_size: int = 224,
                             allow_random_init: bool = True) -> tuple[nn.Module, int]:
    """(module mapping [N,3,H,W] -> [N,D], D): model `name` with its final classifier Linear removed.

    The features are the input of that Linear (ResNet/DenseNet/EfficientNet: pooled conv features;
    VGG-16: the 4096-d penultimate FC layer; ViT: the class token). Returned in eval mode.
    """
    model = create_model(name, num_classes=2, pretrained=pretrained, input_size=input_size,
                         allow_random_init=allow_random_init)
    if model.fibro_head is None:
        raise BadInput("models", "name", f"{name}: no classifier layer with 2 outputs found to remove")
    old = _replace(model, model.fibro_head, nn.Identity())
    if not isinstance(old, nn.Linear):
        raise BadInput("models", "name", f"{name}: expected a Linear classifier at {model.fibro_head}, "
                                         f"found {type(old).__name__}; cannot take features before it")
    model.fibro_feature_dim = old.in_features
    return model.eval(), old.in_features
