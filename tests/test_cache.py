"""Image cache: decode/resize matches PIL, hits and misses, invalidation on change, corrupt entries rebuilt."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protocols.cache import PREP_VERSION, decode_resize, default_cache_dir, entry_path, load_images
from protocols.data import file_sha256, load_manifest
from protocols.synth import CLASS_NAMES
from protocols.errors import BadInput

SIZE = 24


@pytest.fixture
def ds(tmp_path):
    """ImageFolder with one image per mode the loader must accept."""
    root = tmp_path / "ds"
    rng = np.random.default_rng(1)
    for c in CLASS_NAMES:
        (root / c).mkdir(parents=True)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "F0" / "rgb.png")
    Image.fromarray(grey).save(root / "F1" / "grey.png")
    rgba = np.dstack([rgb, np.zeros((30, 40), np.uint8)])          # fully transparent: alpha must be dropped
    Image.fromarray(rgba, "RGBA").save(root / "F2" / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(root / "F3" / "pal.png")
    Image.fromarray(grey).save(root / "F3" / "grey.jpg", quality=95)
    g16 = (grey.astype(np.uint16) * 257)                            # exact 8 -> 16 bit: must come back exactly
    Image.fromarray(g16).save(root / "F4" / "g16.png")
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).convert("LA").save(root / "F4" / "la.png")
    return root


def _stats(df, **kw):
    st = {}
    x = load_images(df, SIZE, stats=st, **kw)
    return x, st


def test_shapes_and_modes_match_pil_reference(ds, tmp_path):
    df = load_manifest(ds)
    x, st = _stats(df, cache_dir=tmp_path / "c")
    assert x.dtype == torch.uint8 and tuple(x.shape) == (len(df), 3, SIZE, SIZE)
    assert st["misses"] == len(df) and st["hits"] == 0
    by_id = {i: k for k, i in enumerate(df["image_id"])}
    ref_rgb = np.asarray(Image.open(ds / "F0/rgb.png").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    assert np.array_equal(x[by_id["F0/rgb.png"]].numpy().transpose(1, 2, 0), ref_rgb)
    ref_grey = np.asarray(Image.open(ds / "F1/grey.png").resize((SIZE, SIZE), Image.BILINEAR))
    g = x[by_id["F1/grey.png"]].numpy()
    assert np.array_equal(g[0], ref_grey) and np.array_equal(g[0], g[1]) and np.array_equal(g[1], g[2])
    # RGBA with alpha 0 -> the RGB values, not black
    assert np.array_equal(x[by_id["F2/rgba.png"]].numpy().transpose(1, 2, 0), ref_rgb)
    # 16-bit grey written as v * 257 -> exactly v after scaling by 255/65535
    assert np.array_equal(x[by_id["F4/g16.png"]][0].numpy(), ref_grey)
    pal = np.asarray(Image.open(ds / "F3/pal.png").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    assert np.array_equal(x[by_id["F3/pal.png"]].numpy().transpose(1, 2, 0), pal)


def test_16bit_scaling_is_full_range():
    buf = io.BytesIO()
    Image.fromarray(np.array([[0, 32896, 65535, 257]], dtype=np.uint16).repeat(4, 0)).save(buf, "PNG")
    buf.seek(0)
    out = decode_resize(buf, 4)
    assert out[0, 0].tolist() == [0, 128, 255, 1]


def test_second_call_hits_and_returns_identical_tensor(ds, tmp_path):
    df = load_manifest(ds)
    a, st1 = _stats(df, cache_dir=tmp_path / "c")
    b, st2 = _stats(df, cache_dir=tmp_path / "c", workers=3)
    assert st2 == {**st1, "hits": len(df), "misses": 0}
    assert torch.equal(a, b)
    rev = df.iloc[::-1].reset_index(drop=True)
    c = load_images(rev, SIZE, cache_dir=tmp_path / "c")
    assert torch.equal(c, a.flip(0))                                 # df row order is respected
    assert len(list((tmp_path / "c").rglob("*.u8"))) == len(df)
    d, st3 = _stats(df, cache_dir=tmp_path / "c")
    assert st3["hits"] == len(df)
    load_images(df, SIZE + 8, cache_dir=tmp_path / "c")             # another size: separate entries
    assert len(list((tmp_path / "c").rglob("*.u8"))) == 2 * len(df)


def test_changed_file_is_a_miss_with_new_content(ds, tmp_path):
    df = load_manifest(ds)
    load_images(df, SIZE, cache_dir=tmp_path / "c")
    target = ds / "F1" / "grey.png"
    Image.fromarray(np.full((30, 40), 200, np.uint8)).save(target)
    x, st = _stats(load_manifest(ds), cache_dir=tmp_path / "c")
    assert st["misses"] == 1 and st["hits"] == len(df) - 1
    k = list(df["image_id"]).index("F1/grey.png")
    assert torch.all(x[k] == 200)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_cache_entry_is_rebuilt(ds, tmp_path, damage):
    df = load_manifest(ds)
    good = load_images(df, SIZE, cache_dir=tmp_path / "c")
    ep = entry_path(tmp_path / "c", file_sha256(df["path"][0]), SIZE)
    raw = bytearray(ep.read_bytes())
    if damage == "flip":
        raw[-5] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray()
    ep.write_bytes(bytes(raw))
    x, st = _stats(df, cache_dir=tmp_path / "c")
    assert st["rebuilt"] == 1 and st["hits"] == len(df) - 1
    assert torch.equal(x, good)
    _, st = _stats(df, cache_dir=tmp_path / "c")
    assert st["hits"] == len(df)                                     # the rebuilt entry is valid again


def test_corrupt_pixel_data_raises_badinput_naming_the_file(ds, tmp_path):
    jpg = ds / "F3" / "grey.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])                           # header intact: passes the load-time check
    df = load_manifest(ds)
    with pytest.raises(BadInput) as ei:
        load_images(df, SIZE, cache_dir=tmp_path / "c")
    assert ei.value.path.endswith("grey.jpg") and ei.value.field == "image"


def test_default_cache_dir_env_and_root(ds, tmp_path, monkeypatch):
    df = load_manifest(ds)
    monkeypatch.delenv("FIBROBENCH_CACHE", raising=False)
    assert default_cache_dir(df.attrs["root"]) == Path(df.attrs["root"]) / ".fibrobench-cache"
    load_images(df, SIZE)
    assert list((ds / ".fibrobench-cache" / f"v{PREP_VERSION}" / str(SIZE)).rglob("*.u8"))
    assert len(load_manifest(ds)) == len(df)                         # the cache folder is not data
    monkeypatch.setenv("FIBROBENCH_CACHE", str(tmp_path / "env"))
    _, st = _stats(df)
    assert st["cache_dir"] == str(tmp_path / "env") and st["misses"] == len(df)
