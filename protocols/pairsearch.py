"""Compiled all-pairs search: Hamming candidates over uint64 codes, verified by shifted thumbnail correlation.

Every frame i has Q query codes (its plain pHash/dHash and, for transform-aware linking, the codes of each
transform variant) and one index code (its plain codes). `search` finds every (i, j, q) whose query-q codes of
frame i are within the pHash and dHash thresholds of frame j's index codes and, when thumbnails are given, whose
verification correlation reaches `min_r` -- in one numba kernel per block of rows, so candidates never
accumulate (memory O(n + kept pairs), never O(n^2)), the popcounts are the CPU's own instruction and the
verification is a handful of contiguous dot products. Row blocks are shared out over threads (the kernel
releases the GIL); the query thumbnails of a block can be computed on demand (`query_thumbs` callable), so
variant thumbnails never exist for all frames at once.

The verification correlation of thumbnails a (query) and b (index) is the Pearson correlation of their
overlapping cells, maximised over the (2 * shift + 1)^2 shifts (dy, dx), each comparing a[y, x] with
b[y - dy, x - dx] (`ncc`). Per thumbnail and shift the window sums and centred sums of squares are precomputed,
and both sides are stored with zero columns around each row (`_padded`), so each shift's overlap is one
contiguous dot product.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

NCC_SHIFT = 1             # verification maximises the correlation over +-NCC_SHIFT cell shifts


@intrinsic
def _ctpop(typingctx, x):
    """Set bits of a uint64 (LLVM's ctpop: one POPCNT instruction where the CPU has it)."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])
    return types.uint64(types.uint64), codegen


def _shifts(shift: int) -> np.ndarray:
    return np.array([(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)], np.int64)


def _window_stats(t: np.ndarray, shift: int, query: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per thumbnail [n, h, w] and shift: sum and centred sum of squares of the compared window (float64 [n, K])."""
    t = np.asarray(t, np.float64)
    n, h, w = t.shape
    sh = _shifts(shift)
    sums, css = np.empty((n, len(sh))), np.empty((n, len(sh)))
    for k, (dy, dx) in enumerate(sh):
        if query:
            win = t[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
        else:
            win = t[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        win = win.reshape(n, -1)
        sums[:, k] = win.sum(axis=1)
        css[:, k] = ((win - win.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return sums, css


def _padded(t: np.ndarray, shift: int) -> np.ndarray:
    """[n, s + h * (w + 2s) + s] float32: each row of t between s zero columns, the rows flattened, s zeros at
    both ends (s = shift). Shift (dy, dx) is then the dot product of one contiguous run of a query's and an
    index frame's padded arrays: zero columns stand in for cells outside the overlap (see _r)."""
    t = np.asarray(t, np.float32)
    n, h, w = t.shape
    W = w + 2 * shift
    out = np.zeros((n, 2 * shift + h * W), np.float32)
    out[:, shift:shift + h * W].reshape(n, h, W)[:, :, shift:shift + w] = t
    return out


class _Index:
    """The index side of the verification: padded thumbnails and their window statistics."""

    def __init__(self, thumbs: np.ndarray, shift: int):
        t = np.asarray(thumbs, np.float32)
        self.h, self.w = t.shape[1:]
        self.padded = _padded(t, shift)
        self.sums, self.css = _window_stats(t, shift, query=False)


@numba.njit(nogil=True, cache=True, fastmath=True)
def _r(a, sa, ca, bp, sb, cb, j, shifts, s, w):
    """Max over shifts of the Pearson correlation of padded query thumbnail a with padded index thumbnail j.

    Shift (dy, dx) sums a[y, x] * b[y - dy, x - dx] over rows y0..y1 of the overlap: in the padded layout (row
    width W = w + 2s, offset s) that is a[s + y0 W + t] * b[s + (y0 - dy) W - dx + t], t < (y1 - y0) W, where
    a's zero columns cancel the cells of x outside [0, w) and b's those of x - dx."""
    W = w + 2 * s
    h = (a.shape[0] - 2 * s) // W
    best = -1.0
    for k in range(shifts.shape[0]):
        dy, dx = shifts[k, 0], shifts[k, 1]
        y0, y1 = max(0, dy), h + min(0, dy)
        x0, x1 = max(0, dx), w + min(0, dx)
        oa = s + y0 * W
        ob = s + (y0 - dy) * W - dx
        n_t = (y1 - y0) * W
        av, bv = a[oa:oa + n_t], bp[j, ob:ob + n_t]                    # views: the loop below vectorises
        acc = np.float32(0.0)
        for t in range(n_t):
            acc += av[t] * bv[t]
        m = (y1 - y0) * (x1 - x0)
        den = ca[k] * cb[j, k]
        r = (np.float64(acc) - sa[k] * sb[j, k] / m) / np.sqrt(den) if den > 1e-9 else 0.0   # flat: no correlation
        if r > best:
            best = r
    return best


@numba.njit(nogil=True, cache=True)
def _pairs_r(a, sa, ca, ia, bp, sb, cb, j, shifts, s, w):
    out = np.empty(len(ia), np.float32)
    for k in range(len(ia)):
        out[k] = _r(a[ia[k]], sa[ia[k]], ca[ia[k]], bp, sb, cb, j[k], shifts, s, w)
    return out


@numba.njit(nogil=True, cache=True)
def _search_rows(s0, e0, qp, qd, p, d, tp, td, upper, verify, a, sa, ca, bp, sb, cb, shifts, s, w, min_r):
    """Rows [s0, e0) against every index code: kept (i, j, q, d_phash, d_dhash, r).

    qp, qd [n, Q] query codes; a [e0 - s0, Q, h * w], sa, ca [e0 - s0, Q, K] the block's query thumbnails."""
    n, nq = len(p), qp.shape[1]
    cap = 256
    oi, oj, oq = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int16)
    op, od, orr = np.empty(cap, np.uint8), np.empty(cap, np.uint8), np.empty(cap, np.float32)
    k = 0
    utp, utd = np.uint64(tp), np.uint64(td)
    for i in range(s0, e0):
        row = qp[i]
        for j in range(n):
            pj = p[j]
            hit = False
            for q in range(nq):                                 # branch-free screen over all queries first
                hit |= _ctpop(row[q] ^ pj) <= utp
            if not hit or j == i:
                continue
            for q in range(nq):
                cp = _ctpop(row[q] ^ pj)
                if cp > utp or (upper[q] and j < i):
                    continue
                cd = _ctpop(qd[i, q] ^ d[j])
                if cd > utd:
                    continue
                r = np.float32(np.nan)
                if verify:
                    r = np.float32(_r(a[i - s0, q], sa[i - s0, q], ca[i - s0, q], bp, sb, cb, j, shifts, s, w))
                    if not r >= min_r:
                        continue
                if k == cap:
                    cap *= 2
                    oi2, oj2, oq2 = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int16)
                    op2, od2, or2 = np.empty(cap, np.uint8), np.empty(cap, np.uint8), np.empty(cap, np.float32)
                    oi2[:k], oj2[:k], oq2[:k], op2[:k], od2[:k], or2[:k] = oi, oj, oq, op, od, orr
                    oi, oj, oq, op, od, orr = oi2, oj2, oq2, op2, od2, or2
                oi[k], oj[k], oq[k], op[k], od[k], orr[k] = i, j, q, cp, cd, r
                k += 1
    return oi[:k], oj[:k], oq[:k], op[:k], od[:k], orr[:k]


def ncc(query_thumbs: np.ndarray, thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, shift: int = NCC_SHIFT,
        chunk: int = 65536) -> np.ndarray:
    """Verification correlation of query_thumbs[i] against thumbs[j], for aligned index arrays; float32."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    out = np.empty(len(i), np.float32)
    sh = _shifts(shift)
    for s in range(0, len(i), chunk):
        ui, ia = np.unique(i[s:s + chunk], return_inverse=True)
        uj, jb = np.unique(j[s:s + chunk], return_inverse=True)
        qa = np.asarray(query_thumbs, np.float32)[ui]
        idx = _Index(np.asarray(thumbs, np.float32)[uj], shift)
        sa, ca = _window_stats(qa, shift, query=True)
        out[s:s + chunk] = _pairs_r(_padded(qa, shift), sa, ca, ia.astype(np.int64),
                                    idx.padded, idx.sums, idx.css, jb.astype(np.int64), sh, shift, idx.w)
    return out


def search(phash: np.ndarray, dhash: np.ndarray, tp: int, td: int, *, query_phash: np.ndarray | None = None,
           query_dhash: np.ndarray | None = None, upper=True, thumbs: np.ndarray | None = None,
           query_thumbs=None, min_r: float | None = None, shift: int = NCC_SHIFT, workers: int = 1,
           block: int = 32) -> tuple[np.ndarray, ...]:
    """Every (i, j, q): query codes q of frame i within (tp, td) of the index codes of frame j, i != j.

    phash, dhash [n]: the index codes. query_phash, query_dhash [n] or [n, Q] (default: the index codes, Q = 1).
    upper: bool or [Q] bools; where true only j > i is searched (symmetric queries: the plain codes, mirrors).
    thumbs [n, h, w] with min_r: verify each candidate inside the search and keep it when the correlation
    reaches min_r; query_thumbs: [n, h, w] or [n, Q, h, w] array, or a callable rows (a slice) -> [rows, Q, h, w]
    computing a block's query thumbnails on demand (default: thumbs, for every query).
    Returns (i, j, q, d_phash, d_dhash, r) sorted by (i, j, q): int64, int64, int16, uint8, uint8, float32
    (r NaN when unverified).
    """
    p = np.ascontiguousarray(phash, dtype=np.uint64)
    d = np.ascontiguousarray(dhash, dtype=np.uint64)
    n = len(p)
    qp = p[:, None] if query_phash is None else np.asarray(query_phash, np.uint64)
    qd = d[:, None] if query_dhash is None else np.asarray(query_dhash, np.uint64)
    qp = np.ascontiguousarray(qp.reshape(n, -1) if qp.ndim == 1 else qp)
    qd = np.ascontiguousarray(qd.reshape(n, -1) if qd.ndim == 1 else qd)
    if len(d) != n or qp.shape != qd.shape or len(qp) != n:
        raise ValueError("query codes must have one row per indexed frame, pHash and dHash alike")
    nq = qp.shape[1]
    up = np.broadcast_to(np.asarray(upper, bool), (nq,)).copy()
    verify = thumbs is not None and min_r is not None
    sh = _shifts(shift)
    if verify:
        idx = _Index(thumbs, shift)
        if len(idx.padded) != n:
            raise ValueError("thumbnails must have one entry per indexed frame")
        if query_thumbs is None:
            query_thumbs = np.asarray(thumbs, np.float32)
    # the kernel's index-side arguments (padded thumbnails, window sums, centred sums of squares, width, min_r);
    # placeholders of the same types when unverified
    index = ((idx.padded, idx.sums, idx.css, idx.w, float(min_r)) if verify else
             (np.zeros((1, 1), np.float32), np.zeros((1, 1)), np.zeros((1, 1)), 1, 0.0))

    def rows_thumbs(s0, e0):
        if not verify:
            return np.zeros((e0 - s0, nq, 1), np.float32), np.zeros((e0 - s0, nq, len(sh))), np.zeros((e0 - s0, nq, len(sh)))
        qa = query_thumbs(slice(s0, e0)) if callable(query_thumbs) else np.asarray(query_thumbs, np.float32)[s0:e0]
        qa = np.asarray(qa, np.float32)
        if qa.ndim == 3:
            qa = np.repeat(qa[:, None], nq, axis=1)
        if qa.shape[:2] != (e0 - s0, nq) or qa.shape[2:] != (idx.h, idx.w):
            raise ValueError(f"query thumbnails of rows {s0}:{e0} have shape {qa.shape}, expected "
                             f"{(e0 - s0, nq, idx.h, idx.w)}")
        flat = qa.reshape(-1, idx.h, idx.w)
        sa, ca = _window_stats(flat, shift, query=True)
        return (_padded(flat, shift).reshape(e0 - s0, nq, -1), sa.reshape(e0 - s0, nq, -1),
                ca.reshape(e0 - s0, nq, -1))

    starts = list(range(0, n, block))
    workers = max(1, min(int(workers), len(starts) or 1))

    def run(wk):
        out = []
        for s0 in starts[wk::workers]:
            e0 = min(n, s0 + block)
            a, sa, ca = rows_thumbs(s0, e0)
            bp, sb, cb, w, mr = index
            out.append(_search_rows(s0, e0, qp, qd, p, d, int(tp), int(td), up, verify, a, sa, ca, bp, sb, cb,
                                    sh, shift, w, mr))
        return out

    if workers == 1:
        parts = run(0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = [r for res in pool.map(run, range(workers)) for r in res]
    if not parts:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.int16), np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.float32)
    i, j, q, dp, dd, r = (np.concatenate([x[k] for x in parts]) for k in range(6))
    order = np.lexsort((q, j, i))
    return i[order], j[order], q[order], dp[order], dd[order], r[order]
