"""`fibrobench gate`: fail (exit 1) when a run regresses against a stored baseline; --write-baseline stores one."""
from __future__ import annotations

from pathlib import Path

from bench.funnel import nonneg_float
from protocols.errors import BadInput

NAME = "gate"
HELP = "compare a run's metrics, latency and peak memory with a baseline (exit 1 on regression)"
DESCRIPTION = (
    "Regression gate for CI. A headline metric fails when it drops below baseline - max(metric tol, "
    "ci-scale x the lower arm of the baseline's 95% CI); latency/throughput and peak memory fail beyond a "
    "percentage (same device only). Runs with a different data fingerprint or protocol sha256 are refused "
    "(exit 2) unless --allow-different. See docs/benchmarks.md."
)


def add_arguments(p) -> None:
    from bench.gate import DEFAULTS
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--baseline", required=True, metavar="BASELINE.json",
                   help="baseline to compare with (or to write, with --write-baseline)")
    p.add_argument("--write-baseline", action="store_true", help="write BASELINE.json from RUN_DIR and exit 0")
    p.add_argument("--latency", metavar="LATENCY.json", help="latency file (default: RUN_DIR/latency.json if present)")
    p.add_argument("--json", metavar="OUT", help="write the fibrobench.gate/1 result here")
    p.add_argument("--junit", metavar="OUT.xml", help="write JUnit XML (one testcase per check)")
    p.add_argument("--metric-tol", default=str(DEFAULTS["metric_tol"]),
                   help="absolute metric tolerance: 0.01, or per metric 'accuracy=0.005,macro_f1=0.02' "
                        f"(default {DEFAULTS['metric_tol']})")
    p.add_argument("--ci-scale", type=nonneg_float, default=DEFAULTS["ci_scale"],
                   help="multiple of the baseline CI's lower arm that a drop may reach (default 1.0; 0 = abs tol only)")
    p.add_argument("--metrics", help="comma-separated metrics to gate (default: every metric of known direction)")
    p.add_argument("--latency-tol", type=nonneg_float, default=DEFAULTS["latency_tol"], metavar="PCT",
                   help=f"allowed latency rise / throughput fall in percent (default {DEFAULTS['latency_tol']:g})")
    p.add_argument("--memory-tol", type=nonneg_float, default=DEFAULTS["memory_tol"], metavar="PCT",
                   help=f"allowed peak-memory rise in percent (default {DEFAULTS['memory_tol']:g})")
    p.add_argument("--allow-different", action="store_true",
                   help="compare even if the data fingerprint or protocol sha256 differ (reported as warnings)")


def main(args) -> int:
    from bench import gate as G
    from protocols.atomic import write_json, write_text

    for field, v in (("--latency-tol", args.latency_tol), ("--memory-tol", args.memory_tol),
                     ("--ci-scale", args.ci_scale)):
        if v < 0:
            raise BadInput("<command line>", field, f"must be >= 0, got {v}")
    tols = G.parse_metric_tol(args.metric_tol)
    snap = G.snapshot(args.run_dir, args.latency, command=args.argv)
    if args.write_baseline:
        write_json(args.baseline, G.baseline_from_run(snap, args.run_dir))
        n = sum(len(v) for v in snap["metrics"].values())
        print(f"wrote baseline {args.baseline}: {len(snap['metrics'])} model(s), {n} metric(s), "
              f"latency {'yes' if snap['latency'] else 'no'}")
        return 0
    base = G.load_baseline(args.baseline)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    G.check_metric_names(base, metrics, args.baseline)
    checks = G.compare(base, snap, metric_tol=tols, ci_scale=args.ci_scale, latency_tol=args.latency_tol,
                       memory_tol=args.memory_tol, metrics=metrics, allow_different=args.allow_different)
    if not any(c["kind"] == "metric" and c["status"] != "skip" for c in checks):
        raise BadInput(args.baseline, "metrics", "nothing to compare: every gated metric of the baseline is null")
    tolerances = {"metric_tol": tols, "ci_scale": args.ci_scale, "latency_tol_pct": args.latency_tol,
                  "memory_tol_pct": args.memory_tol, "metrics": metrics, "allow_different": args.allow_different}
    res = G.result(checks, tolerances, Path(args.baseline), Path(args.run_dir), command=args.argv)
    print(G.format_table(res))
    if args.json:
        write_json(args.json, res)
    if args.junit:
        write_text(args.junit, G.junit_xml(res))
    return 1 if res["verdict"] == "fail" else 0
