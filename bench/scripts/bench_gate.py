"""Compare a pytest-benchmark JSON with the stored baseline of this machine; record one if there is none.

    python -m bench.scripts.bench_gate RESULTS.json [--baselines bench/baselines] [--threshold 0.5]
                               [--machine-id ID] [--update] [--json OUT]

A benchmark regresses when BOTH
  new median > baseline median * (1 + threshold)      (the documented threshold, on medians), and
  new min    > baseline min    * (1 + threshold)      (its fastest round slowed as much),
A busy machine slows some rounds, rarely the fastest one by the same factor, so load alone does not
fail the gate; a real slow-down shifts the whole distribution, its minimum included. Exit 1 on any regression,
2 on unreadable input, 0 otherwise. Benchmarks new to the baseline, or missing from the results, are
reported, not failed. Baselines are keyed by machine: `<arch>-<cpu brand>-<N>c` (+ `-<gpu>` when CUDA is
visible), file `bench/baselines/<machine-id>.json` (schema "fibrobench.bench-baseline/1"). With no baseline
for this machine the results are recorded as its baseline and the gate says so; `--update` refreshes one.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from pathlib import Path

from protocols.atomic import write_json

SCHEMA = "fibrobench.bench-baseline/1"
DEFAULT_THRESHOLD = 0.5
HERE = Path(__file__).resolve().parents[1]  # bench/
STAT_KEYS = ("min", "max", "mean", "median", "iqr", "q1", "q3", "rounds", "stddev")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def machine_id(machine_info: dict, gpu: str | None = None) -> str:
    """`x86_64-amd-epyc-2c`: arch, CPU brand and core count from pytest-benchmark's machine_info."""
    cpu = machine_info.get("cpu") or {}
    parts = [machine_info.get("machine") or cpu.get("arch_string_raw") or "cpu",
             cpu.get("brand_raw") or machine_info.get("processor") or "unknown-cpu", f"{cpu.get('count') or 0}c"]
    if gpu:
        parts.append(gpu)
    return "-".join(slug(p) for p in parts)


def _gpu_name() -> str | None:
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no torch / no driver: a CPU-only id
        return None


def load_results(path) -> dict:
    """pytest-benchmark JSON -> {"machine_info", "benchmarks": {fullname: stats}}; ValueError when unusable."""
    try:
        raw = json.loads(Path(path).read_text())
        benches = {b["fullname"]: {k: b["stats"][k] for k in STAT_KEYS if k in b["stats"]}
                   for b in raw["benchmarks"]}
        return {"machine_info": raw.get("machine_info") or {}, "benchmarks": benches,
                "commit_info": raw.get("commit_info") or {}, "datetime": raw.get("datetime")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON ({type(exc).__name__}: {exc})") from None


def compare(base: dict, new: dict, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """One row per benchmark in either: status regression|ok|faster|new|missing, with the median ratio."""
    rows = []
    for name in sorted(set(base) | set(new)):
        b, n = base.get(name), new.get(name)
        if b is None or n is None:
            rows.append({"name": name, "status": "new" if b is None else "missing", "ratio": None,
                         "base_median": b and b["median"], "new_median": n and n["median"]})
            continue
        ratio = n["median"] / b["median"] if b["median"] > 0 else float("inf")
        min_ratio = n["min"] / b["min"] if b.get("min", 0) > 0 else float("inf")
        if ratio > 1 + threshold and min_ratio > 1 + threshold:
            status = "regression"
        elif ratio < 1 / (1 + threshold):
            status = "faster"
        else:
            status = "ok"
        rows.append({"name": name, "status": status, "ratio": ratio, "base_median": b["median"],
                     "new_median": n["median"], "new_min": n["min"], "min_ratio": min_ratio})
    return rows


def baseline_doc(results: dict, mid: str) -> dict:
    mi = dict(results["machine_info"])
    cpu = mi.pop("cpu", None) or {}
    mi["cpu"] = {k: cpu.get(k) for k in ("brand_raw", "count", "arch_string_raw", "hz_advertised_friendly")}
    return {"schema": SCHEMA, "machine_id": mid, "machine_info": mi,
            "recorded_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": (results.get("commit_info") or {}).get("id"), "benchmarks": results["benchmarks"]}




def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--baselines", default=str(HERE / "baselines"), help="baseline folder (default bench/baselines)")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help=f"allowed slow-down of the median as a fraction (default {DEFAULT_THRESHOLD} = +50%%)")
    ap.add_argument("--machine-id", help="override the machine key")
    ap.add_argument("--update", action="store_true", help="replace this machine's baseline with these results")
    ap.add_argument("--json", help="write the comparison here")
    args = ap.parse_args(argv)
    if args.threshold < 0:
        print("bench_gate: --threshold must be >= 0", file=sys.stderr)
        return 2
    try:
        res = load_results(args.results)
    except ValueError as exc:
        print(f"bench_gate: error: {exc}", file=sys.stderr)
        return 2
    mid = args.machine_id or machine_id(res["machine_info"], _gpu_name())
    path = Path(args.baselines) / f"{mid}.json"
    if args.update or not path.exists():
        why = "refreshed" if path.exists() else "no baseline for this machine yet: recorded"
        write_json(path, baseline_doc(res, mid))
        print(f"bench_gate: {why} {path} ({len(res['benchmarks'])} benchmarks); nothing compared")
        return 0
    try:
        base = json.loads(path.read_text())
        assert base.get("schema") == SCHEMA, f"schema {base.get('schema')!r}"
        base_b = base["benchmarks"]
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        print(f"bench_gate: error: {path}: unusable baseline ({exc})", file=sys.stderr)
        return 2
    rows = compare(base_b, res["benchmarks"], args.threshold)
    print(f"bench_gate: machine {mid}, baseline {path} (recorded {base.get('recorded_utc')}), "
          f"threshold +{100 * args.threshold:.0f}% on medians")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"x{r['ratio']:.2f}"
        med = lambda v: "-" if v is None else f"{1e3 * v:.3f} ms"  # noqa: E731
        print(f"  {r['status'].upper():10s} {ratio:>7s}  {med(r['base_median']):>12s} -> {med(r['new_median']):>12s}  {r['name']}")
    bad = [r for r in rows if r["status"] == "regression"]
    if args.json:
        write_json(Path(args.json), {"schema": "fibrobench.bench-gate/1", "machine_id": mid, "baseline": str(path),
                                 "threshold": args.threshold, "rows": rows, "regressions": len(bad)})
    print(f"bench_gate: {'FAIL' if bad else 'PASS'}: {len(bad)} regression(s) of {len(rows)} benchmark(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
