"""Ultrasound-sector masking and batched perceptual hashes (pHash, dHash) with blocked Hamming search.

Pipeline per frame: decode to grey, shrink to ~WORK_WIDTH px, estimate the scan sector (bright region,
largest component, holes and row gaps filled), crop to its bounding box, paint everything outside the
sector and every saturated (burned-in text) pixel with the sector's median, standardise, and resample to
HASH_SIZE x HASH_SIZE. The hashes are then computed for the whole batch at once with numpy/scipy.
Codes are uint64 (64 bits each); pairwise distances are popcounts of XORs.

Linking (protocols/pairsearch.py, protocols/neardup.py) is two-stage: the hashes propose candidate pairs (pHash
and dHash distances under threshold), and each candidate is verified by the normalised cross-correlation of the
two frames' 16 x 16 standardised sector thumbnails, maximised over +-1 cell shifts (`ncc` threshold). The hashes
alone cannot tell two patients scanned on the same device from two frames of one patient at scale; the
thumbnail check can.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from protocols import transforms
from protocols.errors import BadInput
from protocols.imagemode import to_gray8

WORK_WIDTH = 192          # frames are shrunk to about this width before masking
HASH_SIZE = 32            # side of the standardised sector image the hashes are computed from
SATURATION = 245          # grey level at or above which a pixel is treated as overlay text / marker
THUMB_SIZE = 16           # side of the standardised thumbnail used to verify candidate pairs
DHASH_TIE = 1e-3          # a dHash bit needs a brightness step above this (standardised units), not a rounding tie
# Linking rule: near-duplicates when pHash <= "phash" AND dHash <= "dhash" bits AND thumbnail NCC >= "ncc".
# Chosen by bench/scripts/leakage_sweep.py (bench/results/leakage_sweep.json "selected"); a test keeps them equal.
DEFAULT_THRESHOLDS = {"phash": 18, "dhash": 20, "ncc": 0.82}


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


def standardise_sector(gray: np.ndarray, saturation: int = SATURATION, size: int = HASH_SIZE,
                       with_mask: bool = False):
    """Crop to the sector, neutralise background/text, zero-mean unit-variance, resample to size x size.

    with_mask=True returns (sector, mask) with the sector mask resampled to the same grid (> half covered).
    """
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
    g = (g - g.mean()) / (sd if sd > 1e-6 else 1.0)
    return (g, resample(m.astype(np.float32), size, size) > 0.5) if with_mask else g


# ---------------------------------------------------------------- decoding

def shrink(im, work_width: int = WORK_WIDTH, path="") -> np.ndarray:
    """PIL image -> uint8 grey array reduced by an integer factor to about work_width pixels wide.

    Modes are normalised by protocols.imagemode.to_gray8, the function the training cache uses (16-bit scaled).
    """
    im = to_gray8(im, path)
    f = max(1, im.width // work_width)
    if f > 1:
        im = im.reduce(f)
    return np.asarray(im, dtype=np.uint8)


def load_gray(path, work_width: int = WORK_WIDTH) -> np.ndarray:
    """Decode an image file to a shrunk uint8 grey array; BadInput naming the file if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "RGB"):
                im.draft("L", (work_width, work_width))              # JPEG: decode at reduced scale
            return shrink(im, work_width, path)
    except BadInput:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadInput(path, "image", f"cannot decode image ({exc.__class__.__name__}: {exc})") from None


def prepare_batch(grays, saturation: int = SATURATION, size: int = HASH_SIZE, with_masks: bool = False):
    """Stack of standardised sectors [N, size, size] float32 from grey frames (arrays of any size).

    with_masks=True returns (sectors, masks) with the sector masks [N, size, size] bool.
    """
    if len(grays) == 0:
        z = np.zeros((0, size, size), np.float32)
        return (z, z.astype(bool)) if with_masks else z
    if not with_masks:
        return np.stack([standardise_sector(g, saturation, size) for g in grays]).astype(np.float32)
    pairs = [standardise_sector(g, saturation, size, with_mask=True) for g in grays]
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs])


def pixel_digest(grays) -> np.ndarray:
    """[N] uint64: the first 8 bytes of blake2b over each grey frame's shape and pixels (equal = identical)."""
    import hashlib

    out = np.empty(len(grays), np.uint64)
    for k, g in enumerate(grays):
        a = np.ascontiguousarray(g, dtype=np.uint8)
        h = hashlib.blake2b(str(a.shape).encode() + a.tobytes(), digest_size=8).digest()
        out[k] = np.frombuffer(h, dtype=np.uint64)[0]
    return out


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
    """dHash: resample each image to 8 x 9 and compare horizontally adjacent cells.

    A bit is set only when the right cell is brighter by more than DHASH_TIE (standardised units): cells of the
    flat fill outside the sector are equal up to float rounding, and their bits would otherwise follow the
    summation order of the BLAS build and thread count (measured: 46 % of frames changed a dHash bit between
    a multi- and a single-threaded BLAS)."""
    x = np.asarray(x, dtype=np.float32)
    s = resample(x, 8, 9)
    return pack_bits((s[:, :, 1:] > s[:, :, :-1] + DHASH_TIE).reshape(len(x), 64))


def thumbnails(x: np.ndarray) -> np.ndarray:
    """[N, THUMB_SIZE, THUMB_SIZE] float32 standardised thumbnails of standardised sectors [N, 32, 32]."""
    t = resample(np.asarray(x, np.float32), THUMB_SIZE, THUMB_SIZE)
    t -= t.mean(axis=(1, 2), keepdims=True)
    t /= np.maximum(t.std(axis=(1, 2), keepdims=True), 1e-6)
    return t.astype(np.float32)


KEYS = ("phash", "dhash", "thumb", "sector", "mask", "vphash", "vdhash", "digest")


def codes_of(x: np.ndarray, masks: np.ndarray | None = None) -> dict:
    """{"phash", "dhash", "thumb"} of a batch of standardised sectors; with their masks also the transform variants.

    With masks: "sector" (float16 [N, 32, 32]), "mask" (packed bits [N, 32, 4]), "vphash"/"vdhash"
    ([N, V] uint64: pHash/dHash of every transforms.VARIANTS entry), used by near_duplicate_pairs to link
    mirrored, rotated and cropped/zoomed copies.
    """
    x = np.asarray(x, dtype=np.float32)
    out = {"phash": phash_batch(x), "dhash": dhash_batch(x), "thumb": thumbnails(x)}
    if masks is not None:
        nv = len(transforms.VARIANTS)
        vs = [transforms.variant_batch(x, masks, name) for name in transforms.VARIANT_NAMES] if len(x) else []
        out["vphash"] = np.stack([phash_batch(v) for v in vs], axis=1) if vs else np.zeros((0, nv), np.uint64)
        out["vdhash"] = np.stack([dhash_batch(v) for v in vs], axis=1) if vs else np.zeros((0, nv), np.uint64)
        out["sector"] = x.astype(np.float16)
        out["mask"] = np.packbits(np.asarray(masks, bool), axis=-1)
    return out


def unpack_masks(codes: dict, rows=slice(None)) -> np.ndarray:
    """The bool sector masks [n, 32, 32] of codes["mask"] (rows selected)."""
    return np.unpackbits(codes["mask"][rows], axis=-1, count=HASH_SIZE).astype(bool)


def hash_arrays(grays, saturation: int = SATURATION, variants: bool = True) -> dict:
    """pHash, dHash, verification thumbnails (and transform variants, pixel digests) for in-memory grey frames."""
    if not variants:
        return codes_of(prepare_batch(grays, saturation))
    x, m = prepare_batch(grays, saturation, with_masks=True)
    return {**codes_of(x, m), "digest": pixel_digest(grays)}


def _hash_chunk(paths, work_width, saturation):
    return hash_arrays([load_gray(p, work_width) for p in paths], saturation)


def _empty_codes() -> dict:
    nv = len(transforms.VARIANTS)
    return {"phash": np.zeros(0, np.uint64), "dhash": np.zeros(0, np.uint64),
            "thumb": np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.float32),
            "sector": np.zeros((0, HASH_SIZE, HASH_SIZE), np.float16),
            "mask": np.zeros((0, HASH_SIZE, HASH_SIZE // 8), np.uint8),
            "vphash": np.zeros((0, nv), np.uint64), "vdhash": np.zeros((0, nv), np.uint64),
            "digest": np.zeros(0, np.uint64)}


def hash_files(paths, *, workers: int | None = None, chunk: int = 64, work_width: int = WORK_WIDTH,
               saturation: int = SATURATION, progress: bool = False) -> dict:
    """Decode and hash image files in parallel chunks (threads: PIL and numpy release the GIL)."""
    paths = [str(p) for p in paths]
    workers = workers or min(4, os.cpu_count() or 1)
    parts = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    out = []
    # the per-frame matrices are tiny: a multi-threaded BLAS under our own threads only spins (10x slower measured)
    with threadpool_limits(1), ThreadPoolExecutor(max_workers=workers) as pool:
        for k, r in enumerate(pool.map(lambda c: _hash_chunk(c, work_width, saturation), parts)):
            out.append(r)
            if progress:
                print(f"\rhashed {min((k + 1) * chunk, len(paths))}/{len(paths)}", end="", flush=True)
    if progress:
        print()
    if not out:
        return _empty_codes()
    return {k: np.concatenate([r[k] for r in out]) for k in KEYS}


# ---------------------------------------------------------------- pairwise search

def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise (broadcast) Hamming distance between uint64 codes."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


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
