"""The split invariants (sklearn-style), shared by tests/test_splits.py and every run directory the tests create.

`check_split_invariants(splits)` checks a splits dict: holdout and folds partition the images, nothing of the
test set is in any fold, groups never straddle partitions at patient/cluster level, the stored class counts
are those of the partitions. `check_run_dir(run_dir)` also checks what was trained and scored on them: each
fold's val/test logits cover exactly that fold's val set and the holdout test set with the split's labels, the
ensemble scores exactly the holdout test set, and every out-of-fold prediction comes from the fold that held
the image out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from protocols.splits import read_splits


def _counts(labels: dict, ids, n_classes: int) -> list[int]:
    return np.bincount([labels[i] for i in ids], minlength=n_classes).tolist()


def check_split_invariants(s: dict, labels: dict | None = None, grouped: bool | None = None) -> None:
    """Assert the invariants of splits dict `s`; `labels` {image_id: int} defaults to the split's own record."""
    recorded = {i: e["label"] for i, e in s["images"].items()}
    if labels is not None:
        assert recorded == dict(labels), "splits.json records other labels than the manifest"
    labels = recorded
    grouped = s["level"] != "image" if grouped is None else grouped
    n_classes = len(s["class_names"])
    assert all(0 <= v < n_classes for v in labels.values())
    ids = set(labels)
    tv, te = set(s["holdout"]["trainval"]), set(s["holdout"]["test"])
    assert tv | te == ids and not tv & te
    assert len(tv) == len(s["holdout"]["trainval"]) and len(te) == len(s["holdout"]["test"])   # no duplicates
    vals = [set(f["val"]) for f in s["folds"]]
    assert [f["fold"] for f in s["folds"]] == list(range(len(s["folds"])))
    assert sum(len(v) for v in vals) == len(tv) and set().union(*vals) == tv   # each trainval image in one val
    for f in s["folds"]:
        tr, va = set(f["train"]), set(f["val"])
        assert tr | va == tv and not tr & va and not (tr | va) & te
    grp = {i: e["group"] for i, e in s["images"].items()}
    if grouped:
        def g(xs):
            return {grp[i] for i in xs}
        assert not g(tv) & g(te)
        for f in s["folds"]:
            assert not g(f["train"]) & g(f["val"])
    cc = s["class_counts"]
    assert cc["test"] == _counts(labels, te, n_classes) and cc["trainval"] == _counts(labels, tv, n_classes)
    assert [c["val"] for c in cc["folds"]] == [_counts(labels, f["val"], n_classes) for f in s["folds"]]
    assert [c["train"] for c in cc["folds"]] == [_counts(labels, f["train"], n_classes) for f in s["folds"]]


def _ids_and_labels(path: Path) -> tuple[list[str], list[int]]:
    with np.load(path, allow_pickle=False) as z:
        return [str(i) for i in z["ids"]], [int(v) for v in z["labels"]]


def check_run_dir(run_dir) -> dict:
    """Assert the split invariants on RUN_DIR/splits.json and on every logits file scored on it; return the splits."""
    run_dir = Path(run_dir)
    s = read_splits(run_dir / "splits.json")   # verifies its sha256
    check_split_invariants(s)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["splits_sha256"] == s["sha256"]
    labels = {i: e["label"] for i, e in s["images"].items()}
    test = s["holdout"]["test"]
    for job in sorted((run_dir / "jobs").glob("*/fold*")):
        if not (job / "DONE").exists():
            continue
        fold = s["folds"][int(job.name[len("fold"):])]
        for name, expected in (("val_logits.npz", fold["val"]), ("test_logits.npz", test)):
            ids, ys = _ids_and_labels(job / name)
            assert sorted(ids) == sorted(expected), f"{job / name} scores other images than its split"
            assert ys == [labels[i] for i in ids], f"{job / name} carries other labels than splits.json"
    for npz in sorted((run_dir / "ensemble").glob("*.npz")):
        ids, ys = _ids_and_labels(npz)
        assert sorted(ids) == sorted(test) and ys == [labels[i] for i in ids], npz
    for npz in sorted((run_dir / "oof").glob("*.npz")):
        with np.load(npz, allow_pickle=False) as z:
            ids, folds = [str(i) for i in z["ids"]], [int(k) for k in z["fold"]]
        assert set(ids) <= set(s["holdout"]["trainval"]) and len(set(ids)) == len(ids), npz
        val_of = {i: f["fold"] for f in s["folds"] for i in f["val"]}
        assert [val_of[i] for i in ids] == folds, f"{npz}: an out-of-fold prediction from a fold that trained on it"
    return s
