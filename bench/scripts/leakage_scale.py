"""Scale benchmark of the near-duplicate detector: 6,323 real 800x600 frames end to end, 100,000 codes compared.

Part A decodes, masks and hashes FRAMES image files (default 6,323, the public dataset's size; synthetic
800x600 frames are generated when --data is not given) and compares all pairs. Part B compares all pairs of
BIG codes (default 100,000) built from part A's real codes, each repeated with every bit flipped with
probability 0.3 and its thumbnail with N(0, 0.5) noise added (so the code distribution and the number of
candidate pairs stay realistic); hashing for part B
is extrapolated from part A's measured per-frame rate, and stated as such. Peak memory of each comparison
is measured with tracemalloc (numpy reports its buffers to it).

    python -m bench.scripts.leakage_scale [--data DIR] [--frames 6323] [--big 100000] [--workers 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from protocols import hashing


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))


def _compare(codes) -> dict:
    tracemalloc.start()
    c = time.process_time()
    t = time.perf_counter()
    i, j, _, _ = hashing.link_pairs(codes["phash"], codes["dhash"])
    t_pairs = time.perf_counter() - t
    r = hashing.ncc(codes["thumb"], i, j)
    n_cand = len(i)
    keep = r >= hashing.DEFAULT_THRESHOLDS["ncc"]
    i, j = i[keep], j[keep]
    t_verify = time.perf_counter() - t - t_pairs
    lab = hashing.components(len(codes["phash"]), i, j)
    t_all = time.perf_counter() - t
    cpu = time.process_time() - c
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n = len(codes["phash"])
    return {"n": n, "pairs_compared": n * (n - 1) // 2, "candidates": int(n_cand), "links": int(len(i)),
            "clusters": int(lab.max() + 1), "compare_s": round(t_pairs, 3), "verify_s": round(t_verify, 3), "compare_and_components_s": round(t_all, 3), "compare_and_components_cpu_s": round(cpu, 3),
            "ns_per_pair": round(1e9 * t_pairs / max(1, n * (n - 1) // 2), 3), "peak_traced_mb": round(peak / 2**20, 1),
            "n2_uint8_matrix_mb": round(n * n / 2**20, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder of frames (default: generate synthetic 800x600 frames)")
    ap.add_argument("--frames", type=int, default=6323)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/fibrobench-leakage-scale")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    if args.data:
        root = Path(args.data)
    else:
        from protocols.synth import MEAN_FRAMES, generate_dataset

        patients = math.ceil(args.frames / MEAN_FRAMES * 1.08)
        root = Path(args.workdir) / f"synth-p{patients}"
        if not (root / "manifest.csv").exists():
            generate_dataset(root, n_patients=patients, seed=7, size=(800, 600), workers=args.workers, progress=True)
    files = _images(root)[: args.frames]
    if len(files) < args.frames:
        print(f"{root}: only {len(files)} images, need {args.frames}", file=sys.stderr)
        return 2
    from PIL import Image

    with Image.open(files[0]) as im:
        size = im.size

    t, c = time.perf_counter(), time.process_time()
    h = hashing.hash_files(files, workers=args.workers)
    t_hash, c_hash = time.perf_counter() - t, time.process_time() - c
    a = _compare(h)
    part_a = {"frames": len(files), "frame_size": list(size), "workers": args.workers,
              "decode_mask_hash_s": round(t_hash, 2),
              "decode_mask_hash_cpu_s": round(c_hash, 2), "load_average_1min": round(__import__("os").getloadavg()[0], 2), "frames_per_s": round(len(files) / t_hash, 1), **a,
              "total_s": round(t_hash + a["compare_and_components_s"], 2)}
    print(f"A: {len(files)} frames {size[0]}x{size[1]}: decode+mask+hash {t_hash:.1f} s "
          f"({part_a['frames_per_s']} frames/s, {args.workers} threads; {c_hash:.1f} CPU-s; load avg "
          f"{part_a['load_average_1min']}), all-pairs compare + clusters "
          f"{a['compare_and_components_s']:.2f} s ({a['candidates']} candidates, {a['links']} links) -> total {part_a['total_s']:.1f} s", flush=True)

    rng = np.random.default_rng(0)
    reps = math.ceil(args.big / len(files))

    def tile(codes):
        c = np.tile(codes, reps)[: args.big]
        flips = (rng.random((args.big, 64)) < 0.3)
        c = c ^ hashing.pack_bits(flips)
        c[: len(codes)] = codes                                        # the real codes themselves stay in
        return c

    th = np.tile(h["thumb"], (reps, 1, 1))[: args.big]
    th = th + rng.normal(0, 0.5, th.shape).astype(np.float32)
    th[: len(files)] = h["thumb"]
    b = _compare({"phash": tile(h["phash"]), "dhash": tile(h["dhash"]), "thumb": th})
    hash_est = args.big / part_a["frames_per_s"]
    part_b = {**b, "hash_s_extrapolated": round(hash_est, 1),
              "total_s_estimated": round(hash_est + b["compare_and_components_s"], 1),
              "codes": f"the {len(files)} real codes tiled to {args.big}, every bit flipped with p=0.3 per copy, "
                       "thumbnails + N(0, 0.5)"}
    print(f"B: {args.big} codes: all-pairs compare + verify + clusters {b['compare_and_components_s']:.1f} s "
          f"({b['ns_per_pair']} ns/pair), peak traced memory {b['peak_traced_mb']} MB "
          f"(an n^2 uint8 matrix would be {b['n2_uint8_matrix_mb']} MB); hashing {args.big} frames at the measured "
          f"rate ~{hash_est:.0f} s -> ~{part_b['total_s_estimated']:.0f} s in all", flush=True)
    result = {"schema": "fibrobench.leakage_scale/1", "part_a": part_a, "part_b": part_b,
              "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if args.json:
        from bench.provenance import collect
        from protocols.atomic import write_json

        result["provenance"] = collect(["python -m bench.scripts.leakage_scale", *(argv or sys.argv[1:])])
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
