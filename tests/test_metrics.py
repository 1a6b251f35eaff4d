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
