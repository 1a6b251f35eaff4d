"""Render one self-contained HTML report of a run (jinja2 autoescape, inline CSS and SVG, no JavaScript needed)."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from pathlib import Path

import jinja2

from reports import figures
from reports.claims_checks import audit_claims
from reports.metrics import MACRO_CONVENTION
from reports.errors import ReportInputError
from reports.leakage_view import leakage_context
from reports.split_gap import load as split_gap_load
from reports.rundir import Run, load_run
from reports.shortcuts_view import load as load_shortcuts
from reports.shortcuts_view import verdict_lines as shortcut_lines
from reports.summary import summarize_loaded

TEMPLATES = Path(__file__).resolve().parent / "templates"
PERCENT = {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall",
           "macro_specificity", "error_ge2_rate", "recall", "specificity", "precision", "npv", "ppv", "f1",
           "sensitivity"}


def headline(task: dict) -> list[tuple[str, str]]:
    """(summary key, column label) of the headline metrics the task defines, in the task's words."""
    cols = [("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced acc."), ("macro_f1", "Macro F1"),
            ("weighted_f1", "Weighted F1"), ("kappa", "Cohen's κ")]
    classes = task.get("classes") or []
    if task.get("ordinal") and len(classes) >= 3:
        cols += [("qwk", "Quadratic κ"), ("linear_kappa", "Linear κ"), ("mae_stage", "Mean |stage error|"),
                 ("error_ge2_rate", "Errors ≥ 2 stages")]
    if len(classes) == 2:
        pos = task.get("positive")
        cols += [("auroc", f"AUROC ({pos})"), ("sensitivity", f"Sensitivity ({pos})"),
                 ("specificity", f"Specificity ({pos})"), ("ppv", f"PPV ({pos})"), ("npv", f"NPV ({pos})")]
    else:
        cols.append(("auroc_macro", "AUROC (macro OvR)"))
    return cols


def task_words(task: dict) -> dict:
    """The report's vocabulary for this task: what one class is called, and a one-line description."""
    classes = task.get("classes") or []
    ordinal = bool(task.get("ordinal"))
    kind = ("binary" if len(classes) == 2 else f"{len(classes)}-class") + (", ordinal" if ordinal else ", nominal")
    desc = f"{kind}: {', '.join(classes)}"
    if task.get("positive"):
        desc += f"; positive class {task['positive']}"
    if task.get("cutoffs"):
        desc += "; cut-offs " + ", ".join(f"{k} (≥ {v})" for k, v in task["cutoffs"].items())
    return {"unit": "stage" if ordinal else "class", "description": desc}


def _num(x):
    """A finite float, or None for missing / undefined / non-numeric values."""
    if isinstance(x, bool) or x is None or isinstance(x, jinja2.Undefined):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(value, metric: str = "", digits: int | None = None) -> str:
    value = _num(value)
    if value is None:
        return "—"
    if metric in PERCENT:
        return f"{100 * value:.{2 if digits is None else digits}f} %"
    return f"{value:.{3 if digits is None else digits}f}"


def _fmt_ci(ci, metric: str = "") -> str:
    if isinstance(ci, jinja2.Undefined) or not ci or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return "—"
    if metric in PERCENT:
        return f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_p(p) -> str:
    p = _num(p)
    if p is None:
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _fmt_bytes(n) -> str:
    n = _num(n)
    if n is None:
        return "—"
    return f"{n / 2 ** 20:.0f} MiB"


def _fmt_big(n) -> str:
    n = _num(n)
    if n is None:
        return "—"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:g}"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, ci=_fmt_ci, p=_fmt_p, mib=_fmt_bytes, big=_fmt_big,
                       tojson_pretty=lambda o: json.dumps(o, indent=2, sort_keys=True, default=str))
    return env


def _shade(cm):
    """Row-normalised confusion matrix with a background alpha for each cell."""
    rows = []
    for r in cm:
        tot = sum(r) or 1
        rows.append([{"n": v, "alpha": round(v / tot, 3)} for v in r])
    return rows


def _verdict(run: Run, summary: dict, leakage: dict | None, claims_audit: dict | None) -> list[str]:
    lines = []
    models = summary["models"]
    if models:
        best = max(models, key=lambda m: models[m]["ensemble"]["accuracy"]["value"] or -1)
        acc = models[best]["ensemble"]["accuracy"]
        ci = (f"95 % CI {_fmt_ci(acc['ci'], 'accuracy')}, {acc['method']}" if _fmt_ci(acc["ci"]) != "—"
              else "no CI")
        lines.append(f"Best holdout accuracy: {best} {_fmt(acc['value'], 'accuracy')} "
                     f"({ci}) on {summary['n_test']} images "
                     f"from {summary['clusters']['n_test_clusters']} clusters.")
        if not (summary.get("bootstrap") or {}).get("n_boot"):
            lines.append("Bootstrap disabled (--n-boot 0): the intervals that need it are not computed.")
    else:
        lines.append("No model has a completed holdout ensemble: nothing was scored.")
    for c in summary["comparisons"]:
        d = c["holdout_diff"]["accuracy"]
        ci = d.get("ci") or [None, None]
        if ci[0] is None or ci[1] is None:
            reading = "no CI"
        elif ci[0] > 0 or ci[1] < 0:
            reading = "the 95 % CI excludes no difference"
        else:
            reading = "the 95 % CI includes no difference: the data do not separate the two"
        lines.append(f"{c['model']} − {c['baseline']}: holdout accuracy {_fmt(d['value'], 'accuracy')} "
                     f"(CI {_fmt_ci(ci, 'accuracy')}; {reading}), McNemar p = {_fmt_p(c['mcnemar']['p'])} "
                     f"(Holm {_fmt_p(c['mcnemar'].get('p_holm'))}).")
    if leakage:
        lines.append(f"Leakage audit verdict: {leakage.get('verdict', 'unknown')}.")
    else:
        lines.append("Leakage audit: leakage.json is missing.")
    if claims_audit:
        v = claims_audit.get("verdict") or claims_audit.get("summary", {}).get("verdict")
        if v:
            lines.append(f"Claims audit verdict: {v}.")
    for name in models if summary["task"]["positive"] else []:
        e = models[name]["ensemble"]
        lines.append(f"{name}, positive class {summary['task']['positive']}: AUROC {_fmt(e['auroc']['value'])} "
                     f"(95 % CI {_fmt_ci(e['auroc']['ci'])}, {e['auroc']['method']}), sensitivity "
                     f"{_fmt(e['sensitivity']['value'], 'sensitivity')}, specificity "
                     f"{_fmt(e['specificity']['value'], 'specificity')}.")
    if summary["level"]:
        lines.append(f"Split level: {summary['level']} (images are grouped by "
                     f"{summary['clusters']['source']}).")
    return lines


def _leakage_view(run: Run):
    """(leakage_view, error): the leakage partial's context, or why leakage.json could not be shown."""
    if run.leakage is None:
        return None, None
    try:
        return leakage_context(run.leakage, run.path / "leakage.json"), None
    except ReportInputError as exc:  # a malformed leakage.json is reported in its section, not hidden
        return None, str(exc)


def execution_view(run: Run) -> dict:
    """How the jobs ran: the protocol's torch.compile mode, what each job's DONE says of it (compiled / fallback to
    eager, compile seconds, kept apart from training speed) and the local executor's packing options."""
    protocol = run.run.get("protocol") or {}
    opts = run.run.get("options") or {}
    jobs = [(m, f.fold, (f.done or {}).get("compile") or {}) for m, mr in run.models.items() for f in mr.folds
            if f.done is not None]
    status: dict[str, int] = {}
    for _, _, c in jobs:
        status[c.get("status") or "not recorded"] = status.get(c.get("status") or "not recorded", 0) + 1
    secs = [c["seconds"] for _, _, c in jobs if isinstance(c.get("seconds"), (int, float)) and c.get("status") == "compiled"]
    return {"compile": (protocol.get("train") or {}).get("compile") or "none", "status": status,
            "compile_seconds_total": sum(secs) if secs else None,
            "fallbacks": [f"{m} fold {k}: {c.get('error')}" for m, k, c in jobs if c.get("status") == "fallback"],
            "executor": opts.get("executor"), "workers": opts.get("workers"), "jobs_per_gpu": opts.get("jobs_per_gpu")}


def build_context(run: Run, summary: dict, claims_audit: dict | None = None, claims_note: str | None = None) -> dict:
    """Everything the template needs, computed here so the template stays declarative."""
    prov = run.run.get("provenance") or {}
    splits = run.splits or {}
    cc = splits.get("class_counts") or {}
    partitions = {"trainval": cc.get("trainval"), "test": cc.get("test")}
    fold_counts = [{"fold": n, **f} for n, f in enumerate(cc.get("folds") or [])]
    models = summary["models"]
    eff = summary["efficiency"]
    lat_points = []
    for m, e in eff.items():
        fp32 = e.get("fp32") or {}
        acc = (models.get(m) or {}).get("ensemble", {}).get("accuracy", {})
        lat_points.append({"name": m, "latency_ms": fp32.get("p50_ms"), "acc": acc.get("value"),
                           "lo": (acc.get("ci") or [None])[0], "hi": (acc.get("ci") or [None, None])[1]})
    curves = {m: {f.fold: [(r.get("epoch"), r.get("val_acc")) for r in (f.history or [])
                           if isinstance(r.get("val_acc"), float)] for f in mr.folds}
              for m, mr in run.models.items()}
    leakage_view, leakage_error = _leakage_view(run)
    shortcuts_doc, shortcuts_view, shortcuts_error = load_shortcuts(run.path)
    protocol = run.run.get("protocol") or {}
    random_init = summary["random_init"]
    return {
        "title": f"fibrobench report — {run.path.name}",
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run.path),
        "run": run.run,
        "summary": summary,
        "smoke": summary["smoke"],
        "random_init": random_init,
        "verdict": _verdict(run, summary, run.leakage, claims_audit) + (
            shortcut_lines(shortcuts_doc) if shortcuts_doc else
            [f"Shortcut audit: {shortcuts_error or 'not run (fibrobench shortcuts RUN_DIR)'}."]),
        "prov": prov,
        "execution": execution_view(run),
        "protocol": protocol,
        "class_names": run.class_names,
        "partitions": partitions,
        "fold_counts": fold_counts,
        "fig_classes": figures.class_distribution_figure(run.class_names, partitions),
        "leakage": run.leakage,
        "leakage_view": leakage_view,
        "leakage_error": leakage_error,
        "shortcuts_view": shortcuts_view,
        "shortcuts_error": shortcuts_error,
        "split_gap": split_gap_load(run.path),     # the demo's image- vs patient-level table, when present
        "task": summary["task"],
        "words": task_words(summary["task"]),
        "headline": headline(summary["task"]),
        "models": models,
        "confusions": {m: _shade(v["ensemble"]["confusion"]) for m, v in models.items()},
        "comparisons": summary["comparisons"],
        "macro_convention": MACRO_CONVENTION,
        "fig_reliability": figures.reliability_figure({m: v["ensemble"]["reliability"] for m, v in models.items()}),
        "efficiency": eff,
        "fig_latency": figures.accuracy_latency_figure(lat_points),
        "fig_curves": figures.training_curves_figure(curves),
        "latency_device": (run.latency or {}).get("device"),
        "claims_audit": claims_audit,
        "claims_note": claims_note,
        "tuning": {"grid": protocol.get("grid"), "variant": protocol.get("variant")}
        if protocol.get("grid") or protocol.get("variant") else None,
    }


def render_html(context: dict, template: str = "report.html.j2") -> str:
    env = environment()
    css = (TEMPLATES / "base.css").read_text(encoding="utf-8")
    return env.get_template(template).render(css=css, **context)


def claims_for(claims_path, run_dir, summary: dict | None = None) -> tuple[dict | None, str | None]:
    """The claims audit when asked for and available, else a note saying why not."""
    if claims_path is None:
        return None, "No claims file was given (--claims CLAIMS.yaml)."
    return audit_claims(claims_path, run_dir, summary=summary), None  # reuses the summary: no second bootstrap


def render_report(run_dir, claims_path=None, n_boot: int = 10_000, seed: int = 0,
                  summary: dict | None = None, provenance: dict | None = None) -> tuple[str, dict]:
    """Summarise RUN_DIR (unless a summary is given) and return (html, summary); the caller writes the file.

    `provenance` (bench.provenance.collect of the report command) is shown in the footer."""
    run = load_run(run_dir)
    if summary is None:
        summary = summarize_loaded(run, n_boot=n_boot, seed=seed)
    audit, note = claims_for(claims_path, run_dir, summary)
    return render_html({**build_context(run, summary, audit, note), "report_prov": provenance}), summary
