"""Region masks of a frame at the model's input size (sector, outside, burned-in text) and region replacement.

Masks come from the leakage module's sector masking (protocols/hashing.sector_mask) on the frame decoded at
~192 px wide (hashing.load_gray) — when the frame's background (median of its outer ring) is grey rather than
black, on |grey - background| + 2 x local SD instead, so a grey background is not taken for tissue — then are box-resampled to the model's S x S input (the cache resizes the whole
frame to S x S, aspect ratio not kept, so the same resampling lines the masks up with the cached pixels):
  sector   input pixels at least half covered by the detected sector (the tissue);
  outside  every other pixel (background, burned-in text, depth scale, grey bar);
  text     outside pixels that touch a saturated pixel (grey >= hashing.SATURATION) dilated by TEXT_DILATE work
           pixels: burned-in text, markers and scales. Saturated pixels inside the sector are left to the
           sector (an annotation drawn over tissue is not separated from it).
Replacement (uint8 images [N, 3, S, S], masks [N, S, S]):
  mean     the per-pixel mean of the training images;
  noise    i.i.d. Gaussian noise with the mean and SD of that region's pixels pooled over training images
           (per channel, one draw shared by the channels so grey stays grey), clipped to 0..255.
Both remove every image-specific value from the region; they differ only in texture (flat vs noisy).
"""
from __future__ import annotations

import numpy as np

from scipy import ndimage

from protocols.hashing import SATURATION, load_gray, resample, sector_mask

REGIONS = ("outside", "sector", "text")
FILLS = ("mean", "noise")
TEXT_DILATE = 2


def background_level(gray: np.ndarray) -> float:
    """Median grey level of the frame's outermost 2-pixel ring, saturated (text) pixels left out."""
    g = np.asarray(gray, dtype=np.float32)
    ring = np.concatenate([g[:2].ravel(), g[-2:].ravel(), g[2:-2, :2].ravel(), g[2:-2, -2:].ravel()])
    ring = ring[ring < SATURATION]
    return float(np.median(ring)) if ring.size else 0.0


def frame_masks(gray: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """{"sector", "outside", "text"} bool [size, size] masks of one grey frame (any resolution)."""
    g = np.asarray(gray, dtype=np.float32)
    bg = background_level(g)
    if bg > 0:
        # a grey (not black) background reads as tissue to sector_mask's threshold, and tissue darker than it
        # (far field, vessels) would be lost by subtracting it: mask |g - bg| + 2 x local SD (3 x 3) instead,
        # which is 0 on a flat background and positive on speckle of any brightness
        sd = np.sqrt(np.clip(ndimage.uniform_filter(g * g, 3) - ndimage.uniform_filter(g, 3) ** 2, 0, None))
        sec = sector_mask(np.where(g >= SATURATION, g, np.abs(g - bg) + 2 * sd))
    else:
        sec = sector_mask(g)
    sat = (g >= SATURATION).astype(np.uint8)
    text = (ndimage.maximum_filter(sat, size=2 * TEXT_DILATE + 1) > 0) & ~sec
    f_sec, f_text = resample(np.stack([sec, text]).astype(np.float32), size, size)
    sector = f_sec >= 0.5
    return {"sector": sector, "outside": ~sector, "text": (f_text > 0) & ~sector}


def region_masks(paths, size: int) -> dict[str, np.ndarray]:
    """Masks of many image files: {"sector", "outside", "text"} bool [N, size, size]."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):           # small matmuls: a multi-threaded BLAS only spins on a busy machine
        per = [frame_masks(load_gray(p), size) for p in paths]
    if not per:
        return {r: np.zeros((0, size, size), bool) for r in REGIONS}
    return {r: np.stack([m[r] for m in per]) for r in REGIONS}


def mean_image(images, rows=None, chunk: int = 256) -> np.ndarray:
    """Per-pixel mean [3, S, S] float32 of uint8 images [N, 3, S, S] (array or tensor), or of images[rows],
    summed chunk by chunk (no float copy of the whole set)."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    total = None
    for i in range(0, len(rows), chunk):
        part = np.asarray(images[rows[i:i + chunk]], dtype=np.float64).sum(axis=0)
        total = part if total is None else total + part
    return (total / len(rows)).astype(np.float32)


def fill_stats(images: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    """Training statistics for the replacements: per-pixel mean image and per-region per-channel mean / SD."""
    x = np.asarray(images, dtype=np.float64)
    stats = {"mean_image": mean_image(images)}
    for r, m in masks.items():
        vals = x.transpose(1, 0, 2, 3)[:, m]                        # [3, n_pixels_in_region]
        if vals.shape[1] == 0:
            stats[r] = (np.zeros(x.shape[1]), np.zeros(x.shape[1]))
        else:
            stats[r] = (vals.mean(axis=1), vals.std(axis=1))
    return stats


def replace(images: np.ndarray, mask: np.ndarray, fill: str, stats: dict, region: str,
            seed: int = 0) -> np.ndarray:
    """A copy of uint8 images [N, 3, S, S] with mask [N, S, S] replaced by the training mean or matched noise."""
    out = np.array(images, dtype=np.uint8, copy=True)
    m = np.broadcast_to(np.asarray(mask, bool)[:, None], out.shape)
    if fill == "mean":
        src = np.broadcast_to(np.rint(stats["mean_image"]).clip(0, 255).astype(np.uint8)[None], out.shape)
    elif fill == "noise":
        mu, sd = stats[region]
        z = np.random.default_rng(seed).standard_normal((out.shape[0], 1) + out.shape[2:])
        src = np.rint(np.asarray(mu)[None, :, None, None] + np.asarray(sd)[None, :, None, None] * z)
        src = src.clip(0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown fill {fill!r} (mean or noise)")
    out[m] = src[m]
    return out
