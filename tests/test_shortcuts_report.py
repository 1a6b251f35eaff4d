"""The shortcut section of the report: read from shortcuts.json only, validated, escaped, in the verdict summary."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bench.scripts.fake_run import make_fake_run  # noqa: E402

from reports import shortcuts_stats as ST  # noqa: E402
from reports.errors import ReportInputError  # noqa: E402
from reports.shortcuts_view import render_section, shortcuts_context, validate  # noqa: E402

PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


def _doc(name="resnet50", reason=None):
    labels = np.repeat([0, 1, 2], 20)
    codes = np.arange(60)
    w = ST.boot(codes, 200, 0)
    regions = ST.region_tests(labels, labels, {"sector/mean": labels, "outside/mean": np.zeros(60, int)}, codes, w)
    att = ST.attribution_mass(np.full(60, 0.7), np.full(60, 0.5), labels, ["F0", "F1", "F2"], codes,
                              lambda c: ST.boot(c, 200, 0))
    att.update({"n_images": 60, "target_layers": ["layer4"], "gallery": [
        {"class": "F0", "correct": True, "predicted": "F0", "png": PNG},
        {"class": "F1", "correct": False, "predicted": "F2", "png": "javascript:alert(1)"}]})
    meta = {"device": {"association": ST.label_association(labels, (labels % 2).astype(str), codes, n_boot=100),
                       "accuracy_by_level": ST.accuracy_by_level(np.ones(60, bool), (labels % 2).astype(str), codes, 100, 0),
                       "probe": ST.linear_probe(np.eye(2)[labels % 2] + 0.01 * np.arange(60)[:, None],
                                                (labels % 2).astype(str), codes, 100)}}
    v, r = ST.verdict(regions, att, meta)
    return {"schema": "fibrobench.shortcuts/1", "conditions": ["sector/mean", "outside/mean"], "input_size": 64,
            "n_boot": 200, "text_regions_found": 3, "metadata_columns": ["device"],
            "models": {name: {"folds": [0, 1], "verdict": v, "reason": reason or r, "regions": regions,
                              "attribution": att, "metadata": meta}}}


def test_context_and_section_show_the_verdict_and_drop_unsafe_images():
    doc = _doc()
    assert doc["models"]["resnet50"]["verdict"] == "shortcut"
    ctx = shortcuts_context(doc)
    m = ctx["models"][0]
    assert m["original"] == pytest.approx(100) and m["majority"] == pytest.approx(100 / 3)
    assert [c["flag"] for c in m["conditions"]] == ["above chance without tissue", "relied on"]
    assert [len(g["correct"]) + len(g["wrong"]) for g in m["attribution"]["gallery"]] == [1]   # javascript: dropped
    html = render_section(doc)
    assert "SHORTCUT" in html and PNG in html and "javascript:" not in html and "<svg" in html
    assert "Cramér" in html and "permutation p" in html


def test_validate_refuses_malformed_documents():
    with pytest.raises(ReportInputError, match="schema"):
        validate({"schema": "other"})
    bad = _doc()
    bad["models"]["resnet50"]["verdict"] = "fine"
    with pytest.raises(ReportInputError, match="verdict"):
        validate(bad)


def test_report_includes_the_section_and_the_verdict_lines(tmp_path):
    from reports.render import render_report

    run = make_fake_run(tmp_path / "run", models=("resnet50",))
    html, _ = render_report(run, n_boot=200)
    assert 'id="shortcuts"' in html and "shortcuts.json is missing" in html
    assert "Shortcut audit: not run" in html
    evil = '<script>alert("x")</script>'
    (run / "shortcuts.json").write_text(json.dumps(_doc(reason=evil)))
    html, _ = render_report(run, n_boot=200)
    assert "Shortcut audit, resnet50: shortcut" in html and 'class="shortcuts"' in html
    assert evil not in html and "&lt;script&gt;" in html
    (run / "shortcuts.json").write_text(json.dumps({"schema": "nope"}))
    html, _ = render_report(run, n_boot=200)
    assert "shortcuts.json could not be read" in html
