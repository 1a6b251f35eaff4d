"""The run directory's torch-free layer: strict logit reading, layout, class names, DONE, and that the report
uses the same leak-checked ensemble / OOF as training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.scripts.fake_run import make_fake_run
from protocols import runfiles as R
from protocols.atomic import sha256_of, write_json
from protocols.errors import BadInput
from protocols.splits import make_splits


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


GOOD = dict(ids=np.array(["a", "b"]), logits=np.zeros((2, 3), np.float32), labels=np.array([0, 2]))


@pytest.mark.parametrize("change, field", [
    ({"ids": np.array(["a", "a"])}, "ids"),                                   # duplicate ids
    ({"logits": np.array([[0, np.nan, 0], [0, 0, 0]], np.float32)}, "logits"),
    ({"logits": np.zeros((3, 3), np.float32)}, "logits"),                    # rows != ids
    ({"logits": np.array([["x", "y", "z"], ["x", "y", "z"]])}, "logits"),     # not numbers
    ({"labels": np.array([0.0, 2.0])}, "labels"),                             # not integers
    ({"labels": np.array([0, 1, 2])}, "labels"),
    ({"probs": np.zeros((2, 4), np.float32)}, "probs"),                       # shape differs from logits
    ({"ids": np.array([["a"], ["b"]])}, "ids"),
])
def test_read_logits_names_the_bad_key(tmp_path, change, field):
    path = _npz(tmp_path / "x.npz", **{**GOOD, **change})
    with pytest.raises(BadInput) as ei:
        R.read_logits(path)
    assert ei.value.field == field and str(path) in str(ei.value) and ei.value.exit_code == 2


def test_read_logits_refuses_pickles_missing_keys_and_non_npz(tmp_path):
    obj = _npz(tmp_path / "obj.npz", ids=np.array([{"evil": 1}, None], dtype=object), logits=GOOD["logits"],
               labels=GOOD["labels"])
    with pytest.raises(BadInput, match="not a readable .npz"):
        R.read_logits(obj)
    with pytest.raises(BadInput) as ei:
        R.read_logits(_npz(tmp_path / "nolab.npz", ids=GOOD["ids"], logits=GOOD["logits"]))
    assert ei.value.field == "labels"
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a readable"):
        R.read_logits(tmp_path / "junk.npz")
    with pytest.raises(BadInput, match="not found"):
        R.read_logits(tmp_path / "absent.npz")


def test_write_then_read_round_trip(tmp_path):
    p = R.write_logits(tmp_path / "r.npz", ["x/1.png", "x/2.png"], [[1, 2], [3, 4]], [1, 0], probs=[[.3, .7], [.6, .4]])
    z = R.read_logits(p)
    assert z["ids"].tolist() == ["x/1.png", "x/2.png"] and z["logits"].dtype == np.float32
    assert z["labels"].dtype == np.int64 and z["probs"].shape == (2, 2)


def test_model_folders_are_their_names_and_never_leave_the_run(tmp_path):
    assert R.job_dir(tmp_path, "resnet50_cbam", 3) == tmp_path / "jobs" / "resnet50_cbam" / "fold3"
    assert R.job_dir(tmp_path, "timm/convnext_tiny.fb_in1k", 0) == tmp_path / "jobs/timm/convnext_tiny.fb_in1k/fold0"
    assert R.ensemble_path(tmp_path, "pkg.mod:factory") == tmp_path / "ensemble" / "pkg.mod:factory.npz"
    for bad in ("", ".", "..", "../../etc", "/abs", "timm/../x", "timm//x", "a\\b", "a\x00b", None):
        with pytest.raises(BadInput) as ei:
            R.job_dir(tmp_path, bad, 0)
        assert ei.value.field == "model"


def test_fold_dirs_are_canonical_and_job_models_find_nested_names(tmp_path):
    for name in ("fold10", "fold2", "fold03", "foldx", "fold"):
        (tmp_path / "jobs" / "m" / name).mkdir(parents=True)
    (tmp_path / "jobs" / "m" / "fold1").write_text("a file, not a job")
    assert [k for k, _ in R.fold_dirs(tmp_path, "m")] == [2, 10]
    assert R.fold_dirs(tmp_path, "absent") == []
    (tmp_path / "jobs" / "stray").mkdir()                                   # no fold folder: not a model
    (tmp_path / "jobs" / "timm" / "x" / "fold0").mkdir(parents=True)         # timm/x nests
    (tmp_path / "jobs" / "m" / "fold2" / "inner" / "fold0").mkdir(parents=True)   # nothing inside a fold folder
    assert R.job_models(tmp_path) == ["m", "timm/x"]
    assert R.job_models(tmp_path / "nowhere") == []


def test_class_names_come_from_splits_with_one_legacy_default():
    assert R.class_names({"class_names": ["benign", "malignant"]}) == ["benign", "malignant"]
    assert R.class_names({}) == R.class_names(None) == list(R.LEGACY_CLASS_NAMES)
    for bad in ([], ["a", "a"], ["a", ""], "F0F1", [1, 2]):
        with pytest.raises(BadInput) as ei:
            R.class_names({"class_names": bad})
        assert ei.value.field == "class_names"


def test_the_legacy_class_names_are_written_once():
    """In the shipped packages the F0..F4 default is spelled out in protocols/runfiles.py only; the rest imports it.
    (bench/scripts and bench/benchmarks are not shipped: their fake runs may spell out what they fake.)"""
    root = Path(__file__).resolve().parent.parent
    literal = '"F0", "F1", "F2", "F3", "F4"'
    unshipped = (root / "bench" / "scripts", root / "bench" / "benchmarks")
    holders = [str(p.relative_to(root)) for pkg in ("bench", "models", "protocols", "reports")
               for p in sorted((root / pkg).rglob("*.py"))
               if not any(p.is_relative_to(u) for u in unshipped) and literal in p.read_text()]
    assert holders == ["protocols/runfiles.py"], holders
    import protocols.synth
    assert protocols.synth.CLASS_NAMES is R.LEGACY_CLASS_NAMES


def test_read_done(tmp_path):
    assert R.read_done(tmp_path) is None
    (tmp_path / "DONE").write_text("")
    assert R.read_done(tmp_path) == {}
    write_json(tmp_path / "DONE", {"epochs": 3})
    assert R.read_done(tmp_path) == {"epochs": 3}
    (tmp_path / "DONE").write_text("[1, 2]")
    with pytest.raises(BadInput, match="JSON object"):
        R.read_done(tmp_path)
    (tmp_path / "DONE").write_text("{oops")
    with pytest.raises(BadInput, match="not valid JSON"):
        R.read_done(tmp_path)


def _splits_and_jobs(tmp_path, n=40, folds=2):
    df = pd.DataFrame({"image_id": [f"F{i % 5}/x{i:03d}.png" for i in range(n)], "label": [i % 5 for i in range(n)]})
    splits = make_splits(df, "image", 0.25, folds, seed=0)
    rng = np.random.default_rng(0)
    lab = dict(zip(df.image_id, df.label))
    for k, f in enumerate(splits["folds"]):
        job = R.job_dir(tmp_path, "m", k)
        for name, ids in (("val", f["val"]), ("test", splits["holdout"]["test"])):
            R.write_logits(job / f"{name}_logits.npz", ids, rng.normal(size=(len(ids), 5)), [lab[i] for i in ids])
        write_json(job / "DONE", {})
    write_json(tmp_path / "splits.json", splits)
    return splits


def test_holdout_ensemble_is_exactly_what_ensemble_model_writes(tmp_path):
    splits = _splits_and_jobs(tmp_path)
    ens = R.holdout_ensemble(tmp_path, "m", splits)
    oof = R.out_of_fold(tmp_path, "m", splits)
    R.ensemble_model(tmp_path, "m", splits)
    written = R.read_logits(R.ensemble_path(tmp_path, "m"))
    for k in ("ids", "logits", "labels", "probs"):
        assert np.array_equal(written[k], ens[k]) and written[k].dtype == ens[k].dtype, k
    with np.load(R.oof_path(tmp_path, "m")) as z:
        assert all(np.array_equal(z[k], oof[k]) for k in ("ids", "logits", "labels", "fold"))
    part = R.out_of_fold(tmp_path, "m", splits, folds=[1])      # a subset: that fold's val images only
    assert sorted(part["ids"].tolist()) == sorted(splits["folds"][1]["val"]) and set(part["fold"]) == {1}


def test_report_fallback_is_the_same_leak_checked_ensemble(tmp_path):
    from reports.rundir import load_run
    rd = make_fake_run(tmp_path / "run", models=("resnet50",), n_patients=20, n_folds=3)
    shutil.rmtree(rd / "ensemble")
    shutil.rmtree(rd / "oof")
    splits = json.loads((rd / "splits.json").read_text())
    mr = load_run(rd).models["resnet50"]
    ens = R.holdout_ensemble(rd, "resnet50", splits)
    assert mr.ensemble_source == "mean of fold test logits"
    assert np.array_equal(mr.ensemble["logits"], ens["logits"].astype(np.float64))
    assert np.array_equal(mr.ensemble["probs"], ens["probs"].astype(np.float64))
    assert sorted(mr.oof["ids"]) == sorted(splits["holdout"]["trainval"])
    # a member fold that trained on a holdout image: the report refuses, as training's ensemble does
    victim = splits["holdout"]["test"][0]
    splits["folds"][1]["train"].append(victim)
    splits.pop("sha256")
    splits["sha256"] = sha256_of(splits)
    (rd / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(BadInput) as ei:
        load_run(rd)
    assert ei.value.field == "folds[1].train" and victim in str(ei.value)


def test_report_refuses_duplicate_ids_it_used_to_accept(tmp_path):
    from reports.rundir import load_run
    rd = make_fake_run(tmp_path / "run", models=("resnet50",), n_patients=20, n_folds=3)
    path = rd / "ensemble" / "resnet50.npz"
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["ids"][1] = d["ids"][0]
    np.savez(path, **d)
    with pytest.raises(BadInput) as ei:
        load_run(rd)
    assert ei.value.field == "ids" and "duplicate" in str(ei.value)


def test_report_without_splits_says_why_there_is_no_ensemble(tmp_path):
    """Without splits.json the members cannot be checked against the holdout: no ensemble, and the reason."""
    from reports.summary import summarize_run
    rd = make_fake_run(tmp_path / "run", models=("resnet50",), n_patients=20, n_folds=3)
    shutil.rmtree(rd / "ensemble")
    (rd / "splits.json").unlink()
    s = summarize_run(rd, n_boot=50)
    assert s["models"] == {} and "resnet50: no holdout ensemble (no splits.json to check the members against)" \
        in s["warnings"]
    for k in range(3):
        (rd / "jobs" / "resnet50" / f"fold{k}" / "DONE").unlink()
    assert "resnet50: no holdout ensemble (no completed fold)" in summarize_run(rd, n_boot=50)["warnings"]
