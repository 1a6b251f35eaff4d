"""Benchmark: rendering one synthetic B-mode frame (the inner loop of `fibrobench synth`)."""
from __future__ import annotations

import numpy as np
import pytest

from protocols import synth_render as render


@pytest.mark.parametrize("size", [(400, 300)])
def test_bench_render_one_frame(benchmark, size):
    rng = np.random.default_rng(0)
    patient = render.make_patient(rng, "P0000", 2, next(iter(render.DEVICE_BY_NAME)), "S1", size=size)
    img = benchmark(render.render_frame, patient, rng, 0)
    assert img.dtype == np.uint8 and img.shape == (size[1], size[0])
