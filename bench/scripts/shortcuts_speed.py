"""Wall time of `fibrobench shortcuts` on a run (default: the demo's smoke run), as the demo would run it.

Usage: python -m bench.scripts.shortcuts_speed RUN_DIR [--device cpu] [--repeats 1] [--json OUT]
Runs the command in a fresh process (imports included, as in `fibrobench demo`), writing shortcuts.json to a
temporary file, and records wall time, the child's CPU time, the per-step timings the command reports and the
load average before and after (a busy machine stretches wall time; CPU time / cores is the quiet-machine bound).
Target (issue 12): the whole audit adds <= 60 s to the demo on the 2-core development CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def measure(run_dir, device: str = "cpu", extra=()) -> dict:
    """One timed `fibrobench shortcuts RUN_DIR` in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shortcuts.json"
        cmd = [sys.executable, "-m", "bench.cli", "shortcuts", str(run_dir), "--device", device, "--json", str(out),
               *extra]
        load0 = os.getloadavg()
        c0 = os.times()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        c1 = os.times()
        load1 = os.getloadavg()
        if proc.returncode != 0:
            raise SystemExit(f"shortcuts failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        doc = json.loads(out.read_text())
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return {"wall_s": round(wall, 2), "child_cpu_s": round(cpu, 2), "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in load1], "timing": doc["timing"],
            "models": {m: {"verdict": e["verdict"], "timing": e["timing"]} for m, e in doc["models"].items()},
            "n_test": next(iter(doc["models"].values()))["n_test"], "conditions": doc["conditions"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from bench.provenance import collect

    runs = [measure(args.run_dir, args.device) for _ in range(args.repeats)]
    best = min(r["wall_s"] for r in runs)
    res = {"schema": "fibrobench.shortcuts_speed/1", "run_dir": str(Path(args.run_dir).resolve()),
           "cpu_count": os.cpu_count(), "target_s": TARGET_S, "runs": runs, "best_wall_s": best,
           "meets_target": best <= TARGET_S, "provenance": collect(sys.argv[1:], args.device)}
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
