"""Fold tables: a printed mean of folds against the printed folds, and text ranges against the fold table."""
from __future__ import annotations

from fractions import Fraction

from reports.claims import Claims
from reports.claims_checks.record import Check
from reports.claims_numbers import Num


def _interval_mean(nums: list[Num], rounding: str) -> tuple[Fraction, Fraction]:
    ivs = [n.interval(rounding) for n in nums]
    return sum((iv[0] for iv in ivs), Fraction(0)) / len(ivs), sum((iv[1] for iv in ivs), Fraction(0)) / len(ivs)


def check_fold_summaries(claims: Claims, rounding: str) -> list[Check]:
    """A reported mean of folds against the mean of the printed fold values; text ranges against the folds."""
    out = []
    for r in claims.results():
        f = claims.models[r.model].folds
        if r.kind != "mean_of_folds":
            continue
        for m, num in r.metrics.items():
            if not f or m not in f.values:
                continue
            lo, hi = _interval_mean(f.values[m], rounding)
            nlo, nhi, nho = num.interval(rounding)
            ok = lo <= nhi and nlo <= hi
            mean = sum((x.value for x in f.values[m]), Fraction(0)) / len(f.values[m])
            arith = f"mean({', '.join(x.text for x in f.values[m])}) = {num.show(mean, 3)} " \
                    f"(true values in [{num.show(lo, 3)}, {num.show(hi, 3)}]); printed {num.text}"
            out.append(Check(id=f"folds.{r.id}.{m}", kind="fold_summary", subject=f"{r.model} {m}: mean of folds",
                             source=r.source, status="pass" if ok else "fail",
                             reason=("the printed value is the mean of the printed folds" if ok else
                                    "the printed value is not the mean of the printed folds")
                                    + (f" (kind {r.kind_basis})" if r.kind_basis == "inferred" else ""),
                             arithmetic=arith, values={"printed": num.text, "mean_of_folds": float(mean)}))
    for mname, model in claims.models.items():
        f = model.folds
        if not f:
            continue
        for i, rg in enumerate(f.ranges):
            vals = f.values[rg["metric"]]
            lines, ok = [], True
            mn = min(vals, key=lambda x: x.value)
            mx = max(vals, key=lambda x: x.value)
            for b, ext in (("low", mn), ("high", mx)):
                if b not in rg:
                    continue
                bound = rg[b]
                if rg["strict"]:
                    good = (ext.value > bound.value) if b == "low" else (ext.value < bound.value)
                    lines.append(f"{'min' if b == 'low' else 'max'} {ext.text} {'>' if b == 'low' else '<'} {bound.text}")
                else:  # a range "a-b" read as min and max: printed values must be compatible
                    a_lo, a_hi, _ = ext.interval(rounding)
                    b_lo, b_hi, _ = bound.interval(rounding)
                    good = a_lo <= b_hi and b_lo <= a_hi
                    lines.append(f"{'min' if b == 'low' else 'max'} of folds {ext.text} vs {bound.text}")
                ok &= good
            out.append(Check(id=f"folds.{mname}.range{i + 1}", kind="fold_summary",
                             subject=f"{mname} fold {rg['metric']} range", source=f"{rg['source']}; {f.source}",
                             status="pass" if ok else "fail",
                             reason="the stated range matches the fold table" if ok else
                                    "the stated range does not match the fold table", arithmetic="; ".join(lines)))
    return out
