"""Benchmarks: perceptual hashing and the blocked near-duplicate pair search of the leakage scan."""
from __future__ import annotations

import numpy as np

from protocols import hashing, pairsearch


def test_bench_hash_arrays_64_frames(benchmark):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 200, (150, 200), dtype=np.uint8) for _ in range(64)]
    codes = benchmark(hashing.hash_arrays, frames)
    assert codes["phash"].shape == (64,) and codes["dhash"].dtype == np.uint64


def test_bench_link_pairs_4000_codes(benchmark):
    rng = np.random.default_rng(1)
    p = rng.integers(0, 2**63, 4000, dtype=np.uint64)
    d = rng.integers(0, 2**63, 4000, dtype=np.uint64)
    p[1::2], d[1::2] = p[::2], d[::2]                  # 2000 exact duplicate pairs
    i, j, *_ = benchmark(pairsearch.search, p, d, hashing.DEFAULT_THRESHOLDS["phash"], hashing.DEFAULT_THRESHOLDS["dhash"])
    assert len(i) >= 2000
