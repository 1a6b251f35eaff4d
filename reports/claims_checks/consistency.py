"""One quantity printed in several places (equivalent blocks, `equalities`): do the printed values agree?"""
from __future__ import annotations

from reports.claims import Claims, Result
from reports.claims_checks.groups import block_counts
from reports.claims_checks.record import Check, iv_str
from reports.claims_numbers import Num


def check_group_equalities(claims: Claims, g: list[Result], rounding: str) -> list[Check]:
    """One quantity reported in two blocks of the same evaluation: do the printed values agree?"""
    out = []
    seen: dict[tuple, list[tuple[Num, str]]] = {}
    for r in g:
        for m, num in r.metrics.items():
            seen.setdefault(("overall", m), []).append((num, r.source))
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                seen.setdefault((cls, m), []).append((num, r.source))
    for (cls, m), vals in seen.items():
        if len(vals) < 2:
            continue
        out.append(_agree(f"same.{g[0].id}.{cls}.{m}", f"{g[0].model} {'' if cls == 'overall' else cls + ' '}{m}",
                          vals, rounding, "reported in blocks the paper presents as the same evaluation"))
    cnts: dict[tuple, list[tuple[int, str]]] = {}
    for r in g:
        for cls, k, v, src in block_counts(r, claims.class_names):
            cnts.setdefault((cls, k), []).append((v, src))
    for (cls, k), vals in cnts.items():
        if len(vals) < 2:
            continue
        ok = len({v for v, _ in vals}) == 1
        arith = "; ".join(f"{v} ({s})" for v, s in vals)
        out.append(Check(id=f"same.{g[0].id}.{cls}.{k}", kind="consistency",
                         subject=f"{g[0].model} {cls} {k.upper()}", source=", ".join(s for _, s in vals),
                         status="pass" if ok else "fail",
                         reason="the same count everywhere it is reported" if ok else
                                "the count differs between sources",
                         arithmetic=arith, values={"values": [v for v, _ in vals]}))
    return out


def _agree(cid, subject, vals: list[tuple[Num, str]], rounding: str, why: str) -> Check:
    """Pass when the printed values' intervals overlap (some true value prints as each of them)."""
    ivs = [n.interval(rounding) for n, _ in vals]
    lo = max(iv[0] for iv in ivs)
    hi, hi_open = min((iv[1], iv[2]) for iv in ivs)
    ok = lo < hi or (lo == hi and not hi_open)
    extra = {}
    if not ok and rounding != "either":
        e = [n.interval("either") for n, _ in vals]
        if max(iv[0] for iv in e) < min(iv[1] for iv in e):
            extra["passes_under"] = "either"
    arith = "; ".join(f"{n.text} ({s}) -> {iv_str(n, rounding)}" for n, s in vals)
    src = ", ".join(dict.fromkeys(s for _, s in vals))
    reason = f"printed values agree ({why})" if ok else f"printed values disagree ({why}): " + \
        " vs ".join(n.text for n, _ in vals)
    return Check(id=cid, kind="consistency", subject=subject, source=src, status="pass" if ok else "fail",
                 reason=reason, arithmetic=arith, values={"values": [n.text for n, _ in vals], **extra})


def check_equalities(claims: Claims, rounding: str) -> list[Check]:
    out = []
    for e in claims.equalities:
        nums = [(v, s) for v, s in e.values if isinstance(v, Num)]
        if len(nums) == len(e.values):
            c = _agree(f"same.{e.id}", e.quantity, nums, rounding, e.note or "the same quantity reported twice")
        else:
            texts = [str(v.text if isinstance(v, Num) else v).strip().lower() for v, _ in e.values]
            ok = len(set(texts)) == 1
            c = Check(id=f"same.{e.id}", kind="consistency", subject=e.quantity,
                      source=", ".join(s for _, s in e.values), status="pass" if ok else "fail",
                      reason="the same everywhere it is reported" if ok else "reported differently",
                      arithmetic="; ".join(f"{v if not isinstance(v, Num) else v.text} ({s})" for v, s in e.values))
        out.append(c)
    return out
