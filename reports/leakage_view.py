"""Torch-free view of a leakage.json: template context (tables, example pairs, inline SVG figures) for the report."""
from __future__ import annotations

import re

from reports.errors import ReportInputError

SCHEMA = "fibrobench.leakage/1"
_DATA_URI = re.compile(r"^data:image/png;base64,[A-Za-z0-9+/=]+$")


def _need(d: dict, key: str, path, field_prefix=""):
    if not isinstance(d, dict) or key not in d:
        raise ReportInputError(path, f"{field_prefix}{key}", "missing")
    return d[key]


def _pct(x):
    return None if x is None else 100.0 * float(x)


def near_duplicate_figure(pairs: list[dict], overlap_pairs: list[dict]) -> str:
    """Bars: per partition pair, % of eval images with a near-duplicate (and a shared patient) in training."""
    from reports.figures import plt, to_svg

    names = [p["name"] for p in pairs]
    dup = [_pct(p["fraction"]) for p in pairs]
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    x = range(len(names))
    w = 0.4 if overlap_pairs else 0.6
    ax.bar([i - (w / 2 if overlap_pairs else 0) for i in x], dup, width=w, color="#c0504d",
           label="near-duplicate in training")
    if overlap_pairs:
        pat = [_pct(p["fraction"]) for p in overlap_pairs]
        ax.bar([i + w / 2 for i in x], pat, width=w, color="#4f81bd", label="same patient in training")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set(ylabel="% of evaluation images", ylim=(0, 100), title="Leakage per partition pair")
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    return to_svg(fig)


def probe_figure(probes: dict) -> str | None:
    """Grouped bars: probe accuracy under the audited split vs the patient/cluster-level split."""
    from reports.figures import plt, to_svg

    probes = {k: v for k, v in probes.items() if v}
    if not probes:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    labels, run, grp = [], [], []
    for name, pr in probes.items():
        for part, key in (("holdout", "holdout"), ("folds", "fold_mean")):
            if pr["run_split"].get(key) is None:
                continue
            labels.append(f"{name}\n{part}")
            run.append(_pct(pr["run_split"][key]))
            grp.append(_pct(pr["group_split"][key]))
    first = next(iter(probes.values()))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], run, width=0.4, color="#c0504d", label=f"{first['run_split']['level']}-level split")
    ax.bar([i + 0.2 for i in x], grp, width=0.4, color="#4f81bd", label=f"{first['group_split']['level']}-level split")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="Leakage probes")
    ax.axhline(20, color="#999", lw=0.8, ls=":")
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return to_svg(fig)


def leakage_context(leak: dict, path="leakage.json") -> dict:
    """Everything the leakage section template needs, from a leakage.json dict (validated)."""
    if not isinstance(leak, dict) or leak.get("schema") != SCHEMA:
        raise ReportInputError(path, "schema", f"expected {SCHEMA!r}")
    verdict = _need(leak, "verdict", path)
    if verdict not in ("leak", "clean"):
        raise ReportInputError(path, "verdict", f"expected 'leak' or 'clean', got {verdict!r}")
    nd = _need(leak, "near_duplicates", path)
    pairs = _need(nd, "pairs", path, "near_duplicates.")
    po = _need(leak, "patient_overlap", path)
    if not pairs or any("fraction" not in p or "name" not in p for p in pairs):
        raise ReportInputError(path, "near_duplicates.pairs", "empty or malformed")
    overlap_pairs = po.get("pairs", []) if po.get("available") else []
    examples = []
    for e in nd.get("examples", []):
        thumbs = [e.get("eval_thumb"), e.get("train_thumb")]
        safe = [t if isinstance(t, str) and _DATA_URI.match(t) else None for t in thumbs]
        examples.append({"eval_id": e.get("eval_id"), "train_id": e.get("train_id"),
                         "transform": e.get("transform"),
                         "phash": e.get("phash_distance"), "dhash": e.get("dhash_distance"), "ncc": e.get("ncc"),
                         "eval_thumb": safe[0], "train_thumb": safe[1]})
    lc = leak.get("label_conflicts") or {}
    conflicts = None
    if lc:
        conflicts = {"n_pairs": int(lc.get("n_pairs", 0)), "n_images": int(lc.get("n_images", 0)), "pairs": []}
        for q in lc.get("pairs", [])[:50]:
            t = [q.get("a_thumb"), q.get("b_thumb")]
            conflicts["pairs"].append({**{k: q.get(k) for k in ("a_id", "a_label", "b_id", "b_label", "transform", "ncc")},
                                       "a_thumb": t[0] if isinstance(t[0], str) and _DATA_URI.match(t[0]) else None,
                                       "b_thumb": t[1] if isinstance(t[1], str) and _DATA_URI.match(t[1]) else None})
    rows = []
    by_name = {p["name"]: p for p in overlap_pairs}
    for p in pairs:
        o = by_name.get(p["name"])
        rows.append({"name": p["name"], "train": p.get("train"), "eval": p.get("eval"),
                     "n_eval": p.get("n_eval_images"), "dup": p.get("eval_with_duplicate_in_train"),
                     "dup_pct": _pct(p["fraction"]), "links": p.get("direct_links"),
                     "shared_patients": o["shared_patients"] if o else None,
                     "patient_pct": _pct(o["fraction"]) if o else None})
    probes = {"1-NN": leak.get("probe"), "linear": leak.get("linear_probe")}
    probe_rows = []
    for name, pr in probes.items():
        if pr:
            probe_rows.append({"name": name, "features": pr.get("features"),
                               "run_level": pr["run_split"]["level"], "group_level": pr["group_split"]["level"],
                               "run_holdout": _pct(pr["run_split"]["holdout"]),
                               "group_holdout": _pct(pr["group_split"]["holdout"]),
                               "run_folds": _pct(pr["run_split"].get("fold_mean")),
                               "group_folds": _pct(pr["group_split"].get("fold_mean")),
                               "gap": _pct(pr.get("gap_holdout")), "gap_folds": _pct(pr.get("gap_fold_mean"))})
    return {
        "verdict": verdict,
        "reasons": list(leak.get("reasons", [])),
        "n_images": leak.get("data", {}).get("n_images"),
        "has_patient_id": bool(leak.get("data", {}).get("has_patient_id")),
        "split": leak.get("split", {}),
        "thresholds": leak.get("thresholds", {}),
        "clusters": leak.get("cluster_stats", {}),
        "detector": leak.get("detector_vs_patients"),
        "rows": rows,
        "examples": examples,
        "by_transform": {k: v for k, v in (nd.get("by_transform") or {}).items() if v},
        "label_conflicts": conflicts,
        "probes": probe_rows,
        "figures": {"near_duplicates": near_duplicate_figure(pairs, overlap_pairs),
                    "probe": probe_figure(probes)},
    }


def render_section(leak: dict, path="leakage.json") -> str:
    """The leakage section alone as HTML (what `{% include "leakage.html.j2" %}` renders in the report)."""
    from pathlib import Path

    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("leakage.html.j2").render(leakage=leak, leakage_view=leakage_context(leak, path))
