"""Planted copies of frames under the transform families the leakage audit detects (tests and benchmarks).

Families (one transform each, parameters drawn from the Generator handed in):
  identical     the same pixels
  photometric   brightness x U(0.8, 1.2), gamma U(0.8, 1.25), Gaussian noise sd U(1, 5) grey levels, JPEG q U(60, 90)
  mirrored      left-right or up-down flip (alternating axis: copy k uses "h" when k is even, "v" when odd)
  rotated       rotation about the frame centre by +-U(3, 10) degrees, same frame size, black fill
  cropped       a window of U(0.8, 0.95) of the width and height at a random position, resized back to the
                frame size (field of view down to 80 %)
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

FAMILIES = ("identical", "photometric", "mirrored", "rotated", "cropped")
MAX_ROTATION_DEG = 10.0
MIN_FOV = 0.8


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"))


def plant_copy(gray: np.ndarray, family: str, rng: np.random.Generator, k: int = 0) -> tuple[np.ndarray, dict]:
    """(copy, parameters) of a uint8 grey frame under one transform family."""
    a = np.asarray(gray, dtype=np.uint8)
    h, w = a.shape
    if family == "identical":
        return a.copy(), {}
    if family == "photometric":
        b, g = float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.25))
        sd, q = float(rng.uniform(1.0, 5.0)), int(rng.integers(60, 91))
        x = 255.0 * (np.clip(a * b, 0, 255) / 255.0) ** g + rng.normal(0, sd, a.shape)
        return _jpeg(np.clip(np.rint(x), 0, 255).astype(np.uint8), q), {"brightness": b, "gamma": g,
                                                                       "noise_sd": sd, "jpeg_quality": q}
    if family == "mirrored":
        axis = "h" if k % 2 == 0 else "v"
        return (a[:, ::-1] if axis == "h" else a[::-1, :]).copy(), {"axis": axis}
    if family == "rotated":
        deg = float(rng.uniform(3.0, MAX_ROTATION_DEG)) * (1 if rng.random() < 0.5 else -1)
        im = Image.fromarray(a).rotate(deg, resample=Image.BILINEAR, fillcolor=0)
        return np.asarray(im), {"degrees": deg}
    if family == "cropped":
        s = float(rng.uniform(MIN_FOV, 0.95))
        cw, ch = int(round(s * w)), int(round(s * h))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = Image.fromarray(a).crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
        return np.asarray(im), {"fov": s, "x0": x0, "y0": y0}
    raise ValueError(f"unknown transform family {family!r}; expected one of {FAMILIES}")
