"""The claims audit: every check family over a claims file (and a run), merged and summarised as JSON."""
from __future__ import annotations

from pathlib import Path

from reports.claims import Claims, load_claims
from reports.claims_checks.averages import check_averages
from reports.claims_checks.comparisons import check_comparisons
from reports.claims_checks.consistency import check_equalities, check_group_equalities
from reports.claims_checks.derived import check_f1_harmonic, check_group_derived
from reports.claims_checks.folds import check_fold_summaries
from reports.claims_checks.granularity import check_fold_granularity, check_result_granularity
from reports.claims_checks.groups import groups
from reports.claims_checks.integer_program import check_feasibility
from reports.claims_checks.mcnemar import check_mcnemar
from reports.claims_checks.reconstruction import check_reconstruction
from reports.claims_checks.record import OTHER_RULES, Check
from reports.claims_checks.reproduction import check_reproduction
from reports.claims_checks.sizes import check_sets
from reports.claims_checks.stat_tests import check_statistic
from reports.errors import ReportInputError
from reports.rundir import load_run
from reports.summary import summarize_loaded

AUDIT_SCHEMA = "fibrobench.claims_audit/1"


def run_checks(claims: Claims, rounding: str | None = None, summary: dict | None = None) -> list[Check]:
    """Every check family over the claims (and the reproduction summary when given), duplicates merged."""
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
        checks += check_averages(claims, g, rule)
        checks += check_reconstruction(claims, g, rule)
        checks += check_feasibility(claims, g, rule)
    checks += check_equalities(claims, rule)
    checks += check_fold_summaries(claims, rule)
    for st in claims.statistics:
        checks += check_mcnemar(claims, st, rule) if st.test == "mcnemar" else check_statistic(claims, st, rule)
    checks += check_comparisons(claims)
    if summary is not None:
        checks += check_reproduction(claims, summary, rule)
    return merge_duplicates(checks)


def merge_duplicates(checks: list[Check]) -> list[Check]:
    """One check per distinct question: the same printed value, tested the same way, in several tables
    (e.g. Table 3 and Table 7 print the same row) becomes one check listing every source."""
    out: list[Check] = []
    index: dict[tuple, Check] = {}
    for c in checks:
        key = (c.kind, c.subject, c.arithmetic, c.status, c.reason)
        if c.arithmetic and key in index:
            first = index[key]
            if c.source not in first.source.split("; "):
                first.source += "; " + c.source
            first.also.append(c.id)
            continue
        index[key] = c
        out.append(c)
    return out


def summarize(checks: list[Check]) -> tuple[dict, str]:
    """(counts by status and by kind, verdict) of a list of checks."""
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "not_checkable")}
    by_kind: dict[str, dict[str, int]] = {}
    for c in checks:
        by_kind.setdefault(c.kind, {"pass": 0, "fail": 0, "not_checkable": 0})[c.status] += 1
    internal = [c for c in checks if c.kind != "reproduction" and c.status == "fail"]
    repro = [c for c in checks if c.kind == "reproduction" and c.status == "fail"]
    if internal:
        verdict = "inconsistent"
    elif counts["pass"] == 0:
        verdict = "not_checkable"
    else:
        verdict = "consistent"
    if repro:
        verdict += "; not reproduced"
    counts["fail_rounding_only"] = sum(c.status == "fail" and bool(c.values.get("passes_under")) for c in checks)
    return {**counts, "total": len(checks), "by_kind": by_kind}, verdict


def check_run_classes(claims: Claims, run_classes: list | None, run_dir=None) -> None:
    """The claims file and the run must name the same classes (per-class claims are matched by name)."""
    if run_classes is None or set(map(str, run_classes)) == set(claims.class_names):
        return
    hint = " (they differ only in case)" if sorted(c.lower() for c in run_classes) == \
        sorted(c.lower() for c in claims.class_names) else ""
    where = f" {run_dir}" if run_dir is not None else ""
    raise ReportInputError(claims.path, "class_names", f"{claims.class_names} differ from the classes of the run"
                           f"{where}: {list(run_classes)}{hint}")


def audit_claims(claims_path, run_dir=None, rounding: str | None = None, summary: dict | None = None) -> dict:
    """Audit a claims file (and optionally a run): JSON-able dict, schema fibrobench.claims_audit/1.

    `summary` (a reports.summary.summarize_run dict) can be passed instead of run_dir when it is already computed.
    """
    claims = load_claims(claims_path)
    if rounding is not None and rounding not in OTHER_RULES:
        raise ReportInputError(claims_path, "rounding", f"{rounding!r} not one of round, truncate, either")
    if run_dir is not None and summary is None:
        if not Path(run_dir).is_dir():
            raise ReportInputError(run_dir, None, "run directory not found")
        run = load_run(run_dir)
        check_run_classes(claims, run.class_names, run_dir)   # before the bootstrap, which takes a while
        summary = summarize_loaded(run)
    elif summary is not None:
        check_run_classes(claims, summary.get("class_names"), run_dir)
    checks = run_checks(claims, rounding, summary)
    counts, verdict = summarize(checks)
    return {"schema": AUDIT_SCHEMA, "paper": claims.paper, "claims_file": str(claims_path),
            "run_dir": str(run_dir) if run_dir is not None else None, "rounding": rounding or claims.rounding,
            "checks": [c.to_dict() for c in checks], "summary": counts, "verdict": verdict, "notes": claims.notes}
