"""Sample sizes: class counts against totals, partitions class by class, stated split fractions."""
from __future__ import annotations

import math

from reports.claims import Claims
from reports.claims_checks.record import Check


def check_sets(claims: Claims) -> list[Check]:
    out = []
    for s in claims.sets.values():
        if s.total is None:
            continue
        tot = sum(s.counts.values())
        arith = " + ".join(str(s.counts[c]) for c in claims.class_names) + f" = {tot}; reported total {s.total}"
        out.append(Check(id=f"sizes.{s.name}.total", kind="sample_sizes",
                         subject=f"set {s.name}: class counts vs total", source=s.source,
                         status="pass" if tot == s.total else "fail",
                         reason="class counts add up to the reported total" if tot == s.total else
                                f"class counts add up to {tot}, not the reported {s.total}", arithmetic=arith,
                         values={"sum": tot, "total": s.total}))
    for p in claims.partitions:
        whole = claims.sets[p.whole]
        bad, lines = [], []
        for c in claims.class_names:
            parts = [claims.sets[x].counts[c] for x in p.parts]
            lines.append(f"{c}: {' + '.join(map(str, parts))} = {sum(parts)} vs {whole.counts[c]}")
            if sum(parts) != whole.counts[c]:
                bad.append(c)
        out.append(Check(id=f"sizes.{p.id}.partition", kind="sample_sizes",
                         subject=f"{' + '.join(p.parts)} = {p.whole}", source=p.source,
                         status="fail" if bad else "pass",
                         reason=f"parts do not add up to the whole for {', '.join(bad)}" if bad else
                                "the parts add up to the whole, class by class", arithmetic="; ".join(lines),
                         values={"mismatch": bad}))
        for x in p.parts:
            sx = claims.sets[x]
            if sx.fraction is None:
                continue
            f = sx.fraction.value
            bad, lines = [], []
            for c in claims.class_names:
                exact = f * whole.counts[c]
                ok = math.floor(exact) <= sx.counts[c] <= math.ceil(exact)
                lines.append(f"{c}: {sx.fraction.text} x {whole.counts[c]} = {float(exact):.1f} -> {sx.counts[c]}")
                bad += [] if ok else [c]
            out.append(Check(id=f"sizes.{p.id}.{x}.fraction", kind="sample_sizes",
                             subject=f"set {x} = {sx.fraction.text} of {p.whole}"
                                     + (" per class" if p.stratified else ""), source=sx.source,
                             status="fail" if bad else "pass",
                             reason=f"counts are not floor/ceil of {sx.fraction.text} for {', '.join(bad)}" if bad else
                                    f"every class count is the floor or ceiling of {sx.fraction.text} of its class",
                             arithmetic="; ".join(lines), values={"mismatch": bad}))
    return out
