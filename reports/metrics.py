"""Classification metrics for any label space: per-class counts, averages, kappas, class-step errors, AUROCs.

Which of them a report shows depends on the task (reports/task.py): the ordinal quantities (weighted kappas,
class-step errors, cut-off AUROCs) only for ordinal tasks, the positive-class AUROC only for binary ones.

Everything derived from a confusion matrix works on a stack `cm[..., C, C]` (rows = truth, columns =
prediction) so the bootstrap can evaluate 10,000 resampled matrices at once.
"""
from __future__ import annotations

import numpy as np
from scipy import special
from scipy.stats import rankdata


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (scipy's, which subtracts the row maximum)."""
    return special.softmax(np.asarray(logits, dtype=np.float64), axis=1)


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts [C, C], rows = true class, columns = predicted class (as sklearn.metrics.confusion_matrix)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _div(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def class_counts(cm: np.ndarray) -> dict:
    """TP, FP, FN, TN per class, shape [..., C]."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(-1) - tp
    fp = cm.sum(-2) - tp
    tn = cm.sum((-2, -1))[..., None] - tp - fn - fp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def per_class(cm: np.ndarray) -> dict:
    """Sensitivity (recall), specificity, precision (PPV), NPV, F1 and support per class, shape [..., C]."""
    c = class_counts(cm)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    recall = _div(tp, tp + fn)
    precision = _div(tp, tp + fp)
    # F1 = 2TP / (2TP + FP + FN); sklearn's zero_division=0 convention when a class is absent and never predicted
    f1 = np.nan_to_num(_div(2 * tp, 2 * tp + fp + fn), nan=0.0)
    return {**c, "recall": recall, "sensitivity": recall, "specificity": _div(tn, tn + fp),
            "precision": precision, "ppv": precision, "npv": _div(tn, tn + fn), "f1": f1, "support": tp + fn}


MACRO_CONVENTION = ("macro averages follow scikit-learn: the mean over the classes present in the truth or the "
                    "predictions, an undefined per-class value (e.g. precision of a class never predicted) counting "
                    "as 0 (zero_division=0); balanced accuracy is the mean recall over the classes in the truth")


def macro_average(per_class_values: np.ndarray, cm: np.ndarray) -> np.ndarray:
    """sklearn's macro average (labels=None, zero_division=0) of per-class values [..., C] for matrices [..., C, C]:
    the mean over classes present in the truth or the predictions, NaN (undefined) counting as 0."""
    cm = np.asarray(cm, dtype=np.float64)
    used = (cm.sum(-1) + cm.sum(-2)) > 0
    vals = np.where(used, np.nan_to_num(np.asarray(per_class_values, dtype=np.float64), nan=0.0), 0.0)
    return _div(vals.sum(-1), used.sum(-1))


def kappa(cm: np.ndarray, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa from confusion matrices [..., C, C]; weights None, 'linear' or 'quadratic' (as sklearn)."""
    cm = np.asarray(cm, dtype=np.float64)
    n_classes = cm.shape[-1]
    i, j = np.meshgrid(np.arange(n_classes), np.arange(n_classes), indexing="ij")
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    else:
        raise ValueError(f"unknown weights {weights!r}")
    total = cm.sum((-2, -1), keepdims=True)
    expected = cm.sum(-1, keepdims=True) * cm.sum(-2, keepdims=True) / np.where(total > 0, total, 1)
    return 1.0 - _div((w * cm).sum((-2, -1)), (w * expected).sum((-2, -1)))


def from_confusion(cm: np.ndarray) -> dict:
    """All confusion-derived headline metrics for a stack of matrices [..., C, C]."""
    cm = np.asarray(cm, dtype=np.float64)
    n_classes = cm.shape[-1]
    pc = per_class(cm)
    total = cm.sum((-2, -1))
    support = pc["support"]
    i, j = np.meshgrid(np.arange(n_classes), np.arange(n_classes), indexing="ij")
    dist = np.abs(i - j)
    present = support > 0
    with np.errstate(invalid="ignore"):
        return {
            "accuracy": _div(np.trace(cm, axis1=-2, axis2=-1), total),
            # balanced accuracy = mean recall over classes present in the truth (sklearn's definition)
            "balanced_accuracy": _div(np.nansum(np.where(present, pc["recall"], 0), -1), present.sum(-1)),
            "macro_precision": macro_average(pc["precision"], cm),
            "macro_recall": macro_average(pc["recall"], cm),
            "macro_f1": macro_average(pc["f1"], cm),
            "weighted_f1": _div((pc["f1"] * support).sum(-1), support.sum(-1)),
            "macro_specificity": macro_average(pc["specificity"], cm),
            "kappa": kappa(cm),
            "qwk": kappa(cm, "quadratic"),
            "linear_kappa": kappa(cm, "linear"),
            "mae_stage": _div((cm * dist).sum((-2, -1)), total),
            "error_ge2_rate": _div((cm * (dist >= 2)).sum((-2, -1)), total),
        }


def auroc_binary(y_bin, scores) -> float:
    """AUROC as the Mann-Whitney statistic with midranks for ties (equals sklearn's roc_auc_score); NaN if one class."""
    y_bin = np.asarray(y_bin).astype(bool)
    m = int(y_bin.sum())
    n = len(y_bin) - m
    if m == 0 or n == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y_bin].sum() - m * (m + 1) / 2) / (m * n))


def auroc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC per class (NaN for a class absent from, or the only class in, y_true)."""
    y_true = np.asarray(y_true)
    out = np.full(probs.shape[1], np.nan)
    for k in range(probs.shape[1]):
        pos = y_true == k
        if 0 < pos.sum() < len(y_true):
            out[k] = auroc_binary(pos, probs[:, k])
    return out


def cutoff_scores(probs: np.ndarray, first: int) -> np.ndarray:
    """Score for 'class >= cut-off' on an ordinal scale: the summed probabilities of classes first..C-1."""
    return np.asarray(probs)[:, first:].sum(axis=1)


def auroc_cutoffs(y_true: np.ndarray, probs: np.ndarray, cutoffs: dict) -> dict:
    """AUROC of each cut-off {name: index of its first positive class} (the task's cut-offs)."""
    out = {}
    for name, first in cutoffs.items():
        pos = np.asarray(y_true) >= first
        out[name] = auroc_binary(pos, cutoff_scores(probs, first))
    return out


def classification_report(y_true, probs, class_names, cutoffs: dict | None = None,
                          positive: int | None = None) -> dict:
    """Point estimates of every metric for one set of predictions (probabilities [N, C]).

    `cutoffs` {name: first positive class index} adds `auroc_cutoffs`; `positive` (binary tasks) adds `auroc`,
    the AUROC of the positive class's probability."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    cm = confusion(y_true, probs.argmax(1), n_classes)
    out = {k: float(v) for k, v in from_confusion(cm).items()}
    pc = per_class(cm)
    out["per_class"] = {name: {k: float(pc[k][c]) for k in
                               ("tp", "fp", "fn", "tn", "recall", "specificity", "precision", "npv", "f1", "support")}
                        for c, name in enumerate(class_names)}
    auc = auroc_ovr(y_true, probs)
    for c, name in enumerate(class_names):
        out["per_class"][name]["auroc"] = float(auc[c])
    out["auroc_macro"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    out["auroc_cutoffs"] = {k: float(v) for k, v in auroc_cutoffs(y_true, probs, cutoffs or {}).items()}
    if positive is not None:
        out["auroc"] = auroc_binary(y_true == positive, probs[:, positive])
    out["confusion"] = cm.tolist()
    out["n"] = int(len(y_true))
    return out
