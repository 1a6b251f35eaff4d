"""Reported statistical tests (paired t-test) recomputed from the fold tables and checked among themselves."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from reports import stats as S
from reports.claims import Claims
from reports.claims_checks.record import Check
from reports.claims_numbers import Num


def _perturbed(nums_a, nums_b, rounding, level, alternative, n_draw=4000, seed=0):
    """Range of each statistic over true fold values that print as the printed ones (random draws + ends)."""
    rng = np.random.default_rng(seed)

    def draws(nums):
        ivs = [n.interval(rounding) for n in nums]
        lo = np.array([float(iv[0]) for iv in ivs])
        hi = np.array([float(iv[1]) for iv in ivs])
        u = rng.random((n_draw, len(nums)))
        u[0], u[1] = 0.0, 1.0
        return lo + u * (hi - lo)

    a, b = draws(nums_a), draws(nums_b)
    d = a - b
    n = d.shape[1]
    sd = d.std(axis=1, ddof=1)
    mean = d.mean(axis=1)
    t = mean / (sd / math.sqrt(n))
    p = stats.t.sf(np.abs(t), n - 1) * 2 if alternative == "two-sided" else (
        stats.t.sf(t, n - 1) if alternative == "greater" else stats.t.cdf(t, n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    cols = {"mean_a": a.mean(1), "sd_a": a.std(1, ddof=1), "mean_b": b.mean(1), "sd_b": b.std(1, ddof=1),
            "mean_diff": mean, "sd_diff": sd, "t": t, "p": p, "ci_lo": mean - half, "ci_hi": mean + half}
    return {k: (float(v.min()), float(v.max())) for k, v in cols.items()}


def _bounds(num: Num, rounding: str) -> tuple[float, float]:
    """Bounds of a printed value on its printed scale (97.18% -> 97.18)."""
    lo, hi, _ = num.interval(rounding)
    s = 100 if num.percent else 1
    return float(lo * s), float(hi * s)


def check_statistic(claims: Claims, st, rounding: str) -> list[Check]:
    """Recompute a reported paired t-test (means, sds, difference, CI, t, df, p) from the fold tables."""
    out = []
    fa, fb = claims.models[st.a].folds, claims.models[st.b].folds
    rep = st.reported
    level = float(st.ci_level)
    subj = f"{st.test}: {st.a} vs {st.b} ({st.metric})"
    if fa and fb and st.metric in fa.values and st.metric in fb.values and \
            len(fa.values[st.metric]) == len(fb.values[st.metric]):
        na, nb = fa.values[st.metric], fb.values[st.metric]
        scale = 100.0 if na[0].percent else 1.0
        calc = S.paired_t([float(x) for x in na], [float(x) for x in nb], level, st.alternative)
        rng = _perturbed(na, nb, rounding, level, st.alternative)
        calc_s = dict(calc, ci_lo=calc["ci"][0], ci_hi=calc["ci"][1])
        items = [(k, rep[k]) for k in ("mean_a", "sd_a", "mean_b", "sd_b", "mean_diff", "sd_diff", "t", "df", "p")
                 if k in rep]
        if "ci" in rep:
            items += [("ci_lo", rep["ci"][0]), ("ci_hi", rep["ci"][1])]
        for k, num in items:
            if k == "df":
                ok = num.value == calc["df"]
                out.append(Check(id=f"stats.{st.id}.df", kind="statistics", subject=subj, source=st.source,
                                 status="pass" if ok else "fail", reason=f"df = n - 1 = {calc['df']}",
                                 arithmetic=f"n = {calc['n']} folds"))
                continue
            f = 1.0 if k in ("t", "p") else scale   # means, sds, CI on the printed (points) scale
            exact, r_lo, r_hi = calc_s[k] * f, rng[k][0] * f, rng[k][1] * f
            lo, hi = _bounds(num, rounding)
            direct = lo <= exact <= hi
            within = lo <= r_hi and r_lo <= hi
            status = "pass" if (direct or within) else "fail"
            how = "recomputed from the printed folds" if direct else (
                "reachable within the rounding of the printed folds" if within else
                "not reachable from the printed folds")
            shown = f"{exact:.4g}" if k == "p" else f"{exact:.4f}"
            arith = f"{k} from folds = {shown} (range over fold rounding [{r_lo:.4g}, {r_hi:.4g}]); " \
                    f"printed {num.text} admits [{lo:.6g}, {hi:.6g}]"
            out.append(Check(id=f"stats.{st.id}.{k}", kind="statistics", subject=subj, source=st.source, status=status,
                             reason=f"{k}: printed {num.text}, {how}", arithmetic=arith,
                             values={"printed": num.text, "recomputed": exact, "range": [r_lo, r_hi]}))
    else:
        out.append(Check(id=f"stats.{st.id}.folds", kind="statistics", subject=subj, source=st.source,
                         status="not_checkable", reason="no matching fold values to recompute the test from"))
    out += check_statistic_summary(st, rounding)
    return out


def check_statistic_summary(st, rounding: str) -> list[Check]:
    """Are the reported summaries consistent with each other, without the fold values?"""
    rep = st.reported
    out = []
    subj = f"{st.test}: {st.a} vs {st.b} (summaries only)"
    n = int(rep["n"].value) if "n" in rep else None
    if n is None and "df" in rep:
        n = int(rep["df"].value) + 1
    if n is None:
        return [Check(id=f"stats.{st.id}.summary", kind="statistics", subject=subj, source=st.source,
                      status="not_checkable", reason="the number of pairs (n or df) is not reported")]
    level = float(st.ci_level)
    tcrit = float(stats.t.ppf(0.5 + level / 2, n - 1))
    sd_ranges = {}
    if "mean_diff" in rep and "t" in rep:
        m_lo, m_hi = _bounds(rep["mean_diff"], rounding)
        t_lo, t_hi = _bounds(rep["t"], rounding)
        sd_ranges["from t"] = (m_lo * math.sqrt(n) / t_hi, m_hi * math.sqrt(n) / t_lo)
    if "ci" in rep:
        l_lo, l_hi = _bounds(rep["ci"][0], rounding)
        h_lo, h_hi = _bounds(rep["ci"][1], rounding)
        sd_ranges["from CI"] = ((h_lo - l_hi) / 2 * math.sqrt(n) / tcrit, (h_hi - l_lo) / 2 * math.sqrt(n) / tcrit)
    if "sd_a" in rep and "sd_b" in rep:
        a_lo, a_hi = _bounds(rep["sd_a"], rounding)
        b_lo, b_hi = _bounds(rep["sd_b"], rounding)
        sd_ranges["from sd_a, sd_b (any correlation)"] = (max(0.0, max(a_lo - b_hi, b_lo - a_hi)), a_hi + b_hi)
    if "sd_diff" in rep:
        sd_ranges["printed"] = _bounds(rep["sd_diff"], rounding)
    if len(sd_ranges) >= 2:
        lo = max(v[0] for v in sd_ranges.values())
        hi = min(v[1] for v in sd_ranges.values())
        ok = lo <= hi
        arith = "; ".join(f"sd of differences {k}: [{v[0]:.4f}, {v[1]:.4f}]" for k, v in sd_ranges.items()) + \
            f"; t({n - 1}, {level:.3g}) = {tcrit:.4f}"
        out.append(Check(id=f"stats.{st.id}.sd_diff", kind="statistics", subject=subj, source=st.source,
                         status="pass" if ok else "fail",
                         reason="the sd of the paired differences backed out of each reported summary overlaps"
                                if ok else "the reported summaries imply incompatible sds of the paired differences",
                         arithmetic=arith, values={k: list(v) for k, v in sd_ranges.items()}))
    if "ci" in rep and "mean_diff" in rep:
        l_lo, l_hi = _bounds(rep["ci"][0], rounding)
        h_lo, h_hi = _bounds(rep["ci"][1], rounding)
        m_lo, m_hi = _bounds(rep["mean_diff"], rounding)
        ok = (l_lo + h_lo) / 2 <= m_hi and m_lo <= (l_hi + h_hi) / 2
        out.append(Check(id=f"stats.{st.id}.ci_centre", kind="statistics", subject=subj, source=st.source,
                         status="pass" if ok else "fail",
                         reason="the t-interval is centred on the mean difference" if ok else
                                "the CI is not centred on the mean difference (a t-interval is symmetric)",
                         arithmetic=f"CI midpoint in [{(l_lo + h_lo) / 2:.4f}, {(l_hi + h_hi) / 2:.4f}]; mean diff in "
                                    f"[{m_lo:.4f}, {m_hi:.4f}]"))
    if "mean_a" in rep and "mean_b" in rep and "mean_diff" in rep:
        a_lo, a_hi = _bounds(rep["mean_a"], rounding)
        b_lo, b_hi = _bounds(rep["mean_b"], rounding)
        m_lo, m_hi = _bounds(rep["mean_diff"], rounding)
        ok = a_lo - b_hi <= m_hi and m_lo <= a_hi - b_lo
        out.append(Check(id=f"stats.{st.id}.diff_of_means", kind="statistics", subject=subj, source=st.source,
                         status="pass" if ok else "fail",
                         reason="mean difference = mean_a - mean_b" if ok else "mean difference is not mean_a - mean_b",
                         arithmetic=f"{rep['mean_a'].text} - {rep['mean_b'].text} in "
                                    f"[{a_lo - b_hi:.4f}, {a_hi - b_lo:.4f}]; printed {rep['mean_diff'].text}"))
    if "t" in rep and "p" in rep:
        t_lo, t_hi = _bounds(rep["t"], rounding)
        tail = 2 if st.alternative == "two-sided" else 1
        p_hi, p_lo = tail * stats.t.sf(t_lo, n - 1), tail * stats.t.sf(t_hi, n - 1)
        q_lo, q_hi = _bounds(rep["p"], rounding)
        ok = p_lo <= q_hi and q_lo <= p_hi
        out.append(Check(id=f"stats.{st.id}.p_from_t", kind="statistics", subject=subj, source=st.source,
                         status="pass" if ok else "fail",
                         reason=f"p from t = {rep['t'].text} with df = {n - 1} ({st.alternative}) "
                                + ("matches" if ok else "does not match") + f" the printed p = {rep['p'].text}",
                         arithmetic=f"p in [{p_lo:.4g}, {p_hi:.4g}] for t in [{t_lo}, {t_hi}]; "
                                    f"printed p admits [{q_lo:.4g}, {q_hi:.4g}]",
                         values={"p_range": [p_lo, p_hi]}))
    return out
