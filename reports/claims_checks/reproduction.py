"""Each claimed value against a reproduction run's value and confidence interval (reports.summary)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from reports.claims import Claims
from reports.claims_numbers import Num
from reports.claims_checks.record import Check


def check_reproduction(claims: Claims, summary: dict) -> list[Check]:
    """Each claimed value against the reproduced one and its CI (schema of reports.summary.summarize_run)."""
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
                                            r.source, r.metrics["accuracy"], fold))
                continue
            ens = rm.get("ensemble") or {}
            for m, num in r.metrics.items():
                if m in ens:
                    out.append(_repro(f"run.{r.id}.{m}", f"{mname} {m}", r.source, num, ens[m]))
            pcs = ens.get("per_class") or {}
            for cls, mets in r.per_class.items():
                for m, num in mets.items():
                    if cls in pcs and m in pcs[cls]:
                        out.append(_repro(f"run.{r.id}.{cls}.{m}", f"{mname} {cls} {m}", r.source, num, pcs[cls][m]))
    return out


def _repro_folds(cid, subject, source, num: Num, fold: dict) -> Check:
    """A claimed mean of folds against the t-interval of the reproduced fold scores (between-fold spread only)."""
    vals = [float(v) for v in (fold.get("values") or []) if v is not None]
    if len(vals) < 2:
        return _repro(cid, subject, source, num, {"value": fold.get("mean"), "ci": None, "sd": fold.get("sd")})
    mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    half = float(stats.t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
    c = _repro(cid, subject, source, num, {"value": mean, "ci": [mean - half, mean + half]})
    c.arithmetic += f"; 95% t-interval over {len(vals)} reproduced folds (sd {sd * (100 if num.percent else 1):.2f})"
    return c


def _repro(cid, subject, source, num: Num, rep: dict) -> Check:
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
        inside = lo <= claimed <= hi
        arith = f"claimed {num.text}; reproduced {v * scale:.2f}{'%' if num.percent else ''} " \
                f"[{lo * scale:.2f}, {hi * scale:.2f}]; difference {diff * scale:+.2f}{unit}"
        return Check(id=cid, kind="reproduction", subject=subject, source=source, status="pass" if inside else "fail",
                     reason="claimed value inside the reproduction's CI" if inside else
                            "claimed value outside the reproduction's CI", arithmetic=arith,
                     values={"claimed": claimed, "reproduced": float(v), "ci": [lo, hi], "difference": diff})
    sd = rep.get("sd")
    arith = f"claimed {num.text}; reproduced {v * scale:.2f}" + (f" (sd {sd * scale:.2f})" if sd is not None else "") \
        + f"; difference {diff * scale:+.2f}{unit}"
    return Check(id=cid, kind="reproduction", subject=subject, source=source, status="not_checkable",
                 reason="no CI for the reproduced value", arithmetic=arith,
                 values={"claimed": claimed, "reproduced": float(v), "difference": diff})
