"""Regression gate: a run's headline metrics, latency and peak memory against a stored baseline.

Rules (defaults are the `fibrobench gate` option defaults; docs/benchmarks.md explains them):
- Comparable only if the data fingerprint and the protocol sha256 match (else refuse, exit 2,
  unless allow_different; the mismatch is then reported as a warning).
- Metric (higher is better): fail when  current < baseline - max(abs_tol, ci_scale * (baseline - ci_low)),
  i.e. a drop larger than the lower arm of the baseline's own 95 % CI (the resolution of this test set)
  and larger than abs_tol. A drop beyond abs_tol that stays inside the CI is a warning, not a failure.
  Lower-is-better metrics (ece, brier, ...) mirror it with the upper arm. A missing model/metric fails.
- Latency (batch-1 p50) fails when it rises more than latency_tol %; throughput (images/s) when it falls
  more than latency_tol %; peak memory (inference and training) when it rises more than memory_tol %.
  These are compared only on the same device name; otherwise (or without latency data) skipped.

Baseline schema "fibrobench.gate-baseline/1" (also the shape of a run snapshot):
    {"schema", "run_dir", "protocol_sha256", "data_fingerprint", "splits_sha256", "class_names",
     "metrics": {model: {metric: {"value": float, "ci": [lo, hi]}}},
     "latency": null | {"device": {"type", "name"}, "input_size",
                        "models": {model: {"fp32"|"bf16": {"p50_ms", "images_per_s", "peak_memory_bytes"},
                                           "train": {"peak_memory_bytes", "p50_ms"}}}},
     "provenance": bench.provenance.collect(...)}
Result schema "fibrobench.gate/1":
    {"schema", "verdict": "pass"|"fail", "counts": {"pass", "warn", "fail", "skip"},
     "tolerances": {...}, "baseline": path, "run_dir": path,
     "checks": [{"name", "kind": identity|metric|latency|throughput|memory, "model", "status":
                 pass|warn|fail|skip, "baseline", "current", "limit", "message"}], "provenance"}
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from protocols.errors import BadInput
from protocols.runfiles import read_json

BASELINE_SCHEMA = "fibrobench.gate-baseline/1"
RESULT_SCHEMA = "fibrobench.gate/1"
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "micro_f1", "kappa",
                    "cohen_kappa", "quadratic_kappa", "qwk", "linear_kappa", "macro_auc", "macro_auroc",
                    "auroc", "auroc_macro", "auc", "mcc", "macro_precision", "macro_recall", "macro_sensitivity",
                    "macro_specificity", "sensitivity", "specificity", "ppv", "npv"}
LOWER_IS_BETTER = {"ece", "brier", "log_loss", "nll", "mae", "mae_stage", "error_rate", "error_ge2_rate"}
DEFAULTS = {"metric_tol": 0.01, "ci_scale": 1.0, "latency_tol": 20.0, "memory_tol": 10.0}


# ---------------------------------------------------------------- reading a run

def _read_json(path: Path, what: str) -> dict:
    """protocols.runfiles.read_json (missing / malformed -> BadInput naming the file), which must give an object."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise BadInput(path, None, f"{what} must be a JSON object")
    return obj


def _summarize(run_dir: Path) -> dict:
    """reports.summary.summarize_run (imported late: reports must not be needed to read latency)."""
    from reports.summary import summarize_run
    return summarize_run(run_dir)


def metrics_from_summary(summary: dict, source="summary") -> dict:
    """{model: {metric: {"value", "ci"}}} from summarize_run's `models.<name>.ensemble` blocks."""
    models = summary.get("models")
    if not isinstance(models, dict):
        raise BadInput(source, "models", "summary has no 'models' mapping")
    out = {}
    for name, block in models.items():
        ens = (block or {}).get("ensemble") or {}
        out[name] = {k: {"value": _num(v.get("value")), "ci": [_num(c) for c in (v.get("ci") or [None, None])]}
                     for k, v in ens.items() if isinstance(v, dict) and "value" in v}
    return out


def _num(x):
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def latency_from_file(path: Path) -> dict:
    """The gated latency figures (headline keys of fibrobench.latency/1) of every model."""
    lat = _read_json(path, "latency file")
    if lat.get("schema") != "fibrobench.latency/1":
        raise BadInput(path, "schema", f"expected 'fibrobench.latency/1', got {lat.get('schema')!r}")
    models = {}
    for name, m in (lat.get("models") or {}).items():
        if not isinstance(m, dict) or "error" in m:
            continue
        entry = {}
        for prec in ("fp32", "bf16"):
            blk = m.get(prec)
            if isinstance(blk, dict):
                entry[prec] = {k: _num(blk.get(k)) for k in ("p50_ms", "images_per_s", "peak_memory_bytes")}
        tr = m.get("train")
        if isinstance(tr, dict):
            entry["train"] = {k: _num(tr.get(k)) for k in ("p50_ms", "peak_memory_bytes")}
        models[name] = entry
    dev = lat.get("device") or {}
    return {"device": {"type": dev.get("type") or dev.get("device"), "name": dev.get("name")},
            "input_size": (lat.get("settings") or {}).get("input_size"), "models": models, "path": str(path)}


def snapshot(run_dir, latency_path=None, summarize=None, command=None) -> dict:
    """Everything the gate compares, read from RUN_DIR (and RUN_DIR/latency.json or `latency_path`)."""
    from bench.provenance import collect
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(run_dir, None, "run directory not found")
    run = _read_json(run_dir / "run.json", "run.json")
    summary = (summarize or _summarize)(run_dir)
    lat_path = Path(latency_path) if latency_path else run_dir / "latency.json"
    latency = latency_from_file(lat_path) if (latency_path or lat_path.is_file()) else None
    return {"schema": BASELINE_SCHEMA, "run_dir": str(run_dir),
            "protocol_sha256": run.get("protocol_sha256"),
            "data_fingerprint": (run.get("data") or {}).get("fingerprint"),
            "splits_sha256": run.get("splits_sha256"),
            "class_names": summary.get("class_names"),
            "metrics": metrics_from_summary(summary, run_dir),
            "latency": latency, "provenance": collect(command)}


def check_metrics(metrics, path, field: str = "metrics") -> None:
    """{model: {metric: {"value": finite number or null, "ci": [lo, hi] of finite numbers or nulls}}}, at least one
    value: anything else (a string, inf, NaN, an empty mapping) is BadInput naming the key."""
    if not isinstance(metrics, dict):
        raise BadInput(path, field, "missing or not a mapping")
    n = 0
    for model, mets in metrics.items():
        if not isinstance(mets, dict):
            raise BadInput(path, f"{field}.{model}", "expected a mapping of metric name to {value, ci}")
        for metric, entry in mets.items():
            where = f"{field}.{model}.{metric}"
            if not isinstance(entry, dict) or "value" not in entry:
                raise BadInput(path, where, "expected a mapping with 'value' (and 'ci')")
            ci = entry.get("ci")
            if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
                raise BadInput(path, f"{where}.ci", f"expected [low, high], got {ci!r}")
            for key, x in [("value", entry["value"]), *((f"ci[{i}]", c) for i, c in enumerate(ci or []))]:
                if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)):
                    raise BadInput(path, f"{where}.{key}", f"expected a finite number or null, got {x!r}")
            n += entry["value"] is not None
    if n == 0:
        raise BadInput(path, field, "no metric values: a baseline must hold the metrics of at least one model "
                                    "(was it written from a failed or empty run?)")


def load_baseline(path) -> dict:
    path = Path(path)
    base = _read_json(path, "baseline")
    if base.get("schema") != BASELINE_SCHEMA:
        raise BadInput(path, "schema", f"expected {BASELINE_SCHEMA!r}, got {base.get('schema')!r}")
    check_metrics(base.get("metrics"), path)
    return base


def check_metric_names(base: dict, metrics: list[str] | None, path) -> None:
    """--metrics names metrics that the baseline holds; without --metrics, at least one baseline metric has a
    known direction (otherwise nothing would be compared)."""
    held = sorted({m for mets in base["metrics"].values() for m in mets})
    if metrics is not None:
        unknown = [m for m in metrics if m not in held]
        if unknown or not metrics:
            raise BadInput("<command line>", "--metrics", f"unknown metric(s) {unknown or metrics}; the baseline "
                                                          f"holds: {', '.join(held)}")
    elif not set(held) & (HIGHER_IS_BETTER | LOWER_IS_BETTER):
        raise BadInput(path, "metrics", f"none of {held} has a known direction; name the ones to gate with --metrics")


def baseline_from_run(snap: dict, run_dir) -> dict:
    """The snapshot to store as a baseline: only from a complete run, undefined (non-finite) values as null."""
    status = _read_json(Path(run_dir) / "run.json", "run.json").get("status")
    if status != "complete":
        raise BadInput(Path(run_dir) / "run.json", "status", f"the run is {status!r}, not 'complete': a baseline "
                                                             "must come from a complete run")
    for mets in snap["metrics"].values():
        for entry in mets.values():
            entry["value"] = entry["value"] if entry["value"] is not None and math.isfinite(entry["value"]) else None
            entry["ci"] = [c if c is not None and math.isfinite(c) else None for c in entry["ci"]]
    check_metrics(snap["metrics"], run_dir, "metrics")
    return snap


# ---------------------------------------------------------------- comparison (pure)

def parse_metric_tol(text) -> dict:
    """'0.01' -> {"default": 0.01}; 'accuracy=0.005,macro_f1=0.02' (optionally default=...)."""
    if isinstance(text, (int, float)):
        return {"default": float(text)}
    out = {"default": DEFAULTS["metric_tol"]}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        key, _, val = part.rpartition("=")
        try:
            out[key or "default"] = float(val)
        except ValueError:
            raise BadInput("<command line>", "--metric-tol", f"not a number: {part!r}") from None
        if not math.isfinite(out[key or "default"]) or out[key or "default"] < 0:
            raise BadInput("<command line>", "--metric-tol", f"must be a finite number >= 0: {part!r}")
    return out


def _check(name, kind, model, status, baseline, current, limit, message):
    return {"name": name, "kind": kind, "model": model, "status": status, "baseline": baseline,
            "current": current, "limit": limit, "message": message}


def _bad(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def metric_check(model: str, metric: str, base: dict, cur: dict | None, abs_tol: float, ci_scale: float) -> dict:
    """One headline metric against the CI-aware rule in the module docstring."""
    name = f"metric/{model}/{metric}"
    higher = metric not in LOWER_IS_BETTER
    b = base.get("value")
    if _bad(b):   # e.g. PPV of a class the baseline model never predicted: undefined, nothing to hold it to
        return _check(name, "metric", model, "skip", None, (cur or {}).get("value"), None, "no baseline value")
    if cur is None or _bad(cur.get("value")):
        return _check(name, "metric", model, "fail", b, None, None, "missing or NaN in the current run")
    c = cur["value"]
    ci = list(base.get("ci") or []) + [None, None]
    lo, hi = ci[0], ci[1]
    arm = (b - lo) if higher and not _bad(lo) else (hi - b) if not higher and not _bad(hi) else 0.0
    tol = max(abs_tol, ci_scale * max(arm, 0.0))
    limit = b - tol if higher else b + tol
    drop = (b - c) if higher else (c - b)
    if (c < limit) if higher else (c > limit):
        status, msg = "fail", f"worse by {drop:.4f} > tolerance {tol:.4f}"
    elif drop > abs_tol:
        status, msg = "warn", f"worse by {drop:.4f}: beyond abs tol {abs_tol:.4f} but inside the baseline CI arm {arm:.4f}"
    else:
        status, msg = "pass", f"change {c - b:+.4f} (tolerance {tol:.4f})"
    return _check(name, "metric", model, status, b, c, limit, msg)


def _rise_check(name, kind, model, b, c, pct, worse_if_higher=True):
    if _bad(b):
        return _check(name, kind, model, "skip", b, c, None, "no baseline value")
    if _bad(c):
        return _check(name, kind, model, "fail", b, c, None, "missing in the current run")
    limit = b * (1 + pct / 100) if worse_if_higher else b * (1 - pct / 100)
    change = 100 * (c - b) / b if b else float("inf")
    bad = c > limit if worse_if_higher else c < limit
    return _check(name, kind, model, "fail" if bad else "pass", b, c, limit,
                  f"{change:+.1f}% (limit {'+' if worse_if_higher else '-'}{pct:g}%)")


def compare(base: dict, cur: dict, metric_tol=None, ci_scale: float = DEFAULTS["ci_scale"],
            latency_tol: float = DEFAULTS["latency_tol"], memory_tol: float = DEFAULTS["memory_tol"],
            metrics: list[str] | None = None, allow_different: bool = False) -> list[dict]:
    """All checks of `cur` (a snapshot) against `base` (a baseline). Raises BadInput on identity mismatch
    unless allow_different."""
    tols = metric_tol if isinstance(metric_tol, dict) else parse_metric_tol(
        DEFAULTS["metric_tol"] if metric_tol is None else metric_tol)
    checks = []
    for key, label in (("data_fingerprint", "data fingerprint"), ("protocol_sha256", "protocol sha256"),
                       ("class_names", "class names")):
        if key == "class_names" and (base.get(key) is None or cur.get(key) is None):
            continue   # baselines written before the task was protocol data do not record them
        same = base.get(key) == cur.get(key)
        if not same and not allow_different:
            raise BadInput(cur.get("run_dir", "<run>"), key,
                           f"{label} differs from the baseline ({str(cur.get(key))[:12]} vs {str(base.get(key))[:12]}); "
                           "runs are not comparable (--allow-different to compare anyway)")
        checks.append(_check(f"identity/{key}", "identity", None, "pass" if same else "warn", base.get(key),
                             cur.get(key), None, "same" if same else f"{label} differs (allowed)"))
    for model, mets in sorted(base["metrics"].items()):
        cur_m = cur["metrics"].get(model)
        if cur_m is None:
            checks.append(_check(f"metric/{model}", "metric", model, "fail", None, None, None,
                                 "model missing from the current run"))
            continue
        for metric, bval in sorted(mets.items()):
            if metrics is not None and metric not in metrics:
                continue
            if metrics is None and metric not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
                continue  # unknown direction: not gated unless asked for by name
            tol = tols.get(metric, tols["default"])
            checks.append(metric_check(model, metric, bval, cur_m.get(metric), tol, ci_scale))
    checks += latency_checks(base.get("latency"), cur.get("latency"), latency_tol, memory_tol)
    return checks


def latency_checks(base_lat, cur_lat, latency_tol: float, memory_tol: float) -> list[dict]:
    if not base_lat:
        return []
    if not cur_lat:
        return [_check("latency", "latency", None, "skip", None, None, None,
                       "no latency.json in the current run (pass --latency FILE)")]
    bd, cd = base_lat.get("device") or {}, cur_lat.get("device") or {}
    if (bd.get("type"), bd.get("name")) != (cd.get("type"), cd.get("name")):
        return [_check("latency", "latency", None, "skip", bd.get("name"), cd.get("name"), None,
                       "different device: latency and memory are not comparable")]
    if base_lat.get("input_size") != cur_lat.get("input_size"):
        return [_check("latency", "latency", None, "skip", base_lat.get("input_size"), cur_lat.get("input_size"),
                       None, "different input size: latency and memory are not comparable")]
    out = []
    for model, bm in sorted(base_lat.get("models", {}).items()):
        cm = cur_lat.get("models", {}).get(model)
        if cm is None:
            out.append(_check(f"latency/{model}", "latency", model, "skip", None, None, None,
                              "model not measured in the current latency file"))
            continue
        for blk in ("fp32", "bf16"):
            if blk not in bm:
                continue
            b, c = bm[blk], cm.get(blk) or {}
            out.append(_rise_check(f"latency/{model}/{blk}/p50_ms", "latency", model,
                                   b.get("p50_ms"), c.get("p50_ms"), latency_tol))
            out.append(_rise_check(f"throughput/{model}/{blk}/images_per_s", "throughput", model,
                                   b.get("images_per_s"), c.get("images_per_s"), latency_tol, worse_if_higher=False))
            out.append(_rise_check(f"memory/{model}/{blk}/peak_memory_bytes", "memory", model,
                                   b.get("peak_memory_bytes"), c.get("peak_memory_bytes"), memory_tol))
        if "train" in bm:
            out.append(_rise_check(f"memory/{model}/train/peak_memory_bytes", "memory", model,
                                   bm["train"].get("peak_memory_bytes"),
                                   (cm.get("train") or {}).get("peak_memory_bytes"), memory_tol))
    return out


def result(checks: list[dict], tolerances: dict, baseline_path, run_dir, command=None) -> dict:
    from bench.provenance import collect
    counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
    return {"schema": RESULT_SCHEMA, "verdict": "fail" if counts["fail"] else "pass", "counts": counts,
            "tolerances": tolerances, "baseline": str(baseline_path), "run_dir": str(run_dir),
            "checks": checks, "provenance": collect(command)}


# ---------------------------------------------------------------- output

def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    s = str(x)
    return s[:12] if len(s) > 16 else s


def format_table(res: dict) -> str:
    rows = [("status", "check", "baseline", "current", "limit", "note")]
    for c in res["checks"]:
        rows.append((c["status"].upper(), c["name"], _fmt(c["baseline"]), _fmt(c["current"]), _fmt(c["limit"]),
                     c["message"]))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join([*(r[i].ljust(w[i]) for i in range(5)), r[5]]).rstrip() for r in rows]
    n = res["counts"]
    lines.append(f"gate {res['verdict'].upper()}: {n['pass']} pass, {n['warn']} warn, {n['fail']} fail, {n['skip']} skip")
    return "\n".join(lines)


def junit_xml(res: dict) -> str:
    """JUnit XML: one <testcase> per check; fail -> <failure>, skip -> <skipped>, warn -> <system-out>."""
    n = res["counts"]
    suites = ET.Element("testsuites", name="fibrobench gate", tests=str(len(res["checks"])),
                        failures=str(n["fail"]), skipped=str(n["skip"]), errors="0")
    suite = ET.SubElement(suites, "testsuite", name="fibrobench.gate", tests=str(len(res["checks"])),
                          failures=str(n["fail"]), skipped=str(n["skip"]), errors="0")
    for c in res["checks"]:
        parts = c["name"].split("/")
        case = ET.SubElement(suite, "testcase", classname="gate." + ".".join(parts[:-1] or [c["kind"]]),
                             name=parts[-1])
        detail = f"baseline={_fmt(c['baseline'])} current={_fmt(c['current'])} limit={_fmt(c['limit'])}: {c['message']}"
        if c["status"] == "fail":
            ET.SubElement(case, "failure", message=c["message"], type=c["kind"]).text = detail
        elif c["status"] == "skip":
            ET.SubElement(case, "skipped", message=c["message"])
        elif c["status"] == "warn":
            ET.SubElement(case, "system-out").text = "WARNING " + detail
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
