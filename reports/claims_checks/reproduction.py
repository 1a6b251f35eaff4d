"""Each claimed value against a reproduction run's value and confidence interval (reports.summary)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import stats

from reports.claims import Claims
from reports.claims_checks.record import Check, iv_str
from reports.claims_numbers import Num


# claims metric name -> its key in the summary (reports.summary), where the two differ
RUN_KEYS = {"quadratic_kappa": "qwk", "macro_auroc": "auroc_macro"}


def check_reproduction(claims: Claims, summary: dict, rounding: str | None = None) -> list[Check]:
    """Each claimed value against the reproduced one and its CI (schema of reports.summary.summarize_run)."""
    rule = rounding or claims.rounding
    out = []
    models = summary.get("models") or {}
    for mname, model in claims.models.items():
        run_name = model.run_name
        if not run_name:
            continue
        rm = models.get(run_name)
        if rm is None:
            out.append(Check(id=f"run.{mname}", kind="reproduction", subject=f"{mname} vs run model {run_name}",
                             source="run", status="not_checkable", reason=f"model {run_name!r} is not in the run"))
            continue
        for r in model.results:
            if r.config:
                continue  # a tuning variant (e.g. another activation), not the configuration that was reproduced
            if r.kind == "mean_of_folds":
                # the paper's fold scores are on the test set: prefer the fold models scored on the holdout
                where = "folds_holdout" if (rm.get("folds_holdout") or {}).get("accuracy") else "folds"
                fold = (rm.get(where) or {}).get("accuracy")
                if fold and "accuracy" in r.metrics:
                    out.append(_repro_folds(f"run.{r.id}.accuracy", f"{mname} accuracy (mean of folds, {where})",
                                            r.source, r.metrics["accuracy"], fold, rule))
                continue
            ens = rm.get("ensemble") or {}
            for m, num in r.metrics.items():
                if RUN_KEYS.get(m, m) in ens:
                    out.append(_repro(f"run.{r.id}.{m}", f"{mname} {m}", r.source, num, ens[RUN_KEYS.get(m, m)], rule))
            pcs = ens.get("per_class") or {}
            for cls, mets in r.per_class.items():
                for m, num in mets.items():
                    if cls in pcs and m in pcs[cls]:
                        out.append(_repro(f"run.{r.id}.{cls}.{m}", f"{mname} {cls} {m}", r.source, num, pcs[cls][m],
                                          rule))
    return out


def _repro_folds(cid, subject, source, num: Num, fold: dict, rounding: str = "round") -> Check:
    """A claimed mean of folds against the t-interval of the reproduced fold scores (between-fold spread only)."""
    vals = [float(v) for v in (fold.get("values") or []) if v is not None]
    if len(vals) < 2:
        return _repro(cid, subject, source, num, {"value": fold.get("mean"), "ci": None, "sd": fold.get("sd")},
                      rounding)
    mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    half = float(stats.t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
    c = _repro(cid, subject, source, num, {"value": mean, "ci": [mean - half, mean + half]}, rounding)
    c.arithmetic += f"; 95% t-interval over {len(vals)} reproduced folds (sd {sd * (100 if num.percent else 1):.2f})"
    return c


def _repro(cid, subject, source, num: Num, rep: dict, rounding: str = "round") -> Check:
    """Pass when some value that prints as the claimed one lies in the reproduction's CI (compared exactly, as
    Fractions); a CI of zero width (every resample equal) cannot tell values apart: not_checkable, 'degenerate'."""
    v = rep.get("value")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Check(id=cid, kind="reproduction", subject=subject, source=source, status="not_checkable",
                     reason="no reproduced value")
    claimed = float(num.value)
    diff = claimed - float(v)
    ci = rep.get("ci")
    scale = 100 if num.percent else 1
    unit = "pp" if num.percent else ""
    if ci and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        lo, hi = float(ci[0]), float(ci[1])
        c_lo, c_hi, c_open = num.interval(rounding)
        arith = f"claimed {num.text}; reproduced {v * scale:.2f}{'%' if num.percent else ''} " \
                f"[{lo * scale:.2f}, {hi * scale:.2f}]; difference {diff * scale:+.2f}{unit}; " \
                f"printed {num.text} admits {iv_str(num, rounding)}"
        vals = {"claimed": claimed, "reproduced": float(v), "ci": [lo, hi], "difference": diff,
                "claimed_interval": [float(c_lo), float(c_hi)], "rounding": rounding}
        if lo == hi:
            return Check(id=cid, kind="reproduction", subject=subject, source=source, status="not_checkable",
                         reason="degenerate: the reproduction's CI has zero width (every resample gave the same "
                                "value), so it cannot tell the claimed value from the reproduced one",
                         arithmetic=arith, values={**vals, "degenerate": True})
        f_lo, f_hi = Fraction(lo), Fraction(hi)
        inside = f_lo <= num.value <= f_hi
        overlap = c_lo <= f_hi and (f_lo < c_hi if c_open else f_lo <= c_hi)
        return Check(id=cid, kind="reproduction", subject=subject, source=source,
                     status="pass" if overlap else "fail",
                     reason="claimed value inside the reproduction's CI" if inside else
                            "claimed value inside the reproduction's CI within its printed rounding" if overlap else
                            "claimed value outside the reproduction's CI", arithmetic=arith, values=vals)
    sd = rep.get("sd")
    arith = f"claimed {num.text}; reproduced {v * scale:.2f}" + (f" (sd {sd * scale:.2f})" if sd is not None else "") \
        + f"; difference {diff * scale:+.2f}{unit}"
    return Check(id=cid, kind="reproduction", subject=subject, source=source, status="not_checkable",
                 reason="no CI for the reproduced value", arithmetic=arith,
                 values={"claimed": claimed, "reproduced": float(v), "difference": diff})
