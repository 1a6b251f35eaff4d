"""Every integer (TP, FP) per class that reproduces the printed per-class values, then their combinations."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

from reports.claims import Claims, Result
from reports.claims_checks.groups import (as_one_note, group_counts, group_source, group_supports, kinds,
                                          merged_metric, merged_per_class, mirror_binary)
from reports.claims_checks.record import OTHER_RULES, Check
from reports.claims_numbers import Num
from reports.exact_metrics import AVERAGED, class_metric, overall

# printed overall metrics that per-class (TP, FP) with known supports fix exactly
FROM_COUNTS = ("balanced_accuracy", "kappa", "mcc", "macro_avg", "weighted_avg",
               *(f"{a}_{m}" for a in ("macro", "weighted") for m in AVERAGED))


def admits_overall(printed: dict[str, Num], combo, supports: list[int], rounding: str) -> bool:
    """Do the per-class (TP, FP) of `combo` reproduce every printed overall metric (unnamed averages: any of P/R/F1)?"""
    n = sum(supports)
    x = overall([(tp, fp, s - tp, n - s - fp) for (tp, fp), s in zip(combo, supports)])
    for m, num in printed.items():
        vals = [x[f"{m.split('_')[0]}_{a}"] for a in AVERAGED] if m in ("macro_avg", "weighted_avg") else [x[m]]
        if not any(v is not None and num.admits(v, rounding) for v in vals):
            return False
    return True


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


LIMIT = 200


def reconstruct(per_class: dict[str, dict[str, Num]], supports: list[int], classes: list[str],
                rounding: str = "round") -> dict:
    """Integer (TP, FP) per class consistent with the printed recall, precision, F1, specificity and NPV.

    A class whose list passes LIMIT pairs is cut short and named under "truncated": its list is not exhaustive."""
    n = sum(supports)
    cands, truncated = {}, []
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
                        x = class_metric(m, tp, fp, fn, tn)
                        ok &= x is not None and mets[m].admits(x, rounding)
                if ok:
                    pairs.append((tp, fp))
            if len(pairs) > LIMIT:
                truncated.append(cls)
                break
        cands[cls] = pairs
    return {"candidates": cands, "n": n, "truncated": truncated}


def check_reconstruction(claims: Claims, g: list[Result], rounding: str) -> list[Check]:
    sup, n, set_name = group_supports(claims, g)
    per = merged_per_class(g)
    gid, model = g[0].id, g[0].model
    src = group_source(g)
    if not per or not any("recall" in v for v in per.values()):
        return []
    if sup is None:
        return [Check(id=f"reconstruct.{gid}", kind="reconstruction", subject=f"{model} confusion counts", source=src,
                      status="not_checkable", reason="class supports of the evaluation set are not stated")]
    if kinds(g) == {"mean_of_folds"}:
        return []
    per = mirror_binary(per, claims.class_names)
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
        return [Check(id=f"reconstruct.{gid}", kind="reconstruction", subject=f"{model} confusion counts from P/R/F1",
                      source=src, status="fail",
                      reason=f"no integer TP/FP reproduces the printed per-class values for {', '.join(empty)}{alt}"
                             + as_one_note(g, set_name), arithmetic="; ".join(lines), values=values)]
    # combine: sum of FP must equal sum of FN (every error is both); sum TP / N vs the accuracy; then the printed
    # overall metrics that the counts fix (balanced accuracy, kappa, MCC, macro and weighted averages)
    acc = merged_metric(g, "accuracy")
    printed = {m: num for m in FROM_COUNTS if (num := merged_metric(g, m)) is not None}
    combos = 1
    for cls in claims.class_names:
        combos *= len(cands[cls])
    reasons, status = [], "pass"
    if res["truncated"]:
        status = "not_checkable"
        reasons.append(f"more than {LIMIT} candidates for {', '.join(res['truncated'])}: too many to combine (the "
                       "integer program below decides)")
    elif combos <= 200000:
        good = []
        for combo in itertools.product(*(cands[c] for c in claims.class_names)):
            tp_sum = sum(tp for tp, _ in combo)
            fp_sum = sum(fp for _, fp in combo)
            if fp_sum == n - tp_sum and (acc is None or acc.admits(Fraction(tp_sum, n), rounding)) and \
                    (not printed or admits_overall(printed, combo, sup, rounding)):
                good.append(combo)
        values["n_consistent_combinations"] = len(good)
        also = f" and the printed {', '.join(printed)}" if printed else ""
        if good:
            tp_sum = sum(tp for tp, _ in good[0])
            reasons.append(f"{len(good)} combination(s) with sum FP = sum FN"
                           + (f" and sum TP/N printing as {acc.text} (e.g. {tp_sum}/{n} = {acc.show(Fraction(tp_sum, n), 3)})"
                              if acc else "") + also)
        else:
            status = "fail"
            reasons.append("no combination has sum FP = sum FN" + (f" with sum TP/N printing as {acc.text}" if acc else "")
                           + also)
    else:
        status = "not_checkable"
        reasons.append(f"{combos} combinations: too many to enumerate (the integer program below decides)")
    merged = group_counts(claims, g)
    if merged:
        rep = {c: (merged[c].get("tp", (None,))[0], merged[c].get("fp", (None,))[0]) for c in claims.class_names
               if c in merged}
        miss = [c for c, tpfp in rep.items() if tpfp not in cands[c] and c not in res["truncated"]]
        if miss:
            status = "fail"
            reasons.append(f"the reported counts are not among the candidates for {', '.join(miss)}")
        else:
            reasons.append("the reported TP/FP counts are among the candidates")
    return [Check(id=f"reconstruct.{gid}", kind="reconstruction", subject=f"{model} confusion counts from P/R/F1",
                  source=src, status=status, reason="; ".join(reasons) + as_one_note(g, set_name),
                  arithmetic="; ".join(lines), values=values)]
