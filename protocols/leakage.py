"""Leakage audit of a split: patient overlap, near-duplicate frames across partitions, 1-NN and linear probes.

`audit_splits(df, splits, data_root, ...)` returns the content of leakage.json (schema "fibrobench.leakage/1",
documented field by field in docs/leakage.md):

    {"schema", "verdict": "leak"|"clean", "reasons": [str], "data": {...}, "split": {...},
     "thresholds": {"phash", "dhash", "ncc", "cosine", "dup_tolerance", "source"},
     "clusters": {image_id: int}, "cluster_stats": {...},
     "patient_overlap": {"available", "total_shared_patients", "pairs": [...]},
     "near_duplicates": {"n_links", "pairs": [...], "examples": [...]},
     "detector_vs_patients": {...} | null,
     "probe": {...} | null, "linear_probe": {...} | null, "timing": {...}}

Partition pairs are ("trainval", "test") for the holdout and ("train", "val") for each fold. Near-duplicate
clusters are the connected components of the graph linking frames whose pHash and dHash Hamming distances
are both under threshold and whose sector thumbnails correlate above the NCC threshold (plus, when asked,
embedding cosine above a threshold): pseudo-patients for data without patient IDs.
"""
from __future__ import annotations

import base64
import io
import os
import time
from collections import Counter

import numpy as np
import pandas as pd

from protocols import hashing, neardup, pairsearch
from protocols.errors import BadInput

SCHEMA = "fibrobench.leakage/1"
DUP_TOLERANCE = 0.02      # > this fraction of eval images with a near-duplicate in training => "leak" (see docs)
THUMB_WIDTH = 96


# ---------------------------------------------------------------- clusters

def compute_hashes(df: pd.DataFrame, workers: int | None = None, progress: bool = False) -> dict:
    """pHash/dHash codes for every row of the manifest (row order)."""
    return hashing.hash_files(df["path"].tolist(), workers=workers, progress=progress)


def _edges(hashes: dict, features, thresholds: dict, workers: int | None = None) -> dict:
    """Links {"i", "j", "phash", "dhash", "ncc", "transform"} (protocols/neardup.py), plus embedding-cosine links.

    A cosine-only link (no hash link) is labelled "same-patient motion": similar content, not a copy.
    """
    workers = int(workers) if workers else min(2, os.cpu_count() or 1)
    links = neardup.near_duplicate_pairs(hashes, thresholds, workers=max(1, workers))
    if features is not None and thresholds.get("cosine") is not None:
        ci, cj = hashing.cosine_pairs(np.asarray(features), float(thresholds["cosine"]))
        n = len(hashes["phash"])
        known = set((links["i"] * n + links["j"]).tolist())
        new = np.array([k not in known for k in (ci * n + cj).tolist()], bool)
        ci, cj = ci[new], cj[new]
        extra = {"i": ci, "j": cj, "phash": hashing.hamming(hashes["phash"][ci], hashes["phash"][cj]).astype(np.uint8),
                 "dhash": hashing.hamming(hashes["dhash"][ci], hashes["dhash"][cj]).astype(np.uint8),
                 "ncc": pairsearch.ncc(hashes["thumb"], hashes["thumb"], ci, cj) if "thumb" in hashes else np.full(len(ci), np.nan, np.float32),
                 "transform": np.full(len(ci), neardup.FAMILIES.index("same-patient motion"), np.uint8)}
        links = {k: np.concatenate([links[k], extra[k]]) for k in links}
    return links


def compute_links(hashes: dict, features=None, thresholds: dict | None = None, workers: int | None = None) -> dict:
    """The verified, transform-labelled links of hashed frames (pass to audit_splits(links=...) to reuse them)."""
    return _edges(hashes, features, _thresholds(thresholds), workers)


def _thresholds(thresholds: dict | None) -> dict:
    t = {**hashing.DEFAULT_THRESHOLDS, "cosine": None, "dup_tolerance": DUP_TOLERANCE,
         "source": "bench/results/leakage_sweep.json (selected)"}
    if thresholds:
        if any(thresholds.get(k) is not None for k in ("phash", "dhash", "ncc")):
            t["source"] = "user"
        t.update({k: v for k, v in thresholds.items() if v is not None})
    for k in ("phash", "dhash"):
        if not 0 <= int(t[k]) <= 64:
            raise BadInput("<thresholds>", k, f"Hamming threshold must be in 0..64, got {t[k]!r}")
    if not -1.0 <= float(t["ncc"]) <= 1.0:
        raise BadInput("<thresholds>", "ncc", f"must be in [-1, 1], got {t['ncc']!r}")
    if t["cosine"] is not None and not -1.0 <= float(t["cosine"]) <= 1.0:
        raise BadInput("<thresholds>", "cosine", f"must be in [-1, 1], got {t['cosine']!r}")
    return t


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Cluster ids numbered 0, 1, ... in order of first appearance (stable across runs)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv]


def find_clusters(df: pd.DataFrame, *, thresholds: dict | None = None, features=None, hashes: dict | None = None,
                  workers: int | None = None) -> dict:
    """{image_id: cluster_id} of near-duplicate clusters (pseudo-patients); patient IDs are never used."""
    t = _thresholds(thresholds)
    hashes = hashes if hashes is not None else compute_hashes(df, workers)
    links = _edges(hashes, features, t, workers)
    lab = _relabel(hashing.components(len(df), links["i"], links["j"]))
    return {str(k): int(c) for k, c in zip(df["image_id"], lab)}


# ---------------------------------------------------------------- partitions

def partition_pairs(splits: dict) -> list[dict]:
    """[{"name", "train": [ids], "eval": [ids], "train_name", "eval_name"}] for holdout and every fold."""
    out = [{"name": "holdout", "train_name": "trainval", "eval_name": "test",
            "train": splits["holdout"]["trainval"], "eval": splits["holdout"]["test"]}]
    for f in splits.get("folds", []):
        out.append({"name": f"fold{f['fold']}", "train_name": "train", "eval_name": "val",
                    "train": f["train"], "eval": f["val"]})
    return out


def _has_patients(df: pd.DataFrame) -> bool:
    if "patient_id" not in df.columns:
        return False
    p = df["patient_id"]
    return bool(len(p)) and not (p.isna() | (p.astype(str).str.strip().isin(["", "None", "nan"]))).any()


def patient_overlap(df: pd.DataFrame, splits: dict, max_examples: int = 10) -> dict:
    """Patients present on both sides of every partition pair, with patient and image counts."""
    if not _has_patients(df):
        return {"available": False, "total_shared_patients": 0, "pairs": []}
    pid = dict(zip(df["image_id"].astype(str), df["patient_id"].astype(str)))
    pairs, total = [], set()
    for pp in partition_pairs(splits):
        tr = {pid[i] for i in pp["train"]}
        shared = sorted({pid[i] for i in pp["eval"]} & tr)
        n_img = sum(pid[i] in tr for i in pp["eval"])
        total.update(shared)
        pairs.append({"name": pp["name"], "train": pp["train_name"], "eval": pp["eval_name"],
                      "n_eval_images": len(pp["eval"]), "shared_patients": len(shared),
                      "eval_images_of_shared_patients": int(n_img),
                      "fraction": n_img / max(1, len(pp["eval"])), "examples": shared[:max_examples]})
    return {"available": True, "total_shared_patients": len(total), "pairs": pairs}


def thumbnail(path, width: int = THUMB_WIDTH) -> str:
    """Small grey PNG of an image as a data URI (for the report; no file references)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        h = max(1, round(im.height * width / im.width))
        im = im.resize((width, h), Image.BOX)
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def near_duplicates(df: pd.DataFrame, splits: dict, clusters: np.ndarray, links, *, n_examples: int = 6,
                    thumbs: bool = True) -> dict:
    """Per partition pair: eval images whose duplicate cluster also has a training image; example pairs."""
    ids = df["image_id"].astype(str).to_numpy()
    row = {k: n for n, k in enumerate(ids)}
    li, lj, dp, dd, rr, tf = (links[k] for k in ("i", "j", "phash", "dhash", "ncc", "transform"))
    pairs, examples = [], []
    for pp in partition_pairs(splits):
        tr = np.array([row[i] for i in pp["train"]], dtype=np.int64)
        ev = np.array([row[i] for i in pp["eval"]], dtype=np.int64)
        in_train = np.zeros(len(ids), bool)
        in_train[tr] = True
        in_eval = np.zeros(len(ids), bool)
        in_eval[ev] = True
        tr_clusters = np.zeros(int(clusters.max(initial=0)) + 1, bool)
        tr_clusters[clusters[tr]] = True
        hit = tr_clusters[clusters[ev]]
        cross = (in_train[li] & in_eval[lj]) | (in_eval[li] & in_train[lj])
        pairs.append({"name": pp["name"], "train": pp["train_name"], "eval": pp["eval_name"],
                      "n_eval_images": int(len(ev)), "eval_with_duplicate_in_train": int(hit.sum()),
                      "fraction": float(hit.mean()) if len(ev) else 0.0, "direct_links": int(cross.sum())})
        if pp["name"] == "holdout" and n_examples:
            order = np.argsort(-np.nan_to_num(rr[cross], nan=-2.0), kind="stable")
            seen = set()
            for k in np.flatnonzero(cross)[order]:
                a, b = (li[k], lj[k]) if in_eval[li[k]] else (lj[k], li[k])
                if a in seen:
                    continue
                seen.add(a)
                ex = {"partition": "holdout", "eval_id": ids[a], "train_id": ids[b],
                      "transform": neardup.FAMILIES[int(tf[k])],
                      "phash_distance": int(dp[k]), "dhash_distance": int(dd[k]),
                      "ncc": None if np.isnan(rr[k]) else round(float(rr[k]), 4)}
                if thumbs:
                    ex["eval_thumb"] = thumbnail(df["path"].iloc[a])
                    ex["train_thumb"] = thumbnail(df["path"].iloc[b])
                examples.append(ex)
                if len(examples) >= n_examples:
                    break
    by = np.bincount(tf.astype(np.int64), minlength=len(neardup.FAMILIES))
    return {"n_links": int(len(li)), "by_transform": {f: int(c) for f, c in zip(neardup.FAMILIES, by)},
            "links": [[ids[a], ids[b], neardup.FAMILIES[int(c)], None if np.isnan(r) else round(float(r), 4)]
                      for a, b, c, r in zip(li, lj, tf, rr)],
            "pairs": pairs, "examples": examples}


def label_conflicts(df: pd.DataFrame, links: dict, max_pairs: int = 200, thumbs: bool = False,
                    n_thumbs: int = 6) -> dict:
    """Copies (links of a copy family: identical, photometric, mirrored, rotated, cropped/zoomed) whose two frames
    carry different labels: one image under two classes. Same-patient-motion links are not counted (another
    frame of a scene is not a copy, and the detector's rare false links are of that kind)."""
    ids = df["image_id"].astype(str).to_numpy()
    y = df["label"].astype(str).to_numpy()
    copy = np.isin(links["transform"], [neardup.FAMILIES.index(f) for f in neardup.COPY_FAMILIES])
    bad = np.flatnonzero(copy & (y[links["i"]] != y[links["j"]]))
    bad = bad[np.argsort(-np.nan_to_num(links["ncc"][bad], nan=-2.0), kind="stable")]
    pairs = []
    for n, k in enumerate(bad[:max_pairs]):
        a, b = int(links["i"][k]), int(links["j"][k])
        r = float(links["ncc"][k])
        e = {"a_id": ids[a], "a_label": y[a], "b_id": ids[b], "b_label": y[b],
             "transform": neardup.FAMILIES[int(links["transform"][k])], "ncc": None if np.isnan(r) else round(r, 4)}
        if thumbs and n < n_thumbs:
            e["a_thumb"], e["b_thumb"] = thumbnail(df["path"].iloc[a]), thumbnail(df["path"].iloc[b])
        pairs.append(e)
    imgs = np.unique(np.concatenate([links["i"][bad], links["j"][bad]])) if len(bad) else np.zeros(0, np.int64)
    return {"n_pairs": int(len(bad)), "n_images": int(len(imgs)), "images": [ids[k] for k in imgs[:1000]],
            "pairs": pairs}


def gate_failures(audit: dict) -> list[str]:
    """What a leakage gate fails on: the leakage verdict's reasons, and label conflicts (their own finding)."""
    out = list(audit.get("reasons", [])) if audit.get("verdict") == "leak" else []
    lc = audit.get("label_conflicts") or {}
    if lc.get("n_pairs"):
        out.append(f"label conflicts: {lc['n_pairs']} pair(s) of copied frames carry different labels "
                   f"({lc.get('n_images', 0)} images)")
    return out


def pair_agreement(groups_true, groups_pred) -> dict:
    """Pair-counting precision/recall of predicted clusters against true groups (same-group pairs)."""
    def c2(n):
        n = np.asarray(n, dtype=np.int64)
        return int((n * (n - 1) // 2).sum())

    _, t = np.unique(np.asarray(groups_true).astype(str), return_inverse=True)
    _, p = np.unique(np.asarray(groups_pred), return_inverse=True)
    t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
    cells = np.unique(t * (int(p.max(initial=0)) + 1) + p, return_counts=True)[1]
    both = c2(cells)
    n_true, n_pred = c2(np.bincount(t)), c2(np.bincount(p))
    prec = both / n_pred if n_pred else 1.0
    rec = both / n_true if n_true else 1.0
    return {"true_pairs": n_true, "predicted_pairs": n_pred, "correct_pairs": both,
            "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


# ---------------------------------------------------------------- probes

def _score_split(fit_predict, X, y, row, splits) -> dict:
    accs = {}
    for pp in partition_pairs(splits):
        tr = np.array([row[i] for i in pp["train"]])
        ev = np.array([row[i] for i in pp["eval"]])
        accs[pp["name"]] = float((fit_predict(X[tr], y[tr], X[ev]) == y[ev]).mean()) if len(ev) else float("nan")
    folds = [v for k, v in accs.items() if k != "holdout"]
    return {"holdout": accs["holdout"], "folds": folds,
            "fold_mean": float(np.mean(folds)) if folds else None, "n_test": len(splits["holdout"]["test"])}


def _knn(metric):
    from sklearn.neighbors import KNeighborsClassifier

    def fit_predict(Xtr, ytr, Xev):
        return KNeighborsClassifier(n_neighbors=1, metric=metric, algorithm="brute").fit(Xtr, ytr).predict(Xev)
    return fit_predict


def _logreg(Xtr, ytr, Xev):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    return clf.fit(Xtr, ytr).predict(Xev)


def group_split_for(df: pd.DataFrame, splits: dict, clusters: dict) -> dict:
    """The patient-level (IDs present) or cluster-level split with the audited split's seed/fractions."""
    from protocols.splits import make_splits

    level = "patient" if _has_patients(df) else "cluster"
    return make_splits(df, level, test_fraction=float(splits.get("test_fraction", 0.2)),
                       n_folds=int(splits.get("n_folds", 5)), seed=int(splits.get("seed", 0)),
                       groups=clusters if level == "cluster" else None)


def probe_accuracy(df, splits, group_splits, X, metric, fit_predict=None) -> dict:
    """Accuracy of a classifier on features X under the audited split and under the group-level split."""
    y = df["label"].to_numpy().astype(np.int64)
    row = {k: n for n, k in enumerate(df["image_id"].astype(str))}
    fp = fit_predict or _knn(metric)
    run = _score_split(fp, X, y, row, splits)
    grp = _score_split(fp, X, y, row, group_splits)
    gap = run["holdout"] - grp["holdout"]
    gap_f = (run["fold_mean"] - grp["fold_mean"]) if run["fold_mean"] is not None and grp["fold_mean"] is not None \
        else None
    return {"run_split": {"level": splits.get("level"), **run},
            "group_split": {"level": group_splits["level"], **grp},
            "gap_holdout": gap, "gap_fold_mean": gap_f}


# ---------------------------------------------------------------- embeddings

def embed_features(df: pd.DataFrame, model: str, input_size: int = 128, pretrained="imagenet",
                   batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, dict]:
    """Frozen-backbone features for every image (row order) via models.create_feature_extractor."""
    import torch

    from models import create_feature_extractor
    from protocols.cache import load_images

    net, dim = create_feature_extractor(model, pretrained=pretrained, input_size=input_size)
    net = net.eval().to(device)
    imgs = load_images(df, input_size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for s in range(0, len(imgs), batch_size):
            x = (imgs[s:s + batch_size].float() / 255.0 - mean) / std
            out.append(net(x.to(device)).flatten(1).float().cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, dim), np.float32)
    info = {"model": model, "input_size": input_size, "dim": int(dim),
            "weights": getattr(net, "fibro_weights", {"source": str(pretrained)})}
    return feats, info


# ---------------------------------------------------------------- the audit

def _check_splits(df: pd.DataFrame, splits: dict, where) -> None:
    if not isinstance(splits, dict) or "holdout" not in splits:
        raise BadInput(where, "holdout", "not a fibrobench splits dict")
    have = set(df["image_id"].astype(str))
    for pp in partition_pairs(splits):
        for side in ("train", "eval"):
            missing = [i for i in pp[side] if i not in have]
            if missing:
                raise BadInput(where, f"{pp['name']}.{side}",
                               f"{len(missing)} image id(s) not in the data, e.g. {missing[0]!r}")


def audit_splits(df: pd.DataFrame, splits: dict, data_root=None, *, features=None, thresholds: dict | None = None,
                 probe: bool = True, linear_probe: bool = False, hashes: dict | None = None,
                 feature_info: dict | None = None, n_examples: int = 6, thumbs: bool = True,
                 workers: int | None = None, splits_path="splits.json", links: dict | None = None) -> dict:
    """The leakage.json content for one split of the manifest df (see module docstring / docs/leakage.md).

    features: optional [N, D] embedding (df row order); used for the 1-NN probe (cosine), the linear probe,
    and for linking when thresholds["cosine"] is set. Without it the 1-NN probe uses the 16 x 16 standardised
    sector thumbnails (Euclidean, i.e. correlation ranking).
    """
    t0 = time.perf_counter()
    df = df.reset_index(drop=True)
    _check_splits(df, splits, splits_path)
    t = _thresholds(thresholds)
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(df):
            raise BadInput("<features>", "shape", f"expected [{len(df)}, D], got {list(features.shape)}")
    timing = {}
    s = time.perf_counter()
    hashes = hashes if hashes is not None else compute_hashes(df, workers)
    timing["hash_s"] = time.perf_counter() - s
    s = time.perf_counter()
    links = links if links is not None else _edges(hashes, features, t, workers)
    lab = _relabel(hashing.components(len(df), links["i"], links["j"]))
    timing["compare_s"] = time.perf_counter() - s
    ids = df["image_id"].astype(str).tolist()
    clusters = {k: int(c) for k, c in zip(ids, lab)}
    sizes = np.bincount(lab)

    s = time.perf_counter()
    overlap = patient_overlap(df, splits)
    dups = near_duplicates(df, splits, lab, links, n_examples=n_examples, thumbs=thumbs)
    conflicts = label_conflicts(df, links, thumbs=thumbs)
    timing["partitions_s"] = time.perf_counter() - s
    agree = pair_agreement(df["patient_id"].astype(str), lab) if _has_patients(df) else None

    probe_out = lin_out = None
    if probe or linear_probe:
        gsplit = group_split_for(df, splits, clusters)
        if probe:
            s = time.perf_counter()
            if features is not None:
                probe_out = {"features": "embedding", "metric": "cosine",
                             **probe_accuracy(df, splits, gsplit, features, "cosine")}
            else:
                thumbs = np.asarray(hashes["thumb"], np.float32).reshape(len(df), -1)
                probe_out = {"features": "16x16 standardised sector thumbnails", "metric": "euclidean",
                             **probe_accuracy(df, splits, gsplit, thumbs, "euclidean")}
            probe_out["group_split_sha256"] = gsplit["sha256"]
            timing["probe_s"] = time.perf_counter() - s
        if linear_probe:
            if features is None:
                raise BadInput("<features>", "linear_probe", "the linear probe needs backbone features (--embed MODEL)")
            s = time.perf_counter()
            lin_out = {"classifier": "StandardScaler + LogisticRegression(C=0.1)", "features": feature_info or {},
                       **probe_accuracy(df, splits, gsplit, features, None, fit_predict=_logreg)}
            timing["linear_probe_s"] = time.perf_counter() - s

    reasons = []
    for p in overlap["pairs"]:
        if p["shared_patients"]:
            reasons.append(f"{p['name']}: {p['shared_patients']} patient(s) in both {p['train']} and {p['eval']} "
                           f"({p['eval_images_of_shared_patients']} {p['eval']} images)")
    for p in dups["pairs"]:
        if p["fraction"] > t["dup_tolerance"]:
            reasons.append(f"{p['name']}: {p['eval_with_duplicate_in_train']}/{p['n_eval_images']} {p['eval']} images "
                           f"have a near-duplicate in {p['train']} ({100 * p['fraction']:.1f} %)")
    timing["total_s"] = time.perf_counter() - t0
    return {
        "schema": SCHEMA,
        "verdict": "leak" if reasons else "clean",
        "label_conflicts": conflicts,
        "reasons": reasons,
        "data": {"root": str(data_root) if data_root is not None else str(df.attrs.get("root", "")),
                 "n_images": len(df), "has_patient_id": _has_patients(df)},
        "split": {"level": splits.get("level"), "seed": splits.get("seed"), "n_folds": splits.get("n_folds"),
                  "test_fraction": splits.get("test_fraction"), "sha256": splits.get("sha256")},
        "thresholds": {k: t[k] for k in ("phash", "dhash", "ncc", "cosine", "dup_tolerance", "source")},
        "clusters": clusters,
        "cluster_stats": {"n_clusters": int(len(sizes)), "n_multi": int((sizes > 1).sum()),
                          "largest": int(sizes.max(initial=0)),
                          "size_histogram": {str(k): int(v) for k, v in sorted(Counter(sizes.tolist()).items())}},
        "patient_overlap": overlap,
        "near_duplicates": dups,
        "detector_vs_patients": agree,
        "probe": probe_out,
        "linear_probe": lin_out,
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
