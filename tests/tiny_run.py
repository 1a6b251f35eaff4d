"""A tiny CPU protocol file (32 px, 2 folds, no leakage gate) and RunOptions, for tests that drive bench.runner."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def tiny_protocol(tmp_path, name: str, models, **train) -> Path:
    """protocols/smoke/protocol.yaml shrunk to 32 px, 2 folds, 1 deterministic epoch of batch 16 (`train` overrides)."""
    doc = {"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": name,
           "data": {"input_size": 32}, "split": {"n_folds": 2}, "leakage": {"gate": "off"},
           "train": {"epochs": 1, "batch_size": 16, "deterministic": True, **train}, "models": models}
    p = Path(tmp_path) / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def run_options(data, out, **kw):
    """RunOptions for a quiet CPU run of `data` into `out` (keywords override)."""
    from bench.runner import RunOptions

    kw.setdefault("device", "cpu")
    return RunOptions(data=str(data), out=str(out), progress=False, **kw)
