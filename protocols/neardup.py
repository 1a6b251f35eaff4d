"""Transform-aware near-duplicate links: hash candidates per transform variant, verified, labelled by transform.

For every frame the plain hashes and the hashes of each transforms.VARIANTS entry (mirrors, +-5/10 degree
rotations, zoom windows) are known (protocols/hashing.py). Candidates are pairs (i, j) whose plain codes are
close (i < j), or where variant v of frame i is close to the plain codes of frame j; each candidate is verified
by the correlation of the matching thumbnails (frame i's variant v against frame j, max over +-1 cell shifts)
and kept when it reaches the `ncc` threshold. An unordered pair found several ways keeps the best-correlated
one, and the link carries that way's family (transforms.FAMILIES):

  identical            no transform, and the two decoded frames are pixel-identical at the work resolution
  photometric          no transform, and the 32 x 32 standardised sectors correlate >= PHOTOMETRIC_R without
                       any shift (brightness, contrast, gamma, noise, re-encoding: same geometry)
  same-patient motion  no transform, linked but below PHOTOMETRIC_R (probe motion, fresh speckle: another
                       frame of the same scene, not a copy)
  mirrored / rotated / cropped/zoomed   found through that variant, whose correlation beats the plain
                       thumbnails' by at least LABEL_MARGIN (else the link is labelled as untransformed)

Links are returned as a dict of aligned arrays {"i", "j", "phash", "dhash", "ncc", "transform"} with i < j,
"transform" an index into transforms.FAMILIES.
"""
from __future__ import annotations

import numpy as np

from protocols import hashing, transforms

FAMILIES = transforms.FAMILIES
COPY_FAMILIES = ("identical", "photometric", "mirrored", "rotated", "cropped/zoomed")
# zero-shift correlation of two frames' standardised 32 x 32 sectors above which an untransformed link is a
# photometric copy rather than another frame of the same scene (measured on the default synthetic data, docs/leakage.md)
PHOTOMETRIC_R = 0.99
# a link found through a variant is labelled with that variant's transform only when the variant's correlation
# beats the plain thumbnails' by this much; otherwise it is an untransformed link (frames of one scene that a
# slightly rotated or zoomed variant happens to fit a little better are not copies)
LABEL_MARGIN = 0.02
_F = {name: k for k, name in enumerate(FAMILIES)}


def _empty() -> dict:
    z = np.zeros(0, np.int64)
    return {"i": z, "j": z, "phash": np.zeros(0, np.uint8), "dhash": np.zeros(0, np.uint8),
            "ncc": np.zeros(0, np.float32), "transform": np.zeros(0, np.uint8)}


def _sector_r(codes: dict, i: np.ndarray, j: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Zero-shift Pearson correlation of the standardised 32 x 32 sectors of frames i and j."""
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a = codes["sector"][i[s:s + chunk]].astype(np.float32).reshape(len(i[s:s + chunk]), -1)
        b = codes["sector"][j[s:s + chunk]].astype(np.float32).reshape(len(a), -1)
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        out[s:s + chunk] = np.einsum("ij,ij->i", a, b) / np.sqrt(
            np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b) + 1e-9)
    return out


def _variant_thumbs(codes: dict, name: str, chunk: int = 4096) -> np.ndarray:
    """Thumbnails [n, 16, 16] of variant `name` of every frame (O(n) memory, computed chunk by chunk)."""
    n = len(codes["phash"])
    out = np.empty((n, hashing.THUMB_SIZE, hashing.THUMB_SIZE), np.float32)
    for s in range(0, n, chunk):
        rows = slice(s, min(n, s + chunk))
        sec = codes["sector"][rows].astype(np.float32)
        out[rows] = hashing.thumbnails(transforms.variant_batch(sec, hashing.unpack_masks(codes, rows), name))
    return out


def _verifier(qthumb: np.ndarray, thumb: np.ndarray, min_r: float):
    """verify(i, j) for hashing.link_pairs: thumbnail correlation of query i and index j >= min_r."""
    return lambda i, j: hashing.ncc_pairs(qthumb[i], thumb[j]) >= min_r


def _variant_candidates(codes: dict, v: int, t: dict, workers: int):
    """Verified links (i, j, dp, dd, r) where variant v of frame i matches frame j (verified tile by tile)."""
    name, _, symmetric, _ = transforms.VARIANTS[v]
    thumb = np.asarray(codes["thumb"], np.float32)
    vt = _variant_thumbs(codes, name)
    i, j, dp, dd = hashing.link_pairs(codes["phash"], codes["dhash"], t, query_phash=codes["vphash"][:, v],
                                      query_dhash=codes["vdhash"][:, v], upper=symmetric, workers=workers,
                                      verify=_verifier(vt, thumb, float(t["ncc"])))
    r = hashing.ncc_pairs(vt[i], thumb[j]) if len(i) else np.zeros(0, np.float32)
    return i, j, dp, dd, r


def near_duplicate_pairs(codes: dict, thresholds: dict | None = None, *, variants: bool = True,
                         workers: int = 1) -> dict:
    """Verified, transform-labelled links of a code set (see the module docstring)."""
    t = {**hashing.DEFAULT_THRESHOLDS, **(thresholds or {})}
    if t.get("ncc") is None or "thumb" not in codes:           # hashes only, no verification, no labels
        i, j, dp, dd = hashing.link_pairs(codes["phash"], codes["dhash"], t, workers=workers)
        return {"i": i, "j": j, "phash": dp, "dhash": dd, "ncc": np.full(len(i), np.nan, np.float32),
                "transform": np.full(len(i), _F["same-patient motion"], np.uint8)}
    thumb = np.asarray(codes["thumb"], np.float32)
    i, j, dp, dd = hashing.link_pairs(codes["phash"], codes["dhash"], t, workers=workers,
                                      verify=_verifier(thumb, thumb, float(t["ncc"])))
    r = hashing.ncc_pairs(thumb[i], thumb[j]) if len(i) else np.zeros(0, np.float32)
    parts = [(i, j, dp, dd, r, np.full(len(i), -1, np.int16))]
    if variants and "vphash" in codes:
        for v in range(len(transforms.VARIANTS)):
            vi, vj, vp, vd, vr = _variant_candidates(codes, v, t, workers)
            parts.append((vi, vj, vp, vd, vr, np.full(len(vi), v, np.int16)))
    i, j, dp, dd, r, var = (np.concatenate([p[k] for p in parts]) for k in range(6))
    if not len(i):
        return _empty()
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    n = len(codes["phash"])
    key = lo * n + hi
    order = np.lexsort((var, -r, key))                        # per pair: best correlation, then the plain codes
    key, first = np.unique(key[order], return_index=True)
    sel = order[first]
    lo, hi, dp, dd, r, var = lo[sel], hi[sel], dp[sel], dd[sel], r[sel], var[sel]
    fam = np.empty(len(sel), np.uint8)
    for v, (_, family, _, _) in enumerate(transforms.VARIANTS):
        fam[var == v] = _F[family]
    plain = var < 0
    via = np.flatnonzero(~plain)
    if len(via):
        r_plain = hashing.ncc(codes["thumb"], lo[via], hi[via])
        plain[via[r[via] - r_plain < LABEL_MARGIN]] = True
    fam[plain] = _F["same-patient motion"]
    if "sector" in codes and plain.any():
        fam[np.flatnonzero(plain)[_sector_r(codes, lo[plain], hi[plain]) >= PHOTOMETRIC_R]] = _F["photometric"]
    if "digest" in codes and plain.any():
        same = codes["digest"][lo] == codes["digest"][hi]
        fam[plain & same] = _F["identical"]
    return {"i": lo, "j": hi, "phash": dp, "dhash": dd, "ncc": r, "transform": fam}


def family_names(codes: np.ndarray) -> list[str]:
    """Transform family names of an array of transform codes."""
    return [FAMILIES[int(c)] for c in codes]
