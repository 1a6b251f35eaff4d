"""`fibrobench audit-claims`: check a paper's printed numbers against themselves (and a reproduction run)."""
from __future__ import annotations

import json
import shutil
import textwrap

NAME = "audit-claims"
HELP = "check a paper's reported numbers for internal consistency (and against a reproduction run)"
DESCRIPTION = (
    "Reads a claims YAML (docs/claims-schema.md) and runs granularity (GRIM), confusion-matrix reconstruction, "
    "integer-program feasibility, derived-metric, statistical-test, cross-table and kind-of-number checks; with "
    "--run, compares every claim with the reproduced value and its CI. Exit 0, or 1 with --strict when a check "
    "fails, 2 on bad input."
)


def add_arguments(p):
    p.add_argument("claims", metavar="CLAIMS.yaml", help="the paper's claims file")
    p.add_argument("--run", metavar="RUN_DIR", help="compare the claims with this reproduction run")
    p.add_argument("--json", metavar="OUT", help="write the audit (schema fibrobench.claims_audit/1) here")
    p.add_argument("--strict", action="store_true", help="exit 1 when any check fails")
    p.add_argument("--rounding", choices=["round", "truncate", "either"],
                   help="how printed values were rounded (default: the claims file's `rounding`, else round)")
    p.add_argument("--verbose", "-v", action="store_true", help="print the arithmetic of every check, not only failures")


def format_table(audit: dict, verbose: bool = False, width: int | None = None) -> str:
    """The audit as plain text: one line per check, then the arithmetic of each failure."""
    width = width or max(80, min(160, shutil.get_terminal_size((120, 20)).columns))
    paper = audit.get("paper", {})
    lines = [f"claims audit: {paper.get('id', '?')} - {paper.get('title', '')}",
             f"rounding rule: {audit['rounding']}" + (f"; run: {audit['run_dir']}" if audit.get("run_dir") else ""), ""]
    id_w = min(46, max(len(c["id"]) for c in audit["checks"]) if audit["checks"] else 10)
    head = f"{'STATUS':<13} {'CHECK':<{id_w}} REASON"
    lines += [head, "-" * min(width, 160)]
    room = max(30, width - 15 - id_w)
    for c in audit["checks"]:
        reason = c["reason"] if len(c["reason"]) <= room else c["reason"][:room - 3] + "..."
        lines.append(f"{c['status'].upper():<13} {c['id']:<{id_w}} {reason}")
    shown = [c for c in audit["checks"] if verbose or c["status"] == "fail"]
    if shown:
        lines += ["", "details" + ("" if verbose else " of failed checks") + ":"]
        for c in shown:
            lines.append(f"* {c['id']} [{c['status']}] {c['subject']} ({c['source']})")
            for label, text in (("why", c["reason"]), ("arithmetic", c["arithmetic"])):
                if text:
                    lines += textwrap.wrap(f"{label}: {text}", width=min(width, 140), initial_indent="    ",
                                           subsequent_indent="      ")
    s = audit["summary"]
    lines += ["", f"{s['total']} checks: {s['pass']} pass, {s['fail']} fail, {s['not_checkable']} not checkable"
              + (f" ({s['fail_rounding_only']} of the failures would pass if values were truncated or rounding mixed)"
                 if s.get("fail_rounding_only") else ""),
              "by kind: " + "; ".join(f"{k} {v['pass']}/{v['fail']}/{v['not_checkable']}"
                                      for k, v in s["by_kind"].items()) + "  (pass/fail/not checkable)",
              f"verdict: {audit['verdict']}"]
    return "\n".join(lines)


def main(args) -> int:
    from bench.provenance import collect
    from protocols.atomic import write_json
    from reports.claims_checks import audit_claims

    audit = audit_claims(args.claims, run_dir=args.run, rounding=args.rounding)
    print(format_table(audit, verbose=args.verbose))
    if args.json:
        audit["provenance"] = collect(command=args.argv)
        json.dumps(audit)  # fail before writing anything if something is not JSON-able
        write_json(args.json, audit)
        print(f"wrote {args.json}")
    return 1 if (args.strict and audit["summary"]["fail"]) else 0
