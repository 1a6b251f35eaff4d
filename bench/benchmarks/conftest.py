"""Shared fixtures of the pytest-benchmark suite (run with `pytest bench/benchmarks`; not part of `tests/`)."""
from __future__ import annotations

import os

import pytest

# one thread: timings are then about the code, not about how busy the other cores are
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset (20 patients, about 140 frames of 128x96), written once per session."""
    from protocols import synth

    out = tmp_path_factory.mktemp("synth")
    synth.generate_dataset(out, n_patients=20, seed=0, size=(128, 96))
    return out
