"""Load and validate a dataset (ImageFolder or a manifest CSV) into the one manifest table everything uses.

Labels come from the protocol's task (protocols.config.TaskCfg): a dataset label (class folder name or CSV label
string) is matched case-insensitively against `task.map`'s keys, or without a map against `task.classes`, and
`label` is the index of its class in `task.classes`. Without a task, the dataset's own labels are the classes,
sorted by name (torchvision's ImageFolder convention) and nominal; `df.attrs["class_names"]` says which.

Rules (each violation raises protocols.errors.BadInput naming the file and the field):
- A directory is read through its `manifest.csv` when it has one (patient IDs live there), else as an ImageFolder:
  one folder per dataset label, searched recursively. Hidden files and folders (name starting with "."; e.g.
  .DS_Store, .fibrobench-cache) and the OS clutter files Thumbs.db / desktop.ini / __MACOSX are ignored.
  Other files at the top level (README, synth.json, ...) are ignored; an image file at the top level, an unknown
  folder, two folders for one label (names that differ only in case), a class folder without images, a task
  class no image maps to, or a non-image file inside a class folder is an error.
- A manifest CSV needs columns `path` and `label` (patient_id, site, device optional; names case-insensitive).
  Paths are relative to the CSV's folder (absolute paths allowed). Labels: any strings, matched as above; with a
  task, an integer k that matches no label stands for the k-th dataset label (0-based).
  Errors: malformed CSV, missing column, no rows, empty path, unknown label, duplicate path, missing file,
  non-image file, empty patient_id (when the column exists), a label contradicting the dataset-label folder the
  path lies in, a class without images.
- Every image's header is checked at load (PIL open + verify: PNG chunk CRCs, truncation); the full decode happens
  in protocols.cache, which raises BadInput for corrupt pixel data too.
- Images of any PIL mode are accepted; protocols.cache converts them (16-bit scaled by 255/65535, alpha dropped,
  palette expanded, grey replicated to 3 channels).
"""
from __future__ import annotations

import csv
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from protocols.atomic import sha256_file, sha256_of
from protocols.config import TaskCfg
from protocols.errors import BadInput

COLUMNS = ("image_id", "path", "label", "label_name", "patient_id", "site", "device")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
MANIFEST_NAME = "manifest.csv"
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def is_ignored(name: str) -> bool:
    """Hidden files/folders and OS clutter that never count as data."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


class LabelSpace:
    """Dataset labels (folder names, CSV label strings; case-insensitive) -> index into the task's classes."""

    def __init__(self, task: TaskCfg):
        self.task = task
        self.classes = tuple(task.classes)
        self.labels = tuple(task.dataset_labels)
        self._key = {lab.lower(): lab for lab in self.labels}
        self.what = "a task.map key" if task.map else "a task class"

    def dataset_label(self, value, allow_index: bool = True) -> str | None:
        """'f3' -> 'F3' (the spelling in the task); an integer k matching no label -> the k-th label; else None."""
        s = str(value).strip()
        hit = self._key.get(s.lower())
        if hit is None and allow_index and s.isdigit() and int(s) < len(self.labels):
            hit = self.labels[int(s)]
        return hit

    def index(self, dataset_label: str) -> int:
        return self.classes.index(self.task.class_of(dataset_label))

    def expected(self) -> str:
        return ", ".join(self.labels)


def inferred_task(labels, where="<data>") -> TaskCfg:
    """The dataset's own labels as a nominal task: one class per distinct label (ignoring case), sorted by name."""
    first: dict[str, str] = {}
    for lab in sorted(str(x).strip() for x in labels):
        first.setdefault(lab.lower(), lab)
    classes = tuple(sorted(first.values()))
    if len(classes) < 2:
        raise BadInput(where, "label", f"need at least 2 classes (class folders or labels), found {list(classes)}")
    return TaskCfg(classes=classes, positive=classes[1] if len(classes) == 2 else None)


def _check_every_class(space: LabelSpace, labels, where) -> None:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(space.classes))
    for k, n in enumerate(counts):
        if n == 0:
            cls = space.classes[k]
            via = [lab for lab in space.labels if space.task.class_of(lab) == cls]
            hint = f" (dataset labels mapped to it: {', '.join(via)})" if space.task.map else ""
            raise BadInput(where, "label", f"class {cls} has no images{hint}")


# ---------------------------------------------------------------- content hashes (memoised per process)

_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime, ctime, inode) so a process hashes each file once."""
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
        key = (p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with _HASH_LOCK:
            hit = _HASHES.get(key)
        if hit is not None:
            return hit
        digest = sha256_file(p)
    except OSError as exc:
        raise BadInput(p, "file", f"cannot read: {exc.strerror or exc}") from None
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


def hash_files(paths, workers: int = DEFAULT_WORKERS) -> list[str]:
    """file_sha256 of many files, in order, using threads (hashlib releases the GIL)."""
    paths = list(paths)
    if workers <= 1 or len(paths) < 8:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(file_sha256, paths, chunksize=16))


def data_fingerprint(df: pd.DataFrame, workers: int = DEFAULT_WORKERS) -> str:
    """sha256 over (image_id, content sha256, label) of every image, in image_id order."""
    d = df.sort_values("image_id", kind="stable")
    hashes = hash_files(d["path"], workers)
    return sha256_of([[i, h, int(lab)] for i, h, lab in zip(d["image_id"], hashes, d["label"])])


# ---------------------------------------------------------------- image header check

# Pillow warns (a raw multi-line Python warning, once per file and without its name) about images between its
# decompression-bomb limit and twice that; every image fibrobench reads passes verify_image first, and _verify_all
# reports them in one line naming the largest. (catch_warnings is not thread-safe, hence a process-wide filter.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def verify_image(path) -> int:
    """Open and verify an image's header/structure (fast; no full decode); its pixel count. BadInput if unreadable
    (or beyond twice Pillow's decompression-bomb limit, which Pillow refuses)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadInput(path, "image", f"unreadable or corrupt image ({type(exc).__name__}: {exc})") from None
    return w * h


def _verify_all(paths, workers: int) -> None:
    paths = list(paths)
    if workers <= 1 or len(paths) < 8:
        pixels = [verify_image(p) for p in paths]
    else:
        with ThreadPoolExecutor(workers) as ex:
            pixels = list(ex.map(verify_image, paths, chunksize=16))
    limit = Image.MAX_IMAGE_PIXELS
    large = [i for i, n in enumerate(pixels) if limit and n > limit]
    if large:
        big = max(large, key=lambda i: pixels[i])
        logging.getLogger("fibrobench.data").warning(
            "%d image(s) exceed Pillow's decompression-bomb limit of %s pixels (largest: %s, %s pixels); they are "
            "decoded anyway", len(large), f"{limit:,}", paths[big], f"{pixels[big]:,}")


# ---------------------------------------------------------------- ImageFolder


def _class_folders(root: Path) -> list:
    folders = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if is_ignored(entry.name):
            continue
        if entry.is_dir():
            folders.append(entry)
        elif is_image_name(entry.name):
            raise BadInput(entry.path, "folder", "image outside a class folder (put it in one folder per class)")
    return folders


def _scan_folder(root: Path, task: TaskCfg | None) -> tuple[list[tuple[str, int]], TaskCfg]:
    folders = _class_folders(root)
    if task is None:
        task = inferred_task((e.name for e in folders), root)
    space = LabelSpace(task)
    found: dict[str, str] = {}
    for entry in folders:
        lab = space.dataset_label(entry.name, allow_index=False)
        if lab is None:
            raise BadInput(entry.path, "folder", f"unknown class folder {entry.name!r}; expected {space.what}: "
                                                 f"{space.expected()} (names ignore case)")
        if lab in found:
            raise BadInput(entry.path, "folder", f"second folder for label {lab} (also {found[lab]!r})")
        found[lab] = entry.name
    if not task.map:
        for lab in space.labels:
            if lab not in found:
                raise BadInput(root, "folder", f"missing class folder {lab}")
    rows = []
    for lab, name in found.items():
        k, n = space.index(lab), 0
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
            for fn in sorted(filenames):
                if is_ignored(fn):
                    continue
                full = os.path.join(dirpath, fn)
                if not is_image_name(fn):
                    raise BadInput(full, "file", f"not an image file (extension {Path(fn).suffix or 'none'!r})")
                rows.append((full, k))
                n += 1
        if n == 0:
            raise BadInput(root / name, "label", f"class folder {name} has no images")
    _check_every_class(space, [k for _, k in rows], root)
    return rows, task


# ---------------------------------------------------------------- manifest CSV


def _read_csv(csv_path: Path) -> list[dict]:
    """Rows of a manifest CSV as dicts with lower-cased column names; strict about quoting and field counts."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f, strict=True, skipinitialspace=True))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BadInput(csv_path, None, f"malformed CSV: {exc}") from None
    except OSError as exc:
        raise BadInput(csv_path, None, f"cannot read: {exc.strerror or exc}") from None
    table = [r for r in table if any(c.strip() for c in r)]           # blank lines
    if not table:
        raise BadInput(csv_path, None, "malformed CSV: empty file (no header)")
    header = [c.strip().lower() for c in table[0]]
    if len(set(header)) != len(header) or "" in header:
        raise BadInput(csv_path, "columns", f"empty or duplicate column names: {table[0]}")
    for col in ("path", "label"):
        if col not in header:
            raise BadInput(csv_path, "columns", f"missing required column {col!r} (have: {', '.join(header)})")
    if len(table) == 1:
        raise BadInput(csv_path, None, "no rows")
    rows = []
    for n, r in enumerate(table[1:], start=2):
        if len(r) != len(header):
            raise BadInput(csv_path, f"line {n}", f"malformed CSV: {len(r)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, r)))
    return rows


def _from_csv(csv_path: Path, task: TaskCfg | None):
    records = _read_csv(csv_path)
    base = os.path.abspath(csv_path.parent)
    if task is None:
        task = inferred_task((rec["label"] for rec in records), csv_path)
    space = LabelSpace(task)
    rows, seen = [], {}
    has_pid = "patient_id" in records[0]
    for i, rec in enumerate(records):
        line = i + 2
        raw = str(rec["path"]).strip()
        if not raw:
            raise BadInput(csv_path, f"path (line {line})", "empty path")
        full = os.path.normpath(raw if os.path.isabs(raw) else os.path.join(base, raw))
        lab = space.dataset_label(rec["label"])
        if lab is None:
            raise BadInput(csv_path, f"label (line {line})", f"unknown label {rec['label']!r}; expected "
                           f"{space.what}: {space.expected()} (names ignore case) or 0..{len(space.labels) - 1}")
        k = space.index(lab)
        if full in seen:
            raise BadInput(csv_path, f"path (line {line})", f"duplicate path {raw!r} (also line {seen[full]})")
        seen[full] = line
        if not is_image_name(full):
            raise BadInput(csv_path, f"path (line {line})", f"not an image file: {raw!r}")
        if not os.path.isfile(full):
            raise BadInput(csv_path, f"path (line {line})", f"file not found: {raw!r}")
        parts = Path(raw).parts if not os.path.isabs(raw) else ()
        folder = space.dataset_label(parts[0], allow_index=False) if len(parts) > 1 else None
        if folder is not None and folder != lab:
            raise BadInput(csv_path, f"label (line {line})", f"{lab} but the file is in folder {parts[0]!r}")
        pid = str(rec["patient_id"]).strip() if has_pid else None
        if has_pid and not pid:
            raise BadInput(csv_path, f"patient_id (line {line})",
                           "empty; give every row a patient_id or leave the column out")
        site = str(rec.get("site", "")).strip() or None
        device = str(rec.get("device", "")).strip() or None
        rows.append((full, k, pid, site, device))
    _check_every_class(space, [r[1] for r in rows], csv_path)
    root = base
    if any(not r[0].startswith(base + os.sep) for r in rows):   # absolute paths elsewhere: their common folder
        root = os.path.commonpath([base] + [os.path.dirname(r[0]) for r in rows])
    return rows, Path(root), task


# ---------------------------------------------------------------- entry point


def load_manifest(path, task: TaskCfg | None = None, verify: bool = True,
                  workers: int = DEFAULT_WORKERS) -> pd.DataFrame:
    """The dataset at `path` (ImageFolder dir, dir with manifest.csv, or a CSV) as the canonical manifest table.

    Columns (docs/contracts.md): image_id (posix path relative to the data root), path (absolute), label (index
    into the task's classes), label_name (the class), patient_id, site, device (str or None), sorted by image_id.
    df.attrs: "root" (the data root), "source" ("imagefolder" or the CSV path), "class_names" (the task's classes)
    and "task" (the TaskCfg used: `task`, or the one inferred from the data's labels when `task` is None).
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(p, None, "does not exist")
    if p.is_dir():
        csv_path = p / MANIFEST_NAME
        if csv_path.is_file():
            rows, root, task = _from_csv(csv_path, task)
            source = os.path.abspath(csv_path)
        else:
            root = Path(os.path.abspath(p))
            found, task = _scan_folder(root, task)
            rows = [(f, k, None, None, None) for f, k in found]
            source = "imagefolder"
    elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows, root, task = _from_csv(p, task)
        source = os.path.abspath(p)
    else:
        raise BadInput(p, None, "expected a dataset folder (one folder per class, or with manifest.csv) "
                                "or a manifest .csv file")

    recs = []
    for full, k, pid, site, device in rows:
        absp = os.path.abspath(full)
        recs.append({"image_id": Path(os.path.relpath(absp, root)).as_posix(), "path": absp, "label": k,
                     "label_name": task.classes[k], "patient_id": pid, "site": site, "device": device})
    df = pd.DataFrame({c: pd.Series([r[c] for r in recs], dtype=object) for c in COLUMNS})
    dup = df["image_id"].duplicated(keep=False)
    if dup.any():
        raise BadInput(source, "path", f"two rows name the same file: {df.loc[dup, 'image_id'].iloc[0]!r}")
    df = df.sort_values("image_id", kind="stable").reset_index(drop=True)
    df["label"] = df["label"].astype(np.int64)
    if verify:
        _verify_all(df["path"], workers)
    df.attrs["root"] = str(root)
    df.attrs["source"] = source
    df.attrs["class_names"] = list(task.classes)
    df.attrs["task"] = task
    return df


def class_counts(df: pd.DataFrame) -> list[int]:
    """Images per class, in the order of df.attrs["class_names"]."""
    n = len(df.attrs.get("class_names") or []) or int(df["label"].max()) + 1
    return np.bincount(df["label"].to_numpy(), minlength=n).astype(int).tolist()
