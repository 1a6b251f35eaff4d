"""A reported McNemar test recomputed from its printed discordant counts, and checked against the two accuracies.

Two evaluations of one test set: a_only images are right under a and wrong under b, b_only the reverse. Exact:
p = min(1, 2 P(X <= min(a_only, b_only))) with X ~ Binomial(a_only + b_only, 1/2); chi-square: (a_only -
b_only)^2 / (a_only + b_only), with Edwards' continuity correction (|a_only - b_only| - 1)^2 / (a_only + b_only),
p from chi-square with 1 df (as statsmodels.stats.contingency_tables.mcnemar).
"""
from __future__ import annotations

import math
from fractions import Fraction

from scipy import stats

from reports.claims import Claims, Statistic
from reports.claims_checks.granularity import achievable
from reports.claims_checks.groups import result_supports
from reports.claims_checks.record import Check
from reports.claims_numbers import Bound, Num

METHODS = ("exact", "chi2", "chi2_cc")
_WORDS = {"exact": "exact binomial", "chi2": "chi-square without continuity correction",
          "chi2_cc": "chi-square with continuity correction"}


def mcnemar(a_only: int, b_only: int, method: str) -> tuple[float | None, float]:
    """(chi-square statistic or None for the exact test, p) of McNemar's test on the discordant counts."""
    n = a_only + b_only
    if method == "exact":
        return None, 1.0 if n == 0 else min(1.0, 2 * float(stats.binom.cdf(min(a_only, b_only), n, 0.5)))
    if n == 0:
        return None, math.nan
    corr = 1 if method == "chi2_cc" else 0
    stat = (abs(a_only - b_only) - corr) ** 2 / n
    return stat, float(stats.chi2.sf(stat, 1))


def _admits(num: Num | Bound, x: float) -> bool:
    return not math.isnan(x) and num.admits(Fraction(x))


def check_mcnemar(claims: Claims, st: Statistic, rounding: str) -> list[Check]:
    """The printed p (and statistic) from the discordant counts, under the stated method or each one."""
    rep = st.reported
    a_only, b_only = rep["a_only"], rep["b_only"]
    subj = f"mcnemar: {st.a} vs {st.b}"
    methods = METHODS if st.method == "unspecified" else (st.method,)
    calc = {m: mcnemar(a_only, b_only, m) for m in methods}
    out = []
    for key, idx in (("p", 1), ("statistic", 0)):
        if key not in rep:
            continue
        num = rep[key]
        tried = {m: v[idx] for m, v in calc.items() if v[idx] is not None}
        if not tried:
            continue
        hits = [m for m, x in tried.items() if _admits(num, x)]
        arith = "; ".join(f"{m}: {x:.4g}" for m, x in tried.items()) + \
            f" (a_only = {a_only}, b_only = {b_only}); printed {key} {num.text}"
        how = " or ".join(_WORDS[m] for m in hits)
        others = "; ".join(f"{_WORDS[m]}: {x:.4g}" for m, x in tried.items() if m not in hits)
        reason = (f"printed {key} {num.text} fits the {how} test" + (f" (not {others})" if others else "") if hits
                  else f"printed {key} {num.text} matches no {'method' if len(tried) > 1 else _WORDS[methods[0]]} "
                       f"recomputed from the discordant counts ({others})")
        out.append(Check(id=f"stats.{st.id}.{key}", kind="statistics", subject=subj, source=st.source,
                         status="pass" if hits else "fail", reason=reason, arithmetic=arith,
                         values={"printed": num.text, "recomputed": tried, "matches": hits}))
    if "statistic" in rep and "p" in rep:
        out.append(_p_from_statistic(st, rounding))
    out += _table_total(claims, st)
    out += _accuracies(claims, st, rounding)
    return out


def _p_from_statistic(st: Statistic, rounding: str) -> Check:
    """Without the counts: p = P(chi2_1 > statistic) over the statistic's printed interval."""
    s_lo, s_hi, _ = st.reported["statistic"].interval(rounding)
    p_hi, p_lo = float(stats.chi2.sf(float(s_lo), 1)), float(stats.chi2.sf(float(s_hi), 1))
    q_lo, q_hi, _ = st.reported["p"].interval(rounding)
    ok = p_lo <= float(q_hi) and float(q_lo) <= p_hi
    return Check(id=f"stats.{st.id}.p_from_statistic", kind="statistics", subject=f"mcnemar: {st.a} vs {st.b}",
                 source=st.source, status="pass" if ok else "fail",
                 reason=f"p from chi-square = {st.reported['statistic'].text} with 1 df "
                        + ("matches" if ok else "does not match") + f" the printed p {st.reported['p'].text}",
                 arithmetic=f"p in [{p_lo:.4g}, {p_hi:.4g}]; printed p admits [{float(q_lo):.4g}, {float(q_hi):.4g}]",
                 values={"p_range": [p_lo, p_hi]})


def _table_total(claims: Claims, st: Statistic) -> list[Check]:
    """The four cells of the 2x2 table add up to the printed n and to the size of the evaluated set."""
    rep = st.reported
    cells = [rep.get(k) for k in ("a_only", "b_only", "both", "neither")]
    _, n_set = result_supports(claims, claims.result(st.a))
    totals = {"printed n": rep.get("n"), "evaluated set": n_set}
    totals = {k: v for k, v in totals.items() if v is not None}
    if None in cells or not totals:
        return []
    s = sum(cells)
    ok = all(v == s for v in totals.values())
    return [Check(id=f"stats.{st.id}.table_total", kind="statistics", subject=f"mcnemar: {st.a} vs {st.b}",
                  source=st.source, status="pass" if ok else "fail",
                  reason="the 2x2 table adds up to N" if ok else "the 2x2 table does not add up to N",
                  arithmetic=f"{' + '.join(map(str, cells))} = {s}; " +
                             "; ".join(f"{k} {v}" for k, v in totals.items()), values={"sum": s, **totals})]


def _correct_counts(claims: Claims, rid: str, n: int, rounding: str) -> tuple[list[int] | None, str]:
    """The numbers of correct images a result's printed accuracy (or correct count) allows on N images."""
    r = claims.result(rid)
    if r.n_correct is not None:
        return [r.n_correct], f"{r.n_correct} correct ({r.source})"
    for m, flip in (("accuracy", False), ("error_rate", True)):
        if m in r.metrics:
            ks = achievable(r.metrics[m], n, rounding)
            return [n - k for k in ks] if flip else ks, f"{m} {r.metrics[m].text} ({r.source})"
    return None, ""


def _accuracies(claims: Claims, st: Statistic, rounding: str) -> list[Check]:
    """k_a - k_b = a_only - b_only for correct counts k_a, k_b the printed accuracies allow on the same N images."""
    ra, rb = claims.result(st.a), claims.result(st.b)
    (_, n_a), (_, n_b) = result_supports(claims, ra), result_supports(claims, rb)
    if n_a is None or n_a != n_b:
        return []
    n = n_a
    rep = st.reported
    ka, wa = _correct_counts(claims, st.a, n, rounding)
    kb, wb = _correct_counts(claims, st.b, n, rounding)
    if ka is None or kb is None:
        return []
    a_only, b_only = rep["a_only"], rep["b_only"]
    both = rep.get("both")
    pairs = [(x, y) for x in ka for y in kb if x - y == a_only - b_only and a_only <= x and b_only <= y
             and a_only + b_only <= n and a_only <= n - y and b_only <= n - x
             and (both is None or (x == both + a_only and y == both + b_only))]
    ok = bool(pairs)
    arith = f"{wa}: k_a in {ka[:6]}; {wb}: k_b in {kb[:6]}; need k_a - k_b = {a_only} - {b_only} = {a_only - b_only}" \
            + (f" and k_a = both + a_only, k_b = both + b_only with both = {both}" if both is not None else "") \
            + f" on N = {n}"
    return [Check(id=f"stats.{st.id}.accuracies", kind="statistics", subject=f"mcnemar: {st.a} vs {st.b}",
                  source="; ".join(dict.fromkeys([st.source, ra.source, rb.source])), status="pass" if ok else "fail",
                  reason="the discordant counts fit the two printed accuracies" if ok else
                         "the discordant counts cannot give the two printed accuracies on the same test set",
                  arithmetic=arith, values={"pairs": pairs[:10]})]
