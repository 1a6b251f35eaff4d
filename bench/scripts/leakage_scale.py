"""Scale benchmark of the leakage audit: the whole `fibrobench leakage` path on N real image files, measured.

Runs `fibrobench leakage --data DATA --json OUT` in this process (manifest, image- and patient/cluster-level
splits, decode + mask + hash with every transform variant, transform-aware linking, clusters, per-partition
near-duplicates, label conflicts, the 1-NN probe under both splits, example thumbnails, the JSON) and records wall
time, CPU time, peak resident memory and the audit's own per-stage timing. With --frames N a random sample of N rows
of the data's manifest (seed 0, manifest order) is audited (a manifest written next to the images, removed
afterwards). Nothing is
extrapolated: the figure is the run.

    python -m bench.scripts.leakage_scale --data DIR [--frames N] [--workers 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

SCHEMA = "fibrobench.leakage_scale/2"


def _subset_manifest(root: Path, frames: int) -> Path:
    """root/manifest-sample<N>.csv: N rows of root/manifest.csv drawn at random (seed 0), in manifest order."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(root / "manifest.csv")
    if len(df) < frames:
        print(f"{root / 'manifest.csv'}: rows: only {len(df)}, --frames asks for {frames}", file=sys.stderr)
        sys.exit(2)
    out = root / f"manifest-sample{frames}.csv"
    df.iloc[np.sort(np.random.default_rng(0).choice(len(df), frames, replace=False))].to_csv(out, index=False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data root with manifest.csv (e.g. made by `fibrobench synth`)")
    ap.add_argument("--frames", type=int, default=0, help="audit a random sample of N manifest rows (0: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from bench.cli import main as cli_main

    import pandas as pd
    from PIL import Image

    root = Path(args.data)
    first = pd.read_csv(root / "manifest.csv", nrows=1, usecols=["path"])
    with Image.open(root / first["path"].iloc[0]) as im:
        size = list(im.size)
    data = _subset_manifest(root, args.frames) if args.frames else root
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "leakage.json"
        cmd = ["leakage", "--data", str(data), "--json", str(out), "--workers", str(args.workers)]
        t, c = time.perf_counter(), time.process_time()
        try:
            rc = cli_main(cmd)
        finally:
            if data != root:
                data.unlink()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        leak = json.loads(out.read_text()) if out.is_file() else None
        json_mb = out.stat().st_size / 2**20 if out.is_file() else None
    if leak is None:
        print(f"fibrobench leakage exited {rc} without writing its JSON", file=sys.stderr)
        return 2
    nd = leak["near_duplicates"]
    result = {
        "schema": SCHEMA, "command": ["fibrobench", *cmd], "exit_code": rc, "frames": leak["data"]["n_images"],
        "frame_size": size, "workers": args.workers, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "stages_s": leak["timing"], "links": nd["n_links"], "links_by_transform": nd["by_transform"],
        "clusters": leak["cluster_stats"]["n_clusters"], "verdict": leak["verdict"],
        "label_conflict_pairs": leak["label_conflicts"]["n_pairs"], "leakage_json_mb": round(json_mb, 1),
        # the detector against the patient IDs (when the data has them), and the verdict on the patient/cluster-level
        # split the command compares with: on data without copies, its near-duplicates are false links at scale
        "detector_vs_patients": leak.get("detector_vs_patients"),
        "compared_split": ({"level": cs["split"]["level"], "verdict": cs["verdict"],
                            "holdout_eval_with_duplicate_in_train": cs["near_duplicates"]["pairs"][0][
                                "eval_with_duplicate_in_train"],
                            "holdout_n_eval_images": cs["near_duplicates"]["pairs"][0]["n_eval_images"]}
                           if (cs := leak.get("compared_split")) else None),
    }
    print(f"{result['frames']} frames {size[0]}x{size[1]}: whole `fibrobench leakage` path {wall:.1f} s wall, "
          f"{cpu:.1f} CPU-s, peak RSS {result['peak_rss_mb']} MB; stages {leak['timing']}; {nd['n_links']} links; "
          f"load average {load_before:.2f} -> {result['load_average_1min']['after']}", flush=True)
    if args.json:
        from bench.provenance import collect
        from protocols.atomic import write_json

        result["provenance"] = collect(["python -m bench.scripts.leakage_scale", *(argv or sys.argv[1:])])
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
