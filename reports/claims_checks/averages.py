"""Printed averages (macro, weighted, balanced accuracy, macro AUROC) against the printed per-class values.

Exact interval arithmetic: the true macro average lies in [mean of the per-class lower ends, mean of the upper
ends] of the intervals the printed per-class values admit (clipped to [0, 1]); a weighted average uses the class
supports as weights. A printed average whose interval misses that range cannot be the average of those values.
"""
from __future__ import annotations

from fractions import Fraction

from reports.claims import Claims, Result
from reports.claims_checks.groups import group_supports, mirror_binary
from reports.claims_checks.record import OTHER_RULES, Check, iv_str
from reports.claims_numbers import Num

# printed name -> (how the classes are averaged, per-class metric; None = one of precision / recall / F1)
AVERAGES = {**{f"{a}_{m}": (a, m) for a in ("macro", "weighted") for m in ("precision", "recall", "f1", "auroc")},
            "balanced_accuracy": ("present", "recall"), "macro_avg": ("macro", None), "weighted_avg": ("weighted", None)}
_UNNAMED = ("precision", "recall", "f1")


def group_per_class(claims: Claims, g: list[Result]) -> dict[str, dict[str, tuple[Num, str]]]:
    """class -> metric -> (first printed value, its source) over the group's blocks (two-class papers: mirrored,
    see groups.mirror_binary)."""
    per: dict[str, dict[str, tuple[Num, str]]] = {}
    for r in g:
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                per.setdefault(cls, {}).setdefault(m, (num, r.source))
    return mirror_binary(per, claims.class_names)


def _clipped(num: Num, rounding: str) -> tuple[Fraction, Fraction, bool]:
    lo, hi, hi_open = num.interval(rounding)
    if hi > 1:
        hi, hi_open = Fraction(1), False
    return max(lo, Fraction(0)), hi, hi_open


def average_range(vals: list[Num], weights: list[Fraction], rounding: str) -> tuple[Fraction, Fraction, bool]:
    """Exact range (lo, hi, hi_open) of sum w_c x_c over true values x_c admitted by the printed values."""
    ivs = [_clipped(v, rounding) for v in vals]
    lo = sum((w * iv[0] for w, iv in zip(weights, ivs)), Fraction(0))
    hi = sum((w * iv[1] for w, iv in zip(weights, ivs)), Fraction(0))
    return lo, hi, any(iv[2] for w, iv in zip(weights, ivs) if w)


def _overlap(a: tuple, b: tuple) -> bool:
    lo = max(a[0], b[0])
    hi, hi_open = min((a[1], a[2]), (b[1], b[2]))
    return lo < hi or (lo == hi and not hi_open)


def _one(claims: Claims, per, how: str, metric: str, num: Num, sup, rounding: str):
    """(ok, arithmetic, other rule that passes, sources) for one reading of a printed average, or None when
    per-class values are missing."""
    classes = claims.class_names
    if how == "present" and sup is not None:
        classes = [c for c, s in zip(classes, sup) if s]
    if how == "weighted" and sup is None:
        return None
    if not all(metric in per.get(c, {}) for c in classes):
        return None
    vals = [per[c][metric][0] for c in classes]
    if how == "weighted":
        n = sum(sup)
        weights = [Fraction(s, n) for s in sup]
        what = f"support-weighted mean (n = {sup}) of"
    else:
        weights = [Fraction(1, len(classes))] * len(classes)
        what = "mean of"

    def ok_under(rule):
        return _overlap(average_range(vals, weights, rule), num.interval(rule))

    lo, hi, hi_open = average_range(vals, weights, rounding)
    arith = f"{metric}: {what} ({', '.join(v.text for v in vals)}) lies in [{num.show(lo, 2)}, {num.show(hi, 2)}" \
            f"{')' if hi_open else ']'}; printed {num.text} admits {iv_str(num, rounding)}"
    return (ok_under(rounding), arith, next((r for r in OTHER_RULES.get(rounding, ()) if ok_under(r)), None),
            [per[c][metric][1] for c in classes])


def check_averages(claims: Claims, g: list[Result], rounding: str) -> list[Check]:
    """Each printed average against the per-class values printed for the same evaluation."""
    per = group_per_class(claims, g)
    if not per:
        return []
    sup, _, _ = group_supports(claims, g)
    out = []
    for r, name, num in ((r, name, num) for r in g for name, num in r.metrics.items() if name in AVERAGES):
        src = r.source
        how, metric = AVERAGES[name]
        readings = {m: _one(claims, per, how, m, num, sup, rounding) for m in ([metric] if metric else _UNNAMED)}
        readings = {m: r for m, r in readings.items() if r is not None}
        if not readings:
            continue
        hits = [m for m, (ok, *_) in readings.items() if ok]
        arith = "; ".join(r[1] for r in readings.values())
        sources = "; ".join(dict.fromkeys([src] + [s for r in readings.values() for s in r[3]]))
        values = {"printed": num.text, "readings": list(readings), "matches": hits}
        under = next((r[2] for r in readings.values() if r[2]), None)
        if not hits and under:
            values["passes_under"] = under
        mean = {"macro": "mean", "weighted": "support-weighted mean", "present": "mean over the classes present"}[how]
        what = f"{mean} of the printed per-class {metric or 'precision, recall or F1'}"
        reason = (f"{num.text} is the {what}" + (f" ({', '.join(hits)})" if not metric else "") if hits else
                  f"{num.text} cannot be the {what}")
        out.append(Check(id=f"avg.{r.id}.{name}", kind="averages", subject=f"{r.model} {name} vs per-class values",
                         source=sources, status="pass" if hits else "fail", reason=reason, arithmetic=arith,
                         values=values))
    for r in g:
        if "weighted_recall" in r.metrics and ("accuracy" in r.metrics or "error_rate" in r.metrics):
            out.append(_weighted_recall_is_accuracy(r, rounding))
    return out


def _weighted_recall_is_accuracy(r: Result, rounding: str) -> Check:
    """Support-weighted recall is sum TP / N, the accuracy, whatever the counts."""
    overall = r.metrics
    wr, acc = overall["weighted_recall"], overall.get("accuracy") or overall["error_rate"]
    lo, hi, ho = acc.interval(rounding)
    acc_iv = (lo, hi, ho) if "accuracy" in overall else (1 - hi, 1 - lo, False)
    ok = _overlap(wr.interval(rounding), acc_iv)
    return Check(id=f"avg.{r.id}.weighted_recall_accuracy", kind="averages",
                 subject=f"{r.model} weighted recall = accuracy", source=r.source, status="pass" if ok else "fail",
                 reason="weighted recall is sum TP / N, the accuracy: " + ("the printed values agree" if ok else
                                                                          "the printed values disagree"),
                 arithmetic=f"weighted recall {wr.text} admits {iv_str(wr, rounding)}; accuracy {acc.text}",
                 values={"printed": [wr.text, acc.text]})
