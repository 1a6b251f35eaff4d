"""The run directory's files without torch: paths, JSON, DONE, logits .npz, class names, leak-checked ensemble + OOF.

The one layer that both writers (bench.runner, protocols.trainer) and readers (reports.rundir) use, so the
layout, the checks on what is read and the ensemble exist once. It imports numpy, scipy, protocols.atomic and
protocols.errors only; tests/test_layout.py checks that importing it loads no torch, which is why reports may
import it: the one module of protocols that reports is allowed to import.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
from scipy.special import softmax

from protocols.atomic import write_npz
from protocols.errors import BadInput

# The five METAVIR stages: the label space of run directories and manifests that do not name their classes
# (splits.json without "class_names", ImageFolder trees of F0..F4). The only place this constant is written.
LEGACY_CLASS_NAMES = ("F0", "F1", "F2", "F3", "F4")

KEYS = ("ids", "logits", "labels")
DONE = "DONE"                                           # a job is complete only when this marker exists
LOGITS = {"val": "val_logits.npz", "test": "test_logits.npz"}   # per job: the fold's validation set, the holdout


# ---------------------------------------------------------------- layout


def model_dir_name(model: str) -> str:
    """A model's folder in jobs/, ensemble/ and oof/: its name as a relative path ('timm/x' nests, as models.names'
    grammar allows); a name that could leave the run directory ('..', absolute, empty parts, backslash, NUL — say
    from an edited run.json) is BadInput."""
    name = model if isinstance(model, str) else ""
    if not name or "\\" in name or "\x00" in name or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadInput("<model name>", "model", f"{model!r} is not a safe relative folder name")
    return name


def job_dir(run_dir, model: str, fold: int) -> Path:
    """RUN/jobs/<model>/fold<k>/: checkpoint.pt, history.csv, val_logits.npz, test_logits.npz, DONE."""
    return Path(run_dir) / "jobs" / model_dir_name(model) / f"fold{int(fold)}"


def ensemble_path(run_dir, model: str) -> Path:
    return Path(run_dir) / "ensemble" / f"{model_dir_name(model)}.npz"


def oof_path(run_dir, model: str) -> Path:
    return Path(run_dir) / "oof" / f"{model_dir_name(model)}.npz"


def job_models(run_dir) -> list[str]:
    """Names of the models with at least one fold folder under jobs/ (nested names such as timm/x included), sorted."""
    jobs = Path(run_dir) / "jobs"
    found = []
    for d, subdirs, _ in os.walk(jobs):
        here = Path(d)
        folds = [s for s in subdirs if _fold_index(s) is not None]
        if folds and here != jobs:
            found.append(here.relative_to(jobs).as_posix())
        subdirs[:] = [s for s in subdirs if _fold_index(s) is None]     # no models inside a fold folder
    return sorted(found)


def _fold_index(name: str) -> int | None:
    """k for a canonical fold folder name fold<k> (fold3; not fold03, fold٣), else None."""
    digits = name[4:]
    if name.startswith("fold") and digits.isascii() and digits.isdigit() and name == f"fold{int(digits)}":
        return int(digits)
    return None


def fold_dirs(run_dir, model: str) -> list[tuple[int, Path]]:
    """(k, RUN/jobs/<model>/fold<k>) for every fold folder present, by k."""
    mdir = Path(run_dir) / "jobs" / model_dir_name(model)
    if not mdir.is_dir():
        return []
    return sorted((_fold_index(p.name), p) for p in mdir.iterdir() if p.is_dir() and _fold_index(p.name) is not None)


# ---------------------------------------------------------------- JSON and DONE


def read_json(path, required: bool = True):
    """Parsed JSON; None when absent and not required; BadInput naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise BadInput(path, None, "file not found")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(path, None, f"not valid JSON ({exc})") from None


def read_done(job) -> dict | None:
    """The job's DONE marker: None when absent (job incomplete); its JSON object ({} for an empty marker)."""
    path = Path(job) / DONE
    if not path.is_file():
        return None
    if not path.read_bytes().strip():
        return {}
    done = read_json(path)
    if not isinstance(done, dict):
        raise BadInput(path, None, "expected a JSON object")
    return done


def class_names(splits: dict | None, where="splits.json") -> list[str]:
    """The run's class names as splits.json records them; LEGACY_CLASS_NAMES for splits that predate the field."""
    names = (splits or {}).get("class_names")
    if names is None:
        return list(LEGACY_CLASS_NAMES)
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise BadInput(where, "class_names", "must be a non-empty list of distinct non-empty names")
    return list(names)


# ---------------------------------------------------------------- logits


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
    """Load and check a logits file (no pickles; numeric finite logits [N, C], integer labels [N], distinct ids,
    probs [N, C] when present); BadInput naming the file and key when it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, None, "logits file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # a truncated file is not a zip: BadZipFile
        raise BadInput(path, None, f"not a readable .npz: {exc}") from None
    for k in KEYS:
        if k not in out:
            raise BadInput(path, k, "missing array")
    n = len(out["ids"])
    if out["ids"].ndim != 1:
        raise BadInput(path, "ids", f"expected shape [N], got {list(out['ids'].shape)}")
    for k in ("logits", "probs"):
        if k not in out:
            continue
        a = out[k]
        if a.ndim != 2 or a.shape[0] != n or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise BadInput(path, k, f"expected numbers of shape [{n}, C], got {a.dtype} {list(a.shape)}")
        if not np.isfinite(a).all():
            raise BadInput(path, k, "contains NaN or inf")
    if "probs" in out and out["probs"].shape != out["logits"].shape:
        raise BadInput(path, "probs", f"shape {list(out['probs'].shape)} differs from logits {list(out['logits'].shape)}")
    if out["labels"].shape != (n,) or not np.issubdtype(out["labels"].dtype, np.integer):
        raise BadInput(path, "labels", f"expected integers of shape [{n}], got {out['labels'].dtype} "
                                       f"{list(out['labels'].shape)}")
    out["ids"] = out["ids"].astype(str)
    if len(set(out["ids"].tolist())) != n:
        raise BadInput(path, "ids", "duplicate image ids")
    return out


def _aligned(z: dict, want: list[str], path) -> tuple[np.ndarray, np.ndarray]:
    """logits/labels of file z reordered to the id list `want` (which it must cover exactly)."""
    pos = {i: k for k, i in enumerate(z["ids"].tolist())}
    if set(pos) != set(want) or len(pos) != len(want):
        missing = sorted(set(want) - set(pos))
        extra = sorted(set(pos) - set(want))
        raise BadInput(path, "ids", f"do not match splits.json ({len(missing)} missing, {len(extra)} extra)")
    order = np.array([pos[i] for i in want], dtype=np.int64)
    return z["logits"][order], z["labels"][order]


# ---------------------------------------------------------------- ensemble and out-of-fold


def check_members_disjoint(splits: dict, folds, where="splits.json") -> None:
    """Refuse if any holdout image is in any member fold's train or val partition."""
    test = set(splits["holdout"]["test"])
    for k in folds:
        f = splits["folds"][k]
        for part in ("train", "val"):
            leaked = test.intersection(f[part])
            if leaked:
                raise BadInput(where, f"folds[{k}].{part}",
                               f"{len(leaked)} holdout image(s) were seen by fold {k} ({part}), e.g. "
                               f"{sorted(leaked)[0]!r}; refusing to score the ensemble on them")


def _members(run_dir, model: str, splits: dict, folds) -> list[int]:
    folds = list(range(splits["n_folds"])) if folds is None else sorted(int(k) for k in folds)
    check_members_disjoint(splits, folds, Path(run_dir) / "splits.json")
    for k in folds:
        job = job_dir(run_dir, model, k)
        if not (job / DONE).exists():
            raise BadInput(job, DONE, f"fold {k} of {model} is not complete; cannot ensemble")
    return folds


def holdout_ensemble(run_dir, model: str, splits: dict, folds=None) -> dict:
    """Mean of the member folds' holdout logits, then softmax, in splits.json's holdout order (nothing written).

    Every member must be DONE and must not have trained or validated on a holdout image. Returns
    {"ids", "logits" float32, "labels", "probs" float32, "members"}: exactly what ensemble/<model>.npz holds.
    """
    members = _members(run_dir, model, splits, folds)
    test_ids = list(splits["holdout"]["test"])
    labels_ref = np.array([splits["images"][i]["label"] for i in test_ids], dtype=np.int64)
    logits_sum = None
    for k in members:
        path = job_dir(run_dir, model, k) / LOGITS["test"]
        lg, lb = _aligned(read_logits(path), test_ids, path)
        if not np.array_equal(lb, labels_ref):
            raise BadInput(path, "labels", "disagree with splits.json")
        logits_sum = lg.astype(np.float64) if logits_sum is None else logits_sum + lg
    if logits_sum is None:
        raise BadInput(Path(run_dir) / "splits.json", "folds", f"no member folds to ensemble for {model}")
    mean = (logits_sum / len(members)).astype(np.float32)
    probs = softmax(mean.astype(np.float64), axis=1).astype(np.float32)
    return {"ids": np.array(test_ids, dtype=str), "logits": mean, "labels": labels_ref, "probs": probs,
            "members": members}


def out_of_fold(run_dir, model: str, splits: dict, folds=None) -> dict:
    """Each member fold's validation images predicted by that fold's model, sorted by id (nothing written).

    With every fold as a member the validation partitions must cover train-val exactly once.
    Returns {"ids", "logits" float32, "labels", "fold"}: exactly what oof/<model>.npz holds.
    """
    members = _members(run_dir, model, splits, folds)
    ids, logits, labels, fold_of = [], [], [], []
    for k in members:
        path = job_dir(run_dir, model, k) / LOGITS["val"]
        val = list(splits["folds"][k]["val"])
        lg, lb = _aligned(read_logits(path), val, path)
        ids += val
        logits.append(lg)
        labels.append(lb)
        fold_of += [k] * len(val)
    if len(set(ids)) != len(ids) or (members == list(range(splits["n_folds"]))
                                     and sorted(ids) != sorted(splits["holdout"]["trainval"])):
        raise BadInput(Path(run_dir) / "splits.json", "folds", "fold val partitions do not cover train-val once")
    order = np.argsort(np.array(ids))
    return {"ids": np.array(ids)[order], "logits": np.concatenate(logits).astype(np.float32)[order],
            "labels": np.concatenate(labels).astype(np.int64)[order],
            "fold": np.array(fold_of, dtype=np.int64)[order]}


def ensemble_model(run_dir, model: str, splits: dict, folds=None) -> dict:
    """Write RUN/ensemble/<model>.npz (holdout_ensemble) and, when every fold is a member, RUN/oof/<model>.npz
    (out_of_fold). Returns {"members": [k...], "n_test", "oof": bool, "accuracy": float}."""
    ens = holdout_ensemble(run_dir, model, splits, folds)
    members = ens["members"]
    write_logits(ensemble_path(run_dir, model), ens["ids"], ens["logits"], ens["labels"], probs=ens["probs"])
    has_oof = members == list(range(splits["n_folds"]))
    if has_oof:
        oof = out_of_fold(run_dir, model, splits, members)
        write_npz(oof_path(run_dir, model), **oof)
    n_test = len(ens["ids"])
    return {"members": members, "n_test": n_test, "oof": has_oof,
            "accuracy": float((ens["probs"].argmax(1) == ens["labels"]).mean()) if n_test else float("nan")}
