"""Run comparison: image- vs patient-level runs of the same data, comparability checks, deltas, HTML."""
import re

import pytest

from bench.scripts.fake_run import make_fake_run

from bench.cli import main as cli
from reports.compare import compare_summaries, diff_entry, flatten, protocol_differences
from reports.summary import summarize_run


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    img = make_fake_run(root / "image", models=("resnet50", "resnet50_cbam"), level="image", n_patients=40)
    pat = make_fake_run(root / "patient", models=("resnet50", "resnet50_cbam"), level="patient", n_patients=40)
    other = make_fake_run(root / "other", models=("resnet50",), level="patient", n_patients=40,
                          fingerprint="0" * 64, protocol_extra={"epochs": 9})
    runs = [img, pat, other]
    return runs, [summarize_run(r, n_boot=300) for r in runs]


def _runjson(run):
    import json
    return json.loads((run / "run.json").read_text())


def test_protocol_differences_key_by_key():
    diffs = protocol_differences([{"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}}])
    assert diffs == [{"key": "b.c", "values": [2, 5]}, {"key": "b.d", "values": [3, None]}]
    assert flatten({"x": {"y": {"z": 1}}}) == {"x.y.z": 1}


def test_diff_entry_normal_approximation():
    a = {"value": 0.80, "ci": [0.70, 0.90]}
    b = {"value": 0.95, "ci": [0.92, 0.98]}
    d = diff_entry(a, b)
    se = ((0.2 / 3.919927969) ** 2 + (0.06 / 3.919927969) ** 2) ** 0.5
    assert d["value"] == pytest.approx(0.15)
    assert d["ci"] == pytest.approx([0.15 - 1.959963984540054 * se, 0.15 + 1.959963984540054 * se])


def test_image_vs_patient_same_data(summaries):
    runs, sums = summaries
    cmp_ = compare_summaries(sums[:2], [_runjson(r) for r in runs[:2]])
    c = cmp_["comparability"]
    assert c["same_data"] and c["same_models"] and c["comparable"]
    assert {"key": "level", "values": ["image", "patient"]} in c["protocol_differences"]
    assert [r["level"] for r in cmp_["runs"]] == ["image", "patient"]
    row = cmp_["models"]["resnet50_cbam"]["accuracy"]
    a, b = (s["models"]["resnet50_cbam"]["ensemble"]["accuracy"]["value"] for s in sums[:2])
    assert row["values"] == [a, b]
    assert row["diffs"][0]["value"] == pytest.approx(b - a)
    assert row["diffs"][0]["ci"][0] < b - a < row["diffs"][0]["ci"][1]


def test_different_data_and_models_are_flagged(summaries):
    runs, sums = summaries
    cmp_ = compare_summaries([sums[1], sums[2]], [_runjson(runs[1]), _runjson(runs[2])])
    c = cmp_["comparability"]
    assert not c["same_data"] and not c["comparable"] and not c["same_models"]
    assert c["common_models"] == ["resnet50"]
    assert {"key": "epochs", "values": [2, 9]} in c["protocol_differences"]
    assert list(cmp_["models"]) == ["resnet50"]


def test_cli_compare_html(tmp_path, summaries):
    runs, _ = summaries
    out = tmp_path / "compare.html"
    assert cli(["report", str(runs[0]), str(runs[1]), "-o", str(out), "--n-boot", "100",
                "--json", str(tmp_path / "c.json")]) == 0
    html = out.read_text()
    for sec in ("runs", "comparability", "metrics", "table-protocol-diff"):
        assert f'id="{sec}"' in html
    assert "image" in html and "patient" in html and "Δ run 2 − run 1" in html
    assert not re.search(r"https?://", html) and "<script" not in html.lower()


def test_cli_claims_with_several_runs_is_a_usage_error(tmp_path, summaries, capsys):
    runs, _ = summaries
    assert cli(["report", str(runs[0]), str(runs[1]), "--claims", "x.yaml", "-o", str(tmp_path / "c.html")]) == 2
    assert "--claims" in capsys.readouterr().err and not (tmp_path / "c.html").exists()
