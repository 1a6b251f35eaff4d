"""Matplotlib (Agg) figures rendered to inline SVG strings with no external references."""
from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "fibrobench", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})

_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def to_svg(fig) -> str:
    """SVG markup for inlining in HTML5: no XML prolog, DOCTYPE, metadata or namespace URLs (HTML parsing adds them)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = _METADATA.sub("", text)
    return _XMLNS.sub("", text)


def reliability_figure(models: dict) -> str | None:
    """Reliability diagram of each model's holdout ensemble: accuracy vs confidence per bin."""
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfect calibration")
    for name, rel in models.items():
        pts = [(c, a) for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"]) if n]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, label=name)
    ax.set(xlabel="confidence (top label)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title="Reliability, holdout ensemble")
    ax.legend(fontsize=7, frameon=False)
    return to_svg(fig)


def accuracy_latency_figure(points: list[dict]) -> str | None:
    """Holdout accuracy (with CI) against p50 latency; points: {name, latency_ms, acc, lo, hi}."""
    points = [p for p in points if p.get("latency_ms") is not None and p.get("acc") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for p in points:
        lo, hi = p.get("lo"), p.get("hi")
        yerr = [[p["acc"] - lo], [hi - p["acc"]]] if lo is not None and hi is not None else None
        ax.errorbar(p["latency_ms"], p["acc"], yerr=yerr, fmt="o", capsize=3, ms=4)
        ax.annotate(p["name"], (p["latency_ms"], p["acc"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel="latency p50 (ms, batch as measured)", ylabel="holdout accuracy (95 % CI)",
           title="Accuracy vs latency")
    return to_svg(fig)


def class_distribution_figure(class_names, partitions: dict) -> str | None:
    """Grouped bars of class counts per partition (e.g. trainval, test)."""
    partitions = {k: v for k, v in partitions.items() if v}
    if not partitions:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    width = 0.8 / len(partitions)
    for n, (part, counts) in enumerate(partitions.items()):
        xs = [i + (n - (len(partitions) - 1) / 2) * width for i in range(len(class_names))]
        ax.bar(xs, counts, width=width, label=part)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set(ylabel="images", title="Class distribution per partition")
    ax.legend(fontsize=7, frameon=False)
    return to_svg(fig)


def training_curves_figure(curves: dict) -> str | None:
    """Validation accuracy per epoch for every fold of every model; curves: {model: {fold: [(epoch, acc)]}}."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(min(2.4 * len(curves), 12), 2.4), squeeze=False, sharey=True)
    for ax, (model, folds) in zip(axes[0], curves.items()):
        for fold, pts in folds.items():
            if pts:
                ax.plot(*zip(*pts), lw=1, marker=".", ms=3, label=f"fold {fold}")
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("val accuracy")
    return to_svg(fig)
