"""Torch-free view of RUN_DIR/shortcuts.json: validation, template context, a figure and verdict-summary lines."""
from __future__ import annotations

import math
import re
from pathlib import Path

from reports.errors import ReportInputError

SCHEMA = "fibrobench.shortcuts/1"
VERDICTS = ("clean", "suspect", "shortcut")
_DATA_URI = re.compile(r"^data:image/png;base64,[A-Za-z0-9+/=]+$")
REGION_LABEL = {"sector": "tissue (sector) removed", "outside": "everything outside the sector removed",
                "text": "burned-in text removed"}


def _pct(x):
    return None if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else 100.0 * float(x)


def _p(x) -> str:
    """A p-value for the section: 3 significant digits, "—" when undefined."""
    return "—" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.3g}"


def _ci_pct(ci):
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return [None, None]
    return [_pct(ci[0]), _pct(ci[1])]


def validate(doc, path="shortcuts.json") -> dict:
    """The document if it is a shortcuts.json this view can show; ReportInputError naming the field otherwise."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ReportInputError(path, "schema", f"expected {SCHEMA!r}")
    models = doc.get("models")
    if not isinstance(models, dict):
        raise ReportInputError(path, "models", "missing or not an object")
    for name, m in models.items():
        if not isinstance(m, dict) or m.get("verdict") not in VERDICTS:
            raise ReportInputError(path, f"models.{name}.verdict", f"expected one of {', '.join(VERDICTS)}")
        if not isinstance((m.get("regions") or {}).get("conditions"), list):
            raise ReportInputError(path, f"models.{name}.regions.conditions", "missing or not a list")
    return doc


def region_figure(models: dict) -> str | None:
    """Holdout accuracy per region condition with 95 % CIs, one group per model, against the majority-class rate."""
    from reports.figures import plt, to_svg

    rows = [(name, c) for name, m in models.items() for c in m["regions"]["conditions"]]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.34 * (len(rows) + len(models)) + 1.0))
    y, labels, k = [], [], 0
    for name, m in models.items():
        o = m["regions"]["original"]
        items = [("unmodified", o)] + [(f"{c['region']} / {c['fill']}", c["accuracy"]) for c in m["regions"]["conditions"]]
        for lab, a in items:
            v, lo, hi = (_pct(a.get("value")), *_ci_pct(a.get("ci")))
            if v is not None:
                ax.plot([lo if lo is not None else v, hi if hi is not None else v], [k, k], color="#5b6475", lw=1.2)
                ax.plot([v], [k], "o", color="#1f5fa8" if lab == "unmodified" else "#c0504d", ms=4)
            y.append(k)
            labels.append(f"{name}: {lab}")
            k += 1
        maj = _pct(m["regions"].get("majority_rate"))
        if maj is not None:
            ax.plot([maj, maj], [k - len(items) - 0.4, k - 0.6], color="#999", ls=":", lw=1)
        k += 1
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="holdout accuracy (%), 95 % CI; dotted: majority-class rate", xlim=(0, 100))
    return to_svg(fig)


def _gallery(att: dict) -> list[dict]:
    """Gallery cells grouped by class: [{"class", "correct": [...], "wrong": [...]}], only well-formed PNG data URIs."""
    by = {}
    for g in (att or {}).get("gallery") or []:
        png = g.get("png")
        if not (isinstance(png, str) and _DATA_URI.match(png)):
            continue
        cell = by.setdefault(str(g.get("class")), {"class": str(g.get("class")), "correct": [], "wrong": []})
        cell["correct" if g.get("correct") else "wrong"].append({"png": png, "predicted": str(g.get("predicted"))})
    return list(by.values())


def shortcuts_context(doc: dict, path="shortcuts.json") -> dict:
    """Everything the shortcuts section template needs."""
    doc = validate(doc, path)
    models = []
    for name, m in doc["models"].items():
        reg = m["regions"]
        conds = [{"label": REGION_LABEL.get(c.get("region"), c.get("region")), "region": c.get("region"),
                  "fill": c.get("fill"), "acc": _pct(c["accuracy"].get("value")), "ci": _ci_pct(c["accuracy"].get("ci")),
                  "drop": _pct(c["drop"].get("value")), "drop_ci": _ci_pct(c["drop"].get("ci")),
                  "flag": "above chance without tissue" if c.get("region") == "sector" and c.get("above_majority") else
                  ("relied on" if c.get("relied_on") else "")} for c in reg["conditions"]]
        att = m.get("attribution") or None
        att_view = None
        if att:
            att_view = {"mass": _pct(att["overall"].get("value")), "mass_ci": _ci_pct(att["overall"].get("ci")),
                        "area": _pct(att["area_share"].get("value")), "n": att.get("n_images"),
                        "layers": att.get("target_layers", []), "outside_heavy": att.get("outside_heavy"),
                        "per_class": [{"class": c["class"], "n": c["n"],
                                       "mass": _pct((c.get("mass") or {}).get("value")),
                                       "ci": _ci_pct((c.get("mass") or {}).get("ci")),
                                       "area": _pct(c.get("area_share"))} for c in att.get("per_class", [])],
                        "gallery": _gallery(att)}
        meta = []
        for col, mm in (m.get("metadata") or {}).items():
            a, pr = mm.get("association") or {}, mm.get("probe") or {}
            meta.append({"column": col, "chi2": a.get("chi2"), "df": a.get("df"), "p": _p(a.get("p")),
                         "p_perm": _p(a.get("p_permutation")), "v": a.get("cramers_v"), "v_ci": a.get("cramers_v_ci"),
                         "n_clusters": a.get("n_clusters"), "associated": a.get("associated"),
                         "probe_acc": _pct((pr.get("accuracy") or {}).get("value")),
                         "probe_ci": _ci_pct((pr.get("accuracy") or {}).get("ci")),
                         "probe_majority": _pct(pr.get("majority_rate")), "encodes": pr.get("encodes"),
                         "levels": [{"level": r.get("level"), "n": r.get("n"), "acc": _pct(r.get("value")),
                                     "ci": _ci_pct(r.get("ci"))} for r in mm.get("accuracy_by_level", [])]})
        models.append({"name": name, "verdict": m["verdict"], "reason": m.get("reason", ""),
                       "folds": m.get("folds", []), "original": _pct(reg["original"].get("value")),
                       "original_ci": _ci_pct(reg["original"].get("ci")), "majority": _pct(reg.get("majority_rate")),
                       "conditions": conds, "attribution": att_view, "metadata": meta})
    return {"models": models, "conditions": doc.get("conditions", []), "input_size": doc.get("input_size"),
            "text_regions_found": doc.get("text_regions_found"), "n_boot": doc.get("n_boot"),
            "metadata_columns": doc.get("metadata_columns", []), "timing": doc.get("timing", {}),
            "figure": region_figure(doc["models"])}


def verdict_lines(doc: dict) -> list[str]:
    """One line per model for the report's verdict summary."""
    return [f"Shortcut audit, {name}: {m['verdict']} — {m.get('reason', '')}" for name, m in doc["models"].items()]


def load(run_dir) -> tuple[dict | None, dict | None, str | None]:
    """(document, view context, error) of RUN_DIR/shortcuts.json; all None when the file is absent."""
    from protocols.runfiles import read_json

    path = Path(run_dir) / "shortcuts.json"
    if not path.exists():
        return None, None, None
    try:
        doc = read_json(path)
        return doc, shortcuts_context(doc, path), None
    except Exception as exc:  # noqa: BLE001 - bad input of either layer (exit_code 2) is shown in the section
        if getattr(exc, "exit_code", None) != 2:
            raise
        return None, None, str(exc)


def render_section(doc: dict, path="shortcuts.json") -> str:
    """The shortcut section alone as a self-contained HTML page (for screenshots and quick looks)."""
    import jinja2

    templates = Path(__file__).parent / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    css = (templates / "base.css").read_text(encoding="utf-8")
    body = env.get_template("shortcuts.html.j2").render(shortcuts_view=shortcuts_context(doc, path))
    return f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><style>{css}</style></head><body>{body}</body></html>'
