"""The compiled pair search (protocols/pairsearch.py) against brute force and a written-out correlation."""
from __future__ import annotations

import numpy as np
import pytest

from protocols import hashing, pairsearch


def _ref_ncc(a: np.ndarray, b: np.ndarray, shift: int = 1) -> float:
    """Max over shifts (dy, dx) of np.corrcoef of a[y, x] and b[y - dy, x - dx] over the overlap."""
    h, w = a.shape
    best = -1.0
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            A = a[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            B = b[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            best = max(best, float(np.corrcoef(A.ravel(), B.ravel())[0, 1]))
    return best


def _clustered_codes(rng, n_base=20, per=5):
    base = rng.integers(0, 2**63, size=n_base, dtype=np.uint64)
    flips = lambda: np.uint64(1) << rng.integers(0, 64, n_base * per).astype(np.uint64)  # noqa: E731
    return np.repeat(base, per) ^ flips(), np.repeat(base[::-1], per) ^ flips()


def _brute(qp, qd, p, d, tp, td, upper):
    DP = hashing.hamming(qp[:, None], p[None])
    DD = hashing.hamming(qd[:, None], d[None])
    n = len(p)
    ok = (DP <= tp) & (DD <= td) & (np.triu(np.ones((n, n), bool), 1) if upper else ~np.eye(n, dtype=bool))
    return ok, DP, DD


@pytest.mark.parametrize("block,workers", [(1, 1), (7, 1), (64, 2), (1000, 3)])
def test_plain_search_equals_brute_force(block, workers):
    p, d = _clustered_codes(np.random.default_rng(7))
    i, j, q, dp, dd, r = pairsearch.search(p, d, 3, 30, block=block, workers=workers)
    ok, DP, DD = _brute(p, d, p, d, 3, 30, True)
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(*[x.tolist() for x in np.nonzero(ok)])) and ok.sum() > 50
    assert (q == 0).all() and np.isnan(r).all()
    np.testing.assert_array_equal(dp, DP[i, j])
    np.testing.assert_array_equal(dd, DD[i, j])
    assert (np.diff(i * len(p) + j) > 0).all()                     # sorted, no pair twice


def test_several_queries_with_their_own_symmetry_equal_brute_force():
    rng = np.random.default_rng(9)
    n = 300
    p = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    d = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    qp, qd = [p], [d]
    for _ in range(3):                                              # queries near their own entry and near others
        flip = hashing.pack_bits(rng.random((n, 64)) < 0.08)
        perm = rng.permutation(n)
        qp.append(p[perm] ^ flip)
        qd.append(d[perm] ^ flip)
    qp, qd = np.stack(qp, 1), np.stack(qd, 1)
    upper = [True, True, False, False]
    i, j, q, dp, dd, _ = pairsearch.search(p, d, 8, 12, query_phash=qp, query_dhash=qd, upper=upper, block=32,
                                           workers=2)
    want = set()
    for k in range(4):
        ok, DP, DD = _brute(qp[:, k], qd[:, k], p, d, 8, 12, upper[k])
        want |= {(a, b, k) for a, b in zip(*np.nonzero(ok))}
        sel = q == k
        np.testing.assert_array_equal(dp[sel], DP[i[sel], j[sel]])
        np.testing.assert_array_equal(dd[sel], DD[i[sel], j[sel]])
    got = set(zip(i.tolist(), j.tolist(), q.tolist()))
    assert got == {(int(a), int(b), k) for a, b, k in want} and len(got) > 300
    assert ((q != 1) | (j > i)).all() and (i != j).all()


def test_ncc_equals_corrcoef_over_shifts_and_survives_a_constant_thumbnail():
    rng = np.random.default_rng(8)
    th = rng.normal(size=(7, 16, 16)).astype(np.float32)
    th[1] = np.roll(th[0], 1, axis=1) * 2 + 3                       # a shifted, rescaled copy of 0
    th[6] = 0.5                                                      # zero variance everywhere
    q = th[[1, 2, 3, 4, 5, 0, 6]]                                    # query thumbnails differ from the index ones
    i, j = np.array([0, 2, 3, 0, 5]), np.array([1, 4, 5, 6, 0])
    got = pairsearch.ncc(th, th, i, j, chunk=2)
    for k, (a, b) in enumerate(zip(i, j)):
        if b == 6:
            assert np.isfinite(got[k]) and abs(got[k]) < 1e-3       # no correlation with a flat thumbnail, no NaN
        else:
            assert got[k] == pytest.approx(_ref_ncc(th[a], th[b]), abs=1e-5)
    assert got[0] == pytest.approx(1.0, abs=1e-5)
    got_q = pairsearch.ncc(q, th, i[:3], j[:3])
    for k, (a, b) in enumerate(zip(i[:3], j[:3])):
        assert got_q[k] == pytest.approx(_ref_ncc(q[a], th[b]), abs=1e-5)
    got2 = pairsearch.ncc(th, th, i, j, shift=2)                    # a wider search window
    assert got2[1] == pytest.approx(_ref_ncc(th[2], th[4], shift=2), abs=1e-5) and got2[1] >= got[1] - 1e-6


def test_verified_search_keeps_exactly_the_candidates_whose_correlation_reaches_min_r():
    rng = np.random.default_rng(11)
    n = 120
    th = rng.normal(size=(n, 16, 16)).astype(np.float32)
    th[1::2] = np.roll(th[0::2], 1, axis=2) + rng.normal(0, 0.4, (n // 2, 16, 16)).astype(np.float32)
    p = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    p[1::2] = p[0::2]
    p[2::4] = p[0::4]                                                # also unrelated thumbnails with equal codes
    d = np.zeros(n, np.uint64)
    vt = th[:, ::-1].copy()                                          # a second query: the upside-down thumbnails
    qp, qd = np.stack([p, p], 1), np.stack([d, d], 1)

    def query_thumbs(rows):
        return np.stack([th[rows], vt[rows]], axis=1)

    i, j, q, _, _, r = pairsearch.search(p, d, 0, 0, query_phash=qp, query_dhash=qd, upper=[True, False],
                                         thumbs=th, query_thumbs=query_thumbs, min_r=0.8, block=16, workers=2)
    ci, cj, cq, *_ = pairsearch.search(p, d, 0, 0, query_phash=qp, query_dhash=qd, upper=[True, False])
    ref = np.array([_ref_ncc((th if k == 0 else vt)[a], th[b]) for a, b, k in zip(ci, cj, cq)])
    keep = ref >= 0.8
    assert 0 < keep.sum() < len(ref)                                 # some candidates fail verification
    assert list(zip(i.tolist(), j.tolist(), q.tolist())) == list(zip(ci[keep].tolist(), cj[keep].tolist(),
                                                                     cq[keep].tolist()))
    np.testing.assert_allclose(r, ref[keep], atol=1e-5)


def test_bad_shapes_are_refused():
    p = np.arange(10, dtype=np.uint64)
    with pytest.raises(ValueError, match="one row per indexed frame"):
        pairsearch.search(p, p[:9], 3, 3)
    th = np.zeros((10, 16, 16), np.float32)
    with pytest.raises(ValueError, match="query thumbnails"):
        pairsearch.search(p, p, 64, 64, thumbs=th, query_thumbs=lambda rows: th[rows][:, None, :8], min_r=0.5)
    none = pairsearch.search(p[:0], p[:0], 3, 3)
    assert all(len(x) == 0 for x in none)
