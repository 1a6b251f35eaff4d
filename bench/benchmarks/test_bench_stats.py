"""Benchmark: the cluster bootstrap behind every confidence interval in the report."""
from __future__ import annotations

import numpy as np

from reports import stats


def _bootstrap_accuracy_ci(y, pred, codes, n_clusters, n_boot):
    w = stats.bootstrap_weights(n_clusters, n_boot=n_boot, seed=0)
    cms = stats.bootstrap_confusions(y, pred, codes, w, 5)
    acc = np.trace(cms, axis1=1, axis2=2) / cms.sum(axis=(1, 2))
    return stats.percentile_ci(acc)


def test_bench_cluster_bootstrap_2000(benchmark):
    rng = np.random.default_rng(0)
    n, g = 1200, 180                                   # a holdout set of the public dataset's size
    codes = rng.integers(0, g, n)
    y = rng.integers(0, 5, n)
    pred = np.where(rng.random(n) < 0.8, y, rng.integers(0, 5, n))
    lo, hi = benchmark(_bootstrap_accuracy_ci, y, pred, codes, g, 2000)
    assert lo < (pred == y).mean() < hi
