"""Benchmark: reading the decoded-image cache (the second call of protocols.cache.load_images)."""
from __future__ import annotations

from protocols import cache, data


def test_bench_cache_warm_read(benchmark, synth_dir, tmp_path):
    df = data.load_manifest(synth_dir)
    first = cache.load_images(df, 64, cache_dir=tmp_path)          # fills the cache
    stats = {}
    again = benchmark(cache.load_images, df, 64, cache_dir=tmp_path, stats=stats)
    assert again.shape == first.shape == (len(df), 3, 64, 64)
    assert stats["hits"] == len(df) and stats["misses"] == 0
    assert bool((again == first).all())
