"""Decode + resize every image once and keep the uint8 result on disk, keyed by content hash, size and preprocessing.

Preprocessing (PREP_VERSION "1"): full PIL decode (a truncated/corrupt file raises BadInput); conversion to 8 bits
by protocols.imagemode.to_8bit (the same function the near-duplicate hashes use: 16-bit scaled, not clipped);
then a resize to size x size (aspect ratio not kept, as in the paper's 224x224 input) with PIL's bilinear
filter, which antialiases when downscaling (the filter support grows with the reduction factor); grey is replicated to 3 channels last.

Cache layout: CACHE/v<PREP_VERSION>/<size>/<sha[:2]>/<sha>.u8 with sha the file's content sha256; each entry is
b"FBC1" + sha256(payload) + payload (3*size*size bytes, CHW), written to a temp file and renamed. An entry whose
length, magic or checksum is wrong is treated as missing and rebuilt. CACHE is `cache_dir`, else
$FIBROBENCH_CACHE, else <data root>/.fibrobench-cache (ignored by the loader as a hidden folder), else, when that
is not writable, ~/.cache/fibrobench.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from protocols.atomic import write_bytes
from protocols.data import DEFAULT_WORKERS, file_sha256
from protocols.errors import BadInput
from protocols.imagemode import to_8bit  # the one mode normalisation, shared with protocols/hashing.py

PREP_VERSION = "1"
MAGIC = b"FBC1"
_HEADER = len(MAGIC) + 32


def decode_resize(path, size: int) -> np.ndarray:
    """uint8 [3, size, size] of one image (full decode; BadInput when the file is corrupt or truncated)."""
    try:
        with Image.open(path) as im:
            im.load()
            im8 = to_8bit(im, path)
            out = im8.resize((size, size), Image.BILINEAR)
    except BadInput:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadInput(path, "image", f"cannot decode image ({type(exc).__name__}: {exc})") from None
    a = np.asarray(out)
    if a.ndim == 2:
        return np.ascontiguousarray(np.broadcast_to(a, (3, size, size)))
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def default_cache_dir(root) -> Path:
    env = os.environ.get("FIBROBENCH_CACHE")
    if env:
        return Path(env)
    if root:
        cand = Path(root) / ".fibrobench-cache"
        try:
            cand.mkdir(parents=True, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            pass
    return Path.home() / ".cache" / "fibrobench"


def entry_path(cache_dir, sha: str, size: int) -> Path:
    return Path(cache_dir) / f"v{PREP_VERSION}" / str(size) / sha[:2] / f"{sha}.u8"


def read_entry(p: Path, size: int) -> np.ndarray | None:
    """The cached array, or None when the entry is missing, truncated or fails its checksum."""
    try:
        data = p.read_bytes()
    except OSError:
        return None
    n = 3 * size * size
    if len(data) != _HEADER + n or data[:4] != MAGIC:
        return None
    payload = memoryview(data)[_HEADER:]
    if hashlib.sha256(payload).digest() != data[4:_HEADER]:
        return None
    return np.frombuffer(payload, dtype=np.uint8).reshape(3, size, size)


def write_entry(p: Path, arr: np.ndarray) -> None:
    """Temp file + rename (no fsync: a torn entry fails its checksum and is rebuilt)."""
    payload = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    write_bytes(p, MAGIC + hashlib.sha256(payload).digest() + payload, fsync=False)


def load_images(df, size: int, cache_dir=None, progress: bool = False, workers: int | None = None,
                stats: dict | None = None):
    """torch.uint8 [N, 3, size, size] of df's images in df's row order, read from / written to the cache.

    `stats`, when given, is filled with {"hits", "misses", "rebuilt"} (rebuilt = corrupt entries replaced).
    """
    import torch

    size = int(size)
    if size < 1:
        raise BadInput("load_images", "size", f"must be >= 1, got {size}")
    workers = DEFAULT_WORKERS if workers is None else max(1, int(workers))
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir(df.attrs.get("root"))
    paths = list(df["path"])
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    counts = {"hits": 0, "misses": 0, "rebuilt": 0}
    cache_ok = [True]

    def one(i: int) -> str:
        path = paths[i]
        sha = file_sha256(path)
        ep = entry_path(cdir, sha, size)
        arr = read_entry(ep, size)
        if arr is not None:
            out[i] = arr
            return "hits"
        kind = "rebuilt" if ep.exists() else "misses"
        arr = decode_resize(path, size)
        if file_sha256(path) != sha:      # changed while we read it: do not cache under the old hash
            raise BadInput(path, "file", "changed while being read")
        out[i] = arr
        if cache_ok[0]:
            try:
                write_entry(ep, arr)
            except OSError as exc:
                cache_ok[0] = False
                warnings.warn(f"fibrobench cache not writable ({cdir}: {exc}); continuing without caching")
        return kind

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(paths), unit="img", desc=f"images {size}px")
    if workers <= 1 or len(paths) < 8:
        for i in range(len(paths)):
            counts[one(i)] += 1
            if bar:
                bar.update(1)
    else:
        with ThreadPoolExecutor(workers) as ex:
            for kind in ex.map(one, range(len(paths)), chunksize=8):
                counts[kind] += 1
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    if stats is not None:
        stats.update(counts, cache_dir=str(cdir))
    return torch.from_numpy(out)
