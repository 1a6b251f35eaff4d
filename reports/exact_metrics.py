"""Classification metrics of confusion counts as exact fractions (sklearn's definitions), for the claims audit.

The float versions for runs live in reports.metrics; here every value is a Fraction (or, for the Matthews
correlation, an exact a/sqrt(b)), so "does this printed value admit that count?" is decided without tolerance.
Conventions (as sklearn with zero_division=0): a per-class ratio with a zero denominator is undefined (None) and
counts as 0 in macro/weighted averages; balanced accuracy averages recall over the classes present in the truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

COUNT_METRICS = ("precision", "recall", "f1", "specificity", "npv")   # per-class ratios of TP/FP/FN/TN
AVERAGED = ("precision", "recall", "f1")                               # macro_* and weighted_* of these


@dataclass(frozen=True)
class SqrtRatio:
    """The exact real number a / sqrt(b) (b > 0), comparable with fractions without rounding."""

    a: Fraction
    b: Fraction

    def _cmp(self, r) -> int:
        """Sign of self - r for a rational r."""
        r = Fraction(r)
        sa, sr = (self.a > 0) - (self.a < 0), (r > 0) - (r < 0)
        if sa != sr:
            return 1 if sa > sr else -1
        if sa == 0:
            return 0
        lhs, rhs = self.a * self.a, r * r * self.b          # |self| vs |r|, squared
        s = (lhs > rhs) - (lhs < rhs)
        return s if sa > 0 else -s

    def __lt__(self, r):
        return self._cmp(r) < 0

    def __le__(self, r):
        return self._cmp(r) <= 0

    def __gt__(self, r):
        return self._cmp(r) > 0

    def __ge__(self, r):
        return self._cmp(r) >= 0

    def __eq__(self, r):
        if isinstance(r, SqrtRatio):
            return self.a * abs(self.a) * r.b == r.a * abs(r.a) * self.b
        return self._cmp(r) == 0

    def __hash__(self):
        return hash((self.a, self.b))

    def __float__(self) -> float:
        return float(self.a) / math.sqrt(float(self.b))


def class_metric(m: str, tp: int, fp: int, fn: int, tn: int) -> Fraction | None:
    """One per-class ratio (precision, recall, f1, specificity, npv); None when its denominator is 0."""
    num, den = {"recall": (tp, tp + fn), "precision": (tp, tp + fp), "f1": (2 * tp, 2 * tp + fp + fn),
                "specificity": (tn, tn + fp), "npv": (tn, tn + fn)}[m]
    return Fraction(num, den) if den else None


def matrix_counts(matrix: list[list[int]]) -> list[tuple[int, int, int, int]]:
    """(TP, FP, FN, TN) per class of a confusion matrix (rows = truth, columns = prediction)."""
    n = sum(map(sum, matrix))
    out = []
    for c in range(len(matrix)):
        tp = matrix[c][c]
        fn = sum(matrix[c]) - tp
        fp = sum(row[c] for row in matrix) - tp
        out.append((tp, fp, fn, n - tp - fp - fn))
    return out


def overall(counts: list[tuple[int, int, int, int]]) -> dict:
    """Accuracy, error rate, macro/weighted P/R/F1, balanced accuracy, Cohen's kappa and the Matthews correlation
    (multi-class: Gorodkin's R_K) from per-class (TP, FP, FN, TN), which fix the row and column sums."""
    n = sum(counts[0])
    k = len(counts)
    support = [tp + fn for tp, _, fn, _ in counts]
    predicted = [tp + fp for tp, fp, _, _ in counts]
    correct = sum(tp for tp, _, _, _ in counts)
    out = {"n": n, "accuracy": Fraction(correct, n), "error_rate": Fraction(n - correct, n)}
    for m in AVERAGED:
        vals = [class_metric(m, *c) or Fraction(0) for c in counts]
        out[f"macro_{m}"] = sum(vals, Fraction(0)) / k
        out[f"weighted_{m}"] = sum((v * s for v, s in zip(vals, support)), Fraction(0)) / n
    present = [class_metric("recall", *c) for c, s in zip(counts, support) if s]
    out["balanced_accuracy"] = sum(present, Fraction(0)) / len(present) if present else None
    chance = sum(s * p for s, p in zip(support, predicted))            # N^2 x expected agreement
    out["kappa"] = Fraction(n * correct - chance, n * n - chance) if n * n != chance else None
    var_p, var_t = n * n - sum(p * p for p in predicted), n * n - sum(s * s for s in support)
    out["mcc"] = SqrtRatio(Fraction(n * correct - chance), Fraction(var_p * var_t)) if var_p and var_t else None
    return out


def weighted_kappa(matrix: list[list[int]], weights: str) -> Fraction | None:
    """Cohen's kappa with 'linear' or 'quadratic' disagreement weights |i-j| or (i-j)^2 (sklearn's)."""
    k = len(matrix)
    n = sum(map(sum, matrix))
    rows = [sum(r) for r in matrix]
    cols = [sum(matrix[i][j] for i in range(k)) for j in range(k)]
    w = [[abs(i - j) if weights == "linear" else (i - j) ** 2 for j in range(k)] for i in range(k)]
    observed = sum(w[i][j] * matrix[i][j] for i in range(k) for j in range(k)) * n     # x N to stay integral
    expected = sum(w[i][j] * rows[i] * cols[j] for i in range(k) for j in range(k))
    return 1 - Fraction(observed, expected) if expected else None
