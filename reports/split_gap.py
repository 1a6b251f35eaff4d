"""Image- vs patient-level split of the same data: each model's accuracy and macro F1, the gap with its CI,
and the leakage probe's prediction of that gap (torch-free; written by `fibrobench demo` as split_gap.json).

`split_gap(comparison, leakage)` takes a reports.compare comparison of [image-level run, patient-level run]
(same data, same models) and the image-level run's leakage.json; gap = image-level minus patient-level, with
the comparison's CI (normal approximation from each run's own 95 % CI, the two holdouts independent).
"""
from __future__ import annotations

import json
from pathlib import Path

from reports.errors import ReportInputError

SCHEMA = "fibrobench.split_gap/1"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def split_gap(comparison: dict, leakage: dict | None = None) -> dict:
    """The split_gap.json content (schema fibrobench.split_gap/1, docs/leakage.md)."""
    runs = comparison.get("runs") or []
    if len(runs) != 2:
        raise ReportInputError("<comparison>", "runs", f"expected 2 runs (image-level, patient-level), got {len(runs)}")
    models = {}
    for m, rows in (comparison.get("models") or {}).items():
        out = {}
        for metric in METRICS:
            r = rows.get(metric)
            if not r:
                continue
            d = r["diffs"][0]                                          # patient - image
            lo, hi = (d.get("ci") or [None, None])
            out[metric] = {
                "image": {"value": r["values"][0], "ci": r["cis"][0]},
                "patient": {"value": r["values"][1], "ci": r["cis"][1]},
                "gap": {"value": None if d.get("value") is None else -d["value"],
                        "ci": [None if hi is None else -hi, None if lo is None else -lo],
                        "method": d.get("method")}}
        models[m] = out
    probes = {}
    for key, name in (("probe", "1-NN"), ("linear_probe", "linear")):
        pr = (leakage or {}).get(key)
        if pr:
            probes[name] = {"gap_holdout": pr.get("gap_holdout"), "gap_fold_mean": pr.get("gap_fold_mean"),
                            "run_holdout": pr["run_split"].get("holdout"),
                            "group_holdout": pr["group_split"].get("holdout"),
                            "group_level": pr["group_split"].get("level"), "features": pr.get("features")}
    return {"schema": SCHEMA,
            "runs": [{k: r.get(k) for k in ("run_dir", "level", "n_test", "smoke")} for r in runs],
            "comparable": bool((comparison.get("comparability") or {}).get("comparable")),
            "notes": list((comparison.get("comparability") or {}).get("notes") or []),
            "models": models, "probe_prediction": probes}


def load(run_dir) -> dict | None:
    """RUN_DIR/split_gap.json when present (validated), else None."""
    p = Path(run_dir) / "split_gap.json"
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportInputError(p, "json", str(exc)) from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA or not isinstance(d.get("models"), dict):
        raise ReportInputError(p, "schema", f"expected {SCHEMA!r} with a models table")
    return d
