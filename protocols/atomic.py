"""Atomic file writes (temp file + rename) and canonical hashing shared by everything that writes a run."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from protocols.errors import BadInput


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], fsync: bool = True) -> Path:
    """Write to a temp file beside `path`, then rename it into place; a target that cannot be written (a
    directory, a parent that is a file or not writable, a read-only or full disk) is BadInput naming `path`."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(path, None, "is a directory; cannot write a file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise BadInput(path, None, "cannot create it: a parent path is a file, not a directory") from None
    except OSError as exc:
        raise BadInput(path, None, f"cannot write here: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _UNWRITABLE:
            raise BadInput(path, None, f"cannot write: {exc.strerror or exc}") from None
        raise
    return path

def write_bytes(path, data: bytes, fsync: bool = True) -> Path:
    """fsync=False for rebuildable data (cache entries) where a torn write is detected and redone."""
    return _atomic(path, lambda f: f.write(data), fsync=fsync)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_npz(path, **arrays: np.ndarray) -> Path:
    def _w(f):
        np.savez(f, **arrays)

    return _atomic(path, _w)
