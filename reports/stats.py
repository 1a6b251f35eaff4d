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


def auc_influence(y_bin, scores) -> tuple[float, np.ndarray]:
    """AUROC and each item's influence on it: (V10-AUC)/m for positives, (V01-AUC)/n for negatives."""
    y_bin = np.asarray(y_bin).astype(bool)
    auc, v10, v01 = delong_components(y_bin, scores)
    phi = np.empty(len(y_bin))
    phi[y_bin] = (v10 - auc) / len(v10)
    phi[~y_bin] = (v01 - auc) / len(v01)
    return auc, phi


def _auc_parts(y_true, scores_by_class: dict, sign: float = 1.0):
    """Influence columns of one-vs-rest AUROCs, one column per (class, positives|negatives), with the item set
    each column lives on: [(phi restricted to the set, set mask)]."""
    parts = []
    for k, score in scores_by_class.items():
        pos = y_true == k
        _, phi = auc_influence(pos, score)
        parts += [(sign * np.where(pos, phi, 0.0), pos), (sign * np.where(pos, 0.0, phi), ~pos)]
    return parts


def influence_variance(parts, codes) -> float:
    """Cluster-robust variance of a sum of AUROC influence columns (Obuchowski 1997).

    Each part is (per-item influence, the items it lives on: e.g. the positives of one class). A part's
    cluster totals get Obuchowski's small-sample factor I_s/(I_s-1), I_s = clusters holding items of its set
    (I10 for positives, I01 for negatives); products of parts living on different sets get I/(I-1) over all I
    clusters (Obuchowski's S11). Parts on the same set (a class's positives = the other class's negatives in a
    binary task; the same positives in two paired models) share the set's factor. With one item per cluster
    this is DeLong's variance exactly; for one AUROC with clusters it is Obuchowski's; NaN when a set lies in
    a single cluster (its between-cluster variance cannot be estimated).
    """
    codes = np.asarray(codes)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if n_clusters < 2:
        return float("nan")
    sets: dict[bytes, list] = {}
    for phi, mask in parts:
        mask = np.asarray(mask, dtype=bool)
        sets.setdefault(mask.tobytes(), [mask, np.zeros(len(mask))])[1] += phi
    f_all = n_clusters / (n_clusters - 1)
    total = np.zeros(n_clusters)
    var = 0.0
    for mask, phi in sets.values():
        t = np.bincount(codes, weights=phi, minlength=n_clusters)
        total += t
        i_s = len(np.unique(codes[mask]))
        if i_s < 2:
            if np.any(mask):
                return float("nan")
            continue
        var += (i_s / (i_s - 1) - f_all) * float(t @ t)
    return float(var + f_all * float(total @ total))


NOT_ESTIMABLE = ("; not estimable: the images of a class (or of all other classes) lie in a single cluster, so "
                 "their between-cluster variance cannot be estimated")


def _normal_ci(value: float, var: float, alpha: float, method: str) -> dict:
    se = math.sqrt(var) if math.isfinite(var) else float("nan")
    z = _st.norm.ppf(1 - alpha / 2)
    if not math.isfinite(se):
        return {"value": value, "se": se, "ci": [float("nan")] * 2, "method": method + NOT_ESTIMABLE}
    return {"value": value, "se": se, "ci": [max(0.0, value - z * se), min(1.0, value + z * se)], "method": method}


def _codes_or_items(codes, n: int) -> tuple[np.ndarray, bool]:
    """Cluster codes (one per item when none are given) and whether any cluster holds several items."""
    if codes is None:
        return np.arange(n), False
    codes = np.asarray(codes)
    return codes, len(np.unique(codes)) < len(codes)


def auroc_ci(y_bin, scores, codes=None, alpha: float = 0.05) -> dict:
    """AUROC with a normal 95 % CI: DeLong when items are independent, Obuchowski's clustered DeLong with clusters."""
    y_bin = np.asarray(y_bin).astype(bool)
    auc, _, _ = delong_components(y_bin, scores)
    codes, clustered = _codes_or_items(codes, len(y_bin))
    var = influence_variance(_auc_parts(y_bin.astype(int), {1: scores}), codes)
    return _normal_ci(auc, var, alpha, "clustered DeLong (Obuchowski)" if clustered else "DeLong")


def delong_ci(y_bin, scores, alpha: float = 0.05) -> dict:
    """AUROC with the DeLong variance (independent items) and a normal CI clipped to [0, 1]."""
    return auroc_ci(y_bin, scores, None, alpha)


def _ovr_classes(y_true, n_classes: int) -> list[int]:
    """Classes whose one-vs-rest AUROC is defined (present, but not the only class, in y_true)."""
    return [k for k in range(n_classes) if 0 < np.sum(y_true == k) < len(y_true)]


def macro_auroc_ci(y_true, probs, codes=None, alpha: float = 0.05) -> dict:
    """Macro one-vs-rest AUROC with a CI from the summed influences (covariances between classes included)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    ks = _ovr_classes(y_true, probs.shape[1])
    if not ks:
        return {"value": float("nan"), "ci": [float("nan"), float("nan")], "method": "n/a"}
    auc = float(np.mean([delong_components(y_true == k, probs[:, k])[0] for k in ks]))
    parts = _auc_parts(y_true, {k: probs[:, k] for k in ks}, 1.0 / len(ks))
    codes, clustered = _codes_or_items(codes, len(y_true))
    return _normal_ci(auc, influence_variance(parts, codes), alpha,
                      "clustered DeLong influence" if clustered else "DeLong influence")


def paired_auroc_test(y_true, probs_a, probs_b, codes=None, alpha: float = 0.05) -> dict:
    """Paired DeLong test of macro one-vs-rest AUROC a - b on the same items (DeLong et al. 1988; clustered per
    Obuchowski 1997 when clusters are given): difference, SE, normal CI, z and two-sided p."""
    y_true = np.asarray(y_true)
    probs_a = np.asarray(probs_a, dtype=np.float64)
    probs_b = np.asarray(probs_b, dtype=np.float64)
    ks = _ovr_classes(y_true, probs_a.shape[1])
    codes, clustered = _codes_or_items(codes, len(y_true))
    method = "paired clustered DeLong (Obuchowski)" if clustered else "paired DeLong"
    if not ks:
        return {"a": None, "b": None, "diff": None, "se": None, "ci": [None, None], "z": None, "p": None,
                "method": method}
    a = float(np.mean([delong_components(y_true == k, probs_a[:, k])[0] for k in ks]))
    b = float(np.mean([delong_components(y_true == k, probs_b[:, k])[0] for k in ks]))
    parts = (_auc_parts(y_true, {k: probs_a[:, k] for k in ks}, 1.0 / len(ks))
             + _auc_parts(y_true, {k: probs_b[:, k] for k in ks}, -1.0 / len(ks)))
    var = influence_variance(parts, codes)
    diff = a - b
    se = math.sqrt(var) if math.isfinite(var) else float("nan")
    q = _st.norm.ppf(1 - alpha / 2)
    if not math.isfinite(se):
        method += NOT_ESTIMABLE
    if not se > 0:  # identical rankings (or undefined variance): no test, and no interval claiming certainty
        z = p = float("nan")
        ci = [float("nan"), float("nan")]
    else:
        z = diff / se
        p = float(2 * _st.norm.sf(abs(z)))
        ci = [diff - q * se, diff + q * se]
    return {"a": a, "b": b, "diff": diff, "se": se, "ci": ci, "z": z, "p": p, "method": method}


# ---------------------------------------------------------------- paired tests
def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired correctness (statsmodels), with the discordant counts."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    res = _sm_mcnemar(table, exact=True)
    return {"b_only_a_correct": table[0][1], "c_only_b_correct": table[1][0], "table": table,
            "p": float(res.pvalue), "method": "McNemar exact (binomial)"}


def constant_differences(d, *values) -> bool:
    """True when the paired differences are equal up to floating-point noise (their variance is zero).

    `values` are the arrays the differences came from: noise is judged against their magnitude, since
    0.8 - 0.7 and 0.9 - 0.8 differ by ~1e-16 and would otherwise give t ~ 1e15.
    """
    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2:
        return False
    scale = max([1.0] + [float(np.max(np.abs(np.asarray(v, dtype=np.float64)))) for v in values if len(v)]
                + [float(np.max(np.abs(d)))])
    return bool(np.ptp(d) <= 64 * np.finfo(np.float64).eps * scale)


ZERO_VARIANCE_NOTE = ("all {j} differences are equal ({d:.6g}): their variance is zero, so the test statistic is "
                      "undefined (not infinitely significant) and no p-value is given")


def nadeau_bengio(diffs, n_train: float, n_test: float, alpha: float = 0.05, values=()) -> dict:
    """Corrected resampled t-test (Nadeau & Bengio 2003): variance x (1/J + n_test/n_train), df = J-1.

    Constant differences (zero variance, see `constant_differences`; `values` = the compared scores) give
    t, p and CI None with `zero_variance` true and a note, as `paired_t` does.
    """
    d = np.asarray(diffs, dtype=np.float64)
    j = len(d)
    mean = float(d.mean())
    zero = constant_differences(d, *values)
    var = 0.0 if zero else (float(d.var(ddof=1)) if j > 1 else float("nan"))
    se = math.sqrt((1.0 / j + n_test / n_train) * var) if j > 1 else float("nan")
    if j < 2 or zero:
        t = p = float("nan")
        ci = [float("nan"), float("nan")]
    else:
        t = mean / se
        p = float(2 * _st.t.sf(abs(t), df=j - 1))
        q = _st.t.ppf(1 - alpha / 2, df=j - 1)
        ci = [mean - q * se, mean + q * se]
    out = {"mean_diff": mean, "t": float(t), "df": j - 1, "p": p, "se": se, "ci": ci, "zero_variance": zero,
           "method": "Nadeau-Bengio corrected resampled t-test"}
    if zero:
        out["note"] = ZERO_VARIANCE_NOTE.format(j=j, d=mean)
    return out


def paired_t(a, b, level: float = 0.95, alternative: str = "two-sided") -> dict:
    """Paired t-test of a - b (scipy.stats.ttest_rel) with the means, sds, mean difference and its t-interval.

    Constant differences (zero variance up to floating-point noise) are reported as such: t, p and CI None,
    `zero_variance` true and a note, instead of t ~ 1e15 from rounding noise.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a - b
    n = len(d)
    zero = constant_differences(d, a, b)
    out = {"n": n, "df": n - 1, "mean_a": float(a.mean()), "sd_a": float(np.std(a, ddof=1)),
           "mean_b": float(b.mean()), "sd_b": float(np.std(b, ddof=1)), "mean_diff": float(d.mean()),
           "sd_diff": 0.0 if zero else float(np.std(d, ddof=1)), "zero_variance": zero,
           "method": "paired t-test (uncorrected)"}
    if zero or n < 2:
        out.update(t=float("nan"), p=float("nan"), ci=[float("nan"), float("nan")])
        if zero:
            out["note"] = ZERO_VARIANCE_NOTE.format(j=n, d=out["mean_diff"])
        return out
    res = _st.ttest_rel(a, b, alternative=alternative)
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * out["sd_diff"] / math.sqrt(n)
    out.update(t=float(res.statistic), p=float(res.pvalue), ci=[out["mean_diff"] - half, out["mean_diff"] + half])
    return out


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
