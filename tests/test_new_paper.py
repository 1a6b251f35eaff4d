"""`fibrobench new-paper`: the files it writes load (protocol parser, claims loader), their worked examples audit
as consistent, and bad names or class lists exit 2 naming the argument."""
from __future__ import annotations

import re

import pytest

from bench.cli import main as cli_main
from reports.claims import load_claims
from reports.claims_checks import audit_claims

CASES = [(["benign", "malignant"], False, "malignant"), (["mild", "moderate", "severe"], True, None),
         ([f"type {c}" for c in "abcdefg"], False, None)]


def _new(tmp_path, name, classes, ordinal=False, positive=None, *extra):
    argv = ["new-paper", name, "--classes", ",".join(classes), "--dir", str(tmp_path), *extra]
    argv += ["--ordinal"] if ordinal else []
    argv += ["--positive", positive] if positive else []
    return cli_main(argv)


def _uncomment(text: str) -> str:
    """What a reviewer does with the worked examples: drop '#| ' and the empty value each replaces."""
    text = re.sub(r"^(sets|partitions|models|statistics|equalities|comparisons): (\{\}|\[\])\n", "", text, flags=re.M)
    return re.sub(r"^#\| ", "", text, flags=re.M)


@pytest.mark.parametrize("classes, ordinal, positive", CASES)
def test_generated_files_load_and_the_examples_are_consistent(tmp_path, classes, ordinal, positive):
    assert _new(tmp_path, "paper1", classes, ordinal, positive) == 0
    folder = tmp_path / "paper1"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "claims.yaml", "protocol-smoke.yaml",
                                                          "protocol.yaml"]
    claims = load_claims(folder / "claims.yaml")
    assert claims.class_names == classes and claims.positive == positive and claims.paper["id"] == "paper1"
    empty = audit_claims(folder / "claims.yaml")
    assert empty["verdict"] == "not_checkable" and empty["checks"] == []      # nothing transcribed yet
    (folder / "claims.yaml").write_text(_uncomment((folder / "claims.yaml").read_text()))
    audit = audit_claims(folder / "claims.yaml")
    failed = [c["id"] for c in audit["checks"] if c["status"] == "fail"]
    assert failed == [] and audit["verdict"] == "consistent" and audit["summary"]["pass"] >= 15
    kinds = {c["kind"] for c in audit["checks"]}
    assert {"sample_sizes", "granularity", "derived", "feasibility", "fold_summary", "statistics"} <= kinds


def test_class_names_that_yaml_would_misread_round_trip(tmp_path):
    classes = ["a: b", "#c", "yes", "1.0", "<i>x</i>"]
    assert _new(tmp_path, "odd", classes) == 0
    assert load_claims(tmp_path / "odd" / "claims.yaml").class_names == classes


@pytest.mark.parametrize("name, classes, extra, key", [
    ("../escape", ["a", "b", "c"], [], "NAME"),
    ("x/y", ["a", "b", "c"], [], "NAME"),
    ("ok", ["a"], [], "--classes"),
    ("ok", ["a", "", "b"], [], "--classes"),
    ("ok", ["a", "A", "b"], [], "--classes"),                         # names ignore case
    ("ok", ['say "x"', "b", "c"], [], "--classes"),
    ("ok", ["a", "b"], [], "--positive"),                              # two classes need a positive one
    ("ok", ["a", "b"], ["--positive", "c"], "--positive"),
    ("ok", ["a", "b", "c"], ["--positive", "a"], "--positive"),         # only for two classes
])
def test_bad_arguments_exit_2_naming_them(tmp_path, capsys, name, classes, extra, key):
    assert _new(tmp_path, name, classes, False, None, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not any(tmp_path.iterdir())


def test_existing_files_are_kept_unless_forced(tmp_path, capsys):
    assert _new(tmp_path, "p", ["a", "b", "c"]) == 0
    claims = tmp_path / "p" / "claims.yaml"
    claims.write_text("# my transcription\n" + claims.read_text())
    capsys.readouterr()
    assert _new(tmp_path, "p", ["a", "b", "c"]) == 2
    assert "exists" in capsys.readouterr().err and claims.read_text().startswith("# my transcription")
    assert _new(tmp_path, "p", ["a", "b", "c"], False, None, "--force") == 0
    assert not claims.read_text().startswith("# my transcription")


def test_the_worked_example_of_docs_new_paper_finds_what_the_page_says():
    """docs/new-paper.md quotes this audit: the abstract's macro-F1 is not the mean of Table 2's per-class F1,
    Table 2 itself is one confusion matrix, and 'p < 0.05' fits only the uncorrected chi-square McNemar test."""
    from pathlib import Path

    claims = Path(__file__).resolve().parent.parent / "docs" / "examples" / "roe2026" / "claims.yaml"
    ids = {c["id"]: c for c in audit_claims(claims)["checks"]}
    assert sorted(i for i, c in ids.items() if c["status"] == "fail") == [
        "avg.abstract_resnet50.macro_f1", "same.t2_resnet50.overall.macro_f1"]
    assert ids["ip.t2_resnet50"]["status"] == "pass"
    assert ids["reconstruct.t2_resnet50"]["values"]["n_consistent_combinations"] == 1
    assert ids["stats.mcnemar_resnet50_vs_vgg16.p"]["values"]["matches"] == ["chi2"]
    assert ids["stats.mcnemar_resnet50_vs_vgg16.accuracies"]["status"] == "pass"


@pytest.mark.parametrize("classes, ordinal, positive", CASES)
def test_generated_protocols_load_with_the_task_parser(tmp_path, classes, ordinal, positive):
    from protocols.config import load_protocol

    assert _new(tmp_path, "paper1", classes, ordinal, positive) == 0
    for f, smoke in (("protocol.yaml", False), ("protocol-smoke.yaml", True)):
        p = load_protocol(tmp_path / "paper1" / f)
        assert p.smoke is smoke and list(p.task.classes) == classes and p.task.ordinal is ordinal
        assert p.task.positive == positive and p.task.map is None
    smoke = load_protocol(tmp_path / "paper1" / "protocol-smoke.yaml")
    assert smoke.data.input_size == 64 and smoke.allow_random_init and smoke.pretrained is None
    assert smoke.split == load_protocol(tmp_path / "paper1" / "protocol.yaml").split


def test_odd_class_names_survive_the_protocol_parser(tmp_path):
    from protocols.config import load_protocol

    classes = ["a: b", "#c", "yes", "1.0", "<i>x</i>"]
    assert _new(tmp_path, "odd", classes) == 0
    assert list(load_protocol(tmp_path / "odd" / "protocol.yaml").task.classes) == classes


def test_the_worked_example_protocols_load():
    from pathlib import Path

    from protocols.config import load_protocol

    folder = Path(__file__).resolve().parent.parent / "docs" / "examples" / "roe2026"
    p, smoke = load_protocol(folder / "protocol.yaml"), load_protocol(folder / "protocol-smoke.yaml")
    assert p.task == smoke.task and list(p.task.classes) == ["mild", "moderate", "severe"] and p.task.ordinal
    assert p.task.map["F4"] == "severe" and set(p.task.cutoffs) == {">=moderate", "severe"}
