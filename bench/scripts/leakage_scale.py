"""Scale benchmark of the near-duplicate detector: 6,323 real 800x600 frames end to end, 100,000 codes compared.

Part A decodes, masks and hashes FRAMES image files (default 6,323, the public dataset's size; synthetic
800x600 frames are generated when --data is not given) and links them (plain and transform-variant codes,
protocols/neardup.py). Part B compares all pairs of
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


def _compare(codes, workers: int) -> dict:
    """The whole linking step (plain + transform-variant candidates, verification, labels) and the clusters."""
    from protocols import neardup, transforms

    tracemalloc.start()
    c = time.process_time()
    t = time.perf_counter()
    links = neardup.near_duplicate_pairs(codes, workers=workers)
    t_link = time.perf_counter() - t
    lab = hashing.components(len(codes["phash"]), links["i"], links["j"])
    t_all = time.perf_counter() - t
    cpu = time.process_time() - c
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n = len(codes["phash"])
    # code comparisons: the plain codes i < j, each mirror i < j, each rotation and zoom window both orders
    sym = sum(v[2] for v in transforms.VARIANTS)
    compared = n * (n - 1) // 2 * (1 + sym) + n * (n - 1) * (len(transforms.VARIANTS) - sym)
    by = np.bincount(links["transform"].astype(np.int64), minlength=len(neardup.FAMILIES))
    return {"n": n, "code_pairs_compared": compared, "links": int(len(links["i"])),
            "links_by_transform": {f: int(k) for f, k in zip(neardup.FAMILIES, by)},
            "clusters": int(lab.max() + 1), "link_s": round(t_link, 3), "compare_and_components_s": round(t_all, 3),
            "compare_and_components_cpu_s": round(cpu, 3), "link_workers": workers,
            "ns_per_code_pair": round(1e9 * t_link / max(1, compared), 3), "peak_traced_mb": round(peak / 2**20, 1),
            "n2_uint8_matrix_mb": round(n * n / 2**20, 1)}


def _part_b(args, h, files, part_a) -> dict:
    """All-pairs linking of args.big codes tiled from part A's real ones (hashing extrapolated, said so)."""
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
    big = {"phash": tile(h["phash"]), "dhash": tile(h["dhash"]), "thumb": th,
           "vphash": np.stack([tile(h["vphash"][:, v]) for v in range(h["vphash"].shape[1])], 1),
           "vdhash": np.stack([tile(h["vdhash"][:, v]) for v in range(h["vdhash"].shape[1])], 1),
           "sector": np.tile(h["sector"], (reps, 1, 1))[: args.big], "mask": np.tile(h["mask"], (reps, 1, 1))[: args.big],
           "digest": np.arange(args.big, dtype=np.uint64)}
    del th
    b = _compare(big, args.workers)
    hash_est = args.big / part_a["frames_per_s"]
    part_b = {**b, "hash_s_extrapolated": round(hash_est, 1),
              "total_s_estimated": round(hash_est + b["compare_and_components_s"], 1),
              "codes": f"the {len(files)} real codes tiled to {args.big}, every bit of the plain and variant "
                       "codes flipped with p=0.3 per copy, thumbnails + N(0, 0.5), sectors and masks repeated"}
    print(f"B: {args.big} codes: all-pairs compare + verify + clusters {b['compare_and_components_s']:.1f} s "
          f"({b['ns_per_code_pair']} ns per code pair), peak traced memory {b['peak_traced_mb']} MB "
          f"(an n^2 uint8 matrix would be {b['n2_uint8_matrix_mb']} MB); hashing {args.big} frames at the measured "
          f"rate ~{hash_est:.0f} s -> ~{part_b['total_s_estimated']:.0f} s in all", flush=True)
    return part_b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="folder of frames (default: generate synthetic 800x600 frames)")
    ap.add_argument("--frames", type=int, default=6323)
    ap.add_argument("--big", type=int, default=100_000, help="codes for part B (0: skip part B)")
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
            # effect size 1.0, as the recorded results were measured (the generator's default is now higher)
            generate_dataset(root, n_patients=patients, seed=7, size=(800, 600), effect_size=1.0,
                             workers=args.workers, progress=True)
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
    a = _compare(h, args.workers)
    part_a = {"frames": len(files), "frame_size": list(size), "workers": args.workers,
              "decode_mask_hash_s": round(t_hash, 2),
              "decode_mask_hash_cpu_s": round(c_hash, 2), "load_average_1min": round(__import__("os").getloadavg()[0], 2), "frames_per_s": round(len(files) / t_hash, 1), **a,
              "total_s": round(t_hash + a["compare_and_components_s"], 2)}
    print(f"A: {len(files)} frames {size[0]}x{size[1]}: decode+mask+hash {t_hash:.1f} s "
          f"({part_a['frames_per_s']} frames/s, {args.workers} threads; {c_hash:.1f} CPU-s; load avg "
          f"{part_a['load_average_1min']}), all-pairs compare + clusters "
          f"{a['compare_and_components_s']:.2f} s ({a['links']} links) -> total {part_a['total_s']:.1f} s", flush=True)

    part_b = None
    if args.big > 0:                                   # --big 0: part A only
        part_b = _part_b(args, h, files, part_a)
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
