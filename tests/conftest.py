"""Shared pytest fixtures and the `gpu` / `browser` skips."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

# keep the suite quick and reproducible on a 2-core machine
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    has_chromium = shutil.which("chromium") is not None or shutil.which("chromium-browser") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "browser" in item.keywords and not has_chromium and not os.environ.get("FIBROBENCH_REQUIRE_BROWSER"):
            item.add_marker(pytest.mark.skip(reason="needs headless Chromium (apt install chromium)"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test (2 threads on a shared, oversubscribed 2-core box were 10-40x slower);
    restored afterwards. Tests that never import torch don't pay for importing it here."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
