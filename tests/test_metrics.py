"""reports.metrics against sklearn and hand-computed values."""
import numpy as np
import pytest
from sklearn import metrics as skm

from reports import metrics as M


@pytest.fixture
def preds():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)
    probs = rng.dirichlet(np.ones(5), 300)
    probs[np.arange(300), y] += rng.uniform(0, 1.0, 300)  # informative but imperfect
    probs /= probs.sum(1, keepdims=True)
    return y, probs


def test_confusion_matches_sklearn(preds):
    y, probs = preds
    yhat = probs.argmax(1)
    np.testing.assert_array_equal(M.confusion(y, yhat, 5), skm.confusion_matrix(y, yhat, labels=range(5)))
    with pytest.raises(ValueError):
        M.confusion([0, 5], [0, 1], 5)


def test_headline_metrics_match_sklearn(preds):
    y, probs = preds
    yhat = probs.argmax(1)
    r = M.from_confusion(M.confusion(y, yhat, 5))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yhat))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, yhat, average="macro", labels=range(5)))
    assert r["weighted_f1"] == pytest.approx(skm.f1_score(y, yhat, average="weighted", labels=range(5)))
    assert r["kappa"] == pytest.approx(skm.cohen_kappa_score(y, yhat))
    assert r["qwk"] == pytest.approx(skm.cohen_kappa_score(y, yhat, weights="quadratic"))
    assert r["mae_stage"] == pytest.approx(np.mean(np.abs(y - yhat)))
    assert r["error_ge2_rate"] == pytest.approx(np.mean(np.abs(y - yhat) >= 2))


def test_absent_class_follows_sklearn_conventions():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])          # F4 absent from the truth ...
    yhat = np.array([0, 1, 1, 1, 2, 4, 3, 2])       # ... but predicted once
    r = M.from_confusion(M.confusion(y, yhat, 5))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yhat))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, yhat, average="macro", labels=range(5), zero_division=0))


def test_per_class_matches_sklearn_and_hand_values(preds):
    y, probs = preds
    yhat = probs.argmax(1)
    pc = M.per_class(M.confusion(y, yhat, 5))
    p, r, f, s = skm.precision_recall_fscore_support(y, yhat, labels=range(5))
    np.testing.assert_allclose(pc["precision"], p)
    np.testing.assert_allclose(pc["recall"], r)
    np.testing.assert_allclose(pc["f1"], f)
    np.testing.assert_array_equal(pc["support"], s)
    # a 2x2 hand example: TP=40, FN=10, FP=5, TN=45
    cm = np.array([[45, 5], [10, 40]])   # class 0 = negative, class 1 = positive
    h = M.per_class(cm)
    assert h["recall"][1] == pytest.approx(40 / 50)
    assert h["specificity"][1] == pytest.approx(45 / 50)
    assert h["precision"][1] == pytest.approx(40 / 45)
    assert h["npv"][1] == pytest.approx(45 / 55)


def test_stack_of_matrices_equals_one_by_one(preds):
    y, probs = preds
    rng = np.random.default_rng(0)
    cms = np.stack([M.confusion(y[i], probs.argmax(1)[i], 5) for i in
                    (rng.integers(0, len(y), len(y)) for _ in range(4))])
    batch = M.from_confusion(cms)
    for k in range(4):
        single = M.from_confusion(cms[k])
        for name, v in single.items():
            assert batch[name][k] == pytest.approx(v, nan_ok=True)


def test_auroc_matches_sklearn_with_ties(preds):
    y, probs = preds
    rounded = np.round(probs, 1)  # many ties
    for k in range(5):
        assert M.auroc_binary(y == k, rounded[:, k]) == pytest.approx(skm.roc_auc_score(y == k, rounded[:, k]))
    np.testing.assert_allclose(M.auroc_ovr(y, probs), [skm.roc_auc_score(y == k, probs[:, k]) for k in range(5)])
    cut = M.auroc_cutoffs(y, probs, {">=F2": 2, "F4": 4})
    assert cut[">=F2"] == pytest.approx(skm.roc_auc_score(y >= 2, probs[:, 2:].sum(1)))
    assert cut["F4"] == pytest.approx(skm.roc_auc_score(y == 4, probs[:, 4]))
    assert np.isnan(M.auroc_binary(np.zeros(5, bool), np.arange(5)))


def test_classification_report_shapes(preds):
    y, probs = preds
    rep = M.classification_report(y, probs, ["F0", "F1", "F2", "F3", "F4"])
    assert rep["n"] == 300 and len(rep["confusion"]) == 5
    assert rep["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert rep["per_class"]["F2"]["support"] == np.sum(y == 2)


@pytest.mark.parametrize("y,yhat", [
    ([0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 1, 1, 2, 4, 3, 2]),      # class 4 predicted, absent from the truth
    ([0, 0, 1, 1, 2, 2, 3, 4], [0, 0, 0, 1, 2, 2, 3, 3]),      # class 4 in the truth, never predicted
    ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]),                 # classes 3, 4 absent from truth and predictions
    ([0, 0, 0, 0], [0, 0, 0, 0]),                             # one class only: 100 %
    ([0, 1, 0, 1], [1, 0, 1, 0]),                             # 0 %
])
def test_macro_averages_follow_sklearn_zero_division_convention(y, yhat):
    """Every macro average is sklearn's (labels=None: classes in truth or predictions; undefined -> 0)."""
    r = M.from_confusion(M.confusion(y, yhat, 5))
    p, rc, f, _ = skm.precision_recall_fscore_support(y, yhat, average="macro", zero_division=0)
    assert r["macro_precision"] == pytest.approx(p)
    assert r["macro_recall"] == pytest.approx(rc)
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, yhat, average="macro", zero_division=0))
    assert r["macro_f1"] == pytest.approx(f)
    assert r["weighted_f1"] == pytest.approx(skm.f1_score(y, yhat, average="weighted", zero_division=0))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, yhat))
    # specificity (not in sklearn) averaged the same way: recall of the negatives, over the same classes
    labels = sorted(set(y) | set(yhat))
    spec = [skm.recall_score(np.array(y) != k, np.array(yhat) != k, zero_division=0) for k in labels]
    assert r["macro_specificity"] == pytest.approx(np.mean(spec))


def test_macro_average_of_resamples_equals_sklearn_on_each_resample():
    """The vectorised bootstrap uses the same convention: each resample scored as sklearn would score it,
    including resamples that miss a small class (the case that used to drag macro F1 down)."""
    from reports import stats as S
    rng = np.random.default_rng(12)
    groups = np.repeat(np.arange(15), 2)
    y = np.array([0] * 12 + [1] * 12 + [2] * 4 + [3] * 2)   # class 3: one patient
    yhat = np.where(rng.uniform(size=30) < 0.8, y, rng.integers(0, 4, 30))
    yhat[-2:] = 3
    w = S.bootstrap_weights(15, n_boot=40, seed=3)
    boot = M.from_confusion(S.bootstrap_confusions(y, yhat, groups, w, 4))
    missed = 0
    for b in range(40):
        idx = np.concatenate([np.flatnonzero(groups == g).repeat(int(c)) for g, c in enumerate(w[b]) if c])
        missed += 3 not in y[idx]
        for name, fn in (("macro_f1", skm.f1_score), ("macro_precision", skm.precision_score),
                         ("macro_recall", skm.recall_score)):
            assert boot[name][b] == pytest.approx(fn(y[idx], yhat[idx], average="macro", zero_division=0))
    assert missed > 0  # the check covered resamples without class 3
