"""`summarize_run`: every metric with its CI for the ensemble, folds and OOF of each model, plus paired comparisons.

The schema ("fibrobench.summary/1") is documented in docs/report.md; the claims audit and the CI gate read it.
"""
from __future__ import annotations

import math

import numpy as np

from reports import calibration as cal
from reports import metrics as M
from reports import stats as S
from reports.rundir import Run, load_run
from reports.task import ORDINAL_METRICS, Task, task_of

SCHEMA = "fibrobench.summary/1"
BASELINE = "resnet50"
# confusion-matrix metrics that are proportions of images (Wilson when images are independent)
PROPORTIONS = ("accuracy",)
CONFUSION_METRICS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
                     "macro_specificity", "kappa", "qwk", "linear_kappa", "mae_stage", "error_ge2_rate")
FOLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "qwk", "auroc_macro", "auroc", "ece")
COMPARE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk")
# binary tasks: the positive class's per-class proportions, also shown as headline metrics under these names
POSITIVE_METRICS = {"sensitivity": "recall", "specificity": "specificity", "ppv": "precision", "npv": "npv"}
PER_CLASS_PROPORTIONS = {"recall": ("tp", "fn"), "specificity": ("tn", "fp"), "precision": ("tp", "fp"),
                         "npv": ("tn", "fn")}


def _f(x):
    """JSON-safe float (NaN -> None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(lo, hi):
    return [_f(lo), _f(hi)]


class _Clusters:
    """Cluster codes of a set of images and the bootstrap weights drawn over those clusters."""

    def __init__(self, ids, groups: dict, n_boot: int, seed: int):
        keys = [groups.get(i) for i in ids]
        self.known = bool(groups) and all(k is not None for k in keys)
        self.index = {i: n for n, i in enumerate(ids)}
        self.codes = S.group_codes(keys if self.known else [None] * len(ids))
        self.n_clusters = int(self.codes.max()) + 1 if len(ids) else 0
        self.clustered = self.known and self.n_clusters < len(ids)
        self.weights = S.bootstrap_weights(self.n_clusters, n_boot, seed) if n_boot > 0 and len(ids) else None

    def codes_for(self, ids):
        return self.codes[[self.index[i] for i in ids]]


def _boot_all(y, probs, codes, weights, n_bins=cal.N_BINS):
    """Bootstrap replicates of the confusion matrix, ECE and Brier from ONE matmul of the cluster weights
    with the per-cluster sums [confusion cells | bin counts | bin confidence | bin correct | Brier | images]."""
    n, n_classes = probs.shape
    yhat = probs.argmax(1)
    conf = probs.max(1)
    correct = (yhat == y).astype(float)
    b = np.clip(np.searchsorted(np.linspace(0, 1, n_bins + 1), conf, side="left") - 1, 0, n_bins - 1)
    feats = np.zeros((n, n_classes * n_classes + 3 * n_bins + 2))
    rows = np.arange(n)
    feats[rows, y * n_classes + yhat] = 1.0
    o = n_classes * n_classes
    feats[rows, o + b] = 1.0
    feats[rows, o + n_bins + b] = conf
    feats[rows, o + 2 * n_bins + b] = correct
    feats[:, -2] = ((probs - np.eye(n_classes)[y]) ** 2).sum(1)
    feats[:, -1] = 1.0
    agg = weights @ S.cluster_sums(feats, codes, weights.shape[1]).astype(np.float32)
    cms = agg[:, :o].reshape(-1, n_classes, n_classes)
    cnt, cs, ac = (agg[:, o + k * n_bins:o + (k + 1) * n_bins] for k in range(3))
    total = np.maximum(agg[:, -1], 1)
    return cms, np.abs(ac - cs).sum(1) / total, agg[:, -2] / total


def _denominator(metric: str, c: int, y, yhat) -> np.ndarray:
    """Which images a per-class proportion is computed over."""
    return {"recall": y == c, "specificity": y != c, "precision": yhat == c, "npv": yhat != c}[metric]


def _boundary_ci(all_success: bool, codes) -> dict:
    """0 % or 100 % with clustered images: the percentile bootstrap collapses to a point, so take the
    clusters as the independent units (Wilson on the number of clusters) - conservative."""
    n_c = int(len(np.unique(codes)))
    k_c = n_c if all_success else 0
    return {"ci": list(S.wilson_ci(k_c, n_c)), "k": k_c, "n": n_c,
            "method": "Wilson on clusters (all-or-none outcome, bootstrap would be degenerate)"}


def _percentile_entry(samples, method: str) -> dict:
    """Percentile CI of bootstrap replicates; one of zero width (every resample equal) is flagged `degenerate`."""
    lo, hi = S.percentile_ci(samples)
    out = {"ci": _ci(lo, hi), "method": method}
    if np.isfinite(lo) and lo == hi:
        out["degenerate"] = True
    return out


def task_metrics(task: Task, names) -> tuple:
    """The subset of `names` that the task defines: ordinal-only ones for ordinal tasks, macro OvR AUROC for
    three or more classes, the positive-class AUROC for two."""
    def keep(n):
        if n in ORDINAL_METRICS:
            return task.ordinal_metrics
        if n == "auroc_macro":
            return not task.binary
        if n == "auroc":
            return task.binary
        return True
    return tuple(n for n in names if keep(n))


def metric_block(y, probs, codes, weights, class_names, clustered: bool, task: Task | None = None) -> tuple[dict, dict]:
    """Every metric the task defines with value, 95 % CI and method; also the bootstrap replicates of the
    confusion metrics."""
    y = np.asarray(y)
    task = task or task_of(None, class_names)
    point = M.classification_report(y, probs, class_names)
    cm = np.asarray(point["confusion"])
    yhat = probs.argmax(1)
    boot_cm = None
    boot = {}
    if weights is not None:
        boot_cm, boot_ece, boot_brier = _boot_all(y, probs, codes, weights)
        boot = M.from_confusion(boot_cm)
        boot_pc = M.per_class(boot_cm)
    n_boot = 0 if weights is None else weights.shape[0]
    bmethod = (f"cluster bootstrap percentile ({n_boot} resamples of patients/clusters)" if clustered
               else f"bootstrap percentile ({n_boot} resamples of images)")
    out = {}
    for name in task_metrics(task, CONFUSION_METRICS):
        entry = {"value": _f(point[name])}
        if name in PROPORTIONS and not clustered:
            k = int(np.trace(cm))
            entry.update(ci=list(S.wilson_ci(k, cm.sum())), method="Wilson", k=k, n=int(cm.sum()))
        elif name in PROPORTIONS and int(np.trace(cm)) in (0, int(cm.sum())):
            entry.update(_boundary_ci(np.trace(cm) > 0, codes))
        elif boot:
            entry.update(_percentile_entry(boot[name], bmethod))
        else:
            entry.update(ci=[None, None], method="none")
        out[name] = entry
    # per class, with Wilson (independent images) or the cluster bootstrap
    pcs = {}
    for c, cname in enumerate(class_names):
        pc = point["per_class"][cname]
        row = {"support": int(pc["support"]), "tp": int(pc["tp"]), "fp": int(pc["fp"]), "fn": int(pc["fn"]),
               "tn": int(pc["tn"])}
        for mname, (a, b) in PER_CLASS_PROPORTIONS.items():
            k, n = pc[a], pc[a] + pc[b]
            if not clustered:
                row[mname] = {"value": _f(pc[mname]), "ci": list(S.wilson_ci(k, n)) if n else [None, None],
                              "method": "Wilson", "k": int(k), "n": int(n)}
            elif n and k in (0, n):
                row[mname] = {"value": _f(pc[mname]),
                              **_boundary_ci(k > 0, codes[_denominator(mname, c, y, yhat)])}
            elif boot:
                row[mname] = {"value": _f(pc[mname]), **_percentile_entry(boot_pc[mname][:, c], bmethod)}
            else:
                row[mname] = {"value": _f(pc[mname]), "ci": [None, None], "method": "none"}
        row["sensitivity"] = row["recall"]
        involved = (y == c) | (yhat == c)     # the images F1 = 2TP / (2TP + FP + FN) counts
        if involved.any() and pc["f1"] in (0.0, 1.0):
            # all or none of them right: the percentile bootstrap collapses to a point; clusters as units instead
            row["f1"] = {"value": _f(pc["f1"]), **_boundary_ci(pc["f1"] == 1.0, codes[involved])}
        elif boot:
            row["f1"] = {"value": _f(pc["f1"]), **_percentile_entry(boot_pc["f1"][:, c], bmethod)}
        else:
            row["f1"] = {"value": _f(pc["f1"]), "ci": [None, None], "method": "none"}
        pos = y == c
        row["auroc"] = (_auroc_entry(S.auroc_ci(pos, probs[:, c], codes if clustered else None))
                        if 0 < pos.sum() < len(y) else {"value": None, "ci": [None, None], "method": "n/a"})
        pcs[cname] = row
    out["per_class"] = pcs
    if task.binary:   # the positive class: its AUROC (DeLong) and its per-class proportions, no macro OvR
        pname = task.positive_name
        out["positive_class"] = pname
        out["auroc"] = pcs[pname]["auroc"]
        for name, key in POSITIVE_METRICS.items():
            out[name] = pcs[pname][key]
    else:
        out["auroc_macro"] = _auroc_entry(S.macro_auroc_ci(y, probs, codes if clustered else None))
    out["auroc_cutoffs"] = {}
    for cut, stage in task.cutoffs.items():
        pos = y >= stage
        out["auroc_cutoffs"][cut] = (_auroc_entry(S.auroc_ci(pos, M.cutoff_scores(probs, stage),
                                                             codes if clustered else None))
                                     if 0 < pos.sum() < len(y) else {"value": None, "ci": [None, None], "method": "n/a"})
    calib = cal.calibration_report(y, probs)
    out["ece"] = {"value": _f(calib["ece"]), "binning": calib["binning"]}
    out["brier"] = {"value": _f(calib["brier"])}
    if weights is not None:
        out["ece"].update(ci=_ci(*S.percentile_ci(boot_ece)), method=bmethod)
        out["brier"].update(ci=_ci(*S.percentile_ci(boot_brier)), method=bmethod)
    out["reliability"] = calib["reliability"]
    out["confusion"] = point["confusion"]
    out["n"] = int(len(y))
    out["n_clusters"] = int(len(np.unique(codes)))
    return out, boot


def _auroc_entry(r):
    out = {"value": _f(r["value"]), "ci": _ci(*r["ci"]), "method": r["method"]}
    if r.get("se") == 0:  # perfect separation: the DeLong variance is 0 and the interval a point
        out["degenerate"] = True
    return out


def _fold_scores(folds, split: str, class_names, task: Task) -> dict:
    """Point metrics of each fold model on its own validation fold ('val') or on the holdout ('test')."""
    rows = []
    for f in folds:
        d = getattr(f, split)
        if d is None or f.done is None:
            continue
        rep = M.classification_report(d["labels"], d["probs"], class_names, positive=task.positive)
        rep["ece"] = cal.ece(d["labels"], d["probs"])
        rows.append((f.fold, rep))
    out = {"folds": [k for k, _ in rows]}
    for name in task_metrics(task, FOLD_METRICS):
        vals = [float(r[name]) for _, r in rows]
        out[name] = {"values": [_f(v) for v in vals], "mean": _f(np.mean(vals)) if vals else None,
                     "sd": _f(np.std(vals, ddof=1)) if len(vals) > 1 else None}
    return out


def _comparison_pairs(names):
    pairs = [(m, BASELINE) for m in names if m != BASELINE and BASELINE in names]
    if "resnet50_cbam" in names:
        pairs += [("resnet50_cbam", m) for m in names if m.startswith("resnet50_cbam_")]
    return pairs


def _compare(a, b, ens, boot_cms, clusters, fold_val, n_train, n_val, task: Task):
    ea, eb = ens[a], ens[b]
    ia = {i: n for n, i in enumerate(ea["ids"])}
    order = [ia[i] for i in eb["ids"]]
    ya, pa = ea["labels"][order], ea["probs"][order].argmax(1)
    yb, pb = eb["labels"], eb["probs"].argmax(1)
    out = {"model": a, "baseline": b, "n": int(len(yb))}
    out["mcnemar"] = S.mcnemar_exact(pa == ya, pb == yb)
    out["delong"] = _clean(S.paired_auroc_test(yb, ea["probs"][order], eb["probs"],
                                               clusters.codes_for(eb["ids"]) if clusters.clustered else None))
    # two classes: the two one-vs-rest AUROCs coincide, so this is the paired DeLong test of the positive class's AUROC
    out["delong"]["metric"] = "auroc" if task.binary else "auroc_macro"
    out["holdout_diff"] = {}
    for name in task_metrics(task, COMPARE_METRICS):
        n_classes = eb["probs"].shape[1]
        va = float(M.from_confusion(M.confusion(ya, pa, n_classes))[name])
        vb = float(M.from_confusion(M.confusion(yb, pb, n_classes))[name])
        entry = {"value": _f(va - vb), "a": _f(va), "b": _f(vb)}
        if boot_cms.get(a) and boot_cms.get(b):
            d = boot_cms[a][name] - boot_cms[b][name]
            entry.update(ci=_ci(*S.percentile_ci(d)),
                         method=("paired cluster bootstrap percentile" if clusters.clustered
                                 else "paired bootstrap percentile"))
        out["holdout_diff"][name] = entry
    fa, fb = fold_val.get(a), fold_val.get(b)
    out["folds"] = None
    if fa and fb:
        common = [k for k in fa["folds"] if k in fb["folds"]]
        xa = np.array([fa["accuracy"]["values"][fa["folds"].index(k)] for k in common], dtype=float)
        xb = np.array([fb["accuracy"]["values"][fb["folds"].index(k)] for k in common], dtype=float)
        if len(common) >= 2:
            out["folds"] = {"metric": "accuracy (validation fold)", "folds": common, "a": xa.tolist(),
                            "b": xb.tolist(), "diffs": (xa - xb).tolist(),
                            "paired_t": _clean(_pick(S.paired_t(xa, xb), PAIRED_T_KEYS)),
                            "nadeau_bengio": _clean(S.nadeau_bengio(xa - xb, n_train, n_val, values=(xa, xb))),
                            "wilcoxon": _clean(S.wilcoxon(xa, xb)), "n_train": n_train, "n_test": n_val}
    return out


PAIRED_T_KEYS = ("t", "p", "method", "zero_variance", "note")


def _pick(d: dict, keys) -> dict:
    return {k: d[k] for k in keys if k in d}


def _clean(d):
    return {k: (_f(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}


HEADLINE_LATENCY = ("batch_size", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "peak_memory_bytes")


def _efficiency(run: Run) -> dict:
    """Per model: params, FLOPs, headline latency/memory (latency.json) and training time (DONE markers)."""
    out = {}
    lat = (run.latency or {}).get("models", {})
    for name, mr in run.models.items():
        seconds = [f.done.get("seconds") for f in mr.folds if f.done and f.done.get("seconds") is not None]
        src = lat.get(name) or {}
        info = {k: src.get(k) for k in ("params", "flops", "input_size", "error")}
        for prec in ("fp32", "bf16"):
            blk = src.get(prec)
            info[prec] = {k: blk.get(k) for k in HEADLINE_LATENCY} if isinstance(blk, dict) else None
        tr = src.get("train")
        info["train"] = ({k: tr.get(k) for k in ("batch", "p50_ms", "images_per_s", "peak_memory_bytes")}
                         if isinstance(tr, dict) else None)
        if info["params"] is None:
            info["params"] = (run.run.get("models", {}).get(name) or {}).get("params")
        info["train_seconds_total"] = float(sum(seconds)) if seconds else None
        info["n_folds_done"] = sum(1 for f in mr.folds if f.done is not None)
        out[name] = info
    return out


def summarize_loaded(run: Run, n_boot: int = 10_000, seed: int = 0) -> dict:
    """summarize_run on an already loaded Run."""
    task = task_of(run.run, run.class_names, run.path / "run.json")
    groups = run.groups
    names = [m for m, mr in run.models.items() if mr.ensemble is not None]
    warnings = []
    for m, mr in run.models.items():
        if mr.ensemble is None:
            warnings.append(f"{m}: no holdout ensemble ({mr.ensemble_source})")
        n_done = sum(1 for f in mr.folds if f.done is not None)
        n_expected = max(len(mr.folds), int((run.splits or {}).get("n_folds") or 0))
        if n_expected and n_done < n_expected and mr.ensemble is not None:
            warnings.append(f"{m}: only {n_done} of {n_expected} fold jobs complete (DONE marker)")
    test_ids = list(run.models[names[0]].ensemble["ids"]) if names else []
    trainval = set((run.splits or {}).get("holdout", {}).get("trainval", []))
    if trainval and set(test_ids) & trainval:
        warnings.append(f"INVARIANT VIOLATED: {len(set(test_ids) & trainval)} holdout images are in trainval")
    if run.splits is None:
        warnings.append("splits.json missing: images treated as independent (no patient clusters)")
    clusters = _Clusters(test_ids, groups, n_boot, seed)
    models, ens, boot_cms, fold_val, oof_clusters = {}, {}, {}, {}, {}
    for m in names:
        mr = run.models[m]
        e = mr.ensemble
        if set(e["ids"]) != set(test_ids):
            warnings.append(f"{m}: holdout ids differ from {names[0]}'s; not compared")
            continue
        codes = clusters.codes_for(e["ids"])
        block, boot_cms[m] = metric_block(e["labels"], e["probs"], codes, clusters.weights, run.class_names,
                                          clusters.clustered, task)
        block["source"] = mr.ensemble_source
        ens[m] = e
        entry = {"ensemble": block, "n_folds": len(mr.folds)}
        fold_val[m] = _fold_scores(mr.folds, "val", run.class_names, task)
        entry["folds"] = fold_val[m]
        entry["folds_holdout"] = _fold_scores(mr.folds, "test", run.class_names, task)
        if mr.oof is not None:
            key = tuple(sorted(mr.oof["ids"]))
            if key not in oof_clusters:  # every model's OOF covers the same trainval images: draw once
                oof_clusters[key] = _Clusters(sorted(mr.oof["ids"]), groups, n_boot, seed + 1)
            oc = oof_clusters[key]
            entry["oof"], _ = metric_block(mr.oof["labels"], mr.oof["probs"], oc.codes_for(mr.oof["ids"]), oc.weights,
                                           run.class_names, oc.clustered, task)
            entry["oof"]["source"] = mr.oof_source
        else:
            entry["oof"] = None
        models[m] = entry
    folds = (run.splits or {}).get("folds") or []
    n_train = float(np.mean([len(f["train"]) for f in folds])) if folds else float("nan")
    n_val = float(np.mean([len(f["val"]) for f in folds])) if folds else float("nan")
    comps = [_compare(a, b, ens, boot_cms, clusters, fold_val, n_train, n_val, task)
             for a, b in _comparison_pairs(list(ens))]
    for getp in (lambda c: c["mcnemar"], lambda c: c["delong"], lambda c: (c["folds"] or {}).get("nadeau_bengio"),
                 lambda c: (c["folds"] or {}).get("wilcoxon")):  # Holm across the comparisons, within each test
        found = [(c, getp(c)) for c in comps if getp(c)]
        for (c, t), p in zip(found, S.holm([t["p"] if t["p"] is not None else float("nan") for _, t in found])):
            t["p_holm"] = _f(p)
    weights_info = {m: (run.run.get("models", {}).get(m) or {}).get("weights") or {} for m in run.models}
    return jsonable({
        "schema": SCHEMA,
        "run_dir": str(run.path),
        "class_names": run.class_names,
        "task": task.to_dict(),
        "level": (run.splits or {}).get("level"),
        "n_test": len(test_ids),
        "n_trainval": len(trainval) if trainval else None,
        "n_folds": (run.splits or {}).get("n_folds"),
        "test_class_counts": np.bincount(run.models[names[0]].ensemble["labels"], minlength=len(run.class_names)).tolist()
        if names else None,
        "clusters": {"source": run.cluster_source if clusters.clustered else "none: every image its own cluster",
                     "n_test_clusters": clusters.n_clusters, "clustered": clusters.clustered},
        "bootstrap": {"n_boot": n_boot, "seed": seed, "ci": "95 % percentile"},
        "smoke": bool(run.run.get("smoke", False)),
        "random_init": sorted(m for m, w in weights_info.items() if w.get("random_init")),
        "data_fingerprint": (run.run.get("data") or {}).get("fingerprint"),
        "protocol_sha256": run.run.get("protocol_sha256"),
        "splits_sha256": run.run.get("splits_sha256") or (run.splits or {}).get("sha256"),
        "baseline": BASELINE if BASELINE in ens else None,
        "models": models,
        "comparisons": comps,
        "efficiency": _efficiency(run),
        "warnings": warnings,
    })


def jsonable(obj):
    """Plain JSON types only: numpy scalars/arrays converted, NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _f(obj)
    return obj


def summarize_run(run_dir, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Load RUN_DIR and summarise it (schema fibrobench.summary/1, see docs/report.md)."""
    return summarize_loaded(load_run(run_dir), n_boot=n_boot, seed=seed)
