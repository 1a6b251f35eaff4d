"""Leakage audit on planted duplicates: overlap, near-duplicate clusters, probes, JSON schema, CLI, report view."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics.cluster import pair_confusion_matrix

from protocols import leakage
from protocols.errors import BadInput
from protocols.splits import make_splits
from test_hashing import frame, jpeg, patient_base

N_PATIENTS, PER_PATIENT = 30, 4


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """30 patients (6 per stage) x 4 frames, JPEG'd/shifted/brightened; labels by patient, not by image content."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(42)
    rows = []
    for p in range(N_PATIENTS):
        stage = p % 5
        base = patient_base(rng)
        (root / f"F{stage}").mkdir(exist_ok=True)
        for k in range(PER_PATIENT):
            sh = tuple(int(v) for v in rng.integers(-3, 4, 2))
            a = jpeg(frame(rng, base, sh, float(rng.uniform(0.9, 1.1)), text=f"P{p:03d}"), 80)
            rel = f"F{stage}/p{p:03d}_{k}.png"
            Image.fromarray(a).save(root / rel)
            rows.append({"image_id": rel, "path": str(root / rel), "label": stage, "label_name": f"F{stage}",
                         "patient_id": f"P{p:03d}", "site": None, "device": None})
    df = pd.DataFrame(rows).sort_values("image_id").reset_index(drop=True)
    df.attrs["root"] = str(root)
    pd.DataFrame({"path": df["image_id"], "label": df["label_name"], "patient_id": df["patient_id"]}).to_csv(
        root / "manifest.csv", index=False)
    return root, df, leakage.compute_hashes(df, workers=2)


def _no_ids(df):
    out = df.copy()
    out["patient_id"] = None
    out.attrs["root"] = df.attrs["root"]
    return out


def test_image_level_split_is_flagged(planted):
    root, df, hashes = planted
    res = leakage.audit_splits(df, make_splits(df, "image", 0.2, 5, 0), root, hashes=hashes)
    assert res["verdict"] == "leak"
    hold = res["near_duplicates"]["pairs"][0]
    assert hold["name"] == "holdout" and hold["eval_with_duplicate_in_train"] / hold["n_eval_images"] > 0.8
    assert res["patient_overlap"]["available"] and res["patient_overlap"]["total_shared_patients"] > 10
    assert len(res["near_duplicates"]["pairs"]) == 6 and any("patient" in r for r in res["reasons"])
    # every counted eval image really has a same-patient image in training (the truth, never shown to the detector)
    pid = dict(zip(df["image_id"], df["patient_id"]))
    po = res["patient_overlap"]["pairs"][0]
    sp = make_splits(df, "image", 0.2, 5, 0)
    train_p = {pid[i] for i in sp["holdout"]["trainval"]}
    assert po["eval_images_of_shared_patients"] == sum(pid[i] in train_p for i in sp["holdout"]["test"])


def test_patient_level_split_is_clean(planted):
    root, df, hashes = planted
    res = leakage.audit_splits(df, make_splits(df, "patient", 0.2, 5, 0), root, hashes=hashes)
    assert res["verdict"] == "clean", res["reasons"]
    assert res["patient_overlap"]["total_shared_patients"] == 0
    assert all(p["fraction"] <= res["thresholds"]["dup_tolerance"] for p in res["near_duplicates"]["pairs"])


def test_one_nn_probe_shows_inflation(planted):
    root, df, hashes = planted
    res = leakage.audit_splits(df, make_splits(df, "image", 0.2, 5, 0), root, hashes=hashes)
    pr = res["probe"]
    assert pr["run_split"]["level"] == "image" and pr["group_split"]["level"] == "patient"
    assert pr["run_split"]["holdout"] > 0.9          # the nearest frame is the same patient's
    assert pr["group_split"]["holdout"] < 0.6        # labels are not in the image content: near chance
    assert pr["gap_holdout"] == pytest.approx(pr["run_split"]["holdout"] - pr["group_split"]["holdout"])
    assert pr["gap_fold_mean"] > 0.3 and len(pr["run_split"]["folds"]) == 5


def test_clusters_recover_patients_without_ids(planted):
    root, df, hashes = planted
    clusters = leakage.find_clusters(_no_ids(df), hashes=hashes)
    assert set(clusters) == set(df["image_id"])
    pred = np.array([clusters[i] for i in df["image_id"]])
    agree = leakage.pair_agreement(df["patient_id"], pred)
    assert agree["precision"] >= 0.95 and agree["recall"] >= 0.90
    # a cluster-level split built from them is clean; the image-level one is not
    d = _no_ids(df)
    clean = leakage.audit_splits(d, make_splits(d, "cluster", 0.2, 5, 0, groups=clusters), root, hashes=hashes)
    leak = leakage.audit_splits(d, make_splits(d, "image", 0.2, 5, 0), root, hashes=hashes)
    assert clean["verdict"] == "clean" and leak["verdict"] == "leak"
    assert not leak["patient_overlap"]["available"] and leak["detector_vs_patients"] is None
    assert leak["probe"]["group_split"]["level"] == "cluster"
    assert leak["probe"]["run_split"]["holdout"] > leak["probe"]["group_split"]["holdout"]


def test_pair_agreement_matches_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 30, 300), rng.integers(0, 40, 300)
    r = leakage.pair_agreement(a, b)
    c = pair_confusion_matrix(a, b) // 2                  # sklearn counts ordered pairs
    assert r["correct_pairs"] == c[1, 1]
    assert r["precision"] == pytest.approx(c[1, 1] / (c[0, 1] + c[1, 1]))
    assert r["recall"] == pytest.approx(c[1, 1] / (c[1, 0] + c[1, 1]))


def test_json_schema_and_thumbnails(planted):
    root, df, hashes = planted
    res = leakage.audit_splits(df, make_splits(df, "image", 0.2, 5, 0), root, hashes=hashes, n_examples=3)
    res = json.loads(json.dumps(res))                     # JSON-serialisable as is
    for key in ("schema", "verdict", "reasons", "data", "split", "thresholds", "clusters", "cluster_stats",
                "patient_overlap", "near_duplicates", "detector_vs_patients", "probe", "linear_probe", "timing"):
        assert key in res
    assert res["schema"] == "fibrobench.leakage/1" and res["verdict"] in ("leak", "clean")
    assert set(res["clusters"]) == set(df["image_id"]) and all(isinstance(v, int) for v in res["clusters"].values())
    assert res["cluster_stats"]["n_clusters"] == len(set(res["clusters"].values()))
    assert {"phash", "dhash", "ncc", "cosine", "dup_tolerance", "source"} <= set(res["thresholds"])
    ex = res["near_duplicates"]["examples"]
    assert len(ex) == 3
    sp = make_splits(df, "image", 0.2, 5, 0)
    for e in ex:
        assert e["eval_id"] in sp["holdout"]["test"] and e["train_id"] in sp["holdout"]["trainval"]
        assert res["clusters"][e["eval_id"]] == res["clusters"][e["train_id"]]
        assert e["phash_distance"] <= res["thresholds"]["phash"] and e["ncc"] >= res["thresholds"]["ncc"]
        head, b64 = e["eval_thumb"].split(",", 1)
        assert head == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(b64))).width == leakage.THUMB_WIDTH
    assert res["detector_vs_patients"]["precision"] >= 0.95


def test_linear_probe_with_features(planted):
    root, df, hashes = planted
    rng = np.random.default_rng(0)
    # stand-in "backbone" features: per-patient random code + per-frame noise (carries identity, not stage)
    code = {p: rng.normal(size=16) for p in df["patient_id"].unique()}
    feats = np.stack([code[p] + 0.3 * rng.normal(size=16) for p in df["patient_id"]])
    sp = make_splits(df, "image", 0.2, 5, 0)
    res = leakage.audit_splits(df, sp, root, hashes=hashes, features=feats, linear_probe=True,
                               feature_info={"model": "stand-in"})
    lp = res["linear_probe"]
    assert res["probe"]["metric"] == "cosine"
    assert lp["run_split"]["holdout"] > lp["group_split"]["holdout"]
    assert lp["features"] == {"model": "stand-in"}
    with pytest.raises(BadInput):
        leakage.audit_splits(df, sp, root, hashes=hashes, linear_probe=True)
    with pytest.raises(BadInput):
        leakage.audit_splits(df, sp, root, hashes=hashes, features=feats[:5])


def test_bad_splits_and_thresholds(planted):
    root, df, hashes = planted
    sp = make_splits(df, "image", 0.2, 5, 0)
    bad = json.loads(json.dumps(sp))
    bad["holdout"]["test"].append("F9/nope.png")
    with pytest.raises(BadInput, match="F9/nope.png"):
        leakage.audit_splits(df, bad, root, hashes=hashes, splits_path="run/splits.json")
    with pytest.raises(BadInput, match="phash"):
        leakage.audit_splits(df, sp, root, hashes=hashes, thresholds={"phash": 99})


def test_report_view_context(planted):
    from reports.leakage_view import leakage_context, render_section

    root, df, hashes = planted
    res = leakage.audit_splits(df, make_splits(df, "image", 0.2, 5, 0), root, hashes=hashes, n_examples=2)
    ctx = leakage_context(json.loads(json.dumps(res)))
    assert ctx["verdict"] == "leak" and ctx["figures"]["near_duplicates"].lstrip().startswith("<svg")
    html = render_section(json.loads(json.dumps(res)))
    assert "near-duplicate" in html.lower() and "data:image/png;base64," in html and "<script" not in html


def test_report_view_rejects_bad_json():
    from reports.errors import ReportInputError
    from reports.leakage_view import leakage_context

    with pytest.raises(ReportInputError):
        leakage_context({"schema": "something/else"})


class TestCLI:
    def run(self, *argv):
        from bench.cli import main
        return main(["leakage", *map(str, argv)])

    def test_no_splits_image_level_leaks(self, planted, tmp_path, capsys):
        root, df, _ = planted
        out = tmp_path / "leak.json"
        assert self.run("--data", root, "--json", out, "--no-thumbs") == 0
        assert self.run("--data", root, "--fail-on-leak", "--no-probe") == 1
        res = json.loads(out.read_text())
        assert res["verdict"] == "leak" and res["compared_split"]["verdict"] == "clean"
        assert set(res["clusters"]) == set(df["image_id"])           # keys relative to --data
        assert "provenance" in res and "LEAK" in capsys.readouterr().out

    def test_patient_split_passes_gate(self, planted, tmp_path):
        from protocols.splits import write_splits

        root, df, _ = planted
        write_splits(tmp_path, make_splits(df, "patient", 0.2, 5, 0))
        assert self.run("--data", root, "--splits", tmp_path / "splits.json", "--fail-on-leak", "--no-probe") == 0

    def test_embed_and_linear_probe(self, planted, tmp_path):
        root, df, _ = planted
        out = tmp_path / "emb.json"
        assert self.run("--data", root, "--json", out, "--no-thumbs", "--embed", "efficientnet_b0", "--embed-size", 32,
                        "--weights", "none", "--linear-probe") == 0
        res = json.loads(out.read_text())
        lp = res["linear_probe"]
        assert lp["features"]["model"] == "efficientnet_b0" and lp["features"]["dim"] == 1280
        assert lp["features"]["weights"]["random_init"] is True
        assert res["probe"]["features"] == "embedding" and 0 <= lp["group_split"]["holdout"] <= 1

    def test_bad_input_exit_2(self, planted, tmp_path):
        root, _, _ = planted
        assert self.run("--data", root, "--splits", tmp_path / "missing.json") == 2
        assert self.run("--data", tmp_path / "nowhere") == 2
        assert self.run("--data", root, "--linear-probe") == 2
