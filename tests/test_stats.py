"""reports.stats against statsmodels/scipy, textbook values and independent slow implementations."""
import math

import numpy as np
import pytest
from scipy import stats as st
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from reports import metrics as M
from reports import stats as S


@pytest.mark.parametrize("k,n,lo,hi", [(81, 263, 0.2553, 0.3662),   # Newcombe (1998), Table I, method 3
                                       (15, 148, 0.0624, 0.1605),
                                       (0, 20, 0.0, 0.1611)])
def test_wilson_textbook_values(k, n, lo, hi):
    got = S.wilson_ci(k, n)
    assert got[0] == pytest.approx(lo, abs=6e-5) and got[1] == pytest.approx(hi, abs=6e-5)


def test_wilson_formula():
    k, n, z = 37, 50, st.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert S.wilson_ci(k, n) == pytest.approx((centre - half, centre + half))


def test_bootstrap_weights_are_resamples():
    w = S.bootstrap_weights(40, n_boot=3000, seed=5)
    assert w.shape == (3000, 40)
    np.testing.assert_array_equal(w.sum(1), 40)          # each resample draws G clusters
    assert abs(w.mean() - 1.0) < 1e-9
    assert w[:, 0].var() == pytest.approx(40 * (1 / 40) * (1 - 1 / 40), rel=0.1)  # multinomial variance
    np.testing.assert_array_equal(w, S.bootstrap_weights(40, n_boot=3000, seed=5))
    assert not np.array_equal(w, S.bootstrap_weights(40, n_boot=3000, seed=6))


def test_bootstrap_confusions_equal_explicit_resampling():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 3)
    y = rng.integers(0, 5, 36)
    yhat = np.where(rng.uniform(size=36) < 0.7, y, rng.integers(0, 5, 36))
    codes = S.group_codes([f"p{g}" for g in groups])
    w = S.bootstrap_weights(12, n_boot=5, seed=1)
    cms = S.bootstrap_confusions(y, yhat, codes, w, 5)
    for b in range(5):
        # rebuild the resampled data set by repeating each cluster as often as it was drawn
        idx = np.concatenate([np.flatnonzero(codes == g).repeat(int(c)) for g, c in enumerate(w[b]) if c] or [[]])
        np.testing.assert_array_equal(cms[b], M.confusion(y[idx.astype(int)], yhat[idx.astype(int)], 5))


def test_group_codes():
    codes = S.group_codes(["b", "a", "b", None, None])
    assert codes.tolist()[:3] == [0, 1, 0] and codes[3] != codes[4] and len(set(codes)) == 4


def _slow_components(y, s):
    """Mann-Whitney kernel psi over all positive/negative pairs (DeLong et al. 1988)."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(1), psi.mean(0)


@pytest.fixture
def scored():
    rng = np.random.default_rng(7)
    y = rng.uniform(size=120) < 0.4
    s = np.round(rng.normal(y * 1.0, 1.0), 1)  # ties
    return y, s


def test_fast_delong_equals_slow_structural_components(scored):
    y, s = scored
    auc, v10, v01 = S.delong_components(y, s)
    a2, v10s, v01s = _slow_components(y, s)
    assert auc == pytest.approx(a2) and auc == pytest.approx(roc_auc_score(y, s))
    np.testing.assert_allclose(v10, v10s)
    np.testing.assert_allclose(v01, v01s)
    r = S.delong_ci(y, s)
    var = np.var(v10s, ddof=1) / len(v10s) + np.var(v01s, ddof=1) / len(v01s)
    assert r["se"] == pytest.approx(math.sqrt(var))
    assert r["ci"][0] == pytest.approx(auc - 1.959964 * r["se"], abs=1e-6)


def _obuchowski(y, scores_list, clusters):
    """Obuchowski (1997), written out: AUROCs of several score sets on the same clustered items and their
    covariance matrix, with I10/(I10-1), I01/(I01-1) over the clusters holding positives / negatives and
    I/(I-1) over all clusters for S11."""
    y = np.asarray(y, bool)
    clusters = np.asarray(clusters)
    ids = np.unique(clusters)
    big_i, i10, i01 = len(ids), len(np.unique(clusters[y])), len(np.unique(clusters[~y]))
    m, n = y.sum(), (~y).sum()
    mi = np.array([np.sum(y & (clusters == c)) for c in ids])
    ni = np.array([np.sum(~y & (clusters == c)) for c in ids])
    aucs, d10, d01 = [], [], []
    for s in scores_list:
        auc, v10, v01 = _slow_components(y, np.asarray(s, float))
        v10c = np.array([v10[clusters[y] == c].sum() for c in ids])
        v01c = np.array([v01[clusters[~y] == c].sum() for c in ids])
        aucs.append(auc)
        d10.append(v10c - mi * auc)
        d01.append(v01c - ni * auc)
    k = len(scores_list)
    cov = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10 = i10 / ((i10 - 1) * m) * np.sum(d10[r] * d10[s])
            s01 = i01 / ((i01 - 1) * n) * np.sum(d01[r] * d01[s])
            s11 = big_i / (big_i - 1) * (np.sum(d10[r] * d01[s]) + np.sum(d10[s] * d01[r])) / 2
            cov[r, s] = s10 / m + s01 / n + 2 * s11 / (m * n)
    return np.array(aucs), cov


# the worked example of issue 13: 8 patients x 2 frames, a rare positive class
EX_Y = np.array([1] * 4 + [0] * 12)
EX_S = np.array([.9, .8, .35, .6, .5, .1, .2, .3, .4, .45, .15, .25, .7, .05, .55, .3])
EX_CODES = np.repeat(np.arange(8), 2)


def test_clustered_auroc_se_is_obuchowskis_on_the_worked_example():
    r = S.auroc_ci(EX_Y, EX_S, codes=EX_CODES)
    auc, cov = _obuchowski(EX_Y, [EX_S], EX_CODES)
    assert r["value"] == pytest.approx(auc[0]) == pytest.approx(0.875)
    assert r["se"] == pytest.approx(math.sqrt(cov[0, 0]))
    assert r["se"] == pytest.approx(0.1331, abs=5e-5)   # one G/(G-1) over all clusters gave 0.1045
    assert "clustered" in r["method"]


def test_clustered_delong_equals_obuchowski_formula(scored):
    y, s = scored
    for size in (4, 7):                                  # clusters mixing positives and negatives
        clusters = np.arange(len(y)) // size
        r = S.auroc_ci(y, s, codes=clusters)
        auc, cov = _obuchowski(y, [s], clusters)
        assert r["value"] == pytest.approx(auc[0])
        assert r["se"] == pytest.approx(math.sqrt(cov[0, 0]))
    # clusters holding only positives or only negatives: I10 + I01 = I, the factors differ most
    clusters = np.where(y, np.arange(len(y)) % 5, 5 + np.arange(len(y)) % 30)
    auc, cov = _obuchowski(y, [s], clusters)
    assert S.auroc_ci(y, s, codes=clusters)["se"] == pytest.approx(math.sqrt(cov[0, 0]))


def test_one_item_per_cluster_is_delong(scored):
    y, s = scored
    _, v10, v01 = _slow_components(y, s)
    delong_var = np.var(v10, ddof=1) / len(v10) + np.var(v01, ddof=1) / len(v01)
    assert S.auroc_ci(y, s, codes=np.arange(len(y)))["se"] == pytest.approx(math.sqrt(delong_var))
    assert S.delong_ci(y, s)["se"] == pytest.approx(math.sqrt(delong_var))


@pytest.mark.parametrize("codes", [None, "singletons", "clusters"])
def test_macro_auroc_of_a_binary_task_is_the_auroc(codes):
    """Two classes with complementary scores: both one-vs-rest AUROCs are the AUROC, so is the macro, and so
    must be its SE (DeLong, or Obuchowski with clusters)."""
    c = {None: None, "singletons": np.arange(16), "clusters": EX_CODES}[codes]
    probs = np.stack([1 - EX_S, EX_S], 1)
    macro = S.macro_auroc_ci(EX_Y, probs, codes=c)
    binary = S.auroc_ci(EX_Y, EX_S, codes=c)
    assert macro["value"] == pytest.approx(binary["value"])
    assert macro["se"] == pytest.approx(binary["se"])
    assert macro["se"] == pytest.approx(0.1331 if codes == "clusters" else 0.1105, abs=5e-5)


def _weighted_auc(y, s, w):
    """AUROC of each bootstrap resample given as item weights [B, N] (Mann-Whitney with weights)."""
    y = np.asarray(y, bool)
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    wp, wn = w[:, y], w[:, ~y]
    return np.einsum("bi,ij,bj->b", wp, psi, wn) / (wp.sum(1) * wn.sum(1))


def test_macro_auroc_se_agrees_with_a_cluster_bootstrap():
    rng = np.random.default_rng(21)
    g = 80
    codes = np.repeat(np.arange(g), 3)
    y = np.repeat(rng.choice(3, g, p=[.5, .3, .2]), 3)  # one stage per patient, frames of a patient alike
    logit = rng.normal(0, 1, (g, 3)).repeat(3, 0) + rng.normal(0, 0.5, (3 * g, 3)) + 1.2 * np.eye(3)[y]
    probs = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
    r = S.macro_auroc_ci(y, probs, codes=codes)
    assert r["value"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    w = S.bootstrap_weights(g, n_boot=3000, seed=2)[:, codes].astype(float)
    boot = np.mean([_weighted_auc(y == k, probs[:, k], w) for k in range(3)], 0)
    assert r["se"] == pytest.approx(boot.std(ddof=1), rel=0.12)
    naive = S.macro_auroc_ci(y, probs)
    assert naive["se"] < 0.8 * r["se"]   # frames of a patient are not independent


def test_auroc_se_undefined_when_all_positives_are_one_cluster():
    codes = np.array([0, 0, 0, 1, 2, 3, 4, 5])
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    r = S.auroc_ci(y, np.linspace(1, 0, 8), codes=codes)
    assert r["value"] == 1.0 and math.isnan(r["se"]) and all(math.isnan(v) for v in r["ci"])
    assert "not estimable" in r["method"]


def test_paired_delong_equals_delong_1988_and_obuchowski(scored):
    y, s = scored
    rng = np.random.default_rng(3)
    s2 = s + rng.normal(0, 0.8, len(s))
    for clusters in (np.arange(len(y)), np.arange(len(y)) // 4):
        auc, cov = _obuchowski(y, [s, s2], clusters)
        var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        r = S.paired_auroc_test(y.astype(int), np.stack([1 - s, s], 1), np.stack([1 - s2, s2], 1), clusters)
        assert r["diff"] == pytest.approx(auc[0] - auc[1])
        assert r["se"] == pytest.approx(math.sqrt(var))
        assert r["p"] == pytest.approx(2 * st.norm.sf(abs(auc[0] - auc[1]) / math.sqrt(var)))
    # DeLong et al. (1988) for independent items: S = S10/m + S01/n with the 2x2 covariance of the components
    _, v10a, v01a = _slow_components(y, s)
    _, v10b, v01b = _slow_components(y, s2)
    s_mat = np.cov([v10a, v10b]) / len(v10a) + np.cov([v01a, v01b]) / len(v01a)
    r = S.paired_auroc_test(y.astype(int), np.stack([1 - s, s], 1), np.stack([1 - s2, s2], 1))
    assert r["se"] ** 2 == pytest.approx(s_mat[0, 0] + s_mat[1, 1] - 2 * s_mat[0, 1])
    assert r["method"] == "paired DeLong"


def test_paired_delong_of_identical_models_is_no_test():
    probs = np.stack([1 - EX_S, EX_S], 1)
    r = S.paired_auroc_test(EX_Y, probs, probs, EX_CODES)
    assert r["diff"] == 0 and r["se"] == 0 and math.isnan(r["p"]) and all(math.isnan(v) for v in r["ci"])


def test_paired_delong_multiclass_is_the_macro_difference():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 200)
    pa = rng.dirichlet(np.ones(4), 200) + 0.6 * np.eye(4)[y]
    pb = rng.dirichlet(np.ones(4), 200) + 0.3 * np.eye(4)[y]
    pa, pb = pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)
    r = S.paired_auroc_test(y, pa, pb)
    assert r["diff"] == pytest.approx(roc_auc_score(y, pa, multi_class="ovr") - roc_auc_score(y, pb, multi_class="ovr"))
    # independent scores: the variance of the difference is the sum of the two macro variances (up to noise)
    va, vb = S.macro_auroc_ci(y, pa)["se"] ** 2, S.macro_auroc_ci(y, pb)["se"] ** 2
    assert r["se"] ** 2 == pytest.approx(va + vb, rel=0.3)
    assert r["p"] < 0.05


def test_mcnemar_exact_is_the_binomial_test():
    a = np.array([1] * 30 + [1] * 9 + [0] * 2 + [0] * 5, bool)
    b = np.array([1] * 30 + [0] * 9 + [1] * 2 + [0] * 5, bool)
    r = S.mcnemar_exact(a, b)
    assert (r["b_only_a_correct"], r["c_only_b_correct"]) == (9, 2)
    assert r["p"] == pytest.approx(st.binomtest(2, 11, 0.5).pvalue)
    assert r["p"] == pytest.approx(2 * sum(math.comb(11, k) for k in range(3)) / 2 ** 11)  # 0.06543


def test_nadeau_bengio_hand_formula():
    d = [0.02, 0.03, -0.01, 0.04, 0.01]
    r = S.nadeau_bengio(d, n_train=800, n_test=200)
    # mean 0.018; sample variance 0.00148/4 = 0.00037; factor 1/5 + 200/800 = 0.45
    se = math.sqrt(0.45 * 0.00037)
    assert r["mean_diff"] == pytest.approx(0.018)
    assert r["se"] == pytest.approx(se)
    assert r["t"] == pytest.approx(0.018 / se)
    assert r["p"] == pytest.approx(2 * st.t.sf(0.018 / se, 4))
    assert r["ci"][1] - 0.018 == pytest.approx(st.t.ppf(0.975, 4) * se)
    naive = S.paired_t(np.array(d) + 0.5, np.full(5, 0.5))
    assert naive["p"] < r["p"]  # the correction makes the test more conservative


def test_wilcoxon_five_folds_floor():
    a, b = np.array([.81, .82, .80, .85, .83]), np.array([.70, .71, .69, .72, .73])
    r = S.wilcoxon(a, b)
    assert r["p"] == pytest.approx(0.0625) and r["min_possible_p"] == pytest.approx(2 / 32)
    assert "0.0625" in r["note"]
    assert r["p"] == pytest.approx(st.wilcoxon(a, b).pvalue)


def test_holm_hand_values_and_statsmodels():
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = [0.2, 0.001, 0.04, float("nan"), 0.01]
    got = S.holm(p)
    ref = multipletests([0.2, 0.001, 0.04, 0.01], method="holm")[1]
    assert math.isnan(got[3])
    np.testing.assert_allclose([got[0], got[1], got[2], got[4]], ref)


def test_holm_matches_statsmodels_on_random_pvalues():
    rng = np.random.default_rng(4)
    for size in (1, 4, 9):  # few calls: statsmodels' Holm runs gc.collect() each time
        p = np.round(rng.uniform(0, 0.2, size), 2)  # ties included
        np.testing.assert_allclose(S.holm(p), multipletests(p, method="holm")[1])


def test_cluster_bootstrap_is_wider_for_correlated_clusters():
    # 40 patients x 5 frames, every frame of a patient right or wrong together: effective n is 40, not 200
    rng = np.random.default_rng(11)
    right = np.repeat(rng.uniform(size=40) < 0.8, 5)
    y = np.zeros(200, int)
    yhat = np.where(right, 0, 1)
    codes = S.group_codes(np.repeat(np.arange(40), 5))

    def width(c):
        w = S.bootstrap_weights(int(c.max()) + 1, n_boot=4000, seed=0)
        acc = M.from_confusion(S.bootstrap_confusions(y, yhat, c, w, 2))["accuracy"]
        lo, hi = S.percentile_ci(acc)
        return hi - lo

    clustered, naive = width(codes), width(np.arange(200))
    assert clustered > 1.8 * naive  # sqrt(5) ~ 2.24 in theory
    p = right.mean()
    assert clustered == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / 40), rel=0.15)


def test_constant_fold_differences_are_zero_variance_not_significance():
    a, b = [.8, .9, .7], [.7, .8, .6]                     # differences 0.1 up to 1e-16 noise
    assert st.ttest_rel(a, b).statistic > 1e14            # what a bare t-test says
    t = S.paired_t(a, b)
    nb = S.nadeau_bengio(np.subtract(a, b), 80, 20, values=(a, b))
    for r in (t, nb):
        assert r["zero_variance"] is True and math.isnan(r["t"]) and math.isnan(r["p"])
        assert all(math.isnan(v) for v in r["ci"]) and "variance is zero" in r["note"]
    assert t["mean_diff"] == pytest.approx(0.1) and t["sd_diff"] == 0
    assert S.holm([t["p"], 0.01]) == pytest.approx([float("nan"), 0.01], nan_ok=True)
    zero = S.paired_t([.8, .9], [.8, .9])                  # no difference at all: also zero variance
    assert zero["zero_variance"] and math.isnan(zero["p"])


def test_nearly_constant_differences_are_still_tested():
    a, b = np.array([.8, .9, .7]), np.array([.7, .8, .6 - 1e-6])
    t = S.paired_t(a, b)
    assert not t["zero_variance"] and t["t"] == pytest.approx(st.ttest_rel(a, b).statistic)
    assert not S.nadeau_bengio(a - b, 80, 20, values=(a, b))["zero_variance"]


def test_paired_t_matches_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import DescrStatsW
    rng = np.random.default_rng(1)
    a = rng.normal(0.9, 0.01, 7)
    b = a - rng.normal(0.05, 0.01, 7)
    r = S.paired_t(a, b)
    ref = st.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert r["df"] == 6 and r["zero_variance"] is False
    assert r["ci"] == pytest.approx(list(DescrStatsW(a - b).tconfint_mean(alpha=0.05)))
    assert r["sd_diff"] == pytest.approx(np.std(a - b, ddof=1))
    one = S.paired_t(a, b, alternative="greater")
    assert one["p"] == pytest.approx(st.ttest_rel(a, b, alternative="greater").pvalue)
