"""Can a set of printed scores come from one integer confusion matrix? An integer program (pulp + CBC).

Every score used here is a ratio of linear functions of the confusion matrix M (rows = truth), so
"the printed value p admits the true value num/den" becomes two linear constraints with integer
coefficients, e.g. lo <= TP/(TP+FP) <= hi  <=>  b*TP - a*(TP+FP) >= 0 and d*TP - c*(TP+FP) <= 0 for
lo = a/b, hi = c/d (a half-open bound becomes <= -1). The program is exact: no float tolerance decides
feasibility, and any witness matrix is re-checked with fractions. (The mlscorecheck approach.)
"""
from __future__ import annotations

import warnings
from fractions import Fraction

import pulp

RATIO_METRICS = ("precision", "recall", "f1", "specificity", "npv")


def _ratio_parts(metric: str, tp, fp, fn, n_c: int, n: int):
    """(numerator, denominator) of a per-class metric as linear expressions."""
    tn = n - n_c - fp
    if metric == "recall":
        return tp, n_c
    if metric == "precision":
        return tp, tp + fp
    if metric == "f1":
        return 2 * tp, 2 * tp + fp + fn
    if metric == "specificity":
        return tn, n - n_c
    if metric == "npv":
        return tn, tn + fn
    raise ValueError(f"not a per-class ratio metric: {metric}")


def _bound(prob, num, den, interval, name: str) -> None:
    lo, hi, hi_open = interval
    lo, hi = Fraction(lo), Fraction(hi)
    if lo > 0:
        prob += lo.denominator * num - lo.numerator * den >= 0, f"{name}_lo"
        if not isinstance(den, int):
            prob += den >= 1, f"{name}_defined"
    if hi < 1 or (hi == 1 and hi_open):
        prob += hi.denominator * num - hi.numerator * den <= (-1 if hi_open else 0), f"{name}_hi"


def _exact(metric: str, m: list[list[int]], c: int) -> Fraction | None:
    n = sum(map(sum, m))
    tp = m[c][c]
    n_c = sum(m[c])
    fp = sum(m[i][c] for i in range(len(m))) - tp
    fn = n_c - tp
    tn = n - n_c - fp
    num, den = {"recall": (tp, n_c), "precision": (tp, tp + fp), "f1": (2 * tp, 2 * tp + fp + fn),
                "specificity": (tn, tn + fp), "npv": (tn, tn + fn)}[metric]
    return Fraction(num, den) if den else None


def _admits(interval, x: Fraction | None) -> bool:
    if x is None:
        return False
    lo, hi, hi_open = interval
    return lo <= x and (x < hi if hi_open else x <= hi)


def solve(supports: list[int], per_class: dict[int, dict[str, tuple]] | None = None,
          accuracy: tuple | None = None, time_limit: float = 30.0) -> dict:
    """Find a confusion matrix with row sums `supports` meeting every interval constraint.

    per_class: {class index: {metric: (lo, hi, hi_open)}} with metric in RATIO_METRICS; accuracy: an
    interval for trace/N. Returns {"status": "feasible"|"infeasible"|"unknown", "matrix": [[int]]|None,
    "verified": bool}.
    """
    with warnings.catch_warnings():  # pulp 3.x announces its 4.0 API on every variable; the 3.x API is what we pin
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve(supports, per_class, accuracy, time_limit)


def _solve(supports, per_class, accuracy, time_limit) -> dict:
    k = len(supports)
    n = int(sum(supports))
    prob = pulp.LpProblem("confusion_feasibility", pulp.LpMinimize)
    m = [[pulp.LpVariable(f"m_{i}_{j}", lowBound=0, upBound=supports[i], cat="Integer") for j in range(k)]
         for i in range(k)]
    prob += pulp.lpSum([])  # feasibility only
    for i in range(k):
        prob += pulp.lpSum(m[i]) == int(supports[i]), f"row_{i}"
    tps = [m[c][c] for c in range(k)]
    for c, mets in (per_class or {}).items():
        tp = m[c][c]
        fp = pulp.lpSum(m[i][c] for i in range(k) if i != c)
        fn = pulp.lpSum(m[c][j] for j in range(k) if j != c)
        for metric, interval in mets.items():
            num, den = _ratio_parts(metric, tp, fp, fn, int(supports[c]), n)
            _bound(prob, num, den, interval, f"{metric}_{c}")
    if accuracy is not None:
        _bound(prob, pulp.lpSum(tps), n, accuracy, "accuracy")
    prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        return {"status": "infeasible", "matrix": None, "verified": True}
    if status != "Optimal":
        return {"status": "unknown", "matrix": None, "verified": False, "solver_status": status}
    mat = [[int(round(v.value())) for v in row] for row in m]
    ok = all(sum(mat[i]) == supports[i] for i in range(k))
    for c, mets in (per_class or {}).items():
        ok &= all(_admits(iv, _exact(metric, mat, c)) for metric, iv in mets.items())
    if accuracy is not None:
        ok &= _admits(accuracy, Fraction(sum(mat[c][c] for c in range(k)), n))
    return {"status": "feasible" if ok else "unknown", "matrix": mat, "verified": ok}


def diagnose(supports: list[int], per_class: dict[int, dict[str, tuple]], accuracy: tuple | None = None) -> dict:
    """Which constraints are infeasible on their own: each class alone, then each single metric."""
    bad_classes = []
    bad_metrics = []
    for c, mets in per_class.items():
        if solve(supports, {c: mets})["status"] == "infeasible":
            bad_classes.append(c)
            for metric, iv in mets.items():
                if solve(supports, {c: {metric: iv}})["status"] == "infeasible":
                    bad_metrics.append((c, metric))
    acc_alone = None
    if accuracy is not None:
        acc_alone = solve(supports, {}, accuracy)["status"]
    return {"classes": bad_classes, "metrics": bad_metrics, "accuracy_alone": acc_alone}
