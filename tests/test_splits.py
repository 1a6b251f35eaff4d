"""splits.json: sklearn-style invariants at image / patient / cluster level, sha verification, write-once."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from split_checks import check_run_dir, check_split_invariants

from protocols.atomic import sha256_of
from protocols.errors import BadInput
from protocols.splits import (check_matches_manifest, make_splits, read_splits, write_splits)


def _df(n_patients=60, per_patient=4, seed=0, with_patient=True):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.integers(0, 5)) if p >= 10 else p % 5   # every class present
        for j in range(int(rng.integers(1, per_patient + 1))):
            rows.append({"image_id": f"F{label}/p{p:03d}_{j}.png", "label": label,
                         "patient_id": f"p{p:03d}" if with_patient else None})
    return pd.DataFrame(rows).sort_values("image_id").reset_index(drop=True)


def test_image_level_invariants_and_stratification():
    df = _df(200)
    s = make_splits(df, "image", 0.2, 5, seed=1)
    check_split_invariants(s, dict(zip(df["image_id"], df["label"])), grouped=False)
    overall = np.bincount(df["label"], minlength=5) / len(df)
    test = np.array(s["class_counts"]["test"]) / len(s["holdout"]["test"])
    assert np.abs(test - overall).max() < 0.02   # stratified holdout
    for c in s["class_counts"]["folds"]:
        v = np.array(c["val"])
        assert np.abs(v / v.sum() - overall).max() < 0.03
    assert abs(len(s["holdout"]["test"]) / len(df) - 0.2) < 0.01


def test_patient_level_no_patient_in_two_partitions():
    df = _df(120)
    s = make_splits(df, "patient", 0.2, 5, seed=0)
    check_split_invariants(s, dict(zip(df["image_id"], df["label"])), grouped=True)
    assert 0.12 < s["realised_test_fraction"] < 0.28
    overall = np.bincount(df["label"], minlength=5) / len(df)
    test = np.array(s["class_counts"]["test"]) / len(s["holdout"]["test"])
    assert np.abs(test - overall).max() < 0.08


def test_cluster_level_uses_given_groups():
    df = _df(100)
    clusters = {i: hash(i.split("/")[1][:4]) % 37 for i in df["image_id"]}   # arbitrary, spans patients
    s = make_splits(df, "cluster", 0.2, 3, seed=0, groups=clusters)
    check_split_invariants(s, dict(zip(df["image_id"], df["label"])), grouped=True)
    with pytest.raises(BadInput, match="groups"):
        make_splits(df, "cluster", 0.2, 3)


def test_patient_level_requires_patient_id():
    with pytest.raises(BadInput) as ei:
        make_splits(_df(30, with_patient=False), "patient")
    assert ei.value.field == "patient_id"
    with pytest.raises(BadInput):
        make_splits(_df(30).drop(columns="patient_id"), "patient")


def test_deterministic_under_seed_and_seed_matters():
    df = _df(80)
    a, b, c = (make_splits(df, "patient", seed=s) for s in (3, 3, 4))
    assert a == b and a["sha256"] == b["sha256"]
    assert a["holdout"]["test"] != c["holdout"]["test"] and a["sha256"] != c["sha256"]
    shuffled = df.sample(frac=1, random_state=0)   # row order of the manifest does not matter
    assert make_splits(shuffled, "patient", seed=3)["sha256"] == a["sha256"]


def test_write_once_and_sha_verified(tmp_path):
    df = _df(60)
    s = make_splits(df, "image", seed=0)
    path = write_splits(tmp_path, s)
    assert read_splits(path) == s
    write_splits(tmp_path, s)                     # identical: fine
    with pytest.raises(BadInput, match="different splits"):
        write_splits(tmp_path, make_splits(df, "image", seed=1))
    doc = json.loads(path.read_text())
    doc["holdout"]["test"] = doc["holdout"]["test"][1:]
    path.write_text(json.dumps(doc))
    with pytest.raises(BadInput) as ei:
        read_splits(path)
    assert ei.value.field == "sha256"


def test_matches_manifest_and_too_small(tmp_path):
    df = _df(60)
    s = make_splits(df, "image")
    check_matches_manifest(s, df)
    df2 = df.copy()
    df2.loc[0, "label"] = (df2.loc[0, "label"] + 1) % 5
    with pytest.raises(BadInput, match="relabelled"):
        check_matches_manifest(s, df2)
    tiny = _df(6, per_patient=1)
    with pytest.raises(BadInput, match="cannot make"):
        make_splits(tiny, "image", n_folds=5)


def test_image_level_splits_still_record_each_images_patient():
    df = _df()
    s = make_splits(df, "image", seed=0)
    truth = dict(zip(df["image_id"], df["patient_id"]))
    assert {i: e["patient"] for i, e in s["images"].items()} == truth
    assert all(e["group"] == i for i, e in s["images"].items())  # the split itself is per image
    s_none = make_splits(_df(with_patient=False), "image", seed=0)
    assert not any("patient" in e for e in s_none["images"].values())


@pytest.mark.parametrize("level", ["image", "patient"])
def test_fake_run_directories_hold_the_split_invariants(tmp_path, level):
    """The fake RUN_DIR the report tests use obeys the same invariants as a real run (tests/split_checks.py)."""
    from bench.scripts.fake_run import make_fake_run
    run_dir = make_fake_run(tmp_path / "run", n_patients=20, level=level)
    s = check_run_dir(run_dir)
    assert s["level"] == level and (run_dir / "oof").is_dir() and any((run_dir / "ensemble").glob("*.npz"))


def test_run_dir_check_catches_a_test_image_in_a_fold(tmp_path):
    from bench.scripts.fake_run import make_fake_run
    run_dir = make_fake_run(tmp_path / "run", n_patients=20)
    s = json.loads((run_dir / "splits.json").read_text())
    leaked = s["holdout"]["test"][0]
    s["folds"][0]["train"].append(leaked)
    s.pop("sha256")
    s["sha256"] = sha256_of(s)
    (run_dir / "splits.json").write_text(json.dumps(s))
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**run, "splits_sha256": s["sha256"]}))
    with pytest.raises(AssertionError):
        check_run_dir(run_dir)
