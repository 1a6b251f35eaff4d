"""Shortcut audit units: planted cues, region masks and replacement, Grad-CAM sector mass by construction, statistics."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st
from scipy.stats.contingency import association

from protocols.errors import BadInput
from reports import shortcuts_stats as ST
from reports import stats as S
sys.path.insert(0, str(Path(__file__).parent))
from shortcut_models import CornerNet  # noqa: E402

from bench.scripts.tiny_cnn import TinyCNN  # noqa: E402

# ---------------------------------------------------------------- planted shortcuts (synth)


def _frames(kind, strength=1.0, effect=1.0, n=12, size=(96, 72)):
    from protocols.synth import plan_cohort, render_patient_frames
    from protocols.synth_shortcuts import plant

    plan = plant(plan_cohort(n, 3), kind, strength, 3)
    rows = plan.to_dict("records")
    return plan, [render_patient_frames(r, 3, size, effect, True, kind)[0] for r in rows]


def test_none_is_the_unplanted_generator_and_cues_stay_outside_the_sector():
    from protocols.synth import plan_cohort, render_patient_frames
    from protocols.synth_render import geometry

    plan0 = plan_cohort(12, 3)
    plain = [render_patient_frames(r, 3, (96, 72), 1.0, True)[0] for r in plan0.to_dict("records")]
    plan_n, none = _frames("none")
    assert all(np.array_equal(a, b) for a, b in zip(plain, none))
    assert plan_n[["stage", "site", "device"]].equals(plan0[["stage", "site", "device"]])
    for kind in ("text", "border"):
        plan, imgs = _frames(kind)
        assert (plan["cue"] == plan["stage"]).all()                      # strength 1: the cue is the stage
        for r, a, b in zip(plan.to_dict("records"), plain, imgs):
            inside = geometry(r["device"], 96, 72).mask
            assert np.array_equal(a[inside], b[inside])                  # the tissue is untouched
            changed = a != b
            if kind == "border":
                from protocols.synth_shortcuts import BORDER_STEP
                assert np.all(b[changed] == BORDER_STEP * r["cue"]) and changed.any() == (r["cue"] > 0)
            else:
                assert changed.any() and np.all(b[changed] == 255)


def test_device_shortcut_assigns_scanners_by_stage_and_strength_zero_does_not():
    from protocols.synth import plan_cohort
    from protocols.synth_render import SITES
    from protocols.synth_shortcuts import STAGE_DEVICES, plant

    p1 = plant(plan_cohort(200, 0), "device", 1.0, 0)
    assert all(d == STAGE_DEVICES[s] for d, s in zip(p1["device"], p1["stage"]))
    assert all(d in SITES[site] for d, site in zip(p1["device"], p1["site"]))
    p0 = plant(plan_cohort(200, 0), "text", 0.0, 0)
    # strength 0: the cue is a uniform draw, independent of the stage (chi-square test does not reject)
    assert st.chi2_contingency(pd.crosstab(p0["stage"], p0["cue"]))[1] > 0.01
    assert (p0["cue"] == p0["stage"]).mean() < 0.4


def test_bad_shortcut_arguments_exit_2(tmp_path, capsys):
    from bench.cli import main
    assert main(["synth", str(tmp_path / "d"), "--patients", "5", "--size", "64x48", "--shortcut-strength", "1.5",
                 "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "shortcut_strength" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
    with pytest.raises(BadInput):
        from protocols.synth_shortcuts import check
        check("watermark", 1.0)


# ---------------------------------------------------------------- region masks and replacement


def test_masks_match_the_generator_sector_with_black_and_grey_backgrounds():
    from protocols.hashing import resample
    from protocols.shortcuts_regions import frame_masks
    from protocols.synth_render import geometry

    for kind in ("none", "border"):
        plan, imgs = _frames(kind, size=(192, 144))
        for r, img in zip(plan.to_dict("records"), imgs):
            truth = resample(geometry(r["device"], 192, 144).mask.astype(np.float32), 32, 32) >= 0.5
            m = frame_masks(img, 32)
            iou = (m["sector"] & truth).sum() / (m["sector"] | truth).sum()
            assert iou > 0.9, (kind, r["cue"], iou)
            assert np.array_equal(m["outside"], ~m["sector"])
            assert not (m["text"] & m["sector"]).any()
            sat = resample((img >= 245).astype(np.float32), 32, 32) > 0.25
            assert (m["text"] | m["sector"])[sat].all()           # burned-in text/markers are inside text masks


def test_replacement_by_mean_and_by_matched_noise():
    from protocols.shortcuts_regions import fill_stats, replace

    rng = np.random.default_rng(0)
    imgs = np.clip(rng.normal(100, 20, (40, 3, 16, 16)), 0, 255).round().astype(np.uint8)
    imgs[:, 1] = imgs[:, 0]
    imgs[:, 2] = imgs[:, 0]                                       # grey images
    mask = np.zeros((40, 16, 16), bool)
    mask[:, :8] = True
    stats = fill_stats(imgs, {"outside": mask})
    np.testing.assert_allclose(stats["mean_image"], imgs.mean(0), rtol=1e-6)
    from protocols.shortcuts_regions import mean_image
    rows = np.array([3, 1, 3, 39])
    np.testing.assert_allclose(mean_image(torch.from_numpy(imgs), rows, chunk=3), imgs[rows].mean(0), rtol=1e-6)
    out = replace(imgs, mask, "mean", stats, "outside")
    assert np.array_equal(out[:, :, 8:], imgs[:, :, 8:])           # outside the mask: untouched
    assert np.array_equal(out[:, :, :8], np.broadcast_to(np.rint(imgs.mean(0))[None, :, :8], out[:, :, :8].shape))
    noisy = replace(imgs, mask, "noise", stats, "outside", seed=1)
    vals = noisy[:, 0][mask].astype(float)
    mu, sd = stats["outside"]
    assert abs(vals.mean() - mu[0]) < 1 and abs(vals.std() - sd[0]) < 1
    assert np.array_equal(noisy[:, 0], noisy[:, 1]) and np.array_equal(noisy[:, 8:], imgs[:, 8:])
    assert not np.array_equal(replace(imgs, mask, "noise", stats, "outside", seed=2), noisy)
    with pytest.raises(ValueError):
        replace(imgs, mask, "blur", stats, "outside")


# ---------------------------------------------------------------- Grad-CAM and features


def test_gradcam_mass_of_a_model_that_looks_only_at_one_corner():
    """CornerNet's Grad-CAM is 1 on the top-left 4 x 4 cells of its 8 x 8 grid and 0 elsewhere; pytorch-grad-cam
    resizes it bilinearly (half-pixel centres) to 32 x 32, so along each axis pixels 0-13 are 1, 14 and 15 are
    0.875 and 0.625, 16 and 17 are 0.375 and 0.125: 15.5 of 16 units of mass lie in the first 16 pixels."""
    from protocols.shortcuts import gradcam_maps, gradcam_target

    net = CornerNet().eval()
    assert gradcam_target(net, 32)[0] == "corner"
    imgs = torch.full((3, 3, 32, 32), 128, dtype=torch.uint8)
    cams, layers = gradcam_maps([net], imgs, [0, 1, 2], (0, 0, 0), (1, 1, 1), "cpu", 32)
    assert layers == ["corner"] and cams.shape == (3, 32, 32)
    quad = np.zeros((32, 32), bool)
    quad[:16, :16] = True
    left = np.zeros((32, 32), bool)
    left[:, :16] = True
    for cam in cams:
        tot = cam.sum()
        assert cam[quad].sum() / tot == pytest.approx((31 / 32) ** 2, abs=1e-4)
        assert cam[left].sum() / tot == pytest.approx(31 / 32, abs=1e-4)
        assert cam[16 + 2:, :].sum() == pytest.approx(0, abs=1e-6)          # nothing beyond the interpolation rim
        row = cam[0, :18] / cam[0, 0]
        np.testing.assert_allclose(row[13:], [1, 0.875, 0.625, 0.375, 0.125], atol=1e-4)


def test_gradcam_target_for_vit_uses_the_reshape_transform():
    from models import create_model
    from protocols.shortcuts import gradcam_maps, gradcam_target

    torch.manual_seed(0)
    vit = create_model("vit_b_16", 5, None, 32).eval()
    name, _, reshape = gradcam_target(vit, 32)
    assert name.endswith("encoder_layer_11.ln_1") and reshape is not None
    cams, _ = gradcam_maps([vit], torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), [0, 3],
                           (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "cpu", 32)
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all() and cams.max() <= 1 + 1e-6


@pytest.mark.parametrize("channels_last", [False, True])
def test_penultimate_features_are_the_head_input_and_ensemble_logits_the_fold_mean(channels_last):
    from protocols.shortcuts import ensemble_logits, penultimate_features
    from protocols.trainer import Runtime

    torch.manual_seed(0)
    nets = [TinyCNN().eval(), TinyCNN().eval()]
    imgs = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    rt = Runtime(torch.device("cpu"), None, channels_last)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (imgs.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = torch.cat([n.pool(n.features(x)).flatten(1) for n in nets], 1).numpy()
        want_logits = ((nets[0](x) + nets[1](x)) / 2).numpy()
    np.testing.assert_allclose(penultimate_features(nets, imgs, mean, std, rt, batch_size=2), want, atol=1e-5)
    np.testing.assert_allclose(ensemble_logits(nets, imgs, mean, std, rt, batch_size=3), want_logits, atol=1e-5)


# ---------------------------------------------------------------- statistics


def test_proportion_ci_edges_and_bootstrap_against_wilson():
    codes = np.arange(400)
    w = ST.boot(codes, 4000, 0)
    ok = np.r_[np.ones(300), np.zeros(100)]
    r = ST.proportion_ci(ok, codes, w)
    lo, hi = S.wilson_ci(300, 400)
    assert r["value"] == 0.75 and abs(r["ci"][0] - lo) < 0.01 and abs(r["ci"][1] - hi) < 0.01
    clustered = np.repeat(np.arange(20), 20)                       # 20 clusters of 20 images: a wider CI
    ok_c = np.repeat(np.r_[np.ones(15), np.zeros(5)], 20)
    rc = ST.proportion_ci(ok_c, clustered, ST.boot(clustered, 4000, 0))
    assert rc["ci"][1] - rc["ci"][0] > 2 * (hi - lo)
    for val in (0, 1):
        e = ST.proportion_ci(np.full(40, val), clustered[:40], ST.boot(clustered[:40], 100, 0))
        k = 2 if val else 0
        assert e["value"] == val and e["ci"] == list(S.wilson_ci(k, 2)) and "Wilson" in e["method"]
    assert ST.paired_diff_ci(ok, ok, codes, w)["ci"] == [0.0, 0.0]


def test_label_association_against_scipy_and_at_the_edges():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    dev = rng.integers(0, 4, 300)
    codes = np.arange(300)
    r = ST.label_association(labels, dev.astype(str), codes, n_boot=200)
    t = pd.crosstab(labels, dev).to_numpy()
    chi2, p, dof, _ = st.chi2_contingency(t, correction=False)
    assert r["chi2"] == pytest.approx(chi2) and r["p"] == pytest.approx(p) and r["df"] == dof
    assert r["cramers_v"] == pytest.approx(association(t, method="cramer", correction=False))
    assert r["cramers_v"] == pytest.approx(np.sqrt(chi2 / (300 * 3)))     # textbook: k = min(5, 4) - 1
    assert not r["associated"] and r["p_permutation"] > 0.01
    tied = ST.label_association(labels, (labels % 4).astype(str), codes, n_boot=200)
    assert tied["associated"] and tied["p_permutation"] == pytest.approx(1 / (ST.N_PERM + 1))
    # frames of one patient count once: 30 patients x 10 frames give the table of 30, not 300
    pat = np.repeat(np.arange(30), 10)
    lab_p, dev_p = rng.integers(0, 5, 30), rng.integers(0, 3, 30)
    rp = ST.label_association(lab_p[pat], dev_p[pat].astype(str), pat, n_boot=200)
    assert rp["n_clusters"] == 30
    assert rp["chi2"] == pytest.approx(st.chi2_contingency(pd.crosstab(lab_p, dev_p).to_numpy(), correction=False)[0])
    one = ST.label_association(labels, np.full(300, "D1"), codes)
    assert one["cramers_v"] is None and not one["associated"]
    v = ST.cramers_v(np.array([0, 0, 0]), np.array([0, 1, 2]), 1, 3)
    assert np.isnan(v[0])


def test_linear_probe_finds_an_encoded_scanner_and_not_a_random_one():
    rng = np.random.default_rng(0)
    pat = np.repeat(np.arange(40), 3)
    dev = rng.integers(0, 3, 40)[pat]
    enc = np.eye(3)[dev] * 3 + rng.normal(0, 1, (120, 3))
    feats = np.c_[enc, rng.normal(0, 1, (120, 10))]
    good = ST.linear_probe(feats, dev.astype(str), pat, n_boot=500)
    assert good["encodes"] and good["accuracy"]["value"] > 0.9
    bad = ST.linear_probe(rng.normal(0, 1, (120, 13)), dev.astype(str), pat, n_boot=500)
    assert not bad["encodes"]
    assert ST.linear_probe(feats, np.full(120, "D1"), pat, 100)["accuracy"] is None


def _cond(region, fill, lo, value=None, relied=False, drop=(0.0, [0.0, 0.0])):
    return {"region": region, "fill": fill, "accuracy": {"value": value if value is not None else lo + 0.1,
                                                         "ci": [lo, lo + 0.2]},
            "drop": {"value": drop[0], "ci": drop[1]}, "above_majority": False, "relied_on": relied}


def test_region_tests_flags_and_the_verdict_rules():
    labels = np.repeat([0, 1, 2], 40)
    codes = np.arange(120)
    w = ST.boot(codes, 2000, 0)
    base = labels.copy()                                             # a perfect model
    keeps = labels.copy()                                            # tissue removed: still perfect -> shortcut
    blind = np.zeros(120, int)                                       # tissue removed: always class 0 -> 1/3
    r = ST.region_tests(labels, base, {"sector/mean": keeps, "outside/mean": blind}, codes, w)
    assert r["learned"] and r["majority_rate"] == pytest.approx(1 / 3)
    sec, out = r["conditions"]
    assert sec["above_majority"] and not sec["relied_on"]             # sector drops are judged by above_majority
    assert out["relied_on"] and out["drop"]["value"] == pytest.approx(2 / 3)
    v, reason = ST.verdict(r, None, None)
    assert v == "shortcut" and "tissue removed" in reason
    r2 = ST.region_tests(labels, base, {"sector/mean": blind, "outside/mean": base}, codes, w)
    assert ST.verdict(r2, None, None)[0] == "clean"
    r3 = ST.region_tests(labels, base, {"sector/mean": blind, "outside/mean": blind}, codes, w)
    assert ST.verdict(r3, None, None)[0] == "suspect"
    chance = ST.region_tests(labels, blind, {"sector/mean": blind, "outside/mean": (labels + 1) % 3}, codes, w)
    assert not chance["learned"] and ST.verdict(chance, None, None)[0] == "clean"   # nothing learnt, nothing relied on
    meta = {"device": {"association": {"associated": True, "cramers_v": 0.8, "p_permutation": 0.0005},
                       "probe": {"encodes": True, "accuracy": {"value": 0.9}, "majority_rate": 0.4}}}
    v, reason = ST.verdict(r2, None, meta)
    assert v == "suspect" and "device" in reason
    meta["device"]["association"]["associated"] = False
    assert ST.verdict(r2, None, meta)[0] == "clean"
    att = {"outside_heavy": True, "overall": {"value": 0.2}, "area_share": {"value": 0.5}}
    assert ST.verdict(r2, att, None)[0] == "suspect"


def test_attribution_mass_per_class_and_outside_heavy():
    labels = np.repeat([0, 1], 30)
    codes = np.arange(60)
    mass = np.r_[np.full(30, 0.2), np.full(30, 0.3)] + np.linspace(0, 0.01, 60)
    area = np.full(60, 0.5)
    a = ST.attribution_mass(mass, area, labels, ["A", "B", "C"], codes, lambda c: ST.boot(c, 500, 0))
    assert a["outside_heavy"] and a["overall"]["value"] == pytest.approx(mass.mean())
    assert [c["n"] for c in a["per_class"]] == [30, 30, 0] and a["per_class"][2]["mass"] is None
    assert a["per_class"][0]["mass"]["value"] == pytest.approx(mass[:30].mean())
    b = ST.attribution_mass(1 - mass, area, labels, ["A", "B"], codes, lambda c: ST.boot(c, 500, 0))
    assert not b["outside_heavy"]
