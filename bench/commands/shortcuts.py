"""`fibrobench shortcuts RUN_DIR`: does each model read the tissue, or the frame around it? -> RUN_DIR/shortcuts.json.

For every model, on the holdout images, with the fold models that make its ensemble: region tests (sector,
outside, text replaced), Grad-CAM mass inside the sector on a bounded sample with a gallery, metadata tests when
the manifest has site/device, and a verdict (clean | suspect | shortcut). Methods: docs/shortcuts.md.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

NAME = "shortcuts"
HELP = "shortcut audit of a run: region tests, Grad-CAM sector mass, site/device probes, a verdict per model"
DESCRIPTION = (HELP + ". Writes RUN_DIR/shortcuts.json (or --json OUT), which `fibrobench report` shows. "
               "Exit 0 (also when a shortcut is found), 2 bad input.")
SCHEMA = "fibrobench.shortcuts/1"
DEFAULT_CONDITIONS = ("sector/mean", "sector/noise", "outside/mean", "text/mean")   # <= 4 passes per fold model
FULL_CONDITIONS = DEFAULT_CONDITIONS + ("outside/noise", "text/noise")
META_COLUMNS = ("site", "device")
GALLERY_PER_CELL = 2     # images per class x {correct, wrong} in the report's gallery


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run directory")
    p.add_argument("--json", help="write here instead of RUN_DIR/shortcuts.json")
    p.add_argument("--models", help="comma-separated subset of the run's models (default: all with an ensemble)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--gradcam", type=int, default=64,
                   help="holdout images per model for Grad-CAM (default 64; 0 = skip, -1 = all)")
    p.add_argument("--full", action="store_true",
                   help="also replace outside and text by matched noise (6 passes per fold model instead of 4)")
    p.add_argument("--n-boot", type=int, default=2000, help="cluster-bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed for noise, Grad-CAM sample and bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=128, help="inference batch size (default 128)")


_log = logging.getLogger("fibrobench.shortcuts").info   # shown as "fibrobench shortcuts: ..."


def _fold_models(run_dir: Path, p, name: str, folds, device):
    """The fold models of `name` that make its ensemble, with their selected weights (checkpoint.pt)."""
    import torch

    from bench.runner import build_model
    from protocols.errors import BadInput
    from protocols.runfiles import job_dir

    nets = []
    for k in folds:
        ck = job_dir(run_dir, name, k) / "checkpoint.pt"
        if not (ck.parent / "DONE").exists() or not ck.is_file():
            raise BadInput(ck, None, f"fold {k} of {name} has no checkpoint (incomplete job)")
        net, _ = build_model(p, name)
        state = torch.load(ck, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        nets.append(net.eval().to(device))
    return nets


def _sample(labels, n: int, seed: int) -> np.ndarray:
    """Up to n holdout indices, as equal per class as the classes allow, in a seeded random order."""
    labels = np.asarray(labels)
    if n < 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    pools = {k: list(rng.permutation(np.flatnonzero(labels == k))) for k in np.unique(labels)}
    out = []
    while len(out) < n and any(pools.values()):
        for k in sorted(pools):
            if pools[k] and len(out) < n:
                out.append(pools[k].pop())
    return np.sort(np.array(out, dtype=np.int64))


def _gallery(idx, labels, pred, cams, images, class_names) -> list[dict]:
    from protocols.shortcuts import heatmap_png

    out = []
    for k, cname in enumerate(class_names):
        for correct in (True, False):
            sel = [j for j in range(len(idx)) if labels[idx[j]] == k and (pred[idx[j]] == k) == correct]
            for j in sel[:GALLERY_PER_CELL]:
                out.append({"class": cname, "correct": correct, "predicted": class_names[int(pred[idx[j]])],
                            "png": heatmap_png(images[idx[j]].numpy(), cams[j])})
    return out


def audit(run_dir, models=None, device="auto", gradcam: int = 64, full: bool = False, n_boot: int = 2000,
          seed: int = 0, batch_size: int = 128, argv=None) -> dict:
    """The shortcuts.json document of RUN_DIR (nothing written)."""
    import torch

    from bench.provenance import collect
    from bench.runner import load_data, read_run
    from protocols import shortcuts as SC
    from protocols.data import data_fingerprint
    from protocols.errors import BadInput
    from protocols.shortcuts_regions import fill_stats, mean_image, region_masks, replace
    from protocols.splits import read_splits
    from protocols.device import resolve_device
    from protocols.trainer import Runtime
    from reports import shortcuts_stats as ST
    from reports import stats as S
    from reports.rundir import load_run

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run, p = read_run(run_dir)
    splits = read_splits(run_dir / "splits.json")
    if splits["sha256"] != run.get("splits_sha256"):
        raise BadInput(run_dir / "splits.json", "sha256", "differs from run.json splits_sha256")
    loaded = load_run(run_dir)
    names = [m for m, mr in loaded.models.items() if mr.ensemble is not None]
    if models:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise BadInput("--models", "models", f"{', '.join(unknown)} not in this run's completed models "
                           f"({', '.join(names) or 'none'})")
        names = list(models)
    if not names:
        raise BadInput(run_dir, "ensemble", "no model of this run has a completed holdout ensemble")
    dev = resolve_device(device)
    # inference only: the protocol's autocast (bf16 on CUDA), and channels_last everywhere (~20 % faster on CPU too)
    rt = Runtime(dev, Runtime.from_protocol(p, dev).amp_dtype, True)
    size = p.data.input_size
    df, images = load_data(run["data"]["source"], size, run["options"].get("cache_dir"), task=p.task)
    if data_fingerprint(df) != run["data"].get("fingerprint"):
        raise BadInput(run["data"]["source"], "data.fingerprint", "the data changed since this run was trained; "
                       "the audit needs the images the run saw")
    row = {i: k for k, i in enumerate(df["image_id"])}
    test_ids = [str(i) for i in splits["holdout"]["test"]]
    missing = [i for i in test_ids + list(splits["holdout"]["trainval"]) if i not in row]
    if missing:
        raise BadInput(run["data"]["source"], "images", f"{len(missing)} image(s) of splits.json are not in the "
                       f"data any more, e.g. {missing[0]!r}")
    t_rows = np.array([row[i] for i in test_ids])
    labels = df["label"].to_numpy()[t_rows]
    groups = loaded.groups
    codes = S.group_codes([groups.get(i) for i in test_ids])
    weights = ST.boot(codes, n_boot, seed)
    class_names = loaded.class_names
    timing = {}

    t = time.perf_counter()
    masks = region_masks(df["path"].to_numpy()[t_rows], size)
    tv_rows = np.array([row[i] for i in splits["holdout"]["trainval"]])
    stat_rows = np.random.default_rng(seed).permutation(tv_rows)[:128]
    stats = fill_stats(images[stat_rows].numpy(), region_masks(df["path"].to_numpy()[stat_rows], size))
    stats["mean_image"] = mean_image(images, tv_rows)                      # all train-val images, in chunks
    conditions = [c for c in (FULL_CONDITIONS if full else DEFAULT_CONDITIONS)
                  if masks[c.split("/")[0]].any()]
    test_u8 = images[t_rows].numpy()
    stacked = torch.from_numpy(np.concatenate(
        [replace(test_u8, masks[c.split("/")[0]], c.split("/")[1], stats, c.split("/")[0], seed + n)
         for n, c in enumerate(conditions)])) if conditions else None
    timing["masks_and_replacement_s"] = round(time.perf_counter() - t, 3)
    meta_cols = [c for c in META_COLUMNS if c in df.columns and df[c].notna().all() and df[c].nunique() > 1]

    out_models = {}
    for name in names:
        mr = loaded.models[name]
        e = mr.ensemble
        pos = {i: k for k, i in enumerate(e["ids"])}
        if set(pos) != set(test_ids):
            raise BadInput(mr.ensemble["path"], "ids", "do not match splits.json holdout")
        base_pred = e["probs"][[pos[i] for i in test_ids]].argmax(1)
        members = ((run.get("ensemble") or {}).get(name) or {}).get("members")
        folds = [int(k) for k in members] if members else [f.fold for f in mr.folds if f.done is not None]
        nets = _fold_models(run_dir, p, name, folds, dev)
        entry = {"folds": folds, "n_test": len(test_ids), "timing": {}}
        t = time.perf_counter()
        cond_pred = {}
        if conditions:
            lg = SC.ensemble_logits(nets, stacked, p.data.mean, p.data.std, rt, batch_size)
            for n, c in enumerate(conditions):
                cond_pred[c] = lg[n * len(test_ids):(n + 1) * len(test_ids)].argmax(1)
        entry["regions"] = ST.region_tests(labels, base_pred, cond_pred, codes, weights)
        entry["regions"]["forward_passes_per_fold_model"] = len(conditions)
        entry["timing"]["regions_s"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        entry["attribution"] = None
        if gradcam != 0:
            idx = _sample(labels, gradcam, seed)
            cams, layers = SC.gradcam_maps(nets, images[t_rows[idx]], base_pred[idx], p.data.mean, p.data.std,
                                           dev, size)
            sec = masks["sector"][idx]
            tot = cams.reshape(len(idx), -1).sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mass = np.where(tot > 0, (cams * sec).reshape(len(idx), -1).sum(1) / tot, np.nan)
            area = sec.reshape(len(idx), -1).mean(1)
            att = ST.attribution_mass(mass, area, labels[idx], class_names, codes[idx],
                                      lambda c: ST.boot(c, n_boot, seed))
            att.update({"method": "Grad-CAM (pytorch-grad-cam), target = the ensemble's predicted class, "
                                  "mean of the fold models' maps", "target_layers": sorted(set(layers)),
                        "n_images": int(len(idx)), "images": [
                            {"id": test_ids[j], "label": int(labels[j]), "predicted": int(base_pred[j]),
                             "sector_mass": ST._f(m), "sector_area": float(a)}
                            for j, m, a in zip(idx, mass, area)],
                        "gallery": _gallery(idx, labels, base_pred, cams, images[t_rows], class_names)})
            entry["attribution"] = att
        entry["timing"]["gradcam_s"] = round(time.perf_counter() - t, 3)

        t = time.perf_counter()
        meta = {}
        if meta_cols:
            feats = SC.penultimate_features(nets, images[t_rows], p.data.mean, p.data.std, rt, batch_size)
            all_ids = [i for i in splits["images"] if i in row]
            all_codes = S.group_codes([groups.get(i) for i in all_ids])
            all_rows = np.array([row[i] for i in all_ids])
            for col in meta_cols:
                vals = df[col].to_numpy()
                meta[col] = {
                    "association": ST.label_association(df["label"].to_numpy()[all_rows], vals[all_rows], all_codes,
                                                        n_boot=min(n_boot, 1000), seed=seed),
                    "accuracy_by_level": ST.accuracy_by_level(base_pred == labels, vals[t_rows], codes, n_boot, seed),
                    "probe": ST.linear_probe(feats, vals[t_rows], codes, n_boot, seed)}
        entry["metadata"] = meta or None
        entry["timing"]["metadata_s"] = round(time.perf_counter() - t, 3)
        entry["verdict"], entry["reason"] = ST.verdict(entry["regions"], entry["attribution"], meta)
        out_models[name] = entry
        _log(f"{name}: {entry['verdict']} - {entry['reason']}")
        del nets

    timing["total_s"] = round(time.perf_counter() - t0, 3)
    return {
        "schema": SCHEMA, "run": str(run_dir.resolve()), "protocol_sha256": run["protocol_sha256"],
        "splits_sha256": splits["sha256"], "data_fingerprint": run["data"]["fingerprint"],
        "class_names": list(class_names), "input_size": size, "conditions": conditions,
        "metadata_columns": meta_cols, "n_boot": n_boot, "seed": seed,
        "text_regions_found": int(masks["text"].reshape(len(test_ids), -1).any(1).sum()),
        "models": out_models, "timing": timing,
        "provenance": collect(argv, str(dev), {"shortcuts": seed, "split": splits.get("seed")}),
    }


def main(args) -> int:
    from protocols.atomic import write_json
    from protocols.errors import BadInput

    if args.n_boot < 100:
        raise BadInput("--n-boot", None, f"need at least 100 resamples, got {args.n_boot}")
    if args.gradcam < -1:
        raise BadInput("--gradcam", None, f"must be >= 0, or -1 for all holdout images; got {args.gradcam}")
    if args.batch_size < 1:
        raise BadInput("--batch-size", None, f"must be >= 1, got {args.batch_size}")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    doc = audit(args.run_dir, models, args.device, args.gradcam, args.full, args.n_boot, args.seed,
                args.batch_size, getattr(args, "argv", None))
    out = Path(args.json) if args.json else Path(args.run_dir) / "shortcuts.json"
    write_json(out, doc)
    for m, e in doc["models"].items():
        print(f"{m}: {e['verdict'].upper()} - {e['reason']}")
    print(f"wrote {out} in {doc['timing']['total_s']:.1f} s")
    return 0
