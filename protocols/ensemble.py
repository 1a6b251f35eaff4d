"""Holdout ensemble (mean of fold logits, then softmax) and out-of-fold predictions; numpy only, leak-checked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax

from protocols.atomic import write_npz
from protocols.errors import BadInput
from protocols.logits import read_logits, write_logits


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


def _aligned(z: dict, want: list[str], path) -> tuple[np.ndarray, np.ndarray]:
    """logits/labels of file z reordered to the id list `want` (which it must cover exactly)."""
    pos = {i: k for k, i in enumerate(z["ids"].tolist())}
    if set(pos) != set(want) or len(pos) != len(want):
        missing = sorted(set(want) - set(pos))
        extra = sorted(set(pos) - set(want))
        raise BadInput(path, "ids", f"do not match splits.json ({len(missing)} missing, {len(extra)} extra)")
    order = np.array([pos[i] for i in want], dtype=np.int64)
    return z["logits"][order], z["labels"][order]


def ensemble_model(run_dir, model: str, splits: dict, folds=None) -> dict:
    """Write RUN/ensemble/<model>.npz (holdout logit-mean + softmax) and, when every fold is present,
    RUN/oof/<model>.npz (each train-val image predicted by the one fold model that validated on it).

    Returns {"members": [k...], "n_test", "oof": bool, "accuracy": float}.
    """
    run_dir = Path(run_dir)
    folds = list(range(splits["n_folds"])) if folds is None else sorted(int(k) for k in folds)
    check_members_disjoint(splits, folds, run_dir / "splits.json")
    test_ids = list(splits["holdout"]["test"])
    labels_ref = np.array([splits["images"][i]["label"] for i in test_ids], dtype=np.int64)
    logits_sum, members = None, []
    for k in folds:
        job = run_dir / "jobs" / model / f"fold{k}"
        if not (job / "DONE").exists():
            raise BadInput(job, "DONE", f"fold {k} of {model} is not complete; cannot ensemble")
        lg, lb = _aligned(read_logits(job / "test_logits.npz"), test_ids, job / "test_logits.npz")
        if not np.array_equal(lb, labels_ref):
            raise BadInput(job / "test_logits.npz", "labels", "disagree with splits.json")
        logits_sum = lg.astype(np.float64) if logits_sum is None else logits_sum + lg
        members.append(k)
    mean = (logits_sum / len(members)).astype(np.float32)
    probs = softmax(mean.astype(np.float64), axis=1).astype(np.float32)
    write_logits(run_dir / "ensemble" / f"{model}.npz", test_ids, mean, labels_ref, probs=probs)

    has_oof = folds == list(range(splits["n_folds"]))
    if has_oof:
        ids, logits, labels, fold_of = [], [], [], []
        for k in folds:
            job = run_dir / "jobs" / model / f"fold{k}"
            val = list(splits["folds"][k]["val"])
            lg, lb = _aligned(read_logits(job / "val_logits.npz"), val, job / "val_logits.npz")
            ids += val
            logits.append(lg)
            labels.append(lb)
            fold_of += [k] * len(val)
        if sorted(ids) != sorted(splits["holdout"]["trainval"]) or len(set(ids)) != len(ids):
            raise BadInput(run_dir / "splits.json", "folds", "fold val partitions do not cover train-val once")
        order = np.argsort(np.array(ids))
        write_npz(run_dir / "oof" / f"{model}.npz", ids=np.array(ids)[order],
                  logits=np.concatenate(logits).astype(np.float32)[order],
                  labels=np.concatenate(labels).astype(np.int64)[order],
                  fold=np.array(fold_of, dtype=np.int64)[order])
    return {"members": members, "n_test": len(test_ids), "oof": has_oof,
            "accuracy": float((probs.argmax(1) == labels_ref).mean()) if len(test_ids) else float("nan")}
