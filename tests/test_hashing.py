"""Sector masking, pHash/dHash invariances, bit packing and clustering (protocols/hashing.py)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.fft import dctn

from protocols import hashing as H
from protocols import neardup

H_PX, W_PX = 96, 128


def sector(h=H_PX, w=W_PX):
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = w / 2, -0.15 * h
    r = np.hypot(xx - cx, yy - cy)
    ang = np.arctan2(xx - cx, yy - cy)
    return (r > 0.25 * h) & (r < 1.08 * h) & (np.abs(ang) < 0.6)


def patient_base(rng, h=H_PX, w=W_PX):
    """Per-patient low-frequency anatomy; frames of one patient share it."""
    big = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=h / 12)
    return 90 + 35 * (big - big.mean()) / big.std()


def frame(rng, base, shift=(0, 0), bright=1.0, text="ID 0001", h=H_PX, w=W_PX):
    """One synthetic B-mode frame: fresh speckle over the patient's anatomy, sector, burned-in text."""
    speck = ndimage.gaussian_filter(rng.rayleigh(1.0, size=(h, w)), 1.0)
    img = np.clip(base * speck / speck.mean() * bright, 0, 230) * sector(h, w)
    img = np.roll(img, shift, axis=(0, 1))
    im = Image.fromarray(img.astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.text((2, 2), text, fill=255)
    d.text((w - 30, h - 12), "12cm", fill=255)
    return np.asarray(im)


def jpeg(a, q=70):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("L"))


def planted(n_patients=12, per_patient=4, seed=0, perturb=True):
    rng = np.random.default_rng(seed)
    imgs, pid = [], []
    for p in range(n_patients):
        base = patient_base(rng)
        for k in range(per_patient):
            sh = tuple(int(v) for v in rng.integers(-3, 4, 2)) if perturb else (0, 0)
            br = float(rng.uniform(0.9, 1.1)) if perturb else 1.0
            a = frame(rng, base, sh, br, text=f"P{p:03d} {k}")
            imgs.append(jpeg(a, 70) if perturb else a)
            pid.append(p)
    return imgs, np.array(pid)


def test_sector_mask_ignores_background_and_text():
    rng = np.random.default_rng(1)
    a = frame(rng, patient_base(rng), text="PAT 12")
    m = H.sector_mask(a)
    truth = sector()
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.85
    # text rows at the top-left corner lie outside the sector and must not be in the mask
    assert not m[2:10, 2:40].any()


def test_overlay_text_does_not_change_the_hash():
    rng = np.random.default_rng(2)
    base = patient_base(rng)
    state = rng.bit_generator.state
    a = frame(rng, base, text="A")
    rng.bit_generator.state = state
    b = frame(rng, base, text="XY 99")
    # text outside the sector is masked away completely
    ha, hb = H.hash_arrays([a]), H.hash_arrays([b])
    assert int(H.hamming(ha["phash"], hb["phash"])[0]) == 0
    assert int(H.hamming(ha["dhash"], hb["dhash"])[0]) == 0
    # a caliper label burned into the sector is in-painted: far below the linking thresholds
    im = Image.fromarray(b)
    ImageDraw.Draw(im).text((55, 45), "D1 2.3", fill=255)
    c = np.asarray(im)
    hc = H.hash_arrays([c])
    assert int(H.hamming(ha["phash"], hc["phash"])[0]) <= H.DEFAULT_THRESHOLDS["phash"] // 2
    assert int(H.hamming(ha["dhash"], hc["dhash"])[0]) <= H.DEFAULT_THRESHOLDS["dhash"] // 2
    sa, sc = H.standardise_sector(a), H.standardise_sector(c)
    assert np.corrcoef(sa.ravel(), sc.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("kind", ["shift", "brightness", "jpeg"])
def test_hash_invariance_within_threshold(kind):
    rng = np.random.default_rng(3)
    t = H.DEFAULT_THRESHOLDS
    same_p, same_d = [], []
    for _ in range(6):
        base = patient_base(rng)
        state = rng.bit_generator.state
        a = frame(rng, base)
        rng.bit_generator.state = state
        if kind == "shift":
            b = frame(rng, base, shift=(3, -4))
        elif kind == "brightness":
            b = frame(rng, base, bright=1.1)
        else:
            b = jpeg(frame(rng, base), q=60)
        h = H.hash_arrays([a, b])
        same_p.append(int(H.hamming(h["phash"][0], h["phash"][1])))
        same_d.append(int(H.hamming(h["dhash"][0], h["dhash"][1])))
    assert max(same_p) <= t["phash"] and max(same_d) <= t["dhash"], (same_p, same_d)


def test_different_patients_are_far_apart():
    imgs, pid = planted(n_patients=10, per_patient=1, perturb=False)
    h = H.hash_arrays(imgs)
    dp = H.hamming(h["phash"][:, None], h["phash"][None])
    dd = H.hamming(h["dhash"][:, None], h["dhash"][None])
    off = ~np.eye(len(pid), dtype=bool)
    linked = (dp <= H.DEFAULT_THRESHOLDS["phash"]) & (dd <= H.DEFAULT_THRESHOLDS["dhash"]) & off
    assert linked.sum() == 0
    assert np.median(dp[off]) > 20          # unrelated 64-bit hashes differ in about half their bits


def test_phash_matches_scalar_reference():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 32, 32)).astype(np.float32)
    codes = H.phash_batch(x)
    for k in range(5):
        c = dctn(x[k].astype(np.float64), type=2, norm="ortho")[:8, :8].ravel()
        bits = c > np.median(c[1:])
        bits[0] = c[1] > c[8]
        ref = sum(1 << n for n, b in enumerate(bits) if b)
        assert int(codes[k]) == ref


def test_dhash_matches_scalar_reference():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 36, 36)).astype(np.float32)
    codes = H.dhash_batch(x)
    for k in range(3):
        small = H.resample(x[k], 8, 9)
        bits = (small[:, 1:] > small[:, :-1] + H.DHASH_TIE).ravel()
        assert int(codes[k]) == sum(1 << n for n, b in enumerate(bits) if b)
    # flat regions: rounding-level differences set no bit (they would follow the BLAS summation order)
    flat = np.full((2, 36, 36), 0.25, np.float32)
    flat[1] += rng.normal(0, 1e-6, (36, 36)).astype(np.float32)
    assert (H.dhash_batch(flat) == 0).all()
    ramp = np.tile(np.linspace(0, 1, 36, dtype=np.float32), (1, 36, 1))      # steps of ~0.03 per cell: every bit
    assert int(H.dhash_batch(ramp)[0]) == 2**64 - 1
    # the box resampler averages exact blocks when sizes divide
    y = rng.normal(size=(16, 18))
    np.testing.assert_allclose(H.resample(y, 8, 9), y.reshape(8, 2, 9, 2).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6)


def test_pack_unpack_and_hamming_against_python_popcount():
    rng = np.random.default_rng(6)
    bits = rng.random((50, 64)) < 0.5
    codes = H.pack_bits(bits)
    np.testing.assert_array_equal(H.unpack_bits(codes), bits)
    d = H.hamming(codes[:, None], codes[None])
    for i in range(0, 50, 7):
        for j in range(0, 50, 5):
            assert d[i, j] == bin(int(codes[i]) ^ int(codes[j])).count("1")


def test_components_and_cosine_pairs():
    lab = H.components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert lab[0] == lab[1] == lab[2] and lab[4] == lab[5] and len(set(lab.tolist())) == 3
    f = np.array([[1, 0], [0.99, 0.05], [0, 1], [-1, 0]], dtype=np.float32)
    i, j = H.cosine_pairs(f, 0.95, block=2)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]


def test_planted_duplicates_recovered_under_perturbation():
    imgs, pid = planted(n_patients=15, per_patient=4, seed=11, perturb=True)
    h = H.hash_arrays(imgs)
    L = neardup.near_duplicate_pairs(h)
    i, j, r = L["i"], L["j"], L["ncc"]
    assert (r >= H.DEFAULT_THRESHOLDS["ncc"]).all()
    lab = H.components(len(imgs), i, j)
    same_true = pid[:, None] == pid[None]
    same_pred = lab[:, None] == lab[None]
    iu = np.triu_indices(len(pid), 1)
    tp = (same_true & same_pred)[iu].sum()
    assert tp / max(1, same_pred[iu].sum()) >= 0.95
    assert tp / same_true[iu].sum() >= 0.90


def test_file_hashing_matches_in_memory_and_bad_file(tmp_path):
    from protocols.errors import BadInput

    imgs, _ = planted(n_patients=3, per_patient=2, perturb=False)
    paths = []
    for k, a in enumerate(imgs):
        p = tmp_path / f"{k}.png"
        Image.fromarray(a).convert("RGB").save(p)
        paths.append(p)
    got = H.hash_files(paths, workers=2, chunk=2)
    ref = H.hash_arrays(imgs)
    np.testing.assert_array_equal(got["phash"], ref["phash"])
    np.testing.assert_array_equal(got["dhash"], ref["dhash"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BadInput) as e:
        H.hash_files([bad])
    assert "bad.png" in str(e.value) and "image" in str(e.value)


def test_default_thresholds_come_from_committed_sweep():
    path = Path(__file__).resolve().parent.parent / "bench" / "results" / "leakage_sweep.json"
    if not path.exists():
        pytest.fail("bench/results/leakage_sweep.json is missing: run `python -m bench.scripts.leakage_sweep`")
    sel = json.loads(path.read_text())["selected"]
    assert {"phash": sel["phash"], "dhash": sel["dhash"], "ncc": sel["ncc"]} == H.DEFAULT_THRESHOLDS
    assert sel["meets_target"] and json.loads(path.read_text())["confirmation"]["meets_target"]
