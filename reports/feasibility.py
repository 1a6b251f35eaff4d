"""Can a set of printed scores come from one integer confusion matrix? An integer program (pulp + CBC).

Every score used here is a ratio of linear functions of the confusion matrix M (rows = truth), so
"the printed value p admits the true value num/den" becomes two linear constraints with integer
coefficients, e.g. lo <= TP/(TP+FP) <= hi  <=>  b*TP - a*(TP+FP) >= 0 and d*TP - c*(TP+FP) <= 0 for
lo = a/b, hi = c/d (a half-open bound becomes <= -1). These integer constraints are exact: no float tolerance
decides them. (The mlscorecheck approach.)

Overall metrics that average ratios (macro/weighted precision and F1, balanced accuracy, an unnamed macro or
weighted average) and Cohen's kappa (plain, linear- or quadratic-weighted: each a ratio of linear functions of the
matrix) enter too. Precision_c = TP_c / s_c and F1_c = 2 TP_c / (s_c + n_c), with
s_c the column sum, are continuous variables tied to the matrix by the exact product x * s_c = sum_b 2^b (x * y_b)
over the binary digits y_b of s_c (McCormick's envelope is exact for a binary times a [0, 1] variable). These
constraints carry rational coefficients, so they are stated in floating point with the printed interval widened
by SLACK: a widened program has at least the exact one's solutions, so "infeasible" is never an artefact of
rounding against the paper, and a witness is accepted only when every printed value admits it in fractions
("unknown" otherwise). The Matthews correlation (a square root of quadratics) and AUROC (needs the scores) are
not part of the program.
"""
from __future__ import annotations

import itertools
import warnings
from fractions import Fraction

import pulp

from reports import exact_metrics as X

RATIO_METRICS = ("precision", "recall", "f1", "specificity", "npv")
OVERALL_METRICS = ("balanced_accuracy", "kappa", "quadratic_kappa", "linear_kappa", "weighted_recall", "macro_avg",
                   "weighted_avg",
                   *(f"{a}_{m}" for a in ("macro", "weighted") for m in X.AVERAGED if f"{a}_{m}" != "weighted_recall"))
SLACK = 1e-9


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


def _admits(interval, x: Fraction | None) -> bool:
    if x is None:
        return False
    lo, hi, hi_open = interval
    return lo <= x and (x < hi if hi_open else x <= hi)


def solve(supports: list[int], per_class: dict[int, dict[str, tuple]] | None = None,
          accuracy: tuple | None = None, time_limit: float = 30.0, overall: dict[str, tuple] | None = None) -> dict:
    """Find a confusion matrix with row sums `supports` meeting every interval constraint.

    per_class: {class index: {metric: (lo, hi, hi_open)}} with metric in RATIO_METRICS; accuracy: an
    interval for trace/N; overall: {metric: interval} with metric in OVERALL_METRICS. Returns
    {"status": "feasible"|"infeasible"|"unknown", "matrix": [[int]]|None, "verified": bool}.
    """
    overall = overall or {}
    unnamed = [name for name in ("macro_avg", "weighted_avg") if name in overall]
    if not unnamed:
        return _solve_quietly(supports, per_class, accuracy, time_limit, overall)
    # an average whose metric is not named: one program per reading (recall first: it is linear), feasible if any is
    statuses = []
    for choice in itertools.product(("recall", "precision", "f1"), repeat=len(unnamed)):
        named = {k: v for k, v in overall.items() if k not in unnamed}
        for name, metric in zip(unnamed, choice):
            key = f"{name.split('_')[0]}_{metric}"
            named[key] = _intersect(named[key], overall[name]) if key in named else overall[name]
        res = _solve_quietly(supports, per_class, accuracy, time_limit, named)
        if res["status"] == "feasible":
            return {**res, "reading": dict(zip(unnamed, choice))}
        statuses.append(res)
    if all(r["status"] == "infeasible" for r in statuses):
        return statuses[0]
    return next(r for r in statuses if r["status"] != "infeasible")


def _intersect(a: tuple, b: tuple) -> tuple:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return lo, hi, (a[2] if a[1] == hi else False) or (b[2] if b[1] == hi else False)


def _solve_quietly(*args) -> dict:
    with warnings.catch_warnings():  # pulp 3.x announces its 4.0 API on every variable; the 3.x API is what we pin
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve(*args)


def _float_bounds(prob, expr, interval, name: str) -> None:
    """lo - SLACK <= expr <= hi + SLACK in floating point (see the module docstring)."""
    lo, hi, _ = interval
    prob += expr >= float(lo) - SLACK, f"{name}_lo"
    prob += expr <= float(hi) + SLACK, f"{name}_hi"


def _ratio_vars(prob, m, supports, need: set[str]) -> dict[str, list]:
    """Per-class recall (linear), and precision / F1 as continuous variables tied exactly to the matrix."""
    k, n = len(supports), int(sum(supports))
    out = {"recall": [pulp.lpSum([m[c][c] * (1.0 / supports[c])]) if supports[c] else pulp.lpSum([])
                      for c in range(k)]}
    if not need & {"precision", "f1"}:
        return out
    bits = max(1, n.bit_length())
    for metric in sorted(need & {"precision", "f1"}):
        out[metric] = [pulp.LpVariable(f"{metric}_{c}", lowBound=0, upBound=1) for c in range(k)]
    for c in range(k):
        col = pulp.lpSum(m[i][c] for i in range(k))
        y = [pulp.LpVariable(f"s_{c}_bit{b}", cat="Binary") for b in range(bits)]
        prob += pulp.lpSum((2 ** b) * y[b] for b in range(bits)) == col, f"s_{c}_binary"
        for metric in sorted(need & {"precision", "f1"}):
            x = out[metric][c]
            w = [pulp.LpVariable(f"{metric}_{c}_w{b}", lowBound=0, upBound=1) for b in range(bits)]
            for b in range(bits):   # w_b = x * y_b
                prob += w[b] <= x, f"{metric}_{c}_w{b}_x"
                prob += w[b] <= y[b], f"{metric}_{c}_w{b}_y"
                prob += w[b] >= x - (1 - y[b]), f"{metric}_{c}_w{b}_xy"
            x_times_s = pulp.lpSum((2 ** b) * w[b] for b in range(bits))
            if metric == "precision":   # x * s_c = TP_c, and x = 0 when nothing is predicted as c
                prob += x_times_s == m[c][c], f"precision_{c}_def"
                prob += x <= col, f"precision_{c}_zero"
            else:                       # x * (s_c + n_c) = 2 TP_c
                prob += x_times_s + supports[c] * x == 2 * m[c][c], f"f1_{c}_def"
                prob += x <= col + supports[c], f"f1_{c}_zero"
    return out


def _overall_constraints(prob, m, supports, overall: dict[str, tuple]) -> None:
    k, n = len(supports), int(sum(supports))
    need = {name.split("_", 1)[1] for name in overall if name.startswith(("macro_", "weighted_"))}
    r = _ratio_vars(prob, m, supports, need)

    def avg(kind: str, metric: str):
        if kind == "macro":
            return pulp.lpSum(r[metric]) * (1.0 / k)
        return pulp.lpSum(r[metric][c] * (supports[c] / n) for c in range(k))

    for name, iv in overall.items():
        if name == "weighted_recall":       # = trace / N exactly: an integer constraint like the accuracy
            _bound(prob, pulp.lpSum(m[c][c] for c in range(k)), n, iv, "weighted_recall")
        elif name == "balanced_accuracy":   # mean recall over the classes present
            present = [c for c in range(k) if supports[c]]
            _float_bounds(prob, pulp.lpSum(r["recall"][c] for c in present) * (1.0 / len(present)), iv, name)
        elif name == "kappa":               # (N tr - sum t p) - kappa (N^2 - sum t p), scaled by 1/N^2
            chance = pulp.lpSum(supports[i] * m[j][i] for i in range(k) for j in range(k))
            tr = pulp.lpSum(m[c][c] for c in range(k))
            lo, hi, _ = iv
            prob += (n * tr - chance - float(lo) * (n * n - chance)) * (1.0 / (n * n)) >= -SLACK, "kappa_lo"
            prob += (n * tr - chance - float(hi) * (n * n - chance)) * (1.0 / (n * n)) <= SLACK, "kappa_hi"
        elif name in ("quadratic_kappa", "linear_kappa"):
            # 1 - N sum w O / sum w t_i p_j: O = the matrix, p_j its column sums, so both sums are linear in it
            w = [[(i - j) ** 2 if name == "quadratic_kappa" else abs(i - j) for j in range(k)] for i in range(k)]
            obs = pulp.lpSum(n * w[i][j] * m[i][j] for i in range(k) for j in range(k))
            exp = pulp.lpSum(w[i][j] * supports[i] * m[r][j] for i in range(k) for j in range(k) for r in range(k))
            lo, hi, _ = iv
            scale = 1.0 / (n * n * max(1, (k - 1) ** 2))
            prob += ((1 - float(lo)) * exp - obs) * scale >= -SLACK, f"{name}_lo"
            prob += ((1 - float(hi)) * exp - obs) * scale <= SLACK, f"{name}_hi"
        else:
            kind, metric = name.split("_", 1)
            _float_bounds(prob, avg(kind, metric), iv, name)


def _overall_admits(overall: dict[str, tuple], mat: list[list[int]]) -> bool:
    """Every printed overall value admits the witness matrix's exact value."""
    x = X.overall(X.matrix_counts(mat))
    x["weighted_recall"] = x["accuracy"]
    x["quadratic_kappa"], x["linear_kappa"] = X.weighted_kappa(mat, "quadratic"), X.weighted_kappa(mat, "linear")
    return all(_admits(iv, x[name]) for name, iv in overall.items())


def _solve(supports, per_class, accuracy, time_limit, overall) -> dict:
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
    if overall:
        _overall_constraints(prob, m, supports, overall)
    prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        return {"status": "infeasible", "matrix": None, "verified": True}
    if status != "Optimal":
        return {"status": "unknown", "matrix": None, "verified": False, "solver_status": status}
    mat = [[int(round(v.value())) for v in row] for row in m]
    ok = all(sum(mat[i]) == supports[i] for i in range(k))
    counts = X.matrix_counts(mat)
    for c, mets in (per_class or {}).items():
        ok &= all(_admits(iv, X.class_metric(metric, *counts[c])) for metric, iv in mets.items())
    if accuracy is not None:
        ok &= _admits(accuracy, Fraction(sum(mat[c][c] for c in range(k)), n))
    if overall:
        ok &= _overall_admits(overall, mat)
    out = {"status": "feasible" if ok else "unknown", "matrix": mat, "verified": ok}
    if not ok:   # within the solver's tolerance only: no verdict either way
        out["solver_status"] = "its solution fails the exact check"
    return out


def diagnose(supports: list[int], per_class: dict[int, dict[str, tuple]], accuracy: tuple | None = None,
             overall: dict[str, tuple] | None = None) -> dict:
    """Which constraints are infeasible on their own: each class alone, then each single metric, then each
    overall metric (accuracy, averages, kappa) alone."""
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
    bad_overall = [name for name, iv in (overall or {}).items()
                   if solve(supports, {}, None, overall={name: iv})["status"] == "infeasible"]
    return {"classes": bad_classes, "metrics": bad_metrics, "accuracy_alone": acc_alone, "overall": bad_overall}
