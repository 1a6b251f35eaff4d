"""Holdout + k-fold splits at image, patient or cluster level, written once per run as splits.json (sha-checked)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from protocols.atomic import sha256_of, write_json
from protocols.errors import BadInput
from protocols.runfiles import read_json

SCHEMA = "fibrobench.splits/1"
LEVELS = ("image", "patient", "cluster")


def _where(df) -> str:
    return str(df.attrs.get("root", "<manifest>")) if hasattr(df, "attrs") else "<manifest>"


def _groups_for(df: pd.DataFrame, level: str, groups) -> np.ndarray:
    ids = df["image_id"].astype(str)
    if level == "image":
        return ids.to_numpy()
    if level == "patient":
        if "patient_id" not in df.columns:
            raise BadInput(_where(df), "patient_id", "a patient-level split needs a patient_id column")
        pid = df["patient_id"]
        missing = pid.isna() | (pid.astype(str).str.strip() == "") | (pid.astype(str) == "None")
        if missing.any():
            first = ids[missing].iloc[0]
            raise BadInput(_where(df), "patient_id", f"missing for {int(missing.sum())} image(s), e.g. {first!r}; "
                           "a patient-level split needs it for every image")
        return pid.astype(str).to_numpy()
    if level == "cluster":
        if groups is None:
            raise BadInput(_where(df), "groups", "a cluster-level split needs near-duplicate clusters "
                           "(protocols.leakage.find_clusters)")
        g = groups if isinstance(groups, dict) else dict(groups)
        lacking = [i for i in ids if i not in g]
        if lacking:
            raise BadInput(_where(df), "groups", f"no cluster id for {len(lacking)} image(s), e.g. {lacking[0]!r}")
        return np.array([f"cluster-{g[i]}" for i in ids], dtype=object)
    raise BadInput(_where(df), "split.level", f"expected one of {', '.join(LEVELS)}, got {level!r}")


def _counts(labels: np.ndarray, n_classes: int) -> list[int]:
    return [int(c) for c in np.bincount(labels, minlength=n_classes)]


def _class_names(df: pd.DataFrame, class_names) -> list[str]:
    """The task's classes: given, else df.attrs["class_names"] (protocols.data.load_manifest), else "0".."K-1"."""
    if class_names is None:
        class_names = df.attrs.get("class_names") if hasattr(df, "attrs") else None
    if class_names is None:
        class_names = [str(k) for k in range(int(np.max(df["label"].to_numpy(), initial=0)) + 1)]
    return [str(c) for c in class_names]


def make_splits(df: pd.DataFrame, level: str, test_fraction: float = 0.2, n_folds: int = 5, seed: int = 0,
                groups=None, class_names=None) -> dict:
    """Stratified holdout + stratified k-fold on the rest; grouped (no group in two partitions) unless level=image.
    Strata are the task's classes (`label` indexes `class_names`, which splits.json records).

    image:   train_test_split(stratify) + StratifiedKFold.
    patient: groups = manifest patient_id; holdout = one split of StratifiedGroupKFold(round(1/test_fraction)),
             folds = StratifiedGroupKFold(n_folds). The realised test fraction is recorded.
    cluster: groups = {image_id: cluster_id} (near-duplicate clusters), same grouped scheme.
    """
    where = _where(df)
    if not 0 < test_fraction < 1:
        raise BadInput(where, "split.test_fraction", f"expected a number strictly between 0 and 1, got {test_fraction!r}")
    if n_folds < 2:
        raise BadInput(where, "split.n_folds", f"expected at least 2, got {n_folds!r}")
    if df["image_id"].duplicated().any():
        dup = df["image_id"][df["image_id"].duplicated()].iloc[0]
        raise BadInput(where, "image_id", f"duplicate image_id {dup!r}")
    df = df.sort_values("image_id").reset_index(drop=True)
    ids = df["image_id"].astype(str).to_numpy()
    labels = df["label"].to_numpy().astype(np.int64)
    names = _class_names(df, class_names)
    n_classes = len(names)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= n_classes:
        raise BadInput(where, "label", f"labels must be in 0..{n_classes - 1}")
    grp = _groups_for(df, level, groups)

    try:
        if level == "image":
            idx = np.arange(len(ids))
            tv_idx, te_idx = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed,
                                              shuffle=True)
            fold_iter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
                np.zeros(len(tv_idx)), labels[tv_idx])
        else:
            k = max(2, int(round(1 / test_fraction)))
            sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            tv_idx, te_idx = next(sgkf.split(np.zeros(len(ids)), labels, grp))
            fold_iter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
                np.zeros(len(tv_idx)), labels[tv_idx], grp[tv_idx])
        folds_idx = [(tv_idx[a], tv_idx[b]) for a, b in fold_iter]
    except ValueError as exc:  # too few images/groups per class for the requested split
        raise BadInput(where, "split", f"cannot make a {level}-level split with test_fraction={test_fraction}, "
                       f"n_folds={n_folds}: {exc}") from None

    tv_idx, te_idx = np.sort(tv_idx), np.sort(te_idx)
    body = {
        "schema": SCHEMA,
        "level": level,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "realised_test_fraction": len(te_idx) / len(ids),
        "n_folds": int(n_folds),
        "class_names": names,
        "images": _image_entries(df, ids, labels, grp),
        "holdout": {"trainval": ids[tv_idx].tolist(), "test": ids[te_idx].tolist()},
        "folds": [{"fold": k, "train": ids[np.sort(a)].tolist(), "val": ids[np.sort(b)].tolist()}
                  for k, (a, b) in enumerate(folds_idx)],
        "class_counts": {
            "trainval": _counts(labels[tv_idx], n_classes),
            "test": _counts(labels[te_idx], n_classes),
            "folds": [{"train": _counts(labels[a], n_classes), "val": _counts(labels[b], n_classes)}
                      for a, b in folds_idx],
        },
    }
    body["sha256"] = sha256_of(body)
    return body


def _image_entries(df, ids, labels, grp) -> dict:
    """image_id -> label, split group, and the patient when the manifest knows it (whatever the split level),
    so that statistics can resample patients even when the split itself was made per image."""
    patients = df["patient_id"].tolist() if "patient_id" in df.columns else [None] * len(ids)
    out = {}
    for i, l, g, pid in zip(ids, labels, grp, patients):
        entry = {"label": int(l), "group": str(g)}
        if pid is not None and pid == pid:  # not None / NaN
            entry["patient"] = str(pid)
        out[i] = entry
    return out


def config_of(splits: dict) -> dict:
    """The parameters that define a split (what a re-run must agree on)."""
    return {k: splits.get(k) for k in ("level", "seed", "test_fraction", "n_folds")}


def verify(splits: dict, path="splits.json") -> dict:
    """Check schema and sha256; BadInput on mismatch."""
    if not isinstance(splits, dict) or splits.get("schema") != SCHEMA:
        raise BadInput(path, "schema", f"expected {SCHEMA!r}")
    body = {k: v for k, v in splits.items() if k != "sha256"}
    if sha256_of(body) != splits.get("sha256"):
        raise BadInput(path, "sha256", "does not match the content: the splits file was edited or is corrupt")
    return splits


def read_splits(path) -> dict:
    """Load splits.json and verify its sha256."""
    return verify(read_json(path), path)


def write_splits(run_dir, splits: dict) -> Path:
    """Write RUN_DIR/splits.json once; an identical re-write is a no-op, a different one is refused."""
    path = Path(run_dir) / "splits.json"
    verify(splits, "<new splits>")
    if path.exists():
        old = read_splits(path)
        if old["sha256"] != splits["sha256"]:
            raise BadInput(path, "sha256", f"this run dir already has different splits ({config_of(old)}); "
                           f"refusing to overwrite with {config_of(splits)} -- use a new --out")
        return path
    write_json(path, splits)
    return path


def check_matches_manifest(splits: dict, df: pd.DataFrame, path="splits.json") -> None:
    """The splits must cover exactly the manifest's images with the same labels and classes (reuse across re-runs)."""
    names = df.attrs.get("class_names") if hasattr(df, "attrs") else None
    if names is not None and splits.get("class_names") is not None and list(splits["class_names"]) != list(names):
        raise BadInput(path, "class_names", f"{splits['class_names']} differ from the task's classes {list(names)}")
    have = {str(i): int(l) for i, l in zip(df["image_id"], df["label"])}
    want = {i: v["label"] for i, v in splits["images"].items()}
    if have != want:
        extra, gone = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        relabel = sorted(i for i in set(have) & set(want) if have[i] != want[i])
        detail = (f"{len(extra)} new, {len(gone)} missing, {len(relabel)} relabelled image(s)"
                  + (f", e.g. {(extra or gone or relabel)[0]!r}" if extra or gone or relabel else ""))
        raise BadInput(path, "images", f"does not match the data: {detail}")


def partition_of(splits: dict, fold: int) -> dict[str, list[str]]:
    """train / val / test ids for one fold."""
    f = splits["folds"][fold]
    if f["fold"] != fold:
        raise BadInput("splits.json", f"folds[{fold}].fold", f"expected {fold}, got {f['fold']}")
    return {"train": f["train"], "val": f["val"], "test": splits["holdout"]["test"]}


