"""Uncertainty and paired tests: Wilson CIs, a vectorised cluster bootstrap, (clustered) DeLong, McNemar, fold tests, Holm."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as _st
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

Z95 = _st.norm.ppf(0.975)


# ---------------------------------------------------------------- proportions
def wilson_ci(k: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (statsmodels)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


# ---------------------------------------------------------------- cluster bootstrap
def group_codes(groups) -> np.ndarray:
    """Integer cluster code per item (0..G-1); None entries become their own cluster."""
    groups = list(groups)
    out = np.empty(len(groups), dtype=np.int64)
    seen: dict = {}
    for n, g in enumerate(groups):
        key = ("__single__", n) if g is None else g
        out[n] = seen.setdefault(key, len(seen))
    return out


def bootstrap_weights(n_clusters: int, n_boot: int = 10_000, seed: int = 0, chunk: int = 256) -> np.ndarray:
    """How often each cluster is drawn in each resample: [n_boot, n_clusters] counts (clusters drawn with replacement)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n_clusters), dtype=np.float32)
    for start in range(0, n_boot, chunk):  # chunks keep the bincount in cache
        rows = min(chunk, n_boot - start)
        draws = rng.integers(0, n_clusters, size=(rows, n_clusters), dtype=np.int32)
        flat = (draws + (np.arange(rows) * n_clusters)[:, None]).ravel()
        out[start:start + rows] = np.bincount(flat, minlength=rows * n_clusters).reshape(rows, n_clusters)
    return out


def cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum a per-item array [N, ...] within clusters -> [G, ...]."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    out = np.stack([np.bincount(codes, weights=flat[:, k], minlength=n_clusters) for k in range(flat.shape[1])], 1)
    return out.reshape((n_clusters,) + values.shape[1:])


def bootstrap_confusions(y_true, y_pred, codes, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Resampled confusion matrices [B, C, C]: each resample = sum of the drawn clusters' confusion counts."""
    pair = np.asarray(y_true) * n_classes + np.asarray(y_pred)
    onehot = np.zeros((len(pair), n_classes * n_classes))
    onehot[np.arange(len(pair)), pair] = 1.0
    per_cluster = cluster_sums(onehot, codes, weights.shape[1]).astype(np.float32)
    return (weights @ per_cluster).reshape(-1, n_classes, n_classes)


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Percentile interval along axis 0, ignoring resamples where the statistic is undefined; shape [2, ...]."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic undefined in every resample -> NaN
        return np.nanquantile(np.asarray(samples, dtype=np.float64), [alpha / 2, 1 - alpha / 2], axis=0)


# ---------------------------------------------------------------- AUROC: DeLong and clustered DeLong
def _midrank(x: np.ndarray) -> np.ndarray:
    return _st.rankdata(x, method="average")


def delong_components(y_bin, scores):
    """Fast DeLong (Sun & Xu 2014): AUROC and the structural components V10 (positives) and V01 (negatives)."""
    y_bin = np.asarray(y_bin).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[y_bin], scores[~y_bin]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n          # for each positive: share of negatives scored below it (ties 1/2)
    v01 = 1.0 - (tz[m:] - ty) / m    # for each negative: share of positives scored above it
    return float(auc), v10, v01


def delong_ci(y_bin, scores, alpha: float = 0.05) -> dict:
    """AUROC with the DeLong variance and a normal 95 % CI (clipped to [0, 1])."""
    auc, v10, v01 = delong_components(y_bin, scores)
    m, n = len(v10), len(v01)
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(var)
    z = _st.norm.ppf(1 - alpha / 2)
    return {"value": auc, "se": se, "ci": [max(0.0, auc - z * se), min(1.0, auc + z * se)], "method": "DeLong"}


def auc_influence(y_bin, scores) -> tuple[float, np.ndarray]:
    """AUROC and each item's influence on it (V10-AUC)/m for positives, (V01-AUC)/n for negatives."""
    y_bin = np.asarray(y_bin).astype(bool)
    auc, v10, v01 = delong_components(y_bin, scores)
    phi = np.empty(len(y_bin))
    phi[y_bin] = (v10 - auc) / len(v10)
    phi[~y_bin] = (v01 - auc) / len(v01)
    return auc, phi


def clustered_variance(phi: np.ndarray, codes: np.ndarray) -> float:
    """Cluster-robust variance of a statistic from per-item influences (Obuchowski 1997 for the AUROC)."""
    n_clusters = int(codes.max()) + 1
    s = np.bincount(codes, weights=phi, minlength=n_clusters)
    s = s - s.mean()
    return float(n_clusters / (n_clusters - 1) * (s ** 2).sum()) if n_clusters > 1 else float("nan")


def auroc_ci(y_bin, scores, codes=None, alpha: float = 0.05) -> dict:
    """AUROC CI: DeLong when items are independent, the clustered (Obuchowski) DeLong when clusters are given."""
    if codes is None or len(np.unique(codes)) == len(codes):
        return delong_ci(y_bin, scores, alpha)
    auc, phi = auc_influence(y_bin, scores)
    se = math.sqrt(clustered_variance(phi, np.asarray(codes)))
    z = _st.norm.ppf(1 - alpha / 2)
    return {"value": auc, "se": se, "ci": [max(0.0, auc - z * se), min(1.0, auc + z * se)],
            "method": "clustered DeLong (Obuchowski)"}


def macro_auroc_ci(y_true, probs, codes=None, alpha: float = 0.05) -> dict:
    """Macro one-vs-rest AUROC with a CI from the summed influences (covariances between classes included)."""
    y_true = np.asarray(y_true)
    aucs, phis = [], []
    for k in range(probs.shape[1]):
        pos = y_true == k
        if 0 < pos.sum() < len(y_true):
            a, p = auc_influence(pos, probs[:, k])
            aucs.append(a)
            phis.append(p)
    if not aucs:
        return {"value": float("nan"), "ci": [float("nan"), float("nan")], "method": "n/a"}
    auc = float(np.mean(aucs))
    phi = np.mean(phis, axis=0)
    codes = np.arange(len(y_true)) if codes is None else np.asarray(codes)
    se = math.sqrt(clustered_variance(phi, codes))
    z = _st.norm.ppf(1 - alpha / 2)
    method = "DeLong influence" if len(np.unique(codes)) == len(codes) else "clustered DeLong influence"
    return {"value": auc, "se": se, "ci": [max(0.0, auc - z * se), min(1.0, auc + z * se)], "method": method}


# ---------------------------------------------------------------- paired tests
def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired correctness (statsmodels), with the discordant counts."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    res = _sm_mcnemar(table, exact=True)
    return {"b_only_a_correct": table[0][1], "c_only_b_correct": table[1][0], "table": table,
            "p": float(res.pvalue), "method": "McNemar exact (binomial)"}


def nadeau_bengio(diffs, n_train: float, n_test: float, alpha: float = 0.05) -> dict:
    """Corrected resampled t-test (Nadeau & Bengio 2003): variance x (1/J + n_test/n_train), df = J-1."""
    d = np.asarray(diffs, dtype=np.float64)
    j = len(d)
    mean = float(d.mean())
    var = float(d.var(ddof=1)) if j > 1 else float("nan")
    se = math.sqrt((1.0 / j + n_test / n_train) * var) if j > 1 else float("nan")
    if j < 2:
        t, p = float("nan"), float("nan")
    elif se == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / se
        p = float(2 * _st.t.sf(abs(t), df=j - 1))
    q = _st.t.ppf(1 - alpha / 2, df=j - 1) if j > 1 else float("nan")
    return {"mean_diff": mean, "t": float(t), "df": j - 1, "p": p, "se": se,
            "ci": [mean - q * se, mean + q * se], "method": "Nadeau-Bengio corrected resampled t-test"}


def paired_t(diffs_a, diffs_b) -> dict:
    res = _st.ttest_rel(diffs_a, diffs_b)
    return {"t": float(res.statistic), "p": float(res.pvalue), "method": "paired t-test (uncorrected)"}


def wilcoxon(a, b) -> dict:
    """Wilcoxon signed-rank (scipy, exact for small J) with the smallest p-value J folds can give."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    j = int(np.sum(d != 0))
    min_p = 2.0 / 2 ** j if j else 1.0
    note = (f"with {len(d)} folds ({j} non-zero differences) the smallest possible two-sided p is "
            f"{min_p:.4g} (= 2/2^{j})")
    if j == 0:
        return {"statistic": 0.0, "p": 1.0, "min_possible_p": min_p, "note": note, "method": "Wilcoxon signed-rank"}
    res = _st.wilcoxon(a, b)
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "min_possible_p": min_p, "note": note,
            "method": "Wilcoxon signed-rank"}


def holm(pvalues) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries stay NaN.

    Same numbers as statsmodels multipletests(method="holm") (tested), written out because that
    function runs gc.collect() on every call, which costs ~0.1 s in a large process.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok):
        order = ok[np.argsort(p[ok], kind="stable")]
        m = len(order)
        adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
        out[order] = adj
    return out.tolist()
