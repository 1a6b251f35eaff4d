"""What is measured: the model registry, CBAM placements, offline weights and model facts (lazy imports)."""
from __future__ import annotations

_EXPORTS = {
    "create_model": "models.registry",
    "create_feature_extractor": "models.registry",
    "list_models": "models.registry",
    "model_facts": "models.facts",
    "CBAM": "models.cbam",
}

__all__ = list(_EXPORTS)


def __getattr__(name):  # PEP 562: importing `models` stays light; torchvision loads on first use
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
