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
from threadpoolctl import threadpool_limits

from protocols import hashing, pairsearch, transforms

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


def _query_thumbs(codes: dict, variants: bool):
    """rows -> [rows, 1 + V, 16, 16]: each frame's plain thumbnail, then its variants' (computed per block)."""
    def of(rows: slice) -> np.ndarray:
        plain = np.asarray(codes["thumb"][rows], np.float32)[:, None]
        if not variants:
            return plain
        sec = codes["sector"][rows].astype(np.float32)
        masks = hashing.unpack_masks(codes, rows)
        vs = [hashing.thumbnails(transforms.variant_batch(sec, masks, name)) for name in transforms.VARIANT_NAMES]
        return np.concatenate([plain, np.stack(vs, axis=1)], axis=1)
    return of


def near_duplicate_pairs(codes: dict, thresholds: dict | None = None, *, variants: bool = True,
                         workers: int = 1) -> dict:
    """Verified, transform-labelled links of a code set (see the module docstring)."""
    t = {**hashing.DEFAULT_THRESHOLDS, **(thresholds or {})}
    tp, td = int(t["phash"]), int(t["dhash"])
    if t.get("ncc") is None or "thumb" not in codes:           # hashes only, no verification, no labels
        i, j, _, dp, dd, _ = pairsearch.search(codes["phash"], codes["dhash"], tp, td, workers=workers)
        return {"i": i, "j": j, "phash": dp, "dhash": dd, "ncc": np.full(len(i), np.nan, np.float32),
                "transform": np.full(len(i), _F["same-patient motion"], np.uint8)}
    variants = bool(variants and "vphash" in codes and "sector" in codes and "mask" in codes)
    qp, qd, upper = codes["phash"][:, None], codes["dhash"][:, None], [True]
    if variants:
        qp = np.concatenate([qp, codes["vphash"]], axis=1)
        qd = np.concatenate([qd, codes["vdhash"]], axis=1)
        upper += [bool(v[2]) for v in transforms.VARIANTS]
    with threadpool_limits(1):                                 # block-sized matmuls under our own threads
        i, j, q, dp, dd, r = pairsearch.search(codes["phash"], codes["dhash"], tp, td, query_phash=qp, query_dhash=qd,
                                               upper=upper, thumbs=codes["thumb"],
                                               query_thumbs=_query_thumbs(codes, variants), min_r=float(t["ncc"]),
                                               workers=workers)
    var = q.astype(np.int16) - 1                               # -1: the plain codes, else transforms.VARIANTS[v]
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
        r_plain = pairsearch.ncc(codes["thumb"], codes["thumb"], lo[via], hi[via])
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
