"""A RUN_DIR as a report sees it (run.json, splits, leakage, latency, folds, ensemble, OOF, clusters), without torch.

Every file is read through protocols.runfiles, the run directory's one torch-free layer (the same checks, the same
leak-checked ensemble as training); this module adds what only the report needs: float64 arrays with
probabilities, training histories and the image clusters the statistics resample.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protocols import runfiles
from reports.errors import ReportInputError
from reports.metrics import softmax


def _for_report(d: dict, path: str) -> dict:
    """A logits dict as the statistics use it: float64 logits, int64 labels, probs (stored, else softmax), path."""
    logits = np.asarray(d["logits"], dtype=np.float64)
    probs = np.asarray(d["probs"], dtype=np.float64) if "probs" in d else softmax(logits)
    return {"ids": d["ids"].astype(str), "logits": logits, "labels": np.asarray(d["labels"], dtype=np.int64),
            "probs": probs, "path": path}


def read_logits(path: Path) -> dict:
    """A logits .npz read and checked by protocols.runfiles.read_logits, in the report's form."""
    return _for_report(runfiles.read_logits(path), str(path))


def read_history(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                row[k] = v
        out.append(row)
    return out


@dataclass
class FoldJob:
    fold: int
    done: dict | None
    history: list[dict] | None
    val: dict | None
    test: dict | None


@dataclass
class ModelRun:
    name: str
    folds: list[FoldJob] = field(default_factory=list)
    ensemble: dict | None = None
    ensemble_source: str = ""
    oof: dict | None = None
    oof_source: str = ""


@dataclass
class Run:
    path: Path
    run: dict
    splits: dict | None
    leakage: dict | None
    latency: dict | None
    models: dict
    class_names: list

    @property
    def groups(self) -> dict:
        """image_id -> cluster for the bootstrap: the union of splits.json groups and leakage.json duplicate clusters.

        Images that share a patient (splits group) or are near-duplicates of each other (leakage clusters)
        end up in one cluster, so the CIs resample whole patients / duplicate clusters, not frames.
        An image-level split records each image as its own group; then only the leakage clusters group.
        """
        return merge_partitions(self.split_groups, self.split_patients, self.leakage_clusters)

    @property
    def split_patients(self) -> dict:
        """image_id -> patient when splits.json records it besides the group (optional `patient` key)."""
        return {i: v.get("patient") for i, v in ((self.splits or {}).get("images") or {}).items()
                if v.get("patient") is not None}

    @property
    def split_groups(self) -> dict:
        return {i: v.get("group") for i, v in ((self.splits or {}).get("images") or {}).items()}

    @property
    def leakage_clusters(self) -> dict:
        clusters = (self.leakage or {}).get("clusters")
        return dict(clusters) if isinstance(clusters, dict) else {}

    @property
    def cluster_source(self) -> str:
        parts = []
        sg = self.split_groups
        if sg and len(set(sg.values())) < len(sg):
            parts.append(f"splits.json groups ({(self.splits or {}).get('level')} level)")
        if self.split_patients:
            parts.append("splits.json patient ids")
        lc = self.leakage_clusters
        if lc and len(set(lc.values())) < len(lc):
            parts.append("leakage.json near-duplicate clusters")
        return " merged with ".join(parts) if parts else "none: every image its own cluster"


def merge_partitions(*partitions: dict) -> dict:
    """Connected components of several image -> label partitions (union-find); ids missing from all map to None."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    ids = set()
    for k, part in enumerate(partitions):
        for img, lab in part.items():
            if lab is None:
                continue
            ids.add(img)
            a, b = find(("img", img)), find((k, str(lab)))
            if a != b:
                parent[a] = b
    return {img: repr(find(("img", img))) for img in sorted(ids)}


def _fallback_ensemble(root: Path, name: str, splits: dict | None, folds: list[FoldJob]):
    """(ensemble, source) rebuilt from the DONE folds by protocols.runfiles (leak-checked) when
    ensemble/<model>.npz is absent; (None, why) when it cannot be (no splits.json or no DONE fold)."""
    members = [f.fold for f in folds if f.done is not None]
    if not members:
        return None, "no completed fold"
    if splits is None:
        return None, "no splits.json to check the members against"
    ens = runfiles.holdout_ensemble(root, name, splits, members)
    return _for_report(ens, f"mean of fold test logits (folds {members})"), "mean of fold test logits"


def _fallback_oof(root: Path, name: str, splits: dict | None, folds: list[FoldJob]):
    """(oof, source) from the DONE folds' validation logits by protocols.runfiles when oof/<model>.npz is absent."""
    members = [f.fold for f in folds if f.done is not None and f.val is not None]
    if not members:
        return None, "no completed fold"
    if splits is None:
        return None, "no splits.json to check the folds against"
    oof = runfiles.out_of_fold(root, name, splits, members)
    return _for_report(oof, f"fold validation logits (folds {members})"), "concatenated fold validation logits"


def load_run(run_dir) -> Run:
    """Load everything a report needs; missing optional files are None, a missing run.json is bad input."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportInputError(root, None, "run directory not found")
    run = runfiles.read_json(root / "run.json")
    if not isinstance(run, dict):
        raise ReportInputError(root / "run.json", None, "expected a JSON object")
    splits = runfiles.read_json(root / "splits.json", required=False)
    leakage = runfiles.read_json(root / "leakage.json", required=False)
    latency = runfiles.read_json(root / "latency.json", required=False)
    class_names = runfiles.class_names(splits, root / "splits.json")
    names = list((run.get("models") or {}).keys())
    names += [m for m in runfiles.job_models(root) if m not in names]
    models = {}
    for name in names:
        mr = ModelRun(name)
        for k, fd in runfiles.fold_dirs(root, name):
            mr.folds.append(FoldJob(
                fold=k, done=runfiles.read_done(fd), history=read_history(fd / "history.csv"),
                **{part: read_logits(fd / name) if (fd / name).exists() else None
                   for part, name in runfiles.LOGITS.items()}))
        ens = runfiles.ensemble_path(root, name)
        if ens.exists():
            mr.ensemble, mr.ensemble_source = read_logits(ens), ens.relative_to(root).as_posix()
        else:
            mr.ensemble, mr.ensemble_source = _fallback_ensemble(root, name, splits, mr.folds)
        oof = runfiles.oof_path(root, name)
        if oof.exists():
            mr.oof, mr.oof_source = read_logits(oof), oof.relative_to(root).as_posix()
        else:
            mr.oof, mr.oof_source = _fallback_oof(root, name, splits, mr.folds)
        if mr.ensemble is not None and mr.ensemble["logits"].shape[1] != len(class_names):
            raise ReportInputError(mr.ensemble["path"], "logits",
                                   f"{mr.ensemble['logits'].shape[1]} columns but {len(class_names)} classes")
        models[name] = mr
    return Run(root, run, splits, leakage, latency, models, class_names)
