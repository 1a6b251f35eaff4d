"""Calibration: top-label ECE with stated equal-width binning, multiclass Brier score, reliability-diagram data."""
from __future__ import annotations

import numpy as np

N_BINS = 15
BINNING = f"top-label confidence, {N_BINS} equal-width bins on [0, 1], bin weight = share of images"


def reliability(y_true, probs, n_bins: int = N_BINS) -> dict:
    """Per bin: lower/upper edge, count, mean confidence and accuracy of the top-label prediction."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins (lo, hi], the first also takes 0: confidence 1.0 falls into the last bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"edges": edges.tolist(), "count": count.tolist(),
            "confidence": [None if not np.isfinite(v) else float(v) for v in mean_conf],
            "accuracy": [None if not np.isfinite(v) else float(v) for v in acc]}


def ece(y_true, probs, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of (n_b / N) * |accuracy_b - confidence_b|."""
    r = reliability(y_true, probs, n_bins)
    n = sum(r["count"])
    return float(sum(c / n * abs(a - m) for c, a, m in zip(r["count"], r["accuracy"], r["confidence"]) if c))


def brier(y_true, probs) -> float:
    """Multiclass Brier score: mean over images of sum_k (p_k - 1[y = k])^2 (range 0..2)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(y_true)]
    return float(((probs - onehot) ** 2).sum(1).mean())


def calibration_report(y_true, probs) -> dict:
    return {"ece": ece(y_true, probs), "brier": brier(y_true, probs), "binning": BINNING,
            "reliability": reliability(y_true, probs)}
