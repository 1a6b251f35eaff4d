"""GRIM-style granularity: can a printed rate be k/n for an integer k, with n the set or class size?"""
from __future__ import annotations

import math
from fractions import Fraction

from reports.claims import Claims, Result
from reports.claims_checks.groups import result_supports
from reports.claims_checks.record import OTHER_RULES, Check, iv_str
from reports.claims_numbers import Num


def achievable(num: Num, n: int, rounding: str = "round") -> list[int]:
    """Every k in 0..n with k/n printing as `num`."""
    lo, hi, hi_open = num.interval(rounding)
    k_lo = max(0, math.ceil(lo * n))
    k_hi = min(n, math.floor(hi * n))
    return [k for k in range(k_lo, k_hi + 1) if num.admits(Fraction(k, n), rounding)]


def grim(num: Num, n: int, rounding: str = "round") -> dict:
    """GRIM: which k in 0..n give k/n printing as `num`? Returns {achievable, ks, nearest: [(k, value)]}."""
    ks = achievable(num, n, rounding)
    centre = num.value * n
    near = sorted({min(max(math.floor(centre), 0), n), min(max(math.ceil(centre), 0), n)})
    return {"achievable": bool(ks), "ks": ks[:20], "nearest": [(k, Fraction(k, n)) for k in near]}


def granularity_check(cid, subject, source, num: Num, n: int, rounding: str, what: str, alt_n: int | None = None,
                      alt_what: str = "") -> Check:
    """One GRIM check of `num` as k/n; `alt_n` is a second denominator mentioned in the reason only."""
    g = grim(num, n, rounding)
    near = "; ".join(f"{k}/{n} = {num.show(v, 3)}" for k, v in g["nearest"])
    arith = f"{num.text} x {n} = {float(num.value * n):.3f}; admitted interval {iv_str(num, rounding)}; " \
            f"nearest: {near}"
    vals = {"printed": num.text, "n": n, "k": g["ks"], "rounding": rounding}
    if g["achievable"]:
        ks = ", ".join(map(str, g["ks"][:5]))
        weak = "; uninformative: the grid 1/n is finer than the printed digits" if num.ulp * n >= 1 else ""
        if weak:
            vals["uninformative"] = True
        return Check(id=cid, kind="granularity", subject=subject, source=source, status="pass",
                     reason=f"{num.text} is achievable as k/{n} ({what}), k = {ks}{weak}", arithmetic=arith,
                     values=vals)
    reason = f"{num.text} is not achievable as k/{n} for any integer k ({what}) at its printed precision"
    for rule in OTHER_RULES.get(rounding, ()):
        if grim(num, n, rule)["achievable"]:
            reason += f"; achievable if {'truncated' if rule == 'truncate' else 'rounding is mixed'}"
            vals["passes_under"] = rule
            break
    if alt_n:
        ok = grim(num, alt_n, rounding)["achievable"]
        reason += f"; as k/{alt_n} ({alt_what}): {'achievable' if ok else 'not achievable either'}"
        vals["alt_n"], vals["alt_achievable"] = alt_n, ok
    return Check(id=cid, kind="granularity", subject=subject, source=source, status="fail", reason=reason,
                 arithmetic=arith, values=vals)


def _n_folds(claims: Claims, r: Result) -> int | None:
    if r.n_folds:
        return r.n_folds
    f = claims.models[r.model].folds
    return len(next(iter(f.values.values()))) if f and f.values else None


def check_result_granularity(claims: Claims, r: Result, rounding: str) -> list[Check]:
    out = []
    sup, n = result_supports(claims, r)
    if sup is None:
        names = [m for m in r.metrics if m in ("accuracy", "error_rate")] + \
            [m for d in r.per_class.values() for m in d if m in ("recall", "specificity")]
        if names:
            out.append(Check(id=f"grim.{r.id}", kind="granularity", subject=f"{r.model} {r.id}", source=r.source,
                             status="not_checkable", reason="the evaluation set and its size are not stated"))
        return out
    k = _n_folds(claims, r)
    mean = r.kind == "mean_of_folds"
    if mean and not k:
        return [Check(id=f"grim.{r.id}", kind="granularity", subject=f"{r.model} {r.id}", source=r.source,
                      status="not_checkable", reason="mean of folds with an unknown number of folds")]
    f = claims.models[r.model].folds
    if mean and f and any(m in f.values for m in r.metrics):
        return []  # the printed folds are GRIM-checked themselves and their mean by check_fold_summaries
    mult = k if mean else 1
    alt = k if (r.kind == "unspecified" and k) else None
    what_single = (f"mean of {k} evaluations of {r.evaluated_on}, unless the mean was taken over rounded fold values"
                   if mean else f"one evaluation of {r.evaluated_on}")
    for metric in ("accuracy", "error_rate"):
        if metric in r.metrics:
            out.append(granularity_check(f"grim.{r.id}.{metric}", f"{r.model} {metric}", r.source, r.metrics[metric],
                                         n * mult, rounding, f"{what_single}, N = {n}",
                                         n * alt if alt else None, f"mean over {alt} evaluations of the same set"))
    for ci, cls in enumerate(claims.class_names):
        for metric, num in r.per_class.get(cls, {}).items():
            if metric == "recall":
                den, what = sup[ci], f"{cls} support = {sup[ci]}"
            elif metric == "specificity":
                den, what = n - sup[ci], f"{cls} negatives = {n} - {sup[ci]}"
            else:
                continue
            out.append(granularity_check(f"grim.{r.id}.{cls}.{metric}", f"{r.model} {cls} {metric}", r.source, num,
                                         den * mult, rounding, f"{what_single}, {what}",
                                         den * alt if alt else None, f"mean over {alt} evaluations of the same set"))
    out += _auroc_granularity(claims, r, rounding, sup, n, mult, alt, what_single)
    return out


def _auroc_granularity(claims: Claims, r: Result, rounding: str, sup, n: int, mult: int, alt, what_single: str):
    """One evaluation's AUROC is (concordant + 1/2 tied pairs) / (n_pos n_neg): a multiple of 1/(2 n_pos n_neg)."""
    out = []
    entries = [(f"{cls}.auroc", f"{cls} auroc", cls, num) for cls in claims.class_names
               for m, num in r.per_class.get(cls, {}).items() if m == "auroc"]
    if "auroc" in r.metrics and claims.positive:
        entries.append(("auroc", f"auroc ({claims.positive} positive)", claims.positive, r.metrics["auroc"]))
    for key, subject, cls, num in entries:
        pos = sup[claims.class_names.index(cls)]
        if not pos or pos == n:
            continue
        den = 2 * pos * (n - pos)
        out.append(granularity_check(f"grim.{r.id}.{key}", f"{r.model} {subject}", r.source, num, den * mult, rounding,
                                     f"{what_single}, (concordant + 1/2 tied pairs) / ({pos} x {n - pos}) for {cls} "
                                     f"vs the rest", den * alt if alt else None,
                                     f"mean over {alt} evaluations of the same set"))
    for m in ("macro_auroc", "weighted_auroc"):
        if m in r.metrics:
            out.append(Check(id=f"grim.{r.id}.{m}", kind="granularity", subject=f"{r.model} {m}", source=r.source,
                             status="not_checkable",
                             reason="an average of one-vs-rest AUROCs k_c / (2 n_c (N - n_c)) has achievable values "
                                    "at most 1/(C max_c 2 n_c (N - n_c)) apart, finer than printed digits: it is "
                                    "checked only against printed per-class AUROCs (avg. checks)"))
    return out


def check_fold_granularity(claims: Claims, model: str, rounding: str) -> list[Check]:
    f = claims.models[model].folds
    if not f or "accuracy" not in f.values:
        return []
    if not f.evaluated_on:
        return [Check(id=f"grim.{model}.folds", kind="granularity", subject=f"{model} fold accuracy", source=f.source,
                      status="not_checkable", reason="the set the folds were evaluated on is not stated")]
    s = claims.sets[f.evaluated_on]
    n = s.total if s.total is not None else sum(s.counts.values())
    return [granularity_check(f"grim.{model}.fold{i + 1}.accuracy", f"{model} fold {i + 1} accuracy", f.source, num,
                              n, rounding, f"one evaluation of {f.evaluated_on}, N = {n}")
            for i, num in enumerate(f.values["accuracy"])]
