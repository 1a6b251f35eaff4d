"""Project the wall time of a protocol's full training on one device from a measured latency.json.

Uses each model's measured training-step images/s (`models[m].train.by_precision[p].images_per_s`) and
the protocol's own numbers: images, holdout fraction, folds, epochs. Evaluation passes (validation every
epoch, test once) are added at the measured inference images/s of the largest measured batch.

    python -m bench.scripts.project_walltime bench/results/latency_h100_torch2.11.json \
        --protocol protocols/afif2025/protocol.yaml --images 6323 --precision bf16
"""
from __future__ import annotations

import argparse
import json
import sys


def project(latency: dict, models: list[str], n_images: int, test_fraction: float, n_folds: int, epochs: int,
            precision: str) -> dict:
    """Hours per model and in total; pure arithmetic on the measured rates."""
    trainval = round(n_images * (1 - test_fraction))
    train_per_fold = trainval * (n_folds - 1) / n_folds
    val_per_fold = trainval / n_folds
    test = n_images - trainval
    rows, total = {}, 0.0
    for m in models:
        entry = latency["models"].get(m)
        if not entry or "train" not in entry:
            rows[m] = {"error": "not measured"}
            continue
        train_ips = entry["train"]["by_precision"][precision]["images_per_s"]
        batches = entry[precision]["batch"]
        infer_ips = batches[max(batches, key=int)]["images_per_s"]
        train_s = n_folds * epochs * train_per_fold / train_ips
        eval_s = n_folds * (epochs * val_per_fold + val_per_fold + test) / infer_ips
        hours = (train_s + eval_s) / 3600
        rows[m] = {"train_images_per_s": train_ips, "infer_images_per_s": infer_ips, "hours": hours}
        total += hours
    return {"precision": precision, "n_images": n_images, "trainval": trainval, "folds": n_folds, "epochs": epochs,
            "device": latency.get("device", {}).get("name"), "models": rows, "total_hours": total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("latency_json")
    ap.add_argument("--protocol", default=None, help="protocol YAML (epochs, folds, test fraction, models)")
    ap.add_argument("--images", type=int, default=6323, help="dataset size (public dataset: 6323)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    args = ap.parse_args(argv)
    lat = json.load(open(args.latency_json))
    if args.protocol:
        from protocols.config import load_protocol
        p = load_protocol(args.protocol)
        models, tf, k, ep = list(p.models), p.split.test_fraction, p.split.n_folds, p.train.epochs
    else:
        models, tf, k, ep = list(lat["models"]), 0.2, 5, 100
    res = project(lat, models, args.images, tf, k, ep, args.precision)
    for m, r in res["models"].items():
        if "hours" in r:
            print(f"{m:20s} train {r['train_images_per_s']:8.0f} img/s  infer {r['infer_images_per_s']:8.0f} img/s"
                  f"  {r['hours']:5.2f} h")
        else:
            print(f"{m:20s} {r['error']}")
    print(f"total on one {res['device']} ({args.precision}, {k} folds x {ep} epochs): {res['total_hours']:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
