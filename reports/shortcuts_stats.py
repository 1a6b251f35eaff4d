"""Statistics and verdict of the shortcut audit (numpy/scipy/sklearn only): region tests, attribution mass, metadata.

Uncertainty is the run's: images are resampled by cluster (patients / near-duplicate clusters, reports.rundir
Run.groups) with reports.stats.bootstrap_weights; a proportion that is 0 % or 100 % gets a Wilson interval over
the clusters instead (the percentile bootstrap collapses to a point there), as the report's metrics do.
Verdict rules (docs/shortcuts.md):
  shortcut  accuracy with the tissue removed (sector replaced, by the training mean or by matched noise) has a
            95 % CI whose lower end is above the majority-class rate of the holdout;
  suspect   otherwise, any of: the model beats the majority-class rate (CI above it) and removing the outside
            or the text regions lowers its accuracy by at least MIN_DROP with a CI excluding 0; the label is associated with site/device (permutation p < ALPHA_META)
            and a linear probe on the frozen penultimate features predicts that site/device with a CI above its
            majority rate; the mean Grad-CAM mass inside the sector has a CI entirely below the sector's share
            of the image (attribution concentrated outside the tissue);
  clean     none of these.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import stats as _st
from scipy.stats.contingency import association

from reports import stats as S

MIN_DROP = 0.10          # accuracy a region removal must cost (CI excluding 0) to count as reliance; only judged
                         # when the model beats the majority-class rate on the unmodified holdout (CI above it)
ALPHA_META = 0.01        # label-site/device association: permutation p below this counts as associated
N_PERM = 2000
PROBE_DIMS = 32          # linear probe: PCA components kept from the standardised penultimate features


def _f(x):
    x = float(x)
    return x if math.isfinite(x) else None


def boot(codes, n_boot: int, seed: int) -> np.ndarray:
    """Cluster-bootstrap weights [B, G] for images with cluster codes 0..G-1."""
    return S.bootstrap_weights(int(np.max(codes)) + 1 if len(codes) else 0, n_boot, seed)


def proportion_ci(success, codes, weights) -> dict:
    """Share of successes with a cluster-bootstrap 95 % CI (Wilson on clusters when it is 0 % or 100 %)."""
    s = np.asarray(success, dtype=float)
    n = len(s)
    if n == 0:
        return {"value": None, "ci": [None, None], "n": 0, "method": "n/a (no images)"}
    value = float(s.mean())
    n_c = int(len(np.unique(codes)))
    if value in (0.0, 1.0):
        k = n_c if value == 1.0 else 0
        return {"value": value, "ci": list(S.wilson_ci(k, n_c)), "n": n, "n_clusters": n_c,
                "method": "Wilson on clusters (all-or-none outcome)"}
    sums = S.cluster_sums(np.stack([s, np.ones(n)], 1), codes, weights.shape[1])
    agg = weights.astype(np.float64) @ sums
    with np.errstate(invalid="ignore", divide="ignore"):
        rep = agg[:, 0] / agg[:, 1]
    lo, hi = S.percentile_ci(rep)
    return {"value": value, "ci": [_f(lo), _f(hi)], "n": n, "n_clusters": n_c, "method": "cluster bootstrap"}


def mean_ci(values, codes, weights) -> dict:
    """Mean of per-image values (NaN ignored) with a cluster-bootstrap 95 % CI."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return {"value": None, "ci": [None, None], "n": 0, "method": "n/a (no values)"}
    sums = S.cluster_sums(np.stack([np.where(ok, v, 0.0), ok.astype(float)], 1), codes, weights.shape[1])
    agg = weights.astype(np.float64) @ sums
    with np.errstate(invalid="ignore", divide="ignore"):
        rep = agg[:, 0] / agg[:, 1]
    lo, hi = S.percentile_ci(rep)
    return {"value": float(v[ok].mean()), "ci": [_f(lo), _f(hi)], "n": int(ok.sum()),
            "n_clusters": int(len(np.unique(np.asarray(codes)[ok]))), "method": "cluster bootstrap"}


def paired_diff_ci(a, b, codes, weights) -> dict:
    """mean(a) - mean(b) of paired per-image values with a cluster-bootstrap 95 % CI."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    sums = S.cluster_sums(np.stack([a - b, np.ones(len(a))], 1), codes, weights.shape[1])
    agg = weights.astype(np.float64) @ sums
    with np.errstate(invalid="ignore", divide="ignore"):
        rep = agg[:, 0] / agg[:, 1]
    lo, hi = S.percentile_ci(rep)
    return {"value": float((a - b).mean()) if len(a) else None, "ci": [_f(lo), _f(hi)], "method": "cluster bootstrap"}


def majority_rate(labels) -> float:
    """Accuracy of always predicting the holdout's most frequent class."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def region_tests(labels, base_pred, cond_pred: dict, codes, weights) -> dict:
    """Accuracy per condition (name -> predictions) with CIs, its drop from the unmodified holdout, and flags."""
    labels = np.asarray(labels)
    base_ok = np.asarray(base_pred) == labels
    maj = majority_rate(labels)
    out = {"majority_rate": maj, "original": proportion_ci(base_ok, codes, weights), "conditions": []}
    o_lo = out["original"]["ci"][0]
    learned = bool(o_lo is not None and o_lo > maj)
    out["learned"] = learned
    for name, pred in cond_pred.items():
        region, fill = name.split("/")
        ok = np.asarray(pred) == labels
        acc = proportion_ci(ok, codes, weights)
        drop = paired_diff_ci(base_ok, ok, codes, weights)
        lo = acc["ci"][0]
        entry = {"region": region, "fill": fill, "accuracy": acc, "drop": drop,
                 "above_majority": bool(lo is not None and lo > maj),       # the verdict reads it for sector only
                 "relied_on": bool(learned and region != "sector" and drop["value"] is not None
                                   and drop["ci"][0] is not None
                                   and drop["ci"][0] > 0 and drop["value"] >= MIN_DROP)}
        out["conditions"].append(entry)
    return out


def attribution_mass(mass, area, labels, class_names, codes, weights_fn) -> dict:
    """Grad-CAM mass inside the sector (per image) vs the sector's share of the image: overall and per class."""
    mass, area, labels = np.asarray(mass, float), np.asarray(area, float), np.asarray(labels)
    codes = np.asarray(codes)
    w = weights_fn(codes)
    overall = mean_ci(mass, codes, w)
    out = {"overall": overall, "area_share": mean_ci(area, codes, w), "excess": paired_diff_ci(mass, area, codes, w),
           "per_class": []}
    for k, name in enumerate(class_names):
        sel = labels == k
        if not sel.any():
            out["per_class"].append({"class": name, "n": 0, "mass": None, "area_share": None})
            continue
        c = S.group_codes(codes[sel].tolist())
        wc = weights_fn(c)
        out["per_class"].append({"class": name, "n": int(sel.sum()), "mass": mean_ci(mass[sel], c, wc),
                                 "area_share": float(area[sel].mean())})
    hi = out["excess"]["ci"][1]
    out["outside_heavy"] = bool(hi is not None and hi < 0)
    return out


def _per_cluster(codes, values):
    """The most frequent value within each cluster (a patient has one site and one device)."""
    by = {}
    for c, v in zip(codes, values):
        by.setdefault(int(c), []).append(v)
    keys = sorted(by)
    return np.array(keys), [Counter(by[k]).most_common(1)[0][0] for k in keys]


def cramers_v(li, mi, n_rows: int, n_cols: int) -> np.ndarray:
    """Cramér's V (uncorrected) of paired codes li, mi [..., n] (one table per leading index), vectorised.

    chi2 = n (sum O^2 / (row * col) - 1) over the non-empty rows and columns; V = sqrt(chi2 / (n (k - 1))) with
    k = min(non-empty rows, non-empty columns); NaN where k < 2 (tested against scipy.stats.contingency).
    """
    li, mi = np.atleast_2d(li), np.atleast_2d(mi)
    reps, n = li.shape
    flat = (li * n_cols + mi) + (np.arange(reps) * n_rows * n_cols)[:, None]
    O = np.bincount(flat.ravel(), minlength=reps * n_rows * n_cols).reshape(reps, n_rows, n_cols).astype(float)
    r, c = O.sum(2), O.sum(1)
    denom = r[:, :, None] * c[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = n * (np.where(denom > 0, O ** 2 / np.where(denom > 0, denom, 1), 0).sum((1, 2)) - 1)
        k = np.minimum((r > 0).sum(1), (c > 0).sum(1))
        v = np.sqrt(np.clip(chi2, 0, None) / (n * (k - 1)))
    return np.where(k >= 2, v, np.nan)


def label_association(labels, meta, codes, n_boot: int = 2000, seed: int = 0) -> dict:
    """Association of label with a metadata column at cluster level: chi-square, permutation p, Cramér's V + CI."""
    _, lab = _per_cluster(codes, list(labels))
    _, met = _per_cluster(codes, list(meta))
    lab, met = np.asarray(lab), np.asarray(met).astype(str)
    lv, li = np.unique(lab, return_inverse=True)
    mv, mi = np.unique(met, return_inverse=True)
    n = len(lab)
    base = {"n_clusters": int(n), "levels": [str(x) for x in mv]}
    if len(lv) < 2 or len(mv) < 2:
        return {**base, "chi2": None, "df": 0, "p": None, "p_permutation": None, "cramers_v": None,
                "cramers_v_ci": [None, None], "associated": False,
                "note": "one label or one level: no association measurable"}
    t = np.zeros((len(lv), len(mv)), dtype=np.int64)
    np.add.at(t, (li, mi), 1)
    chi2, p, dof, _ = _st.chi2_contingency(t, correction=False)
    v = float(association(t, method="cramer", correction=False))
    rng = np.random.default_rng(seed)
    perm_li = li[np.argsort(rng.random((N_PERM, n)), axis=1)]                  # N_PERM label shuffles
    perm_v = cramers_v(perm_li, np.broadcast_to(mi, perm_li.shape), len(lv), len(mv))
    p_perm = float((1 + np.sum(perm_v >= v - 1e-12)) / (1 + N_PERM))
    idx = rng.integers(0, n, (n_boot, n))
    lo, hi = S.percentile_ci(cramers_v(li[idx], mi[idx], len(lv), len(mv)))
    return {**base, "chi2": float(chi2), "df": int(dof), "p": float(p), "p_permutation": p_perm,
            "cramers_v": v, "cramers_v_ci": [_f(lo), _f(hi)], "n_permutations": N_PERM,
            "associated": bool(p_perm < ALPHA_META),
            "method": "chi-square on the cluster-level label x level table; permutation p (labels shuffled over "
                      "clusters); Cramér's V with a cluster-bootstrap percentile CI"}


def accuracy_by_level(correct, meta, codes, n_boot: int, seed: int) -> list[dict]:
    """Holdout accuracy within each site/device level, with a cluster-bootstrap CI."""
    correct, meta, codes = np.asarray(correct), np.asarray(meta).astype(str), np.asarray(codes)
    out = []
    for lvl in sorted(set(meta.tolist())):
        sel = meta == lvl
        c = S.group_codes(codes[sel].tolist())
        out.append({"level": lvl, **proportion_ci(correct[sel], c, boot(c, n_boot, seed))})
    return out


def linear_probe(features, target, codes, n_boot: int, seed: int = 0) -> dict:
    """Logistic-regression probe of site/device from frozen features, grouped cross-validation by cluster."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y = np.asarray(target).astype(str)
    codes = np.asarray(codes)
    n_groups = len(np.unique(codes))
    levels = np.unique(y)
    maj = float(Counter(y.tolist()).most_common(1)[0][1] / len(y)) if len(y) else float("nan")
    if len(levels) < 2 or n_groups < 2:
        return {"accuracy": None, "majority_rate": maj, "note": "fewer than two levels or clusters: no probe"}
    k = min(5, n_groups)
    X = np.asarray(features, np.float64)
    # features are wide (fold models x 2048 for ResNet-50) and holdouts small: PCA to at most PROBE_DIMS
    # components (fitted inside each training fold) keeps the fit fast and the probe linear
    n_comp = max(1, min(PROBE_DIMS, X.shape[1], int(len(y) * (k - 1) / k) - 1))
    clf = make_pipeline(StandardScaler(), PCA(n_components=n_comp, svd_solver="full"),
                        LogisticRegression(C=1.0, max_iter=2000))
    pred = np.empty(len(y), dtype=y.dtype)
    # small matrices: one BLAS thread (a multi-threaded BLAS on a busy 2-core box spun for seconds per fit)
    with threadpool_limits(1):
        for tr, te in GroupKFold(n_splits=k).split(X, y, groups=codes):
            if len(np.unique(y[tr])) < 2:        # a training fold with one level: that level is the prediction
                pred[te] = y[tr][0]
            else:
                pred[te] = clf.fit(X[tr], y[tr]).predict(X[te])
    ok = pred == y
    acc = proportion_ci(ok, S.group_codes(codes.tolist()), boot(S.group_codes(codes.tolist()), n_boot, seed))
    lo = acc["ci"][0]
    return {"accuracy": acc, "balanced_accuracy": float(balanced_accuracy_score(y, pred)), "majority_rate": maj,
            "n_levels": int(len(levels)), "folds": k, "encodes": bool(lo is not None and lo > maj),
            "method": f"standardised features -> PCA ({n_comp} components) -> logistic regression (C=1), "
                      f"{k}-fold GroupKFold by cluster"}


def verdict(regions: dict | None, attribution: dict | None, metadata: dict | None) -> tuple[str, str]:
    """(clean | suspect | shortcut, one-sentence reason) from the three blocks (rules in the module docstring)."""
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    if regions:
        for c in regions["conditions"]:
            if c["region"] == "sector" and c["above_majority"]:
                a = c["accuracy"]
                return "shortcut", (f"with the tissue removed (sector replaced by {c['fill']}) accuracy is still "
                                    f"{pct(a['value'])} (95 % CI {pct(a['ci'][0])}–{pct(a['ci'][1])}), above the "
                                    f"majority-class rate {pct(regions['majority_rate'])}: the model reads something "
                                    f"other than tissue.")
    reasons = []
    if regions:
        for c in regions["conditions"]:
            if c["relied_on"]:
                d = c["drop"]
                reasons.append(f"replacing the {c['region']} region ({c['fill']}) costs {pct(d['value'])} accuracy "
                               f"(95 % CI {pct(d['ci'][0])}–{pct(d['ci'][1])})")
    for col, m in (metadata or {}).items():
        if not isinstance(m, dict):
            continue
        assoc, probe = m.get("association") or {}, m.get("probe") or {}
        if assoc.get("associated") and probe.get("encodes"):
            reasons.append(f"the label is associated with {col} (Cramér's V {assoc['cramers_v']:.2f}, permutation "
                           f"p = {assoc['p_permutation']:.3g}) and the features predict {col} with "
                           f"{pct(probe['accuracy']['value'])} accuracy against a majority rate of "
                           f"{pct(probe['majority_rate'])}")
    if attribution and attribution.get("outside_heavy"):
        o = attribution
        reasons.append(f"Grad-CAM puts {pct(o['overall']['value'])} of its mass inside the sector, less than the "
                       f"sector's {pct(o['area_share']['value'])} share of the image")
    if reasons:
        return "suspect", "; ".join(reasons[:2]) + "."
    sec = [c for c in (regions or {}).get("conditions", []) if c["region"] == "sector"
           and c["accuracy"].get("value") is not None]
    if not sec:
        return "clean", "no region, metadata or attribution test points away from the tissue (no tissue-removal test ran)."
    top = max(sec, key=lambda c: c["accuracy"]["value"])
    a = top["accuracy"]
    lo, hi = (pct(x) if x is not None else "?" for x in a["ci"])
    return "clean", (f"with the tissue removed accuracy is {pct(a['value'])} (95 % CI {lo}–{hi}), not above the "
                     f"majority-class rate {pct(regions['majority_rate'])}, and no region, metadata or attribution "
                     f"test points elsewhere.")
