"""`fibrobench report`: one self-contained HTML report of a run, or a side-by-side comparison of several runs."""
from __future__ import annotations

from pathlib import Path

from bench.funnel import nonneg_int
from bench.provenance import collect
from protocols.atomic import write_json, write_text
from reports.errors import ReportInputError

NAME = "report"
HELP = "render a self-contained HTML report of RUN_DIR (or compare several runs)"
DESCRIPTION = ("Recompute every metric, CI and paired test from the files in RUN_DIR and write one self-contained "
               "HTML file. With several RUN_DIRs, write a side-by-side comparison (e.g. image- vs patient-level "
               "splits of the same data).")


def add_arguments(p):
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory (several: compare them)")
    p.add_argument("-o", "--output", default=None,
                   help="HTML file to write (default RUN_DIR/report.html, or ./compare.html for several runs)")
    p.add_argument("--claims", default=None, metavar="CLAIMS.yaml", help="audit these claims against the run")
    p.add_argument("--json", default=None, metavar="SUMMARY.json",
                   help="also write the summary (fibrobench.summary/1, or fibrobench.compare/1 for several runs)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="bootstrap seed (default 0)")


def main(args) -> int:
    if args.n_boot < 0:
        raise ReportInputError("--n-boot", None, "must be >= 0")
    if args.claims is not None and len(args.run_dirs) > 1:
        raise ReportInputError("--claims", None, "audits one run; give a single RUN_DIR with --claims")
    if args.claims is not None and not Path(args.claims).is_file():
        raise ReportInputError(args.claims, None, "claims file not found")
    prov = collect(args.argv, device=None, seeds={"bootstrap": args.seed})
    if len(args.run_dirs) == 1:
        from reports.render import render_report

        run_dir = Path(args.run_dirs[0])
        out = Path(args.output) if args.output else run_dir / "report.html"
        html, summary = render_report(run_dir, claims_path=args.claims, n_boot=args.n_boot, seed=args.seed,
                                      provenance=prov)
        result = {**summary, "provenance": prov}
    else:
        from reports.compare import render_compare

        out = Path(args.output) if args.output else Path("compare.html")
        html, result = render_compare(args.run_dirs, n_boot=args.n_boot, seed=args.seed, provenance=prov)
        result = {**result, "provenance": prov}
    if args.json:
        write_json(args.json, result)
    write_text(out, html)
    print(f"report: {out.resolve()}")
    if args.json:
        print(f"summary: {Path(args.json).resolve()}")
    return 0
