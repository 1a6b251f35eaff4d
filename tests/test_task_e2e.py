"""Any label space end to end (issue 11): synthetic frames in class folders renamed to arbitrary names,
`run` -> `report` -> `gate` -> `audit-claims --run` for 2, 3 and 7 classes, with the report's class names and
metric choices asserted. Tiny on purpose (32 px, 1 epoch, 2 folds, one small model): speed is not the point.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from protocols.synth import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent

# 2 classes, nominal, no map: the class folders are named like the classes (one in another case)
BINARY = {"folders": {"benign": ["F0", "F1"], "MALIGNANT": ["F2", "F3", "F4"]},
          "task": {"classes": ["benign", "malignant"], "ordinal": False, "positive": "malignant"}}
# 3 classes, ordinal, a map from five arbitrary folder names onto three classes, one cut-off
THREE = {"folders": {f"grade {g}": [c] for g, c in zip("ABCDE", CLASS_NAMES)},
         "task": {"classes": ["mild", "moderate", "severe"], "ordinal": True,
                  "map": {"Grade A": "mild", "Grade B": "mild", "Grade C": "moderate", "Grade D": "moderate",
                          "Grade E": "severe"},
                  "cutoffs": {"moderate or worse": "moderate", "severe": "severe"}}}
# 7 classes, nominal, read from a manifest CSV with free label strings (the frames are reused across classes)
SEVEN_NAMES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
SEVEN = {"task": {"classes": SEVEN_NAMES, "ordinal": False}}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Synthetic frames (F0..F4 folders), made once."""
    from protocols.synth import generate_dataset
    d = tmp_path_factory.mktemp("synth")
    generate_dataset(d, n_patients=10, size=(64, 48), seed=0, overwrite=True)
    return d


def _imagefolder(frames: Path, out: Path, folders: dict) -> Path:
    """Copy the F0..F4 frames into folders with arbitrary names (file names carry no class either)."""
    n = 0
    for folder, stages in folders.items():
        (out / folder).mkdir(parents=True)
        for st in stages:
            for f in sorted((frames / st).glob("*.png")):
                shutil.copy(f, out / folder / f"img{n:04d}.png")
                n += 1
    return out


def _seven_csv(frames: Path, out: Path) -> Path:
    """A manifest CSV giving every frame a label among seven; frames reused so each class has about 10."""
    files = sorted(frames.glob("F*/*.png"))
    (out / "imgs").mkdir(parents=True)
    lines = ["path,label"]
    for k, name in enumerate(SEVEN_NAMES):
        for j in range(10):
            src = files[(7 * j + k) % len(files)]
            shutil.copy(src, out / "imgs" / f"{name}_{j}.png")
            lines.append(f"imgs/{name}_{j}.png,{name.upper() if j % 2 else name}")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    return out / "labels.csv"


def _protocol(path: Path, task: dict) -> Path:
    doc = {"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": path.stem, "task": task,
           "data": {"input_size": 32}, "split": {"n_folds": 2, "test_fraction": 0.25},
           "train": {"epochs": 1, "batch_size": 16, "deterministic": True}, "models": ["efficientnet_b0"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _claims(path: Path, classes: list[str], test_counts: list[int]) -> Path:
    doc = {"schema": "fibrobench.claims/1", "paper": {"id": "toy", "title": "a toy paper"}, "class_names": classes,
           "sets": {"test": {"source": "Table 1", "counts": dict(zip(classes, test_counts)),
                             "total": sum(test_counts)}},
           "models": {"effnet": {"run_name": "efficientnet_b0", "results": [
               {"id": "t2_acc", "source": "Table 2", "kind": "ensemble", "evaluated_on": "test",
                "metrics": {"accuracy": "99.00%"}}]}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _cli(*argv) -> int:
    from bench.cli import main
    return main([str(a) for a in argv])


def _end_to_end(tmp_path, data, task: dict):
    """run -> report -> gate (write baseline, then gate against it) -> audit-claims --run; returns what they wrote."""
    proto, run = _protocol(tmp_path / "toy.yaml", task), tmp_path / "run"
    assert _cli("run", proto, "--data", data, "--out", run, "--device", "cpu", "--no-progress") == 0
    splits = json.loads((run / "splits.json").read_text())
    rj = json.loads((run / "run.json").read_text())
    assert splits["class_names"] == task["classes"] == rj["protocol"]["task"]["classes"]
    assert _cli("report", run, "--json", tmp_path / "summary.json", "--n-boot", "200") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    html = (run / "report.html").read_text()
    base = tmp_path / "base.json"
    assert _cli("gate", run, "--baseline", base, "--write-baseline") == 0
    assert _cli("gate", run, "--baseline", base, "--json", tmp_path / "gate.json") == 0
    gate = json.loads((tmp_path / "gate.json").read_text())
    claims = _claims(tmp_path / "claims.yaml", task["classes"], splits["class_counts"]["test"])
    rc = _cli("audit-claims", claims, "--run", run, "--json", tmp_path / "audit.json")
    assert rc in (0, 1)
    audit = json.loads((tmp_path / "audit.json").read_text())
    return splits, summary, html, gate, audit


def _words(html: str) -> str:
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "", html).lower()


def _assert_common(summary, html, gate, audit, task):
    classes = task["classes"]
    assert summary["class_names"] == classes and summary["task"]["classes"] == classes
    ens = summary["models"]["efficientnet_b0"]["ensemble"]
    assert set(ens["per_class"]) == set(classes) and len(ens["confusion"]) == len(classes)
    for c in classes:
        assert f"<td>{c}</td>" in html          # per-class rows and partition tables use the task's names
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)   # inline thumbnails are not words
    # no METAVIR stage names (F1 is also the F1 score, so F0/F2/F3/F4 stand for all five)
    assert not re.search(r"\bF[0234]\b", text), re.search(r".{60}\bF[0234]\b.{60}", text)
    assert gate["verdict"] == "pass" and any(c["name"] == "metric/efficientnet_b0/accuracy" for c in gate["checks"])
    assert gate["counts"]["fail"] == 0
    assert audit["schema"] == "fibrobench.claims_audit/1"
    repro = [c for c in audit["checks"] if c["kind"] == "reproduction"]
    assert len(repro) == 1 and repro[0]["values"]["claimed"] == pytest.approx(0.99)   # compared with the run:
    assert repro[0]["values"]["reproduced"] == pytest.approx(summary["models"]["efficientnet_b0"]["ensemble"]
                                                                  ["accuracy"]["value"])
    return ens


@pytest.mark.slow
def test_binary_task_renamed_folders(tmp_path, frames):
    data = _imagefolder(frames, tmp_path / "data", BINARY["folders"])
    splits, summary, html, gate, audit = _end_to_end(tmp_path, data, BINARY["task"])
    ens = _assert_common(summary, html, gate, audit, BINARY["task"])
    # binary: the positive class's AUROC (DeLong) and its sensitivity/specificity/PPV/NPV; no macro OvR, no ordinal
    assert ens["positive_class"] == "malignant"
    assert "DeLong" in ens["auroc"]["method"] and ens["auroc"] == ens["per_class"]["malignant"]["auroc"]
    assert ens["sensitivity"] == ens["per_class"]["malignant"]["recall"]
    assert ens["ppv"] == ens["per_class"]["malignant"]["precision"]
    assert {"specificity", "npv"} <= set(ens)
    assert not {"auroc_macro", "qwk", "linear_kappa", "mae_stage", "error_ge2_rate"} & set(ens)
    assert ens["auroc_cutoffs"] == {}
    assert "AUROC (malignant)" in html and "Sensitivity (malignant)" in html and "macro OvR" not in html
    assert "stage" not in _words(html) and "cut-off" not in _words(html)
    assert any(c["name"] == "metric/efficientnet_b0/auroc" for c in gate["checks"])


@pytest.mark.slow
def test_three_class_ordinal_task_mapped_folders(tmp_path, frames):
    data = _imagefolder(frames, tmp_path / "data", THREE["folders"])
    splits, summary, html, gate, audit = _end_to_end(tmp_path, data, THREE["task"])
    ens = _assert_common(summary, html, gate, audit, THREE["task"])
    counts = {c: sum(splits["class_counts"]["test"][k] for k in [k]) for k, c in enumerate(THREE["task"]["classes"])}
    assert counts["mild"] > 0 and counts["severe"] > 0
    # ordinal: weighted kappas and stage errors; cut-off AUROCs from the protocol's cutoffs; macro OvR AUROC
    assert {"qwk", "linear_kappa", "mae_stage", "error_ge2_rate", "auroc_macro"} <= set(ens)
    assert set(ens["auroc_cutoffs"]) == {"moderate or worse", "severe"}
    assert "auroc" not in ens and "positive_class" not in ens
    assert "Quadratic κ" in html and "moderate or worse" in html and "Mean |stage error|" in html


@pytest.mark.slow
def test_seven_class_nominal_task_from_csv(tmp_path, frames):
    csv = _seven_csv(frames, tmp_path / "data")
    splits, summary, html, gate, audit = _end_to_end(tmp_path, csv, SEVEN["task"])
    ens = _assert_common(summary, html, gate, audit, SEVEN["task"])
    assert len(ens["confusion"]) == 7 and sum(map(sum, ens["confusion"])) == summary["n_test"]
    assert "auroc_macro" in ens and not {"qwk", "linear_kappa", "mae_stage", "auroc"} & set(ens)
    assert ens["auroc_cutoffs"] == {}
    assert "stage" not in _words(html) and "Quadratic κ" not in html
