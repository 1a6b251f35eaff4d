"""Write a realistic fake RUN_DIR (run.json, splits, leakage, fold logits, ensemble, OOF, latency) with numpy only."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

CLASS_NAMES = ["F0", "F1", "F2", "F3", "F4"]
DEFAULT_QUALITY = {"resnet50": 2.0, "resnet50_cbam": 2.3, "resnet50_cbam_post": 2.1, "vgg16": 1.6,
                   "densenet121": 2.2, "efficientnet_b0": 1.9, "vit_b_16": 1.5}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fake_logits(rng, labels, patient_effect, quality, n_classes=len(CLASS_NAMES)):
    """Ordinal logits: stages near the true one score higher; patient effect makes images of one patient correlated."""
    k = np.arange(n_classes)
    base = -quality * np.abs(k[None, :] - labels[:, None]).astype(float)
    return (base + patient_effect + rng.normal(0, 1.0, base.shape)).astype(np.float32)


def make_fake_run(root, models=("resnet50", "resnet50_cbam"), n_patients=60, images_per_patient=3,
                  n_folds=5, level="patient", seed=0, smoke=False, random_init=(), quality=None,
                  write_ensemble=True, write_oof=True, write_latency=True, write_leakage=True,
                  fingerprint="f" * 64, protocol_extra=None, image_prefix="", class_names=None, task=None) -> Path:
    """Create RUN_DIR at `root` and return it; every file follows docs/contracts.md.

    `class_names` (default F0..F4) sets the label space; `task` (a resolved task mapping, as run.json's
    protocol.task) is recorded in run.json; without it the run looks like one made before tasks existed."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    quality = {**DEFAULT_QUALITY, **(quality or {})}
    names = list(class_names or (task or {}).get("classes") or CLASS_NAMES)
    C = len(names)
    # patients, each with one stage and several images
    p_labels = rng.integers(0, C, n_patients)
    ids, labels, groups = [], [], []
    for p in range(n_patients):
        for j in range(images_per_patient):
            ids.append(f"{image_prefix}{names[p_labels[p]]}/p{p:04d}_{j}.png")
            labels.append(int(p_labels[p]))
            groups.append(f"p{p:04d}")
    order = np.argsort(ids)
    ids = [ids[i] for i in order]
    labels = np.array([labels[i] for i in order])
    groups = [groups[i] for i in order]
    index = {i: n for n, i in enumerate(ids)}
    # holdout: by patient (or image) 80/20, then k folds over trainval
    unit = np.array(groups) if level == "patient" else np.array(ids)
    units = np.unique(unit)
    rng.shuffle(units)
    n_test_units = max(1, int(round(0.2 * len(units))))
    test_units = set(units[:n_test_units])
    test = [i for i, u in zip(ids, unit) if u in test_units]
    trainval = [i for i, u in zip(ids, unit) if u not in test_units]
    tv_units = units[n_test_units:]
    fold_of_unit = {u: k % n_folds for k, u in enumerate(tv_units)}
    folds = []
    for k in range(n_folds):
        val = [i for i in trainval if fold_of_unit[unit[index[i]]] == k]
        train = [i for i in trainval if fold_of_unit[unit[index[i]]] != k]
        folds.append({"fold": k, "train": train, "val": val})

    def counts(sub):
        return np.bincount(labels[[index[i] for i in sub]], minlength=C).tolist()

    splits = {"schema": "fibrobench.splits/1", "level": level, "seed": seed, "test_fraction": 0.2,
              "n_folds": n_folds, "class_names": names,
              # as protocols.splits writes it: at image level every image is its own group
              "images": {i: {"label": int(labels[n]), "group": groups[n] if level != "image" else i}
                         for n, i in enumerate(ids)},
              "holdout": {"trainval": trainval, "test": test}, "folds": folds,
              "class_counts": {"trainval": counts(trainval), "test": counts(test),
                               "folds": [{"train": counts(f["train"]), "val": counts(f["val"])} for f in folds]}}
    splits["sha256"] = _sha(splits)
    root.mkdir(parents=True, exist_ok=True)
    (root / "splits.json").write_text(json.dumps(splits, indent=1))

    protocol = {"name": "fake", "level": level, "n_folds": n_folds, "epochs": 2, "input_size": 64,
                "batch_size": 8, "lr": 1e-3, "seed": seed, **({"task": task} if task else {}), **(protocol_extra or {})}
    run = {"schema": "fibrobench.run/1", "protocol": protocol, "protocol_sha256": _sha(protocol),
           "data": {"root": "/data/fake", "fingerprint": fingerprint, "n_images": len(ids),
                    "has_patient_id": True},
           "splits_sha256": splits["sha256"],
           "models": {m: {"weights": {"source": "random" if m in random_init else "imagenet",
                                      "random_init": m in random_init, "missing_keys": [],
                                      "unexpected_keys": []},
                          "params": int(23_500_000 + 1000 * n)} for n, m in enumerate(models)},
           "smoke": bool(smoke), "status": "complete",
           "provenance": {"git": {"sha": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
                          "command": ["fibrobench", "run", "fake.yaml", "--data", "/data/fake"],
                          "packages": {"numpy": np.__version__, "torch": "2.14.1"},
                          "device": {"device": "cpu", "python": "3.12"}, "seeds": {"global": seed},
                          "hostname": "fake", "time_utc": "2026-01-01T00:00:00+00:00"}}
    (root / "run.json").write_text(json.dumps(run, indent=1))

    patient_effect = {g: rng.normal(0, 0.8, C) for g in sorted(set(groups))}
    pe = np.array([patient_effect[g] for g in groups])
    test_idx = np.array([index[i] for i in test])
    for m in models:
        q = quality.get(m, 2.0)
        test_logits_all, oof_ids, oof_logits, oof_folds = [], [], [], []
        for f in folds:
            d = root / "jobs" / m / f"fold{f['fold']}"
            d.mkdir(parents=True, exist_ok=True)
            v_idx = np.array([index[i] for i in f["val"]])
            vl = _fake_logits(rng, labels[v_idx], pe[v_idx], q, C)
            tl = _fake_logits(rng, labels[test_idx], pe[test_idx], q, C)
            np.savez(d / "val_logits.npz", ids=np.array(f["val"]), logits=vl, labels=labels[v_idx].astype(np.int64))
            np.savez(d / "test_logits.npz", ids=np.array(test), logits=tl, labels=labels[test_idx].astype(np.int64))
            epochs = 3
            acc = np.clip(0.4 + 0.1 * np.arange(1, epochs + 1) + rng.normal(0, 0.02, epochs), 0, 1)
            rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s"]
            for e in range(epochs):
                rows.append(f"{e},{1.5 - 0.3 * e:.4f},{acc[e] + 0.05:.4f},{1.6 - 0.3 * e:.4f},{acc[e]:.4f},"
                            f"0.001,{12.5 + e:.2f},{80.0 + e:.1f}")
            (d / "history.csv").write_text("\n".join(rows) + "\n")
            (d / "DONE").write_text(json.dumps({"seconds": 40.5, "images_per_s": 81.0, "epochs": epochs,
                                                "selected_epoch": epochs - 1}))
            test_logits_all.append(tl)
            oof_ids += f["val"]
            oof_logits.append(vl)
            oof_folds += [f["fold"]] * len(f["val"])
        if write_ensemble:
            mean = np.mean(test_logits_all, axis=0)
            e = np.exp(mean - mean.max(1, keepdims=True))
            (root / "ensemble").mkdir(exist_ok=True)
            np.savez(root / "ensemble" / f"{m}.npz", ids=np.array(test), logits=mean.astype(np.float32),
                     labels=labels[test_idx].astype(np.int64), probs=(e / e.sum(1, keepdims=True)).astype(np.float32))
        if write_oof:
            (root / "oof").mkdir(exist_ok=True)
            o_idx = np.array([index[i] for i in oof_ids])
            np.savez(root / "oof" / f"{m}.npz", ids=np.array(oof_ids), logits=np.concatenate(oof_logits),
                     labels=labels[o_idx].astype(np.int64), fold=np.array(oof_folds, dtype=np.int64))

    if write_leakage:
        leaky = level != "patient"
        shared = 7 if leaky else 0
        leak = {"schema": "fibrobench.leakage/1", "verdict": "leak" if leaky else "clean",
                "reasons": [f"{shared} patients in both trainval and test"] if leaky else [],
                "data": {"n_images": len(ids), "has_patient_id": True}, "split": {"level": level},
                "patient_overlap": {"available": True, "total_shared_patients": shared,
                                    "pairs": [{"name": "trainval/test", "shared_patients": shared,
                                               "fraction": 0.4 if leaky else 0.0}]},
                "near_duplicates": {"n_links": 3 if leaky else 0,
                                    "pairs": [{"name": "trainval/test", "train": "trainval", "eval": "test",
                                               "n_eval_images": len(test),
                                               "eval_with_duplicate_in_train": 5 if leaky else 0,
                                               "fraction": 5 / len(test) if leaky else 0.0,
                                               "direct_links": 3 if leaky else 0}],
                                    "examples": []},
                "probe": None, "linear_probe": None,
                # near-duplicate clusters: here the frames of one patient (integer ids, as the audit writes them)
                "clusters": {i: int(groups[n][1:]) for n, i in enumerate(ids)}}
        (root / "leakage.json").write_text(json.dumps(leak, indent=1))
    if write_latency:
        lat = {"schema": "fibrobench.latency/1", "device": {"device": "cpu", "name": "fake cpu"},
               "packages": {"torch": "2.14.1"},
               "models": {m: {"params": 23_500_000 + 1000 * n, "flops": 4_100_000_000 + 10_000_000 * n,
                              "input_size": 224,
                              "fp32": {"batch_size": 1, "p50_ms": 20.0 + 3 * n, "p90_ms": 22.0 + 3 * n,
                                       "p99_ms": 25.0 + 3 * n, "images_per_s": 50.0 - n,
                                       "peak_memory_bytes": 400_000_000 + 1_000_000 * n},
                              "bf16": None,
                              "train": {"images_per_s": 30.0 - n, "peak_memory_bytes": 2_000_000_000}}
                          for n, m in enumerate(models)}}
        (root / "latency.json").write_text(json.dumps(lat, indent=1))
    return root
