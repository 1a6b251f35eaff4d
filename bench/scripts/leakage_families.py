"""Side-by-side benchmark: fibrobench's near-duplicate detector vs imagededup's PHash, DHash, WHash on planted copies.

A synthetic dataset (default: `fibrobench synth` defaults, 900 patients, ~6,300 frames of 800 x 600, seed 0)
gets PER_FAMILY planted copies of each transform family of protocols/plant.py (identical, photometric,
mirrored, rotated, cropped), each copy of a different original frame and carrying the original's patient and
label, written next to the originals (originals are hard links). Every method then runs in its own subprocess
on the whole folder (decode + hash + all-pairs search + clusters, 2 workers); scored against the truth:
  recall[family]   planted copies of that family that end in their original's duplicate cluster
  direct_link_recall[family]  copies linked to their original directly (not through a chain of links)
  pair precision / recall   pair counting of the clusters against patient IDs (same-patient pairs)
  score            pair precision x mean family recall (the issue's "precision x recall")
  time_s, cpu_s, max_rss_mb  wall time, CPU seconds (process + its workers) and peak resident memory (the
                             largest single process) of the method's run, including the interpreter start
imagededup's CNN method needs downloaded MobileNet weights (torchvision), which this benchmark never fetches:
it is listed as not run. imagededup is a benchmark-only extra (pip install fibrobench[bench]).

    python -m bench.scripts.leakage_families [--data DIR] [--per-family 60] [--methods fibrobench,phash,dhash,whash]
                                     [--threshold 10] [--json bench/results/leakage_families.json]
Writes schema "fibrobench.leakage_families/1" (docs/leakage.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA = "fibrobench.leakage_families/1"
METHODS = ("fibrobench", "phash", "dhash", "whash")


def plant_dataset(src: Path, out: Path, per_family: int, seed: int) -> pd.DataFrame:
    """Hard-link src's frames into out and add planted copies; manifest.csv with family/original columns."""
    from PIL import Image

    from protocols.plant import FAMILIES, plant_copy

    if (out / "manifest.csv").exists():
        return pd.read_csv(out / "manifest.csv")
    df = pd.read_csv(src / "manifest.csv")
    if "patient_id" not in df.columns:
        truth = src / "patients_truth.csv"
        df = df.merge(pd.read_csv(truth), on="path")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(df), size=per_family * len(FAMILIES), replace=False)
    tmp = out.parent / f".{out.name}.tmp"
    for rel in df["path"]:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (tmp / rel).exists():
            os.link(src / rel, tmp / rel)
    rows = [dict(r, family="", original="") for r in df[["path", "label", "patient_id"]].to_dict("records")]
    k = 0
    for fam in FAMILIES:
        for c in range(per_family):
            o = df.iloc[int(picks[k])]
            k += 1
            with Image.open(src / o["path"]) as im:
                a = np.asarray(im.convert("L"))
            copy, _ = plant_copy(a, fam, rng, c)
            rel = f"{o['label']}/copy_{fam}_{c:04d}.png"
            Image.fromarray(copy).save(tmp / rel, compress_level=1)
            rows.append({"path": rel, "label": o["label"], "patient_id": o["patient_id"], "family": fam,
                         "original": o["path"]})
    pd.DataFrame(rows).to_csv(tmp / "manifest.csv", index=False)
    tmp.rename(out)
    return pd.read_csv(out / "manifest.csv")


# ---------------------------------------------------------------- one method (runs in a subprocess)

def _run_fibrobench(root: Path, paths: list[str], workers: int) -> list:
    from protocols import hashing, neardup

    codes = hashing.hash_files([root / p for p in paths], workers=workers)
    links = neardup.near_duplicate_pairs(codes, workers=workers)
    return np.stack([links["i"], links["j"]], 1).tolist()


def _run_imagededup(method: str, root: Path, paths: list[str], workers: int, threshold: int) -> list:
    import imagededup.methods as m

    hasher = {"phash": m.PHash, "dhash": m.DHash, "whash": m.WHash}[method](verbose=False)
    enc = hasher.encode_images(image_dir=str(root), recursive=True, num_enc_workers=workers)
    dups = hasher.find_duplicates(encoding_map=enc, max_distance_threshold=threshold, num_dist_workers=workers)
    row = {p: k for k, p in enumerate(paths)}
    return sorted({(min(row[a], row[b]), max(row[a], row[b])) for a, bs in dups.items() for b in bs
                   if a in row and b in row})


def run_method(method: str, root: Path, workers: int, threshold: int, out: Path) -> None:
    paths = pd.read_csv(root / "manifest.csv")["path"].tolist()
    t = time.perf_counter()
    pairs = _run_fibrobench(root, paths, workers) if method == "fibrobench" else \
        _run_imagededup(method, root, paths, workers, threshold)
    wall = time.perf_counter() - t
    ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    out.write_text(json.dumps({"pairs": [list(map(int, p)) for p in pairs], "time_s": round(wall, 2), "cpu_s": round(cpu, 1),
                               "max_rss_mb": round(rss / 1024, 1)}))


# ---------------------------------------------------------------- scoring

def score(df: pd.DataFrame, pairs) -> dict:
    """Per-family recall (copy in its original's cluster), pair agreement with patient IDs, their product."""
    from protocols.hashing import components
    from protocols.leakage import pair_agreement

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lab = components(len(df), pairs[:, 0], pairs[:, 1])
    row = {p: k for k, p in enumerate(df["path"])}
    fam = df["family"].fillna("").astype(str).to_numpy()
    linked = set(map(tuple, np.sort(pairs, axis=1).tolist()))
    recall, direct = {}, {}
    for f in [f for f in dict.fromkeys(fam) if f]:
        idx = np.flatnonzero(fam == f)
        orig = np.array([row[p] for p in df["original"].iloc[idx]])
        recall[f] = round(float(np.mean(lab[idx] == lab[orig])), 4)
        direct[f] = round(float(np.mean([(min(a, b), max(a, b)) in linked for a, b in zip(idx, orig)])), 4)
    agree = pair_agreement(df["patient_id"].astype(str).to_numpy(), lab)
    mean_r = float(np.mean(list(recall.values()))) if recall else float("nan")
    sizes = np.bincount(lab)
    return {"recall": recall, "direct_link_recall": direct, "mean_family_recall": round(mean_r, 4),
            "largest_cluster": int(sizes.max(initial=0)),
            "pair_precision": round(agree["precision"], 4), "pair_recall": round(agree["recall"], 4),
            "predicted_pairs": agree["predicted_pairs"], "n_links": int(len(pairs)),
            "score": round(agree["precision"] * mean_r, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="synthetic dataset with patient IDs (default: generate the synth defaults)")
    ap.add_argument("--patients", type=int, default=None, help="patients when generating (default: synth default)")
    ap.add_argument("--effect-size", type=float, default=None,
                    help="stage signal strength when generating (default: the generator's default)")
    ap.add_argument("--per-family", type=int, default=60)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threshold", type=int, default=10, help="imagededup max_distance_threshold (its default: 10)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/fibrobench-leakage-families")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parents[1] / "results" / "leakage_families.json"))
    ap.add_argument("--rescore", action="store_true",
                    help="re-score the pairs files a previous run left in --workdir (no method is re-run)")
    ap.add_argument("--run-method", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_method:
        run_method(args.run_method, Path(args.root), args.workers, args.threshold, Path(args.out))
        return 0

    from bench.provenance import collect
    from protocols.atomic import write_json
    from protocols.synth import DEFAULT_PATIENTS, generate_dataset
    from protocols.synth_render import DEFAULT_EFFECT_SIZE

    work = Path(args.workdir)
    n = args.patients or DEFAULT_PATIENTS
    effect = DEFAULT_EFFECT_SIZE if args.effect_size is None else args.effect_size
    src = Path(args.data) if args.data else work / f"synth-p{n}-s{args.seed}-e{effect:g}"
    if not args.data and not (src / "manifest.csv").exists():
        generate_dataset(src, n_patients=n, seed=args.seed, size=(800, 600), effect_size=effect, workers=args.workers,
                         progress=True)
    root = work / f"planted-{src.name}-k{args.per_family}"
    df = plant_dataset(src, root, args.per_family, args.seed + 100)
    results = {}
    for method in args.methods.split(","):
        out = work / f"pairs-{method}.json"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        module = __spec__.name if __spec__ else "bench.scripts.leakage_families"
        cmd = [sys.executable, "-m", module, "--run-method", method, "--root", str(root), "--out", str(out),
               "--workers", str(args.workers), "--threshold", str(args.threshold)]
        load0 = os.getloadavg()[0]
        if args.rescore:
            r = json.loads(out.read_text())
            load0 = r.get("load_average_1min_before", float("nan"))
        else:
            rc = subprocess.run(cmd, env=env).returncode
            if rc != 0:
                results[method] = {"error": f"exit {rc}"}
                continue
            r = json.loads(out.read_text())
            r["load_average_1min_before"] = round(load0, 2)
            out.write_text(json.dumps(r))
        results[method] = {**score(df, r["pairs"]), "time_s": r["time_s"], "cpu_s": r.get("cpu_s"),
                           "max_rss_mb": r["max_rss_mb"], "load_average_1min_before": load0}
        print(f"{method:10s} " + json.dumps({k: v for k, v in results[method].items()}), flush=True)
    results["cnn"] = {"not_run": "imagededup's CNN needs MobileNet weights downloaded by torchvision; this "
                                 "benchmark never downloads weights"}
    import imagededup

    write_json(args.json, {
        "schema": SCHEMA, "data": {"source": str(src), "n_images": len(df), "per_family": args.per_family,
                                   "effect_size": (json.loads((src / "synth.json").read_text())["params"]["effect_size"]
                                                   if (src / "synth.json").is_file() else None),
                                   "n_patients": int(df["patient_id"].nunique()),
                                   "families": "protocols/plant.py FAMILIES"},
        "imagededup": {"version": imagededup.__version__, "max_distance_threshold": args.threshold},
        "workers": args.workers, "cpu_count": os.cpu_count(), "results": results,
        "provenance": collect(["python -m bench.scripts.leakage_families", *(argv if argv is not None else sys.argv[1:])]),
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
