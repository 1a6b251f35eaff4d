"""Transform variants of standardised sectors (mirrors, rotations, zoom windows) for transform-aware linking.

A frame's standardised sector s (HASH_SIZE x HASH_SIZE, see protocols/hashing.py) and its sector mask m at the
same grid are all a variant needs: a mirrored copy of a frame standardises to the mirrored s; a rotated copy to
s rotated about its centre and cropped to the bounding box of the rotated mask; a crop/zoom of the frame to a
window of s, resampled back to the full grid. Each variant is hashed like s itself, so candidate pairs are
found by comparing the variants of one frame with the plain hashes of every other frame, and verified by the
correlation of the variant's thumbnail with the other frame's thumbnail.

VARIANTS lists (name, family, symmetric, spec): mirrors are their own inverse, so pairs i < j suffice; a
rotated copy is clipped by its frame and a zoom-in has no zoom-out in the set, so rotations and zoom windows
are searched in both orders (variant of i against j, and of j against i).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

# the families a link can carry, in the order of their integer codes in the links arrays and JSON
FAMILIES = ("identical", "photometric", "mirrored", "rotated", "cropped/zoomed", "same-patient motion")
ROTATIONS_DEG = (-10.0, -5.0, 5.0, 10.0)
# zoom windows: (height, width as fractions of the sector's bounding box, positions along y, along x), the
# positions spread evenly over [0, 1 - side]; their spacing (<= 0.08) stays within the verification's
# +-1 thumbnail-cell shift (1/16)
ZOOMS = ((0.92, 0.92, 2, 2), (0.84, 0.84, 3, 3), (0.92, 0.84, 2, 3), (0.84, 0.92, 3, 2))


def _zoom_variants(zooms=ZOOMS):
    out = []
    for sh, sw, ky, kx in zooms:
        for fy in np.linspace(0.0, 1.0, ky):
            for fx in np.linspace(0.0, 1.0, kx):
                out.append((f"zoom{sh:g}x{sw:g}@{fy:g},{fx:g}", "cropped/zoomed", False, ("zoom", sh, sw, fy, fx)))
    return out


# (name, family, symmetric, spec); the identity is not a variant (it is the frame's own hash)
VARIANTS: tuple = (
    ("mirror_lr", "mirrored", True, ("flip", 1)),
    ("mirror_ud", "mirrored", True, ("flip", 0)),
    ("mirror_both", "mirrored", True, ("flip", 2)),
    *((f"rot{a:+g}", "rotated", False, ("rot", a)) for a in ROTATIONS_DEG),
    *_zoom_variants(),
)
VARIANT_NAMES = tuple(v[0] for v in VARIANTS)


@lru_cache(maxsize=4096)
def _window_matrix(n_in: int, start: float, length: float, n_out: int) -> np.ndarray:
    """Box resampling of the window [start, start + length) of n_in cells onto n_out cells: [n_out, n_in]."""
    edges = start + np.linspace(0.0, length, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    w = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    out = (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)
    out.flags.writeable = False
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    return x / np.maximum(x.std(axis=(-2, -1), keepdims=True), 1e-6)


def _rotate_batch(s: np.ndarray, m: np.ndarray, deg: float) -> np.ndarray:
    """Each sector rotated by deg about its centre (outside filled with its median), cropped to the bounding
    box of its rotated mask and resampled to the original grid. One interpolation call for the whole batch:
    rotating s - fill with 0 outside and adding fill back is the same linear interpolation as rotating s with
    fill outside."""
    n = s.shape[-1]
    masked = np.where(m, s, np.nan)
    has = m.any(axis=(1, 2))
    fill = np.zeros(len(s), np.float32)
    if has.any():
        fill[has] = np.nanmedian(masked[has].reshape(int(has.sum()), -1), axis=1)
    sr = ndimage.rotate(s - fill[:, None, None], deg, axes=(2, 1), reshape=True, order=1, mode="constant",
                        cval=0.0, prefilter=False) + fill[:, None, None]
    mr = ndimage.rotate(m.astype(np.float32), deg, axes=(2, 1), reshape=True, order=1, mode="constant", cval=0.0,
                        prefilter=False) > 0.5
    out = np.empty_like(s)
    for k in range(len(s)):
        rows, cols = np.flatnonzero(mr[k].any(axis=1)), np.flatnonzero(mr[k].any(axis=0))
        if not has[k] or len(rows) < 2 or len(cols) < 2:
            out[k] = s[k]
            continue
        a = np.where(mr[k], sr[k], fill[k])[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        out[k] = _window_matrix(a.shape[0], 0, a.shape[0], n) @ a @ _window_matrix(a.shape[1], 0, a.shape[1], n).T
    return out


def variant_batch(sectors: np.ndarray, masks: np.ndarray, name: str) -> np.ndarray:
    """[N, S, S] standardised variant `name` of standardised sectors [N, S, S] with their masks [N, S, S]."""
    spec = VARIANTS[VARIANT_NAMES.index(name)][3]
    s = np.asarray(sectors, np.float32)
    n = s.shape[-1]
    if spec[0] == "flip":
        out = s[:, :, ::-1] if spec[1] == 1 else s[:, ::-1, :] if spec[1] == 0 else s[:, ::-1, ::-1]
        return np.ascontiguousarray(out)
    if spec[0] == "rot":
        return _standardise(_rotate_batch(s, np.asarray(masks, bool), spec[1])) if len(s) else s
    _, sh, sw, fy, fx = spec
    r = _window_matrix(n, fy * (n - sh * n), sh * n, n)
    c = _window_matrix(n, fx * (n - sw * n), sw * n, n)
    return _standardise(r @ s @ c.T)
