"""Headline comparisons: are both sides the same kind of number (ensemble, single fold, mean of folds)?"""
from __future__ import annotations

from reports.claims import Claims, Result
from reports.claims_checks.record import Check
from reports.claims_numbers import Num


_KIND_WORDS = {"ensemble": "an ensemble's score", "single_fold": "a single fold model's score",
               "mean_of_folds": "a mean of fold scores", "unspecified": "a score of unstated kind"}


def _diff(ma: Num, mb: Num) -> str:
    d = (mb.value - ma.value) * (100 if ma.percent else 1)
    return f" (difference {float(d):+.2f}{' points' if ma.percent else ''})"


def _like_for_like(claims: Claims, a: Result, b: Result, metric: str) -> str:
    """The same comparison with both sides of one kind, where the paper reports the numbers for it."""
    out = []
    for kind in (a.kind, b.kind):
        ra = next((r for r in claims.models[a.model].results if r.kind == kind and metric in r.metrics), None)
        rb = next((r for r in claims.models[b.model].results if r.kind == kind and metric in r.metrics), None)
        if ra and rb:
            ma, mb = ra.metrics[metric], rb.metrics[metric]
            out.append(f"like for like ({kind.replace('_', ' ')}): {ma.text} ({ra.source}) vs {mb.text} "
                       f"({rb.source}){_diff(ma, mb)}")
        else:
            missing = a.model if not ra else b.model
            out.append(f"no {kind.replace('_', ' ')} {metric} is reported for {missing}")
    return "; ".join(out)


def check_comparisons(claims: Claims) -> list[Check]:
    out = []
    for c in claims.comparisons:
        a, b = claims.result(c.a), claims.result(c.b)
        desc = f"{a.model} ({a.source}: {a.kind}{', inferred' if a.kind_basis == 'inferred' else ''}) vs " \
               f"{b.model} ({b.source}: {b.kind}{', inferred' if b.kind_basis == 'inferred' else ''})"
        notes = "; ".join(x for x in (a.kind_note, b.kind_note) if x)
        if "unspecified" in (a.kind, b.kind):
            status, reason = "not_checkable", "the paper does not say what kind of number one side is"
        elif a.kind == b.kind:
            status, reason = "pass", f"both sides are {a.kind}"
        else:
            status, reason = "fail", f"compares {_KIND_WORDS[a.kind]} ({a.kind_basis}) with " \
                f"{_KIND_WORDS[b.kind]} ({b.kind_basis}): not like with like"
        ma, mb = a.metrics.get(c.metric), b.metrics.get(c.metric)
        if status == "fail":
            reason += "; " + _like_for_like(claims, a, b, c.metric)
        arith = desc + (f"; {c.metric}: {ma.text} vs {mb.text}" + _diff(ma, mb) if ma and mb else "") + \
            (f"; {notes}" if notes else "")
        out.append(Check(id=f"kind.{c.id}", kind="kind_mismatch", subject=c.text or f"{c.a} vs {c.b}", source=c.source,
                         status=status, reason=reason, arithmetic=arith,
                         values={"a": {"result": a.id, "kind": a.kind, "basis": a.kind_basis},
                                "b": {"result": b.id, "kind": b.kind, "basis": b.kind_basis}}))
    return out
