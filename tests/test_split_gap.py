"""The demo's opening table: image- vs patient-level split of the same data, gap CIs, probe prediction."""
from __future__ import annotations

import json

import pytest

from bench.scripts.fake_run import make_fake_run
from reports.compare import compare_runs
from reports.errors import ReportInputError
from reports.split_gap import split_gap


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap")
    img = make_fake_run(root / "image", models=("resnet50", "resnet50_cbam"), level="image", n_patients=40,
                        quality={"resnet50": 3.0})
    pat = make_fake_run(root / "patient", models=("resnet50",), level="patient", n_patients=40,
                        quality={"resnet50": 1.0}, seed=1)
    return img, pat


def test_gap_is_image_minus_patient_with_the_comparison_ci(runs):
    img, pat = runs
    comp, summaries = compare_runs([img, pat], n_boot=300)
    leak = json.loads((img / "leakage.json").read_text())
    leak["probe"] = {"features": "x", "run_split": {"level": "image", "holdout": 0.9},
                     "group_split": {"level": "patient", "holdout": 0.3}, "gap_holdout": 0.6, "gap_fold_mean": 0.5}
    g = split_gap(comp, leak)
    assert list(g["models"]) == ["resnet50"]                      # only the common model
    for metric in ("accuracy", "macro_f1", "balanced_accuracy"):
        r = g["models"]["resnet50"][metric]
        a = summaries[0]["models"]["resnet50"]["ensemble"][metric]["value"]
        b = summaries[1]["models"]["resnet50"]["ensemble"][metric]["value"]
        d = comp["models"]["resnet50"][metric]["diffs"][0]
        assert r["image"]["value"] == pytest.approx(a) and r["patient"]["value"] == pytest.approx(b)
        assert r["gap"]["value"] == pytest.approx(a - b)
        assert r["gap"]["ci"] == pytest.approx([-d["ci"][1], -d["ci"][0]])
        assert r["gap"]["ci"][0] < r["gap"]["value"] < r["gap"]["ci"][1]
    assert g["models"]["resnet50"]["accuracy"]["gap"]["value"] > 0        # the better-scoring image-level run
    assert g["probe_prediction"]["1-NN"]["gap_holdout"] == 0.6


def test_report_opens_with_the_gap_table(runs, tmp_path):
    from bench.commands.demo import write_split_gap
    from reports.render import render_report

    img, pat = runs
    assert write_split_gap(img, pat) == 0
    html, _ = render_report(img, n_boot=200)
    assert html.index('id="split-gap"') < html.index('id="verdict"')
    assert "Image-level vs patient-level split" in html and "points" in html
    (img / "split_gap.json").write_text('{"schema": "other"}')
    with pytest.raises(ReportInputError):
        render_report(img, n_boot=200)
    (img / "split_gap.json").unlink()
    assert 'id="split-gap"' not in render_report(img, n_boot=200)[0]


def test_needs_two_runs():
    with pytest.raises(ReportInputError):
        split_gap({"runs": [{}], "models": {}})
