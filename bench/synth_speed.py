"""Measure the synthetic generator's throughput (frames/s, PNG writing included); prints a JSON line.

    python -m bench.synth_speed [--patients 30] [--size 800x600] [--workers 1] [--json bench/results/synth_speed.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from bench.cmd_synth import parse_size
from bench.provenance import collect
from protocols.synth import generate_dataset


def measure(n_patients: int, size, workers: int, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        t0 = time.perf_counter()
        df = generate_dataset(os.path.join(tmp, "ds"), n_patients=n_patients, seed=seed, size=size, workers=workers)
        dt = time.perf_counter() - t0
    return {"frames": int(len(df)), "patients": n_patients, "seconds": round(dt, 3),
            "frames_per_s": round(len(df) / dt, 2), "size": list(size), "workers": workers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30)
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
    print(f"{res['frames_per_s']} frames/s ({res['frames']} frames {res['size'][0]}x{res['size'][1]}, "
          f"{a.workers} worker(s), {res['seconds']} s)", file=sys.stderr)
    print(line)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
