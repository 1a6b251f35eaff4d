"""Read a RUN_DIR (run.json, splits.json, leakage.json, latency.json, fold logits, ensemble, OOF) without torch."""
from __future__ import annotations

import csv
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reports.errors import ReportInputError
from reports.metrics import softmax

DEFAULT_CLASSES = ["F0", "F1", "F2", "F3", "F4"]


def read_json(path: Path, required: bool = True):
    path = Path(path)
    if not path.exists():
        if required:
            raise ReportInputError(path, None, "file not found")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportInputError(path, None, f"not valid JSON ({exc})") from None


def read_logits(path: Path) -> dict:
    """A logits .npz: ids (str), logits float [N, C], labels int [N], optional probs."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # truncated/not a zip: BadZipFile
        raise ReportInputError(path, None, f"unreadable .npz ({exc})") from None
    for key in ("ids", "logits", "labels"):
        if key not in data:
            raise ReportInputError(path, key, "missing array")
    logits = np.asarray(data["logits"], dtype=np.float64)
    if logits.ndim != 2 or len(logits) != len(data["ids"]) or len(data["labels"]) != len(logits):
        raise ReportInputError(path, "logits", f"shape {logits.shape} does not match ids/labels")
    if not np.isfinite(logits).all():
        raise ReportInputError(path, "logits", "contains NaN or inf")
    probs = np.asarray(data["probs"], dtype=np.float64) if "probs" in data else softmax(logits)
    return {"ids": data["ids"].astype(str), "logits": logits, "labels": data["labels"].astype(np.int64),
            "probs": probs, "path": str(path)}


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


def _read_done(path: Path) -> dict | None:
    """The DONE marker: None when absent (job incomplete), its JSON (or {} if it is not JSON) otherwise."""
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return done if isinstance(done, dict) else {}


def _mean_logit_ensemble(folds: list[FoldJob]) -> dict | None:
    tests = [f.test for f in folds if f.test is not None and f.done is not None]
    if not tests:
        return None
    ids = tests[0]["ids"]
    for t in tests[1:]:
        if not np.array_equal(t["ids"], ids):
            raise ReportInputError(t["path"], "ids", "fold test sets differ; cannot ensemble")
    logits = np.mean([t["logits"] for t in tests], axis=0)
    return {"ids": ids, "logits": logits, "labels": tests[0]["labels"], "probs": softmax(logits),
            "path": "mean of fold test logits"}


def _concat_oof(folds: list[FoldJob]) -> dict | None:
    vals = [f.val for f in folds if f.val is not None and f.done is not None]
    if not vals:
        return None
    logits = np.concatenate([v["logits"] for v in vals])
    return {"ids": np.concatenate([v["ids"] for v in vals]), "logits": logits,
            "labels": np.concatenate([v["labels"] for v in vals]), "probs": softmax(logits),
            "path": "concatenated fold validation logits"}


def load_run(run_dir) -> Run:
    """Load everything a report needs; missing optional files are None, a missing run.json is bad input."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ReportInputError(root, None, "run directory not found")
    run = read_json(root / "run.json")
    if not isinstance(run, dict):
        raise ReportInputError(root / "run.json", None, "expected a JSON object")
    splits = read_json(root / "splits.json", required=False)
    leakage = read_json(root / "leakage.json", required=False)
    latency = read_json(root / "latency.json", required=False)
    class_names = list((splits or {}).get("class_names") or DEFAULT_CLASSES)
    names = list((run.get("models") or {}).keys())
    jobs = root / "jobs"
    if jobs.is_dir():
        names += sorted(p.name for p in jobs.iterdir() if p.is_dir() and p.name not in names  # a stray model:
                        and any(re.fullmatch(r"fold\d+", q.name) for q in p.iterdir()))  # not timm/ of timm/<name>
    models = {}
    for name in names:
        mr = ModelRun(name)
        mdir = jobs / name
        if mdir.is_dir():
            fold_dirs = sorted((p for p in mdir.iterdir() if re.fullmatch(r"fold\d+", p.name)),
                               key=lambda p: int(p.name[4:]))
            for fd in fold_dirs:
                done = _read_done(fd / "DONE")
                mr.folds.append(FoldJob(
                    fold=int(fd.name[4:]), done=done, history=read_history(fd / "history.csv"),
                    val=read_logits(fd / "val_logits.npz") if (fd / "val_logits.npz").exists() else None,
                    test=read_logits(fd / "test_logits.npz") if (fd / "test_logits.npz").exists() else None))
        ens = root / "ensemble" / f"{name}.npz"
        if ens.exists():
            mr.ensemble, mr.ensemble_source = read_logits(ens), f"ensemble/{name}.npz"
        else:
            mr.ensemble, mr.ensemble_source = _mean_logit_ensemble(mr.folds), "mean of fold test logits"
        oof = root / "oof" / f"{name}.npz"
        if oof.exists():
            mr.oof, mr.oof_source = read_logits(oof), f"oof/{name}.npz"
        else:
            mr.oof, mr.oof_source = _concat_oof(mr.folds), "concatenated fold validation logits"
        if mr.ensemble is not None and mr.ensemble["logits"].shape[1] != len(class_names):
            raise ReportInputError(mr.ensemble["path"], "logits",
                                   f"{mr.ensemble['logits'].shape[1]} columns but {len(class_names)} classes")
        models[name] = mr
    return Run(root, run, splits, leakage, latency, models, class_names)
