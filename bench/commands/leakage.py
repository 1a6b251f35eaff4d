"""`fibrobench leakage`: audit a split (or an image- vs group-level pair of splits) for patient/frame leakage."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.funnel import nonneg_int, positive_int

NAME = "leakage"
HELP = "audit splits for patient overlap, near-duplicate frames and probe-measured leakage"
DESCRIPTION = (
    "Checks patient overlap between partitions (when the data has patient IDs), finds near-duplicate frames "
    "with sector-masked perceptual hashes (pHash + dHash; optional backbone embeddings), reports per partition "
    "pair how many evaluation images have a near-duplicate in training, and measures the accuracy of a 1-NN "
    "probe under the audited split versus a patient/cluster-level split. Without --splits it audits an "
    "image-level split (what the paper did) and compares it with a patient/cluster-level one. Copies are found "
    "under mirroring, rotation and crop/zoom too, each link labelled with its transform; copied frames under "
    "different labels are reported as label conflicts. Exit 0 clean (or findings without --fail-on-leak), "
    "1 leak or label conflicts with --fail-on-leak, 2 bad input."
)


def add_arguments(p):
    p.add_argument("--data", required=True, help="data root (ImageFolder, one folder per class, or folder with "
                                                    "manifest.csv) or manifest CSV; classes are the data's own labels")
    p.add_argument("--splits", help="RUN_DIR/splits.json to audit (default: build image- and group-level splits)")
    p.add_argument("--json", help="write the leakage.json here (image ids relative to --data)")
    p.add_argument("--embed", metavar="MODEL", help="also embed frames with this registered backbone (frozen)")
    p.add_argument("--embed-size", type=int, default=128, help="input size for --embed (default: 128)")
    p.add_argument("--weights", default="imagenet",
                   help="backbone weights for --embed: imagenet (local cache only), a path, or none (random init)")
    p.add_argument("--linear-probe", action="store_true", help="logistic-regression probe on --embed features")
    p.add_argument("--fail-on-leak", action="store_true", help="exit 1 when the verdict is leak or there are label conflicts")
    p.add_argument("--phash-threshold", type=int, help="max pHash Hamming distance to link two frames (default: swept)")
    p.add_argument("--dhash-threshold", type=int, help="max dHash Hamming distance to link two frames (default: swept)")
    p.add_argument("--cosine", type=float, help="also link frames whose embedding cosine >= this (needs --embed)")
    p.add_argument("--dup-tolerance", type=float, default=None,
                   help="fraction of eval images with a near-duplicate in training tolerated as clean (default 0.01)")
    p.add_argument("--no-probe", action="store_true", help="skip the 1-NN probe")
    p.add_argument("--no-thumbs", action="store_true", help="no thumbnails of example pairs in the JSON")
    p.add_argument("--seed", type=nonneg_int, default=0, help="split seed when no --splits (default: 0)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="holdout fraction when no --splits (default: 0.2)")
    p.add_argument("--folds", type=int, default=5, help="folds when no --splits (default: 5)")
    p.add_argument("--workers", type=positive_int, default=None, help="decode/hash threads (default: min(4, CPUs))")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device for --embed")


def _summary(res: dict, title: str) -> list[str]:
    nd = res["near_duplicates"]["pairs"]
    hold = nd[0]
    folds = nd[1:]
    lines = [f"{title}: {res['verdict'].upper()}  ({res['split']['level']}-level split, {res['data']['n_images']} images, "
             f"{res['cluster_stats']['n_clusters']} duplicate clusters, {res['cluster_stats']['n_multi']} with >1 frame)",
             f"  test images with a near-duplicate in trainval: {hold['eval_with_duplicate_in_train']}/"
             f"{hold['n_eval_images']} ({100 * hold['fraction']:.1f} %)"]
    if folds:
        mean = sum(f["fraction"] for f in folds) / len(folds)
        lines.append(f"  val images with a near-duplicate in train (mean over {len(folds)} folds): {100 * mean:.1f} %")
    po = res["patient_overlap"]
    if po["available"]:
        lines.append(f"  patients in more than one partition: {po['total_shared_patients']}")
    else:
        lines.append("  no patient IDs: near-duplicate clusters used as pseudo-patients")
    for key, name in (("probe", "1-NN probe"), ("linear_probe", "linear probe")):
        pr = res.get(key)
        if pr:
            lines.append(f"  {name} holdout accuracy: {pr['run_split']['level']}-level split "
                         f"{100 * pr['run_split']['holdout']:.1f} % vs {pr['group_split']['level']}-level "
                         f"{100 * pr['group_split']['holdout']:.1f} % (gap {100 * pr['gap_holdout']:+.1f} points)")
    for r in res["reasons"][:5]:
        lines.append(f"  - {r}")
    by = res["near_duplicates"].get("by_transform")
    if by:
        lines.append("  links by transform: " + ", ".join(f"{k} {v}" for k, v in by.items() if v))
    lc = res.get("label_conflicts")
    if lc and lc["n_pairs"]:
        lines.append(f"  LABEL CONFLICTS: {lc['n_pairs']} pair(s) of copied frames carry different labels "
                     f"({lc['n_images']} images), e.g. " + "; ".join(
                         f"{p['a_id']} ({p['a_label']}) ~ {p['b_id']} ({p['b_label']}) [{p['transform']}]"
                         for p in lc["pairs"][:3]))
    elif lc is not None:
        lines.append("  label conflicts: none")
    return lines


def _load_splits(path, df):
    from protocols.errors import BadInput
    from protocols.splits import check_matches_manifest, read_splits

    splits = read_splits(path)
    names = splits.get("class_names")
    if names is not None and list(names) != list(df.attrs.get("class_names") or []):
        # a run's own task (e.g. F0..F4 mapped onto two classes): audit the split with the labels it was made with
        want = splits.get("images") or {}
        df["label"] = [int((want.get(i) or {}).get("label", -1)) for i in df["image_id"]]
        df.attrs["class_names"] = list(names)
    try:
        check_matches_manifest(splits, df, path)
    except KeyError as exc:
        raise BadInput(path, "images", f"malformed entry ({exc})") from None
    return splits


def main(args) -> int:
    from bench.provenance import collect
    from protocols import leakage
    from protocols.atomic import write_json
    from protocols.data import load_manifest
    from protocols.errors import BadInput
    from protocols.splits import make_splits

    t0 = time.perf_counter()
    data = Path(args.data)
    if not data.exists():
        raise BadInput(data, None, "data path not found")
    if args.linear_probe and not args.embed:
        raise BadInput("<command line>", "--linear-probe", "needs --embed MODEL (the backbone whose features are probed)")
    if args.cosine is not None and not args.embed:
        raise BadInput("<command line>", "--cosine", "needs --embed MODEL")
    if args.dup_tolerance is not None and not 0 <= args.dup_tolerance < 1:
        raise BadInput("<command line>", "--dup-tolerance", f"must be in [0, 1), got {args.dup_tolerance}")
    df = load_manifest(data).reset_index(drop=True)
    if len(df) == 0:
        raise BadInput(data, "images", "no images found")
    thresholds = {"phash": args.phash_threshold, "dhash": args.dhash_threshold, "cosine": args.cosine,
                  "dup_tolerance": args.dup_tolerance}
    thresholds = {k: v for k, v in thresholds.items() if v is not None}

    features = info = None
    if args.embed:
        device = args.device
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        pretrained = None if args.weights in ("none", "random") else args.weights
        features, info = leakage.embed_features(df, args.embed, args.embed_size, pretrained, device=device)

    t_hash = time.perf_counter()
    hashes = leakage.compute_hashes(df, args.workers, progress=sys.stderr.isatty())
    t_link = time.perf_counter()
    links = leakage.compute_links(hashes, features, thresholds, args.workers)    # once, for both audits
    t_hash, t_link = t_link - t_hash, time.perf_counter() - t_link
    common = dict(features=features, thresholds=thresholds, probe=not args.no_probe, linear_probe=args.linear_probe,
                  hashes=hashes, feature_info=info, thumbs=not args.no_thumbs, workers=args.workers, links=links)
    if args.splits:
        splits = _load_splits(args.splits, df)
        res = leakage.audit_splits(df, splits, data, splits_path=args.splits, **common)
        lines = _summary(res, "leakage audit")
    else:
        image_split = make_splits(df, "image", args.test_fraction, args.folds, args.seed)
        res = leakage.audit_splits(df, image_split, data, **common)
        group_split = leakage.group_split_for(df, image_split, res["clusters"])
        other = leakage.audit_splits(df, group_split, data, **{**common, "probe": False, "linear_probe": False,
                                                                "thumbs": False})
        res["compared_split"] = {k: other[k] for k in ("verdict", "reasons", "split", "patient_overlap",
                                                       "near_duplicates")}
        lines = _summary(res, "image-level split (as in the paper)") + [
            f"{group_split['level']}-level split: {other['verdict'].upper()}; test images with a near-duplicate in "
            f"trainval: {other['near_duplicates']['pairs'][0]['eval_with_duplicate_in_train']}"]
    res["timing"]["hash_s"] = round(t_hash, 3)     # hashed and linked once here, before the audits
    res["timing"]["link_s"] = round(t_link, 3)
    res["timing"]["command_s"] = round(time.perf_counter() - t0, 3)
    seeds = {"split": res["split"]["seed"]}
    res["provenance"] = collect(getattr(args, "argv", None), device=args.device, seeds=seeds)
    if args.json:
        write_json(args.json, res)
        lines.append(f"wrote {args.json}")
    print("\n".join(lines))
    return 1 if args.fail_on_leak and leakage.gate_failures(res) else 0
