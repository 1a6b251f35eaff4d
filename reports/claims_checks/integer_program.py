"""Joint feasibility: one integer confusion matrix for all printed values of an evaluation (reports.feasibility)."""
from __future__ import annotations

from reports import feasibility
from reports.claims import Claims, Result
from reports.claims_checks.groups import as_one_note, group_source, group_supports, merged_metric, merged_per_class
from reports.claims_checks.record import OTHER_RULES, Check


def check_feasibility(claims: Claims, g: list[Result], rounding: str) -> list[Check]:
    """Can one integer confusion matrix reproduce every printed value of the evaluation at once?"""
    sup, n, set_name = group_supports(claims, g)
    per = {cls: {m: num for m, num in mets.items() if m in feasibility.RATIO_METRICS}
           for cls, mets in merged_per_class(g).items()}
    per = {cls: mets for cls, mets in per.items() if mets}
    printed = {m: num for m in feasibility.OVERALL_METRICS if (num := merged_metric(g, m)) is not None}
    gid, model = g[0].id, g[0].model
    if not per and not printed:
        return []
    src = group_source(g)
    if sup is None:
        return [Check(id=f"ip.{gid}", kind="feasibility", subject=f"{model} joint feasibility", source=src,
                      status="not_checkable", reason="class supports of the evaluation set are not stated")]
    acc = merged_metric(g, "accuracy")
    err = merged_metric(g, "error_rate")
    classes = claims.class_names

    def run(rule):
        pc = {ci: {m: num.interval(rule) for m, num in per.get(cls, {}).items()} for ci, cls in enumerate(classes)}
        acc_iv = acc.interval(rule) if acc else None
        if err is not None:  # error rate e prints as x  <=>  accuracy 1 - e in the mirrored interval
            lo, hi, ho = err.interval(rule)
            e_iv = (1 - hi, 1 - lo, False)
            acc_iv = e_iv if acc_iv is None else (max(acc_iv[0], e_iv[0]), min(acc_iv[1], e_iv[1]), acc_iv[2])
        ov = {m: num.interval(rule) for m, num in printed.items()}
        return pc, acc_iv, ov, feasibility.solve(sup, pc, acc_iv, overall=ov)

    pc, acc_iv, ov, res = run(rounding)
    used = sum(len(v) for v in pc.values()) + (acc is not None) + (err is not None) + len(ov)
    arith = f"{used} printed values as interval constraints on a {len(classes)}x{len(classes)} integer confusion " \
            f"matrix with row sums {sup} (N = {n}, {set_name}); rounding = {rounding}"
    values = {"rounding": rounding, "supports": sup, "n_constraints": used}
    if res["status"] == "feasible":
        values["witness"] = res["matrix"]
        if res.get("reading"):   # which metric each unnamed average was read as
            values["reading"] = res["reading"]
        return [Check(id=f"ip.{gid}", kind="feasibility", subject=f"{model} joint feasibility", source=src,
                      status="pass",
                      reason="some integer confusion matrix reproduces every printed value at once (witness in values)",
                      arithmetic=arith, values=values)]
    if res["status"] != "infeasible":
        return [Check(id=f"ip.{gid}", kind="feasibility", subject=f"{model} joint feasibility", source=src,
                      status="not_checkable", reason=f"no verdict from the solver ({res.get('solver_status')})",
                      arithmetic=arith, values=values)]
    diag = feasibility.diagnose(sup, pc, acc_iv, ov)
    parts = []
    alone = [f"{classes[c]} {m}" for c, m in diag["metrics"]] + diag["overall"]
    if alone:
        parts.append("infeasible on its own: " + ", ".join(alone))
    only = [classes[c] for c in diag["classes"] if not any(c == cc for cc, _ in diag["metrics"])]
    if only:
        parts.append("infeasible only jointly within class: " + ", ".join(only))
    if not diag["classes"] and not diag["overall"]:
        parts.append("every class is feasible alone; only the combination (with the accuracy"
                     + (f", {', '.join(ov)}" if ov else "") + ") is not")
    alt = []
    for rule in OTHER_RULES.get(rounding, ()):
        *_, r2 = run(rule)
        alt.append(f"{rule}: {r2['status']}")
        if r2["status"] == "feasible":
            values[f"witness_{rule}"] = r2["matrix"]
            values.setdefault("passes_under", rule)
    values["diagnosis"] = {"classes": [classes[c] for c in diag["classes"]],
                           "metrics": [[classes[c], m] for c, m in diag["metrics"]]}
    if ov:
        values["diagnosis"]["overall"] = diag["overall"]
    values["other_rules"] = alt
    reason = "no integer confusion matrix reproduces all printed values together; " + "; ".join(parts)
    if alt:
        reason += f" (under other rounding rules: {', '.join(alt)})"
    reason += as_one_note(g, set_name)
    return [Check(id=f"ip.{gid}", kind="feasibility", subject=f"{model} joint feasibility", source=src, status="fail",
                  reason=reason, arithmetic=arith, values=values)]
