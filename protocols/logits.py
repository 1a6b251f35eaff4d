"""The logit store: .npz files with ids / logits / labels (and probs for ensembles), written atomically, read checked."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from protocols.atomic import write_npz
from protocols.errors import BadInput

KEYS = ("ids", "logits", "labels")


def write_logits(path, ids, logits, labels, probs=None) -> Path:
    """ids: str [N]; logits: float32 [N, C]; labels: int64 [N]; optional probs: float32 [N, C]."""
    ids = np.asarray([str(i) for i in ids])
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != len(ids) or labels.shape != (len(ids),):
        raise ValueError(f"inconsistent shapes: ids {ids.shape}, logits {logits.shape}, labels {labels.shape}")
    arrays = {"ids": ids, "logits": logits, "labels": labels}
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != logits.shape:
            raise ValueError(f"probs {probs.shape} vs logits {logits.shape}")
        arrays["probs"] = probs
    return write_npz(path, **arrays)


def read_logits(path) -> dict[str, np.ndarray]:
    """Load and check a logits file; BadInput naming the file and key when it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, None, "logits file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # truncated/not a zip: BadZipFile
        raise BadInput(path, None, f"not a readable .npz: {exc}") from None
    for k in KEYS:
        if k not in out:
            raise BadInput(path, k, "missing array")
    n = len(out["ids"])
    if out["logits"].ndim != 2 or out["logits"].shape[0] != n:
        raise BadInput(path, "logits", f"expected shape [{n}, C], got {list(out['logits'].shape)}")
    if out["labels"].shape != (n,):
        raise BadInput(path, "labels", f"expected shape [{n}], got {list(out['labels'].shape)}")
    if not np.isfinite(out["logits"]).all():
        raise BadInput(path, "logits", "contains NaN or inf")
    if len(set(out["ids"].tolist())) != n:
        raise BadInput(path, "ids", "duplicate image ids")
    out["ids"] = out["ids"].astype(str)
    return out
