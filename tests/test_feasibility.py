"""The integer-program feasibility check against brute force and hand-made cases with known answers."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from reports.claims_numbers import parse_num
from reports.feasibility import diagnose, solve


def _iv(text, rule="round"):
    return parse_num(text, "test", "x").interval(rule)


def _metrics(m, c):
    """Exact per-class metrics of matrix m (rows = truth)."""
    m = np.asarray(m)
    n = m.sum()
    tp = m[c, c]
    fn = m[c].sum() - tp
    fp = m[:, c].sum() - tp
    tn = n - tp - fn - fp
    out = {"recall": Fraction(int(tp), int(tp + fn))}
    for name, num, den in (("precision", tp, tp + fp), ("f1", 2 * tp, 2 * tp + fp + fn),
                           ("specificity", tn, tn + fp), ("npv", tn, tn + fn)):
        out[name] = Fraction(int(num), int(den)) if den else None
    return out


def _admits(iv, x):
    lo, hi, hi_open = iv
    return x is not None and lo <= x and (x < hi if hi_open else x <= hi)


def _all_matrices(supports):
    k = len(supports)
    rows = [[r for r in itertools.product(range(s + 1), repeat=k) if sum(r) == s] for s in supports]
    for combo in itertools.product(*rows):
        yield np.array(combo)


def test_printed_values_of_a_real_matrix_are_feasible_and_the_witness_reproduces_them():
    m = np.array([[40, 3, 1], [4, 25, 2], [0, 5, 20]])
    sup = m.sum(1).tolist()
    per = {}
    for c in range(3):
        ex = _metrics(m, c)
        per[c] = {k: _iv(f"{float(v):.3f}") for k, v in ex.items()}
    acc = _iv(f"{100 * np.trace(m) / m.sum():.2f}%")
    res = solve(sup, per, acc)
    assert res["status"] == "feasible" and res["verified"]
    w = np.array(res["matrix"])
    assert w.sum(1).tolist() == sup
    for c in range(3):
        ex = _metrics(w, c)
        assert all(_admits(per[c][k], ex[k]) for k in per[c])


def test_recall_not_achievable_on_its_support_is_infeasible_and_diagnosed():
    # 0.55 cannot be k/10 at two decimals (0.50 or 0.60)
    per = {0: {"recall": _iv("0.55")}}
    assert solve([10, 10], per)["status"] == "infeasible"
    assert diagnose([10, 10], per)["metrics"] == [(0, "recall")]


def test_jointly_infeasible_although_each_value_alone_is_feasible():
    # accuracy 100 % means no errors, so precision 0.50 is impossible; each alone is possible
    per = {0: {"precision": _iv("0.50")}}
    acc = _iv("100.0%")
    assert solve([10, 10], per)["status"] == "feasible"
    assert solve([10, 10], {}, acc)["status"] == "feasible"
    assert solve([10, 10], per, acc)["status"] == "infeasible"
    d = diagnose([10, 10], per, acc)
    assert d["classes"] == [] and d["accuracy_alone"] == "feasible"


def test_truncated_value_is_feasible_only_under_truncation():
    # 2/3 = 0.6667: printed "0.666" is a truncation, not a rounding
    per = {0: {"recall": _iv("0.666")}}
    assert solve([3, 3], per)["status"] == "infeasible"
    per_t = {0: {"recall": _iv("0.666", "truncate")}}
    res = solve([3, 3], per_t)
    assert res["status"] == "feasible" and res["matrix"][0][0] == 2


@pytest.mark.parametrize("seed", range(12))
def test_integer_program_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    sup = [3, 2, 2]
    mats = list(_all_matrices(sup))
    # printed constraints at one decimal taken from a random matrix; odd seeds shift one value by 0.1
    target = mats[rng.integers(len(mats))]
    per = {}
    for c in range(3):
        ex = _metrics(target, c)
        names = [k for k in ("recall", "precision", "f1", "npv") if ex[k] is not None]
        per[c] = {str(k): _iv(f"{float(ex[k]):.1f}") for k in rng.choice(names, size=2, replace=False)}
    if seed % 2:
        c = int(rng.integers(3))
        k = next(iter(per[c]))
        lo, hi, _ = per[c][k]
        v = float((lo + hi) / 2)
        per[c][k] = _iv(f"{v - 0.1 if v > 0.5 else v + 0.1:.1f}")
    brute = any(all(_admits(iv, _metrics(m, c)[k]) for c in per for k, iv in per[c].items()) for m in mats)
    res = solve(sup, per)
    assert res["status"] == ("feasible" if brute else "infeasible")
    if not seed % 2:
        assert brute  # unshifted values come from a real matrix


def test_brute_force_cases_include_infeasible_ones():
    """Guard on the test above: the shifted cases must not all be feasible, or it would test nothing."""
    sup = [3, 2, 2]
    per = {0: {"recall": _iv("0.5")}}  # k/3 is 0.0, 0.3, 0.7 or 1.0 at one decimal
    assert solve(sup, per)["status"] == "infeasible"
    assert not any(_admits(per[0]["recall"], _metrics(m, 0)["recall"]) for m in _all_matrices(sup))
