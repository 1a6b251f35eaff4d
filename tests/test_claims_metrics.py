"""Claims of other papers: AUROC, balanced accuracy, MCC, kappa, positive-class metrics, printed averages, McNemar
and p-value bounds, each against sklearn / scipy / statsmodels or brute force; the run's classes must match."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import yaml
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, matthews_corrcoef,
                             precision_recall_fscore_support, roc_auc_score)
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from reports import exact_metrics as X
from reports.claims import load_claims
from reports.claims_checks import audit_claims
from reports.claims_checks.mcnemar import mcnemar
from reports.claims_numbers import parse_num
from reports.errors import ReportInputError
from reports.feasibility import solve


def _labels(cm):
    cm = np.asarray(cm)
    y = np.repeat(np.arange(len(cm)), cm.sum(1))
    p = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    return y, p


def _audit(tmp_path, doc, **kw):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {c["id"]: c for c in audit_claims(path, **kw)["checks"]}


def _doc(classes, counts, results, **top):
    return {"schema": "fibrobench.claims/1", "paper": {"id": "other"}, "class_names": classes,
            "sets": {"test": {"source": "T1", "counts": dict(zip(classes, counts))}},
            "models": {"m": {"results": results}}, **top}


# -------------------------------------------------------------------------------- exact metrics vs sklearn
@pytest.mark.parametrize("seed", range(6))
def test_exact_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    y = rng.integers(0, k, 80)
    if seed == 0:
        y[y == k - 1] = 0            # a class absent from the truth: balanced accuracy averages the present ones
    p = np.where(rng.random(80) < 0.6, y, rng.integers(0, k, 80))
    cm = [[int(((y == i) & (p == j)).sum()) for j in range(k)] for i in range(k)]
    x = X.overall(X.matrix_counts(cm))
    with np.errstate(all="ignore"), pytest.warns(UserWarning) if seed == 0 else _nullcontext():
        assert float(x["balanced_accuracy"]) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert float(x["mcc"]) == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)
    assert float(x["kappa"]) == pytest.approx(cohen_kappa_score(y, p), abs=1e-12)
    for w in ("linear", "quadratic"):
        assert float(X.weighted_kappa(cm, w)) == pytest.approx(cohen_kappa_score(y, p, weights=w, labels=range(k)))
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, p, labels=range(k), average=avg, zero_division=0)
        assert [float(x[f"{avg}_{m}"]) for m in ("precision", "recall", "f1")] == pytest.approx([pr, rc, f1])


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_mcc_is_exact_and_undefined_where_sklearn_says_zero():
    # MCC = 1/2 exactly: 0.500 admits it, 0.501 does not, with no float fuzz at the boundary
    cm = [[3, 1], [1, 3]]
    mcc = X.overall(X.matrix_counts(cm))["mcc"]
    y, p = _labels(cm)
    assert float(mcc) == pytest.approx(matthews_corrcoef(y, p)) == 0.5
    assert parse_num("0.500", "t", "k").admits(mcc) and not parse_num("0.501", "t", "k").admits(mcc)
    assert parse_num("0.5", "t", "k").admits(mcc, "truncate")
    irr = X.SqrtRatio(Fraction(1), Fraction(2))                   # 1/sqrt(2) = 0.70710678...
    assert parse_num("0.7071", "t", "k").admits(irr) and not parse_num("0.7072", "t", "k").admits(irr)
    assert X.SqrtRatio(Fraction(-1), Fraction(2)) < Fraction(-7071, 10000)
    one_class = [[0, 4], [0, 4]]                                  # everything predicted as B
    assert X.overall(X.matrix_counts(one_class))["mcc"] is None
    assert matthews_corrcoef(*_labels(one_class)) == 0.0


# --------------------------------------------------------------------------------------------- AUROC
def test_auroc_times_twice_the_pairs_is_an_integer_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        s = rng.integers(0, 6, 30)                                # many ties
        if y.min() == y.max():
            continue
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        k = 2 * roc_auc_score(y, s) * pos * neg
        assert k == pytest.approx(round(k), abs=1e-9)


def test_auroc_granularity_on_a_small_test_set(tmp_path):
    # 3 positives, 4 negatives: AUROC is a multiple of 1/24
    doc = _doc(["neg", "pos"], [4, 3], [{"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test",
                                        "metrics": {"auroc": "0.792"}}], positive="pos")
    assert _audit(tmp_path, doc)["grim.r.auroc"]["status"] == "pass"           # 19/24 = 0.7917
    doc["models"]["m"]["results"][0]["metrics"]["auroc"] = "0.800"
    c = _audit(tmp_path, doc)["grim.r.auroc"]
    assert c["status"] == "fail" and c["values"]["n"] == 24
    doc["models"]["m"]["results"][0]["metrics"] = {"macro_auroc": "0.812"}
    doc["models"]["m"]["results"][0]["per_class"] = {"neg": {"auroc": "0.792"}, "pos": {"auroc": "0.833"}}
    ids = _audit(tmp_path, doc)
    assert ids["grim.r.pos.auroc"]["status"] == "pass"                          # 20/24
    assert ids["avg.r.macro_auroc"]["status"] == "pass"                         # mean(0.792, 0.833) = 0.8125
    assert ids["grim.r.macro_auroc"]["status"] == "not_checkable"


# ----------------------------------------------------------------------------- a binary paper, end to end
BIN = [[40, 10], [5, 25]]   # rows = truth (neg, pos)


def _binary_doc(cm=BIN, **metrics):
    y, p = _labels(cm)
    tn, fp, fn, tp = np.asarray(cm).ravel()
    printed = {"sensitivity": f"{tp / (tp + fn):.3f}", "specificity": f"{tn / (tn + fp):.3f}",
               "ppv": f"{tp / (tp + fp):.3f}", "npv": f"{tn / (tn + fn):.3f}",
               "balanced_accuracy": f"{100 * balanced_accuracy_score(y, p):.2f}%",
               "mcc": f"{matthews_corrcoef(y, p):.3f}", "kappa": f"{cohen_kappa_score(y, p):.3f}",
               "accuracy": f"{100 * (tp + tn) / len(y):.2f}%", **metrics}
    return _doc(["neg", "pos"], [int(np.sum(cm[0])), int(np.sum(cm[1]))], [
        {"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test", "metrics": printed},
        {"id": "c", "source": "Fig. 3", "kind": "ensemble", "equivalent_to": "r", "confusion": [list(map(int, row))
                                                                                               for row in cm]}],
        positive="pos")


def test_binary_paper_printed_by_sklearn_passes(tmp_path):
    ids = _audit(tmp_path, _binary_doc())
    assert not [i for i, c in ids.items() if c["status"] == "fail"]
    for cid in ("grim.r.pos.recall", "grim.r.pos.specificity", "derived.r.mcc", "derived.r.kappa",
                "derived.r.balanced_accuracy", "derived.r.pos.recall", "avg.r.balanced_accuracy", "ip.r"):
        assert ids[cid]["status"] == "pass", cid
    c = load_claims(tmp_path / "claims.yaml").result("r")
    assert set(c.per_class["pos"]) == {"recall", "specificity", "precision", "npv"}   # mapped to the positive class


@pytest.mark.parametrize("metric, wrong", [("mcc", "0.700"), ("kappa", "0.300"), ("balanced_accuracy", "85.00%")])
def test_binary_paper_with_a_misprinted_overall_metric_fails(tmp_path, metric, wrong):
    ids = _audit(tmp_path, _binary_doc(**{metric: wrong}))
    assert ids[f"derived.r.{metric}"]["status"] == "fail"
    if metric != "mcc":                                    # MCC is not linear: it is not part of the program
        assert ids["ip.r"]["status"] == "fail"


def test_weighted_kappa_from_a_printed_confusion_matrix(tmp_path):
    cm = [[9, 1, 0], [1, 6, 1], [0, 1, 5]]
    y, p = _labels(cm)
    qwk = cohen_kappa_score(y, p, weights="quadratic")
    doc = _doc(["a", "b", "c"], [10, 8, 6], [
        {"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test", "confusion": cm,
         "metrics": {"qwk": f"{qwk:.3f}", "linear_kappa": f"{cohen_kappa_score(y, p, weights='linear'):.3f}"}}])
    ids = _audit(tmp_path, doc)
    assert ids["derived.r.quadratic_kappa"]["status"] == "pass" and ids["derived.r.linear_kappa"]["status"] == "pass"
    doc["models"]["m"]["results"][0]["metrics"]["qwk"] = f"{qwk + 0.002:.3f}"
    assert _audit(tmp_path, doc)["derived.r.quadratic_kappa"]["status"] == "fail"


# ------------------------------------------------------------------------------------- printed averages
def _three(per_f1="0.800", macro="75.00%", **extra):
    return _doc(["a", "b", "c"], [10, 10, 10], [
        {"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test",
         "per_class": {c: {"f1": per_f1} for c in "abc"}, "metrics": {"macro_f1": macro, **extra}}])


def test_macro_f1_that_is_not_the_mean_of_the_per_class_f1_fails(tmp_path):
    """The issue's example: F1 = 0.800 for each of three classes and a macro F1 of 75.00 % is impossible."""
    ids = _audit(tmp_path, _three())
    assert ids["avg.r.macro_f1"]["status"] == "fail"
    assert ids["ip.r"]["status"] == "fail"
    assert "macro_f1" in ids["ip.r"]["reason"]
    ids = _audit(tmp_path, _three(macro="80.00%"))
    assert ids["avg.r.macro_f1"]["status"] == "pass" and ids["ip.r"]["status"] == "pass"
    w = ids["ip.r"]["values"]["witness"]
    y, p = _labels(w)
    assert precision_recall_fscore_support(y, p, average="macro", zero_division=0)[2] == pytest.approx(0.8, abs=5e-5)


def test_interval_arithmetic_of_averages_is_exact_at_the_edge(tmp_path):
    # 0.45 and 0.45 admit [0.445, 0.455] each, so their mean does too; 0.44 admits [0.435, 0.445]: they touch at
    # exactly 0.445 (both ends closed under rounding), 0.439 misses by 0.0005
    doc = _doc(["a", "b"], [3, 3], [{"id": "r", "source": "T2", "per_class": {
        "a": {"recall": "0.45"}, "b": {"recall": "0.45"}}, "metrics": {"macro_recall": "0.44"}}])
    assert _audit(tmp_path, doc)["avg.r.macro_recall"]["status"] == "pass"
    doc["models"]["m"]["results"][0]["metrics"]["macro_recall"] = "0.439"
    assert _audit(tmp_path, doc)["avg.r.macro_recall"]["status"] == "fail"
    doc["models"]["m"]["results"][0]["metrics"]["macro_recall"] = "0.44"
    # truncated, 0.44 admits [0.44, 0.45) and the mean of two truncated 0.45 lies in [0.45, 0.46): the open end
    # excludes the touching point
    assert _audit(tmp_path, doc, rounding="truncate")["avg.r.macro_recall"]["status"] == "fail"
    doc["models"]["m"]["results"][0]["per_class"]["a"]["recall"] = "0.44"       # mean now in [0.445, 0.455)
    assert _audit(tmp_path, doc, rounding="truncate")["avg.r.macro_recall"]["status"] == "pass"


def test_weighted_average_and_unnamed_average(tmp_path):
    doc = _doc(["a", "b"], [30, 10], [{"id": "r", "source": "T2", "evaluated_on": "test", "per_class": {
        "a": {"precision": "0.900", "recall": "0.900"}, "b": {"precision": "0.700", "recall": "0.700"}},
        "metrics": {"weighted_recall": "85.0%", "accuracy": "85.0%", "weighted_avg": "85.0%",
                    "macro_avg": "80.0%"}}])
    ids = _audit(tmp_path, doc)
    assert ids["avg.r.weighted_recall"]["status"] == "pass"           # (30 x 0.9 + 10 x 0.7) / 40 = 0.85
    assert ids["avg.r.weighted_recall_accuracy"]["status"] == "pass"
    assert ids["avg.r.macro_avg"]["status"] == "pass" and ids["avg.r.macro_avg"]["values"]["matches"]
    assert ids["ip.r"]["status"] == "pass" and set(ids["ip.r"]["values"]["reading"]) == {"macro_avg", "weighted_avg"}
    doc["models"]["m"]["results"][0]["metrics"]["weighted_avg"] = "80.0%"   # that is the macro, not the weighted
    ids = _audit(tmp_path, doc)
    assert ids["avg.r.weighted_avg"]["status"] == "fail"
    assert ids["ip.r"]["status"] == "fail"        # no reading (P, R or F1) of the weighted average fits either


def _brute(supports, overall_ivs):
    """Does some integer matrix with these row sums meet every overall interval (exact)?"""
    k = len(supports)
    rows = [[r for r in itertools.product(range(s + 1), repeat=k) if sum(r) == s] for s in supports]
    for mat in itertools.product(*rows):
        x = X.overall(X.matrix_counts([list(r) for r in mat]))
        x["weighted_recall"] = x["accuracy"]
        x["quadratic_kappa"] = X.weighted_kappa([list(r) for r in mat], "quadratic")
        if all(x[m] is not None and lo <= x[m] and (x[m] < hi if ho else x[m] <= hi)
               for m, (lo, hi, ho) in overall_ivs.items()):
            return True
    return False


@pytest.mark.parametrize("metric", ["macro_precision", "macro_f1", "weighted_f1", "balanced_accuracy", "kappa",
                                    "quadratic_kappa"])
def test_integer_program_with_averages_equals_brute_force(metric):
    """The McCormick products and float-with-slack constraints decide exactly what enumeration decides."""
    sup = [3, 2, 2]
    rng = np.random.default_rng(len(metric))
    texts = set()
    for _ in range(4):   # values some matrix has, and values next to them
        mat = [list(rng.multinomial(s, np.ones(3) / 3)) for s in sup]
        v = X.weighted_kappa(mat, "quadratic") if metric == "quadratic_kappa" else \
            X.overall(X.matrix_counts(mat))[metric]
        if v is not None:
            texts |= {f"{float(v):.2f}", f"{float(v) + 0.01:.2f}", f"{float(v) - 0.02:.2f}"}
    for text in sorted(texts):
        iv = {metric: parse_num(text, "t", "k").interval()}
        got = solve(sup, {}, None, overall=iv)["status"]
        assert got == ("feasible" if _brute(sup, iv) else "infeasible"), (metric, text)


# ------------------------------------------------------------------------------------- McNemar and bounds
# 40 test images; a right on 36 (90.00 %), b on 27 (67.50 %); 12 only a, 3 only b, 24 both, 1 neither
TABLE = np.array([[24, 12], [3, 1]])   # rows: a right / wrong; columns: b right / wrong (statsmodels' layout)


def _mcnemar_doc(accs=("90.00%", "67.50%"), **reported):
    return _doc(["a", "b"], [20, 20], [
        {"id": "ra", "source": "T2", "kind": "ensemble", "evaluated_on": "test", "metrics": {"accuracy": accs[0]}},
        {"id": "rb", "source": "T2", "kind": "ensemble", "evaluated_on": "test", "metrics": {"accuracy": accs[1]}}],
        statistics=[{"id": "mc", "test": "mcnemar", "source": "S3", "a": "ra", "b": "rb",
                     "reported": {"a_only": 12, "b_only": 3, **reported}}])


@pytest.mark.parametrize("method, exact, corr", [("exact", True, False), ("chi2", False, False),
                                                 ("chi2_cc", False, True)])
def test_mcnemar_against_statsmodels(tmp_path, method, exact, corr):
    ref = sm_mcnemar(TABLE, exact=exact, correction=corr)
    stat, p = mcnemar(12, 3, method)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    if not exact:
        assert stat == pytest.approx(ref.statistic, rel=1e-12)
    doc = _mcnemar_doc(p=f"{ref.pvalue:.3g}")
    ids = _audit(tmp_path, doc)
    assert ids["stats.mc.p"]["status"] == "pass" and ids["stats.mc.p"]["values"]["matches"] == [method]
    doc["statistics"][0]["method"] = method
    assert _audit(tmp_path, doc)["stats.mc.p"]["values"]["matches"] == [method]
    doc["statistics"][0]["method"] = next(m for m in ("exact", "chi2", "chi2_cc") if m != method)
    assert _audit(tmp_path, doc)["stats.mc.p"]["status"] == "fail"       # the p of another method


def test_mcnemar_edges():
    assert mcnemar(0, 0, "exact") == (None, 1.0)
    assert np.isnan(mcnemar(0, 0, "chi2")[1])
    assert mcnemar(4, 4, "chi2") == (0.0, 1.0)
    assert mcnemar(5, 0, "exact")[1] == pytest.approx(2 / 32)


def test_mcnemar_p_bounds_statistic_table_and_accuracies(tmp_path):
    # p: exact 0.0352, chi2 0.0201, chi2_cc 0.0389; statistic 81/15 = 5.40 or, corrected, 64/15 = 4.27
    ids = _audit(tmp_path, _mcnemar_doc(p="< 0.05", statistic="4.27", both=24, neither=1, n=40))
    assert ids["stats.mc.p"]["values"]["matches"] == ["exact", "chi2", "chi2_cc"]
    assert ids["stats.mc.statistic"]["values"]["matches"] == ["chi2_cc"]
    for cid in ("p_from_statistic", "table_total", "accuracies"):
        assert ids[f"stats.mc.{cid}"]["status"] == "pass", cid
    assert _audit(tmp_path, _mcnemar_doc(p="p < 0.03"))["stats.mc.p"]["values"]["matches"] == ["chi2"]
    assert _audit(tmp_path, _mcnemar_doc(p="> 0.05"))["stats.mc.p"]["status"] == "fail"
    assert _audit(tmp_path, _mcnemar_doc(p="0.0389", statistic="5.40"))["stats.mc.p_from_statistic"]["status"] == "fail"
    assert _audit(tmp_path, _mcnemar_doc(both=24, neither=2))["stats.mc.table_total"]["status"] == "fail"   # 41 != 40
    assert _audit(tmp_path, _mcnemar_doc(accs=("90.00%", "82.50%")))["stats.mc.accuracies"]["status"] == "fail"
    assert _audit(tmp_path, _mcnemar_doc(both=20))["stats.mc.accuracies"]["status"] == "fail"   # 20 + 12 != 36


def test_paired_t_with_a_printed_p_bound(tmp_path):
    from scipy import stats
    from test_claims_checks import paper

    doc = paper()
    fa = [float(x[:-1]) for x in doc["models"]["prop"]["folds"]["values"]["accuracy"]]
    fb = [float(x[:-1]) for x in doc["models"]["base"]["folds"]["values"]["accuracy"]]
    p = stats.ttest_rel(fa, fb).pvalue                                        # 0.0123
    doc["statistics"][0]["reported"]["p"] = "< 0.05"
    ids = _audit(tmp_path, doc)
    assert p < 0.05 and ids["stats.pt.p"]["status"] == "pass" and ids["stats.pt.p_from_t"]["status"] == "pass"
    doc["statistics"][0]["reported"]["p"] = "< 0.01"
    ids = _audit(tmp_path, doc)
    assert ids["stats.pt.p"]["status"] == "fail" and ids["stats.pt.p_from_t"]["status"] == "fail"


# ------------------------------------------------------------------------------------- the run's classes
def test_audit_with_a_run_of_other_classes_names_both_lists(tmp_path):
    from bench.cli import main as cli_main
    from bench.scripts.fake_run import make_fake_run

    run = make_fake_run(tmp_path / "run", n_patients=10)                        # F0..F4
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(_three(), sort_keys=False))
    with pytest.raises(ReportInputError) as e:
        audit_claims(path, run_dir=run)
    msg = str(e.value)
    assert "class_names" in msg and "['a', 'b', 'c']" in msg and "['F0', 'F1', 'F2', 'F3', 'F4']" in msg
    assert cli_main(["audit-claims", str(path), "--run", str(run)]) == 2
    doc = _three()
    doc["class_names"] = ["f0", "f1", "f2", "f3", "f4"]
    doc["sets"]["test"]["counts"] = {c: 2 for c in doc["class_names"]}
    doc["models"]["m"]["results"][0]["per_class"] = {}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ReportInputError, match="differ only in case"):
        audit_claims(path, run_dir=run)
    doc["class_names"] = ["F4", "F3", "F2", "F1", "F0"]                        # order is free: matched by name
    doc["sets"]["test"]["counts"] = {c: 2 for c in doc["class_names"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert audit_claims(path, run_dir=run)["run_dir"] == str(run)


def test_reproduction_finds_metrics_under_the_summary_names(tmp_path):
    """A claimed quadratic_kappa / macro_auroc is compared with the summary's qwk / auroc_macro."""
    from reports.claims_checks import check_reproduction

    doc = _doc(["a", "b", "c"], [10, 10, 10], [{"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test",
                                                "metrics": {"qwk": "0.900", "macro_auroc": "0.950"}}])
    doc["models"]["m"]["run_name"] = "m"
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ens = {"qwk": {"value": 0.89, "ci": [0.85, 0.93]}, "auroc_macro": {"value": 0.80, "ci": [0.75, 0.85]}}
    ids = {c.id: c for c in check_reproduction(load_claims(path), {"models": {"m": {"ensemble": ens}}})}
    assert ids["run.r.quadratic_kappa"].status == "pass" and ids["run.r.quadratic_kappa"].values["reproduced"] == 0.89
    assert ids["run.r.macro_auroc"].status == "fail"
