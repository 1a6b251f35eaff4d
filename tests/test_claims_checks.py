"""The claims checks on hand-made papers with known answers, against sklearn / scipy / statsmodels references."""
from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest
import yaml
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from statsmodels.stats.weightstats import DescrStatsW

from reports import stats as S
from reports.claims import load_claims
from reports.claims_checks import audit_claims, check_reproduction, derived_from_counts, grim, reconstruct
from reports.claims_numbers import parse_num

CLASSES = ["A", "B", "C"]
# a known confusion matrix (rows = truth) on a 24-image test set
CM = np.array([[9, 1, 0], [1, 6, 1], [0, 1, 5]])


def _labels(cm):
    y, p = [], []
    for i in range(len(cm)):
        for j in range(len(cm)):
            y += [i] * int(cm[i, j])
            p += [j] * int(cm[i, j])
    return np.array(y), np.array(p)


def _fmt(x, d=3):
    return f"{x:.{d}f}"


def paper(cm=CM):
    """A small consistent 'paper': per-class P/R/F1 and counts printed from the matrix by sklearn, plus folds."""
    y, p = _labels(cm)
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=range(3), zero_division=0)
    n = int(cm.sum())
    per_class, counts = {}, {}
    for c, name in enumerate(CLASSES):
        tp = int(cm[c, c])
        fn = int(cm[c].sum() - tp)
        fp = int(cm[:, c].sum() - tp)
        per_class[name] = {"precision": _fmt(prec[c]), "recall": _fmt(rec[c]), "f1": _fmt(f1[c])}
        counts[name] = {"tp": tp, "fp": fp, "fn": fn, "tn": n - tp - fp - fn}
    # fold models scored on the same 24-image test set: each accuracy is k/24
    folds_a = [f"{100 * round(n * x) / n:.2f}%" for x in (0.92, 0.88, 0.92, 0.96, 0.88)]  # 22, 21, 22, 23, 21 of 24
    folds_b = [f"{100 * round(n * x) / n:.2f}%" for x in (0.83, 0.79, 0.83, 0.75, 0.79)]  # 20, 19, 20, 18, 19 of 24
    a = np.array([float(x[:-1]) for x in folds_a])
    b = np.array([float(x[:-1]) for x in folds_b])
    t = stats.ttest_rel(a, b)
    d = a - b
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    return {
        "schema": "fibrobench.claims/1",
        "paper": {"id": "toy", "title": "a toy paper"},
        "class_names": CLASSES,
        "sets": {"test": {"source": "T1", "counts": dict(zip(CLASSES, map(int, sup))), "total": n}},
        "models": {
            "base": {"run_name": "base", "folds": {"source": "T4", "evaluated_on": "test",
                                                   "values": {"accuracy": folds_b}}},
            "prop": {
                "run_name": "prop",
                "results": [
                    {"id": "main", "source": "T3", "kind": "ensemble", "evaluated_on": "test",
                     "metrics": {"accuracy": f"{100 * accuracy_score(y, p):.2f}%"}, "per_class": per_class},
                    {"id": "counts", "source": "T6", "kind": "ensemble", "evaluated_on": "test",
                     "equivalent_to": "main", "counts": counts},
                ],
                "folds": {"source": "T4", "evaluated_on": "test", "values": {"accuracy": folds_a}},
            },
        },
        "statistics": [{
            "id": "pt", "test": "paired_t", "source": "S3", "a": "prop", "b": "base", "metric": "accuracy",
            "reported": {"n": 5, "mean_a": f"{a.mean():.2f}%", "sd_a": f"{a.std(ddof=1):.2f}%",
                         "mean_b": f"{b.mean():.2f}%", "sd_b": f"{b.std(ddof=1):.2f}%",
                         "mean_diff": f"{d.mean():.2f}", "ci": [f"{d.mean() - half:.2f}", f"{d.mean() + half:.2f}"],
                         "t": f"{t.statistic:.2f}", "p": f"{t.pvalue:.2e}"}}],
    }


def _audit(tmp_path, doc, **kw):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return audit_claims(path, **kw)


def _by_id(audit):
    return {c["id"]: c for c in audit["checks"]}


# ------------------------------------------------------------------------------------------------- GRIM
def test_grim_known_answers():
    # N = 20: achievable percentages are multiples of 5 %
    assert grim(parse_num("55.0%", "t", "k"), 20)["ks"] == [11]
    assert not grim(parse_num("52.0%", "t", "k"), 20)["achievable"]
    # N = 28: 14/28 = 50.00 %, 15/28 = 53.57 %, so 51.9 % is impossible and 53.6 % is k = 15
    assert not grim(parse_num("51.9%", "t", "k"), 28)["achievable"]
    assert grim(parse_num("53.6%", "t", "k"), 28)["ks"] == [15]
    assert grim(parse_num("53.57%", "t", "k"), 28)["ks"] == [15]
    assert not grim(parse_num("53.58%", "t", "k"), 28)["achievable"]
    # 2/3 printed as 0.666 is a truncation
    assert not grim(parse_num("0.666", "t", "k"), 3, "round")["achievable"]
    assert grim(parse_num("0.666", "t", "k"), 3, "truncate")["ks"] == [2]


def test_consistent_paper_passes_every_check(tmp_path):
    audit = _audit(tmp_path, paper())
    failed = [c["id"] for c in audit["checks"] if c["status"] == "fail"]
    assert failed == []
    assert audit["verdict"] == "consistent"
    ids = _by_id(audit)
    assert ids["ip.main"]["status"] == "pass"
    assert ids["reconstruct.main"]["status"] == "pass"
    assert ids["grim.main.accuracy"]["values"]["k"] == [20]


def test_impossible_accuracy_fails_grim_and_the_integer_program(tmp_path):
    doc = paper()
    doc["models"]["prop"]["results"][0]["metrics"]["accuracy"] = "84.00%"  # 20/24 = 83.33 %, 21/24 = 87.50 %
    audit = _audit(tmp_path, doc)
    ids = _by_id(audit)
    assert ids["grim.main.accuracy"]["status"] == "fail"
    assert "passes_under" not in ids["grim.main.accuracy"]["values"]
    assert audit["summary"]["fail_rounding_only"] < audit["summary"]["fail"]
    assert ids["ip.main"]["status"] == "fail"
    assert ids["derived.main.accuracy"]["status"] == "fail"


def test_fold_accuracy_not_achievable_on_the_test_set(tmp_path):
    doc = paper()
    doc["models"]["prop"]["folds"]["values"]["accuracy"][0] = "90.00%"  # between 21/24 and 22/24
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["grim.prop.fold1.accuracy"]["status"] == "fail"


# ------------------------------------------------------------------------------------- derived metrics
def test_derived_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    cm = confusion_matrix(y, p, labels=range(4))
    names = ["a", "b", "c", "d"]
    n = cm.sum()
    counts = {}
    for c, name in enumerate(names):
        tp = int(cm[c, c])
        fn = int(cm[c].sum() - tp)
        fp = int(cm[:, c].sum() - tp)
        counts[name] = {"tp": tp, "fp": fp, "fn": fn, "tn": int(n - tp - fp - fn)}
    d = derived_from_counts(counts, names)
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=range(4))
    for c, name in enumerate(names):
        assert float(d["per_class"][name]["precision"]) == pytest.approx(prec[c])
        assert float(d["per_class"][name]["recall"]) == pytest.approx(rec[c])
        assert float(d["per_class"][name]["f1"]) == pytest.approx(f1[c])
        neg = y != c
        assert float(d["per_class"][name]["specificity"]) == pytest.approx(np.mean(p[neg] != c))
        pred_neg = p != c
        assert float(d["per_class"][name]["npv"]) == pytest.approx(np.mean(y[pred_neg] != c))
    assert float(d["accuracy"]) == pytest.approx(accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        ps, rs, fs, _ = precision_recall_fscore_support(y, p, average=avg)
        assert float(d[f"{avg}_precision"]) == pytest.approx(ps)
        assert float(d[f"{avg}_recall"]) == pytest.approx(rs)
        assert float(d[f"{avg}_f1"]) == pytest.approx(fs)


def test_misprinted_precision_and_inconsistent_counts_are_caught(tmp_path):
    doc = paper()
    doc["models"]["prop"]["results"][0]["per_class"]["B"]["precision"] = "0.800"  # true 6/8 = 0.750
    doc["models"]["prop"]["results"][1]["counts"]["C"]["tn"] += 1                  # no longer sums to N
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["derived.main.B.precision"]["status"] == "fail"
    assert ids["derived.main.counts_total"]["status"] == "fail"
    assert ids["reconstruct.main"]["status"] == "fail"
    assert ids["f1.main.B"]["status"] == "fail"  # F1 no longer the harmonic mean of the printed P and R


def test_truncated_values_fail_under_rounding_and_pass_under_truncation(tmp_path):
    doc = paper(np.array([[2, 1, 0], [0, 3, 0], [0, 0, 3]]))
    doc["models"]["prop"]["results"][0]["per_class"]["A"]["recall"] = "0.666"  # 2/3 truncated
    audit = _audit(tmp_path, doc)
    c = _by_id(audit)["derived.main.A.recall"]
    assert c["status"] == "fail" and "truncated" in c["reason"] and c["values"]["passes_under"] == "truncate"
    # every failure here is a rounding artefact, and the summary says so
    assert audit["summary"]["fail"] > 0
    assert audit["summary"]["fail_rounding_only"] == audit["summary"]["fail"]
    assert _by_id(_audit(tmp_path, doc, rounding="either"))["derived.main.A.recall"]["status"] == "pass"


def test_reconstruction_recovers_the_true_counts():
    prec, rec, f1, sup = precision_recall_fscore_support(*_labels(CM), labels=range(3))
    per = {n: {"precision": parse_num(_fmt(prec[c]), "t", "k"), "recall": parse_num(_fmt(rec[c]), "t", "k"),
               "f1": parse_num(_fmt(f1[c]), "t", "k")} for c, n in enumerate(CLASSES)}
    res = reconstruct(per, [int(s) for s in sup], CLASSES)
    for c, n in enumerate(CLASSES):
        truth = (int(CM[c, c]), int(CM[:, c].sum() - CM[c, c]))
        assert truth in res["candidates"][n]


# ------------------------------------------------------------------------------------------ statistics
def test_reported_paired_test_recomputed(tmp_path):
    ids = _by_id(_audit(tmp_path, paper()))
    for k in ("mean_a", "sd_a", "mean_b", "sd_b", "mean_diff", "t", "p", "ci_lo", "ci_hi", "sd_diff", "p_from_t"):
        assert ids[f"stats.pt.{k}"]["status"] == "pass", ids[f"stats.pt.{k}"]


def test_wrong_t_statistic_fails_against_folds_and_summaries(tmp_path):
    doc = paper()
    rep = doc["statistics"][0]["reported"]
    rep["t"] = f"{float(rep['t']) * 1.5:.2f}"
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["stats.pt.t"]["status"] == "fail"
    assert ids["stats.pt.sd_diff"]["status"] == "fail"   # t and CI now imply different sds of the differences
    assert ids["stats.pt.p_from_t"]["status"] == "fail"


def test_mean_of_folds_and_sd_are_checked(tmp_path):
    doc = paper()
    rep = doc["statistics"][0]["reported"]
    rep["mean_a"] = f"{float(rep['mean_a'][:-1]) + 0.5:.2f}%"
    rep["sd_b"] = f"{float(rep['sd_b'][:-1]) * 2:.2f}%"
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["stats.pt.mean_a"]["status"] == "fail"
    assert ids["stats.pt.sd_b"]["status"] == "fail"
    assert ids["stats.pt.mean_diff"]["status"] == "pass"        # the printed difference still fits the folds
    assert ids["stats.pt.diff_of_means"]["status"] == "fail"    # but is no longer mean_a - mean_b


# ---------------------------------------------------------------------------------- cross-table checks
def test_same_quantity_printed_twice_differently(tmp_path):
    doc = paper()
    doc["models"]["prop"]["results"].append({"id": "again", "source": "T7", "kind": "ensemble",
                                             "equivalent_to": "main", "metrics": {"accuracy": "85.00%"}})
    doc["equalities"] = [{"id": "n", "quantity": "test size", "values": [{"value": 24, "source": "T1"},
                                                                          {"value": 25, "source": "text"}]}]
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["same.main.overall.accuracy"]["status"] == "fail"
    assert ids["same.n"]["status"] == "fail"


def test_kind_mismatch_in_a_headline_comparison(tmp_path):
    doc = paper()
    doc["models"]["base"]["results"] = [{"id": "base_mean", "source": "T3", "kind": "mean_of_folds",
                                         "evaluated_on": "test", "metrics": {"accuracy": "80.00%"}}]
    doc["comparisons"] = [{"id": "gain", "source": "S3", "a": "base_mean", "b": "main"}]
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["kind.gain"]["status"] == "fail"
    assert ids["folds.base_mean.accuracy"]["status"] == "pass"   # 80.00 is the mean of the printed base folds
    doc["comparisons"][0]["b"] = "base_mean"
    doc["models"]["prop"]["results"].append({"id": "prop_mean", "source": "S3", "kind": "mean_of_folds",
                                             "evaluated_on": "test", "metrics": {"accuracy": "90.83%"}})
    doc["comparisons"] = [{"id": "gain", "source": "S3", "a": "base_mean", "b": "prop_mean"}]
    assert _by_id(_audit(tmp_path, doc))["kind.gain"]["status"] == "pass"


def test_sample_size_arithmetic(tmp_path):
    doc = paper()
    doc["sets"]["test"]["total"] = 25
    assert _by_id(_audit(tmp_path, doc))["sizes.test.total"]["status"] == "fail"


# --------------------------------------------------------------------------------------- reproduction
def _summary(acc, ci, f1_b=0.75):
    return {"models": {"prop": {
        "ensemble": {"accuracy": {"value": acc, "ci": ci},
                     "per_class": {"B": {"f1": {"value": f1_b, "ci": [0.6, 0.9]}}}},
        "folds": {"accuracy": {"values": [0.90, 0.91, 0.905, 0.895, 0.90], "mean": 0.902, "sd": 0.006}}}}}


def test_claims_against_a_reproduction_summary(tmp_path):
    doc = paper()
    doc["models"]["prop"]["results"].append({"id": "prop_mean", "source": "S3", "kind": "mean_of_folds",
                                             "evaluated_on": "test", "metrics": {"accuracy": "90.83%"}})
    doc["models"]["prop"]["results"].append({"id": "variant", "source": "T2", "config": {"activation": "GeLU"},
                                             "evaluated_on": "test", "metrics": {"accuracy": "50.00%"}})
    claims_path = tmp_path / "c.yaml"
    claims_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    claims = load_claims(claims_path)
    inside = {c.id: c.to_dict() for c in check_reproduction(claims, _summary(0.80, [0.75, 0.86]))}
    assert inside["run.main.accuracy"]["status"] == "pass"
    assert inside["run.main.accuracy"]["values"]["difference"] == pytest.approx(0.8333 - 0.80)  # as printed
    assert inside["run.main.B.f1"]["status"] == "pass"
    assert "run.variant.accuracy" not in inside        # tuning variants are not the reproduced configuration
    # the claimed mean of folds against the 95 % t-interval of the reproduced fold accuracies
    vals = np.array([0.90, 0.91, 0.905, 0.895, 0.90])
    lo, hi = DescrStatsW(vals).tconfint_mean(alpha=0.05)
    assert inside["run.prop_mean.accuracy"]["values"]["ci"] == pytest.approx([lo, hi])
    assert inside["run.prop_mean.accuracy"]["status"] == ("pass" if lo <= 0.9083 <= hi else "fail")
    outside = {c.id: c.to_dict() for c in check_reproduction(claims, _summary(0.60, [0.55, 0.70]))}
    assert outside["run.main.accuracy"]["status"] == "fail"
    audit = audit_claims(claims_path, summary=_summary(0.60, [0.55, 0.70]))
    assert audit["verdict"] == "consistent; not reproduced"


def _repro_one(tmp_path, printed, ci, value=None):
    doc = paper()
    doc["models"]["prop"]["results"][0]["metrics"]["accuracy"] = printed
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    value = float(ci[1]) if value is None else value
    checks = check_reproduction(load_claims(path), _summary(value, list(ci)))
    return {c.id: c.to_dict() for c in checks}["run.main.accuracy"]


def test_reproduction_compares_the_printed_rounding_interval_exactly(tmp_path):
    # 83.33 % admits [0.83325, 0.83335): a CI ending at 0.83329 holds values that print as 83.33 %
    c = _repro_one(tmp_path, "83.33%", [0.70, 0.83329])
    assert c["status"] == "pass" and "within its printed rounding" in c["reason"]
    assert c["values"]["claimed_interval"] == pytest.approx([0.83325, 0.83335])
    assert _repro_one(tmp_path, "83.33%", [0.70, 0.83324])["status"] == "fail"
    assert _repro_one(tmp_path, "83.33%", [0.83335, 0.90], 0.85)["status"] == "fail"    # the upper end is open
    assert _repro_one(tmp_path, "83.33%", [0.833349, 0.90], 0.85)["status"] == "pass"
    # the demo's case: 100 % reproduced, Wilson's upper bound is 0.9999999999999999 in floating point
    lo, hi = S.wilson_ci(28, 28)
    assert hi < 1.0
    c = _repro_one(tmp_path, "100.0%", [lo, hi], 1.0)
    assert c["status"] == "pass", c


def test_reproduction_with_a_zero_width_ci_is_degenerate_not_a_fail(tmp_path):
    c = _repro_one(tmp_path, "98.34%", [1.0, 1.0])
    assert c["status"] == "not_checkable" and c["values"]["degenerate"] is True
    assert "degenerate" in c["reason"]


def test_audit_with_a_real_run_directory(tmp_path):
    from bench.scripts.fake_run import make_fake_run
    from reports import summary as summary_mod
    run = make_fake_run(tmp_path / "run", n_patients=20)
    doc = copy.deepcopy(paper())
    doc["class_names"] = ["F0", "F1", "F2", "F3", "F4"]
    doc["sets"] = {"test": {"source": "T1", "counts": {c: 2 for c in doc["class_names"]}, "total": 10}}
    doc["models"] = {"resnet50_cbam": {"run_name": "resnet50_cbam", "results": [
        {"id": "r", "source": "T3", "kind": "ensemble", "evaluated_on": "test", "metrics": {"accuracy": "90.00%"}}]}}
    doc.pop("statistics")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    expected = summary_mod.summarize_run(run)["models"]["resnet50_cbam"]["ensemble"]["accuracy"]
    audit = audit_claims(path, run_dir=run)
    c = _by_id(audit)["run.r.accuracy"]
    assert c["values"]["reproduced"] == pytest.approx(expected["value"])
    lo, hi = expected["ci"]
    assert c["status"] == ("pass" if lo <= 0.9 <= hi else "fail")


def test_exact_fractions_not_floats():
    # 1/3 printed as 0.333 must be admitted exactly at the boundary logic, with no float fuzz
    num = parse_num("0.333", "t", "k")
    assert num.admits(Fraction(1, 3)) and not num.admits(Fraction(2, 6) + Fraction(1, 1000))


@pytest.mark.parametrize("rule", ["round", "truncate"])
def test_reconstruction_equals_brute_force(rule):
    """Every (TP, FP) the analytic FP bounds keep is exactly the set a full scan over FP finds."""
    from reports.exact_metrics import class_metric as metric_from_counts

    rng = np.random.default_rng(3)
    sup = [12, 9, 7]
    n = sum(sup)
    for _ in range(6):
        per = {}
        for c, name in enumerate(CLASSES):
            tp, fp = int(rng.integers(1, sup[c] + 1)), int(rng.integers(0, 6))
            fn, tn = sup[c] - tp, n - sup[c] - fp
            per[name] = {m: parse_num(f"{float(metric_from_counts(m, tp, fp, fn, tn)):.2f}", "t", "k")
                         for m in ("recall", "precision", "f1")}
        got = reconstruct(per, sup, CLASSES, rule)["candidates"]
        for c, name in enumerate(CLASSES):
            want = []
            for tp in range(sup[c] + 1):
                for fp in range(n - sup[c] + 1):
                    fn, tn = sup[c] - tp, n - sup[c] - fp
                    xs = {m: metric_from_counts(m, tp, fp, fn, tn) for m in per[name]}
                    if all(xs[m] is not None and per[name][m].admits(xs[m], rule) for m in xs):
                        want.append((tp, fp))
            assert got[name] == want


def test_reported_confusion_matrix_reconciled_with_the_counts_table(tmp_path):
    doc = paper()
    doc["models"]["prop"]["results"].append({"id": "fig", "source": "Fig. 6", "kind": "ensemble",
                                             "equivalent_to": "main", "confusion": CM.tolist()})
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["same.main.B.fp"]["status"] == "pass"
    bad = CM.copy()
    bad[1, 0], bad[1, 2] = bad[1, 0] + 1, bad[1, 2] - 1   # same row sums, different FP for A and C
    doc["models"]["prop"]["results"][-1]["confusion"] = bad.tolist()
    ids = _by_id(_audit(tmp_path, doc))
    assert ids["same.main.A.fp"]["status"] == "fail" and ids["same.main.C.fp"]["status"] == "fail"
    assert ids["same.main.B.fn"]["status"] == "pass"


# ------------------------------------------------------------------------------------------------ layout
def _claims_import_graph():
    """module -> reports.claims* modules it imports anywhere (module level or inside a function)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "reports"
    files = {"reports.claims": root / "claims.py"}
    files.update({f"reports.claims_checks.{p.stem}": p for p in (root / "claims_checks").glob("*.py")
                  if p.stem != "__init__"})
    graph = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            deps.update(n for n in names if n in files or n == "reports.claims_checks")
        graph[mod] = deps
    return graph


def test_claims_modules_import_without_cycles():
    graph = _claims_import_graph()
    assert graph["reports.claims"] == set(), "the loader must not import the checks (it owned audit_claims before)"
    assert all("reports.claims_checks" not in deps for deps in graph.values()), \
        "a family module importing the package __init__ closes a cycle through audit"
    done, stack = set(), []

    def visit(m):
        assert m not in stack, " -> ".join(stack[stack.index(m):] + [m])
        if m in done:
            return
        stack.append(m)
        for d in graph[m]:
            visit(d)
        stack.pop()
        done.add(m)

    for m in graph:
        visit(m)
    assert len(graph) >= 12  # the loader, record, groups, audit and one module per check family


def test_check_record_rejects_an_unknown_status_and_serialises_as_the_schema_says():
    from reports.claims_checks import Check

    with pytest.raises(ValueError, match="status 'ok'"):
        Check(id="x", kind="granularity", subject="s", source="T1", status="ok", reason="r")
    c = Check(id="x", kind="granularity", subject="s", source="T1", status="pass", reason="r")
    assert list(c.to_dict()) == ["id", "kind", "subject", "source", "status", "reason", "arithmetic", "values"]
    c.also.append("y")
    assert c.to_dict()["also"] == ["y"]
