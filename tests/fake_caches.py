"""Fake download caches for tests: what huggingface_hub leaves on disk after a download."""
from __future__ import annotations

import hashlib


def fake_hf_file(hf_cache, repo: str, filename: str, payload: bytes, blob_name: str | None = None):
    """What huggingface_hub leaves in its cache: refs/main, blobs/<sha256>, snapshots/<rev>/<file> -> blob."""
    root = hf_cache / f"models--{repo.replace('/', '--')}"
    rev = "0" * 40
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    blob = root / "blobs" / (blob_name or hashlib.sha256(payload).hexdigest())
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    snap = root / "snapshots" / rev / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(blob)
    return snap
