"""Wall-time projection arithmetic from a latency.json (hand-computed case)."""
import pytest

from bench.scripts.project_walltime import project


def test_projection_by_hand():
    lat = {"device": {"name": "X"}, "models": {"m": {
        "train": {"by_precision": {"bf16": {"images_per_s": 1000.0}}},
        "bf16": {"batch": {"1": {"images_per_s": 10.0}, "64": {"images_per_s": 4000.0}}}}}}
    r = project(lat, ["m", "absent"], n_images=1000, test_fraction=0.2, n_folds=5, epochs=10, precision="bf16")
    # trainval 800, train/fold 640, val/fold 160, test 200
    train_s = 5 * 10 * 640 / 1000.0
    eval_s = 5 * (10 * 160 + 160 + 200) / 4000.0  # the largest measured batch's rate is used
    assert r["models"]["m"]["hours"] == pytest.approx((train_s + eval_s) / 3600)
    assert r["models"]["absent"] == {"error": "not measured"}
    assert r["total_hours"] == pytest.approx(r["models"]["m"]["hours"])
