"""Measure the synthetic generator's throughput (frames/s, PNG writing included); prints a JSON line.

    python -m bench.scripts.synth_speed [--patients 40] [--size 800x600] [--workers 1] [--json bench/results/synth_speed.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

from bench.commands.synth import parse_size
from bench.provenance import collect
from protocols.synth import generate_dataset


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measure(n_patients: int, size, workers: int, seed: int = 0) -> dict:
    """Wall-clock frames/s and CPU seconds per frame (this process + its finished workers).

    On a shared machine the wall rate depends on the other load; cpu_ms_per_frame does not (much), and
    1000 / cpu_ms_per_frame is the rate one uncontended core gives.
    """
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        c0, t0 = _cpu(), time.perf_counter()
        df = generate_dataset(os.path.join(tmp, "ds"), n_patients=n_patients, seed=seed, size=size, workers=workers)
        dt, dc = time.perf_counter() - t0, _cpu() - c0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"frames": int(len(df)), "patients": n_patients, "seconds": round(dt, 3),
            "frames_per_s": round(len(df) / dt, 2), "cpu_ms_per_frame": round(1000 * dc / len(df), 2),
            "frames_per_cpu_s": round(len(df) / dc, 2), "loadavg_1min": load, "cpu_count": os.cpu_count(),
            "size": list(size), "workers": workers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--size", default="800x600")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append the JSON line to this file too")
    a = ap.parse_args(argv)
    res = measure(a.patients, parse_size(a.size), a.workers, a.seed)
    res["schema"] = "fibrobench.synth_speed/1"
    res["provenance"] = collect(["synth_speed", *(argv if argv is not None else sys.argv[1:])], device="cpu")
    res["provenance"]["device"]["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    line = json.dumps(res, sort_keys=True)
    print(f"{res['frames_per_s']} frames/s wall, {res['cpu_ms_per_frame']} CPU ms/frame "
          f"({res['frames']} frames {res['size'][0]}x{res['size'][1]}, {a.workers} worker(s), {res['seconds']} s, "
          f"load {res['loadavg_1min']})", file=sys.stderr)
    print(line)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
