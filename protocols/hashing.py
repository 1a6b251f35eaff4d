"""Ultrasound-sector masking and batched perceptual hashes (pHash, dHash) with blocked Hamming search.

Pipeline per frame: decode to grey, shrink to ~WORK_WIDTH px, estimate the scan sector (bright region,
largest component, holes and row gaps filled), crop to its bounding box, paint everything outside the
sector and every saturated (burned-in text) pixel with the sector's median, standardise, and resample to
HASH_SIZE x HASH_SIZE. The hashes are then computed for the whole batch at once with numpy/scipy.
Codes are uint64 (64 bits each); pairwise distances are popcounts of XORs, computed tile by tile so
memory stays O(tile), never O(n^2).

Linking is two-stage: the hashes propose candidate pairs (pHash and dHash distances under threshold), and
each candidate is verified by the normalised cross-correlation of the two frames' 16 x 16 standardised
sector thumbnails, maximised over +-1 cell shifts (`ncc` threshold). The hashes alone cannot tell two
patients scanned on the same device from two frames of one patient at scale; the thumbnail check can.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from protocols.errors import BadInput

WORK_WIDTH = 192          # frames are shrunk to about this width before masking
HASH_SIZE = 32            # side of the standardised sector image the hashes are computed from
SATURATION = 245          # grey level at or above which a pixel is treated as overlay text / marker
THUMB_SIZE = 16           # side of the standardised thumbnail used to verify candidate pairs
NCC_SHIFT = 1             # verification maximises the correlation over +-NCC_SHIFT cell shifts
# Linking rule: near-duplicates when pHash <= "phash" AND dHash <= "dhash" bits AND thumbnail NCC >= "ncc".
# Chosen by bench/scripts/leakage_sweep.py (bench/results/leakage_sweep.json "selected"); a test keeps them equal.
DEFAULT_THRESHOLDS = {"phash": 10, "dhash": 18, "ncc": 0.86}


# ---------------------------------------------------------------- masking

def _dilate(b: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square (separable max filter: much faster than iterated binary_dilation)."""
    return ndimage.maximum_filter(b.view(np.uint8), size=2 * r + 1) > 0


def sector_mask(gray: np.ndarray, saturation: int = SATURATION) -> np.ndarray:
    """Boolean mask of the ultrasound sector in a grey frame: ignores black background and overlay text."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2 or g.size == 0:
        raise ValueError("sector_mask expects a non-empty 2-D grey image")
    text = _dilate(g >= saturation, 2)                               # bright thin text and its soft rim
    g0 = np.where(text, 0.0, g)
    k = max(3, int(round(min(g.shape) / 40)) | 1)
    sm = ndimage.uniform_filter(g0, size=k, mode="constant")
    h, w = g.shape
    centre = sm[h // 4: h - h // 4, w // 4: w - w // 4]          # overlay text lives at the edges, not here
    lit = centre[centre > 8.0]
    if lit.size == 0:
        return np.ones(g.shape, dtype=bool)
    thr = float(np.clip(0.35 * np.median(lit), 6.0, 40.0))
    fg = (sm > thr).view(np.uint8)
    fg = ndimage.maximum_filter(ndimage.minimum_filter(fg, size=5), size=5) > 0     # opening: cut thin bridges
    lab, n = ndimage.label(fg)
    if n == 0:
        return np.ones(g.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    m = lab == (int(np.argmax(sizes)) + 1)
    # a sector is convex along each row: fill between the first and last sector pixel of every row
    # (this also fills every hole, e.g. anechoic vessels touching nothing but sector pixels in that row)
    left = np.cumsum(m, axis=1) > 0
    right = np.cumsum(m[:, ::-1], axis=1)[:, ::-1] > 0
    m = left & right
    if m.sum() < 0.02 * m.size:                                # implausibly small: use the whole frame
        return np.ones(g.shape, dtype=bool)
    return m


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Area-averaging (box) resampling matrix of shape [n_out, n_in]."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    w = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resample(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Box-resample a 2-D array (or a batch [N, H, W]) to h x w."""
    rh = _resample_matrix(img.shape[-2], h)
    rw = _resample_matrix(img.shape[-1], w)
    return rh @ img.astype(np.float32) @ rw.T


def standardise_sector(gray: np.ndarray, saturation: int = SATURATION, size: int = HASH_SIZE) -> np.ndarray:
    """Crop to the sector, neutralise background/text, zero-mean unit-variance, resample to size x size."""
    g = np.asarray(gray, dtype=np.float32)
    m = sector_mask(g, saturation)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    g, m = g[sl], m[sl]
    text = _dilate(g >= saturation, 1)                           # burned-in text incl. its anti-aliased rim
    good = m & ~text
    fill = float(np.median(g[good])) if good.any() else float(g.mean())
    inside_text = m & text
    if inside_text.any():
        # text inside the sector: in-paint from the neighbourhood (normalised convolution), not a flat patch
        k = max(5, int(round(min(g.shape) / 12)) | 1)
        num = ndimage.uniform_filter(np.where(good, g, 0.0), size=k, mode="constant")
        den = ndimage.uniform_filter(good.astype(np.float32), size=k, mode="constant")
        local = np.where(den > 0.05, num / np.maximum(den, 1e-6), fill)
        g = np.where(good, g, np.where(inside_text, local, fill))
    else:
        g = np.where(good, g, fill)
    g = resample(g, size, size)
    sd = float(g.std())
    return (g - g.mean()) / (sd if sd > 1e-6 else 1.0)


# ---------------------------------------------------------------- decoding

def shrink(im, work_width: int = WORK_WIDTH) -> np.ndarray:
    """PIL image -> uint8 grey array reduced by an integer factor to about work_width pixels wide."""
    im = im.convert("L")
    f = max(1, im.width // work_width)
    if f > 1:
        im = im.reduce(f)
    return np.asarray(im, dtype=np.uint8)


def load_gray(path, work_width: int = WORK_WIDTH) -> np.ndarray:
    """Decode an image file to a shrunk uint8 grey array; BadInput naming the file if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("L", (work_width, work_width))                  # JPEG: decode at reduced scale
            return shrink(im, work_width)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadInput(path, "image", f"cannot decode image ({exc.__class__.__name__}: {exc})") from None


def prepare_batch(grays, saturation: int = SATURATION, size: int = HASH_SIZE) -> np.ndarray:
    """Stack of standardised sectors [N, size, size] float32 from grey frames (arrays of any size)."""
    if len(grays) == 0:
        return np.zeros((0, size, size), np.float32)
    return np.stack([standardise_sector(g, saturation, size) for g in grays]).astype(np.float32)


# ---------------------------------------------------------------- hashes (vectorised over the batch)

_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64))


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """[N, 64] bool -> [N] uint64."""
    b = np.asarray(bits, dtype=bool).reshape(len(bits), 64)
    return (b.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def unpack_bits(codes: np.ndarray) -> np.ndarray:
    """[N] (or [N, W]) uint64 -> [N, 64*W] bool."""
    c = np.asarray(codes, dtype=np.uint64).reshape(len(codes), -1)
    return ((c[:, :, None] & _WEIGHTS) != 0).reshape(len(c), -1)


def phash_batch(x: np.ndarray) -> np.ndarray:
    """pHash: 2-D DCT of each [32, 32] image; the 8x8 lowest frequencies (DC replaced) above their median."""
    x = np.asarray(x, dtype=np.float32)
    c = dctn(x, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(x), 64)
    med = np.median(c[:, 1:], axis=1, keepdims=True)
    bits = c > med
    bits[:, 0] = c[:, 1] > c[:, 8]                                  # DC carries no shape: use a stable bit
    return pack_bits(bits)


def dhash_batch(x: np.ndarray) -> np.ndarray:
    """dHash: resample each image to 8 x 9 and compare horizontally adjacent cells."""
    x = np.asarray(x, dtype=np.float32)
    s = resample(x, 8, 9)
    return pack_bits((s[:, :, 1:] > s[:, :, :-1]).reshape(len(x), 64))


def thumbnails(x: np.ndarray) -> np.ndarray:
    """[N, THUMB_SIZE, THUMB_SIZE] float32 standardised thumbnails of standardised sectors [N, 32, 32]."""
    t = resample(np.asarray(x, np.float32), THUMB_SIZE, THUMB_SIZE)
    t -= t.mean(axis=(1, 2), keepdims=True)
    t /= np.maximum(t.std(axis=(1, 2), keepdims=True), 1e-6)
    return t.astype(np.float32)


def codes_of(x: np.ndarray) -> dict:
    """{"phash", "dhash", "thumb"} of a batch of standardised sectors."""
    return {"phash": phash_batch(x), "dhash": dhash_batch(x), "thumb": thumbnails(x)}


def hash_arrays(grays, saturation: int = SATURATION) -> dict:
    """pHash, dHash and verification thumbnails for in-memory grey frames."""
    return codes_of(prepare_batch(grays, saturation))


def _hash_chunk(paths, work_width, saturation):
    return codes_of(prepare_batch([load_gray(p, work_width) for p in paths], saturation))


def hash_files(paths, *, workers: int | None = None, chunk: int = 64, work_width: int = WORK_WIDTH,
               saturation: int = SATURATION, progress: bool = False) -> dict:
    """Decode and hash image files in parallel chunks (threads: PIL and numpy release the GIL)."""
    paths = [str(p) for p in paths]
    workers = workers or min(4, os.cpu_count() or 1)
    parts = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, r in enumerate(pool.map(lambda c: _hash_chunk(c, work_width, saturation), parts)):
            out.append(r)
            if progress:
                print(f"\rhashed {min((k + 1) * chunk, len(paths))}/{len(paths)}", end="", flush=True)
    if progress:
        print()
    if not out:
        return {"phash": np.zeros(0, np.uint64), "dhash": np.zeros(0, np.uint64),
                "thumb": np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.float32)}
    return {k: np.concatenate([r[k] for r in out]) for k in ("phash", "dhash", "thumb")}


# ---------------------------------------------------------------- pairwise search

def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise (broadcast) Hamming distance between uint64 codes."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def link_pairs(phash: np.ndarray, dhash: np.ndarray, thresholds: dict | None = None,
               block: int = 512, col_block: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with pHash <= t_p and dHash <= t_d.

    Tiled over (block x col_block) with preallocated buffers, so memory is O(block * col_block) plus the
    output, never O(n^2). Returns (i, j, d_phash, d_dhash) as int64, int64, uint8, uint8 arrays.
    """
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    tp, td = int(t["phash"]), int(t["dhash"])
    p = np.ascontiguousarray(phash, dtype=np.uint64)
    d = np.ascontiguousarray(dhash, dtype=np.uint64)
    n = len(p)
    x64 = np.empty(block * col_block, np.uint64)
    c8 = np.empty(block * col_block, np.uint8)
    ok = np.empty(block * col_block, bool)
    tmp = np.empty(block * col_block, bool)
    out_i, out_j = [], []
    for s in range(0, n, block):
        e = min(n, s + block)
        a_p, a_d = p[s:e, None], d[s:e, None]
        for cs in range(s, n, col_block):
            ce = min(n, cs + col_block)
            shape = (e - s, ce - cs)
            m = shape[0] * shape[1]
            X, C, K, T = (buf[:m].reshape(shape) for buf in (x64, c8, ok, tmp))
            np.bitwise_xor(a_p, p[None, cs:ce], out=X)
            np.bitwise_count(X, out=C)
            np.less_equal(C, tp, out=K)
            if not K.any():
                continue
            np.bitwise_xor(a_d, d[None, cs:ce], out=X)
            np.bitwise_count(X, out=C)
            np.less_equal(C, td, out=T)
            K &= T
            ii, jj = np.nonzero(K)
            ii, jj = ii + s, jj + cs
            keep = jj > ii
            out_i.append(ii[keep])
            out_j.append(jj[keep])
    if not out_i:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.uint8), np.zeros(0, np.uint8)
    i = np.concatenate(out_i).astype(np.int64)
    j = np.concatenate(out_j).astype(np.int64)
    return i, j, hamming(p[i], p[j]).astype(np.uint8), hamming(d[i], d[j]).astype(np.uint8)


def ncc(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, shift: int = NCC_SHIFT,
        chunk: int = 65536) -> np.ndarray:
    """Max over +-shift cell shifts of the Pearson correlation of thumbnails i and j (overlap only); float32."""
    th = np.asarray(thumbs, np.float32)
    h, w = th.shape[1:]
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a_all, b_all = th[i[s:s + chunk]], th[j[s:s + chunk]]
        best = np.full(len(a_all), -1.0, np.float32)
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                a = a_all[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)].reshape(len(a_all), -1)
                b = b_all[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)].reshape(len(a_all), -1)
                a = a - a.mean(axis=1, keepdims=True)
                b = b - b.mean(axis=1, keepdims=True)
                r = np.einsum("ij,ij->i", a, b) / np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b) + 1e-9)
                np.maximum(best, r, out=best)
        out[s:s + chunk] = best
    return out


def near_duplicate_pairs(codes: dict, thresholds: dict | None = None) -> tuple[np.ndarray, ...]:
    """Two-stage linking: hash candidates, verified by thumbnail NCC. Returns (i, j, d_phash, d_dhash, ncc)."""
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    i, j, dp, dd = link_pairs(codes["phash"], codes["dhash"], t)
    if t.get("ncc") is None or "thumb" not in codes:
        return i, j, dp, dd, np.full(len(i), np.nan, np.float32)
    r = ncc(codes["thumb"], i, j)
    keep = r >= float(t["ncc"])
    return i[keep], j[keep], dp[keep], dd[keep], r[keep]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label per node of the undirected graph with edges (i, j)."""
    g = coo_matrix((np.ones(len(i), np.int8), (np.asarray(i), np.asarray(j))), shape=(n, n))
    return connected_components(g, directed=False)[1]


def cosine_pairs(features: np.ndarray, min_cos: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j whose feature vectors have cosine similarity >= min_cos (blocked)."""
    f = np.asarray(features, dtype=np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    out_i, out_j = [], []
    for s in range(0, len(f), block):
        sim = f[s:s + block] @ f[s:].T
        ii, jj = np.nonzero(sim >= min_cos)
        ii, jj = ii + s, jj + s
        keep = jj > ii
        out_i.append(ii[keep])
        out_j.append(jj[keep])
    z = np.zeros(0, np.int64)
    return (np.concatenate(out_i).astype(np.int64) if out_i else z,
            np.concatenate(out_j).astype(np.int64) if out_j else z)
