"""summarize_run on a fake RUN_DIR, the HTML report (sections, banners, escaping, no external refs) and the CLI."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from bench.scripts.fake_run import make_fake_run

from bench.cli import main as cli
from reports.render import render_report
from reports.summary import summarize_run

N_BOOT = 500


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run") / "run", models=("resnet50", "resnet50_cbam", "vgg16"),
                         n_patients=50, images_per_patient=3)


@pytest.fixture(scope="module")
def summary(run_dir):
    return summarize_run(run_dir, n_boot=N_BOOT, seed=0)


def _ensemble(run_dir, model):
    with np.load(run_dir / "ensemble" / f"{model}.npz") as z:
        return z["labels"], z["probs"].argmax(1), z["probs"]


def test_summary_values_match_sklearn_on_the_files(run_dir, summary):
    assert summary["schema"] == "fibrobench.summary/1"
    y, yhat, probs = _ensemble(run_dir, "resnet50_cbam")
    ens = summary["models"]["resnet50_cbam"]["ensemble"]
    assert summary["n_test"] == len(y)
    assert ens["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, yhat))
    # sklearn's macro convention (labels=None: classes in the truth or the predictions; undefined -> 0)
    assert ens["macro_f1"]["value"] == pytest.approx(skm.f1_score(y, yhat, average="macro", zero_division=0))
    # labels= matters: without it sklearn weights by the index among present labels, not by stage distance
    assert ens["qwk"]["value"] == pytest.approx(skm.cohen_kappa_score(y, yhat, weights="quadratic", labels=range(5)))
    present = [k for k in range(5) if 0 < np.sum(y == k) < len(y)]  # macro over the stages present in the holdout
    assert ens["auroc_macro"]["value"] == pytest.approx(np.mean([skm.roc_auc_score(y == k, probs[:, k])
                                                                 for k in present]))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "ece", "brier"):
        lo, hi = ens[name]["ci"]
        assert lo <= ens[name]["value"] <= hi, name
    # Obuchowski's variance needs two clusters holding each class's images; else the CI is said not estimable
    with np.load(run_dir / "ensemble" / "resnet50_cbam.npz") as z:
        ids = z["ids"].astype(str)
    groups = json.loads((run_dir / "splits.json").read_text())["images"]
    one_cluster = any(len({groups[i]["group"] for i in ids[y == k]}) == 1 for k in present)
    if one_cluster:
        assert ens["auroc_macro"]["ci"] == [None, None] and "not estimable" in ens["auroc_macro"]["method"]
    else:
        assert ens["auroc_macro"]["ci"][0] <= ens["auroc_macro"]["value"] <= ens["auroc_macro"]["ci"][1]
    f2 = ens["per_class"]["F2"]
    assert f2["support"] == int(np.sum(y == 2))
    assert f2["recall"]["value"] == pytest.approx(np.mean(yhat[y == 2] == 2))
    assert set(f2) >= {"precision", "recall", "f1", "specificity", "npv", "support", "auroc"}


def test_clusters_are_patients_and_bootstrap_is_clustered(summary):
    assert summary["clusters"]["clustered"] is True
    assert summary["clusters"]["n_test_clusters"] * 3 == summary["n_test"]
    assert "cluster bootstrap" in summary["models"]["resnet50"]["ensemble"]["accuracy"]["method"]
    assert "clustered" in summary["models"]["resnet50"]["ensemble"]["auroc_cutoffs"][">=F2"]["method"]


def test_image_level_split_still_resamples_duplicate_clusters(tmp_path):
    rd = make_fake_run(tmp_path / "img", models=("resnet50",), n_patients=30, level="image")
    s = summarize_run(rd, n_boot=100)
    assert s["clusters"]["clustered"] and "leakage.json" in s["clusters"]["source"]
    assert "cluster bootstrap" in s["models"]["resnet50"]["ensemble"]["accuracy"]["method"]
    (rd / "leakage.json").unlink()  # without the duplicate clusters the images are independent
    s = summarize_run(rd, n_boot=100)
    assert not s["clusters"]["clustered"] and s["models"]["resnet50"]["ensemble"]["accuracy"]["method"] == "Wilson"


def test_perfect_clustered_proportion_gets_a_cluster_wilson_interval(tmp_path):
    rd = make_fake_run(tmp_path / "p", models=("resnet50",), n_patients=40, quality={"resnet50": 12.0})
    s = summarize_run(rd, n_boot=200)
    ens = s["models"]["resnet50"]["ensemble"]
    with np.load(rd / "ensemble" / "resnet50.npz") as z:
        y, ids = z["labels"], z["ids"].astype(str)
    groups = json.loads((rd / "splits.json").read_text())["images"]
    assert ens["accuracy"]["value"] == 1.0
    n_clusters = len({groups[i]["group"] for i in ids})
    assert ens["accuracy"]["ci"] == pytest.approx(list(proportion_confint(n_clusters, n_clusters, method="wilson")))
    assert "Wilson on clusters" in ens["accuracy"]["method"] and ens["accuracy"]["ci"][0] < 1
    c = int(np.bincount(y).argmax())
    rec = ens["per_class"][f"F{c}"]["recall"]
    assert rec["n"] == len({groups[i]["group"] for i in ids[y == c]})
    # F1 = 100 %: the bootstrap would collapse to [1, 1]; Wilson on the clusters holding that class instead
    f1 = ens["per_class"][f"F{c}"]["f1"]
    assert f1["value"] == 1.0 and "Wilson on clusters" in f1["method"] and f1["ci"][0] < 1
    assert f1["ci"] == pytest.approx(list(proportion_confint(rec["n"], rec["n"], method="wilson")))
    # AUROC = 1: the DeLong variance is 0; the point interval is flagged, not presented as certainty
    auc = ens["per_class"][f"F{c}"]["auroc"]
    assert auc["value"] == 1.0 and auc["ci"] == [1.0, 1.0] and auc["degenerate"] is True


def test_merge_partitions_is_transitive():
    from reports.rundir import merge_partitions
    m = merge_partitions({"a": "p1", "b": "p1", "c": "p2", "d": "p3"}, {"b": 7, "c": 7, "d": 8})
    assert m["a"] == m["b"] == m["c"] and m["d"] != m["a"]


def test_folds_and_oof(run_dir, summary):
    folds = summary["models"]["resnet50"]["folds"]
    vals = []
    for k in range(5):
        with np.load(run_dir / "jobs" / "resnet50" / f"fold{k}" / "val_logits.npz") as z:
            vals.append(np.mean(z["logits"].argmax(1) == z["labels"]))
    assert folds["accuracy"]["values"] == pytest.approx(vals)
    assert folds["accuracy"]["mean"] == pytest.approx(np.mean(vals))
    assert folds["accuracy"]["sd"] == pytest.approx(np.std(vals, ddof=1))
    oof = summary["models"]["resnet50"]["oof"]
    assert oof["n"] == sum(len(json.loads((run_dir / "splits.json").read_text())["folds"][k]["val"]) for k in range(5))


def test_comparisons_against_baseline_with_holm(summary):
    comps = summary["comparisons"]
    assert {(c["model"], c["baseline"]) for c in comps} == {("resnet50_cbam", "resnet50"), ("vgg16", "resnet50")}
    raw = [c["mcnemar"]["p"] for c in comps]
    holm = [c["mcnemar"]["p_holm"] for c in comps]
    assert all(h >= p for h, p in zip(holm, raw))
    c = comps[0]
    d = c["holdout_diff"]["accuracy"]
    assert d["value"] == pytest.approx(d["a"] - d["b"])
    assert d["ci"][0] <= d["value"] <= d["ci"][1]
    assert c["folds"]["wilcoxon"]["min_possible_p"] == pytest.approx(0.0625)
    nb = c["folds"]["nadeau_bengio"]
    assert nb["se"] > 0 and nb["p"] >= c["folds"]["paired_t"]["p"]


def test_paired_delong_between_models_is_holm_corrected(tmp_path):
    from statsmodels.stats.multitest import multipletests

    from reports import stats as S
    run_dir = make_fake_run(tmp_path / "d", models=("resnet50", "resnet50_cbam", "vgg16"), n_patients=150,
                            images_per_patient=2, quality={"resnet50": 1.0, "resnet50_cbam": 1.5, "vgg16": 0.8})
    summary = summarize_run(run_dir, n_boot=20)
    groups = json.loads((run_dir / "splits.json").read_text())["images"]
    comps = summary["comparisons"]
    for c in comps:
        ya, _, pa = _ensemble(run_dir, c["model"])
        yb, _, pb = _ensemble(run_dir, c["baseline"])
        with np.load(run_dir / "ensemble" / f"{c['baseline']}.npz") as z:
            ids = z["ids"].astype(str)
        np.testing.assert_array_equal(ya, yb)
        ref = S.paired_auroc_test(yb, pa, pb, S.group_codes([groups[i]["group"] for i in ids]))
        d = c["delong"]
        assert d["metric"] == "auroc_macro" and "clustered" in d["method"]
        assert d["diff"] == pytest.approx(ref["diff"]) and d["se"] == pytest.approx(ref["se"])
        assert d["p"] == pytest.approx(ref["p"])
        assert d["a"] == pytest.approx(summary["models"][c["model"]]["ensemble"]["auroc_macro"]["value"])
        assert d["b"] == pytest.approx(skm.roc_auc_score(yb, pb, multi_class="ovr"))
        assert d["ci"][0] < d["diff"] < d["ci"][1]
    holm = multipletests([c["delong"]["p"] for c in comps], method="holm")[1]
    assert [c["delong"]["p_holm"] for c in comps] == pytest.approx(list(holm))


def test_summary_is_deterministic_and_json_clean(run_dir, summary):
    again = summarize_run(run_dir, n_boot=N_BOOT, seed=0)
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)
    json.dumps(summary, allow_nan=False)  # no NaN/inf leaks into the JSON


def test_wilson_when_images_are_independent(tmp_path):
    rd = make_fake_run(tmp_path / "r", models=("resnet50",), n_patients=80, images_per_patient=1)
    s = summarize_run(rd, n_boot=200)
    acc = s["models"]["resnet50"]["ensemble"]["accuracy"]
    assert acc["method"] == "Wilson" and s["clusters"]["clustered"] is False
    lo, hi = proportion_confint(acc["k"], acc["n"], method="wilson")
    assert acc["ci"] == pytest.approx([lo, hi])


def test_missing_ensemble_file_is_rebuilt_from_fold_logits(tmp_path, run_dir, summary):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "ensemble")
    shutil.rmtree(copy / "oof")
    s = summarize_run(copy, n_boot=N_BOOT)
    for m in ("resnet50", "resnet50_cbam"):
        assert s["models"][m]["ensemble"]["accuracy"]["value"] == summary["models"][m]["ensemble"]["accuracy"]["value"]
        assert s["models"][m]["ensemble"]["source"] == "mean of fold test logits"


def test_incomplete_fold_is_excluded_and_warned(tmp_path, run_dir):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "jobs" / "vgg16" / "fold3" / "DONE").unlink()
    s = summarize_run(copy, n_boot=100)
    assert s["models"]["vgg16"]["folds"]["folds"] == [0, 1, 2, 4]
    assert any("vgg16: only 4 of 5" in w for w in s["warnings"])


def _html(run_dir, **kw):
    html, _ = render_report(run_dir, n_boot=200, **kw)
    return html


@pytest.fixture(scope="module")
def html(run_dir):
    return _html(run_dir)


EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def odd_html(tmp_path_factory):
    """A smoke run with random-init weights, '<script>' in names, and no latency.json or leakage.json."""
    rd = make_fake_run(tmp_path_factory.mktemp("odd") / "r<script>", models=("resnet50", "<script>x"),
                       n_patients=25, smoke=True, random_init=("<script>x",), write_latency=False,
                       write_leakage=False)
    run = json.loads((rd / "run.json").read_text())
    run["protocol"]["name"] = EVIL
    (rd / "run.json").write_text(json.dumps(run))
    return _html(rd)


def test_report_sections_and_self_contained(html):
    for sec in ("verdict", "provenance", "data", "leakage", "models", "per-class", "confusion", "tests",
                "calibration", "efficiency", "claims", "tuning"):
        assert f'id="{sec}"' in html, sec
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html
    assert "<svg" in html
    assert "0123456789abcdef0123456789abcdef01234567" in html  # git sha from run.json provenance
    assert "No claims file was given" in html
    assert 'id="banner-smoke"' not in html and 'id="banner-random-init"' not in html


def test_report_shows_the_summary_numbers(html, summary):
    acc = summary["models"]["resnet50_cbam"]["ensemble"]["accuracy"]
    assert f"{100 * acc['value']:.2f} %" in html
    assert f"[{100 * acc['ci'][0]:.2f}, {100 * acc['ci'][1]:.2f}]" in html


def test_smoke_and_random_init_banners(odd_html):
    assert 'id="banner-smoke"' in odd_html and "SMOKE RUN" in odd_html
    assert 'id="banner-random-init"' in odd_html


def test_missing_inputs_are_said_plainly(odd_html):
    assert "leakage.json is missing" in odd_html
    assert "latency.json is missing" in odd_html


def test_script_in_names_is_escaped(odd_html):
    assert "<script" not in odd_html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in odd_html  # protocol name
    assert "&lt;script&gt;x" in odd_html and "r&lt;script&gt;" in odd_html  # model name, run directory


def test_cli_writes_report_and_summary_with_provenance(tmp_path, run_dir):
    out, js = tmp_path / "r.html", tmp_path / "s.json"
    assert cli(["report", str(run_dir), "-o", str(out), "--json", str(js), "--n-boot", "200"]) == 0
    s = json.loads(js.read_text())
    assert s["schema"] == "fibrobench.summary/1" and "git" in s["provenance"]
    assert s["bootstrap"]["n_boot"] == 200
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_bad_input_exit_2_and_nothing_written(tmp_path, run_dir, capsys):
    out = tmp_path / "r.html"
    assert cli(["report", str(tmp_path / "nope"), "-o", str(out)]) == 2
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    (bad / "run.json").write_text("{not json")
    assert cli(["report", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and len(err.strip().splitlines()) == 2
    (bad / "run.json").write_text((run_dir / "run.json").read_text())
    (bad / "ensemble" / "resnet50.npz").write_bytes(b"garbage")
    assert cli(["report", str(bad), "-o", str(out)]) == 2
    assert "ensemble/resnet50.npz" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".r.html*"))


def test_claims_section_uses_the_claims_audit(run_dir):
    claims = Path(__file__).resolve().parent.parent / "protocols" / "afif2025" / "claims.yaml"
    html = _html(run_dir, claims_path=claims)
    assert 'id="claims-audit"' in html and "No claims file was given" not in html


def test_report_states_the_macro_convention_and_the_paired_delong_test(html, summary):
    from reports.metrics import MACRO_CONVENTION
    text = re.sub(r"\s+", " ", html)
    assert MACRO_CONVENTION[:60].capitalize() in text
    assert "Δ macro AUROC, paired DeLong CI" in text
    assert summary["comparisons"][0]["delong"]["method"] in text
    assert "for accuracy" in text and "95 % CIs:  for accuracy" not in text   # the CI method is named
