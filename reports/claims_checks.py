"""The claims audit: pure checks of a paper's printed numbers against each other and against a reproduction.

Each check returns a dict {id, kind, subject, source, status, reason, arithmetic, values} with status
pass | fail | not_checkable. `audit_claims` runs them all (schema "fibrobench.claims_audit/1", see
docs/claims-schema.md). A printed number admits the interval of true values that print that way under
the claims file's rounding rule (round by default); where a check fails under that rule but would pass
under another (truncation, or a mix), the reason says so.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import stats

from reports import feasibility
from reports import stats as S
from reports.claims import CLASS_METRICS, Claims, Num, Result, load_claims
from reports.errors import ReportInputError

AUDIT_SCHEMA = "fibrobench.claims_audit/1"
OTHER_RULES = {"round": ("truncate", "either"), "truncate": ("round", "either"), "either": ()}


def _check(cid, kind, subject, source, status, reason, arithmetic, values=None) -> dict:
    return {"id": cid, "kind": kind, "subject": subject, "source": source, "status": status,
            "reason": reason, "arithmetic": arithmetic, "values": values or {}}


def _iv_str(num: Num, rounding: str) -> str:
    lo, hi, hi_open = num.interval(rounding)
    return f"[{num.show(lo, 2)}, {num.show(hi, 2)}{')' if hi_open else ']'}"


def _passes_under(num: Num, x: Fraction, rounding: str) -> str | None:
    """The first other rounding rule under which the printed value admits x, if any."""
    return next((rule for rule in OTHER_RULES.get(rounding, ()) if num.admits(x, rule)), None)


def _also(num: Num, x: Fraction, rounding: str) -> str:
    """' (consistent if truncated)' etc. when another rounding rule would admit x."""
    for rule in OTHER_RULES.get(rounding, ()):
        if num.admits(x, rule):
            return {"truncate": " (consistent if the value was truncated instead of rounded)",
                    "either": " (consistent only if some values are truncated and others rounded)",
                    "round": " (consistent if the value was rounded instead of truncated)"}[rule]
    return ""


# ---------------------------------------------------------------------------------------------- granularity
def grim(num: Num, n: int, rounding: str = "round") -> dict:
    """GRIM: which k in 0..n give k/n printing as `num`? Returns {achievable, ks, nearest: [(k, value)]}."""
    lo, hi, hi_open = num.interval(rounding)
    k_lo = max(0, math.ceil(lo * n))
    k_hi = min(n, math.floor(hi * n))
    ks = [k for k in range(k_lo, k_hi + 1) if num.admits(Fraction(k, n), rounding)]
    centre = num.value * n
    near = sorted({min(max(math.floor(centre), 0), n), min(max(math.ceil(centre), 0), n)})
    return {"achievable": bool(ks), "ks": ks[:20], "nearest": [(k, Fraction(k, n)) for k in near]}


def granularity_check(cid, subject, source, num: Num, n: int, rounding: str, what: str, alt_n: int | None = None,
                      alt_what: str = "") -> dict:
    """One GRIM check of `num` as k/n; `alt_n` is a second denominator mentioned in the reason only."""
    g = grim(num, n, rounding)
    near = "; ".join(f"{k}/{n} = {num.show(v, 3)}" for k, v in g["nearest"])
    arith = f"{num.text} x {n} = {float(num.value * n):.3f}; admitted interval {_iv_str(num, rounding)}; " \
            f"nearest: {near}"
    vals = {"printed": num.text, "n": n, "k": g["ks"], "rounding": rounding}
    if g["achievable"]:
        ks = ", ".join(map(str, g["ks"][:5]))
        return _check(cid, "granularity", subject, source, "pass",
                      f"{num.text} is achievable as k/{n} ({what}), k = {ks}", arith, vals)
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
    return _check(cid, "granularity", subject, source, "fail", reason, arith, vals)


def _supports(claims: Claims, r: Result):
    s = claims.sets.get(r.evaluated_on) if r.evaluated_on else None
    if s is None:
        return None, None
    return [s.counts[c] for c in claims.class_names], (s.total if s.total is not None else sum(s.counts.values()))


def _n_folds(claims: Claims, r: Result) -> int | None:
    if r.n_folds:
        return r.n_folds
    f = claims.models[r.model].folds
    return len(next(iter(f.values.values()))) if f and f.values else None


def check_result_granularity(claims: Claims, r: Result, rounding: str) -> list[dict]:
    out = []
    sup, n = _supports(claims, r)
    if sup is None:
        names = [m for m in r.metrics if m in ("accuracy", "error_rate")] + \
            [m for d in r.per_class.values() for m in d if m in ("recall", "specificity")]
        if names:
            out.append(_check(f"grim.{r.id}", "granularity", f"{r.model} {r.id}", r.source, "not_checkable",
                              "the evaluation set and its size are not stated", "", {}))
        return out
    k = _n_folds(claims, r)
    mean = r.kind == "mean_of_folds"
    if mean and not k:
        return [_check(f"grim.{r.id}", "granularity", f"{r.model} {r.id}", r.source, "not_checkable",
                       "mean of folds with an unknown number of folds", "", {})]
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
    return out


def check_fold_granularity(claims: Claims, model: str, rounding: str) -> list[dict]:
    f = claims.models[model].folds
    if not f or "accuracy" not in f.values:
        return []
    if not f.evaluated_on:
        return [_check(f"grim.{model}.folds", "granularity", f"{model} fold accuracy", f.source, "not_checkable",
                       "the set the folds were evaluated on is not stated", "", {})]
    s = claims.sets[f.evaluated_on]
    n = s.total if s.total is not None else sum(s.counts.values())
    return [granularity_check(f"grim.{model}.fold{i + 1}.accuracy", f"{model} fold {i + 1} accuracy", f.source, num,
                              n, rounding, f"one evaluation of {f.evaluated_on}, N = {n}")
            for i, num in enumerate(f.values["accuracy"])]


# ------------------------------------------------------------------------------------------- sample sizes
def check_sets(claims: Claims) -> list[dict]:
    out = []
    for s in claims.sets.values():
        if s.total is None:
            continue
        tot = sum(s.counts.values())
        arith = " + ".join(str(s.counts[c]) for c in claims.class_names) + f" = {tot}; reported total {s.total}"
        out.append(_check(f"sizes.{s.name}.total", "sample_sizes", f"set {s.name}: class counts vs total", s.source,
                          "pass" if tot == s.total else "fail",
                          "class counts add up to the reported total" if tot == s.total else
                          f"class counts add up to {tot}, not the reported {s.total}", arith,
                          {"sum": tot, "total": s.total}))
    for p in claims.partitions:
        whole = claims.sets[p.whole]
        bad, lines = [], []
        for c in claims.class_names:
            parts = [claims.sets[x].counts[c] for x in p.parts]
            lines.append(f"{c}: {' + '.join(map(str, parts))} = {sum(parts)} vs {whole.counts[c]}")
            if sum(parts) != whole.counts[c]:
                bad.append(c)
        out.append(_check(f"sizes.{p.id}.partition", "sample_sizes", f"{' + '.join(p.parts)} = {p.whole}",
                          p.source, "fail" if bad else "pass",
                          f"parts do not add up to the whole for {', '.join(bad)}" if bad else
                          "the parts add up to the whole, class by class", "; ".join(lines), {"mismatch": bad}))
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
            out.append(_check(f"sizes.{p.id}.{x}.fraction", "sample_sizes", f"set {x} = {sx.fraction.text} of {p.whole}"
                              + (" per class" if p.stratified else ""), sx.source, "fail" if bad else "pass",
                              f"counts are not floor/ceil of {sx.fraction.text} for {', '.join(bad)}" if bad else
                              f"every class count is the floor or ceiling of {sx.fraction.text} of its class",
                              "; ".join(lines), {"mismatch": bad}))
    return out


# --------------------------------------------------------------------------------------- groups of blocks
def groups(claims: Claims) -> list[list[Result]]:
    """Result blocks the claims file declares to be the same evaluation (equivalent_to), as connected groups."""
    parent = {r.id: r.id for r in claims.results()}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in claims.results():
        if r.equivalent_to:
            parent[find(r.id)] = find(r.equivalent_to)
    out: dict[str, list[Result]] = {}
    for r in claims.results():
        out.setdefault(find(r.id), []).append(r)
    return list(out.values())


def _group_supports(claims: Claims, g: list[Result]):
    for r in g:
        sup, n = _supports(claims, r)
        if sup is not None:
            return sup, n, r.evaluated_on
    return None, None, None


def block_counts(r: Result, classes: list[str]):
    """(class, field, count, source) from a block's TP/FP/FN/TN table and from its confusion matrix."""
    for cls, cnt in r.counts.items():
        for k, v in cnt.items():
            yield cls, k, v, r.source
    if r.confusion is not None:
        n = sum(map(sum, r.confusion))
        for c, cls in enumerate(classes):
            tp = r.confusion[c][c]
            fn = sum(r.confusion[c]) - tp
            fp = sum(row[c] for row in r.confusion) - tp
            for k, v in (("tp", tp), ("fp", fp), ("fn", fn), ("tn", n - tp - fp - fn)):
                yield cls, k, v, f"{r.source} (confusion matrix)"


def _group_counts(claims: Claims, g: list[Result]) -> dict[str, dict[str, tuple[int, str]]]:
    merged: dict[str, dict[str, tuple[int, str]]] = {}
    for r in g:
        for cls, k, v, src in block_counts(r, claims.class_names):
            merged.setdefault(cls, {}).setdefault(k, (v, src))
    return merged


def check_group_equalities(claims: Claims, g: list[Result], rounding: str) -> list[dict]:
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
        out.append(_check(f"same.{g[0].id}.{cls}.{k}", "consistency", f"{g[0].model} {cls} {k.upper()}",
                          ", ".join(s for _, s in vals), "pass" if ok else "fail",
                          "the same count everywhere it is reported" if ok else "the count differs between sources",
                          arith, {"values": [v for v, _ in vals]}))
    return out


def _agree(cid, subject, vals: list[tuple[Num, str]], rounding: str, why: str) -> dict:
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
    arith = "; ".join(f"{n.text} ({s}) -> {_iv_str(n, rounding)}" for n, s in vals)
    src = ", ".join(dict.fromkeys(s for _, s in vals))
    reason = f"printed values agree ({why})" if ok else f"printed values disagree ({why}): " + \
        " vs ".join(n.text for n, _ in vals)
    return _check(cid, "consistency", subject, src, "pass" if ok else "fail", reason, arith,
                  {"values": [n.text for n, _ in vals], **extra})


def check_equalities(claims: Claims, rounding: str) -> list[dict]:
    out = []
    for e in claims.equalities:
        nums = [(v, s) for v, s in e.values if isinstance(v, Num)]
        if len(nums) == len(e.values):
            c = _agree(f"same.{e.id}", e.quantity, nums, rounding, e.note or "the same quantity reported twice")
        else:
            texts = [str(v.text if isinstance(v, Num) else v).strip().lower() for v, _ in e.values]
            ok = len(set(texts)) == 1
            c = _check(f"same.{e.id}", "consistency", e.quantity, ", ".join(s for _, s in e.values),
                       "pass" if ok else "fail", "the same everywhere it is reported" if ok else "reported differently",
                       "; ".join(f"{v if not isinstance(v, Num) else v.text} ({s})" for v, s in e.values), {})
        out.append(c)
    return out


# -------------------------------------------------------------------------------- derived from the counts
def _metric_from_counts(m: str, tp, fp, fn, tn) -> Fraction | None:
    num, den = {"recall": (tp, tp + fn), "precision": (tp, tp + fp), "f1": (2 * tp, 2 * tp + fp + fn),
                "specificity": (tn, tn + fp), "npv": (tn, tn + fn)}[m]
    return Fraction(num, den) if den else None


def derived_from_counts(counts: dict[str, dict[str, int]], classes: list[str]) -> dict:
    """Per-class and averaged metrics from complete TP/FP/FN/TN counts, as exact fractions."""
    per = {c: {m: _metric_from_counts(m, *(counts[c][k] for k in ("tp", "fp", "fn", "tn"))) for m in CLASS_METRICS}
           for c in classes}
    support = {c: counts[c]["tp"] + counts[c]["fn"] for c in classes}
    n = counts[classes[0]]["tp"] + counts[classes[0]]["fp"] + counts[classes[0]]["fn"] + counts[classes[0]]["tn"]
    tp = sum(counts[c]["tp"] for c in classes)
    out = {"per_class": per, "support": support, "n": n, "accuracy": Fraction(tp, n), "error_rate": Fraction(n - tp, n)}
    for m in ("precision", "recall", "f1"):
        vals = [per[c][m] if per[c][m] is not None else Fraction(0) for c in classes]
        out[f"macro_{m}"] = sum(vals, Fraction(0)) / len(classes)
        out[f"weighted_{m}"] = sum((v * support[c] for v, c in zip(vals, classes)), Fraction(0)) / n
    return out


def check_group_derived(claims: Claims, g: list[Result], rounding: str) -> list[dict]:
    merged = _group_counts(claims, g)
    classes = claims.class_names
    if not merged:
        return []
    gid, model = g[0].id, g[0].model
    src_counts = ", ".join(dict.fromkeys(s for d in merged.values() for _, s in d.values()))
    complete = all(c in merged and all(k in merged[c] for k in ("tp", "fp", "fn", "tn")) for c in classes)
    if not complete:
        return [_check(f"derived.{gid}", "derived", f"{model} metrics from counts", src_counts, "not_checkable",
                       "TP/FP/FN/TN are not reported for every class", "", {})]
    cnt = {c: {k: merged[c][k][0] for k in ("tp", "fp", "fn", "tn")} for c in classes}
    out = []
    sup, n_set, set_name = _group_supports(claims, g)
    totals = {c: sum(cnt[c].values()) for c in classes}
    n = totals[classes[0]]
    lines = [f"{c}: {cnt[c]['tp']}+{cnt[c]['fp']}+{cnt[c]['fn']}+{cnt[c]['tn']} = {totals[c]}" for c in classes]
    ok = len(set(totals.values())) == 1 and (n_set is None or n == n_set)
    out.append(_check(f"derived.{gid}.counts_total", "derived", f"{model} TP+FP+FN+TN per class", src_counts,
                      "pass" if ok else "fail",
                      f"every class's counts add up to N = {n}" + (f" = |{set_name}|" if n_set else "") if ok else
                      f"per-class totals differ from each other or from |{set_name}| = {n_set}", "; ".join(lines),
                      {"totals": totals, "n": n_set}))
    if sup is not None:
        lines = [f"{c}: {cnt[c]['tp']}+{cnt[c]['fn']} = {cnt[c]['tp'] + cnt[c]['fn']} vs {s}" for c, s in zip(classes, sup)]
        bad = [c for c, s in zip(classes, sup) if cnt[c]["tp"] + cnt[c]["fn"] != s]
        out.append(_check(f"derived.{gid}.supports", "derived", f"{model} TP+FN = class support", src_counts,
                          "fail" if bad else "pass", f"TP+FN differs from the {set_name} support for {', '.join(bad)}"
                          if bad else f"TP+FN equals the {set_name} class counts", "; ".join(lines), {"mismatch": bad}))
    sfp, sfn = sum(cnt[c]["fp"] for c in classes), sum(cnt[c]["fn"] for c in classes)
    out.append(_check(f"derived.{gid}.fp_fn", "derived", f"{model} sum FP = sum FN", src_counts,
                      "pass" if sfp == sfn else "fail",
                      "every error is one FN and one FP, so the sums must match" +
                      ("" if sfp == sfn else f": {sfp} vs {sfn}"), f"sum FP = {sfp}; sum FN = {sfn}", {}))
    d = derived_from_counts(cnt, classes)
    for r in g:
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                x = d["per_class"][cls][m]
                out.append(_derived_one(f"derived.{r.id}.{cls}.{m}", f"{model} {cls} {m}", r.source, num, x, rounding,
                                        _formula(m, cnt[cls])))
        for m, num in r.metrics.items():
            if m in ("macro_avg", "weighted_avg"):
                out.append(_unnamed_average(r, m, num, d, rounding))
            elif m in d:
                tp = sum(cnt[c]["tp"] for c in classes)
                formula = f"{tp}/{n}" if m == "accuracy" else (f"{n - tp}/{n}" if m == "error_rate" else m)
                out.append(_derived_one(f"derived.{r.id}.{m}", f"{model} {m}", r.source, num, d[m], rounding, formula))
        if r.n_correct is not None:
            tp = sum(cnt[c]["tp"] for c in classes)
            ok = r.n_correct == tp and (r.n_total is None or r.n_total == n)
            out.append(_check(f"derived.{r.id}.n_correct", "derived", f"{model} correctly classified", r.source,
                              "pass" if ok else "fail", "matches the sum of TP" if ok else "differs from the sum of TP",
                              f"sum TP = {tp}, N = {n}; reported {r.n_correct}/{r.n_total}", {}))
    return out


def _formula(m: str, c: dict) -> str:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {"recall": f"TP/(TP+FN) = {tp}/{tp + fn}", "precision": f"TP/(TP+FP) = {tp}/{tp + fp}",
            "f1": f"2TP/(2TP+FP+FN) = {2 * tp}/{2 * tp + fp + fn}", "specificity": f"TN/(TN+FP) = {tn}/{tn + fp}",
            "npv": f"TN/(TN+FN) = {tn}/{tn + fn}"}[m]


def _derived_one(cid, subject, source, num: Num, x: Fraction | None, rounding: str, formula: str) -> dict:
    if x is None:
        return _check(cid, "derived", subject, source, "not_checkable", "undefined (zero denominator)", formula, {})
    ok = num.admits(x, rounding)
    arith = f"{formula} = {num.show(x, 3)}; printed {num.text} admits {_iv_str(num, rounding)}"
    reason = (f"recomputed {num.show(x, 3)} prints as {num.text}" if ok else
              f"recomputed {num.show(x, 3)} does not print as {num.text}{_also(num, x, rounding)}")
    vals = {"printed": num.text, "recomputed": float(x)}
    if not ok and _passes_under(num, x, rounding):
        vals["passes_under"] = _passes_under(num, x, rounding)
    return _check(cid, "derived", subject, source, "pass" if ok else "fail", reason, arith, vals)


def _unnamed_average(r: Result, m: str, num: Num, d: dict, rounding: str) -> dict:
    kind = m.split("_")[0]
    cands = {f"{kind}_{x}": d[f"{kind}_{x}"] for x in ("precision", "recall", "f1")}
    hits = [k for k, v in cands.items() if num.admits(v, rounding)]
    arith = "; ".join(f"{k} = {num.show(v, 3)}" for k, v in cands.items()) + f"; printed {num.text}"
    if hits:
        return _check(f"derived.{r.id}.{m}", "derived", f"{r.model} {kind} average ({r.source})", r.source, "pass",
                      f"{num.text} matches {' / '.join(hits)} recomputed from the counts (the paper does not say "
                      "which metric is averaged)", arith, {"matches": hits})
    near = [k for k, v in cands.items() if num.admits(v, "either")]
    return _check(f"derived.{r.id}.{m}", "derived", f"{r.model} {kind} average ({r.source})", r.source, "fail",
                  f"{num.text} matches none of the {kind} precision/recall/F1 recomputed from the counts"
                  + (f" (only {', '.join(near)} under mixed rounding)" if near else ""), arith, {"matches": []})


def _harmonic(p: Fraction, r: Fraction) -> Fraction:
    return 2 * p * r / (p + r) if p + r else Fraction(0)


def check_f1_harmonic(claims: Claims, r: Result, rounding: str) -> list[dict]:
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
                f"[{f1.show(h_lo, 3)}, {f1.show(h_hi, 3)}]; printed F1 {f1.text} admits {_iv_str(f1, rounding)}"
        reason = (f"F1 {f1.text} is the harmonic mean of P {p.text} and R {rc.text}" if ok else
                  f"F1 {f1.text} cannot be the harmonic mean of P {p.text} and R {rc.text} (= {f1.show(h, 3)})")
        out.append(_check(f"f1.{r.id}.{cls}", "derived", f"{r.model} {cls} F1 from P and R", r.source,
                          "pass" if ok else "fail", reason, arith, {"harmonic_mean": float(h), "printed": f1.text}))
    return out


# -------------------------------------------------------------------------------- reconstruction and IP
def _tp_candidates(num: Num | None, n_c: int, rounding: str) -> list[int]:
    if num is None:
        return list(range(n_c + 1))
    return [k for k in range(n_c + 1) if num.admits(Fraction(k, n_c), rounding)]


def _fp_bounds(tp: int, fn: int, mets: dict[str, Num], rounding: str, max_fp: int) -> tuple[int, int]:
    """FP values allowed by the printed precision (TP/(TP+FP)) or F1 (2TP/(2TP+FP+FN)) intervals."""
    lo_fp, hi_fp = 0, max_fp
    for m, num_, extra in (("precision", tp, 0), ("f1", 2 * tp, fn)):
        if m not in mets:
            continue
        lo, hi, _ = mets[m].interval(rounding)
        # num/(num + FP + extra) in [lo, hi]  <=>  num/hi - num - extra <= FP <= num/lo - num - extra
        if hi > 0:
            lo_fp = max(lo_fp, math.floor(Fraction(num_) / min(hi, Fraction(1)) - num_ - extra))
        if lo > 0:
            hi_fp = min(hi_fp, math.ceil(Fraction(num_) / lo - num_ - extra))
    return max(lo_fp, 0), hi_fp


def reconstruct(per_class: dict[str, dict[str, Num]], supports: list[int], classes: list[str],
                rounding: str = "round") -> dict:
    """Integer (TP, FP) per class consistent with the printed recall, precision, F1, specificity and NPV."""
    n = sum(supports)
    cands = {}
    for ci, cls in enumerate(classes):
        mets = per_class.get(cls, {})
        n_c = supports[ci]
        pairs = []
        for tp in _tp_candidates(mets.get("recall"), n_c, rounding):
            fn = n_c - tp
            lo_fp, hi_fp = _fp_bounds(tp, fn, mets, rounding, n - n_c)
            for fp in range(lo_fp, hi_fp + 1):
                tn = n - n_c - fp
                ok = True
                for m in ("precision", "f1", "specificity", "npv"):
                    if m in mets:
                        x = _metric_from_counts(m, tp, fp, fn, tn)
                        ok &= x is not None and mets[m].admits(x, rounding)
                if ok:
                    pairs.append((tp, fp))
            if len(pairs) > 200:
                break
        cands[cls] = pairs
    return {"candidates": cands, "n": n}


def check_reconstruction(claims: Claims, g: list[Result], rounding: str) -> list[dict]:
    sup, n, set_name = _group_supports(claims, g)
    per = _merged_per_class(g)
    gid, model = g[0].id, g[0].model
    src = _group_source(g)
    if not per or not any("recall" in v for v in per.values()):
        return []
    if sup is None:
        return [_check(f"reconstruct.{gid}", "reconstruction", f"{model} confusion counts", src, "not_checkable",
                       "class supports of the evaluation set are not stated", "", {})]
    if _kinds(g) == {"mean_of_folds"}:
        return []
    res = reconstruct(per, sup, claims.class_names, rounding)
    cands = res["candidates"]
    lines = []
    for cls in claims.class_names:
        c = cands[cls]
        shown = ", ".join(f"(TP={tp}, FP={fp})" for tp, fp in c[:4]) + (" ..." if len(c) > 4 else "")
        lines.append(f"{cls}: {shown or 'none'}")
    empty = [cls for cls in claims.class_names if not cands[cls]]
    values = {"candidates": {k: v[:20] for k, v in cands.items()}, "rounding": rounding}
    if empty:
        alt = ""
        for rule in OTHER_RULES.get(rounding, ()):
            c2 = reconstruct(per, sup, claims.class_names, rule)["candidates"]
            if all(c2[cls] for cls in claims.class_names):
                alt = f"; every class has candidates if {'values were truncated' if rule == 'truncate' else 'rounding is mixed'}"
                values["passes_under"] = rule
                break
        return [_check(f"reconstruct.{gid}", "reconstruction", f"{model} confusion counts from P/R/F1", src, "fail",
                       f"no integer TP/FP reproduces the printed per-class values for {', '.join(empty)}{alt}"
                       + _as_one(g, set_name),
                       "; ".join(lines), values)]
    # combine: sum of FP must equal sum of FN (every error is both); sum TP / N vs the accuracy
    acc = _merged_metric(g, "accuracy")
    combos = 1
    for cls in claims.class_names:
        combos *= len(cands[cls])
    reasons, status = [], "pass"
    if combos <= 200000:
        good = []
        for combo in itertools.product(*(cands[c] for c in claims.class_names)):
            tp_sum = sum(tp for tp, _ in combo)
            fp_sum = sum(fp for _, fp in combo)
            if fp_sum == n - tp_sum and (acc is None or acc.admits(Fraction(tp_sum, n), rounding)):
                good.append(combo)
        values["n_consistent_combinations"] = len(good)
        if good:
            tp_sum = sum(tp for tp, _ in good[0])
            reasons.append(f"{len(good)} combination(s) with sum FP = sum FN"
                           + (f" and sum TP/N printing as {acc.text} (e.g. {tp_sum}/{n} = {acc.show(Fraction(tp_sum, n), 3)})"
                              if acc else ""))
        else:
            status = "fail"
            reasons.append("no combination has sum FP = sum FN" + (f" with sum TP/N printing as {acc.text}" if acc else ""))
    else:
        status = "not_checkable"
        reasons.append(f"{combos} combinations: too many to enumerate (the integer program below decides)")
    merged = _group_counts(claims, g)
    if merged:
        rep = {c: (merged[c].get("tp", (None,))[0], merged[c].get("fp", (None,))[0]) for c in claims.class_names
               if c in merged}
        miss = [c for c, tpfp in rep.items() if tpfp not in cands[c]]
        if miss:
            status = "fail"
            reasons.append(f"the reported counts are not among the candidates for {', '.join(miss)}")
        else:
            reasons.append("the reported TP/FP counts are among the candidates")
    return [_check(f"reconstruct.{gid}", "reconstruction", f"{model} confusion counts from P/R/F1", src, status,
                   "; ".join(reasons) + _as_one(g, set_name), "; ".join(lines), values)]


def _as_one(g: list[Result], set_name) -> str:
    """A note when no block of the group says what kind of number it is."""
    if all(r.kind == "unspecified" for r in g):
        return f" (the paper does not say what kind of numbers these are; checked as one evaluation on {set_name})"
    return ""


def _group_source(g: list[Result]) -> str:
    """Sources of the blocks whose per-class values or accuracy a group check uses."""
    used = [r.source for r in g if r.kind != "mean_of_folds" and r.per_class]
    for m in ("accuracy", "error_rate"):
        first = next((r for r in g if r.kind != "mean_of_folds" and m in r.metrics), None)
        if first is not None:
            used.append(first.source)
    return "; ".join(dict.fromkeys(used))


def _merged_per_class(g: list[Result]) -> dict[str, dict[str, Num]]:
    per: dict[str, dict[str, Num]] = {}
    for r in g:
        if r.kind == "mean_of_folds":
            continue
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                per.setdefault(cls, {}).setdefault(m, num)
    return per


def _merged_metric(g: list[Result], m: str) -> Num | None:
    for r in g:
        if r.kind != "mean_of_folds" and m in r.metrics:
            return r.metrics[m]
    return None


def _kinds(g: list[Result]) -> set[str]:
    return {r.kind for r in g}


def check_feasibility(claims: Claims, g: list[Result], rounding: str) -> list[dict]:
    sup, n, set_name = _group_supports(claims, g)
    per = _merged_per_class(g)
    gid, model = g[0].id, g[0].model
    if not per:
        return []
    src = _group_source(g)
    if sup is None:
        return [_check(f"ip.{gid}", "feasibility", f"{model} joint feasibility", src, "not_checkable",
                       "class supports of the evaluation set are not stated", "", {})]
    acc = _merged_metric(g, "accuracy")
    err = _merged_metric(g, "error_rate")
    classes = claims.class_names

    def run(rule):
        pc = {ci: {m: num.interval(rule) for m, num in per.get(cls, {}).items()} for ci, cls in enumerate(classes)}
        acc_iv = acc.interval(rule) if acc else None
        if err is not None:  # error rate e prints as x  <=>  accuracy 1 - e in the mirrored interval
            lo, hi, ho = err.interval(rule)
            e_iv = (1 - hi, 1 - lo, False)
            acc_iv = e_iv if acc_iv is None else (max(acc_iv[0], e_iv[0]), min(acc_iv[1], e_iv[1]), acc_iv[2])
        return pc, acc_iv, feasibility.solve(sup, pc, acc_iv)

    pc, acc_iv, res = run(rounding)
    used = sum(len(v) for v in pc.values()) + (acc is not None) + (err is not None)
    arith = f"{used} printed values as interval constraints on a {len(classes)}x{len(classes)} integer confusion " \
            f"matrix with row sums {sup} (N = {n}, {set_name}); rounding = {rounding}"
    values = {"rounding": rounding, "supports": sup, "n_constraints": used}
    if res["status"] == "feasible":
        values["witness"] = res["matrix"]
        return [_check(f"ip.{gid}", "feasibility", f"{model} joint feasibility", src, "pass",
                       "some integer confusion matrix reproduces every printed value at once (witness in values)",
                       arith, values)]
    if res["status"] != "infeasible":
        return [_check(f"ip.{gid}", "feasibility", f"{model} joint feasibility", src, "not_checkable",
                       f"solver did not finish ({res.get('solver_status')})", arith, values)]
    diag = feasibility.diagnose(sup, pc, acc_iv)
    parts = []
    if diag["metrics"]:
        parts.append("infeasible on its own: " + ", ".join(f"{classes[c]} {m}" for c, m in diag["metrics"]))
    only = [classes[c] for c in diag["classes"] if not any(c == cc for cc, _ in diag["metrics"])]
    if only:
        parts.append("infeasible only jointly within class: " + ", ".join(only))
    if not diag["classes"]:
        parts.append("every class is feasible alone; only the combination (with the accuracy) is not")
    alt = []
    for rule in OTHER_RULES.get(rounding, ()):
        _, _, r2 = run(rule)
        alt.append(f"{rule}: {r2['status']}")
        if r2["status"] == "feasible":
            values[f"witness_{rule}"] = r2["matrix"]
            values.setdefault("passes_under", rule)
    values["diagnosis"] = {"classes": [classes[c] for c in diag["classes"]],
                           "metrics": [[classes[c], m] for c, m in diag["metrics"]]}
    values["other_rules"] = alt
    reason = "no integer confusion matrix reproduces all printed values together; " + "; ".join(parts)
    if alt:
        reason += f" (under other rounding rules: {', '.join(alt)})"
    reason += _as_one(g, set_name)
    return [_check(f"ip.{gid}", "feasibility", f"{model} joint feasibility", src, "fail", reason, arith, values)]


# ----------------------------------------------------------------------------------------------- folds
def _interval_mean(nums: list[Num], rounding: str) -> tuple[Fraction, Fraction]:
    ivs = [n.interval(rounding) for n in nums]
    return sum((iv[0] for iv in ivs), Fraction(0)) / len(ivs), sum((iv[1] for iv in ivs), Fraction(0)) / len(ivs)


def check_fold_summaries(claims: Claims, rounding: str) -> list[dict]:
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
            out.append(_check(f"folds.{r.id}.{m}", "fold_summary", f"{r.model} {m}: mean of folds", r.source,
                              "pass" if ok else "fail", ("the printed value is the mean of the printed folds" if ok else
                                                         "the printed value is not the mean of the printed folds")
                              + (f" (kind {r.kind_basis})" if r.kind_basis == "inferred" else ""), arith,
                              {"printed": num.text, "mean_of_folds": float(mean)}))
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
            out.append(_check(f"folds.{mname}.range{i + 1}", "fold_summary", f"{mname} fold {rg['metric']} range",
                              f"{rg['source']}; {f.source}", "pass" if ok else "fail",
                              "the stated range matches the fold table" if ok else
                              "the stated range does not match the fold table", "; ".join(lines), {}))
    return out


# ----------------------------------------------------------------------------------------- statistics
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


def _pb(num: Num, rounding: str) -> tuple[float, float]:
    """Bounds of a printed value on its printed scale (97.18% -> 97.18)."""
    lo, hi, _ = num.interval(rounding)
    s = 100 if num.percent else 1
    return float(lo * s), float(hi * s)


def check_statistic(claims: Claims, st, rounding: str) -> list[dict]:
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
                out.append(_check(f"stats.{st.id}.df", "statistics", subj, st.source, "pass" if ok else "fail",
                                  f"df = n - 1 = {calc['df']}", f"n = {calc['n']} folds", {}))
                continue
            f = 1.0 if k in ("t", "p") else scale   # means, sds, CI on the printed (points) scale
            exact, r_lo, r_hi = calc_s[k] * f, rng[k][0] * f, rng[k][1] * f
            lo, hi = _pb(num, rounding)
            direct = lo <= exact <= hi
            within = lo <= r_hi and r_lo <= hi
            status = "pass" if (direct or within) else "fail"
            how = "recomputed from the printed folds" if direct else (
                "reachable within the rounding of the printed folds" if within else
                "not reachable from the printed folds")
            shown = f"{exact:.4g}" if k == "p" else f"{exact:.4f}"
            arith = f"{k} from folds = {shown} (range over fold rounding [{r_lo:.4g}, {r_hi:.4g}]); " \
                    f"printed {num.text} admits [{lo:.6g}, {hi:.6g}]"
            out.append(_check(f"stats.{st.id}.{k}", "statistics", subj, st.source, status,
                              f"{k}: printed {num.text}, {how}", arith,
                              {"printed": num.text, "recomputed": exact, "range": [r_lo, r_hi]}))
    else:
        out.append(_check(f"stats.{st.id}.folds", "statistics", subj, st.source, "not_checkable",
                          "no matching fold values to recompute the test from", "", {}))
    out += check_statistic_summary(st, rounding)
    return out


_bounds = _pb


def check_statistic_summary(st, rounding: str) -> list[dict]:
    """Are the reported summaries consistent with each other, without the fold values?"""
    rep = st.reported
    out = []
    subj = f"{st.test}: {st.a} vs {st.b} (summaries only)"
    n = int(rep["n"].value) if "n" in rep else None
    if n is None and "df" in rep:
        n = int(rep["df"].value) + 1
    if n is None:
        return [_check(f"stats.{st.id}.summary", "statistics", subj, st.source, "not_checkable",
                       "the number of pairs (n or df) is not reported", "", {})]
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
        out.append(_check(f"stats.{st.id}.sd_diff", "statistics", subj, st.source, "pass" if ok else "fail",
                          "the sd of the paired differences backed out of each reported summary overlaps" if ok else
                          "the reported summaries imply incompatible sds of the paired differences", arith,
                          {k: list(v) for k, v in sd_ranges.items()}))
    if "ci" in rep and "mean_diff" in rep:
        l_lo, l_hi = _bounds(rep["ci"][0], rounding)
        h_lo, h_hi = _bounds(rep["ci"][1], rounding)
        m_lo, m_hi = _bounds(rep["mean_diff"], rounding)
        ok = (l_lo + h_lo) / 2 <= m_hi and m_lo <= (l_hi + h_hi) / 2
        out.append(_check(f"stats.{st.id}.ci_centre", "statistics", subj, st.source, "pass" if ok else "fail",
                          "the t-interval is centred on the mean difference" if ok else
                          "the CI is not centred on the mean difference (a t-interval is symmetric)",
                          f"CI midpoint in [{(l_lo + h_lo) / 2:.4f}, {(l_hi + h_hi) / 2:.4f}]; mean diff in "
                          f"[{m_lo:.4f}, {m_hi:.4f}]", {}))
    if "mean_a" in rep and "mean_b" in rep and "mean_diff" in rep:
        a_lo, a_hi = _bounds(rep["mean_a"], rounding)
        b_lo, b_hi = _bounds(rep["mean_b"], rounding)
        m_lo, m_hi = _bounds(rep["mean_diff"], rounding)
        ok = a_lo - b_hi <= m_hi and m_lo <= a_hi - b_lo
        out.append(_check(f"stats.{st.id}.diff_of_means", "statistics", subj, st.source, "pass" if ok else "fail",
                          "mean difference = mean_a - mean_b" if ok else "mean difference is not mean_a - mean_b",
                          f"{rep['mean_a'].text} - {rep['mean_b'].text} in [{a_lo - b_hi:.4f}, {a_hi - b_lo:.4f}]; "
                          f"printed {rep['mean_diff'].text}", {}))
    if "t" in rep and "p" in rep:
        t_lo, t_hi = _bounds(rep["t"], rounding)
        tail = 2 if st.alternative == "two-sided" else 1
        p_hi, p_lo = tail * stats.t.sf(t_lo, n - 1), tail * stats.t.sf(t_hi, n - 1)
        q_lo, q_hi = _bounds(rep["p"], rounding)
        ok = p_lo <= q_hi and q_lo <= p_hi
        out.append(_check(f"stats.{st.id}.p_from_t", "statistics", subj, st.source, "pass" if ok else "fail",
                          f"p from t = {rep['t'].text} with df = {n - 1} ({st.alternative}) "
                          + ("matches" if ok else "does not match") + f" the printed p = {rep['p'].text}",
                          f"p in [{p_lo:.4g}, {p_hi:.4g}] for t in [{t_lo}, {t_hi}]; printed p admits [{q_lo:.4g}, {q_hi:.4g}]",
                          {"p_range": [p_lo, p_hi]}))
    return out


# --------------------------------------------------------------------------------------- comparisons
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


def check_comparisons(claims: Claims) -> list[dict]:
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
        out.append(_check(f"kind.{c.id}", "kind_mismatch", c.text or f"{c.a} vs {c.b}", c.source, status, reason, arith,
                          {"a": {"result": a.id, "kind": a.kind, "basis": a.kind_basis},
                           "b": {"result": b.id, "kind": b.kind, "basis": b.kind_basis}}))
    return out


# --------------------------------------------------------------------------------------- reproduction
RUN_PER_CLASS = ("precision", "recall", "f1", "specificity", "npv")


def load_summary(run_dir) -> dict:
    """reports.summary.summarize_run(run_dir) (the report engineer's module)."""
    try:
        from reports.summary import summarize_run
    except ImportError as exc:
        raise ReportInputError(run_dir, None, f"cannot summarise a run: reports.summary is unavailable ({exc})") from None
    return summarize_run(run_dir)


def check_reproduction(claims: Claims, summary: dict, rounding: str | None = None) -> list[dict]:
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
            out.append(_check(f"run.{mname}", "reproduction", f"{mname} vs run model {run_name}", "run", "not_checkable",
                              f"model {run_name!r} is not in the run", "", {}))
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
                if m in ens:
                    out.append(_repro(f"run.{r.id}.{m}", f"{mname} {m}", r.source, num, ens[m], rule))
            pcs = ens.get("per_class") or {}
            for cls, mets in r.per_class.items():
                for m, num in mets.items():
                    if cls in pcs and m in pcs[cls]:
                        out.append(_repro(f"run.{r.id}.{cls}.{m}", f"{mname} {cls} {m}", r.source, num, pcs[cls][m],
                                          rule))
    return out


def _repro_folds(cid, subject, source, num: Num, fold: dict, rounding: str = "round") -> dict:
    """A claimed mean of folds against the t-interval of the reproduced fold scores (between-fold spread only)."""
    vals = [float(v) for v in (fold.get("values") or []) if v is not None]
    if len(vals) < 2:
        return _repro(cid, subject, source, num, {"value": fold.get("mean"), "ci": None, "sd": fold.get("sd")},
                      rounding)
    mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    half = float(stats.t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
    c = _repro(cid, subject, source, num, {"value": mean, "ci": [mean - half, mean + half]}, rounding)
    c["arithmetic"] += f"; 95% t-interval over {len(vals)} reproduced folds (sd {sd * (100 if num.percent else 1):.2f})"
    return c


def _repro(cid, subject, source, num: Num, rep: dict, rounding: str = "round") -> dict:
    """Pass when some value that prints as the claimed one lies in the reproduction's CI (compared exactly, as
    Fractions); a CI of zero width (every resample equal) cannot tell values apart: not_checkable, 'degenerate'."""
    v = rep.get("value")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return _check(cid, "reproduction", subject, source, "not_checkable", "no reproduced value", "", {})
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
                f"printed {num.text} admits {_iv_str(num, rounding)}"
        vals = {"claimed": claimed, "reproduced": float(v), "ci": [lo, hi], "difference": diff,
                "claimed_interval": [float(c_lo), float(c_hi)], "rounding": rounding}
        if lo == hi:
            return _check(cid, "reproduction", subject, source, "not_checkable",
                          "degenerate: the reproduction's CI has zero width (every resample gave the same value), "
                          "so it cannot tell the claimed value from the reproduced one", arith,
                          {**vals, "degenerate": True})
        f_lo, f_hi = Fraction(lo), Fraction(hi)
        inside = f_lo <= num.value <= f_hi
        overlap = c_lo <= f_hi and (f_lo < c_hi if c_open else f_lo <= c_hi)
        return _check(cid, "reproduction", subject, source, "pass" if overlap else "fail",
                      "claimed value inside the reproduction's CI" if inside else
                      "claimed value inside the reproduction's CI within its printed rounding" if overlap else
                      "claimed value outside the reproduction's CI", arith, vals)
    sd = rep.get("sd")
    arith = f"claimed {num.text}; reproduced {v * scale:.2f}" + (f" (sd {sd * scale:.2f})" if sd is not None else "") \
        + f"; difference {diff * scale:+.2f}{unit}"
    return _check(cid, "reproduction", subject, source, "not_checkable", "no CI for the reproduced value", arith,
                  {"claimed": claimed, "reproduced": float(v), "difference": diff})


# ---------------------------------------------------------------------------------------------- audit
def run_checks(claims: Claims, rounding: str | None = None, summary: dict | None = None) -> list[dict]:
    rule = rounding or claims.rounding
    checks = check_sets(claims)
    for r in claims.results():
        checks += check_result_granularity(claims, r, rule)
        checks += check_f1_harmonic(claims, r, rule)
    for m in claims.models:
        checks += check_fold_granularity(claims, m, rule)
    for g in groups(claims):
        checks += check_group_equalities(claims, g, rule)
        checks += check_group_derived(claims, g, rule)
        checks += check_reconstruction(claims, g, rule)
        checks += check_feasibility(claims, g, rule)
    checks += check_equalities(claims, rule)
    checks += check_fold_summaries(claims, rule)
    for st in claims.statistics:
        checks += check_statistic(claims, st, rule)
    checks += check_comparisons(claims)
    if summary is not None:
        checks += check_reproduction(claims, summary, rule)
    return merge_duplicates(checks)


def merge_duplicates(checks: list[dict]) -> list[dict]:
    """One check per distinct question: the same printed value, tested the same way, in several tables
    (e.g. Table 3 and Table 7 print the same row) becomes one check listing every source."""
    out: list[dict] = []
    index: dict[tuple, dict] = {}
    for c in checks:
        key = (c["kind"], c["subject"], c["arithmetic"], c["status"], c["reason"])
        if c["arithmetic"] and key in index:
            first = index[key]
            if c["source"] not in first["source"].split("; "):
                first["source"] += "; " + c["source"]
            first.setdefault("also", []).append(c["id"])
            continue
        index[key] = c
        out.append(c)
    return out


def summarize(checks: list[dict]) -> tuple[dict, str]:
    counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "fail", "not_checkable")}
    by_kind: dict[str, dict[str, int]] = {}
    for c in checks:
        by_kind.setdefault(c["kind"], {"pass": 0, "fail": 0, "not_checkable": 0})[c["status"]] += 1
    internal = [c for c in checks if c["kind"] != "reproduction" and c["status"] == "fail"]
    repro = [c for c in checks if c["kind"] == "reproduction" and c["status"] == "fail"]
    if internal:
        verdict = "inconsistent"
    elif counts["pass"] == 0:
        verdict = "not_checkable"
    else:
        verdict = "consistent"
    if repro:
        verdict += "; not reproduced"
    counts["fail_rounding_only"] = sum(c["status"] == "fail" and bool(c["values"].get("passes_under"))
                                       for c in checks)
    return {**counts, "total": len(checks), "by_kind": by_kind}, verdict


def audit_claims(claims_path, run_dir=None, rounding: str | None = None, summary: dict | None = None) -> dict:
    """Audit a claims file (and optionally a run): JSON-able dict, schema fibrobench.claims_audit/1."""
    claims = load_claims(claims_path)
    if rounding is not None and rounding not in OTHER_RULES:
        raise ReportInputError(claims_path, "rounding", f"{rounding!r} not one of round, truncate, either")
    if run_dir is not None and summary is None:
        if not Path(run_dir).is_dir():
            raise ReportInputError(run_dir, None, "run directory not found")
        summary = load_summary(run_dir)
    checks = run_checks(claims, rounding, summary)
    counts, verdict = summarize(checks)
    return {"schema": AUDIT_SCHEMA, "paper": claims.paper, "claims_file": str(claims_path),
            "run_dir": str(run_dir) if run_dir is not None else None, "rounding": rounding or claims.rounding,
            "checks": checks, "summary": counts, "verdict": verdict, "notes": claims.notes}
