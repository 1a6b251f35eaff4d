"""Compare runs side by side (e.g. image-level vs patient-level splits of the same data): deltas with CIs, comparability."""
from __future__ import annotations

import math

from reports import render
from reports.rundir import load_run
from reports.summary import jsonable, summarize_loaded

SCHEMA = "fibrobench.compare/1"
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa", "qwk", "linear_kappa", "auroc_macro",
           "auroc", "sensitivity", "specificity", "ppv", "npv", "mae_stage", "error_ge2_rate", "ece", "brier")


def metrics_of(summaries: list[dict]) -> list[str]:
    """The METRICS that some run's task defines (a binary run has no QWK, a five-class run no positive AUROC)."""
    have = {k for s in summaries for m in s["models"].values() for k in (m.get("ensemble") or {})}
    return [k for k in METRICS if k in have]
Z95 = 1.959963984540054


def flatten(d, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": value}; lists stay values."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def protocol_differences(protocols: list[dict]) -> list[dict]:
    """Every protocol key whose value differs between runs, with each run's value (missing -> None)."""
    flat = [flatten(p) for p in protocols]
    keys = sorted(set().union(*flat)) if flat else []
    return [{"key": k, "values": [f.get(k) for f in flat]} for k in keys
            if len({repr(f.get(k)) for f in flat}) > 1]


def _se_from_ci(entry) -> float | None:
    ci = entry.get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return None
    return (ci[1] - ci[0]) / (2 * Z95)


def diff_entry(a: dict, b: dict) -> dict:
    """b - a with a normal-approximation CI from the two runs' own CIs (independent test sets)."""
    if a.get("value") is None or b.get("value") is None:
        return {"value": None, "ci": [None, None], "method": "n/a"}
    d = b["value"] - a["value"]
    sa, sb = _se_from_ci(a), _se_from_ci(b)
    if sa is None or sb is None:
        return {"value": d, "ci": [None, None], "method": "no CI in one of the runs"}
    se = math.sqrt(sa ** 2 + sb ** 2)
    return {"value": d, "ci": [d - Z95 * se, d + Z95 * se],
            "method": "normal approximation, SE from each run's 95 % CI half-width, runs independent"}


def comparability(summaries: list[dict], runs_json: list[dict]) -> dict:
    fps = [s.get("data_fingerprint") for s in summaries]
    model_sets = [set(s["models"]) for s in summaries]
    common = sorted(set.intersection(*model_sets)) if model_sets else []
    only = {s["run_dir"]: sorted(ms - set(common)) for s, ms in zip(summaries, model_sets) if ms - set(common)}
    same_data = len(set(fps)) == 1 and fps[0] is not None
    diffs = protocol_differences([r.get("protocol") or {} for r in runs_json])
    notes = []
    if not same_data:
        notes.append("The runs are on different data (fingerprints differ or are missing): differences mix data and protocol.")
    if only:
        notes.append("Not every model is in every run; only the common models are compared.")
    tasks = [s.get("task") or {} for s in summaries]
    if any((t.get("classes"), t.get("ordinal"), t.get("positive")) != (tasks[0].get("classes"), tasks[0].get("ordinal"),
                                                                     tasks[0].get("positive")) for t in tasks):
        notes.append("The runs evaluate different tasks (classes, ordinality or positive class differ): "
                     "their metrics measure different things.")
    if len({s["n_test"] for s in summaries}) > 1 or len({s.get("level") for s in summaries}) > 1:
        notes.append("The holdout sets differ between runs, so differences are between independent estimates, not paired.")
    smoke = [s["run_dir"] for s in summaries if s.get("smoke")]
    if smoke:
        notes.append(f"Smoke runs: {', '.join(smoke)}.")
    return {"same_data": same_data, "data_fingerprints": fps, "same_models": not only, "common_models": common,
            "models_only_in": only, "protocol_differences": diffs, "comparable": same_data and bool(common),
            "notes": notes}


def compare_summaries(summaries: list[dict], runs_json: list[dict]) -> dict:
    comp = comparability(summaries, runs_json)
    models = {}
    for m in comp["common_models"]:
        rows = {}
        for metric in metrics_of(summaries):
            entries = [s["models"][m]["ensemble"].get(metric) or {} for s in summaries]
            rows[metric] = {"values": [e.get("value") for e in entries], "cis": [e.get("ci") for e in entries],
                            "methods": [e.get("method") for e in entries],
                            "diffs": [diff_entry(entries[0], e) for e in entries[1:]]}
        models[m] = rows
    return jsonable({
        "schema": SCHEMA,
        "runs": [{"run_dir": s["run_dir"], "level": s.get("level"), "n_test": s["n_test"],
                  "n_test_clusters": s["clusters"]["n_test_clusters"], "data_fingerprint": s.get("data_fingerprint"),
                  "protocol_sha256": s.get("protocol_sha256"), "splits_sha256": s.get("splits_sha256"),
                  "smoke": s.get("smoke"), "random_init": s.get("random_init"), "warnings": s.get("warnings")}
                 for s in summaries],
        "reference": 0,
        "comparability": comp,
        "models": models,
    })


def compare_runs(run_dirs, n_boot: int = 10_000, seed: int = 0) -> tuple[dict, list[dict]]:
    """(comparison dict, the per-run summaries)."""
    runs = [load_run(d) for d in run_dirs]
    summaries = [summarize_loaded(r, n_boot=n_boot, seed=seed) for r in runs]
    return compare_summaries(summaries, [r.run for r in runs]), summaries


def render_compare(run_dirs, n_boot: int = 10_000, seed: int = 0, provenance: dict | None = None) -> tuple[str, dict]:
    """(html, comparison dict) for several run directories."""
    comp, summaries = compare_runs(run_dirs, n_boot=n_boot, seed=seed)
    ctx = {"title": f"fibrobench comparison of {len(run_dirs)} runs", "cmp": comp, "summaries": summaries,
           "metrics": metrics_of(summaries), "labels": dict(render.headline(summaries[0].get("task") or {}), ece="ECE",
                                                            brier="Brier"), "report_prov": provenance}
    return render.render_html(ctx, "compare.html.j2"), comp
