"""The task (label space) as protocol data: validation, include semantics, hashing, data labels, splits, model head,
task-aware metrics against sklearn, the reports' reading of old and new run dirs, gate and compare (issue 11)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn import metrics as skm

from protocols.config import TaskCfg, from_dict, load_protocol, protocol_sha256
from protocols.data import load_manifest
from protocols.errors import BadInput
from protocols.splits import make_splits
from reports import metrics as M
from reports.errors import ReportInputError
from reports.task import task_of
from bench.scripts.fake_run import make_fake_run


ROOT = Path(__file__).resolve().parent.parent
BASE = {"name": "t", "models": ["resnet50"], "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 4, "epochs": 1}}
THREE = {"classes": ["F0-F1", "F2-F3", "F4"], "ordinal": True,
         "map": {"F0": "F0-F1", "F1": "F0-F1", "F2": "F2-F3", "F3": "F2-F3", "F4": "F4"},
         "cutoffs": {">=F2": "F2-F3", "F4": "F4"}}


def _proto(task, source="p.yaml"):
    return from_dict({**copy.deepcopy(BASE), "task": task}, source=source)


# ---------------------------------------------------------------- protocol section


@pytest.mark.parametrize("task, key, words", [
    ({"classes": ["a"]}, "task.classes", "at least 2"),
    ({"classes": "a,b"}, "task.classes", "at least 2"),
    ({"classes": ["a", ""]}, "task.classes[1]", "non-empty"),
    ({"classes": ["a", "A"]}, "task.classes[1]", "repeats"),
    ({"classes": ["a", "b"]}, "task.positive", "needs its positive class"),
    ({"classes": ["a", "b"], "positive": "c"}, "task.positive", "names no class"),
    ({"classes": ["a", "b", "c"], "positive": "a"}, "task.positive", "only for a two-class task"),
    ({"classes": ["a", "b", "c"], "map": {"x": "a", "y": "b", "z": "d"}}, "task.map.z", "unknown class 'd'"),
    ({"classes": ["a", "b", "c"], "map": {"x": "a", "y": "b"}}, "task.map", "no dataset label maps to class 'c'"),
    ({"classes": ["a", "b", "c"], "map": {"x": "a", "X": "b", "z": "c"}}, "task.map.X", "same label"),
    ({"classes": ["a", "b", "c"], "map": []}, "task.map", "non-empty mapping"),
    ({"classes": ["a", "b", "c"], "cutoffs": {">=b": "b"}}, "task.cutoffs", "ordinal: true"),
    ({"classes": ["a", "b", "c"], "ordinal": True, "cutoffs": {">=q": "q"}}, "task.cutoffs.>=q", "names no class"),
    ({"classes": ["a", "b", "c"], "ordinal": True, "cutoffs": {"all": "a"}}, "task.cutoffs.all", "no negatives"),
    ({"classes": ["a", "b", "c"], "ordinal": "yes"}, "task.ordinal", "true or false"),
    ({"classes": ["a", "b", "c"], "labels": 1}, "task.labels", "unknown key"),
])
def test_task_validation_names_file_and_key(task, key, words):
    with pytest.raises(BadInput) as ei:
        _proto(task, source="bad.yaml")
    assert ei.value.field == key and ei.value.path == "bad.yaml" and words in str(ei.value)


def test_bad_task_is_one_line_and_exit_2(tmp_path, capsys):
    from bench.cli import main
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**BASE, "task": {"classes": ["a", "b", "c"], "map": {"x": "a", "y": "b"}}}))
    assert main(["run", str(p), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "task.map" in err[0] and "'c'" in err[0]


def test_task_is_hashed_and_round_trips():
    p = _proto(THREE)
    assert p.task.dataset_labels == ("F0", "F1", "F2", "F3", "F4") and p.task.class_of("F3") == "F2-F3"
    assert from_dict(p.to_dict(), "x").task == p.task          # what run.json records reloads identically
    other = dict(THREE, cutoffs={">=F2": "F2-F3"})
    assert protocol_sha256(_proto(other)) != protocol_sha256(p)
    assert protocol_sha256(_proto(dict(THREE, ordinal=True))) == protocol_sha256(p)
    assert protocol_sha256(from_dict(copy.deepcopy(BASE))) != protocol_sha256(p)


def test_include_replaces_the_task_whole(tmp_path):
    """A binary task included over the five-stage protocol must not inherit its cut-offs (deep merge would)."""
    p = load_protocol(ROOT / "protocols/afif2025/protocol-binary.yaml")
    assert p.task == TaskCfg(classes=("F0-F1", "F2-F4"), ordinal=False, positive="F2-F4",
                             map={"F0": "F0-F1", "F1": "F0-F1", "F2": "F2-F4", "F3": "F2-F4", "F4": "F2-F4"})
    paper = load_protocol(ROOT / "protocols/afif2025/protocol.yaml")
    assert p.train == paper.train and p.split == paper.split and p.models == paper.models
    (tmp_path / "inc.yaml").write_text(yaml.safe_dump({"include": str(ROOT / "protocols/afif2025/protocol.yaml"),
                                                       "name": "x", "task": {"classes": ["a", "b"],
                                                                             "positive": "b"}}))
    assert load_protocol(tmp_path / "inc.yaml").task.cutoffs is None
    # other sections still merge key by key
    assert load_protocol(tmp_path / "inc.yaml").train.lr == paper.train.lr


def test_shipped_tasks():
    five = load_protocol(ROOT / "protocols/afif2025/protocol.yaml").task
    assert five.classes == ("F0", "F1", "F2", "F3", "F4") and five.ordinal and five.map is None
    assert five.cutoffs == {">=F2": "F2", ">=F3": "F3", "F4": "F4"}
    assert load_protocol(ROOT / "protocols/afif2025/protocol-patient.yaml").task == five
    assert load_protocol(ROOT / "protocols/smoke/protocol.yaml").task == five
    three = load_protocol(ROOT / "protocols/afif2025/protocol-3class.yaml")
    assert three.task == _proto(THREE).task and three.grid is None
    for t in ("binary", "3class"):
        smoke = load_protocol(ROOT / f"protocols/smoke/protocol-{t}.yaml")
        full = load_protocol(ROOT / f"protocols/afif2025/protocol-{t}.yaml")
        assert smoke.smoke and smoke.task == full.task and smoke.train.epochs <= 3 and smoke.models == ("resnet50",)


# ---------------------------------------------------------------- data


def _folder(root: Path, names, per=2) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_imagefolder_any_names_case_insensitive(tmp_path):
    root = _folder(tmp_path / "d", ["Benign", "MALIGNANT"])
    task = TaskCfg(classes=("benign", "malignant"), positive="malignant")
    df = load_manifest(root, task=task)
    assert df.attrs["class_names"] == ["benign", "malignant"] and df.attrs["task"] is task
    assert dict(zip(df["image_id"], df["label"])) == {"Benign/0.png": 0, "Benign/1.png": 0,
                                                      "MALIGNANT/0.png": 1, "MALIGNANT/1.png": 1}
    assert set(df["label_name"]) == {"benign", "malignant"}


def test_imagefolder_without_task_infers_sorted_nominal_classes(tmp_path):
    df = load_manifest(_folder(tmp_path / "d", ["zeta", "alpha", "Mid"]))
    t = df.attrs["task"]
    assert t.classes == ("Mid", "alpha", "zeta") and not t.ordinal and t.cutoffs is None
    assert df.groupby("label_name")["label"].first().to_dict() == {"Mid": 0, "alpha": 1, "zeta": 2}


def test_map_groups_folders_into_task_classes(tmp_path):
    root = _folder(tmp_path / "d", ["f0", "F1", "f2", "F3", "f4"], per=1)
    df = load_manifest(root, task=_proto(THREE).task)
    assert dict(zip(df["image_id"], df["label"])) == {"f0/0.png": 0, "F1/0.png": 0, "f2/0.png": 1, "F3/0.png": 1,
                                                      "f4/0.png": 2}
    assert dict(zip(df["image_id"], df["label_name"]))["F3/0.png"] == "F2-F3"
    # a dataset without F1 still has every class; one without F4 leaves a class empty
    (root / "F1" / "0.png").unlink()
    (root / "F1").rmdir()
    assert sorted(load_manifest(root, task=_proto(THREE).task)["label"]) == [0, 1, 1, 2]
    for f in (root / "f4").iterdir():
        f.unlink()
    (root / "f4").rmdir()
    with pytest.raises(BadInput, match="class F4 has no images .dataset labels mapped to it: F4"):
        load_manifest(root, task=_proto(THREE).task)


@pytest.mark.parametrize("folders, task, field, words", [
    (["a", "b", "other"], TaskCfg(("a", "b"), positive="b"), "folder", "unknown class folder 'other'"),
    (["a", "b", "B"], TaskCfg(("a", "b"), positive="b"), "folder", "second folder for label b"),
    (["a"], TaskCfg(("a", "b"), positive="b"), "folder", "missing class folder b"),
    (["x", "y"], TaskCfg(("a", "b"), map={"x": "a", "Y": "a", "z": "b"}, positive="b"), "label",
     "class b has no images"),
    (["x", "y", "X"], TaskCfg(("a", "b"), map={"x": "a", "y": "b"}, positive="b"), "folder", "second folder"),
])
def test_imagefolder_errors(tmp_path, folders, task, field, words):
    if len({f.lower() for f in folders}) < len(folders):
        (tmp_path / "probe").mkdir()
        if (tmp_path / "PROBE").exists():
            pytest.skip("case-insensitive file system")
    root = _folder(tmp_path / "d", folders)
    with pytest.raises(BadInput) as ei:
        load_manifest(root, task=task)
    assert ei.value.field == field and words in str(ei.value)


def test_empty_class_folder(tmp_path):
    root = _folder(tmp_path / "d", ["a", "b"])
    (root / "c").mkdir()
    with pytest.raises(BadInput, match="class folder c has no images"):
        load_manifest(root, task=TaskCfg(("a", "b", "c")))


def test_csv_any_label_strings(tmp_path):
    root = _folder(tmp_path / "d", ["imgs"], per=6)
    labels = ["Cat", "dog", "CAT", "bird", "Dog", "2"]
    (root / "m.csv").write_text("path,label\n" + "".join(f"imgs/{i}.png,{lab}\n" for i, lab in enumerate(labels)))
    task = TaskCfg(("cat", "dog", "bird"))
    df = load_manifest(root / "m.csv", task=task)
    assert df["label"].tolist() == [0, 1, 0, 2, 1, 2]          # "2" matches no label: the third one
    inferred = load_manifest(root / "m.csv").attrs["task"]
    assert inferred.classes == ("2", "CAT", "Dog", "bird")        # without a task: one class per label, sorted
    with pytest.raises(BadInput) as ei:
        load_manifest(root / "m.csv", task=TaskCfg(("cat", "dog", "fish")))
    assert ei.value.field == "label (line 5)" and "unknown label 'bird'" in str(ei.value)
    (root / "m.csv").write_text("path,label\n" + "".join(f"imgs/{i}.png,cat\n" for i in range(6)))
    with pytest.raises(BadInput, match="class dog has no images"):
        load_manifest(root / "m.csv", task=task)


def test_csv_label_contradicting_its_class_folder(tmp_path):
    root = _folder(tmp_path / "d", ["Benign", "Malignant"], per=1)
    (root / "m.csv").write_text("path,label\nBenign/0.png,malignant\nMalignant/0.png,benign\n")
    with pytest.raises(BadInput) as ei:
        load_manifest(root / "m.csv", task=TaskCfg(("benign", "malignant"), positive="malignant"))
    assert ei.value.field == "label (line 2)" and "folder 'Benign'" in str(ei.value)


# ---------------------------------------------------------------- splits and model head


def test_splits_stratify_on_task_classes_and_record_their_names():
    rng = np.random.default_rng(0)
    stages = rng.choice(5, 200, p=[0.4, 0.1, 0.1, 0.1, 0.3])
    grouped = np.array([0, 0, 1, 1, 1])[stages]
    df = pd.DataFrame({"image_id": [f"x{i:03d}.png" for i in range(200)], "label": grouped})
    s = make_splits(df, "image", 0.2, 5, seed=0, class_names=["F0-F1", "F2-F4"])
    assert s["class_names"] == ["F0-F1", "F2-F4"]
    share = np.bincount(grouped) / len(grouped)
    for part in [s["class_counts"]["test"], *[f["val"] for f in s["class_counts"]["folds"]]]:
        assert len(part) == 2 and abs(part[1] / sum(part) - share[1]) < 0.03   # stratified on the 2 classes


def test_model_head_has_one_output_per_task_class():
    import torch

    from bench.runner import build_model
    for task in (TaskCfg(("a", "b"), positive="b"), TaskCfg(tuple("abcdefg"))):
        p = from_dict({**copy.deepcopy(BASE), "models": ["efficientnet_b0"], "allow_random_init": True,
                       "data": {"input_size": 32}, "task": task.to_dict()})
        m, _ = build_model(p, "efficientnet_b0")
        with torch.no_grad():
            assert m.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, len(task.classes))


# ---------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def preds():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    logits = -np.abs(np.arange(4)[None, :] - y[:, None]) + rng.normal(0, 1.2, (400, 4))
    return y, M.softmax(logits)


def test_linear_kappa_and_custom_cutoffs_match_sklearn(preds):
    y, probs = preds
    yhat = probs.argmax(1)
    cm = M.confusion(y, yhat, 4)
    assert M.from_confusion(cm)["linear_kappa"] == pytest.approx(
        skm.cohen_kappa_score(y, yhat, weights="linear", labels=range(4)))
    cut = M.auroc_cutoffs(y, probs, {"b+": 1, "top": 3})
    assert cut["b+"] == pytest.approx(skm.roc_auc_score(y >= 1, probs[:, 1:].sum(1)))
    assert cut["top"] == pytest.approx(skm.roc_auc_score(y == 3, probs[:, 3]))
    assert M.auroc_cutoffs(y, probs, {}) == {}


def test_binary_summary_positive_class_metrics_match_sklearn(tmp_path):
    task = {"classes": ["neg", "pos"], "ordinal": False, "positive": "pos", "map": None, "cutoffs": None}
    rd = make_fake_run(tmp_path / "r", models=("resnet50", "vgg16"), n_patients=60, task=task,
                       quality={"resnet50": 0.8, "vgg16": 0.4})
    from reports.summary import summarize_run
    s = summarize_run(rd, n_boot=200, seed=0)
    with np.load(rd / "ensemble" / "resnet50.npz") as z:
        y, probs = z["labels"], z["probs"].astype(np.float64)
    yhat = probs.argmax(1)
    e = s["models"]["resnet50"]["ensemble"]
    assert s["task"]["positive"] == "pos" and e["positive_class"] == "pos"
    assert e["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y == 1, probs[:, 1]))
    assert e["auroc"]["ci"][0] <= e["auroc"]["value"] <= e["auroc"]["ci"][1] and "DeLong" in e["auroc"]["method"]
    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert e["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert e["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert e["ppv"]["value"] == pytest.approx(skm.precision_score(y, yhat))
    assert e["npv"]["value"] == pytest.approx(tn / (tn + fn))
    assert not {"auroc_macro", "qwk", "linear_kappa", "mae_stage", "error_ge2_rate"} & set(e)
    folds = s["models"]["resnet50"]["folds"]
    assert "auroc" in folds and "auroc_macro" not in folds and "qwk" not in folds
    c = s["comparisons"][0]
    assert set(c["holdout_diff"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    # the paired DeLong test is of the positive class's AUROC (both one-vs-rest AUROCs coincide for two classes)
    assert c["delong"]["metric"] == "auroc" and (c["model"], c["baseline"]) == ("vgg16", "resnet50")
    assert c["delong"]["a"] == pytest.approx(s["models"]["vgg16"]["ensemble"]["auroc"]["value"])
    assert c["delong"]["b"] == pytest.approx(e["auroc"]["value"])


def test_positive_class_need_not_be_the_second(tmp_path):
    task = {"classes": ["sick", "healthy"], "ordinal": False, "positive": "sick", "map": None, "cutoffs": None}
    rd = make_fake_run(tmp_path / "r", models=("resnet50",), n_patients=40, task=task, quality={"resnet50": 0.8})
    from reports.summary import summarize_run
    e = summarize_run(rd, n_boot=0)["models"]["resnet50"]["ensemble"]
    with np.load(rd / "ensemble" / "resnet50.npz") as z:
        y, probs = z["labels"], z["probs"].astype(np.float64)
    assert e["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y == 0, probs[:, 0]))
    assert e["sensitivity"]["value"] == pytest.approx(np.mean(probs[y == 0].argmax(1) == 0))


def test_nominal_multiclass_summary_has_no_ordinal_metrics(tmp_path):
    task = {"classes": list("abcdefg"), "ordinal": False, "positive": None, "map": None, "cutoffs": None}
    rd = make_fake_run(tmp_path / "r", models=("resnet50",), n_patients=70, task=task)
    from reports.summary import summarize_run
    s = summarize_run(rd, n_boot=100)
    e = s["models"]["resnet50"]["ensemble"]
    assert len(e["confusion"]) == 7 and e["auroc_cutoffs"] == {} and "auroc_macro" in e
    assert not {"qwk", "linear_kappa", "mae_stage", "error_ge2_rate", "auroc"} & set(e)


# ---------------------------------------------------------------- reading old and new run dirs


def test_task_of_old_and_new_run_dirs():
    legacy = task_of({"protocol": {}}, ["F0", "F1", "F2", "F3", "F4"])
    assert legacy.ordinal and legacy.cutoffs == {">=F2": 2, ">=F3": 3, "F4": 4} and "legacy" in legacy.source
    other = task_of({"protocol": {}}, ["x", "y", "z"])
    assert not other.ordinal and other.cutoffs == {}
    three = task_of({"protocol": {"task": THREE}}, THREE["classes"])
    assert three.cutoffs == {">=F2": 1, "F4": 2} and three.unit == "stage"
    with pytest.raises(ReportInputError, match="differ from splits.json class_names"):
        task_of({"protocol": {"task": THREE}}, ["F0", "F1", "F2"])
    with pytest.raises(ReportInputError, match="names no class"):
        task_of({"protocol": {"task": dict(THREE, cutoffs={"x": "F9"})}}, THREE["classes"])


# ---------------------------------------------------------------- gate and compare


def test_gate_skips_a_metric_undefined_in_the_baseline():
    from bench.gate import metric_check
    assert metric_check("m", "ppv", {"value": None, "ci": [None, None]}, {"value": None}, 0.01, 1.0)["status"] == "skip"
    assert metric_check("m", "ppv", {"value": 0.8, "ci": [0.7, 0.9]}, {"value": None}, 0.01, 1.0)["status"] == "fail"
    assert metric_check("m", "ppv", {"value": 0.8, "ci": [0.7, 0.9]}, {"value": 0.6}, 0.01, 1.0)["status"] == "fail"


def test_gate_refuses_a_baseline_with_other_class_names(tmp_path):
    from bench.gate import compare
    base = {"protocol_sha256": "p", "data_fingerprint": "d", "class_names": ["a", "b"], "metrics": {}}
    with pytest.raises(BadInput, match="class names differs"):
        compare(base, {**base, "class_names": ["a", "c"], "run_dir": "r"})
    assert compare({**base, "class_names": None}, {**base, "run_dir": "r"}) == [
        c for c in compare(base, {**base, "run_dir": "r"}) if c["name"] != "identity/class_names"]


def test_compare_two_tasks_says_so(tmp_path):
    from reports.compare import compare_runs
    five = make_fake_run(tmp_path / "five", models=("resnet50",), n_patients=30)
    two = make_fake_run(tmp_path / "two", models=("resnet50",), n_patients=30,
                        task={"classes": ["F0-F1", "F2-F4"], "ordinal": False, "positive": "F2-F4"})
    comp, _ = compare_runs([five, two], n_boot=50)
    assert any("different tasks" in n for n in comp["comparability"]["notes"])
    rows = comp["models"]["resnet50"]
    assert rows["qwk"]["values"][1] is None and rows["auroc"]["values"][0] is None
    assert json.dumps(comp)   # JSON-able


def test_latency_takes_the_class_count_from_the_protocols_task(tmp_path):
    from bench.cli import main
    out = {}
    for t, n in (("protocol-binary", 2), ("protocol", 5)):
        path = tmp_path / f"{t}.json"
        assert main(["latency", "--device", "cpu", "--protocol", str(ROOT / f"protocols/smoke/{t}.yaml"),
                     "--models", "resnet50", "--info-only", "--json", str(path)]) == 0
        res = json.loads(path.read_text())
        assert res["settings"]["num_classes"] == n
        out[n] = res["models"]["resnet50"]["params"]
    assert out[5] - out[2] == 3 * (2048 + 1)     # three more rows of the 2048-feature linear head


def test_a_single_class_is_refused(tmp_path):
    root = _folder(tmp_path / "d", ["only"])
    with pytest.raises(BadInput) as ei:
        load_manifest(root)
    assert ei.value.field == "label" and str(root) in str(ei.value) and "at least 2 classes" in str(ei.value)


def test_inferred_task_is_said_and_hostile_class_names_are_escaped(tmp_path):
    from reports.render import render_report
    task = {"classes": ["<script>alert(1)</script>", "b&b"], "ordinal": False, "positive": "b&b"}
    rd = make_fake_run(tmp_path / "r", models=("resnet50",), n_patients=30, task=task)
    run = json.loads((rd / "run.json").read_text())
    run["task_source"] = "inferred: the data's labels, sorted by name"
    (rd / "run.json").write_text(json.dumps(run))
    html, summary = render_report(rd, n_boot=50)
    assert summary["task"]["source"].startswith("inferred") and "inferred by" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "b&amp;b" in html


def test_leakage_cli_audits_a_run_split_made_with_another_task(tmp_path):
    """`fibrobench leakage --splits RUN/splits.json` on a binary run of F0..F4 data: the split's labels are used."""
    from bench.cli import main
    from protocols.splits import write_splits
    root = _folder(tmp_path / "d", ["F0", "F1", "F2", "F3", "F4"], per=6)
    binary = load_protocol(ROOT / "protocols/afif2025/protocol-binary.yaml").task
    df = load_manifest(root, task=binary)
    write_splits(tmp_path, make_splits(df, "image", 0.25, 2, seed=0, class_names=list(binary.classes)))
    out = tmp_path / "leak.json"
    assert main(["leakage", "--data", str(root), "--splits", str(tmp_path / "splits.json"), "--no-thumbs",
                 "--json", str(out)]) in (0, 1)
    assert json.loads(out.read_text())["split"]["sha256"] == json.loads((tmp_path / "splits.json").read_text())["sha256"]
