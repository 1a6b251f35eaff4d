"""Claims files: printed-number parsing, validation errors naming file and key, the CLI and the HTML partial."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from bench.cli import main as cli_main
from reports.claims import load_claims, render_claims_section
from reports.claims_numbers import parse_num
from reports.errors import ReportInputError

REPO = Path(__file__).resolve().parent.parent
AFIF = REPO / "protocols" / "afif2025" / "claims.yaml"


def minimal(**over):
    doc = {
        "schema": "fibrobench.claims/1",
        "paper": {"id": "toy"},
        "class_names": ["A", "B"],
        "sets": {"test": {"source": "T1", "counts": {"A": 6, "B": 4}, "total": 10}},
        "models": {"m": {"results": [{"id": "r", "source": "T2", "kind": "ensemble", "evaluated_on": "test",
                                      "metrics": {"accuracy": "80.0%"},
                                      "per_class": {"A": {"recall": "0.833", "ppv": "0.833"},
                                                    "B": {"sensitivity": "0.750"}}}]}},
    }
    doc.update(over)
    return doc


def write(tmp_path, doc, name="claims.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False) if not isinstance(doc, str) else doc)
    return p


# --------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("text, value, ulp, percent", [
    ("84.90", Fraction(849, 10), Fraction(1, 100), False),
    ("98.34%", Fraction(9834, 10000), Fraction(1, 10000), True),
    ("0.921", Fraction(921, 1000), Fraction(1, 1000), False),
    ("6.24e-7", Fraction(624, 100) / 10 ** 7, Fraction(1, 100) / 10 ** 7, False),
    ("1,267", Fraction(1267), Fraction(1), False),
    (423, Fraction(423), Fraction(0), False),
])
def test_parse_num_keeps_printed_precision(text, value, ulp, percent):
    n = parse_num(text, "f.yaml", "k")
    assert (n.value, n.ulp, n.percent) == (value, ulp, percent)


def test_rounding_intervals():
    n = parse_num("0.959", "f", "k")
    assert n.admits(Fraction(9585, 10000), "round") and n.admits(Fraction(9595, 10000), "round")
    assert not n.admits(Fraction(95977, 100000), "round")          # 0.95977 rounds to 0.960
    assert n.admits(Fraction(95977, 100000), "truncate")           # but truncates to 0.959
    assert not n.admits(Fraction(960, 1000), "truncate")           # half-open upper end
    assert n.admits(Fraction(9586, 10000), "either") and n.admits(Fraction(95977, 100000), "either")


def test_bare_float_is_rejected_with_file_and_key():
    with pytest.raises(ReportInputError, match=r"f\.yaml: models\.x\.metrics\.accuracy: bare float"):
        parse_num(84.9, "f.yaml", "models.x.metrics.accuracy")
    assert parse_num(84.9, "f.yaml", "k", decimals=2).text == "84.90"


# ------------------------------------------------------------------------------------------ validation
def test_minimal_file_loads_with_aliases(tmp_path):
    c = load_claims(write(tmp_path, minimal()))
    r = c.result("r")
    assert set(r.per_class["A"]) == {"recall", "precision"}        # ppv -> precision
    assert set(r.per_class["B"]) == {"recall"}                      # sensitivity -> recall
    assert c.sets["test"].total == 10 and c.rounding == "round"


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(schema="other/1"), "schema"),
    (lambda d: d.pop("class_names"), "class_names"),
    (lambda d: d.update(rounding="ceil"), "rounding"),
    (lambda d: d["sets"]["test"]["counts"].pop("B"), "sets.test.counts"),
    (lambda d: d["sets"]["test"]["counts"].update(A=-1), "sets.test.counts.A"),
    (lambda d: d["models"]["m"]["results"][0].update(kind="best_fold"), "models.m.results[0].kind"),
    (lambda d: d["models"]["m"]["results"][0].update(evaluated_on="val"), "evaluated_on"),
    (lambda d: d["models"]["m"]["results"][0].update(equivalent_to="nope"), "equivalent_to"),
    (lambda d: d["models"]["m"]["results"][0]["per_class"].update(Z={"recall": "0.5"}),
     "models.m.results[0].per_class.Z"),
    (lambda d: d["models"]["m"]["results"][0]["per_class"]["A"].update(dice="0.9"),
     "models.m.results[0].per_class.A.dice"),
    (lambda d: d.update(positive="C"), "positive"),
    (lambda d: d["models"]["m"]["results"][0]["metrics"].update(sensitivity="0.9"),
     "models.m.results[0].metrics.sensitivity"),                   # no `positive:` to say whose
    (lambda d: d["models"]["m"]["results"][0]["metrics"].update(auc="0.9"), "models.m.results[0].metrics.auc"),
    (lambda d: (d.update(positive="B"), d["models"]["m"]["results"][0]["metrics"].update(sensitivity="0.7")),
     "models.m.results[0].metrics.sensitivity"),                   # B's recall is already printed per class
    (lambda d: d["models"]["m"]["results"][0]["metrics"].update(bacc="80%", balanced_accuracy="80%"),
     "printed twice"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "mcnemar", "source": "x", "a": "r", "b": "r",
                                     "reported": {"a_only": 3}}]), "statistics[0].reported"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "mcnemar", "source": "x", "a": "m", "b": "r",
                                     "reported": {"a_only": 3, "b_only": 1}}]), "names result 'm'"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "mcnemar", "source": "x", "a": "r", "b": "r",
                                     "reported": {"a_only": 3, "b_only": 1, "p": "< 2"}}]), "statistics[0].reported.p"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "mcnemar", "source": "x", "a": "r", "b": "r", "method": "z",
                                     "reported": {"a_only": 3, "b_only": 1}}]), "statistics[0].method"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "paired_t", "source": "x", "a": "m", "b": "m",
                                     "method": "exact", "reported": {}}]), "statistics[0].method"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "mcnemar", "source": "x", "a": "r", "b": "r",
                                     "reported": {"a_only": 3, "b_only": 1, "t": "2.0"}}]), "statistics[0].reported.t"),
    (lambda d: d["models"]["m"]["results"][0]["metrics"].update(accuracy=0.8),
     "models.m.results[0].metrics.accuracy"),
    (lambda d: d["models"]["m"]["results"][0]["metrics"].update(accuracy="eighty"),
     "models.m.results[0].metrics.accuracy"),
    (lambda d: d["models"]["m"]["results"][0].update(colour="red"), "models.m.results[0].colour"),
    (lambda d: d["models"]["m"]["results"].append({"id": "r", "source": "x"}), "used twice"),
    (lambda d: d.update(statistics=[{"id": "s", "test": "anova", "source": "x", "a": "m", "b": "m",
                                     "reported": {}}]), "statistics[0].test"),
    (lambda d: d.update(comparisons=[{"id": "c", "source": "x", "a": "r", "b": "missing"}]), "comparisons[0]"),
])
def test_bad_input_names_file_and_key(tmp_path, mutate, key):
    doc = minimal()
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(ReportInputError) as e:
        load_claims(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and key in msg and "\n" not in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ReportInputError, match="not found"):
        load_claims(tmp_path / "none.yaml")
    with pytest.raises(ReportInputError, match="not valid YAML"):
        load_claims(write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ReportInputError, match="top level must be a mapping"):
        load_claims(write(tmp_path, "- 1\n- 2\n"))


def test_target_paper_transcription_loads():
    c = load_claims(AFIF)
    assert c.class_names == ["F0", "F1", "F2", "F3", "F4"]
    assert sum(c.sets["test"].counts.values()) == c.sets["test"].total
    ids = [r.id for r in c.results()]
    assert len(ids) == len(set(ids))
    # every block names where its numbers come from
    assert all(r.source for r in c.results())
    assert all(len(v) == 5 for m in c.models.values() if m.folds for v in m.folds.values.values())


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_exit_codes_and_json(tmp_path, capsys):
    good = write(tmp_path, minimal(), "good.yaml")
    out = tmp_path / "audit.json"
    assert cli_main(["audit-claims", str(good), "--json", str(out), "--strict"]) == 0
    audit = json.loads(out.read_text())
    assert audit["schema"] == "fibrobench.claims_audit/1"
    assert audit["summary"]["fail"] == 0 and audit["summary"]["pass"] > 0
    assert "git" in audit["provenance"] and audit["provenance"]["command"][1] == "audit-claims"
    assert {"id", "kind", "subject", "source", "status", "reason", "arithmetic", "values"} <= set(audit["checks"][0])
    printed = capsys.readouterr().out
    assert "verdict: consistent" in printed

    bad = minimal()
    bad["models"]["m"]["results"][0]["metrics"]["accuracy"] = "85.0%"   # k/10 cannot print as 85.0 %
    bad_path = write(tmp_path, bad, "bad.yaml")
    assert cli_main(["audit-claims", str(bad_path)]) == 0
    assert cli_main(["audit-claims", str(bad_path), "--strict"]) == 1
    assert "grim.r.accuracy" in capsys.readouterr().out

    broken = write(tmp_path, "schema: nope\n", "broken.yaml")
    out2 = tmp_path / "never.json"
    assert cli_main(["audit-claims", str(broken), "--json", str(out2)]) == 2
    assert not out2.exists()
    err = capsys.readouterr().err
    assert "broken.yaml: schema" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["audit-claims", str(good), "--run", str(tmp_path / "no_run")]) == 2


# ------------------------------------------------------------------------------------------------ HTML
def test_html_section_escapes_and_shows_badges(tmp_path):
    from reports.claims_checks import audit_claims

    doc = minimal()
    doc["paper"]["title"] = "<script>alert(1)</script>"
    doc["models"]["m"]["results"][0]["source"] = "Table <b>2</b>"
    doc["models"]["m"]["results"][0]["metrics"]["accuracy"] = "85.0%"
    audit = audit_claims(write(tmp_path, doc))
    html = render_claims_section(audit)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Table &lt;b&gt;2&lt;/b&gt;" in html
    assert 'class="badge status-fail"' in html and 'class="badge status-pass"' in html
    assert html.count("<tr class=\"row-") == len(audit["checks"])
    assert render_claims_section(None).strip() == ""
