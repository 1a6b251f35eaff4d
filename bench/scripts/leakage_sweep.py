"""Threshold sweep for the near-duplicate detector: picks protocols.hashing.DEFAULT_THRESHOLDS from data.

On a synthetic dataset (patient IDs known to the sweep, never to the detector) it hashes every frame twice:
as written ("clean") and after an independent random perturbation of every frame ("perturbed": JPEG
re-compression at quality 60-90, brightness x U(0.9, 1.1), shift of up to 2 % of the frame in x and y).
For every (pHash, dHash, NCC) threshold triple it links frames (hash distances under both thresholds and
thumbnail correlation at least NCC), takes connected components as duplicate clusters and scores them
against the patients by pair counting (precision, recall of same-patient pairs). Selected: the triple that
meets precision >= 0.95 and recall >= 0.90 in both conditions with the largest worst-case F1 (ties: smaller
thresholds); then confirmed on a second dataset (next seed). At the selected triple the whole detector
(plain links plus the mirrored/rotated/cropped variant links of protocols/neardup.py) is scored too
("with_transforms"); the confirmation's meets_target requires it to meet the target as well.

    python -m bench.scripts.leakage_sweep [--patients 900] [--size 800x600] [--confirm-patients 900]
                                  [--out bench/results/leakage_sweep.json]
Writes schema "fibrobench.leakage_sweep/1" (documented in docs/leakage.md).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from protocols import hashing, pairsearch
from protocols.leakage import pair_agreement

SCHEMA = "fibrobench.leakage_sweep/1"
TARGET = {"precision": 0.95, "recall": 0.90}
PHASH_GRID = list(range(6, 19, 2))
DHASH_GRID = list(range(8, 25, 2))
NCC_GRID = [round(0.60 + 0.02 * k, 2) for k in range(19)]          # 0.60 .. 0.96


def perturb(im, rng: np.random.Generator):
    """JPEG re-compression (q 60-90), brightness x U(0.9, 1.1), shift up to 2 % (zero fill); returns a PIL image."""
    from PIL import Image

    a = np.asarray(im.convert("L"), dtype=np.float32)
    a = np.clip(a * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    h, w = a.shape
    dy, dx = (int(v) for v in rng.integers(-int(0.02 * h), int(0.02 * h) + 1, 2))
    out = np.zeros_like(a)
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = a[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "JPEG", quality=int(rng.integers(60, 91)))
    buf.seek(0)
    return Image.open(buf)


def _hash_perturbed(paths, seeds):
    from PIL import Image

    grays = []
    for p, s in zip(paths, seeds):
        with Image.open(p) as im:
            grays.append(hashing.shrink(perturb(im, np.random.default_rng(s))))
    return hashing.hash_arrays(grays)


def hash_perturbed(paths, seed: int, workers: int = 2, chunk: int = 64) -> dict:
    seeds = np.random.default_rng(seed).integers(0, 2**31, len(paths))
    parts = [(paths[i:i + chunk], seeds[i:i + chunk]) for i in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(workers) as ex:
        res = list(ex.map(lambda a: _hash_perturbed(*a), parts))
    return {k: np.concatenate([r[k] for r in res]) for k in hashing.KEYS}


def score_grid(hashes: dict, patients: np.ndarray, phash_grid=PHASH_GRID, dhash_grid=DHASH_GRID,
               ncc_grid=NCC_GRID) -> dict:
    """{(tp, td, tn): pair_agreement + counts} over the grid, from one search at the loosest thresholds."""
    # every candidate at the loosest hash thresholds, with its verification correlation (min_r -inf keeps all)
    i, j, _, dp, dd, r = pairsearch.search(hashes["phash"], hashes["dhash"], max(phash_grid), max(dhash_grid),
                                           thumbs=hashes["thumb"], min_r=-np.inf, workers=2)
    n = len(patients)
    out = {}
    for tp in phash_grid:
        for td in dhash_grid:
            cand = (dp <= tp) & (dd <= td)
            for tn in ncc_grid:
                keep = cand & (r >= tn)
                lab = hashing.components(n, i[keep], j[keep])
                res = pair_agreement(patients, lab)
                res.update({"n_candidates": int(cand.sum()), "n_links": int(keep.sum()), "n_clusters": int(lab.max() + 1)})
                out[(tp, td, tn)] = res
    return out


def score_detector(hashes: dict, patients: np.ndarray, key, workers: int = 2) -> dict:
    """The whole detector (plain + transform-variant links, protocols/neardup.py) at one threshold triple."""
    from protocols import neardup

    links = neardup.near_duplicate_pairs(hashes, {"phash": key[0], "dhash": key[1], "ncc": key[2]}, workers=workers)
    lab = hashing.components(len(patients), links["i"], links["j"])
    res = pair_agreement(patients, lab)
    by = np.bincount(links["transform"].astype(np.int64), minlength=len(neardup.FAMILIES))
    res.update({"n_links": int(len(links["i"])), "n_clusters": int(lab.max() + 1) if len(lab) else 0,
                "links_by_transform": {f: int(c) for f, c in zip(neardup.FAMILIES, by)}})
    return res


def _brief(m: dict) -> dict:
    """A grid cell in the committed JSON: rounded precision/recall/F1 and the link count."""
    return {"p": round(m["precision"], 4), "r": round(m["recall"], 4), "f1": round(m["f1"], 4), "links": m["n_links"]}


def select(grids: dict) -> tuple[dict, bool]:
    """Best (tp, td) by worst-case F1 over conditions among those meeting TARGET in every condition."""
    keys = list(next(iter(grids.values())))

    def ok(k):
        return all(g[k]["precision"] >= TARGET["precision"] and g[k]["recall"] >= TARGET["recall"]
                   for g in grids.values())

    def worst_f1(k):
        return min(g[k]["f1"] for g in grids.values())

    feasible = [k for k in keys if ok(k)]
    pool = feasible or keys
    best = max(pool, key=lambda k: (round(worst_f1(k), 6), -(k[0] + k[1]), k[2]))
    return {"phash": int(best[0]), "dhash": int(best[1]), "ncc": float(best[2]), "worst_f1": worst_f1(best)}, \
        bool(feasible)


def dataset(path: Path, patients: int, seed: int, size, workers: int) -> pd.DataFrame:
    """The synthetic dataset at path (generated if absent) as a frame with absolute paths and patient ids."""
    from protocols.synth import generate_dataset

    if not (path / "manifest.csv").exists():
        # effect size 1.0, as the recorded results were measured (the generator's default is now higher)
        generate_dataset(path, n_patients=patients, seed=seed, size=size, effect_size=1.0, workers=workers,
                         progress=True)
    df = pd.read_csv(path / "manifest.csv")
    truth = path / "patients_truth.csv"
    if "patient_id" not in df.columns and truth.exists():
        df = df.merge(pd.read_csv(truth), on="path")
    df["abs"] = [str(path / p) for p in df["path"]]
    return df


def evaluate(df: pd.DataFrame, seed: int, workers: int, grid=(PHASH_GRID, DHASH_GRID, NCC_GRID)) -> tuple:
    paths = df["abs"].tolist()
    pid = df["patient_id"].astype(str).to_numpy()
    t = time.perf_counter()
    clean = hashing.hash_files(paths, workers=workers)
    t_clean = time.perf_counter() - t
    pert = hash_perturbed(paths, seed=seed + 1000, workers=workers)
    timing = {"hash_clean_s": round(t_clean, 2), "hash_perturbed_s": round(time.perf_counter() - t - t_clean, 2)}
    t = time.perf_counter()
    grids = {"clean": score_grid(clean, pid, *grid), "perturbed": score_grid(pert, pid, *grid)}
    timing["grid_s"] = round(time.perf_counter() - t, 2)
    return grids, timing, {"clean": clean, "perturbed": pert}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=None, help="patients in the sweep dataset (default: synth default)")
    ap.add_argument("--confirm-patients", type=int, default=None, help="patients in the confirmation dataset")
    ap.add_argument("--size", default="800x600")
    ap.add_argument("--seed", type=int, default=0, help="sweep dataset seed (confirmation uses seed + 1)")
    ap.add_argument("--workdir", default="/tmp/fibrobench-leakage-sweep", help="where the datasets are generated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "leakage_sweep.json"))
    args = ap.parse_args(argv)

    from bench.provenance import collect
    from protocols.atomic import write_json
    from protocols.synth import DEFAULT_PATIENTS

    size = tuple(int(v) for v in args.size.lower().split("x"))
    n = args.patients or DEFAULT_PATIENTS
    nc = args.confirm_patients or n
    work = Path(args.workdir)
    t0 = time.perf_counter()
    df = dataset(work / f"sweep-p{n}-s{args.seed}-{args.size}", n, args.seed, size, args.workers)
    grids, timing, hashes = evaluate(df, args.seed, args.workers)
    sel, feasible = select(grids)
    key = (sel["phash"], sel["dhash"], sel["ncc"])
    pid = df["patient_id"].astype(str).to_numpy()
    t = time.perf_counter()
    full = {c: score_detector(h, pid, key, args.workers) for c, h in hashes.items()}
    timing["detector_s"] = round(time.perf_counter() - t, 2)
    del hashes
    print(f"sweep on {len(df)} frames: selected pHash<={key[0]} dHash<={key[1]} NCC>={key[2]} "
          f"(meets target: {feasible}); " + "; ".join(
              f"{c}: P={g[key]['precision']:.3f} R={g[key]['recall']:.3f}" for c, g in grids.items()), flush=True)
    dfc = dataset(work / f"confirm-p{nc}-s{args.seed + 1}-{args.size}", nc, args.seed + 1, size, args.workers)
    cgrids, ctiming, chashes = evaluate(dfc, args.seed + 1, args.workers, ([key[0]], [key[1]], [key[2]]))
    confirm = {c: g[key] for c, g in cgrids.items()}
    cpid = dfc["patient_id"].astype(str).to_numpy()
    cfull = {c: score_detector(h, cpid, key, args.workers) for c, h in chashes.items()}
    del chashes
    confirm_ok = all(v["precision"] >= TARGET["precision"] and v["recall"] >= TARGET["recall"]
                     for v in [*confirm.values(), *full.values(), *cfull.values()])
    print("with transform variants: " + "; ".join(
        f"{name} {c}: P={v['precision']:.3f} R={v['recall']:.3f}" for name, d in (("sweep", full), ("confirm", cfull))
        for c, v in d.items()))
    print("confirmation on %d frames: " % len(dfc) + "; ".join(
        f"{c}: P={v['precision']:.3f} R={v['recall']:.3f}" for c, v in confirm.items()))
    result = {
        "schema": SCHEMA,
        "rule": "link when pHash distance <= phash AND dHash distance <= dhash AND 16x16 sector-thumbnail NCC "
                "(max over +-1 cell shifts) >= ncc; clusters = connected components",
        "target": TARGET,
        "perturbation": "per frame: brightness x U(0.9,1.1), shift U{-2%..2%} of H in x and y (zero fill), "
                        "JPEG quality U{60..90}",
        "sweep_data": {"generator": "protocols.synth.generate_dataset", "n_patients": n, "seed": args.seed, "effect_size": 1.0,
                       "size": list(size), "n_images": len(df)},
        "confirm_data": {"n_patients": nc, "seed": args.seed + 1, "size": list(size), "n_images": len(dfc)},
        "grid": [{"phash": k[0], "dhash": k[1], "ncc": k[2], **{c: _brief(grids[c][k]) for c in grids}}
                 for k in grids["clean"]],
        "selected": {**sel, "meets_target": feasible, **{c: grids[c][key] for c in grids},
                     "with_transforms": full},
        "confirmation": {"meets_target": confirm_ok, **confirm, "with_transforms": cfull},
        "timing": {"sweep": timing, "confirm": ctiming, "total_s": round(time.perf_counter() - t0, 1)},
        "provenance": collect(["python -m bench.scripts.leakage_sweep", *(argv if argv is not None else sys.argv[1:])]),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
