"""Metrics derived from printed TP/FP/FN/TN counts, and per-class F1 from printed precision and recall."""
from __future__ import annotations

from fractions import Fraction

from reports import exact_metrics as X
from reports.claims import Claims, Result
from reports.claims_checks.groups import group_counts, group_supports
from reports.claims_checks.record import Check, also_note, iv_str, passes_under
from reports.claims_numbers import Num

_FIELDS = ("tp", "fp", "fn", "tn")


def derived_from_counts(counts: dict[str, dict[str, int]], classes: list[str]) -> dict:
    """Per-class and overall metrics (reports.exact_metrics.overall) from complete TP/FP/FN/TN counts, exactly."""
    rows = [tuple(counts[c][k] for k in _FIELDS) for c in classes]
    per = {c: {m: X.class_metric(m, *row) for m in X.COUNT_METRICS} for c, row in zip(classes, rows)}
    support = {c: counts[c]["tp"] + counts[c]["fn"] for c in classes}
    return {"per_class": per, "support": support, **X.overall(rows)}


def _from_confusion(g: list[Result]) -> dict:
    """Weighted kappas, which need the whole matrix, from the first block of the group that prints one."""
    cm = next((r.confusion for r in g if r.confusion is not None), None)
    if cm is None:
        return {}
    return {"quadratic_kappa": X.weighted_kappa(cm, "quadratic"), "linear_kappa": X.weighted_kappa(cm, "linear")}


def check_group_derived(claims: Claims, g: list[Result], rounding: str) -> list[Check]:
    merged = group_counts(claims, g)
    classes = claims.class_names
    if not merged:
        return []
    gid, model = g[0].id, g[0].model
    src_counts = ", ".join(dict.fromkeys(s for d in merged.values() for _, s in d.values()))
    complete = all(c in merged and all(k in merged[c] for k in ("tp", "fp", "fn", "tn")) for c in classes)
    if not complete:
        return [Check(id=f"derived.{gid}", kind="derived", subject=f"{model} metrics from counts", source=src_counts,
                      status="not_checkable", reason="TP/FP/FN/TN are not reported for every class")]
    cnt = {c: {k: merged[c][k][0] for k in ("tp", "fp", "fn", "tn")} for c in classes}
    out = []
    sup, n_set, set_name = group_supports(claims, g)
    totals = {c: sum(cnt[c].values()) for c in classes}
    n = totals[classes[0]]
    lines = [f"{c}: {cnt[c]['tp']}+{cnt[c]['fp']}+{cnt[c]['fn']}+{cnt[c]['tn']} = {totals[c]}" for c in classes]
    ok = len(set(totals.values())) == 1 and (n_set is None or n == n_set)
    out.append(Check(id=f"derived.{gid}.counts_total", kind="derived", subject=f"{model} TP+FP+FN+TN per class",
                     source=src_counts, status="pass" if ok else "fail",
                     reason=f"every class's counts add up to N = {n}" + (f" = |{set_name}|" if n_set else "") if ok else
                            f"per-class totals differ from each other or from |{set_name}| = {n_set}",
                     arithmetic="; ".join(lines), values={"totals": totals, "n": n_set}))
    if sup is not None:
        lines = [f"{c}: {cnt[c]['tp']}+{cnt[c]['fn']} = {cnt[c]['tp'] + cnt[c]['fn']} vs {s}" for c, s in zip(classes, sup)]
        bad = [c for c, s in zip(classes, sup) if cnt[c]["tp"] + cnt[c]["fn"] != s]
        out.append(Check(id=f"derived.{gid}.supports", kind="derived", subject=f"{model} TP+FN = class support",
                         source=src_counts, status="fail" if bad else "pass",
                         reason=f"TP+FN differs from the {set_name} support for {', '.join(bad)}"
                                if bad else f"TP+FN equals the {set_name} class counts", arithmetic="; ".join(lines),
                         values={"mismatch": bad}))
    sfp, sfn = sum(cnt[c]["fp"] for c in classes), sum(cnt[c]["fn"] for c in classes)
    out.append(Check(id=f"derived.{gid}.fp_fn", kind="derived", subject=f"{model} sum FP = sum FN", source=src_counts,
                     status="pass" if sfp == sfn else "fail",
                     reason="every error is one FN and one FP, so the sums must match" +
                            ("" if sfp == sfn else f": {sfp} vs {sfn}"), arithmetic=f"sum FP = {sfp}; sum FN = {sfn}"))
    d = {**derived_from_counts(cnt, classes), **_from_confusion(g)}
    for r in g:
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                if m not in X.COUNT_METRICS:
                    continue  # a per-class AUROC needs the scores, not the counts
                x = d["per_class"][cls][m]
                out.append(_derived_one(f"derived.{r.id}.{cls}.{m}", f"{model} {cls} {m}", r.source, num, x, rounding,
                                        _formula(m, cnt[cls])))
        for m, num in r.metrics.items():
            if m in ("macro_avg", "weighted_avg"):
                out.append(_unnamed_average(r, m, num, d, rounding))
            elif m in d:
                tp = sum(cnt[c]["tp"] for c in classes)
                formula = f"{tp}/{n}" if m == "accuracy" else (f"{n - tp}/{n}" if m == "error_rate" else
                                                               _OVERALL_FORMULA.get(m, m))
                out.append(_derived_one(f"derived.{r.id}.{m}", f"{model} {m}", r.source, num, d[m], rounding, formula))
        if r.n_correct is not None:
            tp = sum(cnt[c]["tp"] for c in classes)
            ok = r.n_correct == tp and (r.n_total is None or r.n_total == n)
            out.append(Check(id=f"derived.{r.id}.n_correct", kind="derived", subject=f"{model} correctly classified",
                             source=r.source, status="pass" if ok else "fail",
                             reason="matches the sum of TP" if ok else "differs from the sum of TP",
                             arithmetic=f"sum TP = {tp}, N = {n}; reported {r.n_correct}/{r.n_total}"))
    return out


_OVERALL_FORMULA = {
    "balanced_accuracy": "mean recall over the classes present", "kappa": "(N sum TP - sum t_k p_k)/(N^2 - sum t_k p_k)",
    "mcc": "(N sum TP - sum t_k p_k)/sqrt((N^2 - sum p_k^2)(N^2 - sum t_k^2))",
    "quadratic_kappa": "1 - sum w O / sum w E, w = (i-j)^2 (printed confusion matrix)",
    "linear_kappa": "1 - sum w O / sum w E, w = |i-j| (printed confusion matrix)"}


def _formula(m: str, c: dict) -> str:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {"recall": f"TP/(TP+FN) = {tp}/{tp + fn}", "precision": f"TP/(TP+FP) = {tp}/{tp + fp}",
            "f1": f"2TP/(2TP+FP+FN) = {2 * tp}/{2 * tp + fp + fn}", "specificity": f"TN/(TN+FP) = {tn}/{tn + fp}",
            "npv": f"TN/(TN+FN) = {tn}/{tn + fn}"}[m]


def _derived_one(cid, subject, source, num: Num, x: Fraction | X.SqrtRatio | None, rounding: str,
                 formula: str) -> Check:
    if x is None:
        return Check(id=cid, kind="derived", subject=subject, source=source, status="not_checkable",
                     reason="undefined (zero denominator)", arithmetic=formula)
    ok = num.admits(x, rounding)
    arith = f"{formula} = {num.show(x, 3)}; printed {num.text} admits {iv_str(num, rounding)}"
    reason = (f"recomputed {num.show(x, 3)} prints as {num.text}" if ok else
              f"recomputed {num.show(x, 3)} does not print as {num.text}{also_note(num, x, rounding)}")
    vals = {"printed": num.text, "recomputed": float(x)}
    if not ok and passes_under(num, x, rounding):
        vals["passes_under"] = passes_under(num, x, rounding)
    return Check(id=cid, kind="derived", subject=subject, source=source, status="pass" if ok else "fail", reason=reason,
                 arithmetic=arith, values=vals)


def _unnamed_average(r: Result, m: str, num: Num, d: dict, rounding: str) -> Check:
    kind = m.split("_")[0]
    cands = {f"{kind}_{x}": d[f"{kind}_{x}"] for x in ("precision", "recall", "f1")}
    hits = [k for k, v in cands.items() if num.admits(v, rounding)]
    arith = "; ".join(f"{k} = {num.show(v, 3)}" for k, v in cands.items()) + f"; printed {num.text}"
    if hits:
        return Check(id=f"derived.{r.id}.{m}", kind="derived", subject=f"{r.model} {kind} average ({r.source})",
                     source=r.source, status="pass",
                     reason=f"{num.text} matches {' / '.join(hits)} recomputed from the counts (the paper does not say "
                            "which metric is averaged)", arithmetic=arith, values={"matches": hits})
    near = [k for k, v in cands.items() if num.admits(v, "either")]
    return Check(id=f"derived.{r.id}.{m}", kind="derived", subject=f"{r.model} {kind} average ({r.source})",
                 source=r.source, status="fail",
                 reason=f"{num.text} matches none of the {kind} precision/recall/F1 recomputed from the counts"
                        + (f" (only {', '.join(near)} under mixed rounding)" if near else ""), arithmetic=arith,
                 values={"matches": []})


def _harmonic(p: Fraction, r: Fraction) -> Fraction:
    return 2 * p * r / (p + r) if p + r else Fraction(0)


def check_f1_harmonic(claims: Claims, r: Result, rounding: str) -> list[Check]:
    """Per-class F1 against the harmonic mean of the printed precision and recall (needs no counts)."""
    out = []
    for cls in claims.class_names:
        mets = r.per_class.get(cls, {})
        if not all(m in mets for m in ("precision", "recall", "f1")):
            continue
        p, rc, f1 = mets["precision"], mets["recall"], mets["f1"]
        p_lo, p_hi, _ = p.interval(rounding)
        r_lo, r_hi, _ = rc.interval(rounding)
        h_lo, h_hi = _harmonic(p_lo, r_lo), _harmonic(min(p_hi, Fraction(1)), min(r_hi, Fraction(1)))
        f_lo, f_hi, _ = f1.interval(rounding)
        ok = h_lo <= f_hi and f_lo <= h_hi
        h = _harmonic(p.value, rc.value)
        arith = f"2 x {p.text} x {rc.text} / ({p.text} + {rc.text}) = {f1.show(h, 3)}; over the printed precision " \
                f"[{f1.show(h_lo, 3)}, {f1.show(h_hi, 3)}]; printed F1 {f1.text} admits {iv_str(f1, rounding)}"
        reason = (f"F1 {f1.text} is the harmonic mean of P {p.text} and R {rc.text}" if ok else
                  f"F1 {f1.text} cannot be the harmonic mean of P {p.text} and R {rc.text} (= {f1.show(h, 3)})")
        out.append(Check(id=f"f1.{r.id}.{cls}", kind="derived", subject=f"{r.model} {cls} F1 from P and R",
                         source=r.source, status="pass" if ok else "fail", reason=reason, arithmetic=arith,
                         values={"harmonic_mean": float(h), "printed": f1.text}))
    return out
