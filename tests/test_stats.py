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


def test_clustered_delong_equals_obuchowski_formula(scored):
    y, s = scored
    clusters = np.arange(len(y)) // 4
    auc, v10, v01 = _slow_components(y, s)
    m, n, big_i = y.sum(), (~y).sum(), clusters.max() + 1
    v10c = np.zeros(big_i)
    v01c = np.zeros(big_i)
    mi = np.zeros(big_i)
    ni = np.zeros(big_i)
    np.add.at(v10c, clusters[y], v10)
    np.add.at(v01c, clusters[~y], v01)
    np.add.at(mi, clusters[y], 1)
    np.add.at(ni, clusters[~y], 1)
    s10 = big_i / ((big_i - 1) * m) * np.sum((v10c - mi * auc) ** 2)
    s01 = big_i / ((big_i - 1) * n) * np.sum((v01c - ni * auc) ** 2)
    s11 = big_i / (big_i - 1) * np.sum((v10c - mi * auc) * (v01c - ni * auc))
    var = s10 / m + s01 / n + 2 * s11 / (m * n)
    r = S.auroc_ci(y, s, codes=clusters)
    assert r["value"] == pytest.approx(auc)
    assert r["se"] == pytest.approx(math.sqrt(var))
    assert "clustered" in r["method"]


def test_clustered_variance_with_singletons_reduces_to_delong(scored):
    y, s = scored
    auc, phi = S.auc_influence(y, s)
    _, v10, v01 = S.delong_components(y, s)
    n_all = len(y)
    m, n = len(v10), len(v01)
    delong_var = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n
    # Obuchowski with one item per cluster: I/(I-1) * [sum (V10-A)^2/m^2 + sum (V01-A)^2/n^2]
    expected = n_all / (n_all - 1) * (np.var(v10) / m + np.var(v01) / n)
    assert S.clustered_variance(phi, np.arange(n_all)) == pytest.approx(expected)
    assert expected == pytest.approx(delong_var, rel=0.03)


def test_macro_auroc_ci_contains_sklearn_value():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 400)
    probs = rng.dirichlet(np.ones(5), 400)
    probs[np.arange(400), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    r = S.macro_auroc_ci(y, probs)
    assert r["value"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert r["ci"][0] < r["value"] < r["ci"][1]


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
